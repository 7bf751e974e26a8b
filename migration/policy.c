/* SPDX-License-Identifier: MIT */
/*
 * When to stop iterating: convergence, auto-converge and giving up.
 *
 * After every sync the sender asks one question: can what is still dirty
 * be sent within the downtime limit at the bandwidth the last period
 * achieved?  If yes, pause the guest and finish.  If not, two counters
 * watch for trouble:
 *
 *  - dirty_high: like QEMU's auto-converge trigger, the period dirtied
 *    more than half of what it sent; two such syncs in a row raise the
 *    guest throttle (first to throttle_initial, then by throttle_increment,
 *    at most 99 %), when auto-converge is on.  Unlike QEMU, a period that
 *    dirtied more than twice what it sent raises it at once, and straight
 *    to the throttle that leaves the guest dirtying half the link's rate
 *    (needed_throttle): QEMU's steps of 10 % take a pass each, and a
 *    guest dirtying ten times the link needs about 95 %;
 *  - stalls: syncs since the remainder last reached a new low at least
 *    5 % below the previous one (tiny new lows from random noise do not
 *    count as progress, or a guest hovering at its working set would
 *    reset the count forever).  At
 *    stall_syncs the migration is "not converging": with auto-converge the
 *    throttle goes up once more; without it (or at 99 %) the sender gives
 *    up instead of looping forever, and the guest keeps running.
 *
 * The sender does not wait for a pass to end to ask: as QEMU does, it
 * measures its send rate over windows of about 100 ms, and as soon as
 * what is left in bmap drops below what that rate moves within the
 * downtime limit (threshold_bytes), it syncs mid-pass; if the remainder
 * still fits, it completes there.  A guest that re-dirties its working
 * set as fast as the link drains it never lets a whole pass fit, but the
 * remainder does dip below the threshold partway through a pass.  Unlike
 * QEMU, it stops there only while the guest dirties at least a quarter as
 * fast as the link drains: a quiet guest's rest of the pass goes out live
 * at no cost in downtime (QEMU would send it paused).
 */
#include "migram-common.h"
#include "policy.h"

#define MAX_THROTTLE 99

void migram_policy_init(PolicyState *ps, uint64_t downtime_limit_ms,
			unsigned int stall_syncs, bool auto_converge,
			unsigned int throttle_initial,
			unsigned int throttle_increment)
{
	*ps = (PolicyState){
		.downtime_limit_ms = downtime_limit_ms,
		.stall_syncs = stall_syncs,
		.auto_converge = auto_converge,
		.throttle_initial = throttle_initial,
		.throttle_increment = throttle_increment,
		.best_remaining = UINT64_MAX,
	};
}

/*
 * The throttle that brings the guest down to dirtying half of what the
 * link drains.  The guest ran at (100 - p) % under throttle p, so its own
 * rate is dirtied / (1 - p); at throttle q it dirties that times (1 - q),
 * which is sent / 2 for q = 1 - sent / (2 * own rate).  A bitmap counts a
 * page once however often it was written, so this underestimates a guest
 * that re-dirties its working set within a period: it is a floor.
 */
static unsigned int needed_throttle(const PolicyState *ps,
				    uint64_t dirtied_bytes, uint64_t sent_bytes)
{
	double own, q;

	if (!sent_bytes || 2 * dirtied_bytes <= sent_bytes)
		return 0;
	own = (double)dirtied_bytes /
	      (1.0 - (double)ps->throttle_percent / 100.0);
	q = 100.0 * (1.0 - (double)sent_bytes / (2.0 * own));
	return q >= MAX_THROTTLE ? MAX_THROTTLE : (unsigned int)q;
}

/* One step (QEMU's initial, then increment), or at once to @needed. */
static bool raise_throttle(PolicyState *ps, unsigned int needed)
{
	unsigned int step;

	if (!ps->auto_converge || ps->throttle_percent >= MAX_THROTTLE)
		return false;
	step = ps->throttle_percent
		       ? ps->throttle_percent + ps->throttle_increment
		       : ps->throttle_initial;
	ps->throttle_percent = MIN(MAX(step, needed), MAX_THROTTLE);
	return true;
}

PolicyDecision migram_policy_after_sync(PolicyState *ps,
					uint64_t remaining_bytes,
					uint64_t sent_bytes,
					uint64_t dirtied_bytes,
					uint64_t period_us)
{
	double bw = ps->switchover_bw > 0 ? ps->switchover_bw
		    : period_us ? (double)sent_bytes * 1e6 / (double)period_us
				: 0.0;
	unsigned int needed;

	ps->expected_downtime_ms =
		bw > 0 ? (uint64_t)((double)remaining_bytes * 1000.0 / bw)
		       : (remaining_bytes ? UINT64_MAX : 0);
	if (remaining_bytes == 0 ||
	    ps->expected_downtime_ms <= ps->downtime_limit_ms)
		return POLICY_COMPLETE;

	if (remaining_bytes < ps->best_remaining - ps->best_remaining / 20) {
		ps->best_remaining = remaining_bytes;
		ps->stalls = 0;
	} else {
		ps->stalls++;
	}
	ps->dirty_high = dirtied_bytes * 2 > sent_bytes ? ps->dirty_high + 1
							: 0;

	needed = needed_throttle(ps, dirtied_bytes, sent_bytes);
	if (ps->stalls >= ps->stall_syncs) {
		ps->not_converging = true;
		ps->stalls = 0;
		ps->dirty_high = 0;
		return raise_throttle(ps, needed) ? POLICY_THROTTLE
						  : POLICY_GIVE_UP;
	}
	/* Far too fast for the link: no point waiting for a second sync. */
	if (ps->dirty_high >= 2 || dirtied_bytes > 2 * sent_bytes) {
		ps->dirty_high = 0;
		if (raise_throttle(ps, needed))
			return POLICY_THROTTLE;
	}
	return POLICY_CONTINUE;
}

void migram_policy_window(PolicyState *ps, uint64_t sent_bytes,
			  uint64_t window_us)
{
	if (!window_us)
		return;
	ps->window_bw = ps->switchover_bw > 0
				? ps->switchover_bw
				: (double)sent_bytes * 1e6 / (double)window_us;
	ps->threshold_bytes = (uint64_t)(ps->window_bw *
					 (double)ps->downtime_limit_ms /
					 1000.0);
}

void migram_policy_set_switchover(PolicyState *ps, uint64_t bytes_per_s)
{
	ps->switchover_bw = (double)bytes_per_s;
	if (bytes_per_s)
		migram_policy_window(ps, bytes_per_s, G_USEC_PER_SEC);
}

bool migram_policy_worth_sync(const PolicyState *ps, uint64_t remaining_bytes)
{
	return ps->threshold_bytes && remaining_bytes < ps->threshold_bytes;
}

PolicyDecision migram_policy_mid_pass(PolicyState *ps, uint64_t remaining_bytes,
				      uint64_t dirtied_bytes,
				      uint64_t sent_bytes)
{
	if (ps->window_bw <= 0)
		return remaining_bytes ? POLICY_CONTINUE : POLICY_COMPLETE;
	ps->expected_downtime_ms =
		(uint64_t)((double)remaining_bytes * 1000.0 / ps->window_bw);
	if (remaining_bytes > ps->threshold_bytes)
		return POLICY_CONTINUE;
	/* A quiet guest: finishing the pass live costs no downtime. */
	if (remaining_bytes && dirtied_bytes * 4 < sent_bytes)
		return POLICY_CONTINUE;
	return POLICY_COMPLETE;
}
