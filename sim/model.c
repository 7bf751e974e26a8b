/* SPDX-License-Identifier: MIT */
/*
 * Model mode (--model): the sender's algorithms in virtual time, with no
 * page contents, for guests far larger than the machine running it.
 *
 * What is real.  The bitmaps are the library's: `bmap` (pages to send),
 * `synced` (what syncs collected and no clear has re-armed yet),
 * `clear_bmap` (chunks owing a log clear) and the dirty log, a
 * MigramDirtyBitmap that the modelled guest marks.  Sync, postponed clear
 * and page search follow send-pages.c step for step, and the convergence
 * decisions are migram_policy_after_sync() itself (policy.c).
 *
 * What is modelled.  The link: every page costs (4096 + 8) bytes at a
 * fixed bandwidth, and one round trip of latency is added to the
 * downtime.  The guest: a memoryless (Poisson) write process at the dirty
 * rate over the workload's pages, throttled as auto-converge asks.
 *
 * Time.  The clock advances by bytes / bandwidth as pages go out, in
 * sections of 50 ms of link time, as the sender's PART sections.  Writes
 * are applied lazily: the log is only read by a sync and only changed by
 * a chunk clear, so before each of those the write process catches up to
 * the current virtual time over the pages concerned.  Between two such
 * events the order of writes and sends does not matter: a send clears a
 * bit of bmap, never of the log.
 *
 * Dirtying.  Over a stretch of guest time, a Poisson process of rate r
 * spread uniformly over n pages writes each page a Poisson(r t / n)
 * number of times, independently, so each page is marked with
 * probability 1 - exp(-r t / n).  The model draws exactly that: by
 * geometric gaps when marks are sparse, 64 pages at a time from random
 * words when they are dense, one range when every page is certain to be
 * hit.  Writes are applied per unit of 16 MiB, and only when the unit's
 * log is about to be read or cleared: the cost follows the pages marked,
 * not the writes made.  A second write to a dirty page changes nothing in
 * the log, so nothing is lost by not making it; the only approximations
 * are the 16-bit probabilities of the dense case and treating 20 writes
 * per page as certain to hit every page (a miss rate of 2e-9).
 */
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include <migram/bitmap.h>
#include <migram/dirty-bitmap.h>
#include <migram/ramblock.h>

#include "migration-internal.h"
#include "sim.h"

#define PAGE ((uint64_t)MIGRAM_TARGET_PAGE_SIZE)
#define WIRE_PAGE (PAGE + 8)     /* bytes of a page record on the wire */
#define DEFAULT_BANDWIDTH 1.25e9 /* 10 Gbit/s, bytes/s */
#define DEFAULT_DOWNTIME_MS 300
#define DEFAULT_HOT_FRACTION 0.05
#define DEFAULT_HOT_WEIGHT 0.8
/* sender.c's defaults for the policy */
#define STALL_SYNCS 8
#define THROTTLE_INITIAL 20
#define THROTTLE_INCREMENT 10

#define SECTION_S 0.05     /* one PART section: 50 ms of link time */
#define SAMPLE_MIN_S 0.1   /* the timeline's finest period */
#define SAMPLE_TARGET 1000 /* samples wanted over the first pass */
#define TIMELINE_CAP 4000  /* past this, every other sample is dropped */
#define DENSE 0.125    /* mark probability past which rng_mask() is cheaper */
#define SATURATED 20.0 /* writes per page that mark the whole region */
#define MAX_WRITERS 64 /* sequential: one cursor per writer thread */
#define MAX_SHIFT 62
#define UNIT_SHIFT 12 /* 16 MiB: the granule of lazily applied writes */

/* One RAM block in the flat page space: chunks never span two blocks. */
typedef struct {
	uint64_t start;      /* first page */
	uint64_t pages;      /* page count */
	uint64_t chunk_base; /* index of its first chunk in clear_bmap */
} ModelBlock;

/* Pages [first, first + n) written at `rate` pages/s, uniformly. */
typedef struct {
	uint64_t first, n;
	double rate;
} Region;

/*
 * The guest's write process.  Random writes are applied per unit of
 * 2^UNIT_SHIFT pages, lazily: unit_tau[u] is the guest time up to which
 * the unit's writes are in the log.
 */
typedef struct {
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
} Guest;

