/* SPDX-License-Identifier: MIT */
/*
 * bitmap/ private helpers: how a bit range maps onto words.
 *
 * A range [start, start + nr) with nr > 0 touches words first..last.  Its
 * first word keeps only the bits at or above start % W, its last word only
 * the bits at or below (start + nr - 1) % W; when first == last both masks
 * apply to the one word.  Every range operation walks words with span_mask()
 * and so handles partial head and tail words in one place.
 */
#ifndef MIGRAM_BITMAP_INTERNAL_H
#define MIGRAM_BITMAP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migram/bitmap.h"

#define BPL MIGRAM_BITS_PER_LONG

struct bit_span {
	size_t first;       /* index of the first word touched */
	size_t last;        /* index of the last word touched */
	unsigned long head; /* mask of the range's bits in word first */
	unsigned long tail; /* mask of the range's bits in word last */
};

/* nr must be > 0. */
static inline struct bit_span bit_span_of(size_t start, size_t nr)
{
	size_t end = start + nr - 1;
	struct bit_span s = {
		.first = start / BPL,
		.last = end / BPL,
		.head = ~0UL << (start % BPL),
		.tail = ~0UL >> (BPL - 1 - end % BPL),
	};

	if (s.first == s.last) {
		s.head &= s.tail;
		s.tail = s.head;
	}
	return s;
}

static inline unsigned long span_mask(const struct bit_span *s, size_t w)
{
	if (w == s->first)
		return s->head;
	if (w == s->last)
		return s->tail;
	return ~0UL;
}

static inline unsigned long load_relaxed(const unsigned long *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/*
 * From word w, skip whole groups of four words that hold nothing of interest
 * (all zero, or all one when invert is ~0UL), stopping before word limit.
 * Returns the first word not skipped (possibly limit or a bit before it).
 */
static inline size_t skip_words(const unsigned long *map, size_t w,
				size_t limit, unsigned long invert)
{
	while (w + 4 <= limit) {
		unsigned long any = (load_relaxed(&map[w]) ^ invert) |
				    (load_relaxed(&map[w + 1]) ^ invert) |
				    (load_relaxed(&map[w + 2]) ^ invert) |
				    (load_relaxed(&map[w + 3]) ^ invert);
		if (any)
			break;
		w += 4;
	}
	return w;
}

static inline unsigned int popcount_word(unsigned long w)
{
	return (unsigned int)__builtin_popcountl(w);
}

/*
 * Pages touched by bytes [offset, offset + len) of a region of size bytes at
 * 2^shift bytes a page, clamped to the region.  False when none.
 */
static inline bool byte_range_pages(uint64_t size, unsigned int shift,
				    uint64_t offset, uint64_t len,
				    uint64_t *first, uint64_t *npages)
{
	if (len == 0 || offset >= size)
		return false;
	if (len > size - offset)
		len = size - offset;
	*first = offset >> shift;
	*npages = ((offset + len - 1) >> shift) - *first + 1;
	return true;
}

/* Module-internal access to a MigramDirtyBitmap's words (not exported). */
struct MigramDirtyBitmap;
unsigned long *migram_dirty_bitmap_words(struct MigramDirtyBitmap *db);

#endif /* MIGRAM_BITMAP_INTERNAL_H */
