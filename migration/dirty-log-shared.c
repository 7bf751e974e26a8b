/* SPDX-License-Identifier: MIT */
/*
 * The shared-log adapter: a MigramSharedLog (a vhost-user style bitmap that
 * another process marks) as a dirty-log source.
 *
 * Two numberings.  The RAM-address adapter reads the log as the software
 * log is numbered: page i is RAM address i * 4 KiB, so a block is one
 * window of the log.  The guest-physical adapter reads it as vhost-user
 * devices write it: page i is guest-physical address i * 4 KiB, and a
 * block appears wherever the guest layout maps it (one or several ranges,
 * or none for memory the guest cannot address).
 *
 * Either way the region's marks are exchanged into `pending` (the
 * adapter's own bitmap, in the log's numbering).  Sync ORs pending's bits
 * for the block into the caller's bitmap; clear removes exactly the masked
 * pages from pending.  Region plus pending behave as one manual-protect
 * log: a mark is reported by every sync until the clear for it.
 *
 * Threads.  Sync and clear run on the migration thread (pending is its
 * own); marks come from any process at any time.
 */
#include <string.h>

#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/dirty-log-combined.h"
#include "migram/migram.h"
#include "dirty-log-internal.h"
#include "guest-layout-internal.h"

#define PAGE MIGRAM_TARGET_PAGE_SIZE

struct MigramSharedLogAdapter {
	MigramSharedLog *log;
	MigramGuestLayout *layout; /* NULL: numbered by RAM address */
	uint64_t pages;
	unsigned long *pending; /* migration thread only */
};

static MigramSharedLogAdapter *adapter_new(MigramSharedLog *log,
					   MigramGuestLayout *layout,
					   uint64_t space_bytes,
					   const char *what, GError **error)
{
	MigramSharedLogAdapter *a;
	uint64_t pages = space_bytes / PAGE + (space_bytes % PAGE != 0);

	if (!log || space_bytes == 0 || pages > SIZE_MAX / 2) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "shared-log source: %s",
			    !log ? "NULL shared log" : what);
		return NULL;
	}
	a = g_new0(MigramSharedLogAdapter, 1);
	a->log = log;
	a->layout = layout;
	a->pages = pages;
	a->pending = migram_bitmap_new((size_t)pages);
	if (!a->pending) {
		g_free(a);
		g_set_error(
			error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			"shared-log source: no memory for %" G_GUINT64_FORMAT
			" bits",
			pages);
		return NULL;
	}
	return a;
}

MIGRAM_EXPORT MigramSharedLogAdapter *
migram_shared_log_adapter_new(MigramSharedLog *log, uint64_t ram_space_bytes,
			      GError **error)
{
	return adapter_new(log, NULL, ram_space_bytes, "bad RAM space size",
			   error);
}

MIGRAM_EXPORT MigramSharedLogAdapter *
migram_shared_log_adapter_new_gpa(MigramSharedLog *log,
				  MigramGuestLayout *layout,
				  uint64_t gpa_space_bytes, GError **error)
{
	if (log && !layout) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "shared-log source: NULL guest layout");
		return NULL;
	}
	return adapter_new(log, layout, gpa_space_bytes,
			   "bad guest-physical space size", error);
}

MIGRAM_EXPORT void migram_shared_log_adapter_free(MigramSharedLogAdapter *a)
{
	if (!a)
		return;
	migram_bitmap_free(a->pending);
	g_free(a);
}

/* --- numbered by RAM address -------------------------------------------- */

/* The block's first page in the log; false when the log does not cover it. */
static bool shared_window(MigramSharedLogAdapter *a, MigramRamBlock *b,
			  uint64_t *first, GError **error)
{
	uint64_t f = migram_ram_block_offset(b) / PAGE;
	uint64_t pages = migram_ram_block_max_length(b) / PAGE;

	if (f > a->pages || pages > a->pages - f || f % MIGRAM_BITS_PER_LONG) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "shared-log source does not cover ramblock '%s'",
			    migram_ram_block_idstr(b));
		return false;
	}
	*first = f;
	return true;
}

static bool shared_start(void *opaque, MigramRamBlock *b, GError **error)
{
	uint64_t f;

	return shared_window(opaque, b, &f, error);
}

static bool shared_sync(void *opaque, MigramRamBlock *b,
			unsigned long *collected, uint64_t *newly,
			GError **error)
{
	MigramSharedLogAdapter *a = opaque;
	uint64_t f, n = migram_ram_block_used_length(b) / PAGE;

	if (!shared_window(a, b, &f, error))
		return false;
	migram_shared_log_collect_range(a->log, a->pending, f, n);
	*newly = migram_bitmap_or_collect(collected,
					  a->pending + f / MIGRAM_BITS_PER_LONG,
					  0, (size_t)n);
	return true;
}

static bool shared_clear(void *opaque, MigramRamBlock *b, uint64_t first,
			 uint64_t npages, const unsigned long *mask,
			 GError **error)
{
	MigramSharedLogAdapter *a = opaque;
	uint64_t f;

	if (!shared_window(a, b, &f, error))
		return false;
	migram_bitmap_andnot_atomic(a->pending + f / MIGRAM_BITS_PER_LONG, mask,
				    (size_t)first, (size_t)npages);
	return true;
}

static void shared_stop(void *opaque, MigramRamBlock *b)
{
	(void)opaque;
	(void)b;
}

static const MigramLogSourceOps shared_ops = {
	.name = "shared",
	.start = shared_start,
	.sync = shared_sync,
	.clear = shared_clear,
	.stop = shared_stop,
};

/* --- numbered by guest-physical address --------------------------------- */

/* What one pass over a block's ranges does; on the migration thread's
 * stack (the range callback runs under the RCU read lock: no allocation). */