typedef struct {
	const SimOptions *opt;
	SimReport *rep;

	/* geometry */
	ModelBlock *blocks;
	guint nblocks;
	uint64_t pages, chunks;
	unsigned int shift;

	/* the library's bitmaps */
	MigramDirtyBitmap *log;
	unsigned long *bmap, *synced, *clear_bmap;

	/* link and clock, in seconds and bytes/s */
	double bw, latency, now;
	Guest guest;

	/* the sender */
	uint64_t cur;   /* where the page search resumes */
	uint64_t dirty; /* bits set in bmap */
	uint64_t dirtied_in_period;
	uint64_t pages_sent, sent_at_sync; /* every page costs WIRE_PAGE */
	double t_sync;
	bool last_stage;
	PolicyState policy;

	/* the timeline */
	double sample_every, next_sample, last_t, last_writes;
	uint64_t last_sent;
} Model;

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

/* ---- the guest --------------------------------------------------------- */

/* Mark page p in the log; an already dirty page costs no atomic. */
static void mark_page(Model *m, uint64_t p)
{
	if (!migram_dirty_bitmap_is_dirty_by_index(m->log, p))
		migram_dirty_bitmap_set_dirty_by_index(m->log, p);
}

/* Mark pages [first, first + n) (no wrap). */
static void mark_run(Model *m, uint64_t first, uint64_t n)
{
	migram_dirty_bitmap_mark_range(m->log, first * PAGE, n * PAGE);
}

/* Mark the pages of `bits` (bit i: page first + i), a run at a time. */
static void mark_bits(Model *m, uint64_t first, uint64_t bits)
{
	while (bits) {
		unsigned int lo = (unsigned int)__builtin_ctzll(bits);
		uint64_t up = bits >> lo; /* bit 0 set */
		unsigned int len = up == UINT64_MAX >> lo
					   ? 64 - lo
					   : (unsigned int)__builtin_ctzll(~up);

		if (len == 1)
			mark_page(m, first + lo);
		else
			mark_run(m, first + lo, len);
		bits = lo + len < 64 ? bits & ~((1ULL << (lo + len)) - 1) : 0;
	}
}

/* Dense marking: 64 pages at a time, each with probability p. */
static void dense_dirty(Model *m, uint64_t first, uint64_t n, double p)
{
	for (uint64_t w = 0; w < n; w += 64) {
		uint64_t bits = rng_mask(&m->guest.rng, p);

		if (n - w < 64)
			bits &= (1ULL << (n - w)) - 1;
		mark_bits(m, first + w, bits);
	}
}

/*
 * `mean` writes per page over pages [first, first + n), Poisson: each
 * page is marked with probability 1 - exp(-mean), independently.  The
 * gap to the next marked page is then geometric, floor(E / mean) with E
 * exponential.
 */
static void poisson_dirty(Model *m, uint64_t first, uint64_t n, double mean)
{
	uint64_t i;

	if (mean <= 0 || !n)
		return;
	if (mean >= SATURATED) {
		mark_run(m, first, n);
		return;
	}
	if (-expm1(-mean) >= DENSE) {
		dense_dirty(m, first, n, -expm1(-mean));
		return;
	}
	for (i = rng_gap(&m->guest.rng, 1 / mean, n); i < n;
	     i += 1 + rng_gap(&m->guest.rng, 1 / mean, n - i))
		mark_page(m, first + i);
}

/* Sequential: each cursor marks the next `n` pages, wrapping. */
static void sequential_dirty(Model *m, uint64_t n)
{
	Guest *g = &m->guest;

	n = MIN(n, m->pages);
	for (unsigned int i = 0; i < g->ncursors && n; i++) {
		uint64_t c = g->cursor[i], to_end = m->pages - c;

		if (n <= to_end) {
			mark_run(m, c, n);
		} else {
			mark_run(m, c, to_end);
			mark_run(m, 0, n - to_end);
		}
		g->cursor[i] = (c + n) % m->pages;
	}
}

/*
 * Run the guest's clock to virtual time t: the vCPUs run (100 - throttle)
 * % of it.  Sequential writes are marked now; random ones wait for
 * guest_catch_up().
 */
static void guest_advance(Model *m, double t)
{
	Guest *g = &m->guest;
	double dt = t - g->t, ran;

	if (dt <= 0 || g->paused)
		return;
	ran = dt * (double)(100 - g->throttle) / 100.0;
	g->t = t;
	g->tau += ran;
	if (g->kind == SIM_WORKLOAD_SEQUENTIAL) {
		double due = g->seq_rate * ran + g->seq_carry;

		g->seq_carry = due - floor(due);
		sequential_dirty(m, (uint64_t)due);
	}
}

