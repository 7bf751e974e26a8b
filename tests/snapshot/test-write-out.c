/* SPDX-License-Identifier: MIT */
/*
 * The parallel staging write-out (migram_snapshot_writer_put_staging_all):
 * random present patterns over several blocks, written with every mix of
 * threads, write size and zero bridging, must give a file whose present
 * bitmap is exactly the stagings' present pages and whose pages are
 * byte for byte the staged ones; gaps stay absent; release empties the
 * stagings; bad options, counts and a failing write are clean errors.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>

#include <glib/gstdio.h>
#include <urcu/urcu-memb.h>

#include <migram/migram.h>
#include <migram/snapshot.h>
#include <migram/staging.h>

#include "migram-test-util.h"

#define PAGE 4096u
#define NBLOCKS 4u

/* 16 MiB chunks are 4096 pages: the first block spans three and a tail. */
static const uint64_t block_pages[NBLOCKS] = { 3 * 4096 + 77, 1000, 64, 5000 };

typedef struct {
	char *dir, *path;
	MigramStaging *st[NBLOCKS];
	uint8_t *content[NBLOCKS]; /* what was staged, page by page */
	unsigned long *present[NBLOCKS];
	uint64_t npresent;
} Fixture;

static void page_pattern(uint8_t *p, guint block, uint64_t page)
{
	for (unsigned i = 0; i < PAGE; i += 8) {
		uint64_t v = (block + 1) * 0x9e3779b97f4a7c15ull ^
			     (page << 16) ^ i;
		memcpy(p + i, &v, 8);
	}
}

/* Runs of 1..300 present pages, gaps of 0..300 absent ones; block 2 has
 * no staging (NULL) and block 3's staging is empty. */
static void fx_setup(Fixture *f, gconstpointer data)
{
	(void)data;
	f->dir = g_dir_make_tmp("migram-wout-XXXXXX", NULL);
	g_assert_nonnull(f->dir);
	f->path = g_build_filename(f->dir, "w.snap", NULL);
	GRand *r = g_rand_new_with_seed(0x5eed);
	for (guint b = 0; b < NBLOCKS; b++) {
		if (b == 2)
			continue;
		uint64_t n = block_pages[b];
		f->st[b] = migram_staging_new("blk", n, NULL);
		g_assert_nonnull(f->st[b]);
		f->content[b] = g_malloc0(n * PAGE);
		f->present[b] = g_new0(unsigned long, (n + 63) / 64);
		for (uint64_t p = (uint64_t)g_rand_int_range(r, 0, 3);
		     b != 3 && p < n;) {
			uint64_t run = (uint64_t)g_rand_int_range(r, 1, 301);
			run = MIN(run, n - p);
			for (uint64_t i = p; i < p + run; i++) {
				page_pattern(f->content[b] + i * PAGE, b, i);
				f->present[b][i / 64] |= 1ul << (i % 64);
			}
			g_assert_true(migram_staging_copy(
				f->st[b], f->content[b] + p * PAGE, p, run,
				NULL));
			f->npresent += run;
			/* Mostly small gaps (bridgeable), some long. */
			p += run +
			     (g_rand_int_range(r, 0, 4)
				      ? (uint64_t)g_rand_int_range(r, 0, 9)
				      : (uint64_t)g_rand_int_range(r, 0, 301));
		}
	}
	g_rand_free(r);
}

static void fx_teardown(Fixture *f, gconstpointer data)
{
	(void)data;
	for (guint b = 0; b < NBLOCKS; b++) {
		migram_staging_free(f->st[b]);
		g_free(f->content[b]);
		g_free(f->present[b]);
	}
	g_unlink(f->path);
	g_rmdir(f->dir);
	g_free(f->path);
	g_free(f->dir);
}

static MigramSnapshotWriter *new_writer(Fixture *f)
{
	g_autoptr(GError) err = NULL;
	MigramSnapshotParams params = { 0 };
	MigramSnapshotWriter *w = migram_snapshot_writer_new(f->path, &params,
							     &err);
	g_assert_no_error(err);
	for (guint b = 0; b < NBLOCKS; b++) {
		g_autofree char *name = g_strdup_printf("b%u", b);
		g_assert_true(migram_snapshot_writer_add_block(
			w, name, block_pages[b] * PAGE, PAGE, NULL, &err));
	}
	g_assert_true(migram_snapshot_writer_start(w, &err));
	return w;
}

