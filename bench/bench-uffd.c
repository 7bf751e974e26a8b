/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd write-protect source's costs on a 1 GiB block, in async
 * mode and in fault mode, in the same run:
 *   sync with none, 1 % and 10 % of its pages written;
 *   clear (re-protect) of those pages, in runs of one page;
 *   the writer's cost of the first write to a protected page (1 % of the
 *   pages, one byte each), against a write to the same pages unprotected.
 * Medians of 5; nothing asserted.
 */
#include <stdio.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/dirty-log-uffd.h>
#include <migram/migram.h>

#define GiB (UINT64_C(1) << 30)
#define PAGES (GiB / 4096)
#define RUNS 5

typedef struct {
	double sync_ms[3]; /* by share written */
	double clear_ms[3];
	double first_us; /* per first write to a protected page */
	double plain_us; /* per write to the same pages, unprotected */
	bool ok;
} Costs;

static const double shares[] = { 0, 0.01, 0.10 };

static double now(void)
{
	return (double)g_get_monotonic_time() / 1e6;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v)
{
	qsort(v, RUNS, sizeof(double), cmp);
	return v[RUNS / 2];
}

/* Write one byte to every step-th page; seconds per page. */
static double write_pages(guint8 *h, uint64_t step, guint8 v)
{
	double t0 = now();
	uint64_t n = 0;

	for (uint64_t p = 0; p < PAGES; p += step, n++)
		((volatile guint8 *)h)[p * 4096] = v;
	return (now() - t0) / (double)n;
}

static void measure(MigramUffdMode mode, Costs *out)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(MigramUffdLog) log = migram_uffd_log_new_mode(mode, &error);
	MigramRamList *list;
	MigramRamBlock *b;
	MigramLogSource src;
	unsigned long *c;
	guint8 *h;
	uint64_t newly;

	if (!log) {
		printf("  %s mode unavailable: %s\n",
		       mode == MIGRAM_UFFD_MODE_ASYNC ? "async" : "fault",
		       error->message);
		return;
	}
	list = migram_ram_list_new();
	b = migram_ram_list_add(list,
				&(MigramRamBlockConfig){ .idstr = "pc.ram",
							 .used_length = GiB },
				NULL);
	h = migram_ram_block_host(b);
	memset(h, 1, GiB); /* a populated guest */
	c = migram_bitmap_new(PAGES);
	migram_uffd_log_source(log, &src);
	if (!src.ops->start(src.opaque, b, &error)) {
		printf("  start: %s\n", error->message);
		goto out;
	}
	for (size_t k = 0; k < G_N_ELEMENTS(shares); k++) {
		double ts[RUNS], tc[RUNS];

		for (int r = 0; r < RUNS; r++) {
			uint64_t step = shares[k] > 0
						? (uint64_t)(1 / shares[k])
						: PAGES + 1;
			double t0;

			write_pages(h, step, (guint8)r);
			migram_bitmap_clear(c, 0, PAGES);
			t0 = now();
			src.ops->sync(src.opaque, b, c, &newly, NULL);
			ts[r] = now() - t0;
			t0 = now();
			src.ops->clear(src.opaque, b, 0, PAGES, c, NULL);
			tc[r] = now() - t0;
		}
		out->sync_ms[k] = median(ts) * 1e3;
		out->clear_ms[k] = median(tc) * 1e3;
	}
	/* Every page is protected now: first writes, then plain ones. */
	{
		double tf[RUNS], tp[RUNS];

		for (int r = 0; r < RUNS; r++) {
			tf[r] = write_pages(h, 100, (guint8)(r + 10));
			tp[r] = write_pages(h, 100, (guint8)(r + 20));
			migram_bitmap_clear(c, 0, PAGES);
			src.ops->sync(src.opaque, b, c, &newly, NULL);
			src.ops->clear(src.opaque, b, 0, PAGES, c, NULL);
		}
		out->first_us = median(tf) * 1e6;
		out->plain_us = median(tp) * 1e6;
	}
	src.ops->stop(src.opaque, b);
	out->ok = true;
out:
	migram_bitmap_free(c);
	migram_ram_list_free(list);
}

int main(void)
{
	Costs a = { 0 }, f = { 0 };

	urcu_memb_register_thread();
	printf("userfaultfd-wp source, 1 GiB block (262144 pages), median of "
	       "%d\n",
	       RUNS);
	measure(MIGRAM_UFFD_MODE_ASYNC, &a);
	measure(MIGRAM_UFFD_MODE_FAULT, &f);
	printf("  written    async: sync     clear   fault: sync     clear"
	       "   sync fault/async\n");
	for (size_t k = 0; k < G_N_ELEMENTS(shares); k++)
		printf("  %4.0f %%   %9.3f ms %7.2f ms  %9.3f ms %7.2f ms  "
		       "%8.4f\n",
		       shares[k] * 100, a.sync_ms[k], a.clear_ms[k],
		       f.sync_ms[k], f.clear_ms[k],
		       a.ok && f.ok ? f.sync_ms[k] / a.sync_ms[k] : 0.0);
	printf("  first write to a protected page (2622 pages, 1 byte each):\n"
	       "    async %.2f us, fault %.2f us (fault/async %.1f); "
	       "unprotected write %.3f us\n",
	       a.first_us, f.first_us,
	       a.ok && f.ok ? f.first_us / a.first_us : 0.0,
	       f.ok ? f.plain_us : a.plain_us);
	return 0;
}
