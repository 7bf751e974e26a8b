/* SPDX-License-Identifier: MIT */
/*
 * Model mode (sim/model.c): the library's own sender in virtual time over
 * a modelled link, with a modelled guest and no page contents.  Each case
 * fills SimOptions in its fixture and calls sim_model_run().
 *
 * The test is built from model.c and model-guest.c with the library, not
 * from the simulator's library, so that it needs neither json-glib nor
 * cairo: the progress line is stubbed out below.
 *
 * The guest's RAM is an inaccessible mapping in model mode: any read of a
 * page by the sender would crash these tests.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define MB UINT64_C(1000000)
#define GBIT (UINT64_C(125) * MB) /* 1 Gbit/s in bytes/s */
#define RECORD 4104               /* a normal page's record: 8 + 4096 */

typedef struct {
	SimOptions o;
	SimReport r, r2;
} Fixture;

/* report.c's progress line: nothing to show in a test. */
void sim_progress(const SimOptions *opt, const char *phase, const SimSample *s,
		  uint64_t iteration)
{
	(void)opt;
	(void)phase;
	(void)s;
	(void)iteration;
}

void sim_progress_done(const SimOptions *opt)
{
	(void)opt;
}

static void add_block(SimOptions *o, const char *name, uint64_t bytes)
{
	SimBlockSpec b = { .name = g_strdup(name), .bytes = bytes };

	g_array_append_val(o->blocks, b);
}

/*
 * One 256 MiB block, random fill (every page normal), idle, a 1 Gbit/s
 * link to a remote destination (no placement cost), 1 ms round trip.
 */
static void fixture_set_up(Fixture *f, gconstpointer data)
{
	(void)data;
	memset(f, 0, sizeof(*f));
	f->o.blocks = g_array_new(FALSE, TRUE, sizeof(SimBlockSpec));
	add_block(&f->o, "pc.ram", 256 * MiB);
	f->o.workload = SIM_WORKLOAD_IDLE;
	f->o.fill = SIM_FILL_RANDOM;
	f->o.link_bandwidth = GBIT;
	f->o.threads = 2;
	f->o.model = true;
	f->o.quiet = true;
	f->o.link_latency_us = 1000;
}

static void report_clear(SimReport *r)
{
	if (r->timeline)
		g_array_unref(r->timeline);
	g_free(r->error);
	g_free(r->verify_detail);
	memset(r, 0, sizeof(*r));
}

static void fixture_tear_down(Fixture *f, gconstpointer data)
{
	(void)data;
	for (guint i = 0; i < f->o.blocks->len; i++)
		g_free(g_array_index(f->o.blocks, SimBlockSpec, i).name);
	g_array_unref(f->o.blocks);
	report_clear(&f->r);
	report_clear(&f->r2);
}

/* Run the model on a fresh report r. */
static int run(const SimOptions *o, SimReport *r)
{
	report_clear(r);
	r->timeline = g_array_new(FALSE, TRUE, sizeof(SimSample));
	r->pause_at = -1;
	return sim_model_run(o, r);
}

/* What every finished run must satisfy, converged or not. */
static void check_consistent(const SimReport *r)
{
	double last = -1;

	g_assert_true(r->model);
	/* every record is on the wire: pages, zero records, framing (and a
	 * postcopy switch's discard ranges, 16 bytes at most per page) */
	g_assert_cmpuint(r->transferred_bytes, >=,
			 r->normal_pages * RECORD + r->duplicate_pages * 8);
	g_assert_cmpuint(r->transferred_bytes, <=,
			 r->normal_pages * RECORD + r->duplicate_pages * 9 +
				 (uint64_t)64 * 1024 + r->discard_pages * 16);
	g_assert_cmpuint(r->dirty_sync_count, >=, r->iterations + 1);
	g_assert_cmpuint(r->timeline->len, >, 0);
	for (guint i = 0; i < r->timeline->len; i++) {
		const SimSample *s = &g_array_index(r->timeline, SimSample, i);

		g_assert_cmpfloat(s->t, >=, last);
		last = s->t;
	}
	g_assert_cmpfloat(last * 1000, <=, (double)r->total_time_ms + 1);
}