/* Bring unit u's log up to the guest's clock. */
static void unit_catch_up(Model *m, uint64_t u)
{
	Guest *g = &m->guest;
	double ran = g->tau - g->unit_tau[u];
	uint64_t lo = u << UNIT_SHIFT,
		 hi = MIN(lo + (1ULL << UNIT_SHIFT), m->pages);

	if (ran <= 0)
		return;
	g->unit_tau[u] = g->tau;
	for (unsigned int i = 0; i < g->nregions; i++) {
		const Region *r = &g->region[i];
		uint64_t a = MAX(lo, r->first), b = MIN(hi, r->first + r->n);

		if (a < b)
			poisson_dirty(m, a, b - a,
				      r->rate * ran / (double)r->n);
	}
}

/*
 * Every write the guest made before now to pages [first, first + n) is
 * in the log afterwards.  Called before the log is read or cleared there.
 */
static void guest_catch_up(Model *m, uint64_t first, uint64_t n)
{
	guest_advance(m, m->now);
	if (!m->guest.nregions || !n)
		return;
	for (uint64_t u = first >> UNIT_SHIFT;
	     u <= (first + n - 1) >> UNIT_SHIFT; u++)
		unit_catch_up(m, u);
}

/* Page writes so far (expected; the Poisson draws vary around it). */
static double guest_writes(const Guest *g)
{
	double rate = g->seq_rate * g->ncursors;

	for (unsigned int i = 0; i < g->nregions; i++)
		rate += g->region[i].rate;
	return rate * g->tau;
}

/*
 * As the real workload (workload.c): the hot set is the first
 * hot_fraction of the pages and takes hot_weight of the writes; the rest
 * go anywhere, hot pages included.
 */
static bool guest_init(Model *m)
{
	const SimOptions *o = m->opt;
	Guest *g = &m->guest;
	double rate = (double)o->dirty_rate / (double)PAGE;
	double f = o->hot_fraction > 0 ? o->hot_fraction : DEFAULT_HOT_FRACTION;
	double w = o->hot_weight > 0 ? o->hot_weight : DEFAULT_HOT_WEIGHT;

	g->kind = o->workload;
	g->rng = 0x5eed0000ULL ^ m->pages;
	if (o->workload == SIM_WORKLOAD_IDLE)
		return true;
	if (o->workload == SIM_WORKLOAD_SEQUENTIAL) {
		g->ncursors = MIN(MAX(o->threads, 1u), MAX_WRITERS);
		for (unsigned int i = 0; i < g->ncursors; i++)
			g->cursor[i] = (i * (m->pages / 8 + 1)) % m->pages;
		g->seq_rate = rate / g->ncursors;
		return true;
	}
	if (o->workload == SIM_WORKLOAD_UNIFORM)
		w = 0;
	g->region[0] = (Region){ 0, MAX((uint64_t)(f * (double)m->pages), 1),
				 rate * w };
	g->region[1] = (Region){ 0, m->pages, rate * (1 - w) };
	g->nregions = 2;
	g->units = ((m->pages - 1) >> UNIT_SHIFT) + 1;
	g->unit_tau = g_try_new0(double, g->units);
	return g->unit_tau != NULL;
}

/* ---- the sender -------------------------------------------------------- */

/* The block holding page p (binary search; blocks are few). */
static const ModelBlock *block_of(const Model *m, uint64_t p)
{
	guint lo = 0, hi = m->nblocks - 1;

	while (lo < hi) {
		guint mid = (lo + hi + 1) / 2;

		if (m->blocks[mid].start <= p)
			lo = mid;
		else
			hi = mid - 1;
	}
	return &m->blocks[lo];
}

/*
 * Sync: the log's marks are OR-ed into `synced` (they stay in the log),
 * `synced` into bmap, and every chunk owes a clear (send-pages.c's
 * sync_block over the flat page space).
 */
static void model_sync(Model *m)
{
	uint64_t fresh;

	guest_catch_up(m, 0, m->pages);
	migram_dirty_bitmap_peek(m->log, 0, m->pages, m->synced);
	fresh = migram_bitmap_or_collect(m->bmap, m->synced, 0, m->pages);
	m->dirty += fresh;
	m->dirtied_in_period += fresh;
	m->rep->dirty_sync_count++;
	if (!m->last_stage)
		migram_bitmap_set(m->clear_bmap, 0, m->chunks);
}

/*
 * Before the first page of a chunk that owes a clear is read: the guest
 * catches up, then the chunk's log is re-armed for exactly the pages
 * syncs collected there.  Returns the end of p's chunk.
 */
