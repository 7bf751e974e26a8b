/* SPDX-License-Identifier: MIT */
/*
 * Model mode's guest: a memoryless (Poisson) write process in virtual time.
 *
 * Dirtying.  Over a stretch of guest time, a Poisson process of rate r
 * spread uniformly over n pages writes each page a Poisson(r t / n)
 * number of times, independently, so each page is marked with
 * probability 1 - exp(-r t / n).  The guest draws exactly that: by
 * geometric gaps when marks are sparse, 64 pages at a time from random
 * words when they are dense, one range when every page is certain to be
 * hit.  Writes are applied per unit of 16 MiB, and only when the unit's
 * log is about to be read or cleared (model_guest_catch_up()): the cost
 * follows the pages marked, not the writes made.  A second write to a
 * dirty page changes nothing in the log, so nothing is lost by not making
 * it; the only approximations are the 16-bit probabilities of the dense
 * case and treating 20 writes per page as certain to hit every page (a
 * miss rate of 2e-9).
 *
 * The hot set is the first hot_fraction of the pages and takes hot_weight
 * of the writes; the rest go anywhere, hot pages included, as real mode's
 * workload.c does.  Sequential gives each cursor an equal share.
 */
#include <math.h>
#include <string.h>

#include <migram/bitmap.h>
#include <migram/dirty-bitmap.h>
#include <migram/migram.h>
#include <migram/ramblock.h>

#include "model-guest.h"

#define PAGE ((uint64_t)MIGRAM_TARGET_PAGE_SIZE)
#define DEFAULT_HOT_FRACTION 0.05
#define DEFAULT_HOT_WEIGHT 0.8
#define DENSE 0.125    /* mark probability past which rng_mask() is cheaper */
#define SATURATED 20.0 /* writes per page that mark the whole region */
#define MAX_WRITERS 64 /* sequential: one cursor per writer thread */
#define UNIT_SHIFT 12  /* 16 MiB: the granule of lazily applied writes */

/* Pages [first, first + n) written at `rate` pages/s, uniformly. */
typedef struct {
	uint64_t first, n;
	double rate;
} Region;

/*
 * Random writes are applied per unit of 2^UNIT_SHIFT pages, lazily:
 * unit_tau[u] is the guest time up to which the unit's writes are in the
 * log.
 */
struct ModelGuest {
	MigramDirtyBitmap *log; /* borrowed */
	unsigned long *written; /* pages ever written */
	uint64_t pages;
	SimWorkload kind;
	Region region[2]; /* uniform/hotset: hot set, then all pages */
	unsigned int nregions;
	uint64_t cursor[MAX_WRITERS]; /* sequential */
	unsigned int ncursors;
	double seq_rate;       /* sequential: pages/s per cursor */
	double seq_carry;      /* sequential: fraction of a page owed */
	unsigned int throttle; /* percent of the time the vCPUs sleep */
	bool paused;
	double t;   /* virtual time the guest has run to */
	double tau; /* seconds the vCPUs actually ran up to t */
	double *unit_tau;
	uint64_t units;
	uint64_t rng;
};

/* ---- randomness -------------------------------------------------------- */

/* splitmix64: a 64-bit state advanced by a constant, then mixed. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* An exponential variate of mean 1 (the uniform is never 0). */
static double rng_exp(uint64_t *s)
{
	double u = (double)((rng_next(s) >> 11) + 1) * 0x1.0p-53;

	return -log(u);
}

/* A geometric gap of mean about scale, or limit if it is that long. */
static uint64_t rng_gap(uint64_t *s, double scale, uint64_t limit)
{
	double g = rng_exp(s) * scale;

	return g < (double)limit ? (uint64_t)g : limit;
}

/*
 * 64 bits, each set with probability p (to 16 binary digits): from the
 * lowest digit of p up, OR a random word in for a 1, AND for a 0, so each
 * step halves the probability and adds the digit.
 */
