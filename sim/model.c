/* SPDX-License-Identifier: MIT */
/*
 * Model mode (--model): the library's own sender in virtual time, with no
 * page contents, for guests far larger than the machine running it.
 *
 * What is real.  migram_migration_run() itself: setup, syncs, the page
 * search, the postponed chunk clears, the sections and their 50 ms and
 * rate-limit ends, the bandwidth windows, the convergence policy, the final
 * pause and the stream it writes, record by record.  The dirty log is the
 * library's software log (migram_soft_log_*).
 *
 * What is modelled (docs/simulator-model.md):
 *  - the clock: a virtual clock in seconds (sender-env.h's MigramClock)
 *    that the sender and its channel's rate limit read and sleep on.  It
 *    advances only by the costs below and by the rate limit's sleeps;
 *    nothing sleeps for real;
 *  - the RAM: blocks are inaccessible (PROT_NONE, MAP_NORESERVE) mappings
 *    of the configured size.  The sender never reads them: the zero check
 *    is answered by page_is_zero() from the fill and the guest's writes,
 *    and a page's payload is only referenced in the channel's queue;
 *  - the link: a virtual channel whose sink counts the bytes of each flush
 *    and the pages in it.  The link carries them at link_bw while the
 *    destination places them at a calibrated cost per page, pipelined: the
 *    flush takes the longer of the two, after the previous one.  The
 *    sender runs ahead of the link by at most a socket buffer;
 *  - the sender's CPU: a calibrated cost per zero and per normal page, and
 *    per page synced;
 *  - the guest: model-guest.c, a Poisson write process, throttled and
 *    paused through the sender's callbacks;
 *  - postcopy and hybrid: the library's postcopy source runs too, against
 *    model-dest.c's destination, which answers on a virtual return path
 *    (sender-env.h's rp_pump) and whose readers fault on missing pages.
 *
 * Single-threaded: everything runs on the caller's thread, inside
 * migram_migration_run() and its callbacks.
 */
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>

#include <migram/bitmap.h>
#include <migram/dirty-bitmap.h>
#include <migram/dirty-log.h>
#include <migram/migram.h>
#include <migram/ramblock.h>

#include "model-costs.h"
#include "model-dest.h"
#include "model-guest.h"
#include "sender-env.h"
#include "sim.h"

#define PAGE ((uint64_t)MIGRAM_TARGET_PAGE_SIZE)
#define SAMPLE_MIN_S 0.1   /* the timeline's finest period */
#define SAMPLE_TARGET 1000 /* samples wanted over the first pass */
#define TIMELINE_CAP 4000  /* past this, every other sample is dropped */

typedef struct {
	const SimOptions *opt;
	SimReport *rep;
	ModelCosts costs;

	/* the RAM: blocks over PROT_NONE mappings */
	MigramRamList *list;
	GPtrArray *maps; /* ModelMap */
	uint64_t space_pages;

	/* the log and the guest */
	MigramSoftLog *log;
	MigramLogSource soft; /* the software log's own operations */
	MigramLogSource src;  /* model_ops: the guest catches up first */
	ModelGuest *guest;
	ModelDest *dest; /* postcopy and hybrid: the destination */

	/* the sender and its channel */
	MigramMigration *mig;
	MigramChannel *ch;
	MigramChannelSink sink;
	MigramSenderEnv env;

	/* the clock and the link, in seconds */
	double now;
	double link_free;  /* when the link has delivered all queued bytes */
	double link_bytes; /* bytes the sink took (the stream's length) */
	/* pages since the last flush: zero, first and later placements */
	uint64_t zero_queued, first_queued, again_queued;
	unsigned long *placed; /* pages the destination holds a copy of */
	uint64_t zero_pages, normal_pages;
	bool paused;
	double t_pause;

	/* the timeline */
	double sample_every, next_sample, last_t, last_writes, last_bytes;
	unsigned int last_syncs;
} Model;

typedef struct {
	void *addr;
	size_t len;
} ModelMap;

/* ---- the clock ----------------------------------------------------------- */

