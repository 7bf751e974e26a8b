/* SPDX-License-Identifier: MIT */
/*
 * The convergence policy as pure functions: no threads, no guest.
 */
#include <migram/migram.h>

#include "policy.h"
#include "migram-test-util.h"

#define MB (UINT64_C(1000) * 1000)
#define SEC (UINT64_C(1000) * 1000)

static void test_completes_within_downtime(void)
{
	PolicyState ps;

	migram_policy_init(&ps, 300, 5, false, 20, 10);
	/* 10 MB left at 100 MB/s: 100 ms expected, under 300 ms. */
	g_assert_cmpint(migram_policy_after_sync(&ps, 10 * MB, 100 * MB, 0,
						 SEC),
			==, POLICY_COMPLETE);
	g_assert_cmpuint(ps.expected_downtime_ms, ==, 100);
	/* Nothing left is always complete, even with no bandwidth seen. */
	migram_policy_init(&ps, 300, 5, false, 20, 10);
	g_assert_cmpint(migram_policy_after_sync(&ps, 0, 0, 0, SEC), ==,
			POLICY_COMPLETE);
	/* Something left but nothing sent: keep going. */
	g_assert_cmpint(migram_policy_after_sync(&ps, 4096, 0, 0, SEC), ==,
			POLICY_CONTINUE);
}

static void test_gives_up_after_stalls(void)
{
	PolicyState ps;

	migram_policy_init(&ps, 300, 3, false, 20, 10);
	/* 1 GB left at 100 MB/s, never shrinking. */
	g_assert_cmpint(migram_policy_after_sync(&ps, 1000 * MB, 100 * MB,
						 10 * MB, SEC),
			==, POLICY_CONTINUE); /* first: a new best */
	g_assert_cmpint(migram_policy_after_sync(&ps, 1000 * MB, 100 * MB,
						 10 * MB, SEC),
			==, POLICY_CONTINUE);
	g_assert_cmpint(migram_policy_after_sync(&ps, 1000 * MB, 100 * MB,
						 10 * MB, SEC),
			==, POLICY_CONTINUE);
	g_assert_false(ps.not_converging);
	g_assert_cmpint(migram_policy_after_sync(&ps, 1000 * MB, 100 * MB,
						 10 * MB, SEC),
			==, POLICY_GIVE_UP);
	g_assert_true(ps.not_converging);
}

static void test_progress_resets_stalls(void)
{
	PolicyState ps;
	uint64_t left = 1000 * MB;

	migram_policy_init(&ps, 300, 2, false, 20, 10);
	/* Shrinking by 10 % every time is progress: never gives up (20
	 * syncs stay above the downtime limit). */
	for (int i = 0; i < 20; i++) {
		left -= left / 10;
		g_assert_cmpint(migram_policy_after_sync(&ps, left, 100 * MB,
							 10 * MB, SEC),
				==, POLICY_CONTINUE);
	}
}

/* Tiny new lows (noise) are not progress: it still gives up. */
static void test_noise_is_not_progress(void)
{
	PolicyState ps;
	uint64_t left = 1000 * MB;
	int i;

	migram_policy_init(&ps, 300, 4, false, 20, 10);
	for (i = 0; i < 50; i++) {
		left -= MB; /* 0.1 % lower each time */
		if (migram_policy_after_sync(&ps, left, 100 * MB, 10 * MB,
					     SEC) == POLICY_GIVE_UP)
			break;
	}
	g_assert_cmpint(i, ==, 4);
}

