/* SPDX-License-Identifier: MIT */
/*
 * RAM blocks and the RAM list: backends, offsets, names, lookups, resize,
 * listeners, iteration and the migration bitmaps.
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/migram.h>
#include <migram/ramblock.h>

#include "ramblock-internal.h"
#include "migram-test-util.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)

static MigramRamBlock *add_anon(MigramRamList *list, const char *id,
				uint64_t used, uint64_t max)
{
	g_autoptr(GError) error = NULL;
	MigramRamBlockConfig c = { .idstr = id,
				   .backend = MIGRAM_RAM_BACKEND_ANON,
				   .used_length = used,
				   .max_length = max };
	MigramRamBlock *b = migram_ram_list_add(list, &c, &error);

	g_assert_no_error(error);
	g_assert_nonnull(b);
	return b;
}

static void remove_ok(MigramRamList *list, const char *id)
{
	g_autoptr(GError) error = NULL;

	g_assert_true(migram_ram_list_remove(list, id, &error));
	g_assert_no_error(error);
}

/* Write and read back the first and last byte of the block's used range. */
static void touch(MigramRamBlock *b)
{
	guint8 *h = migram_ram_block_host(b);
	uint64_t n = migram_ram_block_used_length(b);

	h[0] = 0x5a;
	h[n - 1] = 0xa5;
	g_assert_cmpuint(h[0], ==, 0x5a);
	g_assert_cmpuint(h[n - 1], ==, 0xa5);
}

static void test_backends(void)
{
	MigramRamList *list = migram_ram_list_new();
	g_autoptr(GError) error = NULL;
	long pg = sysconf(_SC_PAGESIZE);
	MigramRamBlock *anon, *shared, *caller;
	guint8 *mine, *view;

	/* Anonymous private memory. */
	anon = add_anon(list, "pc.ram", 4 * MiB, 0);
	touch(anon);
	g_assert_cmpint(migram_ram_block_fd(anon), ==, -1);
	g_assert_cmpuint(migram_ram_block_page_size(anon), ==, (uint64_t)pg);
	g_assert_cmpuint(migram_ram_block_flags(anon), ==,
			 MIGRAM_RAM_MIGRATABLE);
	g_assert_cmpuint(migram_ram_block_max_length(anon), ==, 4 * MiB);

	/* memfd: a second mapping of its fd sees the same bytes. */
	shared = migram_ram_list_add(
		list,
		&(MigramRamBlockConfig){ .idstr = "shared.ram",
					 .backend = MIGRAM_RAM_BACKEND_MEMFD,
					 .used_length = 2 * MiB },
		&error);
	g_assert_no_error(error);
	touch(shared);
	g_assert_cmpint(migram_ram_block_fd(shared), >=, 0);
	g_assert_true(migram_ram_block_flags(shared) & MIGRAM_RAM_SHARED);
	view = mmap(NULL, 2 * MiB, PROT_READ, MAP_SHARED,
		    migram_ram_block_fd(shared), 0);
	g_assert_true(view != MAP_FAILED);
	g_assert_cmpuint(view[0], ==, 0x5a);
	g_assert_cmpuint(view[2 * MiB - 1], ==, 0xa5);
	munmap(view, 2 * MiB);

	/* Caller-owned: used as given, never unmapped by migram. */
	mine = mmap(NULL, 1 * MiB, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	g_assert_true(mine != MAP_FAILED);
	caller = migram_ram_list_add(
		list,
		&(MigramRamBlockConfig){ .idstr = "caller.ram",
					 .backend = MIGRAM_RAM_BACKEND_CALLER,
					 .used_length = 1 * MiB,
					 .host = mine },
		&error);
	g_assert_no_error(error);
	g_assert_true(migram_ram_block_host(caller) == mine);
	g_assert_true(migram_ram_block_flags(caller) & MIGRAM_RAM_CALLER_OWNED);
	g_assert_cmpint(migram_ram_block_fd(caller), ==, -1);
	touch(caller);

	g_assert_cmpuint(migram_ram_list_count(list), ==, 3);
	remove_ok(list, "caller.ram");
	migram_ram_list_free(list);
	/* The embedder's memory is still there and intact. */
	g_assert_cmpuint(mine[0], ==, 0x5a);
	mine[1] = 1;
	munmap(mine, 1 * MiB);
}

/* The cases that need no more than one list get it from this fixture; the
 * tear-down frees it (blocks included) whether the case passes or skips. */
typedef struct {
	MigramRamList *list;
} Fixture;

static void fx_set_up(Fixture *f, gconstpointer data)
{
	(void)data;
	f->list = migram_ram_list_new();
}

static void fx_tear_down(Fixture *f, gconstpointer data)
{
	(void)data;
	migram_ram_list_free(f->list);
}

static void test_bad_configs(Fixture *f, gconstpointer data)
{
	MigramRamList *list = f->list;
	g_autofree guint8 *unaligned_buf = g_malloc(8192);
	struct {
		MigramRamBlockConfig c;
		const char *needle;
	} cases[] = {
		{ { .idstr = "z", .used_length = 0 }, "non-zero" },
		{ { .idstr = "u", .used_length = 4097 }, "multiples" },
		{ { .idstr = "m", .used_length = 2 * MiB, .max_length = MiB },
		  "used <= max" },
		{ { .idstr = "huge", .used_length = 1ULL << 53 }, "2^52" },
		{ { .idstr = "c",
		    .backend = MIGRAM_RAM_BACKEND_CALLER,
		    .used_length = 4096 },
		  "non-NULL" },
		{ { .idstr = "c2",
		    .backend = MIGRAM_RAM_BACKEND_CALLER,
		    .used_length = 4096,
		    .host = unaligned_buf + 1 },
		  "aligned" },
		{ { .idstr = "b",
		    .backend = (MigramRamBackend)77,
		    .used_length = 4096 },
		  "unknown backend" },
	};

	(void)data;
	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autoptr(GError) error = NULL;

		g_assert_null(migram_ram_list_add(list, &cases[i].c, &error));
		g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
		if (!strstr(error->message, cases[i].needle))
			g_error("case %zu: \"%s\" lacks \"%s\"", i,
				error->message, cases[i].needle);
	}
	g_assert_cmpuint(migram_ram_list_count(list), ==, 0);
	g_assert_cmpuint(migram_ram_list_version(list), ==, 0);
}

