/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the destination: the discard list (POSTCOPY_RAM_DISCARD).
 * Pages the source will send again are dropped, so a stale precopy copy
 * never satisfies a fault.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "migram/ramblock.h"
#include "return-path.h"
#include "stream-error.h"
#include "postcopy-dst-internal.h"
#include "migram-uffd.h"

/* Drop [off, off+len) of b: receivedmap bits, then the memory. */
static bool drop_range(DstPostcopy *pc, DstBlock *b, uint64_t off, uint64_t len,
		       uint64_t at, GError **error)
{
	int advice = b->shared ? MADV_REMOVE : MADV_DONTNEED;

	migram_bitmap_clear_atomic(b->receivedmap,
				   (size_t)(off / MIGRAM_TARGET_PAGE_SIZE),
				   (size_t)(len / MIGRAM_TARGET_PAGE_SIZE));
	if (madvise(b->host + off, len, advice) != 0)
		return migram_stream_fail(
			error, MIGRAM_ERROR_IO, at,
			"discard of ramblock '%s' at %#" G_GINT64_MODIFIER
			"x, %#" G_GINT64_MODIFIER "x bytes: madvise: %s",
			b->idstr, off, len, g_strerror(errno));
	pthread_mutex_lock(&pc->lock);
	pc->st.discarded_pages += len / MIGRAM_TARGET_PAGE_SIZE;
	pthread_mutex_unlock(&pc->lock);
	return true;
}

bool migram_postcopy_dst_discard(DstPostcopy *pc, const guint8 *data,
				 size_t len, uint64_t at, GError **error)
{
	char name[MIGRAM_RAM_IDSTR_MAX + 1];
	size_t n, o;
	DstBlock *b;

	if (pc->state != DST_ADVISE && pc->state != DST_DISCARD)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "POSTCOPY_RAM_DISCARD outside the "
					  "advise/discard phase");
	if (len < 3 || data[0] != 0)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "POSTCOPY_RAM_DISCARD: %s",
					  len < 3 ? "too short"
						  : "unknown version");
	n = data[1];
	if (n == 0 || len < 3 + n || data[2 + n] != 0 ||
	    (len - 3 - n) % 16 != 0)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "POSTCOPY_RAM_DISCARD of %zu bytes: "
					  "bad name or range list",
					  len);
	memcpy(name, data + 2, n);
	name[n] = '\0';
	if (strlen(name) != n)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "POSTCOPY_RAM_DISCARD: NUL in the "
					  "block name");
	if (pc->state == DST_ADVISE) {
		if (!migram_postcopy_dst_take_blocks(pc, "POSTCOPY_RAM_DISCARD",
						     at, error))
			return false;
		/* THP would re-form and keep stale subpages: no THP. */
		for (guint i = 0; i < pc->blocks->len; i++) {
			DstBlock *d = &g_array_index(pc->blocks, DstBlock, i);

			if (d->page_size == MIGRAM_TARGET_PAGE_SIZE)
				madvise(d->host, d->length, MADV_NOHUGEPAGE);
		}
		pc->state = DST_DISCARD;
	}
	b = migram_postcopy_dst_block_by_name(pc, name);
	if (!b)
		return migram_stream_fail(error, MIGRAM_ERROR_NOT_FOUND, at,
					  "POSTCOPY_RAM_DISCARD for unknown "
					  "ramblock '%s'",
					  name);
	for (o = 3 + n; o < len; o += 16) {
		uint64_t start, l;

		memcpy(&start, data + o, 8);
		memcpy(&l, data + o + 8, 8);
		start = GUINT64_FROM_BE(start);
		l = GUINT64_FROM_BE(l);
		if (start % b->page_size || l % b->page_size || l == 0 ||
		    start >= b->length || b->length - start < l)
			return migram_stream_fail(
				error, MIGRAM_ERROR_PROTOCOL, at,
				"POSTCOPY_RAM_DISCARD of ramblock '%s': range "
				"%#" G_GINT64_MODIFIER "x+%#" G_GINT64_MODIFIER
				"x is misaligned or outside its %#" G_GINT64_MODIFIER
				"x bytes (page size %#" G_GINT64_MODIFIER "x)",
				name, start, l, b->length, b->page_size);
		if (!drop_range(pc, b, start, l, at, error))
			return false;
	}
	return true;
}