/* An idle guest: one pass of every page at the link's rate. */
static void test_idle(Fixture *f, gconstpointer data)
{
	double wire;

	(void)data;
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_OK);
	check_consistent(&f->r);
	g_assert_cmpstr(f->r.status, ==, "completed");
	g_assert_null(f->r.error);
	g_assert_cmpuint(f->r.total_bytes, ==, 256 * MiB);
	g_assert_cmpuint(f->r.normal_pages, ==, 256 * MiB / 4096);
	g_assert_cmpuint(f->r.duplicate_pages, ==, 0);
	g_assert_cmpuint(f->r.iterations, ==, 1);
	g_assert_cmpuint(f->r.workload_writes, ==, 0);
	/* bandwidth-bound: the stream at 1 Gbit/s, plus the round trip */
	wire = (double)f->r.transferred_bytes / (double)GBIT * 1000;
	g_assert_cmpfloat((double)f->r.total_time_ms, >=, wire);
	g_assert_cmpfloat((double)f->r.total_time_ms, <=, wire * 1.02 + 2);
	/* the pause: what the TCP buffer (4 MiB) still holds, one RTT */
	g_assert_cmpfloat((double)f->r.downtime_ms, <=,
			  4.0 * MiB / (double)GBIT * 1000 + 3);
}

/* Zero pages cost their header only, as in the real stream. */
static void test_zero_pages(Fixture *f, gconstpointer data)
{
	(void)data;
	f->o.fill = SIM_FILL_PATTERN; /* every fourth page zero */
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_OK);
	check_consistent(&f->r);
	g_assert_cmpuint(f->r.duplicate_pages, ==, 256 * MiB / 4096 / 4);
	g_assert_cmpuint(f->r.normal_pages, ==, 256 * MiB / 4096 / 4 * 3);
	f->o.fill = SIM_FILL_ZERO;
	g_assert_cmpint(run(&f->o, &f->r2), ==, SIM_EXIT_OK);
	check_consistent(&f->r2);
	g_assert_cmpuint(f->r2.normal_pages, ==, 0);
	g_assert_cmpuint(f->r2.duplicate_pages, ==, 256 * MiB / 4096);
	g_assert_cmpuint(f->r2.transferred_bytes, <, 1 * MiB);
	g_assert_cmpuint(f->r2.total_time_ms * 10, <, f->r.total_time_ms);
}

/* Pages the guest wrote are not zero any more. */
static void test_written_not_zero(Fixture *f, gconstpointer data)
{
	(void)data;
	f->o.fill = SIM_FILL_ZERO;
	f->o.workload = SIM_WORKLOAD_UNIFORM;
	f->o.dirty_rate = 200 * MB;
	f->o.max_bandwidth = 100 * MB;
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_OK);
	check_consistent(&f->r);
	/* the first pass of zero records is quick: few pages written */
	g_assert_cmpuint(f->r.normal_pages, >, 100);
	g_assert_cmpuint(f->r.duplicate_pages, >, 256 * MiB / 4096 / 2);
	g_assert_cmpuint(f->r.normal_pages + f->r.duplicate_pages, >,
			 256 * MiB / 4096);
}

/* A hot set converges; at a higher dirty rate it sends more. */
static void test_hotset_rate(Fixture *f, gconstpointer data)
{
	(void)data;
	f->o.workload = SIM_WORKLOAD_HOTSET;
	f->o.max_bandwidth = 100 * MB;
	f->o.dirty_rate = 10 * MB;
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_OK);
	f->o.dirty_rate = 60 * MB;
	g_assert_cmpint(run(&f->o, &f->r2), ==, SIM_EXIT_OK);
	check_consistent(&f->r);
	check_consistent(&f->r2);
	g_assert_cmpuint(f->r2.transferred_bytes, >, f->r.transferred_bytes);
	g_assert_cmpuint(f->r.normal_pages, >, 256 * MiB / 4096);
	g_assert_cmpuint(f->r.downtime_ms, <=, 300 + 2);
	g_assert_cmpuint(f->r2.downtime_ms, <=, 300 + 2);
	g_assert_cmpfloat(f->r2.pause_at, >, 0);
}