static gint64 clock_now(void *opaque)
{
	const Model *m = opaque;

	return (gint64)(m->now * 1e6);
}

static void clock_sleep(void *opaque, gint64 us)
{
	Model *m = opaque;

	if (us > 0)
		m->now += (double)us / 1e6;
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
static void sample(Model *m, bool force)
{
	double dt = m->now - m->last_t, writes;
	MigramMigrationStats st;
	SimSample s;

	if (!force && m->now < m->next_sample)
		return;
	migram_migration_get_stats(m->mig, &st);
	model_guest_advance(m->guest, m->now);
	writes = model_guest_writes(m->guest);
	s = (SimSample){
		.t = m->now,
		.remaining_pages = st.remaining_bytes / PAGE,
		.dirty_rate = dt > 0 ? (uint64_t)((writes - m->last_writes) *
						  (double)PAGE / dt)
				     : 0,
		.bandwidth = dt > 0 ? (m->link_bytes - m->last_bytes) / dt : 0,
		.dirty_rate_known = dt > 0, /* the model's own guest */
		.pages_sent = m->zero_pages + m->normal_pages,
		.pass = st.iterations,
		.paused = m->paused,
	};
	if (m->rep->timeline->len >= TIMELINE_CAP)
		timeline_thin(m);
	g_array_append_val(m->rep->timeline, s);
	sim_progress(m->opt, m->paused ? "stop-copy" : "iterate", &s,
		     st.iterations);
	m->last_t = m->now;
	m->last_bytes = m->link_bytes;
	m->last_writes = writes;
	m->next_sample = m->now + m->sample_every;
}

/* ---- the link ------------------------------------------------------------ */

/*
 * A flush: the link carries its bytes while the destination places its
 * pages, pipelined with the flushes before it; the sender waits only when
 * more than a socket buffer is in flight.
 */
static bool sink_write(void *opaque, const struct iovec *iov, int n,
		       GError **error)
{
	Model *m = opaque;
	const ModelCosts *c = &m->costs;
	double bytes = 0, wire, place;

	(void)error;
	for (int i = 0; i < n; i++)
		bytes += (double)iov[i].iov_len;
	wire = bytes / c->link_bw;
	if (m->dest && model_dest_postcopy(m->dest)) /* uffd placement */
		place = (double)(m->first_queued + m->again_queued) *
				c->place_pc_normal_s +
			(double)m->zero_queued * c->place_pc_zero_s;
	else
		place = (double)m->first_queued * c->place_first_s +
			(double)m->again_queued * c->place_again_s +
			(double)m->zero_queued * c->place_zero_s;
	m->zero_queued = m->first_queued = m->again_queued = 0;
	m->link_free = MAX(m->link_free, m->now) + MAX(wire, place);
	m->link_bytes += bytes;
	if (m->dest)
		model_dest_flushed(m->dest, m->link_free);
	if (m->link_free - m->now > c->buffer_bytes / c->link_bw)
		m->now = m->link_free - c->buffer_bytes / c->link_bw;
	sample(m, false);
	return true;
}

/*
 * The zero check without the page: a page never written holds the fill
 * (pattern: every fourth page is zero, as workload.c's sim_fill_block);
 * a written one is not zero (the writers stamp it).  Charges the sender's
 * CPU for the page.
 */
static bool page_is_zero(void *opaque, MigramRamBlock *block, uint64_t page)
{
	Model *m = opaque;
	uint64_t p = migram_ram_block_offset(block) / PAGE + page;
	bool zero;

	if (m->dest)
		model_dest_sent(m->dest, p);

	if (model_guest_written(m->guest, p))
		zero = false;
	else if (m->opt->fill == SIM_FILL_ZERO)
		zero = true;
	else
		zero = m->opt->fill == SIM_FILL_PATTERN && page % 4 == 3;
	if (zero) {
		m->zero_queued++;
		m->zero_pages++;
		m->now += m->costs.send_zero_s;
	} else {
		if (migram_bitmap_test_bit(m->placed, p)) {
			m->again_queued++;
		} else {
			migram_bitmap_set_bit(m->placed, p);
			m->first_queued++;
		}
		m->normal_pages++;
		m->now += m->costs.send_normal_s;
	}
	return zero;
}

/* ---- the dirty log: the guest catches up before each read or re-arm ----- */

static uint64_t block_first(MigramRamBlock *b)
{
	return migram_ram_block_offset(b) / PAGE;
}

static bool model_start(void *opaque, MigramRamBlock *b, GError **error)
{
	Model *m = opaque;

	return m->soft.ops->start(m->soft.opaque, b, error);
}

static bool model_sync(void *opaque, MigramRamBlock *b,
		       unsigned long *collected, uint64_t *newly,
		       GError **error)
{
	Model *m = opaque;
	uint64_t n = migram_ram_block_used_length(b) / PAGE;

	model_guest_catch_up(m->guest, m->now, block_first(b), n);
	m->now += (double)n * m->costs.sync_page_s;
	if (!m->soft.ops->sync(m->soft.opaque, b, collected, newly, error))
		return false;
	/* the destination's copies of what the sync collected are stale */
	if (m->dest)
		model_dest_synced(m->dest, block_first(b), collected, n);
	return true;
}

static bool model_clear(void *opaque, MigramRamBlock *b, uint64_t first,
			uint64_t npages, const unsigned long *mask,
			GError **error)
{
	Model *m = opaque;

	model_guest_catch_up(m->guest, m->now, block_first(b) + first, npages);
	m->now += m->costs.clear_call_s;
	return m->soft.ops->clear(m->soft.opaque, b, first, npages, mask,
				  error);
}

static void model_stop(void *opaque, MigramRamBlock *b)
{
	Model *m = opaque;

	m->soft.ops->stop(m->soft.opaque, b);
}

static const MigramLogSourceOps model_ops = {
	.name = "model",
	.start = model_start,
	.sync = model_sync,
	.clear = model_clear,
	.stop = model_stop,
};

/* ---- the sender's callbacks ---------------------------------------------- */

static void on_pause(void *opaque)
{
	Model *m = opaque;

	/* the downtime starts with the request to stop, as the sender's */
	m->t_pause = m->now;
	m->paused = true;
	sample(m, true);
	model_guest_pause(m->guest, m->now);
	m->now += m->costs.pause_s;
}

static void on_resume(void *opaque)
{
	Model *m = opaque;

	m->paused = false;
}

static void on_throttle(void *opaque, unsigned int percent)
{
	Model *m = opaque;

	model_guest_throttle(m->guest, m->now, percent);
}

/* The sender's return path in virtual time (sender-env.h). */
static bool rp_pump(void *opaque, MigramRpWait wait, uint32_t value)
{
	Model *m = opaque;

	return model_dest_pump(m->dest, wait, value, m->link_free);
}

/* ---- set-up and report --------------------------------------------------- */

/* Set the report's error (first one wins) and return code. */
static int fail(Model *m, int code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
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

/* The RAM list over inaccessible mappings; false with *error set. */
static bool build_ram(Model *m, GError **error)
{
	const GArray *specs = m->opt->blocks;

	m->list = migram_ram_list_new();
	m->maps = g_ptr_array_new_with_free_func(g_free);
	for (guint i = 0; specs && i < specs->len; i++) {
		const SimBlockSpec *s = &g_array_index(specs, SimBlockSpec, i);
		size_t len = (size_t)((s->bytes + PAGE - 1) / PAGE * PAGE);
		void *p = mmap(NULL, len, PROT_NONE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
			       0);
		ModelMap *map;
		MigramRamBlock *b;

		if (p == MAP_FAILED) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
				    "model mode: cannot reserve %zu bytes of "
				    "address space for block '%s'",
				    len, s->name);
			return false;
		}
		map = g_new(ModelMap, 1);
		*map = (ModelMap){ p, len };
		g_ptr_array_add(m->maps, map);
		b = migram_ram_list_add(
			m->list,
			&(MigramRamBlockConfig){
				.idstr = s->name,
				.backend = MIGRAM_RAM_BACKEND_CALLER,
				.used_length = len,
				.host = p,
			},
			error);
		if (!b)
			return false;
		m->space_pages = MAX(m->space_pages,
				     (migram_ram_block_offset(b) + len) / PAGE);
		m->rep->total_bytes += s->bytes;
	}
	if (m->space_pages)
		return true;
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
		    "model mode: no RAM to migrate");
	return false;
}

