/* SPDX-License-Identifier: MIT */
/*
 * Model mode (sim/model.c): the sender's bitmaps and policy in virtual
 * time.  Each case builds SimOptions by hand and calls sim_model_run().
 *
 * The test is built from model.c alone (tests/meson.build), not from the
 * simulator's library, so that it needs neither json-glib nor cairo: the
 * progress line is stubbed out below and the report is set up here.
 */
#include <string.h>

#include "sim.h"

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define MB UINT64_C(1000000)
#define GBIT (UINT64_C(125) * MB) /* 1 Gbit/s in bytes/s */

/* Options for one block of `ram` bytes; the caller frees with opts_free. */
static SimOptions opts_new(uint64_t ram, SimWorkload w, uint64_t dirty_rate,
			   uint64_t bandwidth)
{
	SimOptions o = { 0 };
	SimBlockSpec b = { .name = g_strdup("pc.ram"), .bytes = ram };

	o.blocks = g_array_new(FALSE, TRUE, sizeof(SimBlockSpec));
	g_array_append_val(o.blocks, b);
	o.workload = w;
	o.dirty_rate = dirty_rate;
	o.max_bandwidth = bandwidth;
	o.threads = 2;
	o.model = true;
	o.quiet = true;
	o.link_latency_us = 1000;
	return o;
}

static void opts_free(SimOptions *o)
{
	for (guint i = 0; i < o->blocks->len; i++)
		g_free(g_array_index(o->blocks, SimBlockSpec, i).name);
	g_array_unref(o->blocks);
}

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

/* Run the model on a fresh report; the caller frees it (report_clear). */
static int run(const SimOptions *o, SimReport *r)
{
	memset(r, 0, sizeof(*r));
	r->timeline = g_array_new(FALSE, TRUE, sizeof(SimSample));
	r->pause_at = -1;
	return sim_model_run(o, r);
}

static void report_clear(SimReport *r)
{
	g_array_unref(r->timeline);
	g_free(r->error);
	g_free(r->verify_detail);
}

/* What every finished run must satisfy, converged or not. */
static void check_consistent(const SimOptions *o, const SimReport *r)
{
	double last = -1;

	g_assert_true(r->model);
	g_assert_cmpuint(r->transferred_bytes, ==, r->normal_pages * 4104);
	g_assert_cmpuint(r->duplicate_pages, ==, 0);
	g_assert_cmpuint(r->dirty_sync_count, >=, r->iterations + 1);
	g_assert_cmpuint(r->timeline->len, >, 0);
	for (guint i = 0; i < r->timeline->len; i++) {
		const SimSample *s = &g_array_index(r->timeline, SimSample, i);

		g_assert_cmpfloat(s->t, >=, last);
		g_assert_cmpfloat(s->bandwidth, <=,
				  (double)o->max_bandwidth * 1.000001);
		last = s->t;
	}
	g_assert_cmpfloat(last * 1000, <=, (double)r->total_time_ms + 1);
}

/* An idle guest: one pass of every page, then nothing is left. */
static void test_idle(void)
{
	SimOptions o = opts_new(256 * MiB, SIM_WORKLOAD_IDLE, 0, GBIT);
	SimReport r;
	double wire = (double)(256 * MiB / 4096 * 4104) / (double)GBIT;

	g_assert_cmpint(run(&o, &r), ==, SIM_EXIT_OK);
	check_consistent(&o, &r);
	g_assert_cmpstr(r.status, ==, "completed");
	g_assert_null(r.error);
	g_assert_cmpuint(r.total_bytes, ==, 256 * MiB);
	g_assert_cmpuint(r.normal_pages, ==, 256 * MiB / 4096);
	g_assert_cmpuint(r.iterations, ==, 1);
	g_assert_cmpuint(r.dirty_sync_count, ==, 3); /* setup, pass, final */
	g_assert_cmpuint(r.log_clear_calls, ==, 1);  /* one 1 GiB chunk */
	g_assert_cmpuint(r.workload_writes, ==, 0);
	/* every page on the wire, then only the round trip of downtime */
	g_assert_cmpfloat_with_epsilon(r.pause_at, wire, 1e-9);
	g_assert_cmpuint(r.downtime_ms, ==, 1);
	g_assert_cmpuint(r.total_time_ms, ==, (uint64_t)(wire * 1000 + 1.5));
	report_clear(&r);
	opts_free(&o);
}

