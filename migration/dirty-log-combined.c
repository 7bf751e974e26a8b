/* SPDX-License-Identifier: MIT */
/*
 * The combined dirty-log source (N children, one source) and the adapter
 * that makes a MigramSharedLog a source.
 *
 * Combined.  Per started block and child, `reported` holds the pages the
 * child's syncs collected since the child was last cleared for them: it is
 * the child's own `collected` bitmap.  sync OR-s every child's reported
 * bitmap into the caller's collected one (counting bits new there); clear
 * builds, per child, mask AND reported in one scratch bitmap, re-arms the
 * child with it, and drops the masked pages from reported.
 *
 * The no-write-lost argument of send-pages.c holds per child: each child
 * sees syncs (reading only) and clears whose mask is a subset of what that
 * child's syncs collected, which is all dirty-log.h asks of its caller.
 * And every page a child reported is in the caller's collected bitmap, so
 * in bmap, before any clear that could re-arm it.
 *
 * Shared-log adapter.  A MigramLogRegion only supports exchange-and-
 * collect.  The adapter's `pending` bitmap (RAM-address numbering, written
 * by the migration thread only) completes it into manual protect: sync
 * moves the block's marks from the region into pending and ORs pending
 * into collected; clear removes masked pages from pending.  A mark made
 * after the exchange stays in the region for the next sync.
 */
#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/dirty-log-combined.h"
#include "migram/migram.h"
#include "migram/soft-log.h"
#include "dirty-log-internal.h"

#define MAX_CHILDREN 32u
#define PAGE MIGRAM_TARGET_PAGE_SIZE

typedef struct {
	uint64_t pages;            /* max_length / 4 KiB */
	unsigned long *scratch;    /* one clear mask at a time */
	unsigned long *reported[]; /* per child */
} CombinedBlock;

struct MigramCombinedLog {
	MigramLogSource *children;
	unsigned int n;
	GHashTable *blocks; /* MigramRamBlock * -> CombinedBlock * */
};

static void combined_block_free(gpointer p)
{
	CombinedBlock *cb = p;

	if (!cb)
		return;
	migram_bitmap_free(cb->scratch);
	for (uint64_t i = 0; cb->reported[i]; i++)
		migram_bitmap_free(cb->reported[i]);
	g_free(cb);
}

MIGRAM_EXPORT MigramCombinedLog *
migram_combined_log_new(const MigramLogSource *children, unsigned int n,
			GError **error)
{
	MigramCombinedLog *log;

	if (!children || n == 0 || n > MAX_CHILDREN) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "combined dirty log: %u children (%s); 1 to %u "
			    "are allowed",
			    n, children ? "given" : "NULL array", MAX_CHILDREN);
		return NULL;
	}
	for (unsigned int i = 0; i < n; i++) {
		const MigramLogSourceOps *o = children[i].ops;

		if (!o || !o->start || !o->sync || !o->clear || !o->stop) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
				    "combined dirty log: child %u has no "
				    "operations (or lacks one)",
				    i);
			return NULL;
		}
	}
	log = g_new0(MigramCombinedLog, 1);
	log->children = g_memdup2(children, sizeof(*children) * n);
	log->n = n;
	log->blocks = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL,
					    combined_block_free);
	return log;
}

MIGRAM_EXPORT void migram_combined_log_free(MigramCombinedLog *log)
{
	if (!log)
		return;
	g_hash_table_unref(log->blocks);
	g_free(log->children);
	g_free(log);
}

static CombinedBlock *combined_block_new(unsigned int n, uint64_t pages)
{
	/* n + 1 pointers: the array ends with NULL for the free. */
	CombinedBlock *cb =
		g_malloc0(sizeof(*cb) + sizeof(unsigned long *) * (n + 1));

	cb->pages = pages;
	cb->scratch = migram_bitmap_new((size_t)pages);
	for (unsigned int i = 0; cb->scratch && i < n; i++) {
		cb->reported[i] = migram_bitmap_new((size_t)pages);
		if (!cb->reported[i]) {
			combined_block_free(cb);
			return NULL;
		}
	}
	if (!cb->scratch) {
		combined_block_free(cb);
		return NULL;
	}
	return cb;
}

