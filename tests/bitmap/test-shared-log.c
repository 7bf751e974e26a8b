/* SPDX-License-Identifier: MIT */
/*
 * Shared dirty-log regions: another process marks, this one collects; and
 * replacing the region under running writers loses no mark.
 */
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/migram.h>
#include <migram/shared-log.h>

#include "migram-test-util.h"

#define PAGE MIGRAM_LOG_PAGE_SIZE

static void test_region_basics(void)
{
	g_autoptr(GError) error = NULL;
	/* 1000 pages and one byte: 1001 pages tracked. */
	g_autoptr(MigramLogRegion) r = migram_log_region_new(1000 * PAGE + 1,
							     &error);
	unsigned long *dst = migram_bitmap_new(1001);

	g_assert_no_error(error);
	g_assert_cmpint(migram_log_region_fd(r), >=, 0);
	g_assert_cmpuint(migram_log_region_page_count(r), ==, 1001);
	g_assert_cmpuint(migram_log_region_mark(r, 0, 0), ==, 0);
	g_assert_cmpuint(migram_log_region_mark(r, PAGE - 1, 2), ==, 2);
	g_assert_cmpuint(migram_log_region_mark(r, PAGE, 1), ==, 0);
	g_assert_cmpuint(migram_log_region_mark(r, 999 * PAGE, 10 * PAGE), ==,
			 2);
	g_assert_cmpuint(migram_log_region_mark(r, 1001 * PAGE, PAGE), ==, 0);
	g_assert_true(migram_log_region_test(r, 1000));
	g_assert_false(migram_log_region_test(r, 1001));
	g_assert_cmpuint(migram_log_region_collect_words(r, dst, 1001), ==, 4);
	migram_test_assert_ranges(dst, 1001, "0-1,999-1000");
	g_assert_false(migram_log_region_test(r, 0));
	g_assert_cmpuint(migram_log_region_collect_words(r, dst, 1001), ==, 0);
	migram_bitmap_free(dst);
}

