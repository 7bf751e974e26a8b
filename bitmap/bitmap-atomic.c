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

MIGRAM_EXPORT bool migram_bitmap_test_bit_atomic(const unsigned long *map,
						 size_t bit)
{
	return (__atomic_load_n(&map[bit / BPL], __ATOMIC_ACQUIRE) >>
		(bit % BPL)) &
	       1;
}

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

/* One word of or_collect: returns the bits newly set in *dst. */
static inline size_t or_word(unsigned long *dst, unsigned long got)
{
	size_t fresh = popcount_word(got & ~*dst);

	*dst |= got;
	return fresh;
}

/*
 * The sync's inner loop counts bits per word; on x86-64 a POPCNT build is
 * chosen at load time (every x86-64 CPU since 2008 has it), with the
 * portable SWAR count as the fallback.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&         \
	!defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
#define HOT_CLONES __attribute__((target_clones("popcnt", "default")))
#else
#define HOT_CLONES
#endif

MIGRAM_EXPORT HOT_CLONES size_t migram_bitmap_or_collect(
	unsigned long *dst, const unsigned long *src, size_t start, size_t nr)
{
	struct bit_span s;
	size_t fresh = 0, w;

	if (nr == 0)
		return 0;
	s = bit_span_of(start, nr);
	fresh += or_word(&dst[s.first],
			 __atomic_load_n(&src[s.first], __ATOMIC_ACQUIRE) &
				 s.head);
	if (s.first == s.last)
		return fresh;
	/*
	 * Interior words four at a time: skip a group only when all four are
	 * zero (predictable in a sparse log); otherwise take the four without
	 * branches, since at a percent of dirty pages about half the words
	 * are zero and a branch per word would mispredict all the time.
	 */
	for (w = s.first + 1; w + 4 <= s.last; w += 4) {
		unsigned long a = __atomic_load_n(&src[w], __ATOMIC_ACQUIRE);
		unsigned long b = __atomic_load_n(&src[w + 1],
						  __ATOMIC_ACQUIRE);
		unsigned long c = __atomic_load_n(&src[w + 2],
						  __ATOMIC_ACQUIRE);
		unsigned long d = __atomic_load_n(&src[w + 3],
						  __ATOMIC_ACQUIRE);

		if (!(a | b | c | d))
			continue;
		fresh += or_word(&dst[w], a) + or_word(&dst[w + 1], b) +
			 or_word(&dst[w + 2], c) + or_word(&dst[w + 3], d);
	}
	for (; w < s.last; w++)
		fresh += or_word(&dst[w],
				 __atomic_load_n(&src[w], __ATOMIC_ACQUIRE));
	fresh += or_word(&dst[s.last],
			 __atomic_load_n(&src[s.last], __ATOMIC_ACQUIRE) &
				 s.tail);
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
