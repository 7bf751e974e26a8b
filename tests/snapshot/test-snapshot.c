/* SPDX-License-Identifier: MIT */
/*
 * Snapshot files: full and diff snapshots staged from live blocks,
 * written, described, restored into fresh lists and verified against the
 * hashes recorded at the snapshot instant; the file is sparse; chains and
 * layouts are checked; bad files (unfinished, truncated, corrupted, a
 * diff without its base) fail with errors naming the offset; random
 * corruption never crashes the reader.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <urcu/urcu-memb.h>

#include <migram/migram.h>
#include <migram/snapshot.h>
#include <migram/staging.h>

#include "migram-test-util.h"

#define PAGE 4096u
#define A_PAGES 300u /* not a multiple of 64: a bitmap tail */
#define B_PAGES 40u

typedef struct {
	char *dir;
	char *base, *diff, *diff2;
	MigramRamList *src;
} Fixture;

static MigramRamList *make_list(uint64_t a_pages)
{
	MigramRamList *list = migram_ram_list_new();
	MigramRamBlockConfig a = { .idstr = "pc.ram",
				   .backend = MIGRAM_RAM_BACKEND_MEMFD,
				   .used_length = a_pages * PAGE };
	MigramRamBlockConfig b = { .idstr = "vga.vram",
				   .backend = MIGRAM_RAM_BACKEND_ANON,
				   .used_length = B_PAGES * PAGE,
				   .flags = MIGRAM_RAM_NO_THP };
	g_assert_nonnull(migram_ram_list_add(list, &a, NULL));
	g_assert_nonnull(migram_ram_list_add(list, &b, NULL));
	return list;
}

static uint8_t *host_of(MigramRamList *list, const char *name)
{
	urcu_memb_read_lock();
	uint8_t *h = migram_ram_block_host(migram_ram_list_find(list, name));
	urcu_memb_read_unlock();
	return h;
}

/* Page p of a block: pattern seeded by (seed, p); every 3rd page zero. */
static void fill(uint8_t *host, uint64_t npages, unsigned seed)
{
	for (uint64_t p = 0; p < npages; p++) {
		if (p % 3 == 0) {
			memset(host + p * PAGE, 0, PAGE);
			continue;
		}
		for (unsigned i = 0; i < PAGE; i += 8) {
			uint64_t v = (seed * 0x9e3779b97f4a7c15ull) ^
				     (p << 20) ^ i;
			memcpy(host + p * PAGE + i, &v, 8);
		}
	}
}

static void fx_setup(Fixture *f, gconstpointer data)
{
	(void)data;
	f->dir = g_dir_make_tmp("migram-snap-XXXXXX", NULL);
	g_assert_nonnull(f->dir);
	f->base = g_build_filename(f->dir, "base.snap", NULL);
	f->diff = g_build_filename(f->dir, "diff1.snap", NULL);
	f->diff2 = g_build_filename(f->dir, "diff2.snap", NULL);
	f->src = make_list(A_PAGES);
	fill(host_of(f->src, "pc.ram"), A_PAGES, 1);
	fill(host_of(f->src, "vga.vram"), B_PAGES, 2);
}

static void fx_teardown(Fixture *f, gconstpointer data)
{
	(void)data;
	migram_ram_list_free(f->src);
	g_unlink(f->base);
	g_unlink(f->diff);
	g_unlink(f->diff2);
	g_rmdir(f->dir);
	g_free(f->base);
	g_free(f->diff);
	g_free(f->diff2);
	g_free(f->dir);
}

/*
 * Snapshot @p list into @p path: stage every block (full when @p dirty is
 * NULL, else the pages of dirty[block index]), write with hashes.
 */