static void test_region_errors(void)
{
	GError *error = NULL;
	g_autoptr(MigramLogRegion) small = migram_log_region_new(PAGE, NULL);

	g_assert_null(migram_log_region_new(0, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	g_assert_null(migram_log_region_new(UINT64_MAX, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);

	/* A file too small for the claimed size would fault: refused. */
	g_assert_null(migram_log_region_open(migram_log_region_fd(small),
					     1ULL << 40, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(error->message, "needed"));
	g_clear_error(&error);
	g_assert_null(migram_log_region_open(-1, PAGE, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_clear_error(&error);
}

/* The pages the child marks: a deterministic pseudo-random set. */
static void child_pages(guint32 seed, uint64_t pages, unsigned long *out)
{
	GRand *r = g_rand_new_with_seed(seed);

	for (int i = 0; i < 3000; i++) {
		uint64_t p = (uint64_t)g_rand_int_range(r, 0, (gint32)pages);

		migram_bitmap_set_bit(out, p);
	}
	g_rand_free(r);
}

static void test_other_process(void)
{
	const uint64_t covered = 64ULL << 20; /* 16384 pages */
	const uint64_t pages = covered / PAGE;
	g_autoptr(MigramLogRegion) r = migram_log_region_new(covered, NULL);
	unsigned long *want = migram_bitmap_new(pages);
	unsigned long *got = migram_bitmap_new(pages);
	guint32 seed = g_test_rand_int();
	int status;
	pid_t pid;

	child_pages(seed, pages, want);
	pid = fork();
	g_assert_cmpint(pid, >=, 0);
	if (pid == 0) {
		/* The device side: its own mapping from the fd alone. */
		MigramLogRegion *dev = migram_log_region_open(
			migram_log_region_fd(r), covered, NULL);
		size_t b;

		if (!dev)
			_exit(2);
		b = migram_bitmap_find_next_set(want, pages, 0);
		while (b < pages) {
			migram_log_region_mark(dev, b * PAGE + 17, 1);
			b = migram_bitmap_find_next_set(want, pages, b + 1);
		}
		migram_log_region_free(dev);
		_exit(0);
	}
	g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
	g_assert_true(WIFEXITED(status));
	g_assert_cmpint(WEXITSTATUS(status), ==, 0);
	g_assert_cmpuint(migram_log_region_collect_words(r, got, pages), ==,
			 migram_bitmap_count(want, 0, pages));
	g_assert_cmpmem(got, MIGRAM_BITS_TO_LONGS(pages) * sizeof(long), want,
			MIGRAM_BITS_TO_LONGS(pages) * sizeof(long));
	migram_bitmap_free(want);
	migram_bitmap_free(got);
}

/*
 * Writers mark through the holder while the main thread keeps replacing the
 * region and collecting in between.  Each page is marked exactly once, so a
 * mark stranded in a retired region is never made again: the final
 * collection must hold every page, or one was lost.
 */
#define N_WRITERS 4
#define PAGES_PER_WRITER 16384u
#define LOG_PAGES (N_WRITERS * PAGES_PER_WRITER)

typedef struct {
	MigramSharedLog *log;
	unsigned int index;
	int *finished;
} Writer;

static gpointer writer_main(gpointer p)
{
	Writer *w = p;

	urcu_memb_register_thread();
	for (uint64_t j = 0; j < PAGES_PER_WRITER; j++) {
		uint64_t pfn = j * N_WRITERS + w->index;

		migram_shared_log_mark(w->log, pfn * PAGE + 100, 8);
		/* Spread the marks over many replacements. */
		if (j % 64 == 0)
			g_usleep(20);
	}
	urcu_memb_unregister_thread();
	g_atomic_int_inc(w->finished);
	return NULL;
}

static void test_replace_under_writers(void)
{
	MigramSharedLog *log = migram_shared_log_new(
		migram_log_region_new((uint64_t)LOG_PAGES * PAGE, NULL));
	unsigned long *collected = migram_bitmap_new(LOG_PAGES);
	Writer w[N_WRITERS];
	GThread *t[N_WRITERS];
	int finished = 0;
	unsigned int rounds = 0, refused = 0;

	urcu_memb_register_thread();
	for (unsigned int i = 0; i < N_WRITERS; i++) {
		w[i] = (Writer){ .log = log,
				 .index = i,
				 .finished = &finished };
		t[i] = g_thread_new("log-writer", writer_main, &w[i]);
	}
	while (g_atomic_int_get(&finished) < N_WRITERS) {
		g_autoptr(GError) error = NULL;
		MigramLogRegion *next;

		/* Now and then, a region smaller than the current one. */
		if (rounds % 5 == 4) {
			next = migram_log_region_new(LOG_PAGES / 2 * PAGE,
						     NULL);
			g_assert_false(
				migram_shared_log_replace(log, next, &error));
			g_assert_error(error, MIGRAM_ERROR,
				       MIGRAM_ERROR_INVALID);
			migram_log_region_free(next);
			refused++;
		} else {
			next = migram_log_region_new((uint64_t)LOG_PAGES * PAGE,
						     &error);
			g_assert_no_error(error);
			g_assert_true(
				migram_shared_log_replace(log, next, &error));
			g_assert_no_error(error);
		}
		rounds++;
		if (rounds % 2)
			migram_shared_log_collect_words(log, collected,
							LOG_PAGES);
		g_usleep(500);
	}
	for (unsigned int i = 0; i < N_WRITERS; i++)
		g_thread_join(t[i]);
	migram_shared_log_collect_words(log, collected, LOG_PAGES);
	g_test_message("%u replacements (%u refused) during %u marks", rounds,
		       refused, LOG_PAGES);
	g_assert_cmpuint(rounds - refused, >=, 3);
	g_assert_cmpuint(migram_bitmap_count(collected, 0, LOG_PAGES), ==,
			 LOG_PAGES);
	urcu_memb_unregister_thread();
	migram_shared_log_free(log);
	migram_bitmap_free(collected);
}

/*
 * Collectors racing with replace: several threads collect while this one
 * marks every page once and keeps replacing the region.  Exchange-and-
 * collect hands each mark to exactly one collector (or, for a mark left in a
 * retired region, to the replacement, and then to one collector), so across
 * all collectors and a final collection every page turns up exactly once.
 *
 * Under ThreadSanitizer this is also the test for the grace-period edge of
 * migram-rcu.h: a collector only acquires (it never releases anything the
 * replacer acquires), so nothing but that edge orders its reads of the old
 * region before replace() frees it.
 */
#define N_COLLECTORS 2

typedef struct {
	MigramSharedLog *log;
	unsigned long *got;
	int *stop;
} Collector;

static gpointer collector_main(gpointer p)
{
	Collector *c = p;

	urcu_memb_register_thread();
	while (!g_atomic_int_get(c->stop))
		migram_shared_log_collect_words(c->log, c->got, LOG_PAGES);
	urcu_memb_unregister_thread();
	return NULL;
}

static void test_collectors_during_replace(void)
{
	MigramSharedLog *log = migram_shared_log_new(
		migram_log_region_new((uint64_t)LOG_PAGES * PAGE, NULL));
	unsigned long *all = migram_bitmap_new(LOG_PAGES);
	unsigned long *rest = migram_bitmap_new(LOG_PAGES);
	Collector c[N_COLLECTORS];
	GThread *t[N_COLLECTORS];
	size_t total;
	int stop = 0;

	urcu_memb_register_thread();
	for (unsigned int i = 0; i < N_COLLECTORS; i++) {
		c[i] = (Collector){ .log = log,
				    .got = migram_bitmap_new(LOG_PAGES),
				    .stop = &stop };
		t[i] = g_thread_new("log-collector", collector_main, &c[i]);
	}
	for (uint64_t pfn = 0; pfn < LOG_PAGES; pfn++) {
		g_assert_cmpuint(migram_shared_log_mark(log, pfn * PAGE, 1), ==,
				 1);
		/* Let every collector run (2 cores, 3 threads). */
		if (pfn % 256 == 0)
			g_usleep(20);
		if (pfn % 2048 == 2047)
			g_assert_true(migram_shared_log_replace(
				log,
				migram_log_region_new(
					(uint64_t)LOG_PAGES * PAGE, NULL),
				NULL));
	}
	g_atomic_int_set(&stop, 1);
	for (unsigned int i = 0; i < N_COLLECTORS; i++)
		g_thread_join(t[i]);
	migram_shared_log_collect_words(log, rest, LOG_PAGES);

	/* Disjoint and complete: the counts add up to the size of the union. */
	total = migram_bitmap_count(rest, 0, LOG_PAGES);
	migram_bitmap_copy(all, rest, LOG_PAGES);
	for (unsigned int i = 0; i < N_COLLECTORS; i++) {
		size_t n = migram_bitmap_count(c[i].got, 0, LOG_PAGES);

		g_test_message("collector %u took %zu pages", i, n);
		total += n;
		migram_bitmap_exchange_collect(all, c[i].got, 0, LOG_PAGES);
		migram_bitmap_free(c[i].got);
	}
	g_assert_cmpuint(migram_bitmap_count(all, 0, LOG_PAGES), ==, LOG_PAGES);
	g_assert_cmpuint(total, ==, LOG_PAGES);
	urcu_memb_unregister_thread();
	migram_shared_log_free(log);
	migram_bitmap_free(rest);
	migram_bitmap_free(all);
}

static void test_collect_into_dirty_bitmap(void)
{
	g_autoptr(MigramDirtyBitmap) db = migram_dirty_bitmap_new(0, 100 * PAGE,
								  PAGE, NULL);
	MigramSharedLog *log = migram_shared_log_new(NULL);
	g_autoptr(GArray) pages = NULL;

	urcu_memb_register_thread();
	/* No region yet: marks go nowhere, collect finds nothing. */
	g_assert_cmpuint(migram_shared_log_mark(log, 0, PAGE), ==, 0);
	g_assert_true(migram_shared_log_replace(
		log, migram_log_region_new(200 * PAGE, NULL), NULL));
	g_assert_cmpuint(migram_shared_log_mark(log, 3 * PAGE, 2 * PAGE), ==,
			 2);
	/* Past the dirty bitmap's end: left in the log, not written past. */
	g_assert_cmpuint(migram_shared_log_mark(log, 150 * PAGE, 1), ==, 1);
	migram_dirty_bitmap_set_dirty_by_index(db, 4);
	g_assert_cmpuint(migram_shared_log_collect(log, db), ==, 1);
	pages = migram_dirty_bitmap_drain(db);
	g_assert_cmpuint(pages->len, ==, 2);
	g_assert_cmpuint(g_array_index(pages, guint64, 0), ==, 3);
	g_assert_cmpuint(g_array_index(pages, guint64, 1), ==, 4);
	urcu_memb_unregister_thread();
	migram_shared_log_free(log);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/bitmap/shared-log/region-basics", test_region_basics);
	g_test_add_func("/bitmap/shared-log/region-errors", test_region_errors);
	g_test_add_func("/bitmap/shared-log/other-process", test_other_process);
	g_test_add_func("/bitmap/shared-log/replace-under-writers",
			test_replace_under_writers);
	g_test_add_func("/bitmap/shared-log/collectors-during-replace",
			test_collectors_during_replace);
	g_test_add_func("/bitmap/shared-log/collect-into-dirty-bitmap",
			test_collect_into_dirty_bitmap);
	return g_test_run();
}
