/* SPDX-License-Identifier: MIT */
/*
 * Atomic word bitmap operations and exchange-and-collect.
 *
 * All atomics are GCC/Clang __atomic builtins on plain unsigned long words,
 * so the same arrays serve plain and atomic callers (and ThreadSanitizer sees
 * every access).  The ordering rule is the one a dirty log needs:
 *
 *   marker:     write the data, then set the bit       (release)
 *   collector:  take the bit (exchange or AND), then read the data (acquire)
 *
 * so a collector that takes a mark also sees the write the mark stands for.
 * A mark that lands after the collector's exchange stays in the source and
 * is taken by the next collection: nothing is lost and nothing is taken
 * twice, because each bit leaves the source in exactly one atomic operation.
 *
 * exchange-and-collect first reads each word with a relaxed load and skips
 * zero words without any atomic read-modify-write: in a sparse log most
 * words are zero, and an atomic exchange would pull every cache line into
 * exclusive state for nothing.
 */
#include "migram-common.h"
#include "bitmap-internal.h"

MIGRAM_EXPORT void migram_bitmap_set_bit_atomic(unsigned long *map, size_t bit)
{
	__atomic_fetch_or(&map[bit / BPL], 1UL << (bit % BPL),
			  __ATOMIC_RELEASE);
}

MIGRAM_EXPORT void migram_bitmap_clear_bit_atomic(unsigned long *map,
						  size_t bit)
{
	__atomic_fetch_and(&map[bit / BPL], ~(1UL << (bit % BPL)),
			   __ATOMIC_RELEASE);
}

MIGRAM_EXPORT bool migram_bitmap_test_and_set_bit_atomic(unsigned long *map,
							 size_t bit)
{
	unsigned long m = 1UL << (bit % BPL);

	return (__atomic_fetch_or(&map[bit / BPL], m, __ATOMIC_ACQ_REL) & m) !=
	       0;
}

MIGRAM_EXPORT bool migram_bitmap_test_and_clear_bit_atomic(unsigned long *map,
							   size_t bit)
{
	unsigned long m = 1UL << (bit % BPL);

	return (__atomic_fetch_and(&map[bit / BPL], ~m, __ATOMIC_ACQ_REL) &
		m) != 0;
}

MIGRAM_EXPORT size_t migram_bitmap_set_atomic(unsigned long *map, size_t start,
					      size_t nr)
{
	struct bit_span s;
	size_t fresh = 0;

	if (nr == 0)
		return 0;
	s = bit_span_of(start, nr);
	for (size_t w = s.first; w <= s.last; w++) {
		unsigned long m = span_mask(&s, w);
		unsigned long old = __atomic_fetch_or(&map[w], m,
						      __ATOMIC_RELEASE);

		fresh += popcount_word(m & ~old);
	}
	return fresh;
}

MIGRAM_EXPORT void migram_bitmap_clear_atomic(unsigned long *map, size_t start,
					      size_t nr)
{
	struct bit_span s;

	if (nr == 0)
		return;
	s = bit_span_of(start, nr);
	for (size_t w = s.first; w <= s.last; w++)
		__atomic_fetch_and(&map[w], ~span_mask(&s, w),
				   __ATOMIC_RELEASE);
}

MIGRAM_EXPORT bool migram_bitmap_test_and_clear_atomic(unsigned long *map,
						       size_t start, size_t nr)
{
	struct bit_span s;
	unsigned long seen = 0;

	if (nr == 0)
		return false;
	s = bit_span_of(start, nr);
	for (size_t w = s.first; w <= s.last; w++) {
		unsigned long m = span_mask(&s, w);

		if (!(load_relaxed(&map[w]) & m))
			continue;
		seen |= __atomic_fetch_and(&map[w], ~m, __ATOMIC_ACQ_REL) & m;
	}
	return seen != 0;
}

/* Take the bits of mask m out of *p atomically; returns what was taken. */
static inline unsigned long take_word(unsigned long *p, unsigned long m)
{
	if (!(load_relaxed(p) & m))
		return 0;
	if (m == ~0UL)
		return __atomic_exchange_n(p, 0UL, __ATOMIC_ACQUIRE);
	return __atomic_fetch_and(p, ~m, __ATOMIC_ACQUIRE) & m;
}

MIGRAM_EXPORT size_t migram_bitmap_exchange_collect(unsigned long *dst,
						    unsigned long *src,
						    size_t start, size_t nr)
{
	struct bit_span s;
	size_t fresh = 0;

	if (nr == 0)
		return 0;
	s = bit_span_of(start, nr);
	for (size_t w = s.first; w <= s.last; w++) {
		unsigned long got;

		/* Interior words: skip zero runs without atomics. */
		if (w > s.first)
			w = skip_words(src, w, s.last, 0);
		got = take_word(&src[w], span_mask(&s, w));
		if (!got)
			continue;
		fresh += popcount_word(got & ~dst[w]);
		dst[w] |= got;
	}
	return fresh;
}

MIGRAM_EXPORT size_t migram_bitmap_exchange_collect_atomic(unsigned long *dst,
							   unsigned long *src,
							   size_t start,
							   size_t nr)
{
	struct bit_span s;
	size_t fresh = 0;

	if (nr == 0)
		return 0;
	s = bit_span_of(start, nr);
	for (size_t w = s.first; w <= s.last; w++) {
		unsigned long got, old;

		/* Interior words: skip zero runs without atomics. */
		if (w > s.first)
			w = skip_words(src, w, s.last, 0);
		got = take_word(&src[w], span_mask(&s, w));
		if (!got)
			continue;
		old = __atomic_fetch_or(&dst[w], got, __ATOMIC_RELEASE);
		fresh += popcount_word(got & ~old);
	}
	return fresh;
}

MIGRAM_EXPORT size_t migram_bitmap_or_collect(unsigned long *dst,
					      const unsigned long *src,
					      size_t start, size_t nr)
{
	struct bit_span s;
	size_t fresh = 0;

	if (nr == 0)
		return 0;
	s = bit_span_of(start, nr);
	for (size_t w = s.first; w <= s.last; w++) {
		unsigned long got;

		if (w > s.first)
			w = skip_words(src, w, s.last, 0);
		got = __atomic_load_n(&src[w], __ATOMIC_ACQUIRE) &
		      span_mask(&s, w);
		if (!got)
			continue;
		fresh += popcount_word(got & ~dst[w]);
		dst[w] |= got;
	}
	return fresh;
}

MIGRAM_EXPORT void migram_bitmap_andnot_atomic(unsigned long *map,
					       const unsigned long *mask,
					       size_t start, size_t nr)
{
	struct bit_span s;

	if (nr == 0)
		return;
	s = bit_span_of(start, nr);
	for (size_t w = s.first; w <= s.last; w++) {
		unsigned long m = mask[w] & span_mask(&s, w);

		if (m)
			__atomic_fetch_and(&map[w], ~m, __ATOMIC_ACQ_REL);
	}
}
