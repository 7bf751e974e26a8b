/* SPDX-License-Identifier: MIT */
/*
 * `migram-sim --workload kvm`: the steps real.c takes for a KVM guest
 * (kvm-sim.c).  All on the thread that runs the source or destination.
 */
#ifndef MIGRAM_SIM_KVM_SIM_H
#define MIGRAM_SIM_KVM_SIM_H

#include <migram/channel.h>
#include <migram/dirty-log.h>

#include "kvm-guest.h"
#include "sim.h"

typedef struct SimKvmSource SimKvmSource;

/*
 * Start the VM and its guest over the list's only block, wait for the
 * guest's first pass, measure its rate; fill @src with the VM's dirty log.
 */
SimKvmSource *sim_kvm_source_start(const SimOptions *opt, MigramRamList *list,
				   MigramLogSource *src, SimReport *rep,
				   GError **error);
/* The opaque for the pause, resume and throttle callbacks. */
void *sim_kvm_source_guest(SimKvmSource *s);
/* The device section's idstr. */
#define SIM_KVM_DEVICE_IDSTR "migram-sim/kvm-vcpus"

/*
 * save_device, on the migration thread with the guest paused: check the
 * guest's invariant and append the vCPUs' state to @out.
 */
bool sim_kvm_source_save(SimKvmSource *s, GByteArray *out, GError **error);
/*
 * After the migration ran (@ok: it completed and the guest is paused):
 * the log's counters, the guest's rate, the check at the pause.  False
 * with error set when something failed.
 */
bool sim_kvm_source_finish(SimKvmSource *s, bool ok, SimReport *rep,
			   GError **error);
/* After the hash exchange: read the destination's verdict into @rep. */
bool sim_kvm_source_verdict(SimKvmSource *s, MigramChannel *ch, SimReport *rep,
			    GError **error);
void sim_kvm_source_free(SimKvmSource *s);
/*
 * Postcopy: a bitmap of the block's pages the guest writes (the hash check
 * skips them: the destination's guest went on writing them; its invariant
 * vouches for them).  Caller frees with migram_bitmap_free().
 */
unsigned long *sim_kvm_source_written(SimKvmSource *s, uint64_t npages);

/*
 * Postcopy, destination, at RUN (the loading thread; must not touch guest
 * memory, which may be missing): build the VM over the only block with the
 * received vCPU state and let it run; its vCPUs fault on missing pages.
 * NULL with error set on failure.
 */
SimKvm *sim_kvm_dest_start(MigramRamList *list, GByteArray *state,
			   GError **error);
/*
 * Restore (sim/snapshot.c): a VM over the list's only block with the vCPU
 * registers a snapshot recorded (@state, @len), paused.  NULL with error
 * set on failure.
 */
SimKvm *sim_kvm_restore_new(MigramRamList *list, const guint8 *state,
			    size_t len, GError **error);
/*
 * Check the guest's invariant, let it run DEST_RUN_MS, check again and
 * that it made progress: "1<what>" or "0<what failed>" (g_free it).
 * @when names the first check ("at the pause").  Frees @k.
 */
char *sim_kvm_verdict(SimKvm *k, const char *when);

/*
 * Postcopy, destination, after the load: pause the guest that ran during
 * postcopy (its memory is complete now).
 */
void sim_kvm_dest_pause(SimKvm *k);
/*
 * ...then check its invariant, let it run a little more, check again and
 * send the verdict, as sim_kvm_dest_run() does.  Frees @k.
 */
bool sim_kvm_dest_verdict_postcopy(SimKvm *k, MigramChannel *ch,
				   GError **error);

/*
 * Destination, after the hashes: run the guest, check, send the verdict.
 * @state is the device section's bytes (NULL: none came, a failure).
 * With @copy the guest runs in a copy of the received memory, which then
 * stays as at the pause (--verify-bytes compares it afterwards).
 */
bool sim_kvm_dest_run(MigramRamList *list, GByteArray *state, bool copy,
		      MigramChannel *ch, GError **error);

#endif
