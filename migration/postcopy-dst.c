/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the destination: the discard list, userfaultfd in missing
 * mode, the fault thread that turns faults into page requests, atomic
 * placement, blocktime figures, and the return path's writer side.
 *
 * Threads.  The loading thread (the receiver) handles commands and places
 * pages from the main channel; a preempt thread places pages from the
 * preempt channel; the fault thread reads faults and writes requests.  They
 * share:
 *  - the return path, under rp_lock (rp is NULL while paused);
 *  - receivedmap (atomic bit operations) and the `waiting` table of fault
 *    times, both under `lock` where they meet: a fault records its time
 *    only if the page is not received, and a placement sets the bit and
 *    takes the waiting times in one critical section, so no fault is left
 *    waiting for a placement that already happened;
 *  - `requested` bits (atomic test-and-set), so one page is requested
 *    once however many threads fault on it.
 *
 * Placement is UFFDIO_COPY (or UFFDIO_ZEROPAGE) in mode 0: it maps the
 * page atomically and wakes every thread blocked on it.  A page whose
 * receivedmap bit is already set is dropped, and EEXIST (another channel
 * won the race) is not an error.  Every placement goes through one helper,
 * place_page(), with one retry policy (EAGAIN is retried).  A received page can
 * still be missing: a precopy ZERO record leaves unpopulated memory alone.  The
 * fault thread maps the zero page for those; nothing else can arrive for them.
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

/* A userfaultfd with the API handshake done; -1 with *error. */
static int open_uffd(GError **error)
{
	uint64_t ioctls = 0;
	int fd = migram_uffd_open("postcopy", error);

	if (fd < 0)
		return -1;
	if (!migram_uffd_api(fd, 0, NULL, &ioctls, "postcopy",
			     MIGRAM_ERROR_UNSUPPORTED, error)) {
		close(fd);
		return -1;
	}
	if (!(ioctls & (UINT64_C(1) << _UFFDIO_REGISTER))) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			    "postcopy: userfaultfd cannot register ranges");
		close(fd);
		return -1;
	}
	return fd;
}

MIGRAM_EXPORT bool migram_postcopy_available(GError **error)
{
	int fd = open_uffd(error);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

DstPostcopy *migram_postcopy_dst_new(MigramRamList *list)
{
	DstPostcopy *pc = g_new0(DstPostcopy, 1);

	pc->list = list;
	pc->uffd = -1;
	pc->quit_fd = -1;
	pc->blocks = g_array_new(FALSE, TRUE, sizeof(DstBlock));
	pthread_mutex_init(&pc->rp_lock, NULL);
	pthread_mutex_init(&pc->lock, NULL);
	pc->waiting = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL,
					    (GDestroyNotify)g_array_unref);
	return pc;
}

void migram_postcopy_dst_free(DstPostcopy *pc)
{
	if (!pc)
		return;
	migram_postcopy_dst_stop_fault_thread(pc);
	migram_postcopy_dst_unregister_all(pc);
	if (pc->uffd >= 0)
		close(pc->uffd);
	if (pc->quit_fd >= 0)
		close(pc->quit_fd);
	for (guint i = 0; i < pc->blocks->len; i++)
		migram_bitmap_free(
			g_array_index(pc->blocks, DstBlock, i).requested);
	g_array_unref(pc->blocks);
	g_hash_table_unref(pc->waiting);
	if (pc->zero)
		munmap(pc->zero, pc->max_page);
	migram_channel_free(pc->rp);
	pthread_mutex_destroy(&pc->rp_lock);
	pthread_mutex_destroy(&pc->lock);
	g_free(pc);
}

DstState migram_postcopy_dst_state(const DstPostcopy *pc)
{
	return pc->state;
}

/* ---- return path (writer side) ---- */

void migram_postcopy_dst_set_rp(DstPostcopy *pc, MigramChannel *rp)
{
	MigramChannel *old;

	pthread_mutex_lock(&pc->rp_lock);
	old = pc->rp;
	pc->rp = rp;
	pc->rp_last[0] = '\0';
	pthread_mutex_unlock(&pc->rp_lock);
	migram_channel_free(old);
}