static long free_hugepages(void)
{
	g_autofree char *t = NULL;
	const char *p;

	if (!g_file_get_contents("/proc/meminfo", &t, NULL, NULL))
		return -1;
	p = strstr(t, "HugePages_Free:");
	return p ? strtol(p + 15, NULL, 10) : -1;
}

static void test_hugetlb_refused(Fixture *f, gconstpointer data)
{
	MigramRamList *list = f->list;
	g_autoptr(GError) error = NULL;
	long avail = free_hugepages();
	g_autofree char *overcommit = NULL;

	(void)data;
	g_file_get_contents("/proc/sys/vm/nr_overcommit_hugepages", &overcommit,
			    NULL, NULL);
	if (avail < 0 || (overcommit && atoi(overcommit) != 0)) {
		g_test_skip("hugetlb accounting unknown or overcommitted");
		return;
	}
	/* One page more than the host has free: a clear refusal. */
	g_assert_null(migram_ram_list_add(
		list,
		&(MigramRamBlockConfig){ .idstr = "too-big.huge",
					 .backend = MIGRAM_RAM_BACKEND_HUGETLB,
					 .used_length = (uint64_t)(avail + 1) *
							2 * MiB },
		&error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY);
	g_assert_nonnull(strstr(error->message, "hugetlb pages"));
	g_assert_nonnull(strstr(error->message, "nr_hugepages"));
	g_clear_error(&error);

	/* A size that is not a multiple of 2 MiB is refused before mmap. */
	g_assert_null(migram_ram_list_add(
		list,
		&(MigramRamBlockConfig){ .idstr = "odd.huge",
					 .backend = MIGRAM_RAM_BACKEND_HUGETLB,
					 .used_length = 1 * MiB },
		&error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
}

static void test_hugetlb(void)
{
	MigramRamList *list;
	g_autoptr(GError) error = NULL;
	MigramRamBlock *b;

	if (free_hugepages() < 2) {
		g_test_skip("no free 2 MiB hugetlb pages (reserve some with "
			    "echo 16 > /proc/sys/vm/nr_hugepages)");
		return;
	}
	list = migram_ram_list_new();
	b = migram_ram_list_add(list,
				&(MigramRamBlockConfig){
					.idstr = "huge.ram",
					.backend = MIGRAM_RAM_BACKEND_HUGETLB,
					.used_length = 4 * MiB },
				&error);
	g_assert_no_error(error);
	g_assert_cmpuint(migram_ram_block_page_size(b), ==, 2 * MiB);
	g_assert_cmpuint(migram_ram_block_flags(b) &
				 (MIGRAM_RAM_HUGETLB | MIGRAM_RAM_SHARED),
			 ==, MIGRAM_RAM_HUGETLB | MIGRAM_RAM_SHARED);
	g_assert_cmpuint(migram_ram_block_offset(b) % (2 * MiB), ==, 0);
	touch(b);
	migram_ram_list_free(list);
}

static void test_idstr(Fixture *f, gconstpointer data)
{
	MigramRamList *list = f->list;
	char name[MIGRAM_RAM_IDSTR_MAX + 2];
	GError *error = NULL;
	MigramRamBlockConfig c = { .used_length = 64 * KiB };

	(void)data;
	c.idstr = "";
	g_assert_null(migram_ram_list_add(list, &c, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(error->message, "empty"));
	g_clear_error(&error);
	c.idstr = NULL;
	g_assert_null(migram_ram_list_add(list, &c, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);

	memset(name, 'x', sizeof(name));
	name[MIGRAM_RAM_IDSTR_MAX + 1] = '\0'; /* 256 bytes */
	c.idstr = name;
	g_assert_null(migram_ram_list_add(list, &c, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(error->message, "256 bytes"));
	g_clear_error(&error);

	name[MIGRAM_RAM_IDSTR_MAX] = '\0'; /* 255 bytes: the longest */
	g_assert_nonnull(migram_ram_list_add(list, &c, &error));
	g_assert_no_error(error);
	g_assert_null(migram_ram_list_add(list, &c, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_EXISTS);
	g_assert_nonnull(strstr(error->message, "already exists"));
	g_clear_error(&error);

	g_assert_false(migram_ram_list_remove(list, "nope", &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND);
	g_clear_error(&error);
	g_assert_false(migram_ram_list_resize(list, "nope", 4096, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND);
	g_clear_error(&error);
}

static void assert_no_overlap(MigramRamList *list)
{
	urcu_memb_read_lock();
	for (MigramRamBlock *a = migram_ram_list_next(list, NULL); a;
	     a = migram_ram_list_next(list, a)) {
		uint64_t as = migram_ram_block_offset(a);
		uint64_t ae = as + migram_ram_block_max_length(a);

		g_assert_cmpuint(as % (256 * KiB), ==, 0);
		for (MigramRamBlock *b = migram_ram_list_next(list, a); b;
		     b = migram_ram_list_next(list, b)) {
			uint64_t bs = migram_ram_block_offset(b);
			uint64_t be = bs + migram_ram_block_max_length(b);

			if (as < be && bs < ae)
				g_error("'%s' [%#" G_GINT64_MODIFIER
					"x,%#" G_GINT64_MODIFIER
					"x) overlaps '%s'",
					migram_ram_block_idstr(a), as, ae,
					migram_ram_block_idstr(b));
		}
	}
	urcu_memb_read_unlock();
}

static void test_offsets(Fixture *f, gconstpointer data)
{
	MigramRamList *list = f->list;
	uint64_t a, b, c, d, e;
	GRand *r = g_rand_new_with_seed(g_test_rand_int());

	(void)data;
	a = migram_ram_block_offset(add_anon(list, "a", 1 * MiB, 0));
	b = migram_ram_block_offset(add_anon(list, "b", 4 * MiB, 0));
	add_anon(list, "x", 1 * MiB, 0);
	c = migram_ram_block_offset(add_anon(list, "c", 1 * MiB, 0));
	d = migram_ram_block_offset(add_anon(list, "d", 3 * MiB, 0));
	g_assert_cmpuint(a, ==, 0);
	g_assert_cmpuint(b, ==, 1 * MiB);
	g_assert_cmpuint(c, ==, 6 * MiB);
	g_assert_cmpuint(d, ==, 7 * MiB);
	/* A max_length that is not 256 KiB aligned still aligns the next. */
	e = migram_ram_block_offset(add_anon(list, "e", 64 * KiB, 0));
	g_assert_cmpuint(e, ==, 10 * MiB);
	g_assert_cmpuint(migram_ram_block_offset(
				 add_anon(list, "f", 64 * KiB, 0)),
			 ==, 10 * MiB + 256 * KiB);

	/* Gaps: 4 MiB at 1 MiB and 1 MiB at 6 MiB. */
	remove_ok(list, "b");
	remove_ok(list, "c");
	/* Only the 4 MiB gap fits 2 MiB; 2 MiB stay free at 3 MiB. */
	g_assert_cmpuint(migram_ram_block_offset(
				 add_anon(list, "c2", 2 * MiB, 0)),
			 ==, 1 * MiB);
	/* Best fit: the exact 1 MiB gap, not the lower 2 MiB one. */
	g_assert_cmpuint(migram_ram_block_offset(
				 add_anon(list, "g", 1 * MiB, 0)),
			 ==, 6 * MiB);
	g_assert_cmpuint(migram_ram_block_offset(
				 add_anon(list, "h", 1 * MiB, 0)),
			 ==, 3 * MiB);
	assert_no_overlap(list);

	/* Random fragmentation: no overlap, ever. */
	for (int i = 0; i < 300; i++) {
		char id[16];

		g_snprintf(id, sizeof(id), "r%d", g_rand_int_range(r, 0, 24));
		urcu_memb_read_lock();
		bool present = migram_ram_list_find(list, id) != NULL;
		urcu_memb_read_unlock();
		if (present)
			remove_ok(list, id);
		else
			add_anon(list, id,
				 (uint64_t)g_rand_int_range(r, 1, 64) * 64 *
					 KiB,
				 0);
		assert_no_overlap(list);
	}
	g_rand_free(r);
}

static void test_lookups(Fixture *f, gconstpointer data)
{
	MigramRamList *list = f->list;
	MigramRamBlock *big = add_anon(list, "big", 2 * MiB, 4 * MiB);
	MigramRamBlock *small = add_anon(list, "small", 512 * KiB, 0);
	uint64_t bo = migram_ram_block_offset(big);
	uint64_t so = migram_ram_block_offset(small);
	guint8 *bh = migram_ram_block_host(big);
	uint64_t off = 77;

	(void)data;
	g_assert_cmpuint(so, ==, 4 * MiB); /* after big's max_length */
	urcu_memb_read_lock();
	g_assert_true(migram_ram_list_find(list, "big") == big);
	g_assert_true(migram_ram_list_find(list, "small") == small);
	g_assert_null(migram_ram_list_find(list, "bi"));
	g_assert_null(migram_ram_list_find(list, "bigger"));

	/* By address: edges, then the reserved tail and a gap. */
	g_assert_true(migram_ram_list_find_by_addr(list, bo, &off) == big);
	g_assert_cmpuint(off, ==, 0);
	g_assert_true(list->mru == big);
	g_assert_true(migram_ram_list_find_by_addr(list, bo + 2 * MiB - 1,
						   &off) == big); /* MRU hit */
	g_assert_cmpuint(off, ==, 2 * MiB - 1);
	g_assert_null(migram_ram_list_find_by_addr(list, bo + 2 * MiB, NULL));
	g_assert_true(migram_ram_list_find_by_addr(list, so + 100, &off) ==
		      small); /* MRU miss, then cached */
	g_assert_cmpuint(off, ==, 100);
	g_assert_true(list->mru == small);
	g_assert_true(migram_ram_list_find_by_addr(list, bo + 5, &off) == big);
	g_assert_true(list->mru == big);
	g_assert_null(migram_ram_list_find_by_addr(list, so + 512 * KiB, NULL));
	g_assert_null(migram_ram_list_find_by_addr(list, UINT64_MAX, NULL));

	/* By host pointer. */
	g_assert_true(migram_ram_list_find_by_host(list, bh, &off) == big);
	g_assert_cmpuint(off, ==, 0);
	g_assert_true(migram_ram_list_find_by_host(list, bh + 2 * MiB - 1,
						   &off) == big);
	g_assert_cmpuint(off, ==, 2 * MiB - 1);
	g_assert_null(migram_ram_list_find_by_host(list, bh + 2 * MiB, NULL));
	/* The byte before big: nothing, or another block that really has it
	 * (two mappings may be adjacent). */
	{
		guint8 *sh = migram_ram_block_host(small);
		MigramRamBlock *before =
			migram_ram_list_find_by_host(list, bh - 1, NULL);

		g_assert_true(before == NULL ||
			      (before == small && bh - 1 >= sh &&
			       bh - 1 < sh + 512 * KiB));
	}
	g_assert_null(migram_ram_list_find_by_host(list, &off, NULL));
	urcu_memb_read_unlock();

	/* Removing the cached block clears the cache. */
	remove_ok(list, "big");
	g_assert_null(list->mru);
	urcu_memb_read_lock();
	g_assert_null(migram_ram_list_find_by_addr(list, bo, NULL));
	urcu_memb_read_unlock();
}

typedef struct {
	GString *log;
	MigramRamBlock *expect;
} Recorder;

static void on_resized(MigramRamBlock *b, uint64_t old_length,
		       uint64_t new_length, void *opaque)
{
	Recorder *r = opaque;

	g_assert_true(b == r->expect);
	/* Readers already see the new length when the callback runs. */
	g_assert_cmpuint(migram_ram_block_used_length(b), ==, new_length);
	g_string_append_printf(r->log,
			       "resized %s %" G_GUINT64_FORMAT
			       "K->%" G_GUINT64_FORMAT "K;",
			       migram_ram_block_idstr(b), old_length / KiB,
			       new_length / KiB);
}

static void on_event(MigramRamList *list, MigramRamEvent event,
		     MigramRamBlock *b, void *opaque)
{
	static const char *names[] = { "?", "added", "removed", "resized" };
	Recorder *r = opaque;

	(void)list;
	g_string_append_printf(r->log, "%s %s;", names[event],
			       migram_ram_block_idstr(b));
}

static void test_resize(Fixture *f, gconstpointer data)
{
	MigramRamList *list = f->list;
	Recorder rec = { .log = g_string_new(NULL) };
	g_autoptr(GError) error = NULL;
	MigramRamBlock *fixed = add_anon(list, "fixed", 1 * MiB, 0);
	MigramRamBlock *b;
	guint id = migram_ram_list_add_listener(list, on_event, &rec);
	uint64_t v;
	void *host;
	unsigned long *bmap;

	(void)data;
	b = migram_ram_list_add(list,
				&(MigramRamBlockConfig){
					.idstr = "vga.vram",
					.used_length = 1 * MiB,
					.max_length = 4 * MiB,
					.resized = on_resized,
					.resized_opaque = &rec },
				&error);
	g_assert_no_error(error);
	rec.expect = b;
	g_assert_true(migram_ram_block_flags(b) & MIGRAM_RAM_RESIZEABLE);
	g_assert_false(migram_ram_block_flags(fixed) & MIGRAM_RAM_RESIZEABLE);
	g_assert_true(migram_ram_list_bitmaps_init(list, 6, &error));
	host = migram_ram_block_host(b);
	bmap = migram_ram_block_bmap(b);
	v = migram_ram_list_version(list);

	g_assert_true(
		migram_ram_list_resize(list, "vga.vram", 3 * MiB, &error));
	g_assert_no_error(error);
	g_assert_cmpuint(migram_ram_list_version(list), ==, v + 1);
	g_assert_true(
		migram_ram_list_resize(list, "vga.vram", 2 * MiB, &error));
	/* Same length: success, nothing notified, version unchanged. */
	g_assert_true(
		migram_ram_list_resize(list, "vga.vram", 2 * MiB, &error));
	g_assert_cmpuint(migram_ram_list_version(list), ==, v + 2);
	g_assert_cmpstr(rec.log->str, ==,
			"added vga.vram;"
			"resized vga.vram 1024K->3072K;resized vga.vram;"
			"resized vga.vram 3072K->2048K;resized vga.vram;");

	/* Growth moved nothing: same mapping, same bitmaps, usable. */
	g_assert_true(migram_ram_block_host(b) == host);
	g_assert_true(migram_ram_block_bmap(b) == bmap);
	touch(b);
	migram_bitmap_set(bmap, 0, 4 * MiB / 4096);

	/* Bounds: zero, past max, unaligned, and a fixed-size block. */
	const uint64_t bad[] = { 0, 4 * MiB + 4096, 3 * MiB + 1 };
	for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
		GError *e = NULL;

		g_assert_false(
			migram_ram_list_resize(list, "vga.vram", bad[i], &e));
		g_assert_error(e, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
		g_error_free(e);
	}
	g_assert_false(migram_ram_list_resize(list, "fixed", 2 * MiB, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(error->message, "not resizeable"));
	g_assert_cmpuint(migram_ram_block_used_length(b), ==, 2 * MiB);
	g_assert_cmpuint(migram_ram_list_version(list), ==, v + 2);

	/* A removed listener hears nothing more. */
	g_string_truncate(rec.log, 0);
	remove_ok(list, "fixed");
	migram_ram_list_remove_listener(list, id);
	add_anon(list, "quiet", 64 * KiB, 0);
	g_assert_cmpstr(rec.log->str, ==, "removed fixed;");

	migram_ram_list_bitmaps_free(list);
	g_string_free(rec.log, TRUE);
}

/*
 * A held list refuses add, remove and resize with MIGRAM_ERROR_BUSY naming
 * the holder, nothing changes (no version bump, no listener call), holds
 * nest, and the last release allows changes again.
 */
static void test_hold(Fixture *f, gconstpointer data)
{
	MigramRamList *list = f->list;
	Recorder rec = { .log = g_string_new(NULL) };
	MigramRamBlock *b = migram_ram_list_add(list,
						&(MigramRamBlockConfig){
							.idstr = "dimm0",
							.used_length = 1 * MiB,
							.max_length = 2 * MiB },
						NULL);
	guint id = migram_ram_list_add_listener(list, on_event, &rec);
	uint64_t v = migram_ram_list_version(list);
	MigramRamBlockConfig c = { .idstr = "hot0", .used_length = 1 * MiB };

	(void)data;
	g_assert_nonnull(b);
	g_assert_cmpuint(migram_ram_list_hold(list, "test holder"), ==, v);
	g_assert_cmpuint(migram_ram_list_hold(list, "second holder"), ==, v);
	for (int round = 0; round < 2; round++) {
		GError *e = NULL;

		g_assert_null(migram_ram_list_add(list, &c, &e));
		g_assert_error(e, MIGRAM_ERROR, MIGRAM_ERROR_BUSY);
		g_assert_nonnull(strstr(e->message, "'hot0'"));
		/* the first holder's reason is kept */
		g_assert_nonnull(strstr(e->message, "test holder"));
		g_clear_error(&e);
		g_assert_false(migram_ram_list_remove(list, "dimm0", &e));
		g_assert_error(e, MIGRAM_ERROR, MIGRAM_ERROR_BUSY);
		g_clear_error(&e);
		g_assert_false(
			migram_ram_list_resize(list, "dimm0", 2 * MiB, &e));
		g_assert_error(e, MIGRAM_ERROR, MIGRAM_ERROR_BUSY);
		g_clear_error(&e);
		/* the same length is no change: allowed */
		g_assert_true(
			migram_ram_list_resize(list, "dimm0", 1 * MiB, &e));
		g_assert_no_error(e);
		g_assert_cmpuint(migram_ram_list_version(list), ==, v);
		urcu_memb_read_lock();
		g_assert_null(migram_ram_list_find(list, "hot0"));
		urcu_memb_read_unlock();
		/* round 0 leaves one hold of two: still refused */
		migram_ram_list_release(list);
	}
	g_assert_cmpstr(rec.log->str, ==, "");
	/* released: changes go through again */
	g_assert_nonnull(migram_ram_list_add(list, &c, NULL));
	g_assert_true(migram_ram_list_resize(list, "dimm0", 2 * MiB, NULL));
	remove_ok(list, "hot0");
	g_assert_cmpuint(migram_ram_list_version(list), ==, v + 3);
	migram_ram_list_remove_listener(list, id);
	g_string_free(rec.log, TRUE);
}

static void test_iteration(Fixture *f, gconstpointer data)
{
	MigramRamList *list = f->list;
	const char *order[] = { "d", "b", "c", "a" };
	MigramRamBlock *b;
	int i = 0;

	(void)data;
	add_anon(list, "a", 64 * KiB, 0);
	add_anon(list, "b", 2 * MiB, 0);
	migram_ram_list_add(list,
			    &(MigramRamBlockConfig){ .idstr = "c",
						     .used_length = 1 * MiB,
						     .not_migratable = true },
			    NULL);
	add_anon(list, "d", 1 * MiB, 8 * MiB);

	urcu_memb_read_lock();
	/* Largest max_length first, as QEMU orders its list. */
	for (b = migram_ram_list_next(list, NULL); b;
	     b = migram_ram_list_next(list, b))
		g_assert_cmpstr(migram_ram_block_idstr(b), ==, order[i++]);
	g_assert_cmpint(i, ==, 4);
	i = 0;
	for (b = migram_ram_list_next_migratable(list, NULL); b;
	     b = migram_ram_list_next_migratable(list, b)) {
		g_assert_cmpstr(migram_ram_block_idstr(b), !=, "c");
		i++;
	}
	g_assert_cmpint(i, ==, 3);
	urcu_memb_read_unlock();
	g_assert_cmpuint(migram_ram_list_count(list), ==, 4);
}

/* Every migratable block's bitmaps have the documented size and contents. */
static void check_bitmaps(MigramRamList *list, unsigned int shift)
{
	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next(list, NULL); b;
	     b = migram_ram_list_next(list, b)) {
		uint64_t used = migram_ram_block_used_length(b) / 4096;
		uint64_t max = migram_ram_block_max_length(b) / 4096;
		uint64_t chunks = ((max - 1) >> shift) + 1;
		unsigned long *bmap = migram_ram_block_bmap(b);
		unsigned long *recv = migram_ram_block_receivedmap(b);
		unsigned long *clr = migram_ram_block_clear_bmap(b);

		if (!(migram_ram_block_flags(b) & MIGRAM_RAM_MIGRATABLE)) {
			g_assert_null(bmap);
			g_assert_null(recv);
			g_assert_null(clr);
			continue;
		}
		g_assert_cmpuint(migram_ram_block_clear_bmap_shift(b), ==,
				 shift);
		/* Reading every word of the documented size: ASan checks it. */
		g_assert_cmpuint(migram_bitmap_count(bmap, 0, max), ==, used);
		g_assert_true(migram_bitmap_range_full(bmap, 0, used));
		g_assert_cmpuint(migram_bitmap_count(recv, 0, max), ==, 0);
		g_assert_cmpuint(migram_bitmap_count(clr, 0, chunks), ==, 0);
		/* Writable to their last bit. */
		migram_bitmap_set_bit(bmap, max - 1);
		migram_bitmap_set_bit_atomic(recv, max - 1);
		migram_bitmap_set_bit(clr, chunks - 1);
		migram_bitmap_clear_bit(bmap, max - 1);
		migram_bitmap_clear_bit(recv, max - 1);
		migram_bitmap_clear_bit(clr, chunks - 1);
	}
	urcu_memb_read_unlock();
}

static void test_migration_bitmaps(Fixture *f, gconstpointer data)
{
	MigramRamList *list = f->list;
	GError *error = NULL;
	bool huge = free_hugepages() >= 2;

	(void)data;
	add_anon(list, "pc.ram", 8 * MiB, 0);
	add_anon(list, "vram", 1 * MiB, 6 * MiB + 4096);
	migram_ram_list_add(list,
			    &(MigramRamBlockConfig){ .idstr = "rom",
						     .used_length = 256 * KiB,
						     .not_migratable = true },
			    NULL);
	if (huge)
		migram_ram_list_add(list,
				    &(MigramRamBlockConfig){
					    .idstr = "huge",
					    .backend =
						    MIGRAM_RAM_BACKEND_HUGETLB,
					    .used_length = 2 * MiB,
					    .max_length = 4 * MiB },
				    NULL);
	else
		add_anon(list, "shared", 2 * MiB, 4 * MiB);

	g_assert_false(migram_ram_list_bitmaps_init(list, 32, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);

	g_assert_true(migram_ram_list_bitmaps_init(list, 6, &error));
	g_assert_no_error(error);
	check_bitmaps(list, 6);
	g_assert_false(migram_ram_list_bitmaps_init(list, 6, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	migram_ram_list_bitmaps_free(list);

	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next(list, NULL); b;
	     b = migram_ram_list_next(list, b)) {
		g_assert_null(migram_ram_block_bmap(b));
		g_assert_null(migram_ram_block_receivedmap(b));
		g_assert_null(migram_ram_block_clear_bmap(b));
	}
	urcu_memb_read_unlock();

	/* Again with QEMU's default shift, and with shift 0. */
	g_assert_true(migram_ram_list_bitmaps_init(
		list, MIGRAM_CLEAR_BMAP_SHIFT_DEFAULT, NULL));
	check_bitmaps(list, MIGRAM_CLEAR_BMAP_SHIFT_DEFAULT);
	migram_ram_list_bitmaps_free(list);
	g_assert_true(migram_ram_list_bitmaps_init(list, 0, NULL));
	check_bitmaps(list, 0);
	/* Left allocated on purpose: list_free must free them. */
}

static void test_postcopy_length(Fixture *f, gconstpointer data)
{
	MigramRamList *list = f->list;
	MigramRamBlock *b = add_anon(list, "pc.ram", 1 * MiB, 2 * MiB);

	(void)data;
	g_assert_cmpuint(migram_ram_block_postcopy_length(b), ==, 1 * MiB);
	migram_ram_block_set_postcopy_length(b, 2 * MiB);
	g_assert_cmpuint(migram_ram_block_postcopy_length(b), ==, 2 * MiB);
}

static void test_lookup_needs_rcu(void)
{
	if (!g_test_undefined())
		return;
	if (g_test_subprocess()) {
		MigramRamList *list = migram_ram_list_new();

		migram_ram_list_find(list, "x"); /* no read lock: a bug */
		return;
	}
	g_test_trap_subprocess(NULL, 0, 0);
	g_test_trap_assert_failed();
	g_test_trap_assert_stderr("*RCU reader*");
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	g_test_add_func("/ramblock/ramblock/list/backends", test_backends);
	g_test_add("/ramblock/ramblock/list/bad-configs", Fixture, NULL,
		   fx_set_up, test_bad_configs, fx_tear_down);
	g_test_add("/ramblock/ramblock/list/hugetlb-refused", Fixture, NULL,
		   fx_set_up, test_hugetlb_refused, fx_tear_down);
	g_test_add_func("/ramblock/ramblock/list/hugetlb", test_hugetlb);
	g_test_add("/ramblock/ramblock/list/idstr", Fixture, NULL, fx_set_up,
		   test_idstr, fx_tear_down);
	g_test_add("/ramblock/ramblock/list/offsets", Fixture, NULL, fx_set_up,
		   test_offsets, fx_tear_down);
	g_test_add("/ramblock/ramblock/list/lookups", Fixture, NULL, fx_set_up,
		   test_lookups, fx_tear_down);
	g_test_add("/ramblock/ramblock/list/resize", Fixture, NULL, fx_set_up,
		   test_resize, fx_tear_down);
	g_test_add("/ramblock/ramblock/list/hold", Fixture, NULL, fx_set_up,
		   test_hold, fx_tear_down);
	g_test_add("/ramblock/ramblock/list/iteration", Fixture, NULL,
		   fx_set_up, test_iteration, fx_tear_down);
	g_test_add("/ramblock/ramblock/list/migration-bitmaps", Fixture, NULL,
		   fx_set_up, test_migration_bitmaps, fx_tear_down);
	g_test_add("/ramblock/ramblock/list/postcopy-length", Fixture, NULL,
		   fx_set_up, test_postcopy_length, fx_tear_down);
	g_test_add_func("/ramblock/ramblock/list/lookup-needs-rcu",
			test_lookup_needs_rcu);
	return g_test_run();
}
