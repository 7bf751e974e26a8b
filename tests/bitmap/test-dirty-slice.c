/* SPDX-License-Identifier: MIT */
/*
 * The seed 003 view of a dirty bitmap: dirty_at, views at an offset, the
 * no-op view, and that views agree with the bitmap they borrow, also when
 * many threads mark through different views at once.
 */
#include <pthread.h>

#include <migram/dirty-bitmap.h>
#include <migram/dirty-slice.h>
#include <migram/migram.h>

#include "migram-test-util.h"

#define PAGE 4096u

/* vm-memory's range_is_dirty / range_is_clean, byte by byte (stride 512). */
static bool range_dirty(MigramDirtySlice s, uint64_t off, uint64_t len,
			bool dirty)
{
	for (uint64_t o = off; o < off + len; o += 512)
		if (migram_dirty_slice_dirty_at(s, o) != dirty)
			return false;
	return migram_dirty_slice_dirty_at(s, off + len - 1) == dirty;
}

static void test_dirty_at(void)
{
	g_autoptr(MigramDirtyBitmap) db =
		migram_dirty_bitmap_new(0x100000, 10 * PAGE + 1, PAGE, NULL);

	g_assert_false(migram_dirty_bitmap_dirty_at(db, 0));
	g_assert_true(migram_dirty_bitmap_set_dirty(db, 0x100000 + 3 * PAGE));
	/* Every byte of page 3, and nothing either side. */
	g_assert_false(migram_dirty_bitmap_dirty_at(db, 3 * PAGE - 1));
	g_assert_true(migram_dirty_bitmap_dirty_at(db, 3 * PAGE));
	g_assert_true(migram_dirty_bitmap_dirty_at(db, 4 * PAGE - 1));
	g_assert_false(migram_dirty_bitmap_dirty_at(db, 4 * PAGE));
	/* The partial last page: its one byte, and past it clean. */
	g_assert_cmpuint(migram_dirty_bitmap_mark_range(db, 10 * PAGE, 100), ==,
			 1);
	g_assert_true(migram_dirty_bitmap_dirty_at(db, 10 * PAGE));
	g_assert_false(migram_dirty_bitmap_dirty_at(db, 10 * PAGE + 1));
	g_assert_false(migram_dirty_bitmap_dirty_at(db, UINT64_MAX));
	/* The no-op bitmap. */
	g_assert_false(migram_dirty_bitmap_dirty_at(NULL, 0));
}

static void test_slice(void)
{
	g_autoptr(MigramDirtyBitmap) db = migram_dirty_bitmap_new(0, 64 * PAGE,
								  PAGE, NULL);
	MigramDirtySlice s = migram_dirty_bitmap_slice_at(db, 8 * PAGE + 100);
	MigramDirtySlice t;

	g_assert_false(migram_dirty_slice_is_noop(s));
	g_assert_true(range_dirty(s, 0, 8 * PAGE, false));
	/* Bytes [100, 200) of the view are bytes of page 8 of the bitmap. */
	g_assert_cmpuint(migram_dirty_slice_mark(s, 0, 100), ==, 1);
	g_assert_true(migram_dirty_bitmap_is_dirty_by_index(db, 8));
	g_assert_true(migram_dirty_slice_dirty_at(s, 0));
	g_assert_true(migram_dirty_slice_dirty_at(s, PAGE - 101));
	g_assert_false(migram_dirty_slice_dirty_at(s, PAGE - 100));
	/* Across a page boundary of the bitmap: pages 9 and 10. */
	g_assert_cmpuint(migram_dirty_slice_mark(s, 2 * PAGE - 200, 200), ==,
			 2);
	g_assert_true(range_dirty(migram_dirty_bitmap_slice_at(db, 9 * PAGE), 0,
				  2 * PAGE, true));
	g_assert_cmpuint(migram_dirty_slice_mark(s, 0, 0), ==, 0);
	/* A view of a view. */
	t = migram_dirty_slice_at(s, 30 * PAGE - 100);
	g_assert_cmpuint(t.base, ==, 38 * PAGE);
	g_assert_cmpuint(migram_dirty_slice_mark(t, 1, 1), ==, 1);
	g_assert_true(migram_dirty_bitmap_is_dirty_by_index(db, 38));
	/* Past the end: clamped like mark_range, reads clean. */
	t = migram_dirty_bitmap_slice_at(db, 63 * PAGE);
	g_assert_cmpuint(migram_dirty_slice_mark(t, 0, 10 * PAGE), ==, 1);
	g_assert_cmpuint(migram_dirty_slice_mark(t, PAGE, 10), ==, 0);
	g_assert_false(migram_dirty_slice_dirty_at(t, PAGE));
	/* Offsets that would wrap past 2^64 saturate: nothing marked. */
	t = migram_dirty_slice_at(t, UINT64_MAX);
	g_assert_cmpuint(t.base, ==, UINT64_MAX);
	g_assert_cmpuint(migram_dirty_slice_mark(t, 5, PAGE), ==, 0);
	g_assert_cmpuint(migram_dirty_slice_mark(s, UINT64_MAX, PAGE), ==, 0);
	g_assert_false(migram_dirty_slice_dirty_at(s, UINT64_MAX));
	g_assert_cmpuint(migram_dirty_bitmap_out_of_range_marks(db), ==, 0);
}

