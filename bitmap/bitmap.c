/* SPDX-License-Identifier: MIT */
/*
 * Plain (non-atomic) word bitmap operations.
 *
 * Everything here is a loop over the words a range touches (bit_span_of()),
 * applying a mask to the partial first and last words.  None of these
 * functions allocates except migram_bitmap_new(), and none is safe against a
 * concurrent writer of the same words: the atomic variants live in
 * bitmap-atomic.c.
 *
 * Serialization maps host words to little-endian 64-bit words.  On a 64-bit
 * little-endian host it is a copy with the tail masked; on a 32-bit host two
 * words make one 64-bit word.
 */
#include <string.h>

#include "migram-common.h"
#include "bitmap-internal.h"

MIGRAM_EXPORT unsigned long *migram_bitmap_new(size_t nbits)
{
	size_t words;

	if (nbits > SIZE_MAX - BPL)
		return NULL;
	words = MIGRAM_BITS_TO_LONGS(nbits);
	if (words == 0)
		words = 1;
	return g_try_new0(unsigned long, words);
}

MIGRAM_EXPORT void migram_bitmap_free(unsigned long *map)
{
	g_free(map);
}

MIGRAM_EXPORT void migram_bitmap_set_bit(unsigned long *map, size_t bit)
{
	map[bit / BPL] |= 1UL << (bit % BPL);
}

MIGRAM_EXPORT void migram_bitmap_clear_bit(unsigned long *map, size_t bit)
{
	map[bit / BPL] &= ~(1UL << (bit % BPL));
}

MIGRAM_EXPORT bool migram_bitmap_test_bit(const unsigned long *map, size_t bit)
{
	return (load_relaxed(&map[bit / BPL]) >> (bit % BPL)) & 1;
}

MIGRAM_EXPORT bool migram_bitmap_test_and_clear_bit(unsigned long *map,
						    size_t bit)
{
	unsigned long m = 1UL << (bit % BPL);
	unsigned long *p = &map[bit / BPL];
	bool was = (*p & m) != 0;

	*p &= ~m;
	return was;
}

MIGRAM_EXPORT void migram_bitmap_set(unsigned long *map, size_t start,
				     size_t nr)
{
	struct bit_span s;

	if (nr == 0)
		return;
	s = bit_span_of(start, nr);
	for (size_t w = s.first; w <= s.last; w++)
		map[w] |= span_mask(&s, w);
}

MIGRAM_EXPORT void migram_bitmap_clear(unsigned long *map, size_t start,
				       size_t nr)
{
	struct bit_span s;

	if (nr == 0)
		return;
	s = bit_span_of(start, nr);
	for (size_t w = s.first; w <= s.last; w++)
		map[w] &= ~span_mask(&s, w);
}

MIGRAM_EXPORT size_t migram_bitmap_count(const unsigned long *map, size_t start,
					 size_t nr)
{
	struct bit_span s;
	size_t n = 0;

	if (nr == 0)
		return 0;
	s = bit_span_of(start, nr);
	for (size_t w = s.first; w <= s.last; w++)
		n += popcount_word(load_relaxed(&map[w]) & span_mask(&s, w));
	return n;
}

MIGRAM_EXPORT bool migram_bitmap_range_empty(const unsigned long *map,
					     size_t start, size_t nr)
{
	struct bit_span s;

	if (nr == 0)
		return true;
	s = bit_span_of(start, nr);
	for (size_t w = s.first; w <= s.last; w++) {
		if (load_relaxed(&map[w]) & span_mask(&s, w))
			return false;
	}
	return true;
}

MIGRAM_EXPORT bool migram_bitmap_range_full(const unsigned long *map,
					    size_t start, size_t nr)
{
	struct bit_span s;

	if (nr == 0)
		return true;
	s = bit_span_of(start, nr);
	for (size_t w = s.first; w <= s.last; w++) {
		unsigned long m = span_mask(&s, w);

		if ((load_relaxed(&map[w]) & m) != m)
			return false;
	}
	return true;
}