static void test_auto_converge_steps(void)
{
	PolicyState ps;
	/* QEMU's initial 20 and steps of 10, or the throttle that would
	 * bring this guest (whose rate ignores the throttle) to half the
	 * link if that is more: 60 / (1 - p) own rate, 1 - 100 / (2 own) */
	unsigned int want[] = { 20, 33, 44, 54, 64, 74, 84, 94, 99 };
	size_t n = 0;

	migram_policy_init(&ps, 300, 100, true, 20, 10);
	/*
	 * Dirtying more than half of what is sent: every second sync in a
	 * row raises the throttle, up to 99 %.
	 */
	for (int i = 0; i < 40 && n < G_N_ELEMENTS(want); i++) {
		PolicyDecision d = migram_policy_after_sync(
			&ps, 1000 * MB - (uint64_t)i, 100 * MB, 60 * MB, SEC);

		if (d == POLICY_THROTTLE)
			g_assert_cmpuint(ps.throttle_percent, ==, want[n++]);
		else
			g_assert_cmpint(d, ==, POLICY_CONTINUE);
	}
	g_assert_cmpuint(n, ==, G_N_ELEMENTS(want));
	/* At 99 % a stall ends it: nothing left to try. */
	migram_policy_init(&ps, 300, 1, true, 20, 10);
	ps.throttle_percent = 99;
	migram_policy_after_sync(&ps, 1000 * MB, 100 * MB, 0, SEC);
	g_assert_cmpint(migram_policy_after_sync(&ps, 1000 * MB, 100 * MB, 0,
						 SEC),
			==, POLICY_GIVE_UP);
}

static void test_low_dirty_rate_no_throttle(void)
{
	PolicyState ps;

	migram_policy_init(&ps, 300, 100, true, 20, 10);
	for (int i = 0; i < 10; i++)
		g_assert_cmpint(migram_policy_after_sync(
					&ps, 1000 * MB - (uint64_t)i * MB,
					100 * MB, 40 * MB, SEC),
				==, POLICY_CONTINUE);
	g_assert_cmpuint(ps.throttle_percent, ==, 0);
}

/* Dirtying far faster than the link: straight to the throttle needed. */
static void test_auto_converge_jumps(void)
{
	PolicyState ps;

	migram_policy_init(&ps, 300, 100, true, 20, 10);
	/* 1000 MB dirtied while 100 MB went out: at once, to the throttle
	 * that leaves 50 MB per period, 1 - 100 / 2000 = 95 %. */
	g_assert_cmpint(migram_policy_after_sync(&ps, 1000 * MB, 100 * MB,
						 1000 * MB, SEC),
			==, POLICY_THROTTLE);
	g_assert_cmpuint(ps.throttle_percent, ==, 95);
	/* Throttled to 95 % it still dirtied 300 MB: its own rate is 6000
	 * MB, so 1 - 100 / 12000, 99 % at most. */
	g_assert_cmpint(migram_policy_after_sync(&ps, 900 * MB, 100 * MB,
						 300 * MB, SEC),
			==, POLICY_THROTTLE);
	g_assert_cmpuint(ps.throttle_percent, ==, 99);
	/* Without auto-converge nothing is throttled. */
	migram_policy_init(&ps, 300, 100, false, 20, 10);
	g_assert_cmpint(migram_policy_after_sync(&ps, 1000 * MB, 100 * MB,
						 1000 * MB, SEC),
			==, POLICY_CONTINUE);
	g_assert_cmpuint(ps.throttle_percent, ==, 0);
}