static void test_noop(void)
{
	MigramDirtySlice n = migram_dirty_slice_noop();
	MigramDirtySlice m = migram_dirty_bitmap_slice_at(NULL, 4096);

	g_assert_true(migram_dirty_slice_is_noop(n));
	g_assert_true(migram_dirty_slice_is_noop(m));
	g_assert_cmpuint(m.base, ==, 0);
	g_assert_cmpuint(migram_dirty_slice_mark(n, 0, UINT64_MAX), ==, 0);
	g_assert_false(migram_dirty_slice_dirty_at(n, 0));
	n = migram_dirty_slice_at(n, 12345);
	g_assert_true(migram_dirty_slice_is_noop(n));
	g_assert_cmpuint(n.base, ==, 0);
	g_assert_false(migram_dirty_slice_dirty_at(n, 0));
}

typedef struct {
	MigramDirtySlice view;
	unsigned int seed;
	unsigned long *expect; /* this thread's own marks, 64 * PAGE bits */
} Marker;

#define STRESS_PAGES 4096u
#define STRESS_THREADS 8

static void *marker(void *opaque)
{
	Marker *mk = opaque;
	GRand *r = g_rand_new_with_seed(mk->seed);
	unsigned int n = migram_test_scale(20000);

	for (unsigned int i = 0; i < n; i++) {
		/* Each thread's view starts at its own page; offsets spill
		 * into the other threads' pages on purpose. */
		uint64_t off = g_rand_int_range(r, 0, STRESS_PAGES / 2) *
			       (uint64_t)PAGE;
		uint64_t len = g_rand_int_range(r, 1, 3 * PAGE);
		uint64_t first = (mk->view.base + off) / PAGE;
		uint64_t last = (mk->view.base + off + len - 1) / PAGE;

		migram_dirty_slice_mark(mk->view, off, len);
		for (uint64_t p = first; p <= last && p < STRESS_PAGES; p++)
			mk->expect[p / 64] |= 1UL << (p % 64);
	}
	g_rand_free(r);
	return NULL;
}

static void test_concurrent_views(void)
{
	g_autoptr(MigramDirtyBitmap) db =
		migram_dirty_bitmap_new(0, STRESS_PAGES * PAGE, PAGE, NULL);
	pthread_t th[STRESS_THREADS];
	Marker mk[STRESS_THREADS];
	unsigned long want[STRESS_PAGES / 64] = { 0 };

	for (int i = 0; i < STRESS_THREADS; i++) {
		mk[i].view = migram_dirty_bitmap_slice_at(
			db,
			(uint64_t)i * (STRESS_PAGES / STRESS_THREADS) * PAGE);
		mk[i].seed = g_test_rand_int();
		mk[i].expect = g_new0(unsigned long, STRESS_PAGES / 64);
		g_assert_cmpint(pthread_create(&th[i], NULL, marker, &mk[i]),
				==, 0);
	}
	for (int i = 0; i < STRESS_THREADS; i++) {
		pthread_join(th[i], NULL);
		for (unsigned int w = 0; w < STRESS_PAGES / 64; w++)
			want[w] |= mk[i].expect[w];
		g_free(mk[i].expect);
	}
	/* Bit for bit: dirty_at of every page against the union. */
	for (unsigned int p = 0; p < STRESS_PAGES; p++)
		g_assert_cmpint(migram_dirty_bitmap_dirty_at(
					db, (uint64_t)p * PAGE + 7),
				==, !!(want[p / 64] & (1UL << (p % 64))));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/bitmap/dirty-slice/dirty-at", test_dirty_at);
	g_test_add_func("/bitmap/dirty-slice/slice", test_slice);
	g_test_add_func("/bitmap/dirty-slice/noop", test_noop);
	g_test_add_func("/bitmap/dirty-slice/concurrent-views",
			test_concurrent_views);
	return g_test_run();
}
