/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd write-protect source's costs on a 1 GiB block:
 *   sync (PAGEMAP_SCAN) with none, 1 % and 10 % of its pages written,
 *   clear (re-protect) of 1 % of the pages in runs of one page.
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

static double now(void)
{
	return (double)g_get_monotonic_time() / 1e6;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(void)
{
	g_autoptr(GError) error = NULL;
	MigramUffdLog *log = migram_uffd_log_new(&error);
	MigramRamList *list;
	MigramRamBlock *b;
	MigramLogSource src;
	unsigned long *c;
	guint8 *h;
	const double shares[] = { 0, 0.01, 0.10 };

	if (!log) {
		printf("userfaultfd write protection unavailable: %s\n",
		       error->message);
		return 0;
	}
	urcu_memb_register_thread();
	list = migram_ram_list_new();
	b = migram_ram_list_add(list,
				&(MigramRamBlockConfig){ .idstr = "pc.ram",
							 .used_length = GiB },
				NULL);
	h = migram_ram_block_host(b);
	memset(h, 1, GiB); /* a populated guest */
	c = migram_bitmap_new(PAGES);
	migram_uffd_log_source(log, &src);
	src.ops->start(src.opaque, b, NULL);
	printf("userfaultfd-wp source, 1 GiB block (262144 pages), median of 5\n");
	for (size_t k = 0; k < G_N_ELEMENTS(shares); k++) {
		double ts[5], tc[5];

		for (int r = 0; r < 5; r++) {
			uint64_t newly,
				step = shares[k] > 0 ? (uint64_t)(1 / shares[k])
						     : PAGES + 1;
			double t0;

			for (uint64_t p = 0; p < PAGES; p += step)
				h[p * 4096] = (guint8)r;
			migram_bitmap_clear(c, 0, PAGES);
			t0 = now();
			src.ops->sync(src.opaque, b, c, &newly, NULL);
			ts[r] = now() - t0;
			t0 = now();
			src.ops->clear(src.opaque, b, 0, PAGES, c, NULL);
			tc[r] = now() - t0;
		}
		qsort(ts, 5, sizeof(double), cmp);
		qsort(tc, 5, sizeof(double), cmp);
		printf("  %4.0f %% written: sync %7.2f ms, clear %7.2f ms\n",
		       shares[k] * 100, ts[2] * 1e3, tc[2] * 1e3);
	}
	src.ops->stop(src.opaque, b);
	migram_bitmap_free(c);
	migram_ram_list_free(list);
	migram_uffd_log_free(log);
	return 0;
}
