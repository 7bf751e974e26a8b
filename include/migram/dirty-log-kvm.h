/* SPDX-License-Identifier: MIT */
/**
 * @file dirty-log-kvm.h
 * The KVM dirty-log source: the pages a KVM guest's vCPUs wrote.
 *
 * The embedder owns the VM (its fd, its memslots, its vCPUs) and tells the
 * log which memslot maps which RAM block.  The log then implements the
 * MigramLogSource contract (dirty-log.h) with KVM's dirty-log ioctls:
 *
 *     manual-protect mode (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)
 *       start  KVM_SET_USER_MEMORY_REGION with KVM_MEM_LOG_DIRTY_PAGES
 *       sync   KVM_GET_DIRTY_LOG, OR-ed into the caller's bitmap; no re-arm
 *       clear  KVM_CLEAR_DIRTY_LOG with exactly the mask's bits
 *       stop   KVM_SET_USER_MEMORY_REGION without the flag
 *
 *     classic mode (the capability is missing, or asked for)
 *       sync   KVM_GET_DIRTY_LOG, which also re-arms every page it returns
 *       clear  nothing
 *
 *     ring mode (KVM_CAP_DIRTY_LOG_RING, asked for with
 *     migram_kvm_log_new_ring() before any vCPU exists)
 *       start  as above; KVM write-protects the slot
 *       sync   harvest every vCPU's ring, then KVM_RESET_DIRTY_RINGS,
 *              which re-arms the harvested pages; OR them into the
 *              caller's bitmap
 *       clear  nothing (the reset re-armed them already)
 *
 * In ring mode KVM_GET_DIRTY_LOG is refused by KVM and never used.  A
 * vCPU whose ring fills leaves KVM_RUN with KVM_EXIT_DIRTY_RING_FULL; its
 * thread calls migram_kvm_log_harvest() before it enters the guest again.
 *
 * Only writes made by the guest through KVM are logged; the embedder's own
 * writes to guest memory (device emulation, loading firmware) are not, and
 * must be marked some other way or happen before the migration starts.
 *
 * Pages are 4 KiB host pages, which on x86 are the target pages; the log
 * refuses a host with another page size.  See docs/dirty-log-kvm.md.
 *
 * Threads: the source operations are called by one thread at a time (the
 * migration thread while a migration runs); the vCPUs may run meanwhile.
 * migram_kvm_log_harvest() and migram_kvm_log_get_stats() may be called
 * from any thread: an internal lock orders them with the operations.
 */
#ifndef MIGRAM_DIRTY_LOG_KVM_H
#define MIGRAM_DIRTY_LOG_KVM_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/dirty-log.h>
#include <migram/ramblock.h>

G_BEGIN_DECLS

/** Opaque; the KVM dirty-log source.  Single owner. */
typedef struct MigramKvmLog MigramKvmLog;

/**
 * Create a KVM dirty log for a VM, in manual-protect mode when the kernel
 * offers KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (enabled on the VM here, with
 * KVM_DIRTY_LOG_INITIALLY_SET when available), else in classic mode.
 * Call it before any memslot has dirty logging enabled.
 *
 * @param vm_fd the VM's fd (from KVM_CREATE_VM); borrowed, must outlive
 *        the log.
 * @param error MIGRAM_ERROR_IO (with the ioctl's name and error) when an
 *        ioctl fails, MIGRAM_ERROR_UNSUPPORTED when KVM lacks user memory
 *        slots or the host page size is not 4 KiB.
 * @return a new log; caller frees with migram_kvm_log_free().
 *
 * Context: Any thread.
 */
MigramKvmLog *migram_kvm_log_new(int vm_fd, GError **error);

/**
 * As migram_kvm_log_new(), but always in classic mode (sync re-arms, clear
 * does nothing), whatever the kernel offers; for tests and comparisons.
 *
 * @param vm_fd the VM's fd; borrowed.
 * @param error as migram_kvm_log_new().
 * @return a new log; caller frees with migram_kvm_log_free().
 *
 * Context: Any thread.
 */
MigramKvmLog *migram_kvm_log_new_classic(int vm_fd, GError **error);

