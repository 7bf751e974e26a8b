/* SPDX-License-Identifier: MIT */
/*
 * MigramDirtyBitmap: geometry, address mapping, transitions, drains, folds,
 * and the lock-free claim under concurrent writers and a drainer.
 */
#include <string.h>

#include <migram/bitmap.h>
#include <migram/dirty-bitmap.h>
#include <migram/migram.h>

#include "migram-test-util.h"

static void expect_invalid(uint64_t start, uint64_t size, uint64_t page,
			   const char *needle)
{
	g_autoptr(GError) error = NULL;
	MigramDirtyBitmap *db = migram_dirty_bitmap_new(start, size, page,
							&error);

	g_assert_null(db);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	if (!strstr(error->message, needle))
		g_error("message \"%s\" lacks \"%s\"", error->message, needle);
}

static void test_geometry(void)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(MigramDirtyBitmap) db = NULL;

	expect_invalid(0, 4096, 0, "power of two");
	expect_invalid(0, 4096, 3, "power of two");
	expect_invalid(0, 4096, 4097, "power of two");
	expect_invalid(0x1000, 0, 4096, "empty");
	expect_invalid(UINT64_MAX - 10, 100, 4096, "overflows");

	/* The very top of the address space is a valid range. */
	db = migram_dirty_bitmap_new(UINT64_MAX - 4095, 4096, 4096, &error);
	g_assert_no_error(error);
	g_assert_cmpuint(migram_dirty_bitmap_page_count(db), ==, 1);
	g_assert_true(migram_dirty_bitmap_set_dirty(db, UINT64_MAX));
	g_clear_pointer(&db, migram_dirty_bitmap_free);

	/* A partial last page still counts as a page. */
	db = migram_dirty_bitmap_new(0x100000, 10 * 4096 + 1, 4096, &error);
	g_assert_no_error(error);
	g_assert_cmpuint(migram_dirty_bitmap_page_count(db), ==, 11);
	g_assert_cmpuint(migram_dirty_bitmap_page_shift(db), ==, 12);
	g_assert_cmpuint(migram_dirty_bitmap_page_size(db), ==, 4096);
	g_assert_cmpuint(migram_dirty_bitmap_ram_start(db), ==, 0x100000);
	g_assert_cmpuint(migram_dirty_bitmap_ram_size(db), ==, 10 * 4096 + 1);
}

static void test_index_mapping(void)
{
	g_autoptr(MigramDirtyBitmap) db =
		migram_dirty_bitmap_new(0x100000, 10 * 4096 + 1, 4096, NULL);
	uint64_t pfn = 77;

	g_assert_true(migram_dirty_bitmap_page_index_of(db, 0x100000, &pfn));
	g_assert_cmpuint(pfn, ==, 0);
	g_assert_true(migram_dirty_bitmap_page_index_of(db, 0x100fff, &pfn));
	g_assert_cmpuint(pfn, ==, 0);
	g_assert_true(migram_dirty_bitmap_page_index_of(db, 0x101000, &pfn));
	g_assert_cmpuint(pfn, ==, 1);
	/* Last byte: the partial page 10. */
	g_assert_true(migram_dirty_bitmap_page_index_of(
		db, 0x100000 + 10 * 4096, &pfn));
	g_assert_cmpuint(pfn, ==, 10);
	/* One byte either side of the range. */
	pfn = 77;
	g_assert_false(migram_dirty_bitmap_page_index_of(db, 0xfffff, &pfn));
	g_assert_false(migram_dirty_bitmap_page_index_of(
		db, 0x100000 + 10 * 4096 + 1, &pfn));
	g_assert_false(migram_dirty_bitmap_page_index_of(db, 0, NULL));
	g_assert_cmpuint(pfn, ==, 77);
}

/* Debug builds (no G_DISABLE_ASSERT) report a lost mark as a critical. */
static void expect_lost_marks(int n)
{
#ifndef G_DISABLE_ASSERT
	for (int i = 0; i < n; i++)
		g_test_expect_message("migram", G_LOG_LEVEL_CRITICAL,
				      "*outside*write is lost*");
#else
	(void)n;
#endif
}