/* A hot set converges; at a higher dirty rate it takes more passes. */
static void test_hotset_rate(void)
{
	SimOptions o = opts_new(GiB, SIM_WORKLOAD_HOTSET, 20 * MB, GBIT);
	SimReport slow, fast;

	g_assert_cmpint(run(&o, &slow), ==, SIM_EXIT_OK);
	o.dirty_rate = 100 * MB;
	g_assert_cmpint(run(&o, &fast), ==, SIM_EXIT_OK);
	check_consistent(&o, &slow);
	check_consistent(&o, &fast);
	g_assert_cmpuint(slow.iterations, >=, 2);
	g_assert_cmpuint(fast.iterations, >, slow.iterations);
	g_assert_cmpuint(fast.transferred_bytes, >, slow.transferred_bytes);
	g_assert_cmpuint(slow.downtime_ms, <=, 300 + 1);
	g_assert_cmpuint(fast.downtime_ms, <=, 300 + 1);
	g_assert_cmpuint(fast.throttle_percent, ==, 0);
	g_assert_cmpfloat(fast.pause_at, >, 0);
	report_clear(&slow);
	report_clear(&fast);
	opts_free(&o);
}

/* Dirtying faster than the link: give up, unless auto-converge. */
static void test_too_fast(void)
{
	SimOptions o = opts_new(GiB, SIM_WORKLOAD_UNIFORM, 200 * MB, GBIT);
	SimReport r;

	g_assert_cmpint(run(&o, &r), ==, SIM_EXIT_NOT_CONVERGED);
	check_consistent(&o, &r);
	g_assert_cmpstr(r.status, ==, "failed");
	g_assert_nonnull(strstr(r.error, "does not converge"));
	g_assert_cmpfloat(r.pause_at, <, 0);
	g_assert_cmpuint(r.downtime_ms, ==, 0);
	report_clear(&r);

	o.auto_converge = true;
	g_assert_cmpint(run(&o, &r), ==, SIM_EXIT_OK);
	check_consistent(&o, &r);
	g_assert_cmpuint(r.throttle_percent, >=, 20);
	g_assert_cmpuint(r.downtime_ms, <=, 300 + 1);
	report_clear(&r);
	opts_free(&o);
}

/* --max-time is virtual time. */
static void test_max_time(void)
{
	SimOptions o = opts_new(GiB, SIM_WORKLOAD_UNIFORM, 200 * MB, GBIT);
	SimReport r;

	o.max_time_ms = 20000;
	g_assert_cmpint(run(&o, &r), ==, SIM_EXIT_NOT_CONVERGED);
	g_assert_nonnull(strstr(r.error, "did not finish within 20000 ms"));
	g_assert_cmpuint(r.total_time_ms, >=, 20000);
	g_assert_cmpuint(r.total_time_ms, <=, 20100);
	report_clear(&r);
	opts_free(&o);
}

/* The postponed clear: 1 GiB chunks cost far fewer calls than 64 pages. */
static void test_clear_shift(void)
{
	SimOptions o = opts_new(GiB, SIM_WORKLOAD_HOTSET, 100 * MB, GBIT);
	SimReport coarse, fine;

	o.clear_bitmap_shift_set = true;
	o.clear_bitmap_shift = 18;
	g_assert_cmpint(run(&o, &coarse), ==, SIM_EXIT_OK);
	o.clear_bitmap_shift = 6;
	g_assert_cmpint(run(&o, &fine), ==, SIM_EXIT_OK);
	/* one chunk: at most one clear per pass */
	g_assert_cmpuint(coarse.log_clear_calls, <=, coarse.iterations);
	g_assert_cmpuint(fine.log_clear_calls, >=, GiB / 4096 / 64);
	g_assert_cmpuint(coarse.log_clear_calls * 1000, <,
			 fine.log_clear_calls);
	report_clear(&coarse);
	report_clear(&fine);
	opts_free(&o);
}

