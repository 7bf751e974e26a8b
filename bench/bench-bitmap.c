/* SPDX-License-Identifier: MIT */
/*
 * Bitmap benchmarks, each reported as a ratio to the physical limit measured
 * in the same run: a plain sequential read of the same buffer.
 *
 * The bitmap is that of a 1 TiB guest at 4 KiB pages: 2^28 bits, 32 MiB.
 *
 *   plain read                  sum every word (the limit)
 *   find-next, density d        walk every set bit with find_next_set
 *   exchange-collect, density d take every word into a zeroed destination
 *   set_dirty, 1 and 2 threads  random pages of a 2^28-page dirty bitmap
 *
 * Each figure is the median of several runs.  Nothing here passes or fails
 * on a time; the exit code only says the benchmark ran.
 */
#include <stdio.h>
#include <string.h>

#include <migram/bitmap.h>
#include <migram/dirty-bitmap.h>

#define NBITS (1ULL << 28)
#define NWORDS (NBITS / MIGRAM_BITS_PER_LONG)
#define BYTES (NWORDS * sizeof(unsigned long))
#define RUNS 7

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return v[n / 2];
}

static double now(void)
{
	return (double)g_get_monotonic_time() / 1e6;
}

/* density of set bits, placed in runs of run bits at random positions */
static void fill(unsigned long *map, double density, size_t run, guint32 seed)
{
	GRand *r = g_rand_new_with_seed(seed);
	uint64_t n = (uint64_t)(density * NBITS) / run;

	memset(map, 0, BYTES);
	for (uint64_t i = 0; i < n; i++)
		migram_bitmap_set(
			map, (size_t)g_rand_double_range(r, 0, NBITS - run),
			run);
	g_rand_free(r);
}

static volatile unsigned long sink;

static double bench_plain_read_once(const unsigned long *map)
{
	{
		double t0 = now();
		unsigned long a0 = 0, a1 = 0, a2 = 0, a3 = 0;

		/* Four independent chains: bound by bandwidth, not latency. */
		for (size_t i = 0; i < NWORDS; i += 4) {
			a0 |= map[i];
			a1 |= map[i + 1];
			a2 |= map[i + 2];
			a3 |= map[i + 3];
		}
		sink = a0 | a1 | a2 | a3;
		return now() - t0;
	}
}

static double bench_plain_read(const unsigned long *map)
{
	double t[RUNS];

	for (int k = 0; k < RUNS; k++)
		t[k] = bench_plain_read_once(map);
	return BYTES / median(t, RUNS) / 1e9;
}

static double bench_find(const unsigned long *map)
{
	double t[RUNS];

	for (int k = 0; k < RUNS; k++) {
		double t0 = now();
		size_t n = 0;
		size_t b = migram_bitmap_find_next_set(map, NBITS, 0);

		while (b < NBITS) {
			n++;
			b = migram_bitmap_find_next_set(map, NBITS, b + 1);
		}
		sink = n;
		t[k] = now() - t0;
	}
	return BYTES / median(t, RUNS) / 1e9;
}

/*
 * Collect needs a fresh source each run; the limit it is compared with is a
 * plain read of that same freshly copied source (returned in *limit).
 */
static double bench_collect(unsigned long *src, const unsigned long *tmpl,
			    unsigned long *dst, double *limit)
{
	double t[RUNS], l[RUNS];

	for (int k = 0; k < RUNS; k++) {
		double t0;

		memcpy(src, tmpl, BYTES);
		memset(dst, 0, BYTES);
		t0 = now();
		sink = migram_bitmap_exchange_collect(dst, src, 0, NBITS);
		t[k] = now() - t0;

		memcpy(src, tmpl, BYTES);
		memset(dst, 0, BYTES);
		l[k] = BYTES / (bench_plain_read_once(src)) / 1e9;
	}
	*limit = median(l, RUNS);
	return BYTES / median(t, RUNS) / 1e9;
}

typedef struct {
	MigramDirtyBitmap *db;
	uint64_t ops;
	uint64_t seed;
} SetArgs;

static gpointer set_main(gpointer p)
{
	SetArgs *a = p;
	uint64_t x = a->seed;

	for (uint64_t i = 0; i < a->ops; i++) {
		/* xorshift64: cheap, so the mark dominates */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		migram_dirty_bitmap_set_dirty_by_index(a->db, x & (NBITS - 1));
	}
	return NULL;
}

static double bench_set_dirty(MigramDirtyBitmap *db, int threads)
{
	const uint64_t ops = 20000000;
	double t[3];

	for (int k = 0; k < 3; k++) {
		SetArgs a[2];
		GThread *th[2];
		double t0 = now();

		for (int i = 0; i < threads; i++) {
			a[i] = (SetArgs){ db, ops, 0x9e3779b97f4a7c15ULL + i };
			th[i] = g_thread_new("set", set_main, &a[i]);
		}
		for (int i = 0; i < threads; i++)
			g_thread_join(th[i]);
		t[k] = now() - t0;
		g_array_unref(migram_dirty_bitmap_drain(db));
	}
	return (double)ops * threads / median(t, 3) / 1e6;
}

int main(void)
{
	unsigned long *map = migram_bitmap_new(NBITS);
	unsigned long *src = migram_bitmap_new(NBITS);
	unsigned long *dst = migram_bitmap_new(NBITS);
	const struct {
		double density;
		size_t run;
	} cases[] = { { 0.0, 1 }, { 0.001, 1 }, { 0.001, 64 }, { 0.1, 1 } };
	MigramDirtyBitmap *db;
	double plain;

	if (!map || !src || !dst)
		return 1;
	/* Touch every page once so first-touch faults stay out of timings. */
	memset(src, 1, BYTES);
	memset(dst, 1, BYTES);

	printf("bitmap of a 1 TiB guest at 4 KiB pages: 2^28 bits, %llu MiB; "
	       "median of %d runs\n\n",
	       (unsigned long long)(BYTES >> 20), RUNS);
	fill(map, 0, 1, 1);
	plain = bench_plain_read(map);
	printf("%-42s %7.2f GB/s\n", "plain sequential read (limit)", plain);
	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		char name[64], what[40];
		double gbs;

		fill(map, cases[i].density, cases[i].run, 2);
		snprintf(what, sizeof(what), "%g%%%s", cases[i].density * 100,
			 cases[i].run > 1 ? " in runs of 64" : "");
		/* Re-measure the limit on this very buffer. */
		plain = bench_plain_read(map);
		gbs = bench_find(map);
		snprintf(name, sizeof(name), "find-next-set, %s", what);
		printf("%-42s %7.2f GB/s  %.2f of plain read (%.2f GB/s)\n",
		       name, gbs, gbs / plain, plain);
		gbs = bench_collect(src, map, dst, &plain);
		snprintf(name, sizeof(name), "exchange-collect, %s", what);
		printf("%-42s %7.2f GB/s  %.2f of plain read (%.2f GB/s)\n",
		       name, gbs, gbs / plain, plain);
	}

	db = migram_dirty_bitmap_new(0, NBITS * 4096, 4096, NULL);
	printf("\n%-42s %7.1f M marks/s\n", "set_dirty, 1 thread",
	       bench_set_dirty(db, 1));
	printf("%-42s %7.1f M marks/s\n", "set_dirty, 2 threads",
	       bench_set_dirty(db, 2));
	migram_dirty_bitmap_free(db);
	migram_bitmap_free(map);
	migram_bitmap_free(src);
	migram_bitmap_free(dst);
	return 0;
}
