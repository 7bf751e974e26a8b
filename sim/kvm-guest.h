/* SPDX-License-Identifier: MIT */
/*
 * The KVM micro-guest of `migram-sim --workload kvm`: a minimal VMM (one
 * VM, one slot over one RAM block, N vCPUs) and a guest program of a few
 * instructions that writes a working set of pages, with an invariant both
 * sides of a migration check.
 *
 * Guest physical layout (32-bit protected mode, flat segments, no
 * paging; so the block is at most 4 GiB):
 *
 *     0x1000          the program (read only by the guest)
 *     0x2000 + 64 v   vCPU v's pass number S (a 32-bit word)
 *     1 MiB ...       the working set: vCPU v owns n_v pages at a stride,
 *                     all below 0xfec00000 (the top 20 MiB of a 4 GiB
 *                     block are RAM the guest does not write)
 *
 * vCPU v runs, with ebx = its first page, ecx = n_v, edx = the stride and
 * edi = the address of its S:
 *
 *     again: S = S + 1
 *            for each page p of the slice in order:
 *                p.count = p.count + 1     (a 32-bit word at offset 0)
 *                p.last  = S               (a 32-bit word at offset 4)
 *            jmp again
 *
 * The invariant, at any instant the vCPU is out of the guest: with S its
 * pass number, there is a k in [0, n] such that pages [0, k) have count
 * S and pages [k, n) have count S - 1 (S = 0: all 0), and every page has
 * last == count, except that page k - 1 may have last == S - 1 (the vCPU
 * stopped between its two writes).  Its progress, in page writes, is
 * (S - 1) * n + k.
 *
 * Threads: the vCPU threads are the VMM's; the other functions are called
 * by the thread that owns the SimKvm (the migration thread calls the
 * pause, resume and throttle callbacks).
 */
#ifndef MIGRAM_SIM_KVM_GUEST_H
#define MIGRAM_SIM_KVM_GUEST_H

#include <migram/dirty-log-kvm.h>
#include <migram/ramblock.h>

#include "sim.h"

typedef struct SimKvm SimKvm;

/* Largest block the 32-bit guest addresses. */
#define SIM_KVM_MAX_RAM (UINT64_C(4) << 30)
/* Where the working set starts. */
#define SIM_KVM_WS_START (UINT64_C(1) << 20)
/*
 * Where it ends at the latest: KVM claims the local APIC's page at
 * 0xfee00000 even without an in-kernel APIC (a guest access there exits
 * with KVM_EXIT_MMIO), so the guest keeps below the I/O APIC's
 * 0xfec00000, as a PC's RAM does.
 */
#define SIM_KVM_WS_END UINT64_C(0xfec00000)

/*
 * Source: a VM whose slot 0 maps @block at guest physical 0, with its
 * dirty log in opt->dirty_log's mode, and opt->threads vCPUs that start
 * running the program at once; with opt->guest_image, one vCPU that runs
 * that boot sector from 0x7c00 in real mode (kvm-image.h), returned once
 * the guest printed its banner.  NULL with error set when KVM is missing
 * or refuses.
 */
SimKvm *sim_kvm_source_new(const SimOptions *opt, MigramRamBlock *block,
			   GError **error);
/* The VM's dirty log as a migration's source (source side only). */
void sim_kvm_log_source(SimKvm *k, MigramLogSource *src);
/* "manual-protect", "classic" or "ring"; NULL on the destination. */
const char *sim_kvm_log_mode(SimKvm *k);
/* The log's ioctl counters (source side). */
void sim_kvm_log_stats(SimKvm *k, MigramKvmLogStats *st);

/*
 * Destination: a VM over @mem (@bytes of received memory, borrowed) with
 * vCPUs in the received state; paused until sim_kvm_run_for().
 */
SimKvm *sim_kvm_dest_new(guint8 *mem, uint64_t bytes, const guint8 *state,
			 size_t len, GError **error);

/* The migration's callbacks (opaque is the SimKvm). */
void sim_kvm_pause(void *opaque);
void sim_kvm_resume(void *opaque);
void sim_kvm_throttle(void *opaque, unsigned int percent);

/* Append the paused vCPUs' registers to @out (the device section). */
bool sim_kvm_save_state(SimKvm *k, GByteArray *out, GError **error);

/* Check the invariant on the paused guest; a detail string either way. */
bool sim_kvm_check(SimKvm *k, char **detail);
/* Page writes the guest made so far (the paused or running guest). */
uint64_t sim_kvm_progress(SimKvm *k);
/* Sum of the vCPUs' pass numbers. */
uint64_t sim_kvm_passes(SimKvm *k);

/*
 * Mark in @map (@npages target pages) every page the guest program
 * writes: the pass numbers and every counter of the working set.
 */
void sim_kvm_written_pages(const SimKvm *k, unsigned long *map,
			   uint64_t npages);

/* Pages one pass of the guest writes (all vCPUs). */
uint64_t sim_kvm_ws_pages(const SimKvm *k);
/* True for a --guest-image guest. */
bool sim_kvm_is_image(const SimKvm *k);
/* '.' progress marks an image guest printed on COM1 so far. */
unsigned int sim_kvm_serial_marks(SimKvm *k);

/* Let the guest run for @ms, then pause it; false if a vCPU failed. */
bool sim_kvm_run_for(SimKvm *k, unsigned int ms, GError **error);

/* What went wrong in a vCPU thread (KVM exit, ring overflow), or NULL. */
char *sim_kvm_take_error(SimKvm *k);

/* Stop the vCPUs and free the VM (the block stays the caller's). */
void sim_kvm_free(SimKvm *k);

#endif
