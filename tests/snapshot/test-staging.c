/* SPDX-License-Identifier: MIT */
/*
 * Staging memory: the seed's operations (copy, page_content,
 * first_data_range bounded by max_pages, clear_range releasing memory,
 * present_pages), bad ranges, a block-sized staging, and many threads
 * copying, draining and clearing at once, compared byte for byte.
 */
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

#include <migram/migram.h>
#include <migram/staging.h>

#include "migram-test-util.h"

#define PAGE 4096u

typedef struct {
	MigramStaging *st;
	uint8_t *src; /* 64 pages, page i filled with byte i + 1 */
} Fixture;

static void fx_setup(Fixture *f, gconstpointer data)
{
	(void)data;
	g_autoptr(GError) err = NULL;
	f->st = migram_staging_new("test", 64, &err);
	g_assert_no_error(err);
	f->src = g_malloc(64 * PAGE);
	for (unsigned i = 0; i < 64; i++)
		memset(f->src + i * PAGE, (int)(i + 1), PAGE);
}

static void fx_teardown(Fixture *f, gconstpointer data)
{
	(void)data;
	migram_staging_free(f->st);
	g_free(f->src);
}

static void test_copy_content(Fixture *f, gconstpointer data)
{
	(void)data;
	g_autoptr(GError) err = NULL;
	const void *p = (const void *)1;

	g_assert_cmpuint(migram_staging_page_count(f->st), ==, 64);
	g_assert_cmpuint(migram_staging_present_pages(f->st), ==, 0);
	g_assert_true(migram_staging_page_content(f->st, 5, &p, &err));
	g_assert_null(p);
	g_assert_true(
		migram_staging_copy(f->st, f->src + 5 * PAGE, 5, 3, &err));
	g_assert_no_error(err);
	g_assert_cmpuint(migram_staging_present_pages(f->st), ==, 3);
	for (unsigned i = 5; i < 8; i++) {
		g_assert_true(migram_staging_page_content(f->st, i, &p, &err));
		g_assert_nonnull(p);
		g_assert_cmpmem(p, PAGE, f->src + i * PAGE, PAGE);
	}
	g_assert_true(migram_staging_page_content(f->st, 8, &p, &err));
	g_assert_null(p);
	/* The source may change afterwards: staging keeps the copy. */
	memset(f->src + 5 * PAGE, 0xee, PAGE);
	g_assert_true(migram_staging_page_content(f->st, 5, &p, &err));
	g_assert_cmpuint(((const uint8_t *)p)[0], ==, 6);
	/* A slice reads present and absent pages (zeros). */
	const uint8_t *s = migram_staging_get_slice(f->st, 4, 2, &err);
	g_assert_nonnull(s);
	g_assert_cmpuint(s[0], ==, 0);
	g_assert_cmpuint(s[PAGE], ==, 6);
}

static void test_first_data_range(Fixture *f, gconstpointer data)
{
	(void)data;
	uint64_t first = 99, n = 99;

	g_assert_false(migram_staging_first_data_range(f->st, 8, &first, &n));
	g_assert_cmpuint(first, ==, 99);
	g_assert_true(migram_staging_copy(f->st, f->src, 10, 20, NULL));
	g_assert_true(migram_staging_copy(f->st, f->src, 63, 1, NULL));
	/* Bounded by max_pages even though the run is 20 long. */
	g_assert_true(migram_staging_first_data_range(f->st, 8, &first, &n));
	g_assert_cmpuint(first, ==, 10);
	g_assert_cmpuint(n, ==, 8);
	g_assert_true(migram_staging_first_data_range(f->st, 100, &first, &n));
	g_assert_cmpuint(n, ==, 20);
	/* The run that ends at the last page. */
	g_assert_true(
		migram_staging_next_data_range(f->st, 30, 100, &first, &n));
	g_assert_cmpuint(first, ==, 63);
	g_assert_cmpuint(n, ==, 1);
	/* Drain: take ranges, clear them, until empty. */
	uint64_t drained = 0, rounds = 0;
	while (migram_staging_first_data_range(f->st, 7, &first, &n)) {
		g_assert_cmpuint(n, <=, 7);
		g_assert_true(
			migram_staging_clear_range(f->st, first, n, NULL));
		drained += n;
		rounds++;
	}
	g_assert_cmpuint(drained, ==, 21);
	g_assert_cmpuint(rounds, ==, 4);
	g_assert_cmpuint(migram_staging_present_pages(f->st), ==, 0);
}

/* Bytes the memfd holds in memory (st_blocks is in 512-byte units). */
static uint64_t resident(MigramStaging *st)
{
	struct stat sb;
	g_assert_cmpint(fstat(migram_staging_fd(st), &sb), ==, 0);
	return (uint64_t)sb.st_blocks * 512;
}