/* Log, guest, channel and sender; false with *error set. */
static bool model_build(Model *m, GError **error)
{
	const SimOptions *o = m->opt;
	MigramMigrationConfig cfg = {
		.downtime_limit_ms = o->downtime_limit_ms,
		.max_bandwidth = o->max_bandwidth,
		.switchover_bandwidth = o->switchover_bandwidth,
		.clear_bmap_shift = o->clear_bitmap_shift,
		.clear_bmap_shift_set = o->clear_bitmap_shift_set,
		.clear_at_sync = o->clear_at_sync,
		.auto_converge = o->auto_converge,
		.max_time_ms = o->max_time_ms,
		.postcopy = o->mode != SIM_MODE_PRECOPY,
		.postcopy_after_passes = o->mode == SIM_MODE_HYBRID ? 1 : 0,
		.pause_guest = on_pause,
		.resume_guest = on_resume,
		.throttle_guest = on_throttle,
		.opaque = m,
	};

	if (!build_ram(m, error))
		return false;
	m->log = migram_soft_log_new(m->space_pages * PAGE, error);
	if (!m->log)
		return false;
	migram_soft_log_source(m->log, &m->soft);
	m->src = (MigramLogSource){ &model_ops, m };
	m->guest = model_guest_new(o, migram_soft_log_bitmap(m->log),
				   m->space_pages, error);
	if (!m->guest)
		return false;
	m->placed = migram_bitmap_new(m->space_pages);
	if (!m->placed) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "model mode: no memory for the destination's "
			    "record of %" G_GUINT64_FORMAT " pages",
			    m->space_pages);
		return false;
	}
	m->sink = (MigramChannelSink){ sink_write, m };
	m->env = (MigramSenderEnv){
		.clock = { clock_now, clock_sleep, m },
		.page_is_zero = page_is_zero,
		.opaque = m,
	};
	m->ch = migram_channel_new_virtual(&m->sink, &m->env.clock);
	m->mig = migram_migration_new(m->list, &m->src, &cfg);
	if (cfg.postcopy) {
		m->dest = model_dest_new(o, &m->costs, m->list, m->mig,
					 m->space_pages, &m->now, error);
		if (!m->dest)
			return false;
		m->env.rp_pump = rp_pump;
	}
	migram_migration_set_env(m->mig, &m->env);
	if (o->mode == SIM_MODE_POSTCOPY)
		migram_migration_start_postcopy(m->mig);
	return true;
}