static uint64_t clear_owed_chunk(Model *m, uint64_t p)
{
	const ModelBlock *b = block_of(m, p);
	uint64_t local = (p - b->start) >> m->shift;
	uint64_t first = b->start + (local << m->shift);
	uint64_t n = MIN((uint64_t)1 << m->shift, b->start + b->pages - first);

	if (!m->last_stage && migram_bitmap_test_and_clear_bit(
				      m->clear_bmap, b->chunk_base + local)) {
		guest_catch_up(m, first, n);
		migram_dirty_bitmap_clear_masked(m->log, 0, m->synced, first,
						 n);
		migram_bitmap_clear(m->synced, first, n);
		m->rep->log_clear_calls++;
	}
	return first + n;
}

/*
 * Send up to max pages of bmap in [from, to): clear their bits, a word at
 * a time where the whole word goes.  Returns the count; *next is where
 * the search resumes.
 */
static uint64_t take_pages(Model *m, uint64_t from, uint64_t to, uint64_t max,
			   uint64_t *next)
{
	uint64_t taken = 0, pos = from;

	while (pos < to && taken < max) {
		uint64_t end = MIN((pos / MIGRAM_BITS_PER_LONG + 1) *
					   MIGRAM_BITS_PER_LONG,
				   to);
		uint64_t c = migram_bitmap_count(m->bmap, pos, end - pos);

		if (taken + c > max) {
			/* the budget ends inside this word: page by page */
			while (taken < max) {
				pos = migram_bitmap_find_next_set(m->bmap, end,
								  pos);
				migram_bitmap_clear_bit(m->bmap, pos++);
				taken++;
			}
			break;
		}
		migram_bitmap_clear(m->bmap, pos, end - pos);
		taken += c;
		pos = end;
	}
	*next = pos;
	return taken;
}

/* The next page to send, searching from cur round the space; or pages. */
static uint64_t find_dirty(const Model *m)
{
	uint64_t p = migram_bitmap_find_next_set(m->bmap, m->pages, m->cur);

	if (p < m->pages || !m->cur)
		return p;
	p = migram_bitmap_find_next_set(m->bmap, m->cur, 0);
	return p < m->cur ? p : m->pages;
}

/* Account n pages on the wire: the clock moves. */
static void wire(Model *m, uint64_t n)
{
	m->dirty -= n;
	m->pages_sent += n;
	m->now += (double)(n * WIRE_PAGE) / m->bw;
}

/*
 * One section: up to budget pages, chunk by chunk so that each owed
 * clear happens before its chunk's first page.  Returns true when a whole
 * pass found nothing more.
 */
static bool section(Model *m, uint64_t budget)
{
	while (budget) {
		uint64_t p = find_dirty(m), end, n;

		if (p >= m->pages)
			return true;
		end = clear_owed_chunk(m, p);
		n = take_pages(m, p, end, budget, &m->cur);
		if (m->cur >= m->pages)
			m->cur = 0;
		wire(m, n);
		budget -= n;
	}
	return false;
}

/* ---- the timeline -------------------------------------------------------- */

/* Keep every other sample and halve the sampling frequency. */
static void timeline_thin(Model *m)
{
	GArray *tl = m->rep->timeline;
	guint j = 0;

	for (guint i = 0; i < tl->len; i += 2)
		g_array_index(tl, SimSample, j++) = g_array_index(tl, SimSample,
								  i);
	g_array_set_size(tl, j);
	m->sample_every *= 2;
}

/* Record a sample (and the progress line) if one is due, or if forced. */
static void sample(Model *m, bool paused, bool force)
{
	double dt = m->now - m->last_t;
	SimSample s;

	if (!force && m->now < m->next_sample)
		return;
	guest_advance(m, m->now);
	s = (SimSample){
		.t = m->now,
		.remaining_pages = m->dirty,
		.dirty_rate = dt > 0 ? (uint64_t)((guest_writes(&m->guest) -
						   m->last_writes) *
						  (double)PAGE / dt)
				     : 0,
		.bandwidth = dt > 0 ? (double)((m->pages_sent - m->last_sent) *
					       WIRE_PAGE) /
					      dt
				    : 0,
		.dirty_rate_known = dt > 0, /* the model's own guest */
		.pages_sent = m->pages_sent,
		.pass = m->rep->iterations,
		.paused = paused,
	};
	if (m->rep->timeline->len >= TIMELINE_CAP)
		timeline_thin(m);
	g_array_append_val(m->rep->timeline, s);
	sim_progress(m->opt, paused ? "stop-copy" : "iterate", &s,
		     m->rep->iterations);
	m->last_t = m->now;
	m->last_sent = m->pages_sent;
	m->last_writes = guest_writes(&m->guest);
	m->next_sample = m->now + m->sample_every;
}

