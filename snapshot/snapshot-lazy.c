/* SPDX-License-Identifier: MIT */
/*
 * Lazy restore: guest memory registered with userfaultfd in missing mode.
 * A fault handler thread serves each first touch from the newest file
 * holding the page (UFFDIO_COPY) or with a zero page (UFFDIO_ZEROPAGE);
 * a prefetch thread places every other page in address order, in runs.
 * The kernel arbitrates between the two: whoever places a page second
 * gets EEXIST, and the handler then only wakes the faulting thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "snapshot-internal.h"
#include "migram-uffd.h"

#define RUN 32u /* pages per prefetch copy */

typedef struct {
	uint8_t *host;
	uint64_t npages;
	guint *index;          /* per file of the chain */
	unsigned long *placed; /* atomic: served by the handler */
} LBlock;

struct MigramLazyRestore {
	MigramSnapshotFile *const *chain;
	guint n;
	LBlock *blocks;
	guint nblocks;
	int uffd, stopfd;
	GThread *handler, *prefetcher;
	uint64_t t0;
	uint64_t faults, zero_faults, prefetched, first_fault_ns; /* atomic */
	uint64_t prefetched_hot;
	pthread_mutex_t lock;
	GError *error; /* first, under lock */
};

static void lazy_fail(MigramLazyRestore *lr, GError *err)
{
	pthread_mutex_lock(&lr->lock);
	if (!lr->error)
		lr->error = err;
	else
		g_error_free(err);
	pthread_mutex_unlock(&lr->lock);
}

static int source_of(const MigramLazyRestore *lr, const LBlock *b, uint64_t p)
{
	for (int i = (int)lr->n - 1; i >= 0; i--)
		if (migram_bitmap_test_bit(
			    lr->chain[i]->blocks[b->index[i]].bitmap,
			    (size_t)p))
			return i;
	return -1;
}

/*
 * Place pages [p, p + np) of @p b (all from file @p src, or zeros when
 * src < 0) with @p buf as the bounce buffer.  Returns the pages placed
 * before the first that was already there (np if none), or -1 with
 * *error set.
 */
static int64_t place(MigramLazyRestore *lr, const LBlock *b, int src,
		     uint64_t p, uint64_t np, uint8_t *buf, bool wake,
		     GError **error)
{
	uint64_t len = np * SNAP_PAGE, placed;
	int err;
	if (src >= 0) {
		const MigramSnapshotFile *f = lr->chain[src];
		const SnapBlock *sb = &f->blocks[b->index[src]];
		if (!snap_pread_all(f->fd, buf, (size_t)len,
				    sb->pages_offset + p * SNAP_PAGE, "pages",
				    f->name, error))
			return -1;
	}
	err = migram_uffd_place(lr->uffd, (uintptr_t)(b->host + p * SNAP_PAGE),
				src >= 0 ? buf : NULL, len, wake, &placed);
	if (!err)
		return (int64_t)np;
	if (err == EEXIST)
		return (int64_t)(placed / SNAP_PAGE);
	migram_error_errno(error, MIGRAM_ERROR_IO, err,
			   "lazy restore: placing pages [%" G_GUINT64_FORMAT
			   ", +%" G_GUINT64_FORMAT ")",
			   p, np);
	return -1;
}

static gpointer handler_main(gpointer data)
{
	MigramLazyRestore *lr = data;
	uint8_t *buf = g_malloc(SNAP_PAGE);
	struct pollfd pfd[2] = { { .fd = lr->uffd, .events = POLLIN },
				 { .fd = lr->stopfd, .events = POLLIN } };
	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents)
			break;
		struct uffd_msg msg;
		ssize_t r = read(lr->uffd, &msg, sizeof(msg));
		if (r != sizeof(msg) || msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uint64_t addr = msg.arg.pagefault.address & ~(uint64_t)4095;
		LBlock *b = NULL;
		for (guint i = 0; i < lr->nblocks; i++) {
			uintptr_t h = (uintptr_t)lr->blocks[i].host;
			if (addr >= h &&
			    addr < h + lr->blocks[i].npages * SNAP_PAGE)
				b = &lr->blocks[i];
		}
		if (!b)
			continue; /* not ours: cannot happen */
		uint64_t p = (addr - (uintptr_t)b->host) / SNAP_PAGE;
		int src = source_of(lr, b, p);
		GError *err = NULL;
		int64_t n = place(lr, b, src, p, 1, buf, true, &err);
		if (n < 0) {
			lazy_fail(lr, err);
			/* Give the guest zeros rather than a hang. */
			(void)place(lr, b, -1, p, 1, buf, true, NULL);
			continue;
		}
		if (n == 0) {
			struct uffdio_range w = { .start = addr,
						  .len = SNAP_PAGE };
			(void)ioctl(lr->uffd, UFFDIO_WAKE, &w);
			continue;
		}
		migram_bitmap_set_bit_atomic(b->placed, (size_t)p);
		uint64_t c = __atomic_add_fetch(&lr->faults, 1,
						__ATOMIC_RELAXED);
		if (c == 1)
			__atomic_store_n(&lr->first_fault_ns,
					 snap_now_ns() - lr->t0,
					 __ATOMIC_RELAXED);
		if (src < 0)
			__atomic_add_fetch(&lr->zero_faults, 1,
					   __ATOMIC_RELAXED);
	}
	g_free(buf);
	return NULL;
}

