/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the destination: placing pages.  A placer assembles one
 * host page (huge pages come in target pages) and places it atomically
 * with UFFDIO_COPY or UFFDIO_ZEROPAGE; blocktime figures are taken here.
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

/* ---- faults ---- */

void migram_postcopy_dst_set_place_hook(DstPostcopy *pc, DstPlaceHook hook,
					void *opaque)
{
	pc->place_hook = hook;
	pc->place_hook_opaque = opaque;
}

/*
 * Place one host page at b + off, atomically, waking every thread blocked
 * on it: UFFDIO_ZEROPAGE when zero and the range supports it, otherwise
 * UFFDIO_COPY from src (the zero buffer when zero), through
 * migram_uffd_place(), whose EAGAIN policy is the one of every
 * placement.  The test hook, when set, answers before the kernel does
 * (its EAGAIN is retried the same way).  Returns 0, or the errno; EEXIST
 * means the page is already there (another channel or the fault thread
 * won the race).  Any thread; never allocates or locks.
 */
int migram_postcopy_dst_place_page(DstPostcopy *pc, DstBlock *b, uint64_t off,
				   const void *src, bool zero)
{
	int err;

	do {
		err = pc->place_hook
			      ? pc->place_hook(pc->place_hook_opaque, off, zero)
			      : 0;
	} while (err == EAGAIN);
	if (err)
		return err;
	if (zero)
		src = b->zeroable ? NULL : pc->zero;
	return migram_uffd_place(pc->uffd, (uintptr_t)b->host + off, src,
				 b->page_size, true, NULL);
}

/* ---- placing pages ---- */

void migram_postcopy_placer_init(DstPlacer *pl, bool preempt)
{
	memset(pl, 0, sizeof(*pl));
	pl->preempt = preempt;
}

void migram_postcopy_placer_clear(DstPlacer *pl)
{
	if (pl->buf)
		munmap(pl->buf, pl->cap);
	memset(pl, 0, sizeof(*pl));
}

/* Bucket i holds latencies in [2^i, 2^(i+1)) us; 0 us counts in bucket 0. */
static unsigned int latency_bucket(uint64_t us)
{
	return us ? MIN(g_bit_storage(us) - 1, MIGRAM_LATENCY_BUCKETS - 1) : 0;
}

/* After a successful placement: receivedmap, latencies, counters. */
void migram_postcopy_dst_placed(DstPostcopy *pc, DstPlacer *pl, DstBlock *b,
				uint64_t off)
{
	gint64 now = g_get_monotonic_time();
	GArray *times;

	pthread_mutex_lock(&pc->lock);
	migram_bitmap_set_atomic(
		b->receivedmap, (size_t)(off / MIGRAM_TARGET_PAGE_SIZE),
		(size_t)(b->page_size / MIGRAM_TARGET_PAGE_SIZE));
	pc->st.placed_pages++;
	if (pl->preempt)
		pc->st.preempt_pages++;
	times = g_hash_table_size(pc->waiting)
			? g_hash_table_lookup(pc->waiting, b->host + off)
			: NULL;
	if (!times) {
		pc->st.pushed_pages++;
	} else {
		for (guint i = 0; i < times->len; i++) {
			uint64_t us =
				(uint64_t)(now -
					   g_array_index(times, gint64, i));

			pc->st.blocked_us += us;
			pc->st.latency_hist[latency_bucket(us)]++;
			pc->st.latency_max_us = MAX(pc->st.latency_max_us, us);
		}
		g_hash_table_remove(pc->waiting, b->host + off);
	}
	pthread_mutex_unlock(&pc->lock);
}

