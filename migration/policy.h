/* SPDX-License-Identifier: MIT */
/*
 * The sender's convergence policy (policy.c).  Never installed.
 */
#ifndef MIGRAM_POLICY_H
#define MIGRAM_POLICY_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Convergence policy (policy.c): pure functions over what one sync saw,
 * so they can be tested without threads or a guest.
 */
typedef enum {
	POLICY_CONTINUE, /* keep iterating */
	POLICY_COMPLETE, /* what remains fits the downtime limit */
	POLICY_THROTTLE, /* slow the guest down to throttle_percent */
	POLICY_GIVE_UP,  /* not converging, nothing left to try */
} PolicyDecision;

typedef struct {
	/* configuration */
	uint64_t downtime_limit_ms;
	unsigned int stall_syncs;
	bool auto_converge;
	unsigned int throttle_initial;
	unsigned int throttle_increment;
	/* state carried from sync to sync */
	uint64_t best_remaining; /* lowest remainder seen (UINT64_MAX first) */
	unsigned int stalls;     /* syncs since best_remaining improved */
	unsigned int dirty_high; /* syncs in a row dirtying > half sent */
	unsigned int throttle_percent;
	uint64_t expected_downtime_ms;
	bool not_converging;
	/* the send rate of the latest window, and what it sends within the
	 * downtime limit (QEMU's threshold_size); 0 until a window ended */
	double window_bw;
	uint64_t threshold_bytes;
	/* the configured paused rate (bytes/s), or 0: estimate with the
	 * live rate */
	double switchover_bw;
} PolicyState;

void migram_policy_init(PolicyState *ps, uint64_t downtime_limit_ms,
			unsigned int stall_syncs, bool auto_converge,
			unsigned int throttle_initial,
			unsigned int throttle_increment);

/*
 * After a sync: remaining_bytes still dirty; in the period since the last
 * sync sent_bytes went out in period_us and dirtied_bytes were newly
 * dirtied.
 */
PolicyDecision migram_policy_after_sync(PolicyState *ps,
					uint64_t remaining_bytes,
					uint64_t sent_bytes,
					uint64_t dirtied_bytes,
					uint64_t period_us);

/*
 * A bandwidth window ended: sent_bytes went out in window_us.  Updates
 * window_bw and threshold_bytes.
 */
void migram_policy_window(PolicyState *ps, uint64_t sent_bytes,
			  uint64_t window_us);

/*
 * The configured paused rate (MigramMigrationConfig.switchover_bandwidth;
 * 0: none): the downtime estimates use it instead of measured rates.
 */
void migram_policy_set_switchover(PolicyState *ps, uint64_t bytes_per_s);

/*
 * Mid-pass: is what is left in bmap already below what the downtime limit
 * allows at the window's rate?  Then a sync is worth making now, and
 * migram_policy_mid_pass() decides on what it found.
 */
bool migram_policy_worth_sync(const PolicyState *ps, uint64_t remaining_bytes);

/*
 * After a mid-pass sync that found dirtied_bytes newly dirty while
 * sent_bytes went out since the sync before: POLICY_COMPLETE when
 * remaining_bytes fit the downtime limit at the window's rate and the
 * guest dirties at least a quarter as fast as the link drains (below
 * that, the rest of the pass goes out live and its end leaves little to
 * send paused); else POLICY_CONTINUE (stalls and throttling are judged at
 * pass ends only).
 */
PolicyDecision migram_policy_mid_pass(PolicyState *ps, uint64_t remaining_bytes,
				      uint64_t dirtied_bytes,
				      uint64_t sent_bytes);

#endif /* MIGRAM_POLICY_H */