bool migram_postcopy_dst_has_rp(DstPostcopy *pc)
{
	bool has;

	pthread_mutex_lock(&pc->rp_lock);
	has = pc->rp != NULL;
	pthread_mutex_unlock(&pc->rp_lock);
	return has;
}

bool migram_postcopy_dst_rp_u32(DstPostcopy *pc, uint16_t type, uint32_t value)
{
	bool ok = false;

	pthread_mutex_lock(&pc->rp_lock);
	if (pc->rp) {
		migram_rp_write_u32(pc->rp, type, value);
		ok = migram_channel_flush(pc->rp, NULL);
	}
	pthread_mutex_unlock(&pc->rp_lock);
	return ok;
}

/* Caller holds rp_lock. */
bool migram_postcopy_dst_send_request(DstPostcopy *pc, DstBlock *b,
				      uint64_t off)
{
	bool same = strcmp(pc->rp_last, b->idstr) == 0;

	if (!pc->rp)
		return false;
	migram_rp_write_req(pc->rp, same ? NULL : b->idstr, off,
			    (uint32_t)b->page_size);
	if (!migram_channel_flush(pc->rp, NULL))
		return false;
	g_strlcpy(pc->rp_last, b->idstr, sizeof(pc->rp_last));
	return true;
}

/* ---- blocks ---- */

DstBlock *migram_postcopy_dst_block_by_name(DstPostcopy *pc, const char *idstr)
{
	for (guint i = 0; i < pc->blocks->len; i++) {
		DstBlock *b = &g_array_index(pc->blocks, DstBlock, i);

		if (strcmp(b->idstr, idstr) == 0)
			return b;
	}
	return NULL;
}

DstBlock *migram_postcopy_dst_block_by_host(DstPostcopy *pc, uintptr_t addr)
{
	for (guint i = 0; i < pc->blocks->len; i++) {
		DstBlock *b = &g_array_index(pc->blocks, DstBlock, i);

		if (addr >= (uintptr_t)b->host &&
		    addr - (uintptr_t)b->host < b->length)
			return b;
	}
	return NULL;
}

/* Forget a table that could not be completed (take_blocks failed). */
static void drop_blocks(DstPostcopy *pc)
{
	for (guint i = 0; i < pc->blocks->len; i++)
		migram_bitmap_free(
			g_array_index(pc->blocks, DstBlock, i).requested);
	g_array_set_size(pc->blocks, 0);
	pc->max_page = 0;
}

/*
 * The table of migratable blocks, taken once (at the first discard or at
 * LISTEN, named by `what` in errors).  The embedder must not add, remove or
 * resize blocks during a postcopy load (docs/postcopy.md); host pointers
 * stay valid until then.  A block's postcopy length is bounded by its used
 * length: a block the stream did not list keeps the length of an earlier
 * load, and nothing may be placed past used_length.
 */
bool migram_postcopy_dst_take_blocks(DstPostcopy *pc, const char *what,
				     uint64_t at, GError **error)
{
	if (pc->zero)
		return true;
	migram_rcu_read_lock();
	for (MigramRamBlock *rb =
		     migram_ram_list_next_migratable(pc->list, NULL);
	     rb; rb = migram_ram_list_next_migratable(pc->list, rb)) {
		DstBlock b = {
			.host = migram_ram_block_host(rb),
			.length = MIN(migram_ram_block_postcopy_length(rb),
				      migram_ram_block_used_length(rb)),
			.page_size = migram_ram_block_page_size(rb),
			.shared = (migram_ram_block_flags(rb) &
				   MIGRAM_RAM_SHARED) ||
				  migram_ram_block_fd(rb) >= 0,
			.receivedmap = migram_ram_block_receivedmap(rb),
		};

		g_strlcpy(b.idstr, migram_ram_block_idstr(rb), sizeof(b.idstr));
		b.pages = b.length / MIGRAM_TARGET_PAGE_SIZE;
		b.requested = migram_bitmap_new((size_t)MAX(b.pages, 1));
		pc->max_page = MAX(pc->max_page, b.page_size);
		g_array_append_val(pc->blocks, b);
	}
	migram_rcu_read_unlock();
	for (guint i = 0; i < pc->blocks->len; i++) {
		DstBlock *b = &g_array_index(pc->blocks, DstBlock, i);

		if (!b->requested) {
			migram_stream_fail(error, MIGRAM_ERROR_NO_MEMORY, at,
					   "%s: ramblock '%s': cannot allocate "
					   "the request bitmap for "
					   "%" G_GUINT64_FORMAT " pages",
					   what, b->idstr, b->pages);
			drop_blocks(pc);
			return false;
		}
		if (!b->receivedmap) {
			migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					   "%s before the block list "
					   "(ramblock '%s' has no receivedmap)",
					   what, b->idstr);
			drop_blocks(pc);
			return false;
		}
	}
	pc->zero =
		mmap(NULL, MAX(pc->max_page, MIGRAM_TARGET_PAGE_SIZE),
		     PROT_READ,
		     /* cppcheck-suppress invalidFunctionArg ; anon takes -1 */
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pc->zero == MAP_FAILED) {
		pc->zero = NULL;
		drop_blocks(pc);
		return migram_stream_fail(error, MIGRAM_ERROR_NO_MEMORY, at,
					  "%s: zero page buffer: %s", what,
					  g_strerror(errno));
	}
	pc->max_page = MAX(pc->max_page, MIGRAM_TARGET_PAGE_SIZE);
	return true;
}