/* Dirtying faster than the link: gives up, unless auto-converge. */
static void test_too_fast(Fixture *f, gconstpointer data)
{
	(void)data;
	f->o.workload = SIM_WORKLOAD_UNIFORM;
	f->o.dirty_rate = 200 * MB;
	f->o.max_bandwidth = 50 * MB;
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_NOT_CONVERGED);
	check_consistent(&f->r);
	g_assert_cmpstr(f->r.status, ==, "failed");
	g_assert_nonnull(strstr(f->r.error, "does not converge"));
	g_assert_cmpfloat(f->r.pause_at, <, 0);
	g_assert_cmpuint(f->r.downtime_ms, ==, 0);
	f->o.auto_converge = true;
	g_assert_cmpint(run(&f->o, &f->r2), ==, SIM_EXIT_OK);
	check_consistent(&f->r2);
	g_assert_cmpuint(f->r2.throttle_percent, >=, 20);
	g_assert_cmpuint(f->r2.downtime_ms, <=, 300 + 2);
}

/* --max-time is virtual time: the sender's limit on the model's clock. */
static void test_max_time(Fixture *f, gconstpointer data)
{
	(void)data;
	f->o.workload = SIM_WORKLOAD_UNIFORM;
	f->o.dirty_rate = 200 * MB;
	f->o.max_bandwidth = 50 * MB;
	f->o.max_time_ms = 20000;
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_NOT_CONVERGED);
	g_assert_nonnull(strstr(f->r.error, "did not finish within 20000 ms"));
	g_assert_cmpuint(f->r.total_time_ms, >=, 20000);
	g_assert_cmpuint(f->r.total_time_ms, <=, 20200);
}

/* The clear-bitmap shift sets the clear calls, not the outcome. */
static void test_clear_shift(Fixture *f, gconstpointer data)
{
	(void)data;
	f->o.workload = SIM_WORKLOAD_HOTSET;
	f->o.dirty_rate = 20 * MB;
	f->o.max_bandwidth = 100 * MB;
	f->o.clear_bitmap_shift_set = true;
	f->o.clear_bitmap_shift = 18;
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_OK);
	f->o.clear_bitmap_shift = 8;
	g_assert_cmpint(run(&f->o, &f->r2), ==, SIM_EXIT_OK);
	g_assert_cmpuint(f->r.log_clear_calls, <=, f->r.dirty_sync_count);
	g_assert_cmpuint(f->r2.log_clear_calls, >=, 256 * MiB / 4096 / 256);
}

/* Several blocks: each is synced, cleared and sent. */
static void test_blocks(Fixture *f, gconstpointer data)
{
	(void)data;
	add_block(&f->o, "vga.vram", 16 * MiB);
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_OK);
	check_consistent(&f->r);
	g_assert_cmpuint(f->r.total_bytes, ==, 272 * MiB);
	g_assert_cmpuint(f->r.normal_pages, ==, 272 * MiB / 4096);
	g_assert_cmpuint(f->r.log_clear_calls, >=, 2); /* one chunk each */
}

/* The same options give the same figures. */
static void test_deterministic(Fixture *f, gconstpointer data)
{
	(void)data;
	f->o.workload = SIM_WORKLOAD_HOTSET;
	f->o.dirty_rate = 40 * MB;
	f->o.max_bandwidth = 100 * MB;
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_OK);
	g_assert_cmpint(run(&f->o, &f->r2), ==, SIM_EXIT_OK);
	g_assert_cmpuint(f->r.transferred_bytes, ==, f->r2.transferred_bytes);
	g_assert_cmpuint(f->r.iterations, ==, f->r2.iterations);
	g_assert_cmpuint(f->r.total_time_ms, ==, f->r2.total_time_ms);
	g_assert_cmpuint(f->r.timeline->len, ==, f->r2.timeline->len);
}

/* A writing workload needs a rate: "flat out" means nothing here. */
static void test_needs_rate(Fixture *f, gconstpointer data)
{
	(void)data;
	f->o.workload = SIM_WORKLOAD_UNIFORM;
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_USAGE);
	g_assert_nonnull(strstr(f->r.error, "--dirty-rate"));
}

