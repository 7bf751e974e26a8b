/* SPDX-License-Identifier: MIT */
/**
 * @file soft-log.h
 * MigramSoftLog: the software dirty-log source, for an embedder that marks
 * its guest's writes itself.  A MigramLogSource (dirty-log.h) over a
 * MigramDirtyBitmap of the whole RAM address space.
 */
#ifndef MIGRAM_SOFT_LOG_H
#define MIGRAM_SOFT_LOG_H

#include <stdint.h>

#include <glib.h>

#include <migram/dirty-bitmap.h>
#include <migram/dirty-log.h>

G_BEGIN_DECLS

/** Opaque; the software source.  Single owner. */
typedef struct MigramSoftLog MigramSoftLog;

/**
 * Create a software dirty log over the global RAM address space
 * [0, @p ram_space_bytes) at 4 KiB pages, for an embedder that marks
 * writes itself (its vCPU exit handler, its device DMA path).
 *
 * Address it by RAM address: a block's pages start at its offset
 * (migram_ram_block_offset()), which the RAM list aligns to 64 pages, so
 * each block's bits start on a word.
 *
 * @param ram_space_bytes the end of the highest block's max_length.
 * @param error as migram_dirty_bitmap_new().
 * @return a new log; caller frees with migram_soft_log_free().
 *
 * Context: Any thread.
 */
MigramSoftLog *migram_soft_log_new(uint64_t ram_space_bytes, GError **error);

/**
 * Free a software log.
 *
 * @param log the log, or NULL.
 *
 * Context: Any thread, once no thread marks it and no migration uses it.
 */
void migram_soft_log_free(MigramSoftLog *log);

/**
 * The dirty bitmap writers mark: page i is RAM address i * 4 KiB.  Mark
 * with migram_dirty_bitmap_set_dirty() (by RAM address) or
 * migram_dirty_bitmap_mark_range(), **after** the write.
 *
 * @param log the log.
 * @return the bitmap; borrowed, lives as long as @p log.
 *
 * Context: Any thread.
 */
MigramDirtyBitmap *migram_soft_log_bitmap(MigramSoftLog *log);

/**
 * The log as a source for a migration.
 *
 * @param log the log.
 * @param source filled with the software operations and @p log.
 *
 * Context: Any thread.
 */
void migram_soft_log_source(MigramSoftLog *log, MigramLogSource *source);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramSoftLog, migram_soft_log_free)

G_END_DECLS

#endif /* MIGRAM_SOFT_LOG_H */