static void model_free(Model *m)
{
	migram_migration_free(m->mig);
	model_dest_free(m->dest);
	migram_channel_free(m->ch);
	model_guest_free(m->guest);
	migram_bitmap_free(m->placed);
	migram_soft_log_free(m->log);
	migram_ram_list_free(m->list);
	for (guint i = 0; m->maps && i < m->maps->len; i++) {
		ModelMap *map = g_ptr_array_index(m->maps, i);

		munmap(map->addr, map->len);
	}
	if (m->maps)
		g_ptr_array_unref(m->maps);
}

/*
 * The report from the sender's own statistics.  The destination has the
 * guest once the link delivered the last byte and one round trip passed:
 * that is added to the total and the downtime.
 */
static void fill_report(Model *m, bool ok)
{
	SimReport *r = m->rep;
	MigramMigrationStats st;
	/* a SHUT wait already ran the clock to the round trip's end */
	bool shut = m->dest && model_dest_shut(m->dest);
	double tail = MAX(m->link_free - m->now, 0.0) +
		      (shut ? 0 : m->costs.latency_s);

	migram_migration_get_stats(m->mig, &st);
	if (ok)
		m->now += tail;
	r->transferred_bytes = st.transferred_bytes;
	r->normal_pages = st.normal_pages;
	r->duplicate_pages = st.duplicate_pages;
	r->iterations = st.iterations;
	r->dirty_sync_count = st.dirty_sync_count;
	r->log_clear_calls = st.log_clear_calls;
	r->setup_time_ms = st.setup_time_ms;
	r->downtime_parts_us[0] = st.downtime_pause_us;
	r->downtime_parts_us[1] = st.downtime_sync_us;
	r->downtime_parts_us[2] = st.downtime_pages_us;
	r->downtime_parts_us[3] = st.downtime_device_us;
	r->log_sync_us = st.log_sync_us;
	r->log_clear_us = st.log_clear_us;
	r->total_time_ms = (uint64_t)llround(m->now * 1000);
	/* postcopy: the switch is the downtime, as the sender's figure */
	r->downtime_ms =
		!ok ? 0
		: st.postcopy_time_ms
			? st.downtime_ms
			: (uint64_t)llround((m->now - m->t_pause) * 1000);
	r->pause_at = ok ? m->t_pause : -1;
	r->mbps = m->now > 0 ? (double)st.transferred_bytes * 8 / m->now / 1e6
			     : 0;
	r->throttle_percent = st.throttle_percent;
	r->workload_writes = (uint64_t)model_guest_writes(m->guest);
	r->postcopy_time_ms = st.postcopy_time_ms;
	r->postcopy_requests = st.postcopy_requests;
	r->postcopy_urgent_pages = st.postcopy_urgent_pages;
	r->discard_pages = st.postcopy_discard_pages;
	if (m->dest)
		model_dest_report(m->dest, r);
	r->verified = false;
}