/* ---- the migration ------------------------------------------------------- */

/* Set the report's error (first one wins) and return code. */
static int fail(Model *m, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (!m->rep->error)
		m->rep->error = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_strlcpy(m->rep->status, "failed", sizeof(m->rep->status));
	return code;
}

/* After a pass: sync, account the period, let the policy decide. */
static PolicyDecision after_pass(Model *m)
{
	double period = MAX((m->now - m->t_sync) * 1e6, 1.0);
	PolicyDecision d;

	m->rep->iterations++;
	model_sync(m);
	d = migram_policy_after_sync(&m->policy, m->dirty * PAGE,
				     (m->pages_sent - m->sent_at_sync) *
					     WIRE_PAGE,
				     m->dirtied_in_period * PAGE,
				     (uint64_t)period);
	m->dirtied_in_period = 0;
	m->t_sync = m->now;
	m->sent_at_sync = m->pages_sent;
	if (d == POLICY_THROTTLE)
		m->guest.throttle = m->policy.throttle_percent;
	return d;
}

/* Iterate until the policy completes; else the exit code of the failure. */
static int iterate(Model *m)
{
	uint64_t budget = MAX((uint64_t)(SECTION_S * m->bw / WIRE_PAGE), 1u);
	const uint64_t limit = m->opt->max_time_ms;

	for (;;) {
		PolicyDecision d;

		if (limit && m->now * 1000 > (double)limit)
			return fail(
				m, SIM_EXIT_NOT_CONVERGED,
				"migration did not finish within %" G_GUINT64_FORMAT
				" ms of virtual time (%" G_GUINT64_FORMAT
				" bytes still dirty)",
				limit, m->dirty * PAGE);
		if (!section(m, budget)) {
			sample(m, false, false);
			continue;
		}
		d = after_pass(m);
		sample(m, false, true); /* every sync is on the timeline */
		if (d == POLICY_COMPLETE)
			return SIM_EXIT_OK;
		if (d == POLICY_GIVE_UP)
			return fail(
				m, SIM_EXIT_NOT_CONVERGED,
				"migration does not converge: %" G_GUINT64_FORMAT
				" bytes still dirty after %u syncs without "
				"progress (%" G_GUINT64_FORMAT
				" ms expected downtime, limit %" G_GUINT64_FORMAT
				" ms)",
				m->dirty * PAGE, STALL_SYNCS,
				m->policy.expected_downtime_ms,
				m->policy.downtime_limit_ms);
	}
}

/*
 * Stop-and-copy: the guest stops writing, a last sync (no clears), the
 * rest goes out at the link's speed; the downtime ends one round trip
 * after the last byte.
 */
static void finish(Model *m)
{
	double t_pause;

	guest_advance(m, m->now);
	m->guest.paused = true; /* writes before now still reach the log */
	m->last_stage = true;
	m->rep->pause_at = m->now;
	t_pause = m->now;
	sample(m, true, true);
	model_sync(m);
	while (!section(m, UINT64_MAX))
		;
	m->now += m->latency;
	m->rep->downtime_ms = (uint64_t)llround((m->now - t_pause) * 1000);
	sample(m, true, true);
}

/* The flat page space: blocks one after the other, chunks per block. */
static bool layout(Model *m)
{
	const GArray *specs = m->opt->blocks;

	m->nblocks = specs ? specs->len : 0;
	m->blocks = g_new0(ModelBlock, MAX(m->nblocks, 1));
	for (guint i = 0; i < m->nblocks; i++) {
		const SimBlockSpec *s = &g_array_index(specs, SimBlockSpec, i);
		ModelBlock *b = &m->blocks[i];

		b->start = m->pages;
		b->pages = (s->bytes + PAGE - 1) / PAGE;
		b->chunk_base = m->chunks;
		m->pages += b->pages;
		m->chunks += b->pages ? ((b->pages - 1) >> m->shift) + 1 : 0;
		m->rep->total_bytes += s->bytes;
	}
	return m->pages > 0;
}

static const char *workload_name(SimWorkload w)
{
	switch (w) {
	case SIM_WORKLOAD_IDLE:
		return "idle";
	case SIM_WORKLOAD_HOTSET:
		return "hotset";
	case SIM_WORKLOAD_SEQUENTIAL:
		return "sequential";
	default:
		return "uniform";
	}
}