typedef struct {
	MigramSharedLogAdapter *a;
	uint64_t used;             /* the block's used_length */
	unsigned long *collected;  /* sync: the caller's bitmap */
	uint64_t newly;            /* sync: bits set in it */
	const unsigned long *mask; /* clear: the caller's mask */
	uint64_t first, npages;    /* clear: its window, in block pages */
	const char *bad;           /* start: why a range does not fit */
} GpaPass;

/* The range's pages that exist in the block and in the log. */
static uint64_t range_pages(const GpaPass *p, uint64_t gpa, uint64_t size,
			    uint64_t offset)
{
	uint64_t n = size / PAGE, gp = gpa / PAGE;

	if (offset >= p->used)
		return 0;
	n = MIN(n, (p->used - offset) / PAGE);
	if (gp >= p->a->pages)
		return 0;
	return MIN(n, p->a->pages - gp);
}

static void gpa_check_range(uint64_t gpa, uint64_t size, uint64_t offset,
			    void *opaque)
{
	GpaPass *p = opaque;

	(void)offset;
	if (gpa / PAGE + size / PAGE > p->a->pages)
		p->bad = "a range the block is mapped at passes the log's "
			 "guest-physical space";
}

static bool gpa_start(void *opaque, MigramRamBlock *b, GError **error)
{
	GpaPass p = { .a = opaque };

	migram_guest_layout_block_ranges(p.a->layout, b, gpa_check_range, &p);
	if (p.bad) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "shared-log source (guest-physical): ramblock "
			    "'%s': %s (%" G_GUINT64_FORMAT " pages)",
			    migram_ram_block_idstr(b), p.bad, p.a->pages);
		return false;
	}
	return true;
}

static void gpa_sync_range(uint64_t gpa, uint64_t size, uint64_t offset,
			   void *opaque)
{
	GpaPass *p = opaque;
	uint64_t gp = gpa / PAGE, bp = offset / PAGE;
	uint64_t n = range_pages(p, gpa, size, offset);
	size_t end = (size_t)(gp + n);

	if (!n)
		return;
	migram_shared_log_collect_range(p->a->log, p->a->pending, gp, n);
	/* pending is numbered by gpa, the caller's bitmap by block page:
	 * move bit by set bit (the dirty ones only) */
	for (size_t i = migram_bitmap_find_next_set(p->a->pending, end, gp);
	     i < end;
	     i = migram_bitmap_find_next_set(p->a->pending, end, i + 1)) {
		size_t to = (size_t)(bp + (i - gp));

		if (!migram_bitmap_test_bit(p->collected, to)) {
			migram_bitmap_set_bit(p->collected, to);
			p->newly++;
		}
	}
}

static bool gpa_sync(void *opaque, MigramRamBlock *b, unsigned long *collected,
		     uint64_t *newly, GError **error)
{
	GpaPass p = { .a = opaque,
		      .used = migram_ram_block_used_length(b),
		      .collected = collected };

	(void)error;
	migram_guest_layout_block_ranges(p.a->layout, b, gpa_sync_range, &p);
	*newly = p.newly;
	return true;
}

static void gpa_clear_range(uint64_t gpa, uint64_t size, uint64_t offset,
			    void *opaque)
{
	GpaPass *p = opaque;
	uint64_t gp = gpa / PAGE, bp = offset / PAGE;
	uint64_t n = range_pages(p, gpa, size, offset);
	uint64_t lo = MAX(bp, p->first), hi = MIN(bp + n, p->first + p->npages);

	if (lo >= hi)
		return;
	for (size_t i = migram_bitmap_find_next_set(p->mask, (size_t)hi,
						    (size_t)lo);
	     i < hi;
	     i = migram_bitmap_find_next_set(p->mask, (size_t)hi, i + 1))
		migram_bitmap_clear_bit(p->a->pending, (size_t)(gp + (i - bp)));
}

static bool gpa_clear(void *opaque, MigramRamBlock *b, uint64_t first,
		      uint64_t npages, const unsigned long *mask,
		      GError **error)
{
	GpaPass p = { .a = opaque,
		      .used = migram_ram_block_used_length(b),
		      .mask = mask,
		      .first = first,
		      .npages = npages };

	(void)error;
	migram_guest_layout_block_ranges(p.a->layout, b, gpa_clear_range, &p);
	return true;
}

static const MigramLogSourceOps gpa_ops = {
	.name = "shared-gpa",
	.start = gpa_start,
	.sync = gpa_sync,
	.clear = gpa_clear,
	.stop = shared_stop,
};

MIGRAM_EXPORT uint64_t
migram_shared_log_adapter_take_unmapped(MigramSharedLogAdapter *a)
{
	uint64_t lost = 0;

	if (!a || !a->layout)
		return 0;
	/* Everything the region holds joins pending (marks at mapped pages
	 * are then reported by the next sync); what no range maps is counted
	 * and dropped. */
	migram_shared_log_collect_range(a->log, a->pending, 0, a->pages);
	for (size_t i = migram_bitmap_find_next_set(a->pending,
						    (size_t)a->pages, 0);
	     i < a->pages;
	     i = migram_bitmap_find_next_set(a->pending, (size_t)a->pages,
					     i + 1)) {
		if (migram_guest_layout_lookup(a->layout, (uint64_t)i * PAGE,
					       NULL, NULL))
			continue;
		migram_bitmap_clear_bit(a->pending, i);
		lost++;
	}
	return lost;
}

MIGRAM_EXPORT void migram_shared_log_adapter_source(MigramSharedLogAdapter *a,
						    MigramLogSource *source)
{
	source->ops = a->layout ? &gpa_ops : &shared_ops;
	source->opaque = a;
}