int sim_model_run(const SimOptions *opt, SimReport *report)
{
	g_autoptr(GError) error = NULL;
	Model m = { .opt = opt, .rep = report };
	int rc = SIM_EXIT_OK;
	bool ok;

	if (!report->timeline)
		report->timeline = g_array_new(FALSE, TRUE, sizeof(SimSample));
	report->model = true;
	report->pause_at = -1;
	g_strlcpy(report->mode_name,
		  opt->mode == SIM_MODE_POSTCOPY ? "postcopy"
		  : opt->mode == SIM_MODE_HYBRID ? "hybrid"
						 : "precopy",
		  sizeof(report->mode_name));
	model_costs_init(&m.costs, opt);
	if (opt->workload != SIM_WORKLOAD_IDLE && !opt->dirty_rate)
		rc = fail(&m, SIM_EXIT_USAGE,
			  "model mode needs --dirty-rate for the %s workload "
			  "(there is no \"flat out\" in virtual time)",
			  workload_name(opt->workload));
	else if (!model_build(&m, &error))
		rc = fail(&m,
			  g_error_matches(error, MIGRAM_ERROR,
					  MIGRAM_ERROR_INVALID)
				  ? SIM_EXIT_USAGE
				  : SIM_EXIT_FAILED,
			  "%s", error->message);
	if (rc != SIM_EXIT_OK) {
		sim_progress_done(opt);
		model_free(&m);
		return rc;
	}
	m.sample_every = MAX(SAMPLE_MIN_S, (double)(m.space_pages * PAGE) /
						   m.costs.link_bw /
						   SAMPLE_TARGET);
	g_strlcpy(report->status, "active", sizeof(report->status));
	ok = migram_migration_run(m.mig, m.ch, &error);
	fill_report(&m, ok);
	if (ok) {
		g_strlcpy(report->status, "completed", sizeof(report->status));
	} else {
		rc = g_error_matches(error, MIGRAM_ERROR,
				     MIGRAM_ERROR_NOT_CONVERGED)
			     ? SIM_EXIT_NOT_CONVERGED
			     : SIM_EXIT_FAILED;
		fail(&m, rc, "%s", error->message);
	}
	sample(&m, true);
	sim_progress_done(opt);
	model_free(&m);
	return rc;
}