/* 64 GiB at 10 Gbit/s: bandwidth-bound, the timeline stays bounded. */
static void test_64g(Fixture *f, gconstpointer data)
{
	int rc;

	(void)data;
	g_array_index(f->o.blocks, SimBlockSpec, 0).bytes = 64 * GiB;
	f->o.workload = SIM_WORKLOAD_HOTSET;
	f->o.dirty_rate = 500 * MB;
	f->o.link_bandwidth = 10 * GBIT;
	f->o.max_bandwidth = 10 * GBIT;
	rc = run(&f->o, &f->r);
	g_assert_true(rc == SIM_EXIT_OK || rc == SIM_EXIT_NOT_CONVERGED);
	g_assert_cmpuint(f->r.normal_pages, >=, 64 * GiB / 4096);
	g_assert_cmpfloat(f->r.mbps, >, 9000);
	g_assert_cmpfloat(f->r.mbps, <, 10000);
	g_assert_cmpuint(f->r.timeline->len, <=, 4000);
}

/* The sum of a report's fault histogram. */
static uint64_t hist_sum(const SimReport *r)
{
	uint64_t n = 0;

	for (int i = 0; i < 32; i++)
		n += r->fault_hist[i];
	return n;
}

/*
 * Postcopy of an idle guest: the real postcopy source sends every page in
 * the background after the switch, the model destination answers PONG and
 * SHUT; no reader runs, so nothing faults.
 */
static void test_postcopy_idle(Fixture *f, gconstpointer data)
{
	double wire = 256.0 * MiB / 1.25e8 * 1000; /* ms at 1 Gbit/s */

	(void)data;
	f->o.mode = SIM_MODE_POSTCOPY;
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_OK);
	check_consistent(&f->r);
	g_assert_cmpstr(f->r.status, ==, "completed");
	g_assert_cmpstr(f->r.mode_name, ==, "postcopy");
	g_assert_cmpuint(f->r.normal_pages, ==, 256 * MiB / 4096);
	g_assert_cmpuint(f->r.iterations, ==, 0);
	g_assert_cmpuint(f->r.faults, ==, 0);
	g_assert_cmpuint(f->r.postcopy_requests, ==, 0);
	g_assert_cmpuint(f->r.discard_pages, ==, 256 * MiB / 4096);
	/* the switch: pause, sync, the PONG's round trip; the rest is the
	 * postcopy phase at the link's rate, then SHUT's round trip */
	g_assert_cmpuint(f->r.downtime_ms, >=, 1);
	g_assert_cmpuint(f->r.downtime_ms, <=, 3);
	g_assert_cmpfloat((double)f->r.total_time_ms, >=, wire);
	g_assert_cmpfloat((double)f->r.total_time_ms, <=, wire * 1.05 + 5);
	g_assert_cmpuint(f->r.postcopy_time_ms, <=, f->r.total_time_ms);
	g_assert_cmpuint(f->r.postcopy_time_ms + f->r.downtime_ms + 1, >=,
			 f->r.total_time_ms);
}

/*
 * Postcopy with readers on the destination: faults on missing pages, one
 * request per faulted page, each fault waits at least a round trip.
 */
static void test_postcopy_faults(Fixture *f, gconstpointer data)
{
	(void)data;
	f->o.mode = SIM_MODE_POSTCOPY;
	f->o.workload = SIM_WORKLOAD_HOTSET;
	f->o.dirty_rate = 40 * MiB;
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_OK);
	check_consistent(&f->r);
	g_assert_cmpuint(f->r.faults, >, 100);
	g_assert_cmpuint(hist_sum(&f->r), ==, f->r.faults);
	g_assert_cmpuint(f->r.postcopy_requests, >, 0);
	g_assert_cmpuint(f->r.postcopy_requests, <=, f->r.faults);
	g_assert_cmpuint(f->r.postcopy_urgent_pages, <=,
			 f->r.postcopy_requests);
	g_assert_cmpuint(f->r.postcopy_urgent_pages, >, 0);
	g_assert_cmpuint(f->r.dest_touches, >, f->r.faults);
	g_assert_cmpuint(f->r.fault_p50_us, >=, 1000); /* the round trip */
	g_assert_cmpuint(f->r.fault_max_us, >=, f->r.fault_p99_us);
	g_assert_cmpuint(f->r.fault_p99_us, >=, f->r.fault_p50_us);
	g_assert_cmpuint(f->r.blocked_ms, >=, f->r.faults / 1000);
	/* the same command line, the same figures */
	g_assert_cmpint(run(&f->o, &f->r2), ==, SIM_EXIT_OK);
	g_assert_cmpuint(f->r2.faults, ==, f->r.faults);
	g_assert_cmpuint(f->r2.total_time_ms, ==, f->r.total_time_ms);
}

