/* SPDX-License-Identifier: MIT */
/**
 * @file dirty-slice.h
 * The byte-level view of a dirty bitmap that rust-vmm's vm-memory `Bitmap`
 * trait gives a memory region (seed 003): mark a byte range, ask whether
 * the byte at an offset is dirty, take a view that starts at an offset, and
 * a no-op variant for memory nobody tracks.
 *
 *     migram_dirty_bitmap_dirty_at(db, off)     is the page holding byte
 *                                               ram_start + off dirty?
 *     migram_dirty_bitmap_slice_at(db, off)     view with offsets from off
 *     migram_dirty_slice_mark(s, off, len)      mark_range(base + off, len)
 *     migram_dirty_slice_dirty_at(s, off)       dirty_at(base + off)
 *     migram_dirty_slice_at(s, off)             a view of a view
 *     migram_dirty_slice_noop()                 marks nothing, never dirty
 *
 * A MigramDirtySlice is a small value (a borrowed bitmap pointer and a base
 * offset) that callers copy freely: making one never allocates, and a
 * slice needs no freeing.  It is valid as long as its bitmap is.  Offsets
 * are bytes relative to the bitmap's ram_start, as for
 * migram_dirty_bitmap_mark_range(); bytes past the bitmap's end are
 * ignored there as here (a view past the end marks nothing and reads clean).
 *
 * Synchronization and ordering are the bitmap's (dirty-bitmap.h): any
 * number of threads may mark and read through any number of slices at
 * once; a mark is a release, dirty_at a relaxed load.
 */
#ifndef MIGRAM_DIRTY_SLICE_H
#define MIGRAM_DIRTY_SLICE_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/dirty-bitmap.h>

G_BEGIN_DECLS

/**
 * A view of a dirty bitmap from a byte offset on.  Treat the fields as
 * read-only; a NULL @c bitmap is the no-op view.
 */
typedef struct {
	MigramDirtyBitmap *bitmap; /**< borrowed; NULL: no-op */
	uint64_t base;             /**< bytes from the bitmap's ram_start */
} MigramDirtySlice;

/**
 * Whether the page holding byte ram_start + @p offset is dirty.
 *
 * @param db the bitmap, or NULL (the no-op bitmap: false).
 * @param offset bytes from ram_start; at or past ram_size reads clean.
 * @return the bit's current value (a relaxed load).
 *
 * Context: Any thread; lock-free, never allocates.
 */
bool migram_dirty_bitmap_dirty_at(const MigramDirtyBitmap *db, uint64_t offset);

/**
 * A view of @p db whose offset 0 is byte @p offset of @p db.
 *
 * @param db the bitmap, borrowed by the view; NULL gives the no-op view.
 * @param offset bytes from ram_start; any value (a view past the end marks
 *        nothing and reads clean).
 * @return the view, by value; nothing to free.
 *
 * Context: Any thread; never allocates.
 */
MigramDirtySlice migram_dirty_bitmap_slice_at(MigramDirtyBitmap *db,
					      uint64_t offset);

/**
 * The no-op view, for memory that is not tracked: marks do nothing and
 * every offset reads clean (vm-memory's `()` bitmap).
 *
 * @return a view with a NULL bitmap.
 *
 * Context: Any thread.
 */
MigramDirtySlice migram_dirty_slice_noop(void);

/**
 * Whether @p slice is the no-op view.
 *
 * @param slice the view.
 * @return true when its bitmap is NULL.
 *
 * Context: Any thread.
 */
bool migram_dirty_slice_is_noop(MigramDirtySlice slice);

/**
 * A view of a view: offset 0 of the result is offset @p offset of
 * @p slice.  A base that would pass 2^64 saturates (marks nothing).
 *
 * @param slice the view.
 * @param offset bytes from the view's base.
 * @return the new view, by value.
 *
 * Context: Any thread; never allocates.
 */
MigramDirtySlice migram_dirty_slice_at(MigramDirtySlice slice, uint64_t offset);

/**
 * Mark every page the bytes [@p offset, @p offset + @p len) of the view
 * touch, **after** writing them (vm-memory's `mark_dirty`).
 *
 * @param slice the view; the no-op view marks nothing.
 * @param offset bytes from the view's base.
 * @param len bytes; 0 marks nothing; bytes past the bitmap are ignored.
 * @return the number of pages that went from clean to dirty.
 *
 * Context: Any thread; lock-free, never allocates.
 * Ordering: release on every word.
 */
uint64_t migram_dirty_slice_mark(MigramDirtySlice slice, uint64_t offset,
				 uint64_t len);

/**
 * Whether the page holding byte @p offset of the view is dirty
 * (vm-memory's `dirty_at`).
 *
 * @param slice the view; the no-op view reads clean.
 * @param offset bytes from the view's base.
 * @return the bit's current value (a relaxed load).
 *
 * Context: Any thread; lock-free, never allocates.
 */
bool migram_dirty_slice_dirty_at(MigramDirtySlice slice, uint64_t offset);

G_END_DECLS

#endif /* MIGRAM_DIRTY_SLICE_H */
