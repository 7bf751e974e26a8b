/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd write-protect dirty-log source, fault mode: for kernels
 * without UFFD_FEATURE_WP_ASYNC, or when a cheap sync matters more than
 * the writer's first-write latency.
 *
 * A write to a protected page stops the writing thread and queues a
 * UFFD_EVENT_PAGEFAULT message (flag UFFD_PAGEFAULT_FLAG_WP).  The fault
 * thread reads it, sets the page's bit in the block's dirty bitmap and
 * unprotects the page, which wakes the writer; its write then completes.
 * The page stays unprotected, so later writes cost nothing, until a clear
 * re-protects it.  So:
 *
 *   sync   OR the dirty bitmap into `collected`, taking nothing: the page
 *          stays dirty until cleared (dirty-log.h's contract);
 *   clear  for the pages in the mask: clear their bits, re-protect them.
 *
 * A hugetlb block faults, and is protected, a whole huge page at a time:
 * the fault thread marks every target page of the huge page, and clear
 * widens its runs to whole huge pages.  Protecting a page whose bit stays
 * set is harmless, so the widening loses nothing.
 *
 * Why no write is lost.  Call F the fault thread's handling of one fault
 * (set the bits of page p, then unprotect p) and C a clear's handling of p
 * (clear p's bit, then protect p).  Both run under `lock`, so they never
 * interleave, and outside the lock this invariant holds:
 *
 *     (I)  if p is unprotected, its bit is set.
 *
 * start protects everything with every bit clear; F sets before it
 * unprotects; C protects after it clears (and protects only more than it
 * clears).  Now take a write w to p, and a sync S that starts after w has
 * completed (the last sync runs with the guest paused, so every write is
 * complete by then).  w lands while p is unprotected, after the last
 * unprotect U before it, which belongs to some F whose bit set precedes U.
 * Either no C clears p's bit between that F and S, and S sees the bit, or
 * some C does: C ran after F (the lock), so its protect came after U, and
 * hence after w (nothing protected p between U and w).  Then w is in the
 * page the sender reads, because the sender reads a page only after its
 * clear has returned.
 *
 * Without the lock, a fault in flight breaks this: the fault thread sets
 * p's bit, a sync collects it, a clear clears it and "protects" p (already
 * protected, still faulting), and then the fault thread unprotects p.  The
 * writer's write and every later one land on an unprotected page with a
 * clear bit, after the sender read p: lost.  (The stress test usually finds
 * this within its second when the lock is left out.)  Unprotecting before
 * setting the bit would not do either: a write could then complete, and the
 * last sync run, before the bit is set.  The lock costs the fault thread and
 * the clear a few uncontended lock operations; sync, the hot path, takes
 * none.
 *
 * Ordering of the bits: F's atomic set (release) precedes the unprotect
 * system call, which precedes the writer's write; sync's loads acquire, so
 * a page whose bit a sync sees has its write visible to whoever is
 * ordered after the writer.
 */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "uffd-internal.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#define PAGE MIGRAM_TARGET_PAGE_SIZE
#define MSGS 64 /* fault messages read at once */

/* One tracked block. */
typedef struct {
	MigramRamBlock *block;
	uintptr_t host;
	uint64_t pages;       /* target pages registered (used_length) */
	uint64_t page_size;   /* the mapping's page: 4 KiB or a huge page */
	unsigned long *dirty; /* set by the fault thread, cleared by clear */
} Region;

/* What the fault thread was doing when it failed. */
enum {
	CALL_POLL,
	CALL_READ,
	CALL_UNPROTECT
};
static const char *const thread_calls[] = {
	[CALL_POLL] = "fault thread: poll",
	[CALL_READ] = "fault thread: read",
	[CALL_UNPROTECT] = "fault thread: UFFDIO_WRITEPROTECT (unprotect)",
};

struct UffdFault {
	int uffd; /* the log's; borrowed */
	uint64_t features;
	int quit;        /* eventfd that stops the thread; -1 without one */
	GThread *thread; /* NULL while no block is tracked */
	/*
	 * Serializes F and C (see above), and changes to `regions` against
	 * the fault thread's lookups.  Only the migration thread changes
	 * `regions`, so it reads it without the lock.
	 */
	pthread_mutex_t lock;
	GPtrArray *regions; /* of Region *, owned */
	int err;            /* atomic: the fault thread's first errno */
	int err_call;       /* atomic: index into thread_calls */
};

static void region_free(gpointer p)
{
	Region *r = p;

	migram_bitmap_free(r->dirty);
	g_free(r);
}

UffdFault *migram_uffd_fault_new(int uffd, uint64_t features)
{
	UffdFault *f = g_new0(UffdFault, 1);

	f->uffd = uffd;
	f->features = features;
	f->quit = -1;
	pthread_mutex_init(&f->lock, NULL);
	f->regions = g_ptr_array_new_with_free_func(region_free);
	return f;
}

/* The block's region; NULL when not tracked.  Migration thread, or lock. */
static Region *find_block(const UffdFault *f, const MigramRamBlock *b)
{
	for (guint i = 0; i < f->regions->len; i++) {
		Region *r = g_ptr_array_index(f->regions, i);

		if (r->block == b)
			return r;
	}
	return NULL;
}

/* The region holding addr; NULL when none.  Under the lock. */
static Region *find_addr(const UffdFault *f, uintptr_t addr)
{
	for (guint i = 0; i < f->regions->len; i++) {
		Region *r = g_ptr_array_index(f->regions, i);

		if (addr >= r->host && addr - r->host < r->pages * PAGE)
			return r;
	}
	return NULL;
}

static void thread_failed(UffdFault *f, int call, int e)
{
	/* The first failure is the one reported; err is read last. */
	if (!g_atomic_int_get(&f->err)) {
		g_atomic_int_set(&f->err_call, call);
		g_atomic_int_set(&f->err, e);
	}
}

static void wake(const UffdFault *f, uintptr_t addr)
{
	struct uffdio_range r = { .start = addr & ~(uintptr_t)(PAGE - 1),
				  .len = PAGE };

	/* Nothing to do about a failure: the writer is woken or not waiting. */
	if (ioctl(f->uffd, UFFDIO_WAKE, &r) < 0)
		return;
}

/* F: mark the faulting page, then unprotect it and wake.  Under the lock. */
static void handle_fault(UffdFault *f, const struct uffd_msg *m)
{
	uintptr_t addr = (uintptr_t)m->arg.pagefault.address;
	Region *r = find_addr(f, addr);
	uint64_t off, first;

	if (!r || !(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
		/* An untracked range (stop already unprotected it). */
		wake(f, addr);
		return;
	}
	off = (addr - r->host) / r->page_size * r->page_size;
	first = off / PAGE;
	migram_bitmap_set_atomic(r->dirty, (size_t)first,
				 (size_t)MIN(r->page_size / PAGE,
					     r->pages - first));
	if (!migram_uffd_protect(f->uffd, r->host + off, r->page_size, false,
				 NULL)) {
		/* The writer would fault forever: report it, and wake it. */
		thread_failed(f, CALL_UNPROTECT, errno);
		wake(f, addr);
	}
}

static gpointer fault_main(gpointer p)
{
	UffdFault *f = p;
	struct uffd_msg msg[MSGS];
	struct pollfd pfd[2] = { { .fd = f->uffd, .events = POLLIN },
				 { .fd = f->quit, .events = POLLIN } };

	for (;;) {
		ssize_t n;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			thread_failed(f, CALL_POLL, errno);
			break;
		}
		if (pfd[1].revents)
			break;
		n = read(f->uffd, msg, sizeof(msg));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			thread_failed(f, CALL_READ, errno);
			break;
		}
		pthread_mutex_lock(&f->lock);
		for (size_t i = 0; i < (size_t)n / sizeof(msg[0]); i++)
			if (msg[i].event == UFFD_EVENT_PAGEFAULT)
				handle_fault(f, &msg[i]);
		pthread_mutex_unlock(&f->lock);
	}
	return NULL;
}

