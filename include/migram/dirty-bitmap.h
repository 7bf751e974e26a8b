/* SPDX-License-Identifier: MIT */
/**
 * @file dirty-bitmap.h
 * MigramDirtyBitmap: the lock-free bitmap a vCPU exit handler or a device
 * model marks when it writes guest memory.
 *
 * It covers the byte range [ram_start, ram_start + ram_size) at page_size
 * granularity (a power of two); page i covers
 * [ram_start + i * page_size, ram_start + (i + 1) * page_size), and the last
 * page may be partial.
 *
 *     migram_dirty_bitmap_set_dirty(db, addr)       one atomic OR
 *     migram_dirty_bitmap_mark_range(db, off, len)  one atomic OR per word
 *     migram_dirty_bitmap_drain(db)                 one atomic swap per
 *                                                   non-zero word
 *
 * Synchronization: any number of markers and any number of drainers may run
 * at once.  Each dirty bit is reported by exactly one drain; a mark made
 * during a drain is reported by that drain or the next one.
 *
 * Ordering contract: a marker writes the page first and marks it after
 * (release); a drainer that reports the page has taken the bit with acquire
 * ordering, so it sees the write.  A write made after the drain took the bit
 * must mark again, and that mark is reported by a later drain.
 */
#ifndef MIGRAM_DIRTY_BITMAP_H
#define MIGRAM_DIRTY_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

/** Opaque; created by migram_dirty_bitmap_new(), single owner. */
typedef struct MigramDirtyBitmap MigramDirtyBitmap;

/**
 * Called once per dirty page by migram_dirty_bitmap_drain_into().
 *
 * @param pfn page index in the bitmap.
 * @param opaque the caller's pointer.
 */
typedef void (*MigramPageFunc)(uint64_t pfn, void *opaque);

/**
 * Create a dirty bitmap over [@p ram_start, @p ram_start + @p ram_size).
 *
 * @param ram_start first byte address covered.
 * @param ram_size number of bytes covered, > 0.
 * @param page_size tracking granularity, a power of two.
 * @param error return location for an error: MIGRAM_ERROR_INVALID when
 *        @p page_size is not a power of two, the range is empty or it
 *        overflows 64 bits; MIGRAM_ERROR_NO_MEMORY when the bitmap cannot be
 *        allocated.
 * @return a new bitmap, all clean; caller frees with
 *         migram_dirty_bitmap_free().
 *
 * Context: Any thread.
 */
MigramDirtyBitmap *migram_dirty_bitmap_new(uint64_t ram_start,
					   uint64_t ram_size,
					   uint64_t page_size, GError **error);

/**
 * Free a dirty bitmap.
 *
 * @param db the bitmap, or NULL.
 *
 * Context: Any thread, once no other thread uses @p db.
 */
void migram_dirty_bitmap_free(MigramDirtyBitmap *db);

/**
 * Number of pages tracked: ceil(ram_size / page_size).
 *
 * @param db the bitmap.
 * @return the page count.
 *
 * Context: Any thread.
 */
uint64_t migram_dirty_bitmap_page_count(const MigramDirtyBitmap *db);

/**
 * log2(page_size).
 *
 * @param db the bitmap.
 * @return the page shift.
 *
 * Context: Any thread.
 */
unsigned int migram_dirty_bitmap_page_shift(const MigramDirtyBitmap *db);

/**
 * The tracking granularity in bytes.
 *
 * @param db the bitmap.
 * @return the page size.
 *
 * Context: Any thread.
 */
uint64_t migram_dirty_bitmap_page_size(const MigramDirtyBitmap *db);

/**
 * First byte address covered.
 *
 * @param db the bitmap.
 * @return ram_start as given at creation.
 *
 * Context: Any thread.
 */
uint64_t migram_dirty_bitmap_ram_start(const MigramDirtyBitmap *db);

/**
 * Number of bytes covered.
 *
 * @param db the bitmap.
 * @return ram_size as given at creation.
 *
 * Context: Any thread.
 */
uint64_t migram_dirty_bitmap_ram_size(const MigramDirtyBitmap *db);

/**
 * Page index of the page holding @p addr.
 *
 * @param db the bitmap.
 * @param addr a byte address.
 * @param pfn where the page index is stored on success; may be NULL.
 * @return false when @p addr is outside [ram_start, ram_start + ram_size).
 *
 * Context: Any thread.
 */
bool migram_dirty_bitmap_page_index_of(const MigramDirtyBitmap *db,
				       uint64_t addr, uint64_t *pfn);

