/* SPDX-License-Identifier: MIT */
/**
 * @file dirty-log-combined.h
 * A dirty-log source made of several, for a VMM whose guest memory is
 * written by more than one party: the vCPUs (KVM's log), the VMM's own
 * device emulation and DMA (the software log), and out-of-process
 * vhost-user back-ends (a MigramSharedLog, through the adapter below).
 *
 *     sync(block)    each child syncs into its own "reported since its
 *                    last clear" bitmap; all of them are OR-ed into the
 *                    caller's collected bitmap
 *     clear(block)   each child is re-armed for mask AND what that child
 *                    reported, never for a page only another child saw;
 *                    those pages leave the child's reported bitmap
 *     start / stop   every child, in order (a failed start stops the
 *                    children already started)
 *
 * Why no write is lost (per child, the contract of dirty-log.h): a child's
 * mark is either still in the child, or in its reported bitmap and so in
 * the caller's collected bitmap (hence in bmap); the clear that removes it
 * is one the sender makes before it reads the page.  A child is never
 * cleared for a page it did not report, so a mark it took after its last
 * sync survives.
 *
 * Every child must cover every block the migration sends.  The per-block
 * bitmaps are allocated by start; sync and clear never allocate or lock.
 *
 * Threads: like every source, called by the migration thread only.  The
 * children's writers (vCPUs, device threads, other processes) are theirs.
 */
#ifndef MIGRAM_DIRTY_LOG_COMBINED_H
#define MIGRAM_DIRTY_LOG_COMBINED_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/dirty-log.h>
#include <migram/guest-layout.h>
#include <migram/shared-log.h>

G_BEGIN_DECLS

/** Opaque; the combined source.  Single owner. */
typedef struct MigramCombinedLog MigramCombinedLog;

/**
 * Combine @p n sources into one.
 *
 * @param children the sources; the array is copied, their opaques are
 *        borrowed and must outlive the combined log.
 * @param n how many, 1 to 32.
 * @param error MIGRAM_ERROR_INVALID for a NULL array, a count out of
 *        range, or a child without operations.
 * @return a new combined log; caller frees with
 *         migram_combined_log_free().
 *
 * Context: Any thread.
 */
MigramCombinedLog *migram_combined_log_new(const MigramLogSource *children,
					   unsigned int n, GError **error);

/**
 * Free a combined log (its children are the caller's).
 *
 * @param log the log, or NULL.
 *
 * Context: Any thread, once no migration uses it.
 */
void migram_combined_log_free(MigramCombinedLog *log);

/**
 * The combined log as a source for a migration.
 *
 * @param log the log.
 * @param source filled with the combined operations and @p log.
 *
 * Context: Any thread.
 */
void migram_combined_log_source(MigramCombinedLog *log,
				MigramLogSource *source);

/** Opaque; a MigramSharedLog seen as a source.  Single owner. */
typedef struct MigramSharedLogAdapter MigramSharedLogAdapter;

/**
 * Make a shared log usable as a dirty-log source.  The log is indexed by
 * RAM address, as the software log is: page i of the log is RAM address
 * i * 4 KiB, so a block's pages start at migram_ram_block_offset() / 4096.
 *
 * The region's marks are taken (exchange-and-collect) into a pending
 * bitmap the adapter owns; sync ORs pending into the caller's bitmap,
 * clear removes exactly the masked pages from pending.  Region plus
 * pending behave as one manual-protect log.
 *
 * @param log the shared log; borrowed, must outlive the adapter.
 * @param ram_space_bytes the end of the highest block's max_length.
 * @param error MIGRAM_ERROR_INVALID for a NULL @p log or a zero size,
 *        MIGRAM_ERROR_NO_MEMORY when the pending bitmap cannot be
 *        allocated.
 * @return a new adapter; caller frees with
 *         migram_shared_log_adapter_free().
 *
 * Context: Any thread.
 */
MigramSharedLogAdapter *migram_shared_log_adapter_new(MigramSharedLog *log,
						      uint64_t ram_space_bytes,
						      GError **error);

/**
 * Make a shared log numbered by guest-physical address usable as a
 * dirty-log source: the layout vhost-user devices write (bit n of the log
 * is guest-physical page n), translated through @p layout.  A block's sync
 * collects the log at every range the layout maps the block at (several
 * for x86 RAM split around the PCI hole; none for memory the guest cannot
 * address) and reports the pages at their block offsets; clear re-arms
 * exactly the masked pages at their guest-physical addresses.  Marks at
 * addresses no range maps are never reported to a migration:
 * migram_shared_log_adapter_take_unmapped() counts them.  Added in 0.3.
 *
 * @param log the shared log; borrowed, must outlive the adapter.
 * @param layout where blocks appear in guest-physical memory; borrowed,
 *        must outlive the adapter.  Ranges may be mapped and unmapped
 *        while it is used (each sync reads the current table).
 * @param gpa_space_bytes the guest-physical size the log covers (e.g. the
 *        end of the highest range).
 * @param error MIGRAM_ERROR_INVALID for a NULL @p log or @p layout or a
 *        zero size, MIGRAM_ERROR_NO_MEMORY when the pending bitmap cannot
 *        be allocated.
 * @return a new adapter; caller frees with migram_shared_log_adapter_free().
 *
 * Context: Any thread.  A migration's start fails (MIGRAM_ERROR_INVALID,
 * naming the block) when a range of a block passes @p gpa_space_bytes.
 */
MigramSharedLogAdapter *
migram_shared_log_adapter_new_gpa(MigramSharedLog *log,
				  MigramGuestLayout *layout,
				  uint64_t gpa_space_bytes, GError **error);

/**
 * Take every mark the guest-physical adapter's log holds: marks at
 * addresses the layout maps stay pending (the next sync reports them),
 * marks at addresses no range maps are dropped and counted.  Anything but
 * 0 means a device wrote memory that no migration tracks: a bug in the
 * layout or the device, never something to pass over.  Added in 0.3.
 *
 * @param a the adapter; NULL or a RAM-address adapter gives 0.
 * @return the number of unmapped pages that were marked.
 *
 * Context: The migration thread, or any thread while no migration uses
 * the adapter (its pending bitmap is that thread's).  Registered with
 * liburcu.  O(size of the log).
 */
uint64_t migram_shared_log_adapter_take_unmapped(MigramSharedLogAdapter *a);

/**
 * Free an adapter (not its shared log).
 *
 * @param a the adapter, or NULL.
 *
 * Context: Any thread, once no migration uses it.
 */
void migram_shared_log_adapter_free(MigramSharedLogAdapter *a);

/**
 * The adapter as a source.  Its sync and clear take the RCU read lock (the
 * shared log's), so the migration thread must be registered, as it must
 * be anyway.
 *
 * @param a the adapter.
 * @param source filled with the adapter's operations and @p a.
 *
 * Context: Any thread.
 */
void migram_shared_log_adapter_source(MigramSharedLogAdapter *a,
				      MigramLogSource *source);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramCombinedLog, migram_combined_log_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramSharedLogAdapter,
			      migram_shared_log_adapter_free)

G_END_DECLS

#endif /* MIGRAM_DIRTY_LOG_COMBINED_H */