static uint64_t take(MigramRamList *list, const char *path, uint64_t parent,
		     unsigned long **dirty, MigramStageStats *stats)
{
	g_autoptr(GError) err = NULL;
	MigramSnapshotParams params = { .diff = parent != 0,
					.parent_id = parent };
	g_autoptr(MigramSnapshotWriter) w =
		migram_snapshot_writer_new(path, &params, &err);
	g_assert_no_error(err);
	g_assert_true(migram_snapshot_writer_add_list(w, list, &err));
	g_assert_true(migram_snapshot_writer_start(w, &err));
	MigramStageStats s = { 0 };
	guint i = 0;
	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next_migratable(list, NULL); b;
	     b = migram_ram_list_next_migratable(list, b), i++) {
		uint64_t n = migram_ram_block_used_length(b) / PAGE;
		g_autoptr(MigramStaging) st =
			migram_staging_new_for_block(b, &err);
		g_autofree uint64_t *h = g_new(uint64_t, n);
		g_assert_true(migram_snapshot_stage_block(
			st, b, dirty ? dirty[i] : NULL, h, &s, &err));
		g_assert_no_error(err);
		g_assert_true(migram_snapshot_writer_put_staging(
			w, i, st, 64, true, NULL, &err));
		g_assert_cmpuint(migram_staging_present_pages(st), ==, 0);
		g_assert_true(migram_snapshot_writer_set_hashes(w, i, h, &err));
		if (dirty)
			g_assert_true(migram_snapshot_writer_set_hot(
				w, i, dirty[i], &err));
	}
	urcu_memb_read_unlock();
	uint64_t id = 0;
	g_assert_true(migram_snapshot_writer_finish(w, &id, &err));
	g_assert_no_error(err);
	g_assert_cmpuint(id, !=, 0);
	if (stats)
		*stats = s;
	return id;
}

static void assert_same(MigramRamList *a, MigramRamList *b)
{
	g_assert_cmpmem(host_of(a, "pc.ram"), A_PAGES * PAGE,
			host_of(b, "pc.ram"), A_PAGES * PAGE);
	g_assert_cmpmem(host_of(a, "vga.vram"), B_PAGES * PAGE,
			host_of(b, "vga.vram"), B_PAGES * PAGE);
}

static void test_full_roundtrip(Fixture *f, gconstpointer data)
{
	(void)data;
	g_autoptr(GError) err = NULL;
	MigramStageStats s;
	uint64_t id = take(f->src, f->base, 0, NULL, &s);
	/* Two pages in three are non-zero. */
	g_assert_cmpuint(s.pages_copied, ==, 200 + 26);
	g_assert_cmpuint(s.zero_skipped, ==, 100 + 14);

	g_autoptr(MigramSnapshotFile) sf = migram_snapshot_open(f->base, &err);
	g_assert_no_error(err);
	g_assert_cmpuint(migram_snapshot_id(sf), ==, id);
	g_assert_false(migram_snapshot_is_diff(sf));
	g_assert_cmpuint(migram_snapshot_block_count(sf), ==, 2);
	guint bi;
	g_assert_true(migram_snapshot_find_block(sf, "pc.ram", &bi));
	MigramSnapshotBlockInfo info;
	migram_snapshot_block_info(sf, bi, &info);
	g_assert_cmpuint(info.npages, ==, A_PAGES);
	g_assert_cmpuint(info.present_pages, ==, 200);
	g_assert_cmpuint(info.pages_offset % (1u << 20), ==, 0);
	g_assert_false(migram_snapshot_page_present(sf, bi, 0));
	g_assert_true(migram_snapshot_page_present(sf, bi, 1));
	uint8_t page[PAGE];
	g_assert_true(migram_snapshot_read_pages(sf, bi, 7, 1, page, &err));
	g_assert_cmpmem(page, PAGE, host_of(f->src, "pc.ram") + 7 * PAGE, PAGE);
	g_autofree char *desc = migram_snapshot_describe(sf);
	g_assert_nonnull(strstr(desc, "'pc.ram'"));
	g_assert_nonnull(strstr(desc, "200 present"));

	/* Restore into a fresh list, with 1 and with 4 threads. */
	for (guint threads = 1; threads <= 4; threads += 3) {
		g_autoptr(MigramRamList) dst = make_list(A_PAGES);
		memset(host_of(dst, "pc.ram"), 0x5a, PAGE); /* not zero */
		MigramRestoreStats rs;
		g_assert_true(migram_snapshot_restore(&sf, 1, dst, threads, &rs,
						      &err));
		g_assert_no_error(err);
		g_assert_cmpuint(rs.pages_read, ==, 226);
		g_assert_cmpuint(rs.pages_zeroed, ==, 114);
		assert_same(f->src, dst);
		uint64_t bad = 1;
		g_assert_true(migram_snapshot_verify(sf, dst, &bad, &err));
		g_assert_cmpuint(bad, ==, 0);
	}
}