static uint64_t rng_mask(uint64_t *s, double p)
{
	unsigned int q = (unsigned int)(p * 65536.0);
	uint64_t bits = 0;

	if (!q)
		return 0;
	for (int i = __builtin_ctz(q); i < 16; i++)
		bits = (q >> i) & 1 ? bits | rng_next(s) : bits & rng_next(s);
	return bits;
}

/* ---- marks --------------------------------------------------------------- */

/* Mark page p in the log; an already dirty page costs no atomic. */
static void mark_page(ModelGuest *g, uint64_t p)
{
	if (!migram_dirty_bitmap_is_dirty_by_index(g->log, p))
		migram_dirty_bitmap_set_dirty_by_index(g->log, p);
	migram_bitmap_set_bit(g->written, p);
}

/* Mark pages [first, first + n) (no wrap). */
static void mark_run(ModelGuest *g, uint64_t first, uint64_t n)
{
	migram_dirty_bitmap_mark_range(g->log, first * PAGE, n * PAGE);
	migram_bitmap_set(g->written, first, n);
}

/* Mark the pages of `bits` (bit i: page first + i), a run at a time. */
static void mark_bits(ModelGuest *g, uint64_t first, uint64_t bits)
{
	while (bits) {
		unsigned int lo = (unsigned int)__builtin_ctzll(bits);
		uint64_t up = bits >> lo; /* bit 0 set */
		unsigned int len = up == UINT64_MAX >> lo
					   ? 64 - lo
					   : (unsigned int)__builtin_ctzll(~up);

		if (len == 1)
			mark_page(g, first + lo);
		else
			mark_run(g, first + lo, len);
		bits = lo + len < 64 ? bits & ~((1ULL << (lo + len)) - 1) : 0;
	}
}

/* Dense marking: 64 pages at a time, each with probability p. */
static void dense_dirty(ModelGuest *g, uint64_t first, uint64_t n, double p)
{
	for (uint64_t w = 0; w < n; w += 64) {
		uint64_t bits = rng_mask(&g->rng, p);

		if (n - w < 64)
			bits &= (1ULL << (n - w)) - 1;
		mark_bits(g, first + w, bits);
	}
}

/*
 * `mean` writes per page over pages [first, first + n), Poisson: each
 * page is marked with probability 1 - exp(-mean), independently.  The
 * gap to the next marked page is then geometric, floor(E / mean) with E
 * exponential.
 */
static void poisson_dirty(ModelGuest *g, uint64_t first, uint64_t n,
			  double mean)
{
	uint64_t i;

	if (mean <= 0 || !n)
		return;
	if (mean >= SATURATED) {
		mark_run(g, first, n);
		return;
	}
	if (-expm1(-mean) >= DENSE) {
		dense_dirty(g, first, n, -expm1(-mean));
		return;
	}
	for (i = rng_gap(&g->rng, 1 / mean, n); i < n;
	     i += 1 + rng_gap(&g->rng, 1 / mean, n - i))
		mark_page(g, first + i);
}

/* Sequential: each cursor marks the next `n` pages, wrapping. */
static void sequential_dirty(ModelGuest *g, uint64_t n)
{
	n = MIN(n, g->pages);
	for (unsigned int i = 0; i < g->ncursors && n; i++) {
		uint64_t c = g->cursor[i], to_end = g->pages - c;

		if (n <= to_end) {
			mark_run(g, c, n);
		} else {
			mark_run(g, c, to_end);
			mark_run(g, 0, n - to_end);
		}
		g->cursor[i] = (c + n) % g->pages;
	}
}

/*
 * Run the guest's clock to virtual time t: the vCPUs run (100 - throttle)
 * % of it.  Sequential writes are marked now; random ones wait for
 * guest_catch_up().
 */
void model_guest_advance(ModelGuest *g, double t)
{
	double dt = t - g->t, ran;

	if (dt <= 0 || g->paused)
		return;
	ran = dt * (double)(100 - g->throttle) / 100.0;
	g->t = t;
	g->tau += ran;
	if (g->kind == SIM_WORKLOAD_SEQUENTIAL) {
		double due = g->seq_rate * ran + g->seq_carry;

		g->seq_carry = due - floor(due);
		sequential_dirty(g, (uint64_t)due);
	}
}

