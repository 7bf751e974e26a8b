/* SPDX-License-Identifier: MIT */
/*
 * The simulator's guest: writer threads over the source's RAM blocks.
 *
 * Pacing.  The workload aims at opt->dirty_rate bytes/s in total: each of
 * n threads writes rate / n / 4096 pages per second, in bursts of up to 1
 * ms, sleeping to stay on schedule.  Without a rate, writers run flat out.
 * A throttle of p % stretches each writer's schedule by 100 / (100 - p),
 * as a vCPU throttled by QEMU runs only (100 - p) % of the time.
 *
 * Page choice.  uniform: any page of any block (weighted by block size);
 * hotset: hot_weight of the writes go to the first hot_fraction of each
 * block's pages; sequential: each writer streams through all pages.
 */
#include <string.h>

#include "workload.h"

#define PAGE 4096u

struct SimGuest {
	SimWorkload workload;
	double hot_fraction, hot_weight;
	double pages_per_sec; /* per thread; 0 = unlimited */
	MigramRamBlock **blocks;
	guint nblocks;
	uint64_t total_pages;
	MigramDirtyBitmap *log;
	GThread **threads;
	unsigned int nthreads;
	int stop, paused, quiet, throttle; /* atomics */
	uint64_t writes;                   /* atomic */
};

typedef struct {
	SimGuest *g;
	unsigned int id;
} Writer;

/* Global page index -> block and page within it. */
static MigramRamBlock *locate(SimGuest *g, uint64_t page, uint64_t *pfn)
{
	for (guint i = 0; i < g->nblocks; i++) {
		uint64_t n = migram_ram_block_used_length(g->blocks[i]) / PAGE;

		if (page < n) {
			*pfn = page;
			return g->blocks[i];
		}
		page -= n;
	}
	*pfn = 0;
	return g->blocks[0];
}

static uint64_t pick(SimGuest *g, GRand *r, uint64_t *cursor)
{
	uint64_t n = g->total_pages, hot;

	switch (g->workload) {
	case SIM_WORKLOAD_HOTSET:
		hot = MAX((uint64_t)(g->hot_fraction * (double)n), 1);
		if (g_rand_double(r) < g->hot_weight)
			return (uint64_t)g_rand_double_range(r, 0, (double)hot);
		return (uint64_t)g_rand_double_range(r, 0, (double)n);
	case SIM_WORKLOAD_SEQUENTIAL:
		return (*cursor)++ % n;
	default:
		return (uint64_t)g_rand_double_range(r, 0, (double)n);
	}
}

static void stamp(SimGuest *g, unsigned int id, uint64_t page, uint64_t seq)
{
	uint64_t pfn;
	MigramRamBlock *b = locate(g, page, &pfn);
	guint64 *slot =
		(guint64 *)((guint8 *)migram_ram_block_host(b) + pfn * PAGE) +
		(id % 128) * 2;

	__atomic_store_n(&slot[0], ((guint64)id << 48) | seq, __ATOMIC_RELAXED);
	__atomic_store_n(&slot[1], pfn ^ (seq * 0x9e3779b97f4a7c15ULL),
			 __ATOMIC_RELAXED);
	migram_dirty_bitmap_set_dirty(g->log,
				      migram_ram_block_offset(b) + pfn * PAGE);
}

static void wait_while_paused(SimGuest *g)
{
	g_atomic_int_inc(&g->quiet);
	while (g_atomic_int_get(&g->paused) && !g_atomic_int_get(&g->stop))
		g_usleep(200);
	g_atomic_int_add(&g->quiet, -1);
}

static gpointer writer_main(gpointer p)
{
	Writer *w = p;
	SimGuest *g = w->g;
	GRand *r = g_rand_new_with_seed(0x5eed + w->id * 7919u);
	uint64_t seq = 0, cursor = w->id * (g->total_pages / 8 + 1);
	gint64 start = g_get_monotonic_time();
	double due = 0; /* writes due by now, per the schedule */
	int last_th = 0;

	while (!g_atomic_int_get(&g->stop)) {
		int th;

		if (g_atomic_int_get(&g->paused)) {
			wait_while_paused(g);
			start = g_get_monotonic_time();
			due = 0;
			seq++;
			continue;
		}
		stamp(g, w->id, pick(g, r, &cursor), ++seq);
		__atomic_fetch_add(&g->writes, 1, __ATOMIC_RELAXED);
		if (g->pages_per_sec <= 0)
			continue;
		th = g_atomic_int_get(&g->throttle);
		if (th != last_th) {
			/* A new throttle applies from now on, not to the
			 * writes already made (else the writer would stall
			 * to make up for them at the new rate). */
			start = g_get_monotonic_time();
			due = 0;
			last_th = th;
		}
		due += 1.0;
		/* Ahead of schedule: sleep until the next write is due, in
		 * slices of at most 10 ms so that a pause is seen soon. */
		for (;;) {
			double rate = g->pages_per_sec * (100 - th) / 100.0;
			double t = (double)(g_get_monotonic_time() - start) /
				   1e6;
			double ahead = due / rate - t;

			if (ahead <= 0.001 || g_atomic_int_get(&g->paused) ||
			    g_atomic_int_get(&g->stop))
				break;
			g_usleep((gulong)(MIN(ahead, 0.01) * 1e6));
		}
	}
	g_rand_free(r);
	g_free(w);
	return NULL;
}

