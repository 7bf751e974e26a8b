/* SPDX-License-Identifier: MIT */
/*
 * The byte-level view of a MigramDirtyBitmap (seed 003's vm-memory Bitmap
 * trait): dirty_at, views at an offset, and the no-op view.
 *
 * A view is a value: (bitmap, base).  Offsets are added with saturation so
 * that a view past 2^64 bytes becomes one that marks nothing, never one
 * that wraps around to the start of the bitmap and marks the wrong page.
 */
#include "migram-common.h"
#include "migram/dirty-slice.h"
#include "bitmap-internal.h"

#define SATURATED UINT64_MAX

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a > SATURATED - b ? SATURATED : a + b;
}

MIGRAM_EXPORT bool migram_dirty_bitmap_dirty_at(const MigramDirtyBitmap *db,
						uint64_t offset)
{
	if (!db || offset >= migram_dirty_bitmap_ram_size(db))
		return false;
	return migram_dirty_bitmap_is_dirty_by_index(
		db, offset >> migram_dirty_bitmap_page_shift(db));
}

MIGRAM_EXPORT MigramDirtySlice
migram_dirty_bitmap_slice_at(MigramDirtyBitmap *db, uint64_t offset)
{
	MigramDirtySlice s = { db, db ? offset : 0 };

	return s;
}

MIGRAM_EXPORT MigramDirtySlice migram_dirty_slice_noop(void)
{
	MigramDirtySlice s = { NULL, 0 };

	return s;
}

MIGRAM_EXPORT bool migram_dirty_slice_is_noop(MigramDirtySlice slice)
{
	return slice.bitmap == NULL;
}

MIGRAM_EXPORT MigramDirtySlice migram_dirty_slice_at(MigramDirtySlice slice,
						     uint64_t offset)
{
	if (slice.bitmap)
		slice.base = add_sat(slice.base, offset);
	return slice;
}

MIGRAM_EXPORT uint64_t migram_dirty_slice_mark(MigramDirtySlice slice,
					       uint64_t offset, uint64_t len)
{
	uint64_t at;

	if (!slice.bitmap)
		return 0;
	at = add_sat(slice.base, offset);
	if (at == SATURATED)
		return 0;
	return migram_dirty_bitmap_mark_range(slice.bitmap, at, len);
}

MIGRAM_EXPORT bool migram_dirty_slice_dirty_at(MigramDirtySlice slice,
					       uint64_t offset)
{
	if (!slice.bitmap)
		return false;
	return migram_dirty_bitmap_dirty_at(slice.bitmap,
					    add_sat(slice.base, offset));
}