/* Bring unit u's log up to the guest's clock. */
static void unit_catch_up(ModelGuest *g, uint64_t u)
{
	double ran = g->tau - g->unit_tau[u];
	uint64_t lo = u << UNIT_SHIFT,
		 hi = MIN(lo + (1ULL << UNIT_SHIFT), g->pages);

	if (ran <= 0)
		return;
	g->unit_tau[u] = g->tau;
	for (unsigned int i = 0; i < g->nregions; i++) {
		const Region *r = &g->region[i];
		uint64_t a = MAX(lo, r->first), b = MIN(hi, r->first + r->n);

		if (a < b)
			poisson_dirty(g, a, b - a,
				      r->rate * ran / (double)r->n);
	}
}

void model_guest_catch_up(ModelGuest *g, double now, uint64_t first, uint64_t n)
{
	model_guest_advance(g, now);
	if (!g->nregions || !n || first >= g->pages)
		return;
	n = MIN(n, g->pages - first);
	for (uint64_t u = first >> UNIT_SHIFT;
	     u <= (first + n - 1) >> UNIT_SHIFT; u++)
		unit_catch_up(g, u);
}

void model_guest_throttle(ModelGuest *g, double now, unsigned int percent)
{
	model_guest_advance(g, now);
	g->throttle = MIN(percent, 100u);
}

void model_guest_pause(ModelGuest *g, double now)
{
	model_guest_advance(g, now);
	g->paused = true; /* writes before now still reach the log */
}

bool model_guest_written(const ModelGuest *g, uint64_t p)
{
	return p < g->pages && migram_bitmap_test_bit(g->written, p);
}

double model_guest_writes(const ModelGuest *g)
{
	double rate = g->seq_rate * g->ncursors;

	for (unsigned int i = 0; i < g->nregions; i++)
		rate += g->region[i].rate;
	return rate * g->tau;
}

ModelGuest *model_guest_new(const SimOptions *o, MigramDirtyBitmap *log,
			    uint64_t pages, GError **error)
{
	ModelGuest *g = g_new0(ModelGuest, 1);
	double rate = (double)o->dirty_rate / (double)PAGE;
	double f = o->hot_fraction > 0 ? o->hot_fraction : DEFAULT_HOT_FRACTION;
	double w = o->hot_weight > 0 ? o->hot_weight : DEFAULT_HOT_WEIGHT;

	g->log = log;
	g->pages = pages;
	g->kind = o->workload;
	g->rng = 0x5eed0000ULL ^ pages;
	g->written = migram_bitmap_new(pages);
	if (!g->written)
		goto oom;
	if (o->workload == SIM_WORKLOAD_IDLE)
		return g;
	if (o->workload == SIM_WORKLOAD_SEQUENTIAL) {
		g->ncursors = MIN(MAX(o->threads, 1u), MAX_WRITERS);
		for (unsigned int i = 0; i < g->ncursors; i++)
			g->cursor[i] = (i * (pages / 8 + 1)) % pages;
		g->seq_rate = rate / g->ncursors;
		return g;
	}
	if (o->workload == SIM_WORKLOAD_UNIFORM)
		w = 0;
	g->region[0] = (Region){ 0, MAX((uint64_t)(f * (double)pages), 1),
				 rate * w };
	g->region[1] = (Region){ 0, pages, rate * (1 - w) };
	g->nregions = 2;
	g->units = ((pages - 1) >> UNIT_SHIFT) + 1;
	g->unit_tau = g_try_new0(double, g->units);
	if (g->unit_tau)
		return g;
oom:
	g_set_error(
		error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
		"model mode: no memory for the guest's records of %" G_GUINT64_FORMAT
		" pages",
		pages);
	model_guest_free(g);
	return NULL;
}

void model_guest_free(ModelGuest *g)
{
	if (!g)
		return;
	migram_bitmap_free(g->written);
	g_free(g->unit_tau);
	g_free(g);
}
