/* SPDX-License-Identifier: MIT */
/*
 * migram-bitmap-demo: lock-free dirty tracking under load, verified.
 *
 * Writer threads stand in for vCPUs: each writes "guest pages" (stamps a
 * sequence number into them) and marks them in a MigramDirtyBitmap.  A
 * collector thread stands in for the migration thread: it repeatedly
 * exchange-and-collects the dirty log into its own bitmap and copies each
 * collected page to a "destination" buffer.  After the writers stop, one
 * last collection and copy run, and the destination must equal the source
 * byte for byte: the property a live migration depends on.
 *
 * Exit codes: 0 verified, 1 mismatch or failure, 2 bad usage.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <migram/bitmap.h>
#include <migram/dirty-bitmap.h>
#include <migram/migram.h>

#define PAGE 4096u

typedef struct {
	MigramDirtyBitmap *db;
	guint8 *src;
	uint64_t pages;
	guint32 seed;
	unsigned int index;
	int *stop;
	uint64_t writes;
} Writer;

typedef struct {
	MigramDirtyBitmap *db;
	const guint8 *src;
	guint8 *dst;
	unsigned long *collected;
	uint64_t pages;
	int *stop;
	uint64_t passes;
	uint64_t copied;
} Collector;

static gpointer writer_main(gpointer p)
{
	Writer *w = p;
	GRand *r = g_rand_new_with_seed(w->seed);
	uint64_t hot = MAX(w->pages / 16, 1);

	while (!g_atomic_int_get(w->stop)) {
		/* 80 % of the writes go to a hot 1/16 of memory. */
		uint64_t pfn =
			g_rand_int_range(r, 0, 5)
				? (uint64_t)g_rand_double_range(r, 0, hot)
				: (uint64_t)g_rand_double_range(r, 0, w->pages);
		guint64 stamp = ((guint64)w->index << 56) | ++w->writes;

		/* Write first, then mark: the dirty log's ordering rule. */
		__atomic_store_n((guint64 *)(w->src + pfn * PAGE), stamp,
				 __ATOMIC_RELAXED);
		migram_dirty_bitmap_set_dirty_by_index(w->db, pfn);
	}
	g_rand_free(r);
	return NULL;
}

static uint64_t collect_and_copy(Collector *c)
{
	uint64_t n = 0;
	size_t b;

	migram_dirty_bitmap_collect(c->db, c->collected, 0, c->pages);
	b = migram_bitmap_find_next_set(c->collected, c->pages, 0);
	while (b < c->pages) {
		migram_bitmap_clear_bit(c->collected, b);
		/* The page's stamp word is written atomically by writers. */
		guint64 v = __atomic_load_n(
			(const guint64 *)(c->src + b * PAGE), __ATOMIC_RELAXED);
		memcpy(c->dst + b * PAGE, &v, sizeof(v));
		n++;
		b = migram_bitmap_find_next_set(c->collected, c->pages, b + 1);
	}
	c->passes++;
	c->copied += n;
	return n;
}

static gpointer collector_main(gpointer p)
{
	Collector *c = p;

	while (!g_atomic_int_get(c->stop))
		collect_and_copy(c);
	return NULL;
}