static void test_transitions(void)
{
	g_autoptr(MigramDirtyBitmap) db =
		migram_dirty_bitmap_new(0x10000, 64 * 4096, 4096, NULL);

	g_assert_false(migram_dirty_bitmap_is_dirty_by_index(db, 5));
	g_assert_true(
		migram_dirty_bitmap_set_dirty(db, 0x10000 + 5 * 4096 + 7));
	g_assert_true(migram_dirty_bitmap_is_dirty_by_index(db, 5));
	/* Idempotent: the second mark is not a transition. */
	g_assert_false(migram_dirty_bitmap_set_dirty(db, 0x10000 + 5 * 4096));
	g_assert_false(migram_dirty_bitmap_set_dirty_by_index(db, 5));
	g_assert_true(migram_dirty_bitmap_set_dirty_by_index(db, 63));
	/* Out of range: nothing marked (and counted: see out-of-range). */
	expect_lost_marks(3);
	g_assert_false(migram_dirty_bitmap_set_dirty(db, 0xffff));
	g_assert_false(migram_dirty_bitmap_set_dirty(db, 0x10000 + 64 * 4096));
	g_assert_false(migram_dirty_bitmap_set_dirty_by_index(db, 64));
	g_test_assert_expected_messages();
	g_assert_false(migram_dirty_bitmap_is_dirty_by_index(db, 64));

	g_autoptr(GArray) pages = migram_dirty_bitmap_drain(db);
	g_assert_cmpuint(pages->len, ==, 2);
	g_assert_cmpuint(g_array_index(pages, guint64, 0), ==, 5);
	g_assert_cmpuint(g_array_index(pages, guint64, 1), ==, 63);
	/* Drained: clean again, and the next mark is a transition again. */
	g_assert_false(migram_dirty_bitmap_is_dirty_by_index(db, 5));
	g_assert_true(migram_dirty_bitmap_set_dirty_by_index(db, 5));
}

static void test_mark_range(void)
{
	/* 100 pages of 4 KiB with a 100-byte partial page at the end. */
	g_autoptr(MigramDirtyBitmap) db =
		migram_dirty_bitmap_new(0, 100 * 4096 + 100, 4096, NULL);
	unsigned long map[2] = { 0 };
	unsigned long *all = migram_bitmap_new(101);

	g_assert_cmpuint(migram_dirty_bitmap_mark_range(db, 4096, 0), ==, 0);
	/* One byte in page 1, then bytes straddling pages 2 and 3. */
	g_assert_cmpuint(migram_dirty_bitmap_mark_range(db, 4096, 1), ==, 1);
	g_assert_cmpuint(migram_dirty_bitmap_mark_range(db, 3 * 4096 - 1, 2),
			 ==, 2);
	/* Overlap with page 3 already dirty: only page 4 is new. */
	g_assert_cmpuint(migram_dirty_bitmap_mark_range(db, 3 * 4096, 4097), ==,
			 1);
	/* Past the end: clamped to pages 98..100. */
	g_assert_cmpuint(migram_dirty_bitmap_mark_range(db, 98 * 4096,
							UINT64_MAX),
			 ==, 3);
	g_assert_cmpuint(migram_dirty_bitmap_mark_range(db, 100 * 4096 + 100,
							4096),
			 ==, 0);
	g_assert_cmpuint(migram_dirty_bitmap_collect(db, all, 0, 1000), ==, 7);
	migram_test_assert_ranges(all, 101, "1-4,98-100");
	g_assert_cmpuint(migram_dirty_bitmap_collect(db, map, 0, 101), ==, 0);

	/* A range across a word boundary, counted once. */
	g_assert_cmpuint(migram_dirty_bitmap_mark_range(db, 60 * 4096,
							10 * 4096),
			 ==, 10);
	g_assert_cmpuint(migram_dirty_bitmap_collect(db, map, 62, 4), ==, 4);
	migram_test_assert_ranges(map, 101, "62-65");
	g_assert_cmpuint(migram_dirty_bitmap_collect(db, map, 0, 101), ==, 6);
	migram_test_assert_ranges(map, 101, "60-69");
	migram_bitmap_free(all);
}

static void collect_pfn(uint64_t pfn, void *opaque)
{
	g_array_append_val((GArray *)opaque, pfn);
}

