/* SPDX-License-Identifier: MIT */
/**
 * @file dirty-log-uffd.h
 * The userfaultfd write-protect dirty-log source: dirty tracking of plain
 * process memory without KVM and without the embedder marking anything.
 *
 * Two modes implement the same manual-protect log (dirty-log.h):
 *
 * **Async** (UFFD_FEATURE_WP_ASYNC, Linux 6.7+): the kernel resolves a
 * write to a protected page by itself and remembers the page as written;
 * PAGEMAP_SCAN reports written pages.
 *
 *     start   register the block for write protection and protect it all
 *     sync    PAGEMAP_SCAN for written pages, without re-protecting them
 *     clear   re-protect exactly the runs of pages in the mask
 *     stop    unprotect and unregister
 *
 * **Fault** (UFFD_FEATURE_PAGEFAULT_FLAG_WP, Linux 5.7+ for anonymous
 * memory, 5.19+ for memfd and hugetlb): a write to a protected page stops
 * the writing thread and queues a fault message; the log's fault thread
 * marks the page in the block's dirty bitmap, unprotects it and wakes the
 * writer.
 *
 *     start   as async, plus a dirty bitmap; starts the fault thread
 *     sync    OR the dirty bitmap into the caller's (no system call)
 *     clear   unmark and re-protect exactly the runs of pages in the mask
 *     stop    unprotect and unregister; the last stop joins the thread
 *
 * The costs differ (docs/performance.md): a fault-mode sync reads one bit
 * per page, some 70 times cheaper than a PAGEMAP_SCAN, but the first write
 * to each protected page costs the writer a round trip through the fault
 * thread, some 7 times an in-kernel fault.  MIGRAM_UFFD_MODE_AUTO prefers
 * async mode; fault mode is needed for hugetlb blocks.
 *
 * Anonymous private memory always works; memfd (shmem) and hugetlb blocks
 * need UFFD_FEATURE_WP_HUGETLBFS_SHMEM, and start() says so when missing.
 * Fault mode protects and marks a hugetlb block a whole huge page at a
 * time.  Async mode refuses hugetlb blocks: its one "written" state per
 * huge page would be wiped, for pages outside the mask, by the clear of a
 * chunk smaller than the huge page.
 *
 * Pages never populated are protected too when the kernel offers
 * UFFD_FEATURE_WP_UNPOPULATED (Linux 6.4+, which async mode implies).  On
 * an older kernel, fault mode's start() populates the block first
 * (MADV_POPULATE_READ, or a read of each page), and memory the guest
 * discards while tracked (MADV_DONTNEED) is no longer protected: its next
 * write is not seen.
 *
 * Threads: like every source, the operations run on the migration thread
 * only; the guest's threads write the memory meanwhile and need not know.
 */
#ifndef MIGRAM_DIRTY_LOG_UFFD_H
#define MIGRAM_DIRTY_LOG_UFFD_H

#include <stdbool.h>

#include <glib.h>

#include <migram/dirty-log.h>

G_BEGIN_DECLS

/** Opaque; single owner. */
typedef struct MigramUffdLog MigramUffdLog;

/** How a userfaultfd log learns of writes; see the file comment. */
typedef enum {
	/** Async if the kernel offers it (and PAGEMAP_SCAN), else fault. */
	MIGRAM_UFFD_MODE_AUTO = 0,
	/** The kernel records writes; PAGEMAP_SCAN reads them. */
	MIGRAM_UFFD_MODE_ASYNC = 1,
	/** A fault thread records writes in a bitmap. */
	MIGRAM_UFFD_MODE_FAULT = 2,
} MigramUffdMode;

/**
 * Open a userfaultfd log in automatic mode: as
 * migram_uffd_log_new_mode(MIGRAM_UFFD_MODE_AUTO, @p error).
 *
 * @param error as migram_uffd_log_new_mode().
 * @return a new log; caller frees with migram_uffd_log_free().
 *
 * Context: Any thread.
 */
MigramUffdLog *migram_uffd_log_new(GError **error);

/**
 * Open a userfaultfd log in @p mode.  No thread is started yet: fault
 * mode starts its fault thread when the first block starts.
 *
 * @param mode MIGRAM_UFFD_MODE_AUTO, _ASYNC or _FAULT.
 * @param error MIGRAM_ERROR_INVALID for another @p mode;
 *        MIGRAM_ERROR_UNSUPPORTED when the kernel lacks userfaultfd (or
 *        forbids it to this process), write protection, or what @p mode
 *        needs (async: UFFD_FEATURE_WP_ASYNC and PAGEMAP_SCAN), and the
 *        message says which; MIGRAM_ERROR_IO otherwise.
 * @return a new log; caller frees with migram_uffd_log_free().
 *
 * Context: Any thread.
 */
MigramUffdLog *migram_uffd_log_new_mode(MigramUffdMode mode, GError **error);

/**
 * The mode the log runs in: MIGRAM_UFFD_MODE_ASYNC or _FAULT, never
 * _AUTO (automatic mode has chosen by the time the log exists).
 *
 * @param log the log.
 * @return the mode.
 *
 * Context: Any thread.
 */
MigramUffdMode migram_uffd_log_mode(const MigramUffdLog *log);

/**
 * Close the log.  Blocks still tracked are unregistered by the kernel, and
 * in fault mode the fault thread is stopped and joined first.
 *
 * @param log the log, or NULL.
 *
 * Context: Any thread, once no migration uses it.  May block (joins the
 * fault thread).
 */
void migram_uffd_log_free(MigramUffdLog *log);

/**
 * The log as a source for a migration, named "userfaultfd-wp" (async
 * mode) or "userfaultfd-wp-fault".  Its operations follow dirty-log.h.
 * Their errors: start gives MIGRAM_ERROR_UNSUPPORTED when the kernel cannot
 * write-protect the block's kind of memory, MIGRAM_ERROR_EXISTS (fault
 * mode) when the block is already tracked; sync and clear give
 * MIGRAM_ERROR_NOT_FOUND (fault mode) for a block not started, and
 * MIGRAM_ERROR_IO when a system call failed, the fault thread's included.
 * A fault-mode sync makes no system call, takes no lock and allocates
 * nothing.
 *
 * @param log the log; borrowed, must outlive the migration.
 * @param source filled with the userfaultfd operations and their state.
 *
 * Context: Any thread.  The operations: the migration thread only.
 */
void migram_uffd_log_source(MigramUffdLog *log, MigramLogSource *source);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramUffdLog, migram_uffd_log_free)

G_END_DECLS

#endif /* MIGRAM_DIRTY_LOG_UFFD_H */