int main(int argc, char **argv)
{
	gint64 pages = 262144; /* 1 GiB of 4 KiB pages */
	gint writers = 2;
	gdouble seconds = 3.0;
	gboolean quiet = FALSE;
	GOptionEntry entries[] = {
		{ "pages", 'p', 0, G_OPTION_ARG_INT64, &pages,
		  "Guest pages of 4 KiB (default 262144 = 1 GiB)", "N" },
		{ "writers", 'w', 0, G_OPTION_ARG_INT, &writers,
		  "Writer threads (default 2)", "N" },
		{ "seconds", 's', 0, G_OPTION_ARG_DOUBLE, &seconds,
		  "How long the writers run (default 3)", "S" },
		{ "quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet,
		  "Print only the report", NULL },
		{ NULL, 0, 0, 0, NULL, NULL, NULL }
	};
	g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
	g_autoptr(GError) error = NULL;
	g_autoptr(MigramDirtyBitmap) db = NULL;
	int stop = 0;
	Collector col;
	GThread *ct, **wt;
	Writer *w;
	uint64_t writes = 0, mismatched = 0;
	gint64 t0, t1;

	g_option_context_set_summary(
		ctx, "Lock-free dirty tracking under concurrent writers, "
		     "collected and verified byte for byte.");
	g_option_context_add_main_entries(ctx, entries, NULL);
	if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
		fprintf(stderr, "migram-bitmap-demo: %s\n", error->message);
		return 2;
	}
	if (pages < 1 || pages > (G_GINT64_CONSTANT(1) << 24) || writers < 1 ||
	    writers > 64 || seconds <= 0 || seconds > 3600) {
		fprintf(stderr, "migram-bitmap-demo: --pages must be 1..2^24, "
				"--writers 1..64, --seconds in (0, 3600]\n");
		return 2;
	}

	db = migram_dirty_bitmap_new(0, (uint64_t)pages * PAGE, PAGE, &error);
	if (!db) {
		fprintf(stderr, "migram-bitmap-demo: %s\n", error->message);
		return 1;
	}
	col = (Collector){ .db = db,
			   .src = g_malloc0((gsize)pages * PAGE),
			   .dst = g_malloc0((gsize)pages * PAGE),
			   .collected = migram_bitmap_new((size_t)pages),
			   .pages = (uint64_t)pages,
			   .stop = &stop };
	w = g_new0(Writer, writers);
	wt = g_new0(GThread *, writers);

	if (!quiet)
		printf("migram %s: %d writer(s) dirtying %" G_GINT64_FORMAT
		       " MiB for %.1f s while a collector drains the log\n",
		       migram_version_string(), writers, pages * PAGE >> 20,
		       seconds);
	t0 = g_get_monotonic_time();
	ct = g_thread_new("collector", collector_main, &col);
	for (int i = 0; i < writers; i++) {
		w[i] = (Writer){ .db = db,
				 .src = (guint8 *)col.src,
				 .pages = (uint64_t)pages,
				 .seed = (guint32)(0x9e3779b9u * (i + 1)),
				 .index = (unsigned int)i,
				 .stop = &stop };
		wt[i] = g_thread_new("writer", writer_main, &w[i]);
	}
	g_usleep((gulong)(seconds * G_USEC_PER_SEC));
	g_atomic_int_set(&stop, 1);
	for (int i = 0; i < writers; i++) {
		g_thread_join(wt[i]);
		writes += w[i].writes;
	}
	g_thread_join(ct);
	/* Writers are stopped: the final pass must bring dst up to date. */
	collect_and_copy(&col);
	t1 = g_get_monotonic_time();

	for (gint64 p = 0; p < pages; p++) {
		if (memcmp(col.src + p * PAGE, col.dst + p * PAGE, 8) != 0)
			mismatched++;
	}

	printf("writes:            %" G_GUINT64_FORMAT " (%.1f M/s)\n", writes,
	       writes / ((t1 - t0) / 1e6) / 1e6);
	printf("collector passes:  %" G_GUINT64_FORMAT "\n", col.passes);
	printf("pages copied:      %" G_GUINT64_FORMAT
	       " (writes coalesced: %.1f%%)\n",
	       col.copied,
	       writes ? 100.0 * (1.0 - (double)col.copied / writes) : 0.0);
	printf("verification:      %s (%" G_GUINT64_FORMAT
	       " of %" G_GINT64_FORMAT " pages differ)\n",
	       mismatched ? "FAILED" : "OK, destination equals source",
	       mismatched, pages);

	g_free((gpointer)col.src);
	g_free(col.dst);
	migram_bitmap_free(col.collected);
	g_free(w);
	g_free(wt);
	return mismatched ? 1 : 0;
}