/* Several blocks: chunks stop at block ends, one clear per block. */
static void test_blocks(void)
{
	SimOptions o = opts_new(GiB, SIM_WORKLOAD_IDLE, 0, GBIT);
	SimBlockSpec b = { .name = g_strdup("vga.vram"), .bytes = 16 * MiB };
	SimReport r;

	g_array_append_val(o.blocks, b);
	g_assert_cmpint(run(&o, &r), ==, SIM_EXIT_OK);
	g_assert_cmpuint(r.total_bytes, ==, GiB + 16 * MiB);
	g_assert_cmpuint(r.normal_pages, ==, (GiB + 16 * MiB) / 4096);
	g_assert_cmpuint(r.log_clear_calls, ==, 2);
	report_clear(&r);
	opts_free(&o);
}

/* Same options, same figures: the model is deterministic. */
static void test_deterministic(void)
{
	SimOptions o = opts_new(GiB, SIM_WORKLOAD_SEQUENTIAL, 60 * MB, GBIT);
	SimReport a, b;

	g_assert_cmpint(run(&o, &a), ==, SIM_EXIT_OK);
	g_assert_cmpint(run(&o, &b), ==, SIM_EXIT_OK);
	check_consistent(&o, &a);
	g_assert_cmpuint(a.transferred_bytes, ==, b.transferred_bytes);
	g_assert_cmpuint(a.iterations, ==, b.iterations);
	g_assert_cmpuint(a.total_time_ms, ==, b.total_time_ms);
	g_assert_cmpuint(a.timeline->len, ==, b.timeline->len);
	report_clear(&a);
	report_clear(&b);
	opts_free(&o);
}

/* A workload with no rate has no meaning in virtual time. */
static void test_needs_rate(void)
{
	SimOptions o = opts_new(GiB, SIM_WORKLOAD_UNIFORM, 0, GBIT);
	SimReport r;

	g_assert_cmpint(run(&o, &r), ==, SIM_EXIT_USAGE);
	g_assert_nonnull(strstr(r.error, "--dirty-rate"));
	report_clear(&r);
	opts_free(&o);
}

/* 64 GiB at 10 Gbit/s (the default link): just run it. */
static void test_64g(void)
{
	SimOptions o = opts_new(64 * GiB, SIM_WORKLOAD_HOTSET, 500 * MB, 0);
	SimReport r;
	int rc = run(&o, &r);

	g_assert_true(rc == SIM_EXIT_OK || rc == SIM_EXIT_NOT_CONVERGED);
	g_assert_cmpuint(r.normal_pages, >=, 64 * GiB / 4096);
	g_assert_cmpfloat(r.mbps, >, 9000);
	g_assert_cmpuint(r.timeline->len, <=, 4000);
	report_clear(&r);
	opts_free(&o);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/sim/model/idle", test_idle);
	g_test_add_func("/sim/model/hotset-rate", test_hotset_rate);
	g_test_add_func("/sim/model/too-fast", test_too_fast);
	g_test_add_func("/sim/model/max-time", test_max_time);
	g_test_add_func("/sim/model/clear-shift", test_clear_shift);
	g_test_add_func("/sim/model/blocks", test_blocks);
	g_test_add_func("/sim/model/deterministic", test_deterministic);
	g_test_add_func("/sim/model/needs-rate", test_needs_rate);
	g_test_add_func("/sim/model/64g", test_64g);
	return g_test_run();
}