/* A longer round trip makes every fault wait longer. */
static void test_postcopy_latency(Fixture *f, gconstpointer data)
{
	(void)data;
	f->o.mode = SIM_MODE_POSTCOPY;
	f->o.workload = SIM_WORKLOAD_HOTSET;
	f->o.dirty_rate = 40 * MiB;
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_OK);
	f->o.link_latency_us = 20000;
	g_assert_cmpint(run(&f->o, &f->r2), ==, SIM_EXIT_OK);
	g_assert_cmpuint(f->r2.fault_p50_us, >=, 20000);
	g_assert_cmpuint(f->r2.fault_p50_us, >, f->r.fault_p50_us);
	/* PING 2 and the SHUT each wait a round trip */
	g_assert_cmpuint(f->r2.total_time_ms, >=, f->r.total_time_ms + 38);
	g_assert_cmpuint(f->r2.downtime_ms, >=, 20); /* PONG's round trip */
}

/*
 * Hybrid: one rate-limited precopy pass, then postcopy for what the pass
 * left dirty; the switch discards those pages' stale copies.
 */
static void test_hybrid(Fixture *f, gconstpointer data)
{
	(void)data;
	f->o.mode = SIM_MODE_HYBRID;
	f->o.workload = SIM_WORKLOAD_HOTSET;
	f->o.dirty_rate = 40 * MiB;
	f->o.max_bandwidth = 100 * MiB;
	g_assert_cmpint(run(&f->o, &f->r), ==, SIM_EXIT_OK);
	check_consistent(&f->r);
	g_assert_cmpstr(f->r.mode_name, ==, "hybrid");
	g_assert_cmpuint(f->r.iterations, ==, 1);
	g_assert_cmpuint(f->r.discard_pages, >, 0);
	g_assert_cmpuint(f->r.discard_pages, <, 256 * MiB / 4096 / 4);
	g_assert_cmpuint(f->r.postcopy_time_ms, >, 0);
	g_assert_cmpuint(f->r.postcopy_time_ms, <, f->r.total_time_ms / 4);
	/* the first pass at the limit */
	g_assert_cmpfloat((double)f->r.total_time_ms, >=,
			  256.0 * 1000 / 100 * 0.95);
	g_assert_cmpfloat(f->r.pause_at * 1000, <=, (double)f->r.total_time_ms);
	g_assert_cmpuint(f->r.normal_pages, >, 256 * MiB / 4096);
}

#define ADD(path, fn)                                                          \
	g_test_add("/sim/model/" path, Fixture, NULL, fixture_set_up, fn,      \
		   fixture_tear_down)

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	/* the calibrated defaults, whatever the environment says */
	g_unsetenv("MIGRAM_MODEL_COSTS");
	ADD("idle", test_idle);
	ADD("zero-pages", test_zero_pages);
	ADD("written-not-zero", test_written_not_zero);
	ADD("hotset-rate", test_hotset_rate);
	ADD("too-fast", test_too_fast);
	ADD("max-time", test_max_time);
	ADD("clear-shift", test_clear_shift);
	ADD("blocks", test_blocks);
	ADD("deterministic", test_deterministic);
	ADD("needs-rate", test_needs_rate);
	ADD("64g", test_64g);
	ADD("postcopy-idle", test_postcopy_idle);
	ADD("postcopy-faults", test_postcopy_faults);
	ADD("postcopy-latency", test_postcopy_latency);
	ADD("hybrid", test_hybrid);
	return g_test_run();
}
