/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd write-protect dirty-log source: opening the log, choosing
 * its mode, and the async mode.  Fault mode is in dirty-log-uffd-fault.c.
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
 * the ABI definitions (here and in uffd-internal.h) are used when the
 * headers lack them.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/userfaultfd.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/dirty-log-uffd.h"
#include "migram/migram.h"
#include "uffd-internal.h"
#include "migram-uffd.h"

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
	MigramUffdMode mode; /* ASYNC or FAULT */
	int uffd;
	int pagemap; /* async mode only */
	uint64_t features;
	UffdFault *fault;                /* fault mode only */
	struct page_region vec[REGIONS]; /* scan results: no allocation */
};

bool migram_uffd_fail_errno(GError **error, int code, const char *what)
{
	return migram_error_errno(error, code, errno,
				  "userfaultfd dirty log: %s", what);
}

#define WHO "userfaultfd dirty log"

/* The features this kernel offers (a handshake on a throwaway fd: the
 * kernel takes one handshake per userfaultfd). */
static bool probe_features(uint64_t *features, GError **error)
{
	int fd = migram_uffd_open(WHO, error);
	bool ok;

	if (fd < 0)
		return false;
	ok = migram_uffd_api(fd, 0, features, NULL, WHO,
			     MIGRAM_ERROR_UNSUPPORTED, error);
	close(fd);
	return ok;
}

/* Open /proc/self/pagemap if it has PAGEMAP_SCAN; -1 with error if not. */
static int open_pagemap(GError **error)
{
	struct pm_scan_arg probe = { .size = sizeof(probe) };
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		migram_uffd_fail_errno(error, MIGRAM_ERROR_IO,
				       "open /proc/self/pagemap");
		return -1;
	}
	/* An empty scan tells whether PAGEMAP_SCAN exists. */
	if (ioctl(fd, PAGEMAP_SCAN, &probe) < 0) {
		migram_uffd_fail_errno(error, MIGRAM_ERROR_UNSUPPORTED,
				       "PAGEMAP_SCAN (Linux 6.7+)");
		close(fd);
		return -1;
	}
	return fd;
}

MigramUffdLog *migram_uffd_log_new_restricted(MigramUffdMode mode,
					      uint64_t deny, GError **error)
{
	const uint64_t optional = UFFD_FEATURE_WP_UNPOPULATED |
				  UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
	MigramUffdLog *log;
	struct uffdio_api api = { .api = UFFD_API };
	uint64_t offered = 0, want;

	if (mode != MIGRAM_UFFD_MODE_AUTO && mode != MIGRAM_UFFD_MODE_ASYNC &&
	    mode != MIGRAM_UFFD_MODE_FAULT) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "userfaultfd dirty log: no mode %d", (int)mode);
		return NULL;
	}
	if (!probe_features(&offered, error))
		return NULL;
	offered &= ~deny;
	log = g_new0(MigramUffdLog, 1);
	log->uffd = -1;
	log->pagemap = -1;
	if (mode != MIGRAM_UFFD_MODE_FAULT &&
	    (offered & UFFD_FEATURE_WP_ASYNC)) {
		/* Automatic mode falls back to faults without PAGEMAP_SCAN. */
		log->pagemap = open_pagemap(
			mode == MIGRAM_UFFD_MODE_ASYNC ? error : NULL);
		if (log->pagemap < 0 && mode == MIGRAM_UFFD_MODE_ASYNC)
			goto fail;
	}
	if (log->pagemap >= 0) {
		log->mode = MIGRAM_UFFD_MODE_ASYNC;
		api.features = UFFD_FEATURE_WP_ASYNC | (offered & optional);
	} else if (mode == MIGRAM_UFFD_MODE_ASYNC) {
		errno = EOPNOTSUPP;
		migram_uffd_fail_errno(error, MIGRAM_ERROR_UNSUPPORTED,
				       "UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
		goto fail;
	} else if (offered & UFFD_FEATURE_PAGEFAULT_FLAG_WP) {
		log->mode = MIGRAM_UFFD_MODE_FAULT;
		api.features = UFFD_FEATURE_PAGEFAULT_FLAG_WP |
			       (offered & optional);
	} else {
		errno = EOPNOTSUPP;
		migram_uffd_fail_errno(
			error, MIGRAM_ERROR_UNSUPPORTED,
			"UFFD_FEATURE_PAGEFAULT_FLAG_WP (Linux 5.7+)");
		goto fail;
	}
	want = api.features;
	log->uffd = migram_uffd_open(WHO, error);
	if (log->uffd < 0)
		goto fail;
	if (!migram_uffd_api(log->uffd, api.features, NULL, NULL, WHO,
			     MIGRAM_ERROR_IO, error))
		goto fail;
	/* The kernel answers with all it offers; what it enabled is what was
	 * asked for. */
	log->features = want;
	if (log->mode == MIGRAM_UFFD_MODE_FAULT)
		log->fault = migram_uffd_fault_new(log->uffd, log->features);
	return log;
fail:
	migram_uffd_log_free(log);
	return NULL;
}