/* ---- ADVISE and DISCARD ---- */

bool migram_postcopy_dst_advise(DstPostcopy *pc, const guint8 *data, size_t len,
				uint64_t at, GError **error)
{
	uint64_t summary, tps;
	int fd;

	if (pc->state != DST_NONE)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "POSTCOPY_ADVISE twice");
	if (len != 16)
		return migram_stream_fail(error, MIGRAM_ERROR_UNSUPPORTED, at,
					  "POSTCOPY_ADVISE of %zu bytes: only "
					  "postcopy-ram (16 bytes) is "
					  "supported",
					  len);
	memcpy(&summary, data, 8);
	memcpy(&tps, data + 8, 8);
	summary = GUINT64_FROM_BE(summary);
	tps = GUINT64_FROM_BE(tps);
	if (tps != MIGRAM_TARGET_PAGE_SIZE)
		return migram_stream_fail(error, MIGRAM_ERROR_INVALID, at,
					  "POSTCOPY_ADVISE: target page size "
					  "%" G_GUINT64_FORMAT
					  " (this host uses %u)",
					  tps, MIGRAM_TARGET_PAGE_SIZE);
	if (!(summary & MIGRAM_TARGET_PAGE_SIZE))
		return migram_stream_fail(error, MIGRAM_ERROR_INVALID, at,
					  "POSTCOPY_ADVISE: page size summary "
					  "%#" G_GINT64_MODIFIER
					  "x lacks the target page size",
					  summary);
	fd = open_uffd(error);
	if (fd < 0) {
		g_prefix_error(error,
			       "stream byte %" G_GUINT64_FORMAT
			       ": POSTCOPY_ADVISE: ",
			       at);
		return false;
	}
	pc->uffd = fd;
	pc->state = DST_ADVISE;
	return true;
}

void migram_postcopy_dst_run(DstPostcopy *pc)
{
	pc->state = DST_RUNNING;
	pthread_mutex_lock(&pc->lock);
	pc->st.running = true;
	pthread_mutex_unlock(&pc->lock);
}

/* ---- the end, recovery, stats ---- */

bool migram_postcopy_dst_complete(DstPostcopy *pc, uint64_t at, GError **error)
{
	uint64_t missing = 0;
	const char *first = NULL;

	for (guint i = 0; i < pc->blocks->len; i++) {
		DstBlock *b = &g_array_index(pc->blocks, DstBlock, i);
		size_t got = migram_bitmap_count(b->receivedmap, 0,
						 (size_t)b->pages);

		if (got < b->pages && !first)
			first = b->idstr;
		missing += b->pages - got;
	}
	if (missing)
		return migram_stream_fail(
			error, MIGRAM_ERROR_PROTOCOL, at,
			"postcopy ended with %" G_GUINT64_FORMAT
			" pages never received (first in "
			"ramblock '%s')",
			missing, first);
	migram_postcopy_dst_stop_fault_thread(pc);
	migram_postcopy_dst_unregister_all(pc);
	pc->state = DST_END;
	return true;
}