/**
 * Create a KVM dirty log in ring mode: enable KVM_CAP_DIRTY_LOG_RING on
 * the VM with rings of @p ring_entries entries (a power of two; 0 means
 * 4096, and a size above the kernel's maximum is lowered to it).  KVM
 * accepts this only before the VM's first vCPU is created.  Then give the
 * log each vCPU with migram_kvm_log_add_vcpu().
 *
 * @param vm_fd the VM's fd; borrowed, must outlive the log.
 * @param ring_entries entries per vCPU ring (16 bytes each), or 0.
 * @param error MIGRAM_ERROR_UNSUPPORTED when KVM lacks the dirty ring or
 *        the host page size is not 4 KiB, MIGRAM_ERROR_INVALID when
 *        @p ring_entries is not a power of two, MIGRAM_ERROR_IO (with the
 *        ioctl's error) when KVM refuses the size or a vCPU exists already.
 * @return a new log; caller frees with migram_kvm_log_free().
 *
 * Context: Any thread.
 */
MigramKvmLog *migram_kvm_log_new_ring(int vm_fd, uint32_t ring_entries,
				      GError **error);

/**
 * Map the dirty ring of a vCPU (at KVM_DIRTY_LOG_PAGE_OFFSET of its fd),
 * so that harvests read it.  Ring mode only.
 *
 * @param log the log, in ring mode.
 * @param vcpu_fd the vCPU's fd (from KVM_CREATE_VCPU); borrowed, must
 *        outlive the log.
 * @param error MIGRAM_ERROR_INVALID when the log is not in ring mode,
 *        MIGRAM_ERROR_IO when the mapping fails.
 * @return false with @p error set on failure.
 *
 * Context: Any thread; takes the log's lock.
 */
bool migram_kvm_log_add_vcpu(MigramKvmLog *log, int vcpu_fd, GError **error);

/**
 * Ring mode: collect every published entry of every vCPU's ring into the
 * log (the next sync hands them to the migration), mark them harvested,
 * and reset the rings (KVM_RESET_DIRTY_RINGS re-arms those pages).  A
 * vCPU thread calls it on KVM_EXIT_DIRTY_RING_FULL before it runs the
 * guest again; a reaper thread may call it to keep rings from filling.
 * In other modes it does nothing.
 *
 * A ring found completely full means the kernel let the vCPU run past the
 * ring's soft limit, and a push into a full ring overwrites an entry:
 * writes may be lost.  The same holds when KVM_RESET_DIRTY_RINGS resets
 * fewer entries than were handed back.  The harvest then fails with
 * MIGRAM_ERROR_IO, and so does every later harvest, sync and start of this
 * log: the rings' read positions no longer match the kernel's, so the
 * migration fails rather than sends stale pages, and a second migration of
 * the same VM needs new vCPUs and a new log.  (A nested KVM that emulates
 * the guest's instructions was seen to do this; keep rings from filling by
 * harvesting often, from a reaper thread.)
 *
 * The reset runs with every signal blocked in the calling thread: a kernel
 * that stops its reset when a signal is pending (Linux 6.16 and later)
 * leaves the pages of a partly gathered batch writable and unlogged, and
 * the vCPU threads that call this are the ones a VMM kicks with signals.
 *
 * @param log the log.
 * @param harvested where to store the number of entries collected, or
 *        NULL.
 * @param error MIGRAM_ERROR_IO when the reset fails, a ring overflowed or
 *        a reset came up short (the entries are harvested and the rings
 *        reset all the same).
 * @return false with @p error set on failure.
 *
 * Context: Any thread; takes the log's lock.  Makes one ioctl, or a few
 * when the kernel answers a reset in parts; blocks signals around it.
 */
bool migram_kvm_log_harvest(MigramKvmLog *log, uint64_t *harvested,
			    GError **error);

/** What the log's ioctls cost so far; see migram_kvm_log_get_stats(). */
typedef struct {
	uint64_t syncs;           /**< sync calls */
	uint64_t sync_ns;         /**< their total time */
	uint64_t sync_ns_max;     /**< the longest one */
	uint64_t clear_ioctls;    /**< KVM_CLEAR_DIRTY_LOG calls */
	uint64_t clear_ns;        /**< their total time */
	uint64_t clear_pages;     /**< pages they re-armed */
	uint64_t harvests;        /**< ring harvests (sync's included) */
	uint64_t harvested;       /**< ring entries collected */
	uint64_t harvest_ns;      /**< harvest time, resets included */
	uint64_t dropped_entries; /**< entries of slots the log does not know */
	uint64_t ring_overflows;  /**< harvests that found a ring full */
} MigramKvmLogStats;