/* The file holds exactly the staged pages, nothing else present. */
static void check_file(Fixture *f)
{
	g_autoptr(GError) err = NULL;
	g_autoptr(MigramSnapshotFile) sf = migram_snapshot_open(f->path, &err);
	g_assert_no_error(err);
	g_autofree uint8_t *page = g_malloc(PAGE);
	for (guint b = 0; b < NBLOCKS; b++) {
		for (uint64_t p = 0; p < block_pages[b]; p++) {
			bool want = f->present[b] &&
				    (f->present[b][p / 64] >> (p % 64)) & 1;
			if (migram_snapshot_page_present(sf, b, p) != want)
				g_error("block %u page %" G_GUINT64_FORMAT
					": present %d in the file, %d staged",
					b, p, !want, want);
			if (!want)
				continue;
			g_assert_true(migram_snapshot_read_pages(sf, b, p, 1,
								 page, &err));
			if (memcmp(page, f->content[b] + p * PAGE, PAGE))
				g_error("block %u page %" G_GUINT64_FORMAT
					" differs from its staged copy",
					b, p);
		}
	}
}

static void write_with(Fixture *f, const MigramSnapshotWriteOptions *o,
		       MigramSnapshotWriteStats *s)
{
	g_autoptr(GError) err = NULL;
	g_autoptr(MigramSnapshotWriter) w = new_writer(f);
	g_assert_true(migram_snapshot_writer_put_staging_all(w, f->st, NBLOCKS,
							     o, s, &err));
	g_assert_no_error(err);
	g_assert_true(migram_snapshot_writer_finish(w, NULL, &err));
	g_assert_cmpuint(s->pages_written, ==, f->npresent);
	check_file(f);
}

static void test_options(Fixture *f, gconstpointer data)
{
	(void)data;
	static const MigramSnapshotWriteOptions opts[] = {
		{ .threads = 1, .max_io = PAGE },
		{ .threads = 8, .max_io = PAGE, .bridge_pages = 16 },
		{ .threads = 1 },
		{ .threads = 1, .bridge_pages = 1 },
		{ .threads = 1, .bridge_pages = 256 },
		{ .threads = 2, .max_io = 64 * 1024, .bridge_pages = 16 },
		{ .threads = 8 },
		{ .threads = 8, .bridge_pages = 256 },
		{ .threads = 0, .max_io = 3 * PAGE + 1, .bridge_pages = 2 },
	};
	for (guint i = 0; i < G_N_ELEMENTS(opts); i++) {
		const MigramSnapshotWriteOptions *o = &opts[i];
		MigramSnapshotWriteStats s;
		write_with(f, o, &s);
		/* No more threads than the 7 chunks. */
		if (o->threads)
			g_assert_cmpuint(s.threads, ==, MIN(o->threads, 7u));
		else
			g_assert_cmpuint(s.threads, ==, 1);
		if (o->bridge_pages == 0)
			g_assert_cmpuint(s.pages_bridged, ==, 0);
		/* One page per write: nothing can join. */
		if (o->max_io == PAGE)
			g_assert_cmpuint(s.writes, ==, f->npresent);
		/* Gaps are mostly at most 8 pages: some get bridged. */
		if (o->max_io == 0 && o->bridge_pages >= 16)
			g_assert_cmpuint(s.pages_bridged, >, 0);
		/* A bridged gap is written: bridging saves writes. */
		if (o->max_io == 0 && o->bridge_pages == 256)
			g_assert_cmpuint(s.writes, <, f->npresent / 256 + 64);
	}
}

/* Release hands every written page back; the defaults (NULL) work. */
static void test_release(Fixture *f, gconstpointer data)
{
	(void)data;
	MigramSnapshotWriteOptions o = { .threads = 4,
					 .bridge_pages = 8,
					 .release = true };
	MigramSnapshotWriteStats s;
	write_with(f, &o, &s);
	for (guint b = 0; b < NBLOCKS; b++)
		if (f->st[b])
			g_assert_cmpuint(migram_staging_present_pages(f->st[b]),
					 ==, 0);
	/* Nothing left: a second write-out writes nothing. */
	g_autoptr(GError) err = NULL;
	g_autoptr(MigramSnapshotWriter) w = new_writer(f);
	g_assert_true(migram_snapshot_writer_put_staging_all(w, f->st, NBLOCKS,
							     NULL, &s, &err));
	g_assert_cmpuint(s.pages_written, ==, 0);
	g_assert_cmpuint(s.writes, ==, 0);
}