static void test_clear_releases(Fixture *f, gconstpointer data)
{
	(void)data;
	g_autoptr(GError) err = NULL;
	const void *p;

	g_assert_cmpuint(resident(f->st), ==, 0);
	g_assert_true(migram_staging_copy(f->st, f->src, 0, 64, &err));
	g_assert_cmpuint(resident(f->st), >=, 64 * PAGE);
	g_assert_true(migram_staging_clear_range(f->st, 0, 32, &err));
	g_assert_no_error(err);
	g_assert_cmpuint(resident(f->st), <=, 32 * PAGE);
	g_assert_cmpuint(migram_staging_present_pages(f->st), ==, 32);
	g_assert_true(migram_staging_page_content(f->st, 3, &p, NULL));
	g_assert_null(p);
	/* A cleared page reads as zeros through a slice. */
	const uint8_t *s = migram_staging_get_slice(f->st, 3, 1, NULL);
	g_assert_cmpuint(s[0], ==, 0);
	g_assert_cmpuint(s[PAGE - 1], ==, 0);
	/* Clearing nothing, and clearing absent pages, are fine. */
	g_assert_true(migram_staging_clear_range(f->st, 10, 0, &err));
	g_assert_true(migram_staging_clear_range(f->st, 0, 32, &err));
	g_assert_cmpuint(migram_staging_present_pages(f->st), ==, 32);
}

static void test_populate(Fixture *f, gconstpointer data)
{
	(void)data;
	GError *err = NULL;

	if (!migram_staging_populate(f->st, 0, 64, &err)) {
		g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED);
		g_test_skip("MADV_POPULATE_WRITE needs Linux 5.14");
		g_error_free(err);
		return;
	}
	g_assert_cmpuint(resident(f->st), >=, 64 * PAGE);
	/* Populated is not present, and reads as zeros. */
	g_assert_cmpuint(migram_staging_present_pages(f->st), ==, 0);
	const uint8_t *s = migram_staging_get_slice(f->st, 9, 1, NULL);
	g_assert_cmpuint(s[100], ==, 0);
	g_assert_false(migram_staging_populate(f->st, 60, 5, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_error_free(err);
}

static void expect_invalid(GError *err, const char *what)
{
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(err->message, what));
}

static void test_bad_ranges(Fixture *f, gconstpointer data)
{
	(void)data;
	GError *err = NULL;
	const void *p;
	uint64_t a, b;

	g_assert_false(migram_staging_copy(f->st, f->src, 60, 5, &err));
	expect_invalid(err, "outside");
	g_clear_error(&err);
	g_assert_false(migram_staging_copy(f->st, f->src, UINT64_MAX, 2, &err));
	expect_invalid(err, "outside");
	g_clear_error(&err);
	g_assert_false(migram_staging_copy(f->st, f->src, 1, 0, &err));
	expect_invalid(err, "0 pages");
	g_clear_error(&err);
	g_assert_false(migram_staging_page_content(f->st, 64, &p, &err));
	expect_invalid(err, "past the end");
	g_clear_error(&err);
	g_assert_null(migram_staging_get_slice(f->st, 63, 2, &err));
	expect_invalid(err, "outside");
	g_clear_error(&err);
	g_assert_false(migram_staging_clear_range(f->st, 2, UINT64_MAX, &err));
	expect_invalid(err, "outside");
	g_clear_error(&err);
	/* Nothing was copied by the failed calls. */
	g_assert_cmpuint(migram_staging_present_pages(f->st), ==, 0);
	g_assert_false(migram_staging_first_data_range(f->st, 1, &a, &b));
	g_assert_null(migram_staging_new("x", 0, &err));
	expect_invalid(err, "bad size");
	g_clear_error(&err);
	g_assert_null(migram_staging_new("x", UINT64_MAX / 2, &err));
	g_assert_nonnull(err);
	g_clear_error(&err);
}

static void test_for_block(void)
{
	g_autoptr(GError) err = NULL;
	g_autoptr(MigramRamList) list = migram_ram_list_new();
	MigramRamBlockConfig cfg = {
		.idstr = "pc.ram",
		.backend = MIGRAM_RAM_BACKEND_MEMFD,
		.used_length = 16 * PAGE,
		.max_length = 32 * PAGE,
	};
	MigramRamBlock *blk = migram_ram_list_add(list, &cfg, &err);
	g_assert_no_error(err);
	uint8_t *host = migram_ram_block_host(blk);
	for (unsigned i = 0; i < 16; i++)
		memset(host + i * PAGE, 0x40 + (int)i, PAGE);

	/* colo_cache: the whole block copied into a staging. */
	g_autoptr(MigramStaging) cache = migram_staging_new_for_block(blk,
								      &err);
	g_assert_no_error(err);
	g_assert_cmpuint(migram_staging_page_count(cache), ==, 32);
	g_assert_true(migram_staging_copy(cache, host, 0, 16, &err));
	memset(host, 0, 16 * PAGE);
	const uint8_t *s = migram_staging_get_slice(cache, 0, 16, &err);
	for (unsigned i = 0; i < 16; i++)
		g_assert_cmpuint(s[i * PAGE + 7], ==, 0x40 + i);
	g_autofree char *link = g_strdup_printf("/proc/self/fd/%d",
						migram_staging_fd(cache));
	g_autofree char *target = g_file_read_link(link, NULL);
	g_assert_nonnull(target);
	g_assert_nonnull(strstr(target, "migram-staging:pc.ram"));
}

