/* SPDX-License-Identifier: MIT */
/**
 * @file dirty-log-uffd.h
 * The userfaultfd write-protect dirty-log source: dirty tracking of plain
 * process memory without KVM and without the embedder marking anything.
 *
 * It uses asynchronous write protection (UFFD_FEATURE_WP_ASYNC, Linux 6.7+):
 * the kernel resolves a write to a protected page by itself and remembers
 * the page as written; PAGEMAP_SCAN reports written pages.  That is a
 * manual-protect log:
 *
 *     start   register the block for write protection and protect it all
 *     sync    PAGEMAP_SCAN for written pages, without re-protecting them
 *     clear   re-protect exactly the runs of pages in the mask
 *     stop    unprotect and unregister
 *
 * Anonymous private memory always works; memfd (shmem) and hugetlb blocks
 * need UFFD_FEATURE_WP_HUGETLBFS_SHMEM, and start() says so when missing.
 */
#ifndef MIGRAM_DIRTY_LOG_UFFD_H
#define MIGRAM_DIRTY_LOG_UFFD_H

#include <stdbool.h>

#include <glib.h>

#include <migram/dirty-log.h>

G_BEGIN_DECLS

/** Opaque; single owner. */
typedef struct MigramUffdLog MigramUffdLog;

/**
 * Open a userfaultfd with asynchronous write protection.
 *
 * @param error MIGRAM_ERROR_UNSUPPORTED when the kernel lacks userfaultfd,
 *        write protection, async write protection or PAGEMAP_SCAN (the
 *        message says which), MIGRAM_ERROR_IO otherwise.
 * @return a new log; caller frees with migram_uffd_log_free().
 *
 * Context: Any thread.
 */
MigramUffdLog *migram_uffd_log_new(GError **error);

/**
 * Close the log (blocks still registered are unregistered by the kernel).
 *
 * @param log the log, or NULL.
 *
 * Context: Any thread, once no migration uses it.
 */
void migram_uffd_log_free(MigramUffdLog *log);

/**
 * The log as a source for a migration.
 *
 * @param log the log.
 * @param source filled with the userfaultfd operations and @p log.
 *
 * Context: Any thread.
 */
void migram_uffd_log_source(MigramUffdLog *log, MigramLogSource *source);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramUffdLog, migram_uffd_log_free)

G_END_DECLS

#endif /* MIGRAM_DIRTY_LOG_UFFD_H */