static void test_bad_input(Fixture *f, gconstpointer data)
{
	(void)data;
	g_autoptr(GError) err = NULL;
	g_autoptr(MigramSnapshotWriter) w = new_writer(f);
	struct {
		MigramSnapshotWriteOptions o;
		guint n;
		const char *says;
	} bad[] = {
		{ { .threads = 65 }, NBLOCKS, "threads 65" },
		{ { .bridge_pages = 257 }, NBLOCKS, "bridge_pages 257" },
		{ { .max_io = 100 }, NBLOCKS, "max_io 100" },
		{ { 0 }, NBLOCKS - 1, "3 stagings for 4 blocks" },
	};
	for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
		g_assert_false(migram_snapshot_writer_put_staging_all(
			w, f->st, bad[i].n, &bad[i].o, NULL, &err));
		g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
		g_assert_nonnull(strstr(err->message, bad[i].says));
		g_assert_nonnull(strstr(err->message, f->path));
		g_clear_error(&err);
	}
	/* A staging longer than its block, with a page past it. */
	MigramStaging *sts[NBLOCKS] = { f->st[0], f->st[1], NULL, f->st[3] };
	g_autoptr(MigramStaging) big = migram_staging_new("big", 70, &err);
	g_autofree uint8_t *page = g_malloc0(PAGE);
	g_assert_true(migram_staging_copy(big, page, 66, 1, &err));
	sts[2] = big;
	g_assert_false(migram_snapshot_writer_put_staging_all(
		w, sts, NBLOCKS, NULL, NULL, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(err->message, "staging page 66 past its 64"));
	g_clear_error(&err);
	/* Not started, and finished. */
	MigramSnapshotParams params = { 0 };
	g_autofree char *other = g_build_filename(f->dir, "o.snap", NULL);
	g_autoptr(MigramSnapshotWriter) w2 =
		migram_snapshot_writer_new(other, &params, &err);
	g_assert_false(migram_snapshot_writer_put_staging_all(
		w2, f->st, 0, NULL, NULL, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&err);
	g_assert_true(migram_snapshot_writer_finish(w, NULL, &err));
	g_assert_false(migram_snapshot_writer_put_staging_all(
		w, f->st, NBLOCKS, NULL, NULL, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&err);
	g_unlink(other);
}

/* A write the file system refuses (RLIMIT_FSIZE below the pages) fails
 * with an I/O error naming the file, the block and the offset; the file
 * is left without magic. */
static void test_write_error(Fixture *f, gconstpointer data)
{
	(void)data;
	g_autoptr(GError) err = NULL;
	g_autoptr(MigramSnapshotWriter) w = new_writer(f);
	struct rlimit old, lim;
	g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &old), ==, 0);
	void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = 1u << 20; /* the pages start at 1 MiB or later */
	g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &lim), ==, 0);
	MigramSnapshotWriteOptions o = { .threads = 2 };
	bool ok = migram_snapshot_writer_put_staging_all(w, f->st, NBLOCKS, &o,
							 NULL, &err);
	g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &old), ==, 0);
	signal(SIGXFSZ, prev);
	g_assert_false(ok);
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_nonnull(strstr(err->message, f->path));
	g_assert_nonnull(strstr(err->message, "block 'b"));
	g_assert_nonnull(strstr(err->message, "at offset"));
	g_assert_nonnull(strstr(err->message, g_strerror(EFBIG)));
	g_clear_error(&err);
	g_clear_pointer(&w, migram_snapshot_writer_free);
	g_assert_null(migram_snapshot_open(f->path, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
#define ADD(path, fn)                                                          \
	g_test_add("/snapshot/write-out/" path, Fixture, NULL, fx_setup, fn,   \
		   fx_teardown)
	ADD("options", test_options);
	ADD("release", test_release);
	ADD("bad-input", test_bad_input);
	ADD("write-error", test_write_error);
#undef ADD
	int rc = g_test_run();
	urcu_memb_unregister_thread();
	return rc;
}
