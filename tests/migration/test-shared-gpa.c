/* SPDX-License-Identifier: MIT */
/*
 * The guest-physical shared-log adapter (dirty-log-combined.h): a
 * vhost-user style log numbered by guest-physical page, translated through
 * a guest layout into a block that is mapped at two ranges around a hole.
 */
#include <string.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/dirty-log-combined.h>
#include <migram/guest-layout.h>
#include <migram/migram.h>
#include <migram/ramblock.h>
#include <migram/shared-log.h>

#include "migram-test-util.h"

#define P UINT64_C(4096)
/*
 * Block "pc.ram" has 384 pages.  Guest-physical [0, 256 pages) is block
 * pages [0, 256); a hole of 64 pages follows (the "PCI hole"); [320, 448)
 * is block pages [256, 384).  The log covers 512 guest pages.
 */
#define BLOCK_PAGES 384u
#define LOW_PAGES 256u
#define HIGH_GPA_PAGE 320u
#define GPA_PAGES 512u

typedef struct {
	MigramRamList *list;
	MigramRamBlock *block;
	MigramGuestLayout *layout;
	MigramLogRegion *region; /* owned by sl */
	MigramSharedLog *sl;
	MigramSharedLogAdapter *a;
	MigramLogSource src;
} Fixture;

static void fx_set_up(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;

	(void)data;
	f->list = migram_ram_list_new();
	f->block = migram_ram_list_add(f->list,
				       &(MigramRamBlockConfig){
					       .idstr = "pc.ram",
					       .used_length = BLOCK_PAGES * P },
				       &error);
	g_assert_no_error(error);
	f->layout = migram_guest_layout_new(NULL);
	g_assert_true(migram_guest_layout_map(f->layout, 0, LOW_PAGES * P,
					      f->block, 0, &error));
	g_assert_true(migram_guest_layout_map(f->layout, HIGH_GPA_PAGE * P,
					      (BLOCK_PAGES - LOW_PAGES) * P,
					      f->block, LOW_PAGES * P, &error));
	f->region = migram_log_region_new(GPA_PAGES * P, &error);
	g_assert_no_error(error);
	f->sl = migram_shared_log_new(f->region);
	f->a = migram_shared_log_adapter_new_gpa(f->sl, f->layout,
						 GPA_PAGES * P, &error);
	g_assert_no_error(error);
	migram_shared_log_adapter_source(f->a, &f->src);
}

static void fx_tear_down(Fixture *f, gconstpointer data)
{
	(void)data;
	migram_shared_log_adapter_free(f->a);
	migram_shared_log_free(f->sl);
	migram_guest_layout_free(f->layout);
	migram_ram_list_free(f->list);
}

static void sync_into(Fixture *f, unsigned long *c, uint64_t *n)
{
	g_autoptr(GError) error = NULL;

	g_assert_true(f->src.ops->sync(f->src.opaque, f->block, c, n, &error));
	g_assert_no_error(error);
}

/* Marks land at their block offsets on both sides of the hole; a sync
 * repeats them until their clear; a mark after the sync survives it. */
static void test_translate(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	unsigned long *c = migram_bitmap_new(BLOCK_PAGES);
	unsigned long *mask = migram_bitmap_new(BLOCK_PAGES);
	uint64_t n = 0;

	(void)data;
	g_assert_cmpstr(f->src.ops->name, ==, "shared-gpa");
	g_assert_true(f->src.ops->start(f->src.opaque, f->block, &error));
	migram_log_region_mark(f->region, 5 * P, 1);
	migram_log_region_mark(f->region, 255 * P, 1);
	/* gpa page 320 is block page 256; 447 is 383, the last */
	migram_log_region_mark(f->region, 320 * P, 2 * P);
	migram_log_region_mark(f->region, 447 * P, 1);
	sync_into(f, c, &n);
	migram_test_assert_ranges(c, BLOCK_PAGES, "5,255-257,383");
	g_assert_cmpuint(n, ==, 5);
	/* still pending: reported again */
	migram_bitmap_clear(c, 0, BLOCK_PAGES);
	sync_into(f, c, &n);
	migram_test_assert_ranges(c, BLOCK_PAGES, "5,255-257,383");
	/* a new mark of block page 256 before the clear of the collected
	 * set: the clear removes the pending bit, the new mark is still in
	 * the region */
	migram_log_region_mark(f->region, 320 * P, 1);
	migram_bitmap_copy(mask, c, BLOCK_PAGES);
	g_assert_true(f->src.ops->clear(f->src.opaque, f->block, 0, BLOCK_PAGES,
					mask, &error));
	migram_bitmap_clear(c, 0, BLOCK_PAGES);
	sync_into(f, c, &n);
	migram_test_assert_ranges(c, BLOCK_PAGES, "256");
	/* a clear window re-arms only inside it */
	migram_log_region_mark(f->region, 6 * P, 1);
	migram_log_region_mark(f->region, 321 * P, 1);
	migram_bitmap_clear(c, 0, BLOCK_PAGES);
	sync_into(f, c, &n);
	migram_test_assert_ranges(c, BLOCK_PAGES, "6,256-257");
	migram_bitmap_copy(mask, c, BLOCK_PAGES);
	g_assert_true(f->src.ops->clear(f->src.opaque, f->block, 256, 64, mask,
					&error));
	migram_bitmap_clear(c, 0, BLOCK_PAGES);
	sync_into(f, c, &n);
	migram_test_assert_ranges(c, BLOCK_PAGES, "6");
	f->src.ops->stop(f->src.opaque, f->block);
	migram_bitmap_free(c);
	migram_bitmap_free(mask);
}