/* Mid-pass: a 100 ms window sets the threshold; only below it a sync. */
static void test_mid_pass_threshold(void)
{
	PolicyState ps;

	migram_policy_init(&ps, 300, 5, false, 20, 10);
	/* No window closed yet: never worth a sync, however little is left. */
	g_assert_false(migram_policy_worth_sync(&ps, 4096));
	/* 100 MB in 100 ms = 1 GB/s: 300 MB fit the 300 ms limit. */
	migram_policy_window(&ps, 100 * MB, SEC / 10);
	g_assert_cmpuint(ps.threshold_bytes, ==, 300 * MB);
	g_assert_false(migram_policy_worth_sync(&ps, 400 * MB));
	g_assert_false(migram_policy_worth_sync(&ps, 300 * MB));
	g_assert_true(migram_policy_worth_sync(&ps, 299 * MB));
	/* The sync found more dirty than fits: the pass goes on. */
	g_assert_cmpint(migram_policy_mid_pass(&ps, 450 * MB, 100 * MB,
					       100 * MB),
			==, POLICY_CONTINUE);
	g_assert_cmpuint(ps.expected_downtime_ms, ==, 450);
	/* ...and mid-pass syncs never count as stalls or throttle. */
	g_assert_cmpuint(ps.stalls, ==, 0);
	g_assert_cmpuint(ps.throttle_percent, ==, 0);
	/* It fits, and the guest dirties as fast as the link drains:
	 * complete. */
	g_assert_cmpint(migram_policy_mid_pass(&ps, 250 * MB, 100 * MB,
					       100 * MB),
			==, POLICY_COMPLETE);
	g_assert_cmpuint(ps.expected_downtime_ms, ==, 250);
	/* It fits, but the guest is quiet (a tenth of the send rate): the
	 * rest of the pass goes out live. */
	g_assert_cmpint(migram_policy_mid_pass(&ps, 250 * MB, 10 * MB,
					       100 * MB),
			==, POLICY_CONTINUE);
	/* Nothing left: complete whatever the rate. */
	g_assert_cmpint(migram_policy_mid_pass(&ps, 0, 0, 100 * MB), ==,
			POLICY_COMPLETE);
	/* A slower window lowers the threshold. */
	migram_policy_window(&ps, 10 * MB, SEC / 10);
	g_assert_cmpuint(ps.threshold_bytes, ==, 30 * MB);
	g_assert_cmpint(migram_policy_mid_pass(&ps, 250 * MB, 100 * MB,
					       100 * MB),
			==, POLICY_CONTINUE);
}

/* A configured switchover rate replaces the measured one. */
static void test_switchover_bandwidth(void)
{
	PolicyState ps;

	migram_policy_init(&ps, 300, 5, false, 20, 10);
	migram_policy_set_switchover(&ps, 1000 * MB);
	/* known before any window closed: 300 MB fit */
	g_assert_cmpuint(ps.threshold_bytes, ==, 300 * MB);
	g_assert_true(migram_policy_worth_sync(&ps, 250 * MB));
	/* a slow live window does not lower it */
	migram_policy_window(&ps, 10 * MB, SEC / 10);
	g_assert_cmpuint(ps.threshold_bytes, ==, 300 * MB);
	/* at a pass's end: 250 MB at 1 GB/s is 250 ms although the period
	 * sent only 100 MB in a second */
	g_assert_cmpint(migram_policy_after_sync(&ps, 250 * MB, 100 * MB,
						 100 * MB, SEC),
			==, POLICY_COMPLETE);
	g_assert_cmpuint(ps.expected_downtime_ms, ==, 250);
	/* without it, the same sync continues (2.5 s expected) */
	migram_policy_init(&ps, 300, 5, false, 20, 10);
	g_assert_cmpint(migram_policy_after_sync(&ps, 250 * MB, 100 * MB,
						 100 * MB, SEC),
			==, POLICY_CONTINUE);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/migration/policy/completes-within-downtime",
			test_completes_within_downtime);
	g_test_add_func("/migration/policy/gives-up-after-stalls",
			test_gives_up_after_stalls);
	g_test_add_func("/migration/policy/progress-resets-stalls",
			test_progress_resets_stalls);
	g_test_add_func("/migration/policy/noise-is-not-progress",
			test_noise_is_not_progress);
	g_test_add_func("/migration/policy/auto-converge-steps",
			test_auto_converge_steps);
	g_test_add_func("/migration/policy/auto-converge-jumps",
			test_auto_converge_jumps);
	g_test_add_func("/migration/policy/switchover-bandwidth",
			test_switchover_bandwidth);
	g_test_add_func("/migration/policy/mid-pass-threshold",
			test_mid_pass_threshold);
	g_test_add_func("/migration/policy/low-dirty-rate-no-throttle",
			test_low_dirty_rate_no_throttle);
	return g_test_run();
}
