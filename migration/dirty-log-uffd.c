/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd write-protect dirty-log source (async mode).
 *
 * With UFFD_FEATURE_WP_ASYNC the kernel resolves a write fault on a
 * write-protected page itself: it drops the protection and the page counts
 * as written.  PAGEMAP_SCAN on /proc/self/pagemap lists written pages
 * (category PAGE_IS_WRITTEN) and, without PM_SCAN_WP_MATCHING, leaves their
 * state alone.  So:
 *
 *   sync   scan for written pages, OR them into `collected`: tracking is
 *          not re-armed (the pages stay written until cleared);
 *   clear  UFFDIO_WRITEPROTECT on each run of pages in the mask: exactly
 *          those pages are protected (and no longer written) again.
 *
 * The ordering argument is the kernel's: a write to a page either happened
 * before the re-protection (its data is in the page the sender reads
 * afterwards) or faults after it and makes the page written again.  With
 * UFFD_FEATURE_WP_UNPOPULATED, pages never touched are protected too, so a
 * first write to them is seen.
 *
 * Debian 12's kernel headers predate async WP and PAGEMAP_SCAN (Linux 6.7);
 * the ABI definitions below are used when the headers lack them.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/userfaultfd.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/dirty-log-uffd.h"
#include "migram/migram.h"

#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef PAGEMAP_SCAN
struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};

struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WRITTEN (1 << 1)
#endif

#define PAGE MIGRAM_TARGET_PAGE_SIZE
#define REGIONS 256

struct MigramUffdLog {
	int uffd;
	int pagemap;
	uint64_t features;
	struct page_region vec[REGIONS]; /* scan results: no allocation */
};

static bool fail_errno(GError **error, int code, const char *what)
{
	int e = errno;

	g_set_error(error, MIGRAM_ERROR, code, "userfaultfd dirty log: %s: %s",
		    what, g_strerror(e));
	return false;
}

MIGRAM_EXPORT MigramUffdLog *migram_uffd_log_new(GError **error)
{
	MigramUffdLog *log = g_new0(MigramUffdLog, 1);
	struct uffdio_api api = { .api = UFFD_API };
	struct pm_scan_arg probe = { .size = sizeof(probe) };

	log->pagemap = -1;
	log->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (log->uffd < 0) {
		fail_errno(
			error, MIGRAM_ERROR_UNSUPPORTED,
			"userfaultfd() (root or vm.unprivileged_userfaultfd)");
		goto fail;
	}
	/* Ask for everything we can use; keep what the kernel grants. */
	api.features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED |
		       UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
	if (ioctl(log->uffd, UFFDIO_API, &api) < 0) {
		/* Retry with only what is indispensable, to say what lacks. */
		close(log->uffd);
		log->uffd = (int)syscall(SYS_userfaultfd,
					 O_CLOEXEC | O_NONBLOCK);
		api = (struct uffdio_api){ .api = UFFD_API,
					   .features = UFFD_FEATURE_WP_ASYNC };
		if (log->uffd < 0 || ioctl(log->uffd, UFFDIO_API, &api) < 0) {
			fail_errno(error, MIGRAM_ERROR_UNSUPPORTED,
				   "UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
			goto fail;
		}
	}
	log->features = api.features;
	log->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (log->pagemap < 0) {
		fail_errno(error, MIGRAM_ERROR_IO, "open /proc/self/pagemap");
		goto fail;
	}
	/* An empty scan tells whether PAGEMAP_SCAN exists. */
	if (ioctl(log->pagemap, PAGEMAP_SCAN, &probe) < 0) {
		fail_errno(error, MIGRAM_ERROR_UNSUPPORTED,
			   "PAGEMAP_SCAN (Linux 6.7+)");
		goto fail;
	}
	return log;
fail:
	migram_uffd_log_free(log);
	return NULL;
}

MIGRAM_EXPORT void migram_uffd_log_free(MigramUffdLog *log)
{
	if (!log)
		return;
	if (log->uffd >= 0)
		close(log->uffd);
	if (log->pagemap >= 0)
		close(log->pagemap);
	g_free(log);
}

static bool protect(MigramUffdLog *log, uintptr_t start, uint64_t len, bool wp,
		    GError **error)
{
	struct uffdio_writeprotect w = {
		.range = { .start = start, .len = len },
		.mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	while (ioctl(log->uffd, UFFDIO_WRITEPROTECT, &w) < 0) {
		if (errno != EAGAIN)
			return fail_errno(error, MIGRAM_ERROR_IO,
					  "UFFDIO_WRITEPROTECT");
	}
	return true;
}

static bool uffd_start(void *opaque, MigramRamBlock *b, GError **error)
{
	MigramUffdLog *log = opaque;
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)migram_ram_block_host(b),
			   .len = migram_ram_block_used_length(b) },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};

	if ((migram_ram_block_flags(b) & MIGRAM_RAM_SHARED) &&
	    !(log->features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM)) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			    "ramblock '%s': write protection of shared memory "
			    "needs UFFD_FEATURE_WP_HUGETLBFS_SHMEM",
			    migram_ram_block_idstr(b));
		return false;
	}
	if (ioctl(log->uffd, UFFDIO_REGISTER, &reg) < 0) {
		int e = errno;

		g_set_error(
			error, MIGRAM_ERROR,
			e == EINVAL ? MIGRAM_ERROR_UNSUPPORTED
				    : MIGRAM_ERROR_IO,
			"ramblock '%s': UFFDIO_REGISTER (write protect): %s",
			migram_ram_block_idstr(b), g_strerror(e));
		return false;
	}
	return protect(log, reg.range.start, reg.range.len, true, error);
}