/**
 * A snapshot of the log's counters.
 *
 * @param log the log.
 * @param stats where to store them.
 *
 * Context: Any thread; takes the log's lock.
 */
void migram_kvm_log_get_stats(MigramKvmLog *log, MigramKvmLogStats *stats);

/**
 * Free a log.  Slots still logging keep logging: stop them first (the
 * migration does, at its end).
 *
 * @param log the log, or NULL.
 *
 * Context: Any thread, once no migration uses it.
 */
void migram_kvm_log_free(MigramKvmLog *log);

/**
 * Say which KVM memslot maps @p block: slot @p slot (the embedder's
 * KVM_SET_USER_MEMORY_REGION, flags 0) covers the block's used_length at
 * guest physical address @p guest_phys_addr from the block's host address.
 * The log re-registers the slot with these values when it starts and stops
 * logging.  A block resized later must be added again.
 *
 * @param log the log.
 * @param block the block; borrowed, must outlive its use by the log.
 * @param slot the memslot number (including the address-space id in the
 *        high 16 bits, as KVM takes it).
 * @param guest_phys_addr where the slot starts in guest physical memory.
 * @param error MIGRAM_ERROR_EXISTS when @p block (whole or in part) or
 *        @p slot is already added, MIGRAM_ERROR_INVALID when the block's
 * used_length or host address is not page-aligned or is empty,
 * MIGRAM_ERROR_NO_MEMORY when the slot's bitmaps cannot be allocated.
 * @return false with @p error set on failure.
 *
 * Context: The log's thread, while no migration uses the log.
 */
bool migram_kvm_log_add_slot(MigramKvmLog *log, MigramRamBlock *block,
			     uint32_t slot, uint64_t guest_phys_addr,
			     GError **error);

/**
 * Say that KVM memslot @p slot maps part of @p block: bytes [@p offset,
 * @p offset + @p size) of the block, at guest physical address
 * @p guest_phys_addr, from the block's host address plus @p offset.  Add
 * one call per slot for a block spread over several (x86 RAM split around
 * the PCI hole: [0, 3 GiB) in one slot, the rest at 4 GiB in another).
 * The block's slots must not overlap; pages of the block in no slot are
 * never reported (nothing in the guest can write them through KVM).
 * Added in 0.2.
 *
 * @param log the log.
 * @param block the block; borrowed, must outlive its use by the log.
 * @param offset first byte of the block in the slot, a multiple of 256 KiB
 *        (64 pages, so the slot's bits start on a bitmap word).
 * @param size bytes, > 0, a multiple of 4 KiB; @p offset + @p size at most
 *        the block's used_length.
 * @param slot the memslot number, as for migram_kvm_log_add_slot().
 * @param guest_phys_addr where the slot starts in guest physical memory.
 * @param error MIGRAM_ERROR_INVALID for a NULL @p log or @p block, a
 *        misaligned or empty range or one past used_length;
 *        MIGRAM_ERROR_EXISTS when @p slot is already added or the range
 *        overlaps another slot of the block (or the block was added
 *        whole); MIGRAM_ERROR_NO_MEMORY.
 * @return false with @p error set on failure.
 *
 * Context: The log's thread, while no migration uses the log.
 */
bool migram_kvm_log_add_slot_range(MigramKvmLog *log, MigramRamBlock *block,
				   uint64_t offset, uint64_t size,
				   uint32_t slot, uint64_t guest_phys_addr,
				   GError **error);

/**
 * Whether the log uses manual-protect mode (true) or classic or ring mode.
 *
 * @param log the log.
 * @return true in manual-protect mode.
 *
 * Context: Any thread.
 */
bool migram_kvm_log_manual_protect(const MigramKvmLog *log);

/**
 * Whether the log uses ring mode.
 *
 * @param log the log.
 * @return true in ring mode.
 *
 * Context: Any thread.
 */
bool migram_kvm_log_ring(const MigramKvmLog *log);

/**
 * The log as a source for a migration.  Every block the migration sends
 * must have been added with migram_kvm_log_add_slot(); any other block
 * fails the migration with MIGRAM_ERROR_NOT_FOUND.
 *
 * @param log the log.
 * @param out filled with the KVM operations and @p log.
 *
 * Context: Any thread.
 */
void migram_kvm_log_source(MigramKvmLog *log, MigramLogSource *out);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramKvmLog, migram_kvm_log_free)

G_END_DECLS

#endif /* MIGRAM_DIRTY_LOG_KVM_H */