static void test_drain_equal(void)
{
	GRand *r = g_rand_new_with_seed(g_test_rand_int());

	for (int round = 0; round < 50; round++) {
		uint64_t size = (uint64_t)g_rand_int_range(r, 1, 5000) * 512;
		g_autoptr(MigramDirtyBitmap) a =
			migram_dirty_bitmap_new(0, size, 512, NULL);
		g_autoptr(MigramDirtyBitmap) b =
			migram_dirty_bitmap_new(0, size, 512, NULL);
		uint64_t pages = migram_dirty_bitmap_page_count(a);
		g_autoptr(GArray) via_cb = g_array_new(FALSE, FALSE, 8);
		g_autoptr(GArray) via_array = NULL;
		uint64_t n;

		for (int i = 0; i < g_rand_int_range(r, 0, 300); i++) {
			uint64_t p = (uint64_t)g_rand_int_range(r, 0,
								(gint32)pages);

			migram_dirty_bitmap_set_dirty_by_index(a, p);
			migram_dirty_bitmap_set_dirty_by_index(b, p);
		}
		via_array = migram_dirty_bitmap_drain(a);
		n = migram_dirty_bitmap_drain_into(b, collect_pfn, via_cb);
		g_assert_cmpuint(n, ==, via_cb->len);
		g_assert_cmpuint(via_array->len, ==, via_cb->len);
		g_assert_cmpmem(via_array->data, via_array->len * 8,
				via_cb->data, via_cb->len * 8);
		for (guint i = 1; i < via_cb->len; i++)
			g_assert_cmpuint(g_array_index(via_cb, guint64, i - 1),
					 <, g_array_index(via_cb, guint64, i));
		/* Both are clean now. */
		g_assert_cmpuint(migram_dirty_bitmap_drain_into(a, collect_pfn,
								via_cb),
				 ==, 0);
		g_clear_pointer(&via_array, g_array_unref);
		via_array = migram_dirty_bitmap_drain(b);
		g_assert_cmpuint(via_array->len, ==, 0);
	}
	g_rand_free(r);
}

static void test_fold_into_finer(void)
{
	static const struct {
		uint64_t coarse, fine, size;
	} cases[] = {
		{ 8192, 4096, 1 << 20 },
		{ 2 << 20, 4096, (64 << 20) + 12345 }, /* 512:1, partial end */
		{ 1 << 16, 1 << 13, 3 * (1 << 16) + 1 },
		{ 1 << 30, 1 << 21, 5ULL << 30 },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autoptr(GError) error = NULL;
		g_autoptr(MigramDirtyBitmap) c = migram_dirty_bitmap_new(
			0x40000000, cases[i].size, cases[i].coarse, NULL);
		g_autoptr(MigramDirtyBitmap) f = migram_dirty_bitmap_new(
			0x40000000, cases[i].size, cases[i].fine, NULL);
		uint64_t cn = migram_dirty_bitmap_page_count(c);
		uint64_t fn = migram_dirty_bitmap_page_count(f);
		uint64_t ratio = cases[i].coarse / cases[i].fine;
		unsigned long *want = migram_bitmap_new(fn);
		unsigned long *got = migram_bitmap_new(fn);

		/* Dirty the first, one middle and the last coarse page. */
		uint64_t dirty[] = { 0, cn / 2, cn - 1 };
		for (size_t d = 0; d < G_N_ELEMENTS(dirty); d++) {
			uint64_t first = dirty[d] * ratio;

			migram_dirty_bitmap_set_dirty_by_index(c, dirty[d]);
			migram_bitmap_set(want, first, MIN(ratio, fn - first));
		}
		/* A fine page already dirty stays dirty. */
		migram_dirty_bitmap_set_dirty_by_index(f, fn / 3);
		migram_bitmap_set_bit(want, fn / 3);

		g_assert_true(
			migram_dirty_bitmap_fold_into_finer(c, f, &error));
		g_assert_no_error(error);
		migram_dirty_bitmap_collect(f, got, 0, fn);
		g_assert_cmpmem(got, MIGRAM_BITS_TO_LONGS(fn) * sizeof(long),
				want, MIGRAM_BITS_TO_LONGS(fn) * sizeof(long));
		/* The coarse bitmap is only read. */
		g_assert_true(migram_dirty_bitmap_is_dirty_by_index(c, cn - 1));
		migram_bitmap_free(want);
		migram_bitmap_free(got);
	}
}