static bool uffd_sync(void *opaque, MigramRamBlock *b, unsigned long *collected,
		      uint64_t *newly, GError **error)
{
	MigramUffdLog *log = opaque;
	uintptr_t host = (uintptr_t)migram_ram_block_host(b);
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = host,
		.end = host + migram_ram_block_used_length(b),
		.vec = (uintptr_t)log->vec,
		.vec_len = REGIONS,
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};

	*newly = 0;
	while (arg.start < arg.end) {
		long n = ioctl(log->pagemap, PAGEMAP_SCAN, &arg);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return fail_errno(error, MIGRAM_ERROR_IO,
					  "PAGEMAP_SCAN");
		}
		for (long i = 0; i < n; i++)
			*newly += migram_bitmap_set_atomic(
				collected,
				(size_t)((log->vec[i].start - host) / PAGE),
				(size_t)((log->vec[i].end - log->vec[i].start) /
					 PAGE));
		/* A full vector means the walk stopped early: go on. */
		if (n < REGIONS || arg.walk_end <= arg.start)
			break;
		arg.start = arg.walk_end;
	}
	return true;
}

static bool uffd_clear(void *opaque, MigramRamBlock *b, uint64_t first,
		       uint64_t npages, const unsigned long *mask,
		       GError **error)
{
	uintptr_t host = (uintptr_t)migram_ram_block_host(b);
	size_t end = (size_t)(first + npages);
	size_t p = migram_bitmap_find_next_set(mask, end, (size_t)first);

	/* One ioctl per run of masked pages: only they are re-protected. */
	while (p < end) {
		size_t q = migram_bitmap_find_next_zero(mask, end, p);

		if (!protect(opaque, host + p * PAGE, (uint64_t)(q - p) * PAGE,
			     true, error))
			return false;
		p = migram_bitmap_find_next_set(mask, end, q);
	}
	return true;
}

static void uffd_stop(void *opaque, MigramRamBlock *b)
{
	MigramUffdLog *log = opaque;
	struct uffdio_range r = { .start = (uintptr_t)migram_ram_block_host(b),
				  .len = migram_ram_block_used_length(b) };

	protect(log, r.start, r.len, false, NULL);
	ioctl(log->uffd, UFFDIO_UNREGISTER, &r);
}

static const MigramLogSourceOps uffd_ops = {
	.name = "userfaultfd-wp",
	.start = uffd_start,
	.sync = uffd_sync,
	.clear = uffd_clear,
	.stop = uffd_stop,
};

MIGRAM_EXPORT void migram_uffd_log_source(MigramUffdLog *log,
					  MigramLogSource *source)
{
	source->ops = &uffd_ops;
	source->opaque = log;
}