/*
 * Place the pages of @p b not yet placed, in runs; with @p hot, only the
 * pages set in it.  Returns false after an error (recorded).
 */
static bool prefetch_block(MigramLazyRestore *lr, LBlock *b,
			   const unsigned long *hot, uint8_t *buf,
			   uint64_t *placed)
{
	uint64_t p = 0;
	while (p < b->npages) {
		if (hot) {
			p = migram_bitmap_find_next_set(hot, (size_t)b->npages,
							(size_t)p);
			if (p >= b->npages)
				break;
		}
		if (migram_bitmap_test_bit_atomic(b->placed, (size_t)p)) {
			p++;
			continue;
		}
		int src = source_of(lr, b, p);
		uint64_t q = p + 1;
		while (q < b->npages && q - p < RUN &&
		       (!hot || migram_bitmap_test_bit(hot, (size_t)q)) &&
		       !migram_bitmap_test_bit_atomic(b->placed, (size_t)q) &&
		       source_of(lr, b, q) == src)
			q++;
		GError *err = NULL;
		int64_t n = place(lr, b, src, p, q - p, buf, true, &err);
		if (n < 0) {
			lazy_fail(lr, err);
			return false;
		}
		/* Mark what this run placed (the kernel has it now). */
		if (n > 0)
			migram_bitmap_set_atomic(b->placed, (size_t)p,
						 (size_t)n);
		*placed += (uint64_t)n;
		/* Skip the page that was already there. */
		p += (uint64_t)n < q - p ? (uint64_t)n + 1 : q - p;
	}
	return true;
}

static gpointer prefetch_main(gpointer data)
{
	MigramLazyRestore *lr = data;
	uint8_t *buf = g_malloc((gsize)RUN * SNAP_PAGE);
	const MigramSnapshotFile *last = lr->chain[lr->n - 1];
	uint64_t hot = 0, rest = 0;
	bool ok = true;
	/* The pages the guest wrote last first, then everything else. */
	for (guint bi = 0; bi < lr->nblocks && ok; bi++) {
		LBlock *b = &lr->blocks[bi];
		const unsigned long *h = last->blocks[b->index[lr->n - 1]].hot;
		if (h)
			ok = prefetch_block(lr, b, h, buf, &hot);
	}
	for (guint bi = 0; bi < lr->nblocks && ok; bi++)
		ok = prefetch_block(lr, &lr->blocks[bi], NULL, buf, &rest);
	__atomic_store_n(&lr->prefetched_hot, hot, __ATOMIC_RELAXED);
	__atomic_store_n(&lr->prefetched, hot + rest, __ATOMIC_RELAXED);
	g_free(buf);
	return NULL;
}

static void lazy_free(MigramLazyRestore *lr)
{
	for (guint i = 0; i < lr->nblocks; i++) {
		LBlock *b = &lr->blocks[i];
		if (lr->uffd >= 0 && b->host) {
			struct uffdio_range r = { .start = (uintptr_t)b->host,
						  .len = b->npages *
							 SNAP_PAGE };
			(void)ioctl(lr->uffd, UFFDIO_UNREGISTER, &r);
		}
		g_free(b->index);
		migram_bitmap_free(b->placed);
	}
	g_free(lr->blocks);
	if (lr->uffd >= 0)
		close(lr->uffd);
	if (lr->stopfd >= 0)
		close(lr->stopfd);
	pthread_mutex_destroy(&lr->lock);
	if (lr->error)
		g_error_free(lr->error);
	g_free(lr);
}