static bool place_host_page(DstPostcopy *pc, DstPlacer *pl, DstBlock *b,
			    uint64_t off, const void *src, bool zero,
			    uint64_t at, GError **error)
{
	int rc;

	if (migram_bitmap_test_bit_atomic(
		    b->receivedmap, (size_t)(off / MIGRAM_TARGET_PAGE_SIZE))) {
		pthread_mutex_lock(&pc->lock);
		pc->st.duplicate_pages++;
		pthread_mutex_unlock(&pc->lock);
		return true;
	}
	rc = migram_postcopy_dst_place_page(pc, b, off, src, zero);
	if (rc == EEXIST) {
		pthread_mutex_lock(&pc->lock);
		pc->st.duplicate_pages++;
		pthread_mutex_unlock(&pc->lock);
		return true;
	}
	if (rc)
		return migram_stream_fail(
			error, MIGRAM_ERROR_IO, at,
			"placing ramblock '%s' page %#" G_GINT64_MODIFIER
			"x: %s: %s",
			b->idstr, off,
			zero && b->zeroable ? "UFFDIO_ZEROPAGE" : "UFFDIO_COPY",
			g_strerror(rc));
	migram_postcopy_dst_placed(pc, pl, b, off);
	return true;
}

void *migram_postcopy_placer_buffer(DstPostcopy *pc, DstPlacer *pl,
				    const char *idstr, uint64_t offset)
{
	DstBlock *b = migram_postcopy_dst_block_by_name(pc, idstr);

	if (!pl->buf) {
		pl->cap = pc->max_page;
		pl->buf = mmap(NULL, pl->cap, PROT_READ | PROT_WRITE,
			       /* cppcheck-suppress invalidFunctionArg ; -1 */
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (pl->buf == MAP_FAILED) {
			pl->buf = NULL;
			return NULL;
		}
	}
	if (!b || b->page_size == MIGRAM_TARGET_PAGE_SIZE)
		return pl->buf;
	return pl->buf + offset % b->page_size;
}

bool migram_postcopy_place(DstPostcopy *pc, DstPlacer *pl, const char *idstr,
			   uint64_t offset, bool zero, uint64_t at,
			   GError **error)
{
	DstBlock *b = migram_postcopy_dst_block_by_name(pc, idstr);
	uint64_t hp, base;

	if (!b)
		return migram_stream_fail(error, MIGRAM_ERROR_NOT_FOUND, at,
					  "postcopy page for unknown ramblock "
					  "'%s'",
					  idstr);
	if (offset % MIGRAM_TARGET_PAGE_SIZE || offset >= b->length ||
	    b->length - offset < MIGRAM_TARGET_PAGE_SIZE)
		return migram_stream_fail(
			error, MIGRAM_ERROR_PROTOCOL, at,
			"postcopy page at offset %#" G_GINT64_MODIFIER
			"x is outside ramblock '%s' (postcopy length "
			"%#" G_GINT64_MODIFIER "x)",
			offset, idstr, b->length);
	if (b->page_size == MIGRAM_TARGET_PAGE_SIZE)
		return place_host_page(pc, pl, b, offset, pl->buf, zero, at,
				       error);
	/* Huge page: target pages arrive in order; place when complete. */
	hp = b->page_size / MIGRAM_TARGET_PAGE_SIZE;
	base = offset - offset % b->page_size;
	if (offset % b->page_size == 0) {
		pl->block = b;
		pl->base = base;
		pl->count = 0;
		pl->all_zero = true;
	} else if (pl->block != b || pl->base != base ||
		   pl->count != (offset - base) / MIGRAM_TARGET_PAGE_SIZE) {
		return migram_stream_fail(
			error, MIGRAM_ERROR_PROTOCOL, at,
			"postcopy page %#" G_GINT64_MODIFIER
			"x of ramblock '%s' is not the next one of its huge "
			"page",
			offset, idstr);
	}
	if (zero)
		memset(pl->buf + offset % b->page_size, 0,
		       MIGRAM_TARGET_PAGE_SIZE);
	pl->all_zero &= zero;
	if (++pl->count < hp)
		return true;
	pl->block = NULL;
	return place_host_page(pc, pl, b, base, pl->buf, pl->all_zero, at,
			       error);
}