static bool combined_start(void *opaque, MigramRamBlock *b, GError **error)
{
	MigramCombinedLog *log = opaque;
	uint64_t pages = migram_ram_block_max_length(b) / PAGE;
	CombinedBlock *cb = combined_block_new(log->n, pages);

	if (!cb) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "combined dirty log: no memory for the bitmaps of "
			    "ramblock '%s'",
			    migram_ram_block_idstr(b));
		return false;
	}
	for (unsigned int i = 0; i < log->n; i++) {
		MigramLogSource *c = &log->children[i];

		if (!c->ops->start(c->opaque, b, error)) {
			while (i--)
				log->children[i].ops->stop(
					log->children[i].opaque, b);
			combined_block_free(cb);
			return false;
		}
	}
	g_hash_table_replace(log->blocks, b, cb);
	return true;
}

static CombinedBlock *lookup(MigramCombinedLog *log, MigramRamBlock *b,
			     GError **error)
{
	CombinedBlock *cb = g_hash_table_lookup(log->blocks, b);

	if (!cb)
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND,
			    "combined dirty log: ramblock '%s' is not started",
			    migram_ram_block_idstr(b));
	return cb;
}

static bool combined_sync(void *opaque, MigramRamBlock *b,
			  unsigned long *collected, uint64_t *newly,
			  GError **error)
{
	MigramCombinedLog *log = opaque;
	CombinedBlock *cb = lookup(log, b, error);
	uint64_t total = 0;

	if (!cb)
		return false;
	for (unsigned int i = 0; i < log->n; i++) {
		MigramLogSource *c = &log->children[i];
		uint64_t n = 0;

		if (!c->ops->sync(c->opaque, b, cb->reported[i], &n, error))
			return false;
		total += migram_bitmap_or_collect(collected, cb->reported[i], 0,
						  (size_t)cb->pages);
	}
	*newly = total;
	return true;
}

static bool combined_clear(void *opaque, MigramRamBlock *b, uint64_t first,
			   uint64_t npages, const unsigned long *mask,
			   GError **error)
{
	MigramCombinedLog *log = opaque;
	CombinedBlock *cb = lookup(log, b, error);
	size_t w0, w1;

	if (!cb)
		return false;
	if (npages == 0)
		return true;
	if (first > cb->pages || npages > cb->pages - first) {
		g_set_error(
			error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			"combined dirty log: clear of pages %" G_GUINT64_FORMAT
			"+%" G_GUINT64_FORMAT " past ramblock '%s'",
			first, npages, migram_ram_block_idstr(b));
		return false;
	}
	/* Whole words; the children look only at [first, first + npages). */
	w0 = (size_t)(first / MIGRAM_BITS_PER_LONG);
	w1 = (size_t)((first + npages - 1) / MIGRAM_BITS_PER_LONG);
	for (unsigned int i = 0; i < log->n; i++) {
		MigramLogSource *c = &log->children[i];
		unsigned long *rep = cb->reported[i];
		unsigned long any = 0;

		for (size_t w = w0; w <= w1; w++) {
			cb->scratch[w] = mask[w] & rep[w];
			any |= cb->scratch[w];
		}
		if (!any)
			continue;
		if (!c->ops->clear(c->opaque, b, first, npages, cb->scratch,
				   error))
			return false;
		migram_bitmap_andnot_atomic(rep, mask, (size_t)first,
					    (size_t)npages);
	}
	return true;
}

static void combined_stop(void *opaque, MigramRamBlock *b)
{
	MigramCombinedLog *log = opaque;

	for (unsigned int i = 0; i < log->n; i++)
		log->children[i].ops->stop(log->children[i].opaque, b);
	g_hash_table_remove(log->blocks, b);
}

static const MigramLogSourceOps combined_ops = {
	.name = "combined",
	.start = combined_start,
	.sync = combined_sync,
	.clear = combined_clear,
	.stop = combined_stop,
};

MIGRAM_EXPORT void migram_combined_log_source(MigramCombinedLog *log,
					      MigramLogSource *source)
{
	source->ops = &combined_ops;
	source->opaque = log;
}

uint64_t migram_combined_log_lost_marks(const MigramLogSource *source)
{
	const MigramCombinedLog *log = source->opaque;
	uint64_t n = 0;

	if (source->ops != &combined_ops)
		return 0;
	for (unsigned int i = 0; i < log->n; i++)
		n += migram_soft_log_lost_marks(&log->children[i]);
	return n;
}
