/* SPDX-License-Identifier: MIT */
/**
 * @file log-region.h
 * MigramLogRegion: one mapping of a dirty log in a memfd that another
 * process can mark (the vhost-user log layout).  shared-log.h describes
 * the layout and holds MigramSharedLog, the RCU-replaceable holder of the
 * current region; this header is the region alone.
 */
#ifndef MIGRAM_LOG_REGION_H
#define MIGRAM_LOG_REGION_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/dirty-bitmap.h>

G_BEGIN_DECLS

/** Granularity of a shared log region, in bytes. */
#define MIGRAM_LOG_PAGE_SIZE 4096u

/** Opaque; one mapping of a shared log, single owner. */
typedef struct MigramLogRegion MigramLogRegion;

/**
 * Create a log region in a new memfd, sized for @p covered_bytes of memory.
 *
 * The memfd is sealed against shrinking and growing, so a peer holding the
 * fd cannot truncate it under this process's mapping.
 *
 * @param covered_bytes bytes of memory the log tracks, > 0.
 * @param error MIGRAM_ERROR_INVALID for a zero size, MIGRAM_ERROR_IO when
 *        memfd_create, ftruncate, sealing or mmap fails.
 * @return a new region, all clear; caller frees with
 *         migram_log_region_free().
 *
 * Context: Any thread.
 */
MigramLogRegion *migram_log_region_new(uint64_t covered_bytes, GError **error);

/**
 * Map an existing log region from a file descriptor (the device side).
 *
 * The region keeps its own duplicate of @p fd; the caller keeps @p fd.
 *
 * @param fd a memfd or file holding at least the bitmap for
 *        @p covered_bytes.
 * @param covered_bytes bytes of memory the log tracks, > 0.
 * @param error MIGRAM_ERROR_INVALID when the file is too small for
 *        @p covered_bytes (mapping it would fault), MIGRAM_ERROR_IO when a
 *        system call fails.
 * @return a new region; caller frees with migram_log_region_free().
 *
 * Context: Any thread.
 */
MigramLogRegion *migram_log_region_open(int fd, uint64_t covered_bytes,
					GError **error);

/**
 * Unmap a region and close its fd.
 *
 * @param region the region, or NULL.
 *
 * Context: Any thread, once nothing marks or collects @p region (a region
 * owned by a MigramSharedLog is freed by the holder, never directly).
 */
void migram_log_region_free(MigramLogRegion *region);

/**
 * The region's file descriptor, to hand to another process.
 *
 * @param region the region.
 * @return the fd; borrowed, closed by migram_log_region_free().
 *
 * Context: Any thread.
 */
int migram_log_region_fd(const MigramLogRegion *region);

/**
 * Number of 4 KiB pages the region tracks.
 *
 * @param region the region.
 * @return ceil(covered_bytes / 4096).
 *
 * Context: Any thread.
 */
uint64_t migram_log_region_page_count(const MigramLogRegion *region);

/**
 * Mark the pages the byte range [@p offset, @p offset + @p len) touches.
 *
 * Clamped to the covered size like migram_dirty_bitmap_mark_range().
 *
 * @param region the region.
 * @param offset first byte.
 * @param len number of bytes; 0 marks nothing.
 * @return the number of pages that went from clear to marked.
 *
 * Context: Any thread; lock-free, never allocates.
 * Ordering: release on every word.
 */
uint64_t migram_log_region_mark(MigramLogRegion *region, uint64_t offset,
				uint64_t len);

/**
 * Whether page @p pfn is marked now.
 *
 * @param region the region.
 * @param pfn page index; past the end reads as clear.
 * @return the bit's value.
 *
 * Context: Any thread.
 */
bool migram_log_region_test(const MigramLogRegion *region, uint64_t pfn);

/**
 * Exchange-and-collect the region's marks into a word bitmap.
 *
 * @param region the region.
 * @param dst destination, at least @p npages bits, owned by the caller.
 * @param npages pages [0, @p npages) are collected (clamped to the region).
 * @return the number of bits newly set in @p dst.
 *
 * Context: Any thread; lock-free, never allocates.
 */
uint64_t migram_log_region_collect_words(MigramLogRegion *region,
					 unsigned long *dst, uint64_t npages);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramLogRegion, migram_log_region_free)

G_END_DECLS

#endif /* MIGRAM_LOG_REGION_H */