bool migram_postcopy_dst_send_bitmap(DstPostcopy *pc, const guint8 *data,
				     size_t len, uint64_t at, GError **error)
{
	char name[MIGRAM_RAM_IDSTR_MAX + 1];
	DstBlock *b;
	bool ok = false;

	if (len < 2 || data[0] != len - 1)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "RECV_BITMAP of %zu bytes: bad block "
					  "name",
					  len);
	memcpy(name, data + 1, len - 1);
	name[len - 1] = '\0';
	if (strlen(name) != len - 1)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "RECV_BITMAP: NUL in the block name");
	b = migram_postcopy_dst_block_by_name(pc, name);
	if (!b || pc->state < DST_LISTENING)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "RECV_BITMAP for %s ramblock '%s'",
					  b ? "a not yet listening" : "unknown",
					  name);
	pthread_mutex_lock(&pc->rp_lock);
	if (!pc->rp) {
		migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
				   "RECV_BITMAP for ramblock '%s' without a "
				   "return path",
				   name);
	} else {
		migram_rp_write_bitmap(pc->rp, b->idstr, b->receivedmap,
				       b->pages);
		ok = migram_channel_flush(pc->rp, error);
		if (!ok)
			g_prefix_error(error,
				       "stream byte %" G_GUINT64_FORMAT
				       ": RECV_BITMAP for ramblock '%s': "
				       "return path: ",
				       at, name);
	}
	pthread_mutex_unlock(&pc->rp_lock);
	return ok;
}

void migram_postcopy_dst_rerequest(DstPostcopy *pc)
{
	pthread_mutex_lock(&pc->rp_lock);
	for (guint i = 0; i < pc->blocks->len; i++) {
		DstBlock *b = &g_array_index(pc->blocks, DstBlock, i);
		uint64_t hp = b->page_size / MIGRAM_TARGET_PAGE_SIZE;

		for (size_t p =
			     migram_bitmap_find_next_set(b->requested,
							 (size_t)b->pages, 0);
		     p < b->pages;
		     p = migram_bitmap_find_next_set(b->requested,
						     (size_t)b->pages, p + hp))
			if (!migram_bitmap_test_bit_atomic(b->receivedmap, p))
				migram_postcopy_dst_send_request(
					pc, b,
					(uint64_t)p * MIGRAM_TARGET_PAGE_SIZE);
	}
	pthread_mutex_unlock(&pc->rp_lock);
}

void migram_postcopy_dst_set_paused(DstPostcopy *pc, bool paused, bool done)
{
	pthread_mutex_lock(&pc->lock);
	pc->st.paused = paused;
	if (done)
		pc->st.recoveries++;
	pthread_mutex_unlock(&pc->lock);
}

uint64_t migram_postcopy_latency_quantile(const uint64_t *hist, uint64_t max_us,
					  unsigned int permille)
{
	uint64_t n = 0, rank, seen = 0;

	for (unsigned int i = 0; i < MIGRAM_LATENCY_BUCKETS; i++)
		n += hist[i];
	if (!n)
		return 0;
	rank = n * permille / 1000; /* 0-based, as in a sorted array */
	for (unsigned int i = 0; i < MIGRAM_LATENCY_BUCKETS; i++) {
		seen += hist[i];
		if (seen > rank)
			return i + 1 < MIGRAM_LATENCY_BUCKETS
				       ? MIN((UINT64_C(1) << (i + 1)) - 1,
					     max_us)
				       : max_us; /* the last is open-ended */
	}
	return max_us;
}

/* A copy under the lock; the quantiles from the copy, outside it. */
void migram_postcopy_dst_stats(DstPostcopy *pc, MigramPostcopyStats *out)
{
	pthread_mutex_lock(&pc->lock);
	*out = pc->st;
	pthread_mutex_unlock(&pc->lock);
	out->latency_p50_us = migram_postcopy_latency_quantile(
		out->latency_hist, out->latency_max_us, 500);
	out->latency_p99_us = migram_postcopy_latency_quantile(
		out->latency_hist, out->latency_max_us, 990);
}