/* A mark in the hole never reaches a sync and is counted, not dropped in
 * silence; a mapped mark taken by the same call stays pending. */
static void test_unmapped(Fixture *f, gconstpointer data)
{
	unsigned long *c = migram_bitmap_new(BLOCK_PAGES);
	uint64_t n = 0;

	(void)data;
	migram_log_region_mark(f->region, 260 * P, 3 * P); /* the hole */
	migram_log_region_mark(f->region, 480 * P, 1);     /* past the RAM */
	migram_log_region_mark(f->region, 7 * P, 1);
	sync_into(f, c, &n);
	migram_test_assert_ranges(c, BLOCK_PAGES, "7");
	migram_log_region_mark(f->region, 8 * P, 1);
	g_assert_cmpuint(migram_shared_log_adapter_take_unmapped(f->a), ==, 4);
	g_assert_cmpuint(migram_shared_log_adapter_take_unmapped(f->a), ==, 0);
	migram_bitmap_clear(c, 0, BLOCK_PAGES);
	sync_into(f, c, &n);
	migram_test_assert_ranges(c, BLOCK_PAGES, "7-8");
	/* a RAM-address adapter has no layout: nothing to count */
	g_assert_cmpuint(migram_shared_log_adapter_take_unmapped(NULL), ==, 0);
	migram_bitmap_free(c);
}

