/* SPDX-License-Identifier: MIT */
/**
 * @file guest-layout.h
 * MigramGuestLayout: where RAM blocks appear in guest-physical memory, so
 * that a device model can mark a write by the guest-physical address it
 * wrote (the address a DMA descriptor holds) instead of a RAM address.
 *
 *     map(gpa, size, block, offset)  guest-physical [gpa, gpa + size) is
 *                                    block bytes [offset, offset + size)
 *     lookup(gpa)                    -> (block, offset), or unmapped
 *     mark(gpa, len)                 mark the software log at the RAM
 *                                    addresses those bytes live at
 *
 * A block may be mapped at several ranges (x86 splits its RAM around the
 * PCI hole: [0, 3 GiB) and [4 GiB, ...) are one block), and a range maps
 * part of one block.  Ranges never overlap.  A mark that falls (partly)
 * outside every range is counted and reported as #MIGRAM_MARK_OUT_OF_RANGE:
 * a device writing guest memory the layout does not know is a bug that
 * would lose writes, never something to drop silently.
 *
 * Threads and RCU.  Lookups and marks are lock-free and never allocate:
 * they read the current table under the RCU read lock (taken inside), so
 * the calling threads (vCPUs, device threads) must be registered with
 * liburcu (urcu_memb_register_thread(), see migram.h).  map and unmap
 * copy the table, publish the copy and wait for a grace period before
 * freeing the old one; they are serialized by a mutex inside.
 *
 * Lifetimes: a mapped block must stay in its list until it is unmapped.
 *
 * Synchronization (x = may run concurrently on one layout):
 *
 *                    lookup/mark   map/unmap   free
 *     lookup/mark        x             x         -
 *     map/unmap          x             x         -
 *     free               -             -         -
 */
#ifndef MIGRAM_GUEST_LAYOUT_H
#define MIGRAM_GUEST_LAYOUT_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/dirty-bitmap.h>
#include <migram/dirty-log.h>
#include <migram/ramblock.h>

G_BEGIN_DECLS

/** Opaque; single owner. */
typedef struct MigramGuestLayout MigramGuestLayout;

/**
 * Create an empty layout that marks @p log.
 *
 * @param log the software log marks go to; borrowed, must outlive the
 *        layout; NULL for a layout used only for lookups (marks then only
 *        translate and count).
 * @return a new layout; caller frees with migram_guest_layout_free().
 *
 * Context: Any thread.
 */
MigramGuestLayout *migram_guest_layout_new(MigramSoftLog *log);

/**
 * Free a layout.
 *
 * @param layout the layout, or NULL.
 *
 * Context: May block (a grace period).  Not inside an RCU read-side
 * section; no other thread may use @p layout any more.
 */
void migram_guest_layout_free(MigramGuestLayout *layout);

/**
 * Map guest-physical [@p gpa, @p gpa + @p size) to bytes [@p offset,
 * @p offset + @p size) of @p block.
 *
 * @param layout the layout.
 * @param gpa first guest-physical byte, 4 KiB aligned.
 * @param size bytes, > 0, 4 KiB aligned; gpa + size must not pass 2^64.
 * @param block the block; borrowed, must stay in its list until unmapped.
 * @param offset first byte in the block, 4 KiB aligned; offset + size at
 *        most the block's max_length.
 * @param error MIGRAM_ERROR_INVALID for a NULL @p layout or @p block, a
 *        misaligned, empty or overflowing range, or one past the block;
 *        MIGRAM_ERROR_EXISTS when it overlaps a mapped range.
 * @return false with @p error set on failure (the layout is unchanged).
 *
 * Context: Any registered RCU thread, not inside a read-side section.  May
 * block (a grace period).  Allocates.
 */
bool migram_guest_layout_map(MigramGuestLayout *layout, uint64_t gpa,
			     uint64_t size, MigramRamBlock *block,
			     uint64_t offset, GError **error);

/**
 * Remove the range that starts at @p gpa.  When it returns, no lookup or
 * mark uses the range any more.
 *
 * @param layout the layout.
 * @param gpa the start of a mapped range.
 * @param error MIGRAM_ERROR_INVALID for a NULL @p layout,
 *        MIGRAM_ERROR_NOT_FOUND when no range starts at @p gpa.
 * @return false with @p error set on failure.
 *
 * Context: As migram_guest_layout_map().
 */
bool migram_guest_layout_unmap(MigramGuestLayout *layout, uint64_t gpa,
			       GError **error);

/**
 * Which block byte @p gpa lives in.
 *
 * @param layout the layout.
 * @param gpa a guest-physical address.
 * @param block where the block is stored (may be NULL); valid while the
 *        range stays mapped.
 * @param offset where the byte's offset in the block is stored (may be
 *        NULL).
 * @return false when @p gpa is in no range (not an error: nothing is
 *         stored); a NULL @p layout is a programming error (a critical and
 *         false).
 *
 * Context: Any registered RCU thread; takes and releases the RCU read lock.
 * Lock-free, never allocates.
 */
bool migram_guest_layout_lookup(MigramGuestLayout *layout, uint64_t gpa,
				MigramRamBlock **block, uint64_t *offset);

/**
 * Mark the guest-physical bytes [@p gpa, @p gpa + @p len) dirty in the
 * software log, **after** writing them.  A range may span several mapped
 * ranges (and blocks).
 *
 * @param layout the layout.
 * @param gpa first byte.
 * @param len bytes; 0 marks nothing (#MIGRAM_MARK_ALREADY_DIRTY).
 * @return #MIGRAM_MARK_OUT_OF_RANGE when any byte is outside every range
 *         (the bytes inside are still marked; counted once per call, see
 *         migram_guest_layout_out_of_range_marks()); else
 *         #MIGRAM_MARK_NEWLY_DIRTY when a page went from clean to dirty,
 *         #MIGRAM_MARK_ALREADY_DIRTY when none did.  A NULL @p layout is a
 *         programming error: a critical and #MIGRAM_MARK_OUT_OF_RANGE.
 *
 * Context: Any registered RCU thread; takes and releases the RCU read lock.
 * Lock-free, never allocates.
 * Ordering: release on every word marked (the software log's).
 */
MigramMarkResult migram_guest_layout_mark(MigramGuestLayout *layout,
					  uint64_t gpa, uint64_t len);

/**
 * How many migram_guest_layout_mark() calls touched bytes outside every
 * range.  Anything but 0 means a device wrote memory the migration does
 * not track.
 *
 * @param layout the layout, or NULL (0).
 * @return the count (a relaxed load).
 *
 * Context: Any thread.
 */
uint64_t
migram_guest_layout_out_of_range_marks(const MigramGuestLayout *layout);

/**
 * The size a software log, shared-log adapter or shared log region needs
 * for @p list: the end of the highest block's max_length in RAM-address
 * space, so nobody computes it by hand.
 *
 * @param list the list.
 * @return the end of the last block, 0 for an empty list.
 *
 * Context: Any registered RCU thread; takes and releases the RCU read lock.
 * The value changes when blocks are added.
 */
uint64_t migram_ram_list_ram_space(MigramRamList *list);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramGuestLayout, migram_guest_layout_free)

G_END_DECLS

#endif /* MIGRAM_GUEST_LAYOUT_H */
