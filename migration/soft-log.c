/* SPDX-License-Identifier: MIT */
/*
 * The software dirty-log source.
 *
 * The embedder marks guest writes in one MigramDirtyBitmap over the global
 * RAM address space (one atomic OR per mark, from any thread).  As a
 * source it has manual-protect semantics:
 *
 *   sync   or_collect: the block's marks are OR-ed into the caller's
 *          collected bitmap and stay set in the log;
 *   clear  andnot by the mask: exactly the collected marks are cleared.
 *
 * Ordering (why a write is never lost).  A writer stores the data, then
 * marks (release).  The sender clears a chunk's marks (acquire and
 * release, one atomic AND per word) before it reads any page of the chunk.
 * A write whose mark the clear removed happened before the clear, so the
 * page read after the clear contains it.  A write whose mark comes after
 * the clear leaves the bit set for the next sync.  A page written after a
 * sync but not collected by it is not in the mask, so its mark survives
 * the clear.
 *
 * Block offsets are aligned to 64 pages by the RAM list, so a block's bits
 * start on a word: the block's view of the log is a pointer into it.
 */
#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/soft-log.h"
#include "migram/migram.h"
#include "dirty-log-internal.h"

struct MigramSoftLog {
	MigramDirtyBitmap *bitmap;
};

MIGRAM_EXPORT MigramSoftLog *migram_soft_log_new(uint64_t ram_space_bytes,
						 GError **error)
{
	MigramDirtyBitmap *db = migram_dirty_bitmap_new(0, ram_space_bytes,
							MIGRAM_TARGET_PAGE_SIZE,
							error);
	MigramSoftLog *log;

	if (!db)
		return NULL;
	log = g_new0(MigramSoftLog, 1);
	log->bitmap = db;
	return log;
}

MIGRAM_EXPORT void migram_soft_log_free(MigramSoftLog *log)
{
	if (!log)
		return;
	migram_dirty_bitmap_free(log->bitmap);
	g_free(log);
}

MIGRAM_EXPORT MigramDirtyBitmap *migram_soft_log_bitmap(MigramSoftLog *log)
{
	return log->bitmap;
}

/* The block's first page in the log; false when the log does not cover it. */
static bool block_window(MigramSoftLog *log, MigramRamBlock *b,
			 uint64_t *window, GError **error)
{
	uint64_t first = migram_ram_block_offset(b) / MIGRAM_TARGET_PAGE_SIZE;
	uint64_t pages = migram_ram_block_max_length(b) /
			 MIGRAM_TARGET_PAGE_SIZE;

	if (first + pages > migram_dirty_bitmap_page_count(log->bitmap) ||
	    first % MIGRAM_BITS_PER_LONG) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "software dirty log does not cover ramblock '%s' "
			    "(offset %#" G_GINT64_MODIFIER
			    "x, max length %#" G_GINT64_MODIFIER "x)",
			    migram_ram_block_idstr(b),
			    migram_ram_block_offset(b),
			    migram_ram_block_max_length(b));
		return false;
	}
	*window = first;
	return true;
}

static bool soft_start(void *opaque, MigramRamBlock *b, GError **error)
{
	uint64_t window;

	return block_window(opaque, b, &window, error);
}

static bool soft_sync(void *opaque, MigramRamBlock *b, unsigned long *collected,
		      uint64_t *newly, GError **error)
{
	MigramSoftLog *log = opaque;
	uint64_t window;

	if (!block_window(log, b, &window, error))
		return false;
	*newly = migram_dirty_bitmap_peek(log->bitmap, window,
					  migram_ram_block_used_length(b) /
						  MIGRAM_TARGET_PAGE_SIZE,
					  collected);
	return true;
}

static bool soft_clear(void *opaque, MigramRamBlock *b, uint64_t first,
		       uint64_t npages, const unsigned long *mask,
		       GError **error)
{
	MigramSoftLog *log = opaque;
	uint64_t window;

	if (!block_window(log, b, &window, error))
		return false;
	migram_dirty_bitmap_clear_masked(log->bitmap, window, mask, first,
					 npages);
	return true;
}

static void soft_stop(void *opaque, MigramRamBlock *b)
{
	(void)opaque;
	(void)b;
}

static const MigramLogSourceOps soft_ops = {
	.name = "software",
	.start = soft_start,
	.sync = soft_sync,
	.clear = soft_clear,
	.stop = soft_stop,
};

MIGRAM_EXPORT void migram_soft_log_source(MigramSoftLog *log,
					  MigramLogSource *source)
{
	source->ops = &soft_ops;
	source->opaque = log;
}

uint64_t migram_soft_log_lost_marks(const MigramLogSource *source)
{
	const MigramSoftLog *log = source->opaque;

	return source->ops == &soft_ops
		       ? migram_dirty_bitmap_out_of_range_marks(log->bitmap)
		       : migram_combined_log_lost_marks(source);
}
