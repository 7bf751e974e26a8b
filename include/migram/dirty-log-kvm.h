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
 * Only writes made by the guest through KVM are logged; the embedder's own
 * writes to guest memory (device emulation, loading firmware) are not, and
 * must be marked some other way or happen before the migration starts.
 *
 * Pages are 4 KiB host pages, which on x86 are the target pages; the log
 * refuses a host with another page size.  See docs/dirty-log-kvm.md.
 *
 * Threads: the log is used by one thread at a time (the migration thread
 * while a migration runs); the vCPUs may run meanwhile.
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
 * @param error MIGRAM_ERROR_EXISTS when @p block or @p slot is already
 *        added, MIGRAM_ERROR_INVALID when the block's used_length or host
 *        address is not page-aligned or is empty.
 * @return false with @p error set on failure.
 *
 * Context: The log's thread, while no migration uses the log.
 */
bool migram_kvm_log_add_slot(MigramKvmLog *log, MigramRamBlock *block,
			     uint32_t slot, uint64_t guest_phys_addr,
			     GError **error);

/**
 * Whether the log uses manual-protect mode (true) or classic mode.
 *
 * @param log the log.
 * @return true in manual-protect mode.
 *
 * Context: Any thread.
 */
bool migram_kvm_log_manual_protect(const MigramKvmLog *log);

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