/*
 * Stress: each of N threads owns the pages i with i % N == t and loops
 * copying a fresh pattern into its pages, checking them, and clearing
 * some, while a reader thread walks data ranges.  At the end, every
 * present page equals the last pattern its owner copied, byte for byte,
 * and every other page is absent.
 */
#define ST_THREADS 8
#define ST_PAGES 512

typedef struct {
	MigramStaging *st;
	unsigned t;
	unsigned rounds;
	uint8_t *expect; /* ST_PAGES pages; this thread's pages only */
	bool *present;
} Worker;

typedef struct {
	MigramStaging *st;
	volatile int stop;
	uint64_t seen;
} Reader;

static void *worker(void *arg)
{
	Worker *w = arg;
	uint8_t *page = g_malloc(PAGE);
	GRand *r = g_rand_new_with_seed(w->t + 1);
	for (unsigned round = 0; round < w->rounds; round++) {
		for (unsigned i = w->t; i < ST_PAGES; i += ST_THREADS) {
			for (unsigned b = 0; b < PAGE; b += 4) {
				guint32 v = g_rand_int(r);
				memcpy(page + b, &v, 4);
			}
			g_assert_true(
				migram_staging_copy(w->st, page, i, 1, NULL));
			memcpy(w->expect + (size_t)i * PAGE, page, PAGE);
			w->present[i] = true;
			const void *c;
			g_assert_true(migram_staging_page_content(w->st, i, &c,
								  NULL));
			g_assert_true(memcmp(c, page, PAGE) == 0);
			if (g_rand_int_range(r, 0, 4) == 0) {
				g_assert_true(migram_staging_clear_range(
					w->st, i, 1, NULL));
				w->present[i] = false;
			}
		}
	}
	g_rand_free(r);
	g_free(page);
	return NULL;
}

static void *reader(void *arg)
{
	Reader *rd = arg;
	while (!__atomic_load_n(&rd->stop, __ATOMIC_ACQUIRE)) {
		uint64_t from = 0, first, n;
		while (migram_staging_next_data_range(rd->st, from, 16, &first,
						      &n)) {
			g_assert_cmpuint(n, >=, 1);
			g_assert_cmpuint(n, <=, 16);
			g_assert_cmpuint(first + n, <=, ST_PAGES);
			rd->seen += n;
			from = first + n;
		}
		(void)migram_staging_present_pages(rd->st);
	}
	return NULL;
}

static void test_stress(void)
{
	g_autoptr(GError) err = NULL;
	g_autoptr(MigramStaging) st = migram_staging_new("stress", ST_PAGES,
							 &err);
	g_assert_no_error(err);
	Worker w[ST_THREADS];
	pthread_t th[ST_THREADS], rth;
	Reader rd = { .st = st };
	uint8_t *expect = g_malloc0((size_t)ST_PAGES * PAGE);
	bool present[ST_PAGES] = { 0 };

	g_assert_cmpint(pthread_create(&rth, NULL, reader, &rd), ==, 0);
	for (unsigned t = 0; t < ST_THREADS; t++) {
		w[t] = (Worker){ .st = st,
				 .t = t,
				 .rounds = migram_test_scale(20),
				 .expect = expect,
				 .present = present };
		g_assert_cmpint(pthread_create(&th[t], NULL, worker, &w[t]), ==,
				0);
	}
	for (unsigned t = 0; t < ST_THREADS; t++)
		pthread_join(th[t], NULL);
	__atomic_store_n(&rd.stop, 1, __ATOMIC_RELEASE);
	pthread_join(rth, NULL);

	uint64_t want = 0;
	for (unsigned i = 0; i < ST_PAGES; i++) {
		const void *c;
		g_assert_true(migram_staging_page_content(st, i, &c, NULL));
		if (present[i]) {
			want++;
			g_assert_nonnull(c);
			g_assert_true(memcmp(c, expect + (size_t)i * PAGE,
					     PAGE) == 0);
		} else {
			g_assert_null(c);
		}
	}
	g_assert_cmpuint(migram_staging_present_pages(st), ==, want);
	g_free(expect);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
#define ADD(path, fn)                                                          \
	g_test_add("/snapshot/staging/" path, Fixture, NULL, fx_setup, fn,     \
		   fx_teardown)
	ADD("copy-content", test_copy_content);
	ADD("first-data-range", test_first_data_range);
	ADD("clear-releases", test_clear_releases);
	ADD("bad-ranges", test_bad_ranges);
	ADD("populate", test_populate);
#undef ADD
	g_test_add_func("/snapshot/staging/for-block", test_for_block);
	g_test_add_func("/snapshot/staging/stress", test_stress);
	return g_test_run();
}
