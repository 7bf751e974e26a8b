/* SPDX-License-Identifier: MIT */
/**
 * @file dirty-log.h
 * Dirty-log sources: where a migration learns which pages the guest wrote.
 *
 * One small interface, the shape of KVM's manual-protect dirty log, that
 * every source implements (software marks, KVM, userfaultfd write-protect):
 *
 *     start(block)                  begin tracking the block
 *     sync(block, collected)        OR the pages written since tracking
 *                                   began or since their last clear into
 *                                   @c collected; do NOT re-arm tracking
 *     clear(block, first, n, mask)  re-arm tracking for exactly the pages
 *                                   set in @c mask within [first, first+n)
 *     stop(block)                   end tracking
 *
 * Pages are target pages (4 KiB) numbered from the block's start.  The
 * contract that makes "no write is lost" hold:
 *
 *  - sync only reads: a page stays dirty in the source until cleared;
 *  - clear re-arms only pages a sync collected (the mask), never others:
 *    a page first written after the sync keeps its mark for the next sync;
 *  - the sender clears a chunk before it reads any page of the chunk, so a
 *    write that lands between the sync and the clear is in the page it
 *    sends, and a write after the clear is marked again.
 *
 * Several sources over the same blocks (KVM for the vCPUs, the software
 * log for the VMM's own writes, shared logs of vhost-user back-ends) are
 * combined into one by migram_combined_log_new() (dirty-log-combined.h),
 * which keeps this contract for each of them.
 *
 * Threads: the source's functions are called by the migration thread only.
 * How the guest's writes reach a source is the source's business (for the
 * software source: the embedder's vCPU and device threads mark it).
 */
#ifndef MIGRAM_DIRTY_LOG_H
#define MIGRAM_DIRTY_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/dirty-bitmap.h>
#include <migram/ramblock.h>

G_BEGIN_DECLS

/** A source's operations; see the file comment for the contract. */
typedef struct {
	/** Short name for statistics and errors ("software", "kvm"). */
	const char *name;
	/**
	 * Begin tracking @p block.
	 * @return false with @p error set on failure.
	 */
	bool (*start)(void *opaque, MigramRamBlock *block, GError **error);
	/**
	 * OR the block's dirty pages into @p collected (max_length / 4 KiB
	 * bits), without re-arming; store how many bits became set in
	 * @p collected in @p newly.
	 * @return false with @p error set on failure.
	 */
	bool (*sync)(void *opaque, MigramRamBlock *block,
		     unsigned long *collected, uint64_t *newly, GError **error);
	/**
	 * Re-arm exactly the pages set in @p mask within
	 * [@p first, @p first + @p npages).
	 * @return false with @p error set on failure.
	 */
	bool (*clear)(void *opaque, MigramRamBlock *block, uint64_t first,
		      uint64_t npages, const unsigned long *mask,
		      GError **error);
	/** End tracking @p block. */
	void (*stop)(void *opaque, MigramRamBlock *block);
} MigramLogSourceOps;

/** A source: its operations and its state.  Owned by the embedder. */
typedef struct {
	const MigramLogSourceOps *ops; /**< the operations */
	void *opaque;                  /**< passed to each of them */
} MigramLogSource;

G_END_DECLS

/* The software source, declared here before issue 18 (kept so embedders
 * that include only this header still build). */
#include <migram/soft-log.h>

#endif /* MIGRAM_DIRTY_LOG_H */
