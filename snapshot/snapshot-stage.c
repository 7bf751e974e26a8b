/* SPDX-License-Identifier: MIT */
/*
 * Staging a block during a snapshot's pause (strategy "staging"): the
 * pause costs one pass over the block's memory (a memcpy of the dirty or
 * non-zero pages, and a zero test of the others in a full snapshot).
 */
#include <string.h>

#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "snapshot-internal.h"

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;
	uint64_t acc = 0;
	for (unsigned i = 0; i < SNAP_PAGE / 8; i += 8) {
		acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] |
		       w[i + 5] | w[i + 6] | w[i + 7];
		if (acc)
			return false;
	}
	return true;
}

MIGRAM_EXPORT bool
migram_snapshot_stage_block(MigramStaging *st, const MigramRamBlock *block,
			    const unsigned long *dirty, uint64_t *hashes,
			    MigramStageStats *stats, GError **error)
{
	g_return_val_if_fail(st != NULL && block != NULL, false);
	uint64_t npages = migram_ram_block_used_length(block) / SNAP_PAGE;
	const uint8_t *host = migram_ram_block_host(block);
	if (migram_staging_page_count(st) < npages) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "stage block '%s': staging of %" G_GUINT64_FORMAT
			    " pages for %" G_GUINT64_FORMAT,
			    migram_ram_block_idstr(block),
			    migram_staging_page_count(st), npages);
		return false;
	}
	MigramStageStats s = { .pages_scanned = npages };
	uint64_t t0 = snap_now_ns();
	uint64_t p = 0;
	while (p < npages) {
		uint64_t q;
		if (dirty) {
			p = migram_bitmap_find_next_set(dirty, (size_t)npages,
							(size_t)p);
			if (p >= npages)
				break;
			q = migram_bitmap_find_next_zero(dirty, (size_t)npages,
							 (size_t)p);
		} else {
			while (p < npages &&
			       page_is_zero(host + p * SNAP_PAGE)) {
				s.zero_skipped++;
				p++;
			}
			if (p >= npages)
				break;
			q = p + 1;
			while (q < npages &&
			       !page_is_zero(host + q * SNAP_PAGE))
				q++;
		}
		if (!migram_staging_copy(st, host + p * SNAP_PAGE, p, q - p,
					 error))
			return false;
		s.pages_copied += q - p;
		p = q;
	}
	uint64_t t1 = snap_now_ns();
	s.copy_ns = t1 - t0;
	if (hashes) {
		for (p = 0; p < npages; p++)
			hashes[p] =
				migram_snapshot_page_hash(host + p * SNAP_PAGE);
		s.hash_ns = snap_now_ns() - t1;
	}
	if (stats) {
		stats->pages_scanned += s.pages_scanned;
		stats->pages_copied += s.pages_copied;
		stats->zero_skipped += s.zero_skipped;
		stats->copy_ns += s.copy_ns;
		stats->hash_ns += s.hash_ns;
	}
	return true;
}
