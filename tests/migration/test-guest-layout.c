/* SPDX-License-Identifier: MIT */
/*
 * MigramGuestLayout: bad input, a block split around a "PCI hole" (two
 * ranges, the upper above 4 GiB), lookups, marks into the software log
 * (across ranges, into holes: reported and counted, never dropped
 * silently), and marks from many threads while another maps and unmaps a
 * range, compared bit for bit with what each mark reported.
 */
#include <string.h>

#include <urcu/urcu-memb.h>

#include <migram/dirty-bitmap.h>
#include <migram/dirty-log.h>
#include <migram/guest-layout.h>
#include <migram/migram.h>
#include <migram/ramblock.h>

#include "migram-test-util.h"

#define P 4096u
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define LOW (6 * MiB)  /* pc.ram below the hole */
#define HIGH (4 * GiB) /* where the rest of pc.ram appears */
#define VGA_GPA 0xfd000000u

typedef struct {
	MigramRamList *list;
	MigramRamBlock *ram, *vga, *extra;
	MigramSoftLog *log;
	MigramDirtyBitmap *db;
	MigramGuestLayout *layout;
} Fx;

static MigramRamBlock *add(MigramRamList *l, const char *id, uint64_t len)
{
	g_autoptr(GError) error = NULL;
	MigramRamBlock *b = migram_ram_list_add(
		l, &(MigramRamBlockConfig){ .idstr = id, .used_length = len },
		&error);

	g_assert_no_error(error);
	return b;
}

static void fx_init(Fx *f)
{
	g_autoptr(GError) error = NULL;

	f->list = migram_ram_list_new();
	f->ram = add(f->list, "pc.ram", 8 * MiB);
	f->vga = add(f->list, "vga.vram", 1 * MiB);
	f->extra = add(f->list, "extra", 1 * MiB);
	f->log = migram_soft_log_new(migram_ram_list_ram_space(f->list),
				     &error);
	g_assert_no_error(error);
	f->db = migram_soft_log_bitmap(f->log);
	f->layout = migram_guest_layout_new(f->log);
	g_assert_true(
		migram_guest_layout_map(f->layout, 0, LOW, f->ram, 0, &error));
	g_assert_true(migram_guest_layout_map(f->layout, HIGH, 8 * MiB - LOW,
					      f->ram, LOW, &error));
	g_assert_true(migram_guest_layout_map(f->layout, VGA_GPA, MiB, f->vga,
					      0, &error));
	g_assert_no_error(error);
}

static void fx_free(Fx *f)
{
	migram_guest_layout_free(f->layout);
	migram_soft_log_free(f->log);
	migram_ram_list_free(f->list);
}

/* Is the page at byte @p off of block @p b dirty in the software log? */
static bool dirty(Fx *f, MigramRamBlock *b, uint64_t off)
{
	return migram_dirty_bitmap_is_dirty_by_index(
		f->db, (migram_ram_block_offset(b) + off) / P);
}

static void expect_map_error(Fx *f, uint64_t gpa, uint64_t size,
			     MigramRamBlock *b, uint64_t off, int code)
{
	g_autoptr(GError) error = NULL;

	g_assert_false(
		migram_guest_layout_map(f->layout, gpa, size, b, off, &error));
	g_assert_error(error, MIGRAM_ERROR, code);
}