static void test_sparse(Fixture *f, gconstpointer data)
{
	(void)data;
	/* Zero a block: its pages take no space in the file. */
	memset(host_of(f->src, "pc.ram"), 0, A_PAGES * PAGE);
	take(f->src, f->base, 0, NULL, NULL);
	struct stat sb;
	g_assert_cmpint(stat(f->base, &sb), ==, 0);
	g_assert_cmpuint((uint64_t)sb.st_size, >=, 2u << 20);
	/* Allocated: metadata and vga.vram's 26 pages, not pc.ram's 1.2 MB. */
	g_assert_cmpuint((uint64_t)sb.st_blocks * 512, <, 400u * 1024);
}

static unsigned long *dirty_map(uint64_t npages, const uint64_t *pages, guint n)
{
	unsigned long *m = g_new0(unsigned long, (npages + 63) / 64);
	for (guint i = 0; i < n; i++)
		m[pages[i] / 64] |= 1ul << (pages[i] % 64);
	return m;
}

static void test_diff_chain(Fixture *f, gconstpointer data)
{
	(void)data;
	g_autoptr(GError) err = NULL;
	uint64_t id0 = take(f->src, f->base, 0, NULL, NULL);
	/* Epoch 1: write pages 3 (was zero), 4, and zero page 5 of pc.ram. */
	uint8_t *a = host_of(f->src, "pc.ram");
	memset(a + 3 * PAGE, 0x33, PAGE);
	memset(a + 4 * PAGE, 0x44, PAGE);
	memset(a + 5 * PAGE, 0, PAGE);
	uint64_t d1[] = { 3, 4, 5 };
	unsigned long *dirty1[2] = { dirty_map(A_PAGES, d1, 3),
				     dirty_map(B_PAGES, NULL, 0) };
	uint64_t id1 = take(f->src, f->diff, id0, dirty1, NULL);
	/* Epoch 2: vga.vram page 39 and pc.ram page 4 again. */
	memset(host_of(f->src, "vga.vram") + 39 * PAGE, 0x99, PAGE);
	memset(a + 4 * PAGE, 0x45, PAGE);
	uint64_t d2a[] = { 4 }, d2b[] = { 39 };
	unsigned long *dirty2[2] = { dirty_map(A_PAGES, d2a, 1),
				     dirty_map(B_PAGES, d2b, 1) };
	take(f->src, f->diff2, id1, dirty2, NULL);
	for (int i = 0; i < 2; i++) {
		g_free(dirty1[i]);
		g_free(dirty2[i]);
	}

	MigramSnapshotFile *chain[3] = {
		migram_snapshot_open(f->base, &err),
		migram_snapshot_open(f->diff, &err),
		migram_snapshot_open(f->diff2, &err),
	};
	g_assert_no_error(err);
	g_assert_true(migram_snapshot_is_diff(chain[1]));
	g_assert_cmpuint(migram_snapshot_parent_id(chain[1]), ==, id0);
	MigramSnapshotBlockInfo info;
	migram_snapshot_block_info(chain[1], 0, &info);
	g_assert_cmpuint(info.present_pages, ==, 3); /* the zeroed one too */

	g_autoptr(MigramRamList) dst = make_list(A_PAGES);
	g_assert_true(migram_snapshot_restore(chain, 3, dst, 2, NULL, &err));
	g_assert_no_error(err);
	assert_same(f->src, dst);
	uint64_t bad = 1;
	g_assert_true(migram_snapshot_verify(chain[2], dst, &bad, &err));
	g_assert_cmpuint(bad, ==, 0);
	/* The base alone: the epoch-0 memory, which differs in 4 pages. */
	g_assert_true(migram_snapshot_restore(chain, 1, dst, 1, NULL, &err));
	g_assert_true(migram_snapshot_verify(chain[2], dst, &bad, &err));
	g_assert_cmpuint(bad, ==, 4);
	g_assert_true(migram_snapshot_verify(chain[0], dst, &bad, &err));
	g_assert_cmpuint(bad, ==, 0);

	/* A diff without its base; diffs out of order. */
	g_assert_false(
		migram_snapshot_restore(chain + 1, 2, dst, 1, NULL, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(err->message, "without its base"));
	g_clear_error(&err);
	MigramSnapshotFile *wrong[2] = { chain[0], chain[2] };
	g_assert_false(migram_snapshot_restore(wrong, 2, dst, 1, NULL, &err));
	g_assert_nonnull(strstr(err->message, "not a diff of"));
	g_clear_error(&err);
	for (int i = 0; i < 3; i++)
		migram_snapshot_close(chain[i]);
}

typedef struct {
	const uint8_t *dst, *src;
	uint64_t npages;
	unsigned seed;
} Toucher;

/* A vCPU: read pages in a random order, each must be the source's. */
static gpointer toucher(gpointer p)
{
	Toucher *t = p;
	GRand *r = g_rand_new_with_seed(t->seed);
	for (uint64_t k = 0; k < t->npages; k++) {
		uint64_t pg = (uint64_t)g_rand_int_range(r, 0,
							 (gint32)t->npages);
		g_assert_true(memcmp(t->dst + pg * PAGE, t->src + pg * PAGE,
				     PAGE) == 0);
	}
	g_rand_free(r);
	return NULL;
}

static void test_lazy(Fixture *f, gconstpointer data)
{
	(void)data;
	GError *err = NULL;
	uint64_t id0 = take(f->src, f->base, 0, NULL, NULL);
	uint8_t *a = host_of(f->src, "pc.ram");
	memset(a + 9 * PAGE, 0x99, PAGE);
	memset(a + 10 * PAGE, 0, PAGE);
	uint64_t d[] = { 9, 10 };
	unsigned long *dirty[2] = { dirty_map(A_PAGES, d, 2),
				    dirty_map(B_PAGES, NULL, 0) };
	take(f->src, f->diff, id0, dirty, NULL);
	g_free(dirty[0]);
	g_free(dirty[1]);
	MigramSnapshotFile *chain[2] = { migram_snapshot_open(f->base, &err),
					 migram_snapshot_open(f->diff, &err) };
	g_assert_no_error(err);
	g_autoptr(MigramRamList) dst = make_list(A_PAGES);
	MigramLazyRestore *lr = migram_snapshot_lazy_start(chain, 2, dst, &err);
	if (!lr) {
		g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED);
		g_test_skip(err->message);
		g_error_free(err);
		migram_snapshot_close(chain[0]);
		migram_snapshot_close(chain[1]);
		return;
	}
	Toucher t[4];
	GThread *th[4];
	for (unsigned i = 0; i < 4; i++) {
		const char *name = i % 2 ? "vga.vram" : "pc.ram";
		t[i] = (Toucher){ host_of(dst, name), host_of(f->src, name),
				  i % 2 ? B_PAGES : A_PAGES, i + 1 };
		th[i] = g_thread_new("toucher", toucher, &t[i]);
	}
	for (unsigned i = 0; i < 4; i++)
		g_thread_join(th[i]);
	MigramLazyStats ls;
	g_assert_true(migram_snapshot_lazy_finish(lr, &ls, &err));
	g_assert_no_error(err);
	/* Every page placed exactly once, by a fault or the prefetcher. */
	g_assert_cmpuint(ls.faults + ls.prefetched, ==, A_PAGES + B_PAGES);
	/* The diff's two hot pages went first (unless a toucher did). */
	g_assert_cmpuint(ls.prefetched_hot, <=, 2);
	MigramSnapshotBlockInfo hi;
	migram_snapshot_block_info(chain[1], 0, &hi);
	g_assert_cmpuint(hi.hot_pages, ==, 2);
	g_assert_cmpuint(hi.hot_offset, !=, 0);
	migram_snapshot_block_info(chain[0], 0, &hi);
	g_assert_cmpuint(hi.hot_offset, ==, 0);
	assert_same(f->src, dst);
	uint64_t bad = 1;
	g_assert_true(migram_snapshot_verify(chain[1], dst, &bad, &err));
	g_assert_cmpuint(bad, ==, 0);
	migram_snapshot_close(chain[0]);
	migram_snapshot_close(chain[1]);
}

