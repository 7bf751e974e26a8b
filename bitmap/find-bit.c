/* SPDX-License-Identifier: MIT */
/*
 * Finding the next set or clear bit.
 *
 * One search routine serves both directions: a clear-bit search is a set-bit
 * search over inverted words.  The inner loop that skips uninteresting words
 * looks at four words per iteration (OR-ed together for a set-bit search,
 * AND-ed for a clear-bit search), so a sparse or empty bitmap is scanned at
 * close to memory bandwidth: this is the page-search hot path of every
 * migration pass, and for a 1 TiB guest its bitmap is 32 MiB.
 *
 * Loads are relaxed atomics (plain moves on x86): against concurrent atomic
 * writers the search returns a bit that was set (or clear) at some instant
 * during the call.  The callers that must not miss a bit (sync) use
 * exchange-and-collect instead.
 */
#include "migram-common.h"
#include "bitmap-internal.h"

static inline size_t find_next(const unsigned long *map, size_t nbits,
			       size_t start, unsigned long invert)
{
	size_t nwords;
	size_t w;
	unsigned long word;
	size_t bit;

	if (start >= nbits)
		return nbits;
	nwords = MIGRAM_BITS_TO_LONGS(nbits);
	w = start / BPL;
	word = (load_relaxed(&map[w]) ^ invert) & (~0UL << (start % BPL));
	while (word == 0) {
		w = skip_words(map, w + 1, nwords, invert);
		if (w >= nwords)
			return nbits;
		word = load_relaxed(&map[w]) ^ invert;
	}
	bit = w * BPL + (size_t)__builtin_ctzl(word);
	return bit < nbits ? bit : nbits;
}

MIGRAM_EXPORT size_t migram_bitmap_find_next_set(const unsigned long *map,
						 size_t nbits, size_t start)
{
	return find_next(map, nbits, start, 0);
}

MIGRAM_EXPORT size_t migram_bitmap_find_next_zero(const unsigned long *map,
						  size_t nbits, size_t start)
{
	return find_next(map, nbits, start, ~0UL);
}