SimGuest *sim_guest_start(const SimOptions *opt, MigramRamBlock **blocks,
			  guint nblocks, MigramDirtyBitmap *log)
{
	SimGuest *g = g_new0(SimGuest, 1);

	g->workload = opt->workload;
	g->hot_fraction = opt->hot_fraction > 0 ? opt->hot_fraction : 0.05;
	g->hot_weight = opt->hot_weight > 0 ? opt->hot_weight : 0.8;
	g->blocks = blocks;
	g->nblocks = nblocks;
	g->log = log;
	for (guint i = 0; i < nblocks; i++)
		g->total_pages += migram_ram_block_used_length(blocks[i]) /
				  PAGE;
	g->nthreads = opt->workload == SIM_WORKLOAD_IDLE ? 0 : opt->threads;
	if (opt->dirty_rate && g->nthreads)
		g->pages_per_sec = (double)opt->dirty_rate / PAGE / g->nthreads;
	g->threads = g_new0(GThread *, g->nthreads + 1);
	for (unsigned int i = 0; i < g->nthreads; i++) {
		Writer *w = g_new0(Writer, 1);

		*w = (Writer){ g, i };
		g->threads[i] = g_thread_new("sim-writer", writer_main, w);
	}
	return g;
}

void sim_guest_pause(void *guest)
{
	SimGuest *g = guest;

	g_atomic_int_set(&g->paused, 1);
	while (g_atomic_int_get(&g->quiet) < (int)g->nthreads)
		g_usleep(100);
}

void sim_guest_throttle(void *guest, unsigned int percent)
{
	g_atomic_int_set(&((SimGuest *)guest)->throttle, (int)percent);
}

void sim_guest_resume(void *guest)
{
	g_atomic_int_set(&((SimGuest *)guest)->paused, 0);
}

uint64_t sim_guest_stop(SimGuest *g)
{
	uint64_t writes;

	g_atomic_int_set(&g->stop, 1);
	for (unsigned int i = 0; i < g->nthreads; i++)
		g_thread_join(g->threads[i]);
	writes = __atomic_load_n(&g->writes, __ATOMIC_RELAXED);
	g_free(g->threads);
	g_free(g);
	return writes;
}

/* splitmix64: a fast generator, good enough for page content. */
static guint64 mix64(guint64 *x)
{
	guint64 z = (*x += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void sim_fill_block(MigramRamBlock *b, SimFill fill)
{
	guint8 *h = migram_ram_block_host(b);
	uint64_t n = migram_ram_block_used_length(b) / PAGE;

	for (uint64_t p = 0; p < n && fill != SIM_FILL_ZERO; p++) {
		guint64 *w = (guint64 *)(h + p * PAGE), x = p;

		if (fill == SIM_FILL_PATTERN) {
			if (p % 4 != 3)
				memset(w, (int)(p % 251) + 1, PAGE);
			continue;
		}
		for (unsigned int i = 0; i < PAGE / 8; i++)
			w[i] = mix64(&x);
	}
}

uint64_t sim_guest_writes(SimGuest *g)
{
	return __atomic_load_n(&g->writes, __ATOMIC_RELAXED);
}

/* Page p as the fill left it (sim_fill_block). */
static void fill_page(SimFill fill, uint64_t p, guint64 *w)
{
	guint64 x = p;

	memset(w, 0, PAGE);
	if (fill == SIM_FILL_PATTERN && p % 4 != 3)
		memset(w, (int)(p % 251) + 1, PAGE);
	for (unsigned int i = 0; fill == SIM_FILL_RANDOM && i < PAGE / 8; i++)
		w[i] = mix64(&x);
}

/* Slot i of page pfn holds a stamp writer i could have written. */
static bool is_stamp(const guint64 *slot, unsigned int i, uint64_t pfn)
{
	guint64 seq = slot[0] & ((1ULL << 48) - 1);

	return (slot[0] >> 48) == i && seq &&
	       slot[1] == (pfn ^ (seq * 0x9e3779b97f4a7c15ULL));
}

bool sim_guest_check(SimGuest *g, SimFill fill, char **detail)
{
	uint64_t pages = 0;

	for (guint bi = 0; bi < g->nblocks; bi++) {
		MigramRamBlock *b = g->blocks[bi];
		const guint64 *h = migram_ram_block_host(b);
		uint64_t n = migram_ram_block_used_length(b) / PAGE;

		for (uint64_t p = 0; p < n; p++, pages++) {
			const guint64 *page = h + p * (PAGE / 8);
			guint64 w[PAGE / 8];

			fill_page(fill, p, w);
			for (unsigned int i = 0; i < PAGE / 16; i++) {
				if (!memcmp(page + 2 * i, w + 2 * i, 16) ||
				    (i < g->nthreads &&
				     is_stamp(page + 2 * i, i, p)))
					continue;
				*detail = g_strdup_printf(
					"block '%s' page %" G_GUINT64_FORMAT
					" bytes %u-%u hold neither the fill "
					"nor a writer's stamp",
					migram_ram_block_idstr(b), p, i * 16,
					i * 16 + 15);
				return false;
			}
		}
	}
	*detail = g_strdup_printf("%" G_GUINT64_FORMAT " pages hold only the "
				  "fill and the writers' stamps",
				  pages);
	return true;
}
