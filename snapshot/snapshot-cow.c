/* SPDX-License-Identifier: MIT */
/*
 * Copy-before-write snapshots (snapshot.h): userfaultfd write-protect.
 *
 * Ordering.  The handler copies a page into the staging (present bit set
 * with release) BEFORE it unprotects the page, and the guest can change
 * the page only after that.  The writer reads the guest page, then issues
 * a full fence, then tests the present bit: if its read saw a changed
 * page, the copy was published before the change, so the bit is seen set
 * and the copy is used instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "snapshot-internal.h"
#include "migram-uffd.h"

#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif

#define RUN 64u

typedef struct {
	uint8_t *host;
	uint64_t npages;
	MigramStaging *st;
} CBlock;

struct MigramCowSnapshot {
	int uffd, stopfd;
	CBlock *blocks;
	guint nblocks;
	GThread *handler;
	MigramCowStats stats;
	uint64_t wp_faults; /* atomic */
};

static bool wp(int uffd, uint8_t *at, uint64_t len, bool on)
{
	struct uffdio_writeprotect w = {
		.range = { .start = (uintptr_t)at, .len = len },
		.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0
	};
	return ioctl(uffd, UFFDIO_WRITEPROTECT, &w) == 0;
}

static gpointer handler_main(gpointer data)
{
	MigramCowSnapshot *cow = data;
	struct pollfd pfd[2] = { { .fd = cow->uffd, .events = POLLIN },
				 { .fd = cow->stopfd, .events = POLLIN } };
	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents)
			break;
		struct uffd_msg msg;
		if (read(cow->uffd, &msg, sizeof(msg)) != sizeof(msg) ||
		    msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uint64_t addr = msg.arg.pagefault.address & ~(uint64_t)4095;
		for (guint i = 0; i < cow->nblocks; i++) {
			CBlock *b = &cow->blocks[i];
			uintptr_t h = (uintptr_t)b->host;
			if (addr < h || addr >= h + b->npages * SNAP_PAGE)
				continue;
			uint64_t p = (addr - h) / SNAP_PAGE;
			/* Old content first, then let the write through. */
			if (!migram_staging_is_present(b->st, p) &&
			    migram_staging_copy(b->st, b->host + p * SNAP_PAGE,
						p, 1, NULL))
				__atomic_add_fetch(&cow->wp_faults, 1,
						   __ATOMIC_RELAXED);
			(void)wp(cow->uffd, b->host + p * SNAP_PAGE, SNAP_PAGE,
				 false);
			break;
		}
	}
	return NULL;
}

static void cow_free(MigramCowSnapshot *cow)
{
	for (guint i = 0; i < cow->nblocks; i++) {
		CBlock *b = &cow->blocks[i];
		if (b->host) {
			struct uffdio_range r = { .start = (uintptr_t)b->host,
						  .len = b->npages *
							 SNAP_PAGE };
			(void)wp(cow->uffd, b->host, r.len, false);
			(void)ioctl(cow->uffd, UFFDIO_UNREGISTER, &r);
		}
		migram_staging_free(b->st);
	}
	g_free(cow->blocks);
	if (cow->uffd >= 0)
		close(cow->uffd);
	if (cow->stopfd >= 0)
		close(cow->stopfd);
	g_free(cow);
}

static bool cow_open(MigramCowSnapshot *cow, GError **error)
{
	const char *who = "copy-before-write snapshot";
	uint64_t need = UFFD_FEATURE_PAGEFAULT_FLAG_WP |
			UFFD_FEATURE_WP_UNPOPULATED;
	uint64_t offered = 0;
	/* What the kernel offers: a probe fd (one handshake per fd). */
	int probe = migram_uffd_open(who, error);
	if (probe < 0)
		return false;
	bool ok = migram_uffd_api(probe, 0, &offered, NULL, who,
				  MIGRAM_ERROR_UNSUPPORTED, error);
	close(probe);
	if (!ok)
		return false;
	if ((offered & need) != need) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			    "copy-before-write snapshot: the kernel lacks "
			    "userfaultfd write-protect of unpopulated memory");
		return false;
	}
	cow->uffd = migram_uffd_open(who, error);
	if (cow->uffd < 0 ||
	    !migram_uffd_api(cow->uffd,
			     need | (offered & UFFD_FEATURE_WP_HUGETLBFS_SHMEM),
			     NULL, NULL, who, MIGRAM_ERROR_UNSUPPORTED, error))
		return false;
	cow->stopfd = eventfd(0, EFD_CLOEXEC);
	if (cow->stopfd < 0)
		return migram_error_errno(
			error, MIGRAM_ERROR_IO, errno,
			"copy-before-write snapshot: eventfd");
	return true;
}