static void test_bad_input(void)
{
	g_autoptr(GError) error = NULL;
	MigramRamBlock *b = NULL;
	uint64_t off = 77;
	Fx f;

	fx_init(&f);
	g_assert_false(migram_guest_layout_map(NULL, 0, P, f.ram, 0, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	expect_map_error(&f, 64 * GiB, P, NULL, 0, MIGRAM_ERROR_INVALID);
	expect_map_error(&f, 64 * GiB, 0, f.extra, 0, MIGRAM_ERROR_INVALID);
	expect_map_error(&f, 64 * GiB + 1, P, f.extra, 0, MIGRAM_ERROR_INVALID);
	expect_map_error(&f, 64 * GiB, P + 1, f.extra, 0, MIGRAM_ERROR_INVALID);
	expect_map_error(&f, 64 * GiB, P, f.extra, 1, MIGRAM_ERROR_INVALID);
	expect_map_error(&f, UINT64_MAX - P + 1, 2 * P, f.extra, 0,
			 MIGRAM_ERROR_INVALID);
	/* past the block's max_length */
	expect_map_error(&f, 64 * GiB, 2 * MiB, f.extra, 0,
			 MIGRAM_ERROR_INVALID);
	expect_map_error(&f, 64 * GiB, P, f.extra, MiB, MIGRAM_ERROR_INVALID);
	/* overlaps: inside, across either end, around */
	expect_map_error(&f, P, P, f.extra, 0, MIGRAM_ERROR_EXISTS);
	expect_map_error(&f, LOW - P, 2 * P, f.extra, 0, MIGRAM_ERROR_EXISTS);
	expect_map_error(&f, VGA_GPA - P, 2 * P, f.extra, 0,
			 MIGRAM_ERROR_EXISTS);
	expect_map_error(&f, VGA_GPA - P, 2 * MiB, f.ram, 0,
			 MIGRAM_ERROR_EXISTS);
	/* touching is fine */
	g_assert_true(
		migram_guest_layout_map(f.layout, LOW, P, f.extra, 0, &error));
	g_assert_no_error(error);
	/* unmap */
	g_assert_false(migram_guest_layout_unmap(NULL, 0, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	g_assert_false(migram_guest_layout_unmap(f.layout, LOW + P, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND);
	g_clear_error(&error);
	/* not the start of a range */
	g_assert_false(migram_guest_layout_unmap(f.layout, P, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND);
	g_clear_error(&error);
	g_assert_true(migram_guest_layout_unmap(f.layout, LOW, &error));
	g_assert_false(migram_guest_layout_lookup(f.layout, LOW, &b, &off));
	g_assert_null(b);
	g_assert_cmpuint(off, ==, 77);
	g_assert_cmpuint(migram_guest_layout_out_of_range_marks(NULL), ==, 0);
	/* programming errors: criticals, and nothing marked */
	g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*!= NULL*");
	g_assert_false(migram_guest_layout_lookup(NULL, 0, &b, &off));
	g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*!= NULL*");
	g_assert_cmpint(migram_guest_layout_mark(NULL, 0, 1), ==,
			MIGRAM_MARK_OUT_OF_RANGE);
	g_test_assert_expected_messages();
	migram_guest_layout_free(NULL);
	{
		MigramRamList *empty = migram_ram_list_new();

		g_assert_cmpuint(migram_ram_list_ram_space(empty), ==, 0);
		migram_ram_list_free(empty);
	}
	fx_free(&f);
}

static void test_pci_hole(void)
{
	MigramRamBlock *b;
	uint64_t off;
	Fx f;

	fx_init(&f);
	g_assert_cmpuint(migram_ram_list_ram_space(f.list), ==,
			 migram_ram_block_offset(f.extra) + MiB);
	g_assert_true(migram_guest_layout_lookup(f.layout, 0, &b, &off));
	g_assert_true(b == f.ram);
	g_assert_cmpuint(off, ==, 0);
	g_assert_true(migram_guest_layout_lookup(f.layout, LOW - 1, &b, &off));
	g_assert_cmpuint(off, ==, LOW - 1);
	g_assert_false(migram_guest_layout_lookup(f.layout, LOW, NULL, NULL));
	g_assert_false(
		migram_guest_layout_lookup(f.layout, HIGH - 1, &b, &off));
	g_assert_true(migram_guest_layout_lookup(f.layout, HIGH, &b, &off));
	g_assert_true(b == f.ram);
	g_assert_cmpuint(off, ==, LOW);
	g_assert_true(migram_guest_layout_lookup(f.layout, HIGH + 2 * MiB - 1,
						 &b, &off));
	g_assert_cmpuint(off, ==, 8 * MiB - 1);
	g_assert_false(
		migram_guest_layout_lookup(f.layout, HIGH + 2 * MiB, &b, &off));
	g_assert_true(
		migram_guest_layout_lookup(f.layout, VGA_GPA + 5, &b, &off));
	g_assert_true(b == f.vga);
	g_assert_cmpuint(off, ==, 5);

	/* marks land at the block's RAM address */
	g_assert_cmpint(migram_guest_layout_mark(f.layout, HIGH + P, 8), ==,
			MIGRAM_MARK_NEWLY_DIRTY);
	g_assert_true(dirty(&f, f.ram, LOW + P));
	g_assert_false(dirty(&f, f.ram, P));
	g_assert_cmpint(migram_guest_layout_mark(f.layout, HIGH + P, 8), ==,
			MIGRAM_MARK_ALREADY_DIRTY);
	g_assert_cmpint(migram_guest_layout_mark(f.layout, VGA_GPA, 2 * P), ==,
			MIGRAM_MARK_NEWLY_DIRTY);
	g_assert_true(dirty(&f, f.vga, 0));
	g_assert_true(dirty(&f, f.vga, P));
	g_assert_cmpint(migram_guest_layout_mark(f.layout, 0, 0), ==,
			MIGRAM_MARK_ALREADY_DIRTY);
	g_assert_cmpuint(migram_guest_layout_out_of_range_marks(f.layout), ==,
			 0);
	/* into the hole: the part inside is marked, the call reported */
	g_assert_cmpint(migram_guest_layout_mark(f.layout, LOW - P, 2 * P), ==,
			MIGRAM_MARK_OUT_OF_RANGE);
	g_assert_true(dirty(&f, f.ram, LOW - P));
	g_assert_false(dirty(&f, f.ram, LOW));
	/* from the hole into a range */
	g_assert_cmpint(migram_guest_layout_mark(f.layout, HIGH - P, 2 * P), ==,
			MIGRAM_MARK_OUT_OF_RANGE);
	g_assert_true(dirty(&f, f.ram, LOW));
	/* all in the hole; past everything; the top of memory */
	g_assert_cmpint(migram_guest_layout_mark(f.layout, 5 * GiB, 1), ==,
			MIGRAM_MARK_OUT_OF_RANGE);
	g_assert_cmpint(migram_guest_layout_mark(f.layout, UINT64_MAX, 2), ==,
			MIGRAM_MARK_OUT_OF_RANGE);
	g_assert_cmpuint(migram_guest_layout_out_of_range_marks(f.layout), ==,
			 4);
	/* adjacent ranges of two blocks: one mark across both */
	g_assert_true(
		migram_guest_layout_map(f.layout, LOW, MiB, f.extra, 0, NULL));
	g_assert_cmpint(migram_guest_layout_mark(f.layout, LOW - 2 * P, 4 * P),
			==, MIGRAM_MARK_NEWLY_DIRTY);
	g_assert_true(dirty(&f, f.ram, LOW - 2 * P));
	g_assert_true(dirty(&f, f.extra, 0));
	g_assert_true(dirty(&f, f.extra, P));
	g_assert_false(dirty(&f, f.extra, 2 * P));
	/* a layout without a log only translates and counts */
	{
		g_autoptr(MigramGuestLayout) bare =
			migram_guest_layout_new(NULL);

		g_assert_true(
			migram_guest_layout_map(bare, 0, P, f.ram, 0, NULL));
		g_assert_cmpint(migram_guest_layout_mark(bare, 0, 1), ==,
				MIGRAM_MARK_ALREADY_DIRTY);
		g_assert_cmpint(migram_guest_layout_mark(bare, P, 1), ==,
				MIGRAM_MARK_OUT_OF_RANGE);
		g_assert_cmpuint(migram_guest_layout_out_of_range_marks(bare),
				 ==, 1);
	}
	fx_free(&f);
}

/* --- marks from many threads while a range comes and goes -------------- */

#define MARKERS 6
#define EXTRA_GPA (64 * GiB)

typedef struct {
	Fx *f;
	unsigned int seed;
	int *stop;
	unsigned long *expect; /* RAM-address pages this thread saw marked */
	uint64_t outside;      /* calls that reported out of range */
} Marker;

static gpointer marker_main(gpointer p)
{
	Marker *mk = p;
	GRand *r = g_rand_new_with_seed(mk->seed);
	const uint64_t gpas[] = { 0, HIGH, VGA_GPA, EXTRA_GPA, 5 * GiB };
	const uint64_t sizes[] = { LOW, 8 * MiB - LOW, MiB, MiB, MiB };

	urcu_memb_register_thread();
	while (!g_atomic_int_get(mk->stop)) {
		int k = g_rand_int_range(r, 0, G_N_ELEMENTS(gpas));
		uint64_t gpa = gpas[k] + (uint64_t)g_rand_int_range(
						 r, 0, (gint32)(sizes[k] / P)) *
						 P;
		MigramRamBlock *b;
		uint64_t off;

		/* look up first, mark after: a mapping seen by either is
		 * stable for the extra range (same block, same offset) */
		if (migram_guest_layout_mark(mk->f->layout, gpa, 1) ==
		    MIGRAM_MARK_OUT_OF_RANGE) {
			mk->outside++;
			continue;
		}
		g_assert_true(migram_guest_layout_lookup(mk->f->layout, gpa, &b,
							 &off) ||
			      k == 3);
		if (k == 3) {
			b = mk->f->extra;
			off = gpa - EXTRA_GPA;
		}
		off = (migram_ram_block_offset(b) + off) / P;
		mk->expect[off / 64] |= 1UL << (off % 64);
	}
	urcu_memb_unregister_thread();
	g_rand_free(r);
	return NULL;
}

static void test_concurrent(void)
{
	g_autoptr(GError) error = NULL;
	GThread *th[MARKERS];
	Marker mk[MARKERS];
	uint64_t pages, outside = 0, flips = 0;
	gint64 until;
	int stop = 0;
	Fx f;

	fx_init(&f);
	pages = migram_dirty_bitmap_page_count(f.db);
	for (int i = 0; i < MARKERS; i++) {
		mk[i] = (Marker){ &f, g_test_rand_int(), &stop,
				  g_new0(unsigned long, pages / 64 + 1), 0 };
		th[i] = g_thread_new("marker", marker_main, &mk[i]);
	}
	/* the updater: the extra range comes and goes */
	until = g_get_monotonic_time() + 300 * 1000;
	while (g_get_monotonic_time() < until ||
	       flips < migram_test_scale(20)) {
		g_assert_true(migram_guest_layout_map(f.layout, EXTRA_GPA, MiB,
						      f.extra, 0, &error));
		g_assert_true(
			migram_guest_layout_unmap(f.layout, EXTRA_GPA, &error));
		flips++;
	}
	g_atomic_int_set(&stop, 1);
	for (int i = 0; i < MARKERS; i++) {
		g_thread_join(th[i]);
		outside += mk[i].outside;
	}
	g_test_message("%" G_GUINT64_FORMAT
		       " map/unmap pairs, %" G_GUINT64_FORMAT
		       " marks out of range",
		       flips, outside);
	g_assert_cmpuint(outside, >, 0); /* the 5 GiB hole at least */
	g_assert_cmpuint(migram_guest_layout_out_of_range_marks(f.layout), ==,
			 outside);
	/* bit for bit: the log holds exactly the marks that said so */
	for (uint64_t p = 0; p < pages; p++) {
		bool want = false;

		for (int i = 0; i < MARKERS; i++)
			want |= !!(mk[i].expect[p / 64] & (1UL << (p % 64)));
		if (want != migram_dirty_bitmap_is_dirty_by_index(f.db, p))
			g_error("page %" G_GUINT64_FORMAT ": log %d, marks %d",
				p, !want, want);
	}
	for (int i = 0; i < MARKERS; i++)
		g_free(mk[i].expect);
	fx_free(&f);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	g_test_add_func("/migration/guest-layout/bad-input", test_bad_input);
	g_test_add_func("/migration/guest-layout/pci-hole", test_pci_hole);
	g_test_add_func("/migration/guest-layout/concurrent", test_concurrent);
	return g_test_run();
}