typedef struct {
	uint8_t *host;
	uint64_t npages;
	unsigned seed;
	volatile int *stop;
	uint64_t writes;
} Writer;

/* A vCPU writing whole pages at random while the snapshot is written. */
static gpointer writer_main(gpointer p)
{
	Writer *w = p;
	GRand *r = g_rand_new_with_seed(w->seed);
	while (!__atomic_load_n(w->stop, __ATOMIC_ACQUIRE) || w->writes < 64) {
		uint64_t pg = (uint64_t)g_rand_int_range(r, 0,
							 (gint32)w->npages);
		memset(w->host + pg * PAGE, (int)(w->seed * 16 + 1), PAGE);
		w->writes++;
	}
	g_rand_free(r);
	return NULL;
}

static void test_cow(Fixture *f, gconstpointer data)
{
	(void)data;
	GError *err = NULL;
	uint8_t *a = host_of(f->src, "pc.ram"),
		*v = host_of(f->src, "vga.vram");
	/* The memory at the pause instant. */
	g_autofree uint8_t *ea = g_memdup2(a, A_PAGES * PAGE);
	g_autofree uint8_t *ev = g_memdup2(v, B_PAGES * PAGE);
	MigramCowSnapshot *cow = migram_snapshot_cow_start(f->src, &err);
	if (!cow) {
		g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED);
		g_test_skip(err->message);
		g_error_free(err);
		return;
	}
	/* Resume: writers run while the file is written. */
	volatile int stop = 0;
	Writer wr[4];
	GThread *th[4];
	for (unsigned i = 0; i < 4; i++) {
		wr[i] = (Writer){ i % 2 ? v : a, i % 2 ? B_PAGES : A_PAGES,
				  i + 1, &stop, 0 };
		th[i] = g_thread_new("writer", writer_main, &wr[i]);
	}
	MigramSnapshotParams params = { 0 };
	MigramSnapshotWriter *w = migram_snapshot_writer_new(f->base, &params,
							     &err);
	g_assert_true(migram_snapshot_writer_add_list(w, f->src, &err));
	g_assert_true(migram_snapshot_writer_start(w, &err));
	g_assert_true(migram_snapshot_cow_write(cow, w, NULL, &err));
	g_assert_no_error(err);
	g_assert_true(migram_snapshot_writer_finish(w, NULL, &err));
	migram_snapshot_writer_free(w);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < 4; i++)
		g_thread_join(th[i]);
	MigramCowStats cs;
	migram_snapshot_cow_finish(cow, &cs);
	g_test_message("cow: %" G_GUINT64_FORMAT
		       " write faults, %" G_GUINT64_FORMAT
		       " pages written, %" G_GUINT64_FORMAT " from copies",
		       cs.wp_faults, cs.pages_written, cs.from_staging);
	g_assert_cmpuint(cs.pages_written + cs.zero_skipped, ==,
			 A_PAGES + B_PAGES);

	/* The file holds exactly the memory at the pause instant. */
	g_autoptr(MigramSnapshotFile) sf = migram_snapshot_open(f->base, &err);
	g_assert_no_error(err);
	g_autoptr(MigramRamList) dst = make_list(A_PAGES);
	g_assert_true(migram_snapshot_restore(&sf, 1, dst, 2, NULL, &err));
	g_assert_no_error(err);
	g_assert_cmpmem(host_of(dst, "pc.ram"), A_PAGES * PAGE, ea,
			A_PAGES * PAGE);
	g_assert_cmpmem(host_of(dst, "vga.vram"), B_PAGES * PAGE, ev,
			B_PAGES * PAGE);
	/* And the guest's later writes went through. */
	g_assert_cmpuint(wr[0].writes, >=, 64);
}

