/* SPDX-License-Identifier: MIT */
/**
 * @file shared-log.h
 * A dirty log in shared memory that another process can mark, and a holder
 * that lets it be replaced while writers keep marking.
 *
 * MigramLogRegion (log-region.h, declared here before issue 18) is a bitmap at
 * MIGRAM_LOG_PAGE_SIZE (4 KiB) granularity in a memfd: bit n stands for bytes
 * [n * 4096, (n + 1) * 4096) of the memory it covers, and lives in bit n % 8 of
 * byte n / 8 of the file on a little-endian host (the vhost-user log layout).
 * The owner hands the fd to a device process (vhost-user style); that process
 * maps it with migram_log_region_open() (or its own code) and marks pages with
 * atomic ORs. The owner collects with exchange-and-collect, which never loses a
 * mark made concurrently.
 *
 * MigramSharedLog holds the current region behind an RCU-protected pointer.
 * Writers in this process mark through it without any lock; the region can
 * be swapped (for a bigger guest, a new device) with
 * migram_shared_log_replace(), which waits for a grace period, then moves
 * every mark still in the old region into the new one before freeing the old
 * one: a mark made through the holder is never lost across a replacement.
 *
 * Threads that call migram_shared_log_mark() or migram_shared_log_collect*()
 * take the RCU read lock inside, so they must be registered with liburcu
 * (urcu_memb_register_thread(); see migram.h).
 *
 * Synchronization (x = may run concurrently on one object):
 *
 *                    mark   collect  replace  free
 *     mark            x       x        x       -
 *     collect         x       x        x       -
 *     replace         x       x        -       -
 *     free            -       -        -       -
 */
#ifndef MIGRAM_SHARED_LOG_H
#define MIGRAM_SHARED_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/dirty-bitmap.h>
#include <migram/log-region.h>

G_BEGIN_DECLS

/** Opaque; the RCU-replaceable holder of the current region. */
typedef struct MigramSharedLog MigramSharedLog;

/**
 * Create a holder, taking ownership of @p initial.
 *
 * @param initial the first region, or NULL (marks are then dropped until a
 *        region is installed with migram_shared_log_replace()).
 * @return a new holder; caller frees with migram_shared_log_free().
 *
 * Context: Any thread.
 */
MigramSharedLog *migram_shared_log_new(MigramLogRegion *initial);

/**
 * Free a holder and its current region.
 *
 * @param log the holder, or NULL.
 *
 * Context: May block (waits for an RCU grace period).  Not inside an RCU
 * read-side section; no other thread may use @p log any more.
 */
void migram_shared_log_free(MigramSharedLog *log);

/**
 * Mark pages through the current region.
 *
 * @param log the holder.
 * @param offset first byte.
 * @param len number of bytes.
 * @return pages newly marked; 0 when no region is installed.
 *
 * Context: Any registered RCU thread; takes and releases the RCU read lock
 * (nesting inside the caller's own read section is fine).  Lock-free, never
 * allocates.
 */
uint64_t migram_shared_log_mark(MigramSharedLog *log, uint64_t offset,
				uint64_t len);

/**
 * Collect the current region's marks into a word bitmap.
 *
 * @param log the holder.
 * @param dst destination, at least @p npages bits, owned by the caller.
 * @param npages pages [0, @p npages) are collected.
 * @return the number of bits newly set in @p dst.
 *
 * Context: Any registered RCU thread; takes and releases the RCU read lock.
 */
uint64_t migram_shared_log_collect_words(MigramSharedLog *log,
					 unsigned long *dst, uint64_t npages);

/**
 * Collect the current region's marks for pages [@p first, @p first +
 * @p npages) into a word bitmap with the same numbering: bit @p first + i
 * of @p dst.  The sync of the shared log's source adapter
 * (dirty-log-combined.h).  Added in 0.2.
 *
 * @param log the holder.
 * @param dst destination, at least @p first + @p npages bits, owned by the
 *        caller (plain stores).
 * @param first first page; at or past the region's end collects nothing.
 * @param npages number of pages, clamped to the region.
 * @return the number of bits newly set in @p dst; 0 when no region is
 *         installed.
 *
 * Context: Any registered RCU thread; takes and releases the RCU read lock.
 * Lock-free, never allocates.
 * Ordering: acquire on every word taken.
 */
uint64_t migram_shared_log_collect_range(MigramSharedLog *log,
					 unsigned long *dst, uint64_t first,
					 uint64_t npages);

/**
 * Collect the current region's marks into a dirty bitmap.
 *
 * @param log the holder.
 * @param dst a dirty bitmap with a 4 KiB page size; pages past either size
 *        are left alone.  Marked atomically, so its own markers may run.
 * @return the number of pages newly dirty in @p dst.
 *
 * Context: Any registered RCU thread; takes and releases the RCU read lock.
 */
uint64_t migram_shared_log_collect(MigramSharedLog *log,
				   MigramDirtyBitmap *dst);

/**
 * Install @p next as the current region and retire the old one.
 *
 * After publishing @p next it waits for an RCU grace period (so no writer
 * still holds the old region), moves every mark left in the old region into
 * @p next, and frees the old region.  A writer in another process marking
 * the old region's memfd directly must have switched before this call (in
 * vhost-user terms: after the back-end acknowledged SET_LOG_BASE).
 *
 * @param log the holder.
 * @param next the new region; ownership passes to @p log on success only.
 * @param error MIGRAM_ERROR_INVALID when @p next tracks fewer pages than the
 *        current region (marks would be dropped).
 * @return true on success.
 *
 * Context: May block (grace period).  Not inside an RCU read-side section.
 * Calls to replace are serialized by a mutex inside the holder.
 */
bool migram_shared_log_replace(MigramSharedLog *log, MigramLogRegion *next,
			       GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramSharedLog, migram_shared_log_free)

G_END_DECLS

#endif /* MIGRAM_SHARED_LOG_H */