/**
 * Mark the page holding @p addr dirty.  One atomic OR; idempotent.
 *
 * @param db the bitmap.
 * @param addr a byte address; one outside the range marks nothing, but is
 *        counted and, in debug builds, logged as with
 *        migram_dirty_bitmap_mark(), which also tells the two apart.
 * @return true when the page went from clean to dirty; false when it was
 *         dirty already or @p addr is outside the range.
 *
 * Context: Any thread; lock-free, never allocates.
 * Ordering: release (see the file comment).
 */
bool migram_dirty_bitmap_set_dirty(MigramDirtyBitmap *db, uint64_t addr);

/** What a mark did (migram_dirty_bitmap_mark()). */
typedef enum {
	MIGRAM_MARK_OUT_OF_RANGE = -1, /**< outside the bitmap: the write is
					    lost; counted, a critical in debug
					    builds */
	MIGRAM_MARK_ALREADY_DIRTY = 0, /**< the page was dirty already */
	MIGRAM_MARK_NEWLY_DIRTY = 1,   /**< the page went from clean to dirty */
} MigramMarkResult;

/**
 * Mark the page holding @p addr dirty, and say what happened: unlike
 * migram_dirty_bitmap_set_dirty(), an address outside the bitmap (a
 * guest-physical address across a hole, say) is not mistaken for "already
 * dirty".  Such a mark is also counted
 * (migram_dirty_bitmap_out_of_range_marks()) and, in debug builds (without
 * G_DISABLE_ASSERT), logged with g_critical().
 *
 * @param db the bitmap.
 * @param addr a byte address.
 * @return #MIGRAM_MARK_NEWLY_DIRTY, #MIGRAM_MARK_ALREADY_DIRTY or
 *         #MIGRAM_MARK_OUT_OF_RANGE.
 *
 * Context: Any thread; lock-free, never allocates (an out-of-range mark
 * adds one atomic increment, and its critical formats a message).
 * Ordering: release (see the file comment).
 */
MigramMarkResult migram_dirty_bitmap_mark(MigramDirtyBitmap *db, uint64_t addr);

/**
 * Mark page @p pfn dirty.  Same results as migram_dirty_bitmap_mark().
 *
 * @param db the bitmap.
 * @param pfn page index; one >= the page count is out of range.
 * @return #MIGRAM_MARK_NEWLY_DIRTY, #MIGRAM_MARK_ALREADY_DIRTY or
 *         #MIGRAM_MARK_OUT_OF_RANGE.
 *
 * Context: Any thread; lock-free, never allocates.
 * Ordering: release.
 */
MigramMarkResult migram_dirty_bitmap_mark_by_index(MigramDirtyBitmap *db,
						   uint64_t pfn);

/**
 * How many marks fell outside the bitmap since it was created (by
 * migram_dirty_bitmap_mark(), _mark_by_index(), _set_dirty() and
 * _set_dirty_by_index()).  Anything but 0 means writes were not tracked.
 *
 * @param db the bitmap, or NULL (0).
 * @return the count (a relaxed load).
 *
 * Context: Any thread.
 */
uint64_t migram_dirty_bitmap_out_of_range_marks(const MigramDirtyBitmap *db);

/**
 * Mark page @p pfn dirty.  Same semantics as migram_dirty_bitmap_set_dirty().
 *
 * @param db the bitmap.
 * @param pfn page index; one >= the page count marks nothing (counted and
 *        logged as with migram_dirty_bitmap_mark()).
 * @return true when the page went from clean to dirty.
 *
 * Context: Any thread; lock-free, never allocates.
 * Ordering: release.
 */
bool migram_dirty_bitmap_set_dirty_by_index(MigramDirtyBitmap *db,
					    uint64_t pfn);

/**
 * Whether page @p pfn is dirty now.
 *
 * @param db the bitmap.
 * @param pfn page index; one >= the page count reads as clean.
 * @return the bit's current value (a relaxed load).
 *
 * Context: Any thread.
 */
bool migram_dirty_bitmap_is_dirty_by_index(const MigramDirtyBitmap *db,
					   uint64_t pfn);

/**
 * Mark every page the byte range [@p offset, @p offset + @p len) touches.
 *
 * @p offset is relative to ram_start (as a memory region's own offset is).
 * A zero @p len marks nothing.  The range is clamped to the end of the
 * bitmap: bytes past ram_size are ignored, and an @p offset at or past
 * ram_size marks nothing.
 *
 * @param db the bitmap.
 * @param offset first byte, relative to ram_start.
 * @param len number of bytes.
 * @return the number of pages that went from clean to dirty.
 *
 * Context: Any thread; lock-free, never allocates.
 * Ordering: release on every word.
 */