MIGRAM_EXPORT void migram_bitmap_copy(unsigned long *dst,
				      const unsigned long *src, size_t nbits)
{
	memcpy(dst, src, MIGRAM_BITS_TO_LONGS(nbits) * sizeof(unsigned long));
}

MIGRAM_EXPORT size_t migram_bitmap_le64_words(size_t nbits)
{
	return nbits / 64 + (nbits % 64 != 0);
}

/* The 64 bits of map starting at bit 64 * i, host order. */
static uint64_t gather64(const unsigned long *map, size_t i, size_t nwords)
{
	if (BPL == 64)
		return map[i];
	/* 32-bit words: two of them make one 64-bit word. */
	uint64_t lo = map[2 * i];
	uint64_t hi = 2 * i + 1 < nwords ? map[2 * i + 1] : 0;

	return lo | (hi << 32);
}

static void scatter64(unsigned long *map, size_t i, size_t nwords, uint64_t v)
{
	if (BPL == 64) {
		map[i] = (unsigned long)v;
		return;
	}
	map[2 * i] = (unsigned long)(v & 0xffffffffu);
	if (2 * i + 1 < nwords)
		map[2 * i + 1] = (unsigned long)(v >> 32);
}

static uint64_t last_le64_mask(size_t nbits)
{
	return nbits % 64 ? ~UINT64_C(0) >> (64 - nbits % 64) : ~UINT64_C(0);
}

MIGRAM_EXPORT void migram_bitmap_to_le64(uint64_t *out,
					 const unsigned long *map, size_t nbits)
{
	size_t n = migram_bitmap_le64_words(nbits);
	size_t nwords = MIGRAM_BITS_TO_LONGS(nbits);

	for (size_t i = 0; i < n; i++) {
		uint64_t v = gather64(map, i, nwords);

		if (i == n - 1)
			v &= last_le64_mask(nbits);
		out[i] = GUINT64_TO_LE(v);
	}
}

MIGRAM_EXPORT void migram_bitmap_from_le64(unsigned long *map,
					   const uint64_t *in, size_t nbits)
{
	size_t n = migram_bitmap_le64_words(nbits);
	size_t nwords = MIGRAM_BITS_TO_LONGS(nbits);

	for (size_t i = 0; i < n; i++) {
		uint64_t v = GUINT64_FROM_LE(in[i]);

		if (i == n - 1)
			v &= last_le64_mask(nbits);
		scatter64(map, i, nwords, v);
	}
}

MIGRAM_EXPORT void migram_bitmap_fold(unsigned long *coarse,
				      const unsigned long *fine,
				      size_t fine_nbits, unsigned int shift)
{
	size_t group;
	size_t b;

	g_return_if_fail(shift < BPL);
	group = (size_t)1 << shift;
	b = migram_bitmap_find_next_set(fine, fine_nbits, 0);
	/*
	 * Visit one set bit per dirty group: after marking group g, resume
	 * the search at the start of group g + 1.
	 */
	while (b < fine_nbits) {
		size_t g = b >> shift;

		migram_bitmap_set_bit(coarse, g);
		if ((g + 1) > (fine_nbits - 1) / group)
			break;
		b = migram_bitmap_find_next_set(fine, fine_nbits,
						(g + 1) * group);
	}
}

MIGRAM_EXPORT void migram_bitmap_expand(unsigned long *fine, size_t fine_nbits,
					const unsigned long *coarse,
					unsigned int shift)
{
	size_t group;
	size_t coarse_nbits;
	size_t c;

	g_return_if_fail(shift < BPL);
	group = (size_t)1 << shift;
	if (fine_nbits == 0)
		return;
	coarse_nbits = (fine_nbits - 1) / group + 1;
	c = migram_bitmap_find_next_set(coarse, coarse_nbits, 0);
	while (c < coarse_nbits) {
		size_t first = c * group;
		size_t nr = MIN(group, fine_nbits - first);

		migram_bitmap_set(fine, first, nr);
		c = migram_bitmap_find_next_set(coarse, coarse_nbits, c + 1);
	}
}