static void test_layout_mismatch(Fixture *f, gconstpointer data)
{
	(void)data;
	g_autoptr(GError) err = NULL;
	take(f->src, f->base, 0, NULL, NULL);
	g_autoptr(MigramSnapshotFile) sf = migram_snapshot_open(f->base, &err);
	g_autoptr(MigramRamList) other = make_list(A_PAGES + 16);
	g_assert_false(migram_snapshot_restore(&sf, 1, other, 1, NULL, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(err->message, "'pc.ram'"));
	g_assert_nonnull(strstr(err->message, "not this RAM layout"));
	/* Nothing was written into the other list. */
	const uint8_t *h = host_of(other, "pc.ram");
	g_assert_cmpuint(h[PAGE], ==, 0);
}

static void expect_bad(const char *path, const char *what)
{
	GError *err = NULL;
	MigramSnapshotFile *sf = migram_snapshot_open(path, &err);
	g_assert_null(sf);
	g_assert_nonnull(err);
	if (!strstr(err->message, what))
		g_error("expected '%s' in: %s", what, err->message);
	g_assert_nonnull(strstr(err->message, "offset"));
	g_error_free(err);
}

static void poke(const char *path, off_t off, uint8_t xor_with)
{
	int fd = open(path, O_RDWR);
	uint8_t b;
	g_assert_cmpint(pread(fd, &b, 1, off), ==, 1);
	b ^= xor_with;
	g_assert_cmpint(pwrite(fd, &b, 1, off), ==, 1);
	close(fd);
}

static void test_bad_files(Fixture *f, gconstpointer data)
{
	(void)data;
	g_autoptr(GError) err = NULL;
	/* An unfinished writer leaves no magic. */
	MigramSnapshotParams p = { 0 };
	MigramSnapshotWriter *w = migram_snapshot_writer_new(f->base, &p, &err);
	g_assert_true(migram_snapshot_writer_add_list(w, f->src, &err));
	g_assert_true(migram_snapshot_writer_start(w, &err));
	migram_snapshot_writer_free(w);
	expect_bad(f->base, "no snapshot magic");
	/* Empty. */
	g_assert_true(g_file_set_contents(f->base, "", 0, NULL));
	expect_bad(f->base, "shorter than");

	take(f->src, f->base, 0, NULL, NULL);
	struct stat sb;
	g_assert_cmpint(stat(f->base, &sb), ==, 0);
	/* Truncated: the last block's pages run past the end. */
	g_assert_cmpint(truncate(f->base, sb.st_size - PAGE), ==, 0);
	expect_bad(f->base, "past the end of the file");
	g_assert_cmpint(truncate(f->base, 100), ==, 0);
	expect_bad(f->base, "past the end");

	take(f->src, f->base, 0, NULL, NULL);
	poke(f->base, 8, 1); /* version */
	expect_bad(f->base, "version");
	poke(f->base, 8, 1);
	poke(f->base, 64 + 320 + 60, 0x20); /* a name byte */
	expect_bad(f->base, "check does not match");
	poke(f->base, 64 + 320 + 60, 0x20);
	/* A bitmap bit flipped: the count no longer matches. */
	g_autoptr(MigramSnapshotFile) ok = migram_snapshot_open(f->base, &err);
	g_assert_no_error(err);
	MigramSnapshotBlockInfo info;
	migram_snapshot_block_info(ok, 0, &info);
	poke(f->base, (off_t)info.bitmap_offset, 1);
	expect_bad(f->base, "present pages, the table says");
	poke(f->base, (off_t)info.bitmap_offset, 1);
	/* A bit past the block's pages (300 pages: word 4, bit 44). */
	guint ai;
	g_assert_true(migram_snapshot_find_block(ok, "pc.ram", &ai));
	migram_snapshot_block_info(ok, ai, &info);
	poke(f->base, (off_t)(info.bitmap_offset + 4 * 8 + 6), 0x80);
	expect_bad(f->base, "present bits past its 300 pages");
	poke(f->base, (off_t)(info.bitmap_offset + 4 * 8 + 6), 0x80);

	/* A diff's hot bitmap: validated the same way. */
	uint64_t id = take(f->src, f->base, 0, NULL, NULL);
	uint64_t d[] = { 299 };
	unsigned long *dirty[2] = { dirty_map(A_PAGES, d, 1),
				    dirty_map(B_PAGES, NULL, 0) };
	take(f->src, f->diff, id, dirty, NULL);
	g_free(dirty[0]);
	g_free(dirty[1]);
	g_autoptr(MigramSnapshotFile) df = migram_snapshot_open(f->diff, &err);
	g_assert_no_error(err);
	g_assert_true(migram_snapshot_find_block(df, "pc.ram", &ai));
	migram_snapshot_block_info(df, ai, &info);
	g_assert_cmpuint(info.hot_pages, ==, 1);
	poke(f->diff, (off_t)(info.hot_offset + 4 * 8 + 6), 0x80);
	expect_bad(f->diff, "hot bits past its 300 pages");
}

/* Device state: stored with its hash, read back whole, refused when its
 * bytes, its descriptor or the file's length are wrong. */
static void test_device_state(Fixture *f, gconstpointer data)
{
	(void)data;
	g_autoptr(GError) err = NULL;
	/* None: NOT_FOUND. */
	take(f->src, f->base, 0, NULL, NULL);
	g_autoptr(MigramSnapshotFile) none = migram_snapshot_open(f->base,
								  &err);
	g_assert_no_error(err);
	g_assert_cmpuint(migram_snapshot_device_state_size(none), ==, 0);
	g_assert_null(migram_snapshot_read_device_state(none, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND);
	g_clear_error(&err);

	/* Set before start, replaced after it: the second one is stored. */
	uint8_t state[3000];
	for (guint i = 0; i < sizeof(state); i++)
		state[i] = (uint8_t)(i * 7 + 1);
	MigramSnapshotParams p = { 0 };
	MigramSnapshotWriter *w = migram_snapshot_writer_new(f->base, &p, &err);
	g_assert_true(migram_snapshot_writer_add_list(w, f->src, &err));
	g_assert_true(
		migram_snapshot_writer_set_device_state(w, "old", 3, &err));
	g_assert_true(migram_snapshot_writer_start(w, &err));
	const uint8_t *src7 = host_of(f->src, "pc.ram") + 7 * PAGE;
	g_assert_true(migram_snapshot_writer_put_pages(w, 0, 7, 1, src7, &err));
	g_assert_false(
		migram_snapshot_writer_set_device_state(w, state, 0, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&err);
	g_assert_false(migram_snapshot_writer_set_device_state(
		w, state, MIGRAM_SNAPSHOT_MAX_DEVICE_BYTES + 1, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&err);
	g_assert_true(migram_snapshot_writer_set_device_state(
		w, state, sizeof(state), &err));
	g_assert_true(migram_snapshot_writer_finish(w, NULL, &err));
	g_assert_false(
		migram_snapshot_writer_set_device_state(w, state, 1, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&err);
	migram_snapshot_writer_free(w);

	g_autoptr(MigramSnapshotFile) sf = migram_snapshot_open(f->base, &err);
	g_assert_no_error(err);
	g_assert_cmpuint(migram_snapshot_device_state_size(sf), ==,
			 sizeof(state));
	g_autoptr(GBytes) got = migram_snapshot_read_device_state(sf, &err);
	g_assert_no_error(err);
	gsize len;
	const uint8_t *bytes = g_bytes_get_data(got, &len);
	g_assert_cmpmem(bytes, len, state, sizeof(state));
	g_autofree char *desc = migram_snapshot_describe(sf);
	g_assert_nonnull(strstr(desc, "device state: 3000 bytes @"));
	/* The pages are unaffected. */
	uint8_t page[PAGE];
	g_assert_true(migram_snapshot_read_pages(sf, 0, 7, 1, page, &err));
	g_assert_cmpmem(page, PAGE, src7, PAGE);

	/* Its offset, from the descriptor after the two entries. */
	int fd = open(f->base, O_RDONLY);
	uint8_t d[8];
	g_assert_cmpint(pread(fd, d, 8, 64 + 2 * 320), ==, 8);
	close(fd);
	uint64_t off = 0;
	for (int i = 7; i >= 0; i--)
		off = off << 8 | d[i];
	g_assert_cmpuint(off % 8, ==, 0);

	/* A byte of the state flipped: its hash says so, naming the offset. */
	poke(f->base, (off_t)off + 100, 0x01);
	g_autoptr(MigramSnapshotFile) bad = migram_snapshot_open(f->base, &err);
	g_assert_no_error(err);
	g_assert_null(migram_snapshot_read_device_state(bad, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
	g_autofree char *at = g_strdup_printf("offset %" G_GUINT64_FORMAT, off);
	g_assert_nonnull(strstr(err->message, at));
	g_assert_nonnull(strstr(err->message, "does not match its hash"));
	g_clear_error(&err);
	poke(f->base, (off_t)off + 100, 0x01);
	/* The descriptor is under the header check. */
	poke(f->base, 64 + 2 * 320 + 9, 0x01);
	expect_bad(f->base, "check does not match");
	poke(f->base, 64 + 2 * 320 + 9, 0x01);
	/* Truncated inside the state. */
	g_assert_cmpint(truncate(f->base, (off_t)off + 10), ==, 0);
	expect_bad(f->base, "the device state (3000 bytes) runs past the end");
}

/* Random byte corruption of the metadata: errors, never a crash. */
static void test_random_corruption(Fixture *f, gconstpointer data)
{
	(void)data;
	take(f->src, f->base, 0, NULL, NULL);
	gchar *orig = NULL;
	gsize len = 0;
	g_autoptr(MigramSnapshotFile) good = migram_snapshot_open(f->base,
								  NULL);
	MigramSnapshotBlockInfo info;
	migram_snapshot_block_info(good, 1, &info);
	/* The metadata ends before the first pages region. */
	int fd = open(f->base, O_RDONLY);
	len = 8192;
	orig = g_malloc(len);
	g_assert_cmpint(pread(fd, orig, len, 0), ==, (ssize_t)len);
	close(fd);
	GRand *r = g_rand_new_with_seed(17);
	guint opened = 0, runs = migram_test_scale(300);
	for (guint i = 0; i < runs; i++) {
		fd = open(f->base, O_RDWR);
		g_assert_cmpint(pwrite(fd, orig, len, 0), ==, (ssize_t)len);
		guint flips = (guint)g_rand_int_range(r, 1, 4);
		for (guint k = 0; k < flips; k++) {
			off_t at = (off_t)g_rand_int_range(r, 0, 64 + 640 + 64);
			uint8_t b = (uint8_t)g_rand_int(r);
			g_assert_cmpint(pwrite(fd, &b, 1, at), ==, 1);
		}
		close(fd);
		GError *err = NULL;
		MigramSnapshotFile *sf = migram_snapshot_open(f->base, &err);
		if (sf) {
			opened++;
			g_autofree char *d = migram_snapshot_describe(sf);
			migram_snapshot_close(sf);
		} else {
			g_assert_nonnull(err);
			g_error_free(err);
		}
	}
	/* The header check catches nearly everything. */
	g_assert_cmpuint(opened, <, runs / 10 + 1);
	g_rand_free(r);
	g_free(orig);
}

static void test_writer_misuse(Fixture *f, gconstpointer data)
{
	(void)data;
	GError *err = NULL;
	MigramSnapshotParams p = { .diff = true };
	g_assert_null(migram_snapshot_writer_new(f->base, &p, &err));
	g_assert_nonnull(strstr(err->message, "parent"));
	g_clear_error(&err);
	p = (MigramSnapshotParams){ 0 };
	g_autoptr(MigramSnapshotWriter) w =
		migram_snapshot_writer_new(f->base, &p, &err);
	uint8_t page[PAGE] = { 0 };
	g_assert_false(migram_snapshot_writer_start(w, &err));
	g_clear_error(&err);
	g_assert_false(migram_snapshot_writer_add_block(w, "", PAGE, PAGE, NULL,
							&err));
	g_clear_error(&err);
	g_assert_false(migram_snapshot_writer_add_block(w, "x", 100, PAGE, NULL,
							&err));
	g_clear_error(&err);
	g_assert_true(migram_snapshot_writer_add_block(w, "x", PAGE, PAGE, NULL,
						       &err));
	g_assert_false(migram_snapshot_writer_add_block(w, "x", PAGE, PAGE,
							NULL, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_EXISTS);
	g_clear_error(&err);
	g_assert_false(
		migram_snapshot_writer_put_pages(w, 0, 0, 1, page, &err));
	g_clear_error(&err);
	g_assert_true(migram_snapshot_writer_start(w, &err));
	g_assert_false(
		migram_snapshot_writer_put_pages(w, 0, 1, 1, page, &err));
	g_assert_nonnull(strstr(err->message, "outside"));
	g_clear_error(&err);
	g_assert_false(
		migram_snapshot_writer_put_pages(w, 1, 0, 1, page, &err));
	g_clear_error(&err);
	g_assert_true(migram_snapshot_writer_finish(w, NULL, &err));
	g_assert_false(migram_snapshot_writer_finish(w, NULL, &err));
	g_clear_error(&err);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
#define ADD(path, fn)                                                          \
	g_test_add("/snapshot/snapshot/file/" path, Fixture, NULL, fx_setup,   \
		   fn, fx_teardown)
	ADD("full-roundtrip", test_full_roundtrip);
	ADD("sparse", test_sparse);
	ADD("diff-chain", test_diff_chain);
	ADD("lazy", test_lazy);
	ADD("cow", test_cow);
	ADD("layout-mismatch", test_layout_mismatch);
	ADD("bad-files", test_bad_files);
	ADD("random-corruption", test_random_corruption);
	ADD("writer-misuse", test_writer_misuse);
	ADD("device-state", test_device_state);
#undef ADD
	int rc = g_test_run();
	urcu_memb_unregister_thread();
	return rc;
}
