/* SPDX-License-Identifier: MIT */
/*
 * Zero-page detection.
 *
 * A page is checked 64 bytes (one cache line, eight words) at a time: the
 * eight words are OR-ed without branches, so the compiler can vectorize the
 * OR, and the loop leaves at the first non-zero line.  Most non-zero pages
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
#include "migration-internal.h"

bool migram_buffer_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t i = 0;

	/* Unaligned head, byte by byte (pages never have one). */
	while (i < len && ((uintptr_t)(p + i) % sizeof(unsigned long)) != 0) {
		if (p[i++])
			return false;
	}
	for (; i + 64 <= len; i += 64) {
		const unsigned long *w = (const unsigned long *)(p + i);
		unsigned long acc = 0;

		for (size_t k = 0; k < 64 / sizeof(unsigned long); k++)
			acc |= MIGRAM_TSAN ? __atomic_load_n(&w[k],
							     __ATOMIC_RELAXED)
					   : w[k];
		if (acc)
			return false;
	}
	for (; i < len; i++) {
		if (p[i])
			return false;
	}
	return true;
}
