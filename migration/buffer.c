/* SPDX-License-Identifier: MIT */
/*
 * Zero-page detection.
 *
 * A page is checked 256 bytes at a time: sixteen SSE2 loads OR-ed without
 * branches, then one test, so a zero page runs at load bandwidth and a
 * non-zero page usually leaves after its first block.  Most non-zero pages
 * are recognised in their first line; an untouched page is read once, at
 * memory speed (and, for never-touched anonymous memory, from the shared
 * zero page without populating anything).
 *
 * The sender reads guest pages while the guest may write them: that is
 * precopy, and the dirty log makes it correct (a write after the read
 * marks the page again).  ThreadSanitizer builds read with relaxed atomic
 * loads so the sanitizer sees the race is intended; other builds use plain
 * loads, which the compiler can vectorize.
 */
#include <stdint.h>
#include <string.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "buffer.h"

#if defined(__SSE2__) && !MIGRAM_TSAN
#include <emmintrin.h>

/*
 * The first 256 bytes with an early exit (most non-zero pages leave
 * there), then the rest OR-ed into four accumulators without a branch and
 * tested once: a zero page runs at load bandwidth.
 */
static bool blocks_zero(const unsigned char *p, size_t len)
{
	const __m128i *v = (const __m128i *)p;
	__m128i a = _mm_setzero_si128(), b = a, c = a, d = a;
	size_t n = len / 16, first = MIN(n, (size_t)16), i;

	for (i = 0; i < first; i += 2) {
		a = _mm_or_si128(a, _mm_load_si128(v + i));
		b = _mm_or_si128(b, _mm_load_si128(v + i + 1));
	}
	a = _mm_or_si128(a, b);
	if (_mm_movemask_epi8(_mm_cmpeq_epi8(a, _mm_setzero_si128())) != 0xffff)
		return false;
	for (; i < n; i += 4) {
		a = _mm_or_si128(a, _mm_load_si128(v + i));
		b = _mm_or_si128(b, _mm_load_si128(v + i + 1));
		c = _mm_or_si128(c, _mm_load_si128(v + i + 2));
		d = _mm_or_si128(d, _mm_load_si128(v + i + 3));
	}
	a = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));
	return _mm_movemask_epi8(_mm_cmpeq_epi8(a, _mm_setzero_si128())) ==
	       0xffff;
}
#else
/* Portable (and ThreadSanitizer) path: eight words per line. */
static bool blocks_zero(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i += 256) {
		const unsigned long *w = (const unsigned long *)(p + i);
		unsigned long acc = 0;

		for (size_t k = 0; k < 256 / sizeof(unsigned long); k++)
			acc |= MIGRAM_TSAN ? __atomic_load_n(&w[k],
							     __ATOMIC_RELAXED)
					   : w[k];
		if (acc)
			return false;
	}
	return true;
}
#endif

bool migram_buffer_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t head = 0, body;

	/* Unaligned head byte by byte (pages never have one). */
	while (head < len && ((uintptr_t)(p + head) % 16) != 0) {
		if (p[head++])
			return false;
	}
	body = (len - head) / 256 * 256;
	if (!blocks_zero(p + head, body))
		return false;
	for (size_t i = head + body; i < len; i++) {
		if (p[i])
			return false;
	}
	return true;
}