MIGRAM_EXPORT MigramUffdLog *migram_uffd_log_new_mode(MigramUffdMode mode,
						      GError **error)
{
	return migram_uffd_log_new_restricted(mode, 0, error);
}

MIGRAM_EXPORT MigramUffdLog *migram_uffd_log_new(GError **error)
{
	return migram_uffd_log_new_restricted(MIGRAM_UFFD_MODE_AUTO, 0, error);
}

MIGRAM_EXPORT MigramUffdMode migram_uffd_log_mode(const MigramUffdLog *log)
{
	return log->mode;
}

MIGRAM_EXPORT void migram_uffd_log_free(MigramUffdLog *log)
{
	if (!log)
		return;
	/* The fault thread polls the uffd: join it before closing. */
	migram_uffd_fault_free(log->fault);
	if (log->uffd >= 0)
		close(log->uffd);
	if (log->pagemap >= 0)
		close(log->pagemap);
	g_free(log);
}

bool migram_uffd_protect(int uffd, uintptr_t start, uint64_t len, bool wp,
			 GError **error)
{
	struct uffdio_writeprotect w = {
		.range = { .start = start, .len = len },
		.mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	while (ioctl(uffd, UFFDIO_WRITEPROTECT, &w) < 0) {
		if (errno != EAGAIN)
			return migram_uffd_fail_errno(error, MIGRAM_ERROR_IO,
						      "UFFDIO_WRITEPROTECT");
	}
	return true;
}

bool migram_uffd_protect_mask(int uffd, uintptr_t host, uint64_t block_pages,
			      uint64_t page_size, uint64_t first,
			      uint64_t npages, const unsigned long *mask,
			      GError **error)
{
	/* Target pages per mapping page: 1, or 512 for 2 MiB hugetlb. */
	size_t per = page_size > PAGE ? (size_t)(page_size / PAGE) : 1;
	size_t end = (size_t)MIN(first + npages, block_pages);
	size_t p = migram_bitmap_find_next_set(mask, end, (size_t)first);

	/* One ioctl per run of masked pages (widened to whole huge pages). */
	while (p < end) {
		size_t q = migram_bitmap_find_next_zero(mask, end, p);
		size_t a = p / per * per;
		size_t z = MIN((q + per - 1) / per * per, (size_t)block_pages);

		if (!migram_uffd_protect(uffd, host + a * PAGE,
					 (uint64_t)(z - a) * PAGE, true, error))
			return false;
		p = migram_bitmap_find_next_set(mask, end, MAX(q, z));
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

	if (migram_ram_block_page_size(b) > PAGE) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			    "ramblock '%s': async write protection keeps one "
			    "written bit per huge page, coarser than a chunked "
			    "clear can re-arm; use MIGRAM_UFFD_MODE_FAULT",
			    migram_ram_block_idstr(b));
		return false;
	}
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

		return migram_error_errno(
			error,
			e == EINVAL ? MIGRAM_ERROR_UNSUPPORTED
				    : MIGRAM_ERROR_IO,
			e, "ramblock '%s': UFFDIO_REGISTER (write protect)",
			migram_ram_block_idstr(b));
	}
	return migram_uffd_protect(log->uffd, reg.range.start, reg.range.len,
				   true, error);
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
			return migram_uffd_fail_errno(error, MIGRAM_ERROR_IO,
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
	const MigramUffdLog *log = opaque;

	/* One ioctl per run of masked pages: only they are re-protected. */
	return migram_uffd_protect_mask(log->uffd,
					(uintptr_t)migram_ram_block_host(b),
					migram_ram_block_used_length(b) / PAGE,
					PAGE, first, npages, mask, error);
}

static void uffd_stop(void *opaque, MigramRamBlock *b)
{
	MigramUffdLog *log = opaque;
	struct uffdio_range r = { .start = (uintptr_t)migram_ram_block_host(b),
				  .len = migram_ram_block_used_length(b) };

	migram_uffd_protect(log->uffd, r.start, r.len, false, NULL);
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
	if (log->mode == MIGRAM_UFFD_MODE_FAULT) {
		source->ops = &migram_uffd_fault_ops;
		source->opaque = log->fault;
	} else {
		source->ops = &uffd_ops;
		source->opaque = log;
	}
}