uint64_t migram_dirty_bitmap_mark_range(MigramDirtyBitmap *db, uint64_t offset,
					uint64_t len);

/**
 * Take every dirty page, clearing it, and return the indices.
 *
 * @param db the bitmap.
 * @return a new GArray of guint64 page indices in ascending order; caller
 *         frees with g_array_unref().
 *
 * Context: Any thread; allocates the result (use
 * migram_dirty_bitmap_drain_into() on hot paths).
 * Ordering: acquire on every word taken.
 */
GArray *migram_dirty_bitmap_drain(MigramDirtyBitmap *db);

/**
 * Take every dirty page, clearing it, calling @p fn for each.  No
 * allocation.
 *
 * @param db the bitmap.
 * @param fn called once per dirty page, in ascending order, on the calling
 *        thread; must not call back into migram_dirty_bitmap_drain*() on the
 *        same bitmap.
 * @param opaque passed to @p fn.
 * @return the number of pages reported.
 *
 * Context: Any thread; lock-free, never allocates.
 * Ordering: acquire on every word taken.
 */
uint64_t migram_dirty_bitmap_drain_into(MigramDirtyBitmap *db,
					MigramPageFunc fn, void *opaque);

/**
 * Take the dirty pages in [@p first_pfn, @p first_pfn + @p npages) and OR
 * them into the word bitmap @p dst (same page numbering), counting those
 * that were clear in @p dst.  The software dirty-log source's sync.
 *
 * @param db the bitmap.
 * @param dst destination word bitmap, at least page_count bits, owned by
 *        the caller (plain stores).
 * @param first_pfn first page of the range.
 * @param npages number of pages; clamped to the page count.
 * @return the number of pages newly set in @p dst.
 *
 * Context: Any thread; lock-free, never allocates.
 * Ordering: acquire on every word taken.
 */
uint64_t migram_dirty_bitmap_collect(MigramDirtyBitmap *db, unsigned long *dst,
				     uint64_t first_pfn, uint64_t npages);

/**
 * Read the dirty pages of a window without taking them: OR pages
 * [@p window, @p window + @p npages) into @p dst (bit i of @p dst is page
 * @p window + i), leaving them dirty.  The sync of a manual-protect log.
 *
 * @param db the bitmap.
 * @param window first page of the window; a multiple of
 *        MIGRAM_BITS_PER_LONG (so the window starts on a word).
 * @param npages pages in the window; must lie inside the bitmap.
 * @param dst destination, @p npages bits, owned by the caller.
 * @return the number of bits newly set in @p dst.
 *
 * Context: Any thread; lock-free, never allocates.
 * Ordering: acquire on each non-zero word.
 */
uint64_t migram_dirty_bitmap_peek(const MigramDirtyBitmap *db, uint64_t window,
				  uint64_t npages, unsigned long *dst);

/**
 * Clear exactly the pages of @p mask: within the window starting at page
 * @p window, every page @p window + i with i in [@p first, @p first +
 * @p npages) and bit i set in @p mask.  Pages marked but not in the mask
 * stay dirty.  The log-clear of a manual-protect log.
 *
 * @param db the bitmap.
 * @param window first page of the window, a multiple of
 *        MIGRAM_BITS_PER_LONG.
 * @param mask the pages to clear, numbered from @p window.
 * @param first first bit of @p mask to consider.
 * @param npages how many; the range must lie inside the bitmap.
 *
 * Context: Any thread; lock-free, never allocates.
 * Ordering: acquire and release on each word changed.
 */
void migram_dirty_bitmap_clear_masked(MigramDirtyBitmap *db, uint64_t window,
				      const unsigned long *mask, uint64_t first,
				      uint64_t npages);

/**
 * Make every page of @p fine under a dirty page of @p coarse dirty.
 *
 * Used when tracking steps down from a coarse granularity (say 2 MiB) to a
 * finer one (say 4 KiB): nothing the coarse bitmap knew is lost.  @p coarse
 * is only read.
 *
 * @param coarse the coarse bitmap.
 * @param fine the fine bitmap: same ram_start and ram_size, strictly smaller
 *        page size.
 * @param error MIGRAM_ERROR_INVALID when the geometries do not fit.
 * @return true on success.
 *
 * Context: Any thread; marks @p fine atomically, so markers of @p fine may
 * run at the same time.
 */
bool migram_dirty_bitmap_fold_into_finer(const MigramDirtyBitmap *coarse,
					 MigramDirtyBitmap *fine,
					 GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramDirtyBitmap, migram_dirty_bitmap_free)

G_END_DECLS

#endif /* MIGRAM_DIRTY_BITMAP_H */