static bool lazy_setup(MigramLazyRestore *lr, MigramRamList *list,
		       GError **error)
{
	lr->uffd = migram_uffd_open("lazy restore", error);
	if (lr->uffd < 0 ||
	    !migram_uffd_api(lr->uffd, 0, NULL, NULL, "lazy restore",
			     MIGRAM_ERROR_UNSUPPORTED, error))
		return false;
	lr->stopfd = eventfd(0, EFD_CLOEXEC);
	if (lr->stopfd < 0)
		return migram_error_errno(error, MIGRAM_ERROR_IO, errno,
					  "lazy restore: eventfd");
	bool ok = true;
	urcu_memb_read_lock();
	for (guint i = 0; i < lr->nblocks && ok; i++) {
		LBlock *b = &lr->blocks[i];
		const SnapBlock *sb = &lr->chain[0]->blocks[i];
		MigramRamBlock *rb = migram_ram_list_find(list, sb->name);
		if (migram_ram_block_flags(rb) & MIGRAM_RAM_HUGETLB) {
			g_set_error(error, MIGRAM_ERROR,
				    MIGRAM_ERROR_UNSUPPORTED,
				    "lazy restore: block '%s' is hugetlb",
				    sb->name);
			ok = false;
			break;
		}
		b->npages = sb->npages;
		b->index = g_new(guint, lr->n);
		for (guint f = 0; f < lr->n; f++)
			migram_snapshot_find_block(lr->chain[f], sb->name,
						   &b->index[f]);
		b->placed = migram_bitmap_new((size_t)b->npages);
		uint8_t *host = migram_ram_block_host(rb);
		/* 4 KiB granularity: no huge page may fill a range. */
		(void)madvise(host, b->npages * SNAP_PAGE, MADV_NOHUGEPAGE);
		struct uffdio_register reg = {
			.range = { .start = (uintptr_t)host,
				   .len = b->npages * SNAP_PAGE },
			.mode = UFFDIO_REGISTER_MODE_MISSING
		};
		if (ioctl(lr->uffd, UFFDIO_REGISTER, &reg) < 0)
			ok = migram_error_errno(
				error, MIGRAM_ERROR_UNSUPPORTED, errno,
				"lazy restore: UFFDIO_REGISTER");
		else
			b->host = host;
	}
	urcu_memb_read_unlock();
	return ok;
}

MIGRAM_EXPORT MigramLazyRestore *
migram_snapshot_lazy_start(MigramSnapshotFile *const *chain, guint n,
			   MigramRamList *list, GError **error)
{
	MIGRAM_ASSERT_NOT_RCU_READER();
	if (!migram_snapshot_check_chain(chain, n, list, error))
		return NULL;
	MigramLazyRestore *lr = g_new0(MigramLazyRestore, 1);
	lr->chain = chain;
	lr->n = n;
	lr->nblocks = chain[0]->nblocks;
	lr->blocks = g_new0(LBlock, lr->nblocks);
	lr->uffd = lr->stopfd = -1;
	pthread_mutex_init(&lr->lock, NULL);
	lr->t0 = snap_now_ns();
	if (!lazy_setup(lr, list, error)) {
		lazy_free(lr);
		return NULL;
	}
	lr->handler = g_thread_new("migram-lazy-fault", handler_main, lr);
	lr->prefetcher = g_thread_new("migram-lazy-prefetch", prefetch_main,
				      lr);
	return lr;
}

MIGRAM_EXPORT bool migram_snapshot_lazy_finish(MigramLazyRestore *lr,
					       MigramLazyStats *stats,
					       GError **error)
{
	g_return_val_if_fail(lr != NULL, false);
	g_thread_join(lr->prefetcher);
	uint64_t one = 1;
	if (write(lr->stopfd, &one, sizeof(one)) != sizeof(one))
		g_warning("lazy restore: eventfd write failed");
	g_thread_join(lr->handler);
	if (stats)
		*stats = (MigramLazyStats){
			.faults = lr->faults,
			.zero_faults = lr->zero_faults,
			.prefetched = lr->prefetched,
			.prefetched_hot = lr->prefetched_hot,
			.first_fault_ns = lr->first_fault_ns,
			.elapsed_ns = snap_now_ns() - lr->t0,
		};
	bool ok = lr->error == NULL;
	if (!ok) {
		g_propagate_error(error, lr->error);
		lr->error = NULL;
	}
	lazy_free(lr);
	return ok;
}
