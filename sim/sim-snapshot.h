/* SPDX-License-Identifier: MIT */
/*
 * migram-sim's snapshot and restore modes (sim/snapshot.c,
 * sim/snapshot-lazy.c); docs/snapshots.md.
 */
#ifndef MIGRAM_SIM_SNAPSHOT_H
#define MIGRAM_SIM_SNAPSHOT_H

#include <migram/snapshot.h>

#include "kvm-guest.h"
#include "kvm-sim.h"
#include "workload.h"
#include "sim.h"

/* --snapshot or --restore: run it, print the figures; an exit code. */
int sim_snapshot_run(const SimOptions *opt);

/*
 * Lazy restore of @p chain into @p list's @p blocks: register them with
 * userfaultfd (missing mode), serve faults from the files, prefetch the
 * rest in the background, touch every page as a guest would and wait
 * until all are in.  *first_us: time from the start to the first page
 * the guest touched; *faults: faults served.  With @kvm_state (vCPU
 * registers), a VM is built over the only block once the blocks are
 * registered, runs until all pages are in and is paused again
 * (*kvm_out; the caller frees it); *first_us is then the time to its
 * first page write.
 */
bool sim_snapshot_lazy(const SimOptions *opt, MigramSnapshotFile **chain,
		       guint n, MigramRamList *list, GPtrArray *blocks,
		       GBytes *kvm_state, SimKvm **kvm_out, uint64_t *first_us,
		       uint64_t *faults, MigramRestoreStats *rs,
		       GError **error);

/*
 * The guest a snapshot or a checkpoint pauses: the writer threads, or a
 * KVM VM whose vCPU registers are each file's or epoch's device state.
 * Exactly one is set.  All on the thread that runs the mode.
 */
typedef struct {
	SimGuest *writers;
	SimKvmSource *kvm;
} SimSnapGuest;

void sim_snap_guest_pause(SimSnapGuest *g);
void sim_snap_guest_resume(SimSnapGuest *g);
/* The guest's page writes so far (a KVM guest's progress counter). */
uint64_t sim_snap_guest_writes(SimSnapGuest *g);
/* Free the KVM guest (if any, after its dirty log stopped); a vCPU's
 * failure becomes *error when @p ok.  Returns @p ok, or false then. */
bool sim_snap_guest_free_kvm(SimSnapGuest *g, bool ok, GError **error);

/* The blocks of --ram / --block, filled (the workload's pattern) or
 * zero; their pointers appended to @p blocks. */
MigramRamList *sim_snapshot_make_list(const SimOptions *opt, bool fill,
				      GPtrArray *blocks, GError **error);

/* --checkpoint-every (the primary) or --role standby (sim/checkpoint.c);
 * an exit code. */
int sim_checkpoint_run(const SimOptions *opt);

#endif