static void test_fold_errors(void)
{
	g_autoptr(MigramDirtyBitmap) c = migram_dirty_bitmap_new(0, 1 << 20,
								 8192, NULL);
	g_autoptr(MigramDirtyBitmap) same = migram_dirty_bitmap_new(0, 1 << 20,
								    8192, NULL);
	g_autoptr(MigramDirtyBitmap) other =
		migram_dirty_bitmap_new(4096, 1 << 20, 4096, NULL);
	g_autoptr(MigramDirtyBitmap) shorter =
		migram_dirty_bitmap_new(0, 1 << 19, 4096, NULL);
	GError *error = NULL;

	g_assert_false(migram_dirty_bitmap_fold_into_finer(c, same, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	g_assert_false(migram_dirty_bitmap_fold_into_finer(c, other, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	g_assert_false(migram_dirty_bitmap_fold_into_finer(c, shorter, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	/* Coarser into finer only: the reverse direction is refused. */
	g_assert_false(migram_dirty_bitmap_fold_into_finer(shorter, c, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
}

/*
 * Concurrency: writers mark random pages while a drainer drains.  Each
 * writer records what it wrote and how many marks were transitions; at the
 * end the union of all drains equals the union of all writes, no drain
 * reports a page twice, and every clean-to-dirty transition was reported by
 * exactly one drain (sum of transitions == sum of reports).
 */
#define N_WRITERS 4
#define STRESS_PAGES (1u << 16)

typedef struct {
	MigramDirtyBitmap *db;
	unsigned long *written; /* per-writer, plain */
	guint32 seed;
	unsigned int ops;
	uint64_t transitions;
} Writer;

typedef struct {
	MigramDirtyBitmap *db;
	unsigned long *drained;
	int stop;
	uint64_t reports;
	uint64_t drains;
	uint64_t last; /* within one drain: the previous page reported */
	bool first;
} Drainer;

static gpointer writer_main(gpointer p)
{
	Writer *w = p;
	GRand *r = g_rand_new_with_seed(w->seed);

	for (unsigned int i = 0; i < w->ops; i++) {
		uint64_t pfn;

		/* Mostly a hot set, so that marks often collide. */
		if (g_rand_int_range(r, 0, 4))
			pfn = (uint64_t)g_rand_int_range(r, 0, 512);
		else
			pfn = (uint64_t)g_rand_int_range(r, 0, STRESS_PAGES);
		migram_bitmap_set_bit(w->written, pfn);
		if (g_rand_boolean(r))
			w->transitions +=
				migram_dirty_bitmap_set_dirty_by_index(w->db,
								       pfn);
		else
			w->transitions += migram_dirty_bitmap_mark_range(
				w->db, pfn * 4096 + 5, 1);
	}
	g_rand_free(r);
	return NULL;
}

static void drained_page(uint64_t pfn, void *opaque)
{
	Drainer *d = opaque;

	if (!d->first && pfn <= d->last)
		g_error("drain reported page %" G_GUINT64_FORMAT
			" after %" G_GUINT64_FORMAT,
			pfn, d->last);
	d->first = false;
	d->last = pfn;
	migram_bitmap_set_bit(d->drained, pfn);
	d->reports++;
}

static void drain_once(Drainer *d)
{
	d->first = true;
	migram_dirty_bitmap_drain_into(d->db, drained_page, d);
	d->drains++;
}

static gpointer drainer_main(gpointer p)
{
	Drainer *d = p;

	while (!g_atomic_int_get(&d->stop))
		drain_once(d);
	return NULL;
}

static void test_concurrent_drain(void)
{
	g_autoptr(MigramDirtyBitmap) db = migram_dirty_bitmap_new(
		0, (uint64_t)STRESS_PAGES * 4096, 4096, NULL);
	Writer w[N_WRITERS];
	GThread *wt[N_WRITERS];
	Drainer d = { .db = db, .drained = migram_bitmap_new(STRESS_PAGES) };
	GThread *dt;
	unsigned long *written = migram_bitmap_new(STRESS_PAGES);
	uint64_t transitions = 0;

	dt = g_thread_new("drainer", drainer_main, &d);
	for (int i = 0; i < N_WRITERS; i++) {
		w[i] = (Writer){ .db = db,
				 .written = migram_bitmap_new(STRESS_PAGES),
				 .seed = g_test_rand_int(),
				 .ops = migram_test_scale(1000000) };
		wt[i] = g_thread_new("writer", writer_main, &w[i]);
	}
	for (int i = 0; i < N_WRITERS; i++)
		g_thread_join(wt[i]);
	g_atomic_int_set(&d.stop, 1);
	g_thread_join(dt);
	drain_once(&d); /* the final drain */

	for (int i = 0; i < N_WRITERS; i++) {
		for (size_t k = 0; k < MIGRAM_BITS_TO_LONGS(STRESS_PAGES); k++)
			written[k] |= w[i].written[k];
		transitions += w[i].transitions;
		migram_bitmap_free(w[i].written);
	}
	g_test_message("%" G_GUINT64_FORMAT " drains, %" G_GUINT64_FORMAT
		       " pages reported",
		       d.drains, d.reports);
	g_assert_cmpmem(d.drained,
			MIGRAM_BITS_TO_LONGS(STRESS_PAGES) * sizeof(long),
			written,
			MIGRAM_BITS_TO_LONGS(STRESS_PAGES) * sizeof(long));
	g_assert_cmpuint(d.reports, ==, transitions);
	g_assert_cmpuint(d.drains, >, 1);
	migram_bitmap_free(written);
	migram_bitmap_free(d.drained);
}

/*
 * A mark outside the bitmap is not "already dirty": a distinct result, a
 * counter, and a critical in debug builds.
 */
static void test_out_of_range(void)
{
	g_autoptr(MigramDirtyBitmap) db =
		migram_dirty_bitmap_new(0x10000, 64 * 4096, 4096, NULL);

	g_assert_cmpint(migram_dirty_bitmap_mark(db, 0x10000), ==,
			MIGRAM_MARK_NEWLY_DIRTY);
	g_assert_cmpint(migram_dirty_bitmap_mark(db, 0x10000 + 4095), ==,
			MIGRAM_MARK_ALREADY_DIRTY);
	g_assert_cmpint(migram_dirty_bitmap_mark_by_index(db, 63), ==,
			MIGRAM_MARK_NEWLY_DIRTY);
	g_assert_cmpuint(migram_dirty_bitmap_out_of_range_marks(db), ==, 0);
	expect_lost_marks(4);
	/* Below the range, past it, and across a hole by a whole GiB. */
	g_assert_cmpint(migram_dirty_bitmap_mark(db, 0xffff), ==,
			MIGRAM_MARK_OUT_OF_RANGE);
	g_assert_cmpint(migram_dirty_bitmap_mark(db, 0x10000 + 64 * 4096), ==,
			MIGRAM_MARK_OUT_OF_RANGE);
	g_assert_cmpint(migram_dirty_bitmap_mark_by_index(db, 64), ==,
			MIGRAM_MARK_OUT_OF_RANGE);
	/* The bool API keeps its answer, and counts too. */
	g_assert_false(migram_dirty_bitmap_set_dirty(db, UINT64_C(1) << 32));
	g_test_assert_expected_messages();
	g_assert_cmpuint(migram_dirty_bitmap_out_of_range_marks(db), ==, 4);
	g_assert_cmpuint(migram_dirty_bitmap_out_of_range_marks(NULL), ==, 0);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/bitmap/dirty-bitmap/geometry", test_geometry);
	g_test_add_func("/bitmap/dirty-bitmap/index-mapping",
			test_index_mapping);
	g_test_add_func("/bitmap/dirty-bitmap/transitions", test_transitions);
	g_test_add_func("/bitmap/dirty-bitmap/mark-range", test_mark_range);
	g_test_add_func("/bitmap/dirty-bitmap/drain-equal", test_drain_equal);
	g_test_add_func("/bitmap/dirty-bitmap/fold-into-finer",
			test_fold_into_finer);
	g_test_add_func("/bitmap/dirty-bitmap/fold-errors", test_fold_errors);
	g_test_add_func("/bitmap/dirty-bitmap/concurrent-drain",
			test_concurrent_drain);
	g_test_add_func("/bitmap/dirty-bitmap/out-of-range", test_out_of_range);
	return g_test_run();
}
