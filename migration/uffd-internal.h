/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd source's private parts, shared by its async mode
 * (dirty-log-uffd.c) and its fault mode (dirty-log-uffd-fault.c).  Never
 * installed.
 */
#ifndef MIGRAM_UFFD_INTERNAL_H
#define MIGRAM_UFFD_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "migram/dirty-log-uffd.h"

/* Kernel ABI bits that Debian 12's headers (Linux 6.1) lack. */
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

/* Fault mode's state (dirty-log-uffd-fault.c); the log owns one. */
typedef struct UffdFault UffdFault;

/* Set a "userfaultfd dirty log: <what>: <strerror(errno)>" error; false. */
bool migram_uffd_fail_errno(GError **error, int code, const char *what);

/*
 * UFFDIO_WRITEPROTECT [start, start + len): protect (wp) or unprotect and
 * wake the range's waiting writers.  Retries EAGAIN.  Any thread.
 */
bool migram_uffd_protect(int uffd, uintptr_t start, uint64_t len, bool wp,
			 GError **error);

/*
 * Re-protect the runs of pages set in mask within [first, first + npages)
 * of the block at host, whose first block_pages target pages are
 * registered; pages past them are ignored.  page_size is the mapping's
 * page size: a run is widened to whole pages of it (hugetlb), which only
 * protects more, never loses a write.  Any thread.
 */
bool migram_uffd_protect_mask(int uffd, uintptr_t host, uint64_t block_pages,
			      uint64_t page_size, uint64_t first,
			      uint64_t npages, const unsigned long *mask,
			      GError **error);

/*
 * Fault mode: a state for the userfaultfd uffd (borrowed, opened with
 * UFFD_FEATURE_PAGEFAULT_FLAG_WP and O_NONBLOCK) whose API handshake
 * granted features.  No thread yet.
 */
UffdFault *migram_uffd_fault_new(int uffd, uint64_t features);
/* Stop and join the fault thread if it runs, free the state. */
void migram_uffd_fault_free(UffdFault *f);
/* Fault mode's source operations; their opaque is the UffdFault. */
extern const MigramLogSourceOps migram_uffd_fault_ops;

/*
 * migram_uffd_log_new_mode(), but never asking the kernel for the features
 * in deny: lets tests run the paths for kernels that lack them.
 */
MigramUffdLog *migram_uffd_log_new_restricted(MigramUffdMode mode,
					      uint64_t deny, GError **error);

#endif /* MIGRAM_UFFD_INTERNAL_H */