static bool start_thread(UffdFault *f, GError **error)
{
	GError *e = NULL;

	if (f->thread)
		return true;
	f->quit = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (f->quit < 0)
		return migram_uffd_fail_errno(error, MIGRAM_ERROR_IO,
					      "eventfd");
	g_atomic_int_set(&f->err, 0);
	f->thread = g_thread_try_new("migram-uffd-wp", fault_main, f, &e);
	if (!f->thread) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "userfaultfd dirty log: fault thread: %s",
			    e->message);
		g_error_free(e);
		close(f->quit);
		f->quit = -1;
		return false;
	}
	return true;
}

static void stop_thread(UffdFault *f)
{
	uint64_t one = 1;

	if (!f->thread)
		return;
	while (write(f->quit, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	g_thread_join(f->thread);
	f->thread = NULL;
	close(f->quit);
	f->quit = -1;
}

/* Unprotect (waking every writer waiting there), unregister, forget. */
static void untrack(UffdFault *f, Region *r)
{
	struct uffdio_range range = { .start = r->host,
				      .len = r->pages * PAGE };

	pthread_mutex_lock(&f->lock);
	migram_uffd_protect(f->uffd, range.start, range.len, false, NULL);
	if (ioctl(f->uffd, UFFDIO_UNREGISTER, &range) < 0)
		g_debug("userfaultfd dirty log: UFFDIO_UNREGISTER: %s",
			g_strerror(errno));
	g_ptr_array_remove_fast(f->regions, r);
	pthread_mutex_unlock(&f->lock);
}

void migram_uffd_fault_free(UffdFault *f)
{
	if (!f)
		return;
	while (f->regions->len)
		untrack(f, g_ptr_array_index(f->regions, 0));
	stop_thread(f);
	g_ptr_array_unref(f->regions);
	pthread_mutex_destroy(&f->lock);
	g_free(f);
}

/*
 * Without UFFD_FEATURE_WP_UNPOPULATED a page with no page-table entry
 * cannot be protected: map every page first (reading maps the zero page
 * for anonymous memory, so this costs page tables, not RAM).
 */
static bool populate(void *host, uint64_t len, uint64_t page_size,
		     GError **error)
{
	const volatile char *p = host;

	if (madvise(host, len, MADV_POPULATE_READ) == 0)
		return true;
	if (errno != EINVAL)
		return migram_uffd_fail_errno(error, MIGRAM_ERROR_IO,
					      "MADV_POPULATE_READ");
	/* Before Linux 5.14: touch each page. */
	for (uint64_t o = 0; o < len; o += page_size)
		(void)p[o];
	return true;
}

static bool fault_start(void *opaque, MigramRamBlock *b, GError **error)
{
	UffdFault *f = opaque;
	uint64_t len = migram_ram_block_used_length(b);
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)migram_ram_block_host(b),
			   .len = len },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	Region *r;

	if (find_block(f, b)) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_EXISTS,
			    "ramblock '%s': already tracked by this "
			    "userfaultfd log",
			    migram_ram_block_idstr(b));
		return false;
	}
	if ((migram_ram_block_flags(b) & MIGRAM_RAM_SHARED) &&
	    !(f->features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM)) {
		g_set_error(
			error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			"ramblock '%s': write protection of shared memory "
			"needs UFFD_FEATURE_WP_HUGETLBFS_SHMEM (Linux 5.19+)",
			migram_ram_block_idstr(b));
		return false;
	}
	if (!(f->features & UFFD_FEATURE_WP_UNPOPULATED) &&
	    !populate(migram_ram_block_host(b), len,
		      migram_ram_block_page_size(b), error))
		return false;
	r = g_new0(Region, 1);
	r->block = b;
	r->host = reg.range.start;
	r->pages = len / PAGE;
	r->page_size = MAX(migram_ram_block_page_size(b), PAGE);
	r->dirty = migram_bitmap_new((size_t)r->pages);
	if (!r->dirty) {
		g_free(r);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "ramblock '%s': no memory for the dirty bitmap",
			    migram_ram_block_idstr(b));
		return false;
	}
	if (ioctl(f->uffd, UFFDIO_REGISTER, &reg) < 0) {
		int e = errno;

		region_free(r);
		return migram_error_errno(
			error,
			e == EINVAL ? MIGRAM_ERROR_UNSUPPORTED
				    : MIGRAM_ERROR_IO,
			e, "ramblock '%s': UFFDIO_REGISTER (write protect)",
			migram_ram_block_idstr(b));
	}
	if (!start_thread(f, error)) {
		ioctl(f->uffd, UFFDIO_UNREGISTER, &reg.range);
		region_free(r);
		return false;
	}
	pthread_mutex_lock(&f->lock);
	g_ptr_array_add(f->regions, r);
	/* Every bit is clear and every page protected: (I) holds. */
	if (!migram_uffd_protect(f->uffd, r->host, len, true, error)) {
		pthread_mutex_unlock(&f->lock);
		untrack(f, r);
		if (!f->regions->len)
			stop_thread(f);
		return false;
	}
	pthread_mutex_unlock(&f->lock);
	return true;
}