static void test_bad_input(Fixture *f, gconstpointer data)
{
	GError *error = NULL;
	MigramSharedLogAdapter *a;
	MigramLogSource src;

	(void)data;
	g_assert_null(migram_shared_log_adapter_new_gpa(f->sl, NULL,
							GPA_PAGES * P, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(error->message, "layout"));
	g_clear_error(&error);
	g_assert_null(migram_shared_log_adapter_new_gpa(NULL, f->layout,
							GPA_PAGES * P, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	g_assert_null(
		migram_shared_log_adapter_new_gpa(f->sl, f->layout, 0, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	/* a log smaller than the layout: start names the block */
	a = migram_shared_log_adapter_new_gpa(f->sl, f->layout, 400 * P,
					      &error);
	g_assert_no_error(error);
	migram_shared_log_adapter_source(a, &src);
	g_assert_false(src.ops->start(src.opaque, f->block, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(error->message, "'pc.ram'"));
	g_assert_nonnull(strstr(error->message, "passes"));
	g_clear_error(&error);
	migram_shared_log_adapter_free(a);
}

/* ---- stress: marks from many threads, syncs and clears meanwhile ---- */

#define WRITERS 6
#define MARKS 20000

typedef struct {
	Fixture *f;
	unsigned long *marked; /* by block page, atomic */
	guint64 *mem;          /* the "guest memory": a stamp per page */
	guint64 *stamp;        /* atomic, shared */
	guint seed;
	int *go;
	int *finished; /* atomic count */
} Writer;

static guint block_page_of_gpa(guint gp)
{
	return gp < LOW_PAGES ? gp : gp - HIGH_GPA_PAGE + LOW_PAGES;
}

static gpointer writer_main(gpointer p)
{
	Writer *w = p;
	GRand *r = g_rand_new_with_seed(w->seed);

	while (!g_atomic_int_get(w->go))
		;
	for (int i = 0; i < MARKS; i++) {
		guint bp = (guint)g_rand_int_range(r, 0, BLOCK_PAGES);
		guint gp = bp < LOW_PAGES ? bp : bp - LOW_PAGES + HIGH_GPA_PAGE;

		g_assert_cmpuint(block_page_of_gpa(gp), ==, bp);
		/* write the page, then mark it (the device's order) */
		__atomic_store_n(&w->mem[bp],
				 __atomic_add_fetch(w->stamp, 1,
						    __ATOMIC_RELAXED),
				 __ATOMIC_RELAXED);
		migram_bitmap_set_bit_atomic(w->marked, bp);
		migram_log_region_mark(w->f->region, (uint64_t)gp * P, 1);
	}
	/* a last wave, each page once, paced so that syncs and clears run
	 * between the marks: a pending mark a clear wipes is never made
	 * again, so the destination keeps its old stamp */
	for (guint bp = w->seed % WRITERS; bp < BLOCK_PAGES; bp += WRITERS) {
		guint gp = bp < LOW_PAGES ? bp : bp - LOW_PAGES + HIGH_GPA_PAGE;

		__atomic_store_n(&w->mem[bp],
				 __atomic_add_fetch(w->stamp, 1,
						    __ATOMIC_RELAXED),
				 __ATOMIC_RELAXED);
		migram_log_region_mark(w->f->region, (uint64_t)gp * P, 1);
		if (bp % 4 == 0)
			g_usleep(50);
	}
	g_rand_free(r);
	g_atomic_int_inc(w->finished);
	return NULL;
}

static void or_into(unsigned long *dst, const unsigned long *src)
{
	for (guint i = 0; i < BLOCK_PAGES; i++)
		if (migram_bitmap_test_bit(src, i))
			migram_bitmap_set_bit(dst, i);
}

/*
 * Precopy in miniature while six threads write and mark: the collector
 * syncs, re-arms exactly what it collected, then copies those pages'
 * stamps to its "destination".  After the writers stop and one last pass,
 * the destination equals the memory stamp for stamp (a mark lost to a
 * clear would leave an old stamp), and the union of the syncs equals the
 * set of pages marked bit for bit (nothing reported that no one marked).
 */
static void test_stress(Fixture *f, gconstpointer data)
{
	unsigned long *marked = migram_bitmap_new(BLOCK_PAGES);
	unsigned long *seen = migram_bitmap_new(BLOCK_PAGES);
	unsigned long *c = migram_bitmap_new(BLOCK_PAGES);
	guint64 *mem = g_new0(guint64, BLOCK_PAGES);
	guint64 *dst = g_new0(guint64, BLOCK_PAGES);
	guint64 stamp = 0;
	GThread *t[WRITERS];
	Writer w[WRITERS];
	int go = 0, finished = 0, rounds = 0;
	guint first, npages;
	uint64_t n;

	(void)data;
	for (int i = 0; i < WRITERS; i++) {
		w[i] = (Writer){ f,   marked,   mem, &stamp, 1000u + (guint)i,
				 &go, &finished };
		t[i] = g_thread_new("gpa-writer", writer_main, &w[i]);
	}
	g_atomic_int_set(&go, 1);
	do {
		g_autoptr(GError) error = NULL;
		bool last = g_atomic_int_get(&finished) == WRITERS;

		migram_bitmap_clear(c, 0, BLOCK_PAGES);
		sync_into(f, c, &n);
		or_into(seen, c);
		rounds++;
		/* re-arm what was collected in one 64-page chunk (the
		 * sender's clear_bmap chunks; the last pass takes all), then
		 * send those pages: the rest stays pending */
		first = last ? 0 : (guint)(rounds % (BLOCK_PAGES / 64)) * 64;
		npages = last ? BLOCK_PAGES : 64;
		g_assert_true(f->src.ops->clear(f->src.opaque, f->block, first,
						npages, c, &error));
		for (guint i = first; i < first + npages; i++)
			if (migram_bitmap_test_bit(c, i))
				dst[i] = __atomic_load_n(&mem[i],
							 __ATOMIC_RELAXED);
		if (last)
			break;
	} while (true);
	for (int i = 0; i < WRITERS; i++)
		g_thread_join(t[i]);
	g_test_message("%d sync rounds, %zu pages marked", rounds,
		       migram_bitmap_count(marked, 0, BLOCK_PAGES));
	for (guint i = 0; i < BLOCK_PAGES; i++)
		if (migram_bitmap_test_bit(seen, i) !=
		    migram_bitmap_test_bit(marked, i))
			g_error("block page %u: marked %d, reported %d", i,
				migram_bitmap_test_bit(marked, i),
				migram_bitmap_test_bit(seen, i));
	for (guint i = 0; i < BLOCK_PAGES; i++)
		if (dst[i] != mem[i])
			g_error("block page %u: stamp %" G_GUINT64_FORMAT
				" at the source, %" G_GUINT64_FORMAT
				" sent: a mark was lost",
				i, mem[i], dst[i]);
	g_assert_cmpuint(migram_shared_log_adapter_take_unmapped(f->a), ==, 0);
	g_free(mem);
	g_free(dst);
	migram_bitmap_free(marked);
	migram_bitmap_free(seen);
	migram_bitmap_free(c);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	g_test_add("/migration/shared-gpa/translate", Fixture, NULL, fx_set_up,
		   test_translate, fx_tear_down);
	g_test_add("/migration/shared-gpa/unmapped", Fixture, NULL, fx_set_up,
		   test_unmapped, fx_tear_down);
	g_test_add("/migration/shared-gpa/bad-input", Fixture, NULL, fx_set_up,
		   test_bad_input, fx_tear_down);
	g_test_add("/migration/shared-gpa/stress", Fixture, NULL, fx_set_up,
		   test_stress, fx_tear_down);
	return g_test_run();
}