/* Options, geometry, bitmaps; the exit code of a failure, or OK. */
static int model_init(Model *m, const SimOptions *opt, SimReport *rep)
{
	g_autoptr(GError) error = NULL;
	unsigned int shift = opt->clear_bitmap_shift_set
				     ? opt->clear_bitmap_shift
				     : MIGRAM_CLEAR_BMAP_SHIFT_DEFAULT;

	*m = (Model){ .opt = opt, .rep = rep, .shift = MIN(shift, MAX_SHIFT) };
	if (!rep->timeline)
		rep->timeline = g_array_new(FALSE, TRUE, sizeof(SimSample));
	rep->model = true;
	rep->pause_at = -1;
	if (!layout(m))
		return fail(m, SIM_EXIT_USAGE, "model mode: no RAM to migrate");
	if (opt->workload != SIM_WORKLOAD_IDLE && !opt->dirty_rate)
		return fail(m, SIM_EXIT_USAGE,
			    "model mode needs --dirty-rate for the %s workload "
			    "(there is no \"flat out\" in virtual time)",
			    workload_name(opt->workload));
	m->log = migram_dirty_bitmap_new(0, m->pages * PAGE, PAGE, &error);
	m->bmap = migram_bitmap_new(m->pages);
	m->synced = migram_bitmap_new(m->pages);
	m->clear_bmap = migram_bitmap_new(m->chunks);
	if (!m->log || !m->bmap || !m->synced || !m->clear_bmap)
		return fail(
			m, SIM_EXIT_FAILED,
			"model mode: no memory for the bitmaps of %" G_GUINT64_FORMAT
			" pages%s%s",
			m->pages, error ? ": " : "",
			error ? error->message : "");
	m->bw = opt->max_bandwidth ? (double)opt->max_bandwidth
				   : DEFAULT_BANDWIDTH;
	m->latency = (double)opt->link_latency_us / 1e6;
	if (!guest_init(m))
		return fail(m, SIM_EXIT_FAILED, "model mode: out of memory");
	migram_policy_init(&m->policy,
			   opt->downtime_limit_ms ? opt->downtime_limit_ms
						  : DEFAULT_DOWNTIME_MS,
			   STALL_SYNCS, opt->auto_converge, THROTTLE_INITIAL,
			   THROTTLE_INCREMENT);
	m->sample_every = MAX(SAMPLE_MIN_S, (double)(m->pages * WIRE_PAGE) /
						    m->bw / SAMPLE_TARGET);
	return SIM_EXIT_OK;
}

static void model_free(Model *m)
{
	migram_dirty_bitmap_free(m->log);
	migram_bitmap_free(m->bmap);
	migram_bitmap_free(m->synced);
	migram_bitmap_free(m->clear_bmap);
	g_free(m->guest.unit_tau);
	g_free(m->blocks);
}

/* Setup as the sender's: every page to send, the first sync. */
static void setup(Model *m)
{
	g_strlcpy(m->rep->status, "active", sizeof(m->rep->status));
	migram_bitmap_set(m->bmap, 0, m->pages);
	m->dirty = m->pages;
	model_sync(m);
	m->dirtied_in_period = 0; /* bmap started full: nothing is new */
	sample(m, false, true);
}

/* The report's totals from the model's counters. */
static void fill_report(Model *m)
{
	SimReport *r = m->rep;

	r->transferred_bytes = m->pages_sent * WIRE_PAGE;
	r->normal_pages = m->pages_sent;
	r->duplicate_pages = 0;
	r->setup_time_ms = 0;
	r->total_time_ms = (uint64_t)llround(m->now * 1000);
	r->mbps = m->now > 0 ? (double)r->transferred_bytes * 8 / m->now / 1e6
			     : 0;
	r->throttle_percent = m->policy.throttle_percent;
	r->workload_writes = (uint64_t)guest_writes(&m->guest);
	r->verified = false;
}

int sim_model_run(const SimOptions *opt, SimReport *report)
{
	Model m;
	int rc = model_init(&m, opt, report);

	if (rc == SIM_EXIT_OK) {
		setup(&m);
		rc = iterate(&m);
		if (rc == SIM_EXIT_OK) {
			finish(&m);
			g_strlcpy(report->status, "completed",
				  sizeof(report->status));
		} else {
			sample(&m, false, true);
		}
		fill_report(&m);
	}
	sim_progress_done(opt);
	model_free(&m);
	return rc;
}