static bool check_thread(const UffdFault *f, GError **error)
{
	int e = g_atomic_int_get(&f->err);

	if (!e)
		return true;
	errno = e;
	return migram_uffd_fail_errno(
		error, MIGRAM_ERROR_IO,
		thread_calls[g_atomic_int_get(&f->err_call)]);
}

static Region *tracked(const UffdFault *f, const MigramRamBlock *b,
		       GError **error)
{
	Region *r = find_block(f, b);

	if (!r)
		g_set_error(
			error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND,
			"ramblock '%s': not tracked by this userfaultfd log",
			migram_ram_block_idstr(b));
	return r;
}

/* The hot path: no system call, no lock, no allocation. */
static bool fault_sync(void *opaque, MigramRamBlock *b,
		       unsigned long *collected, uint64_t *newly,
		       GError **error)
{
	UffdFault *f = opaque;
	Region *r;

	*newly = 0;
	if (!check_thread(f, error))
		return false;
	r = tracked(f, b, error);
	if (!r)
		return false;
	*newly = migram_bitmap_or_collect(collected, r->dirty, 0,
					  (size_t)r->pages);
	return true;
}

static bool fault_clear(void *opaque, MigramRamBlock *b, uint64_t first,
			uint64_t npages, const unsigned long *mask,
			GError **error)
{
	UffdFault *f = opaque;
	Region *r = tracked(f, b, error);
	bool ok;

	if (!r)
		return false;
	if (first >= r->pages)
		return true; /* past used_length: never marked */
	npages = MIN(npages, r->pages - first);
	/* C: clear the bits, then protect; F waits meanwhile. */
	pthread_mutex_lock(&f->lock);
	migram_bitmap_andnot_atomic(r->dirty, mask, (size_t)first,
				    (size_t)npages);
	ok = migram_uffd_protect_mask(f->uffd, r->host, r->pages, r->page_size,
				      first, npages, mask, error);
	if (!ok) {
		/* Some pages may stay unprotected: mark them all again. */
		size_t end = (size_t)(first + npages);

		for (size_t p = migram_bitmap_find_next_set(mask, end, first);
		     p < end; p = migram_bitmap_find_next_set(mask, end, p + 1))
			migram_bitmap_set_bit_atomic(r->dirty, p);
	}
	pthread_mutex_unlock(&f->lock);
	return ok;
}

static void fault_stop(void *opaque, MigramRamBlock *b)
{
	UffdFault *f = opaque;
	Region *r = find_block(f, b);

	if (!r)
		return;
	untrack(f, r);
	if (!f->regions->len)
		stop_thread(f);
}

const MigramLogSourceOps migram_uffd_fault_ops = {
	.name = "userfaultfd-wp-fault",
	.start = fault_start,
	.sync = fault_sync,
	.clear = fault_clear,
	.stop = fault_stop,
};