static bool cow_protect(MigramCowSnapshot *cow, MigramRamList *list,
			GError **error)
{
	GArray *arr = g_array_new(FALSE, TRUE, sizeof(CBlock));
	bool ok = true;
	urcu_memb_read_lock();
	for (MigramRamBlock *rb = migram_ram_list_next_migratable(list, NULL);
	     rb && ok; rb = migram_ram_list_next_migratable(list, rb)) {
		CBlock b = { .npages = migram_ram_block_used_length(rb) /
				       SNAP_PAGE };
		if (migram_ram_block_flags(rb) & MIGRAM_RAM_HUGETLB) {
			g_set_error(error, MIGRAM_ERROR,
				    MIGRAM_ERROR_UNSUPPORTED,
				    "copy-before-write snapshot: block '%s' "
				    "is hugetlb",
				    migram_ram_block_idstr(rb));
			ok = false;
			break;
		}
		b.st = migram_staging_new_for_block(rb, error);
		if (!b.st) {
			ok = false;
			break;
		}
		uint8_t *host = migram_ram_block_host(rb);
		struct uffdio_register reg = {
			.range = { .start = (uintptr_t)host,
				   .len = b.npages * SNAP_PAGE },
			.mode = UFFDIO_REGISTER_MODE_WP
		};
		if (ioctl(cow->uffd, UFFDIO_REGISTER, &reg) < 0) {
			ok = migram_error_errno(
				error, MIGRAM_ERROR_UNSUPPORTED, errno,
				"copy-before-write snapshot: UFFDIO_REGISTER (write-protect)");
		} else {
			b.host = host;
			if (!wp(cow->uffd, host, b.npages * SNAP_PAGE, true))
				ok = migram_error_errno(
					error, MIGRAM_ERROR_IO, errno,
					"copy-before-write snapshot: UFFDIO_WRITEPROTECT");
		}
		g_array_append_val(arr, b);
	}
	urcu_memb_read_unlock();
	cow->nblocks = arr->len;
	cow->blocks = (CBlock *)(void *)g_array_free(arr, FALSE);
	return ok;
}

MIGRAM_EXPORT MigramCowSnapshot *migram_snapshot_cow_start(MigramRamList *list,
							   GError **error)
{
	MIGRAM_ASSERT_NOT_RCU_READER();
	uint64_t t0 = snap_now_ns();
	MigramCowSnapshot *cow = g_new0(MigramCowSnapshot, 1);
	cow->uffd = cow->stopfd = -1;
	if (!cow_open(cow, error) || !cow_protect(cow, list, error)) {
		cow_free(cow);
		return NULL;
	}
	cow->handler = g_thread_new("migram-cow-fault", handler_main, cow);
	cow->stats.protect_ns = snap_now_ns() - t0;
	return cow;
}

static bool is_zero(const uint8_t *p)
{
	static const uint8_t zero[SNAP_PAGE];
	return memcmp(p, zero, SNAP_PAGE) == 0;
}

/* Page p of b as it was at the pause, into out; true if non-zero. */
static bool pause_content(MigramCowSnapshot *cow, CBlock *b, uint64_t p,
			  uint8_t *out)
{
	memcpy(out, b->host + p * SNAP_PAGE, SNAP_PAGE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	const void *copy = NULL;
	(void)migram_staging_page_content(b->st, p, &copy, NULL);
	if (copy) {
		memcpy(out, copy, SNAP_PAGE);
		cow->stats.from_staging++;
	}
	return !is_zero(out);
}

static bool flush(MigramCowSnapshot *cow, MigramSnapshotWriter *w, guint i,
		  CBlock *b, uint64_t first, uint64_t n, const uint8_t *buf,
		  GError **error)
{
	if (!n)
		return true;
	if (!migram_snapshot_writer_put_pages(w, i, first, n, buf, error))
		return false;
	cow->stats.pages_written += n;
	/* Written: the guest may write these pages freely now. */
	(void)wp(cow->uffd, b->host + first * SNAP_PAGE, n * SNAP_PAGE, false);
	return true;
}

MIGRAM_EXPORT bool migram_snapshot_cow_write(MigramCowSnapshot *cow,
					     MigramSnapshotWriter *w,
					     const unsigned long *const *dirty,
					     GError **error)
{
	g_return_val_if_fail(cow != NULL && w != NULL, false);
	uint8_t *buf = g_malloc((gsize)RUN * SNAP_PAGE);
	bool ok = true;
	for (guint i = 0; i < cow->nblocks && ok; i++) {
		CBlock *b = &cow->blocks[i];
		uint64_t first = 0, n = 0;
		for (uint64_t p = 0; p < b->npages && ok; p++) {
			if (dirty &&
			    !migram_bitmap_test_bit(dirty[i], (size_t)p)) {
				ok = flush(cow, w, i, b, first, n, buf, error);
				n = 0;
				continue;
			}
			if (n == RUN) {
				ok = flush(cow, w, i, b, first, n, buf, error);
				n = 0;
			}
			if (n == 0)
				first = p;
			if (!pause_content(cow, b, p, buf + n * SNAP_PAGE) &&
			    !dirty) {
				cow->stats.zero_skipped++;
				ok = ok &&
				     flush(cow, w, i, b, first, n, buf, error);
				n = 0;
				continue;
			}
			n++;
		}
		if (ok)
			ok = flush(cow, w, i, b, first, n, buf, error);
	}
	g_free(buf);
	return ok;
}

MIGRAM_EXPORT void migram_snapshot_cow_finish(MigramCowSnapshot *cow,
					      MigramCowStats *stats)
{
	if (!cow)
		return;
	uint64_t one = 1;
	if (write(cow->stopfd, &one, sizeof(one)) != sizeof(one))
		g_warning("copy-before-write snapshot: eventfd write failed");
	/* Unprotect first so no guest thread waits on a stopped handler. */
	for (guint i = 0; i < cow->nblocks; i++)
		if (cow->blocks[i].host)
			(void)wp(cow->uffd, cow->blocks[i].host,
				 cow->blocks[i].npages * SNAP_PAGE, false);
	g_thread_join(cow->handler);
	cow->stats.wp_faults = cow->wp_faults;
	if (stats)
		*stats = cow->stats;
	cow_free(cow);
}
