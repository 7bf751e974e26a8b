/* SPDX-License-Identifier: MIT */
/**
 * @file checkpoint.h
 * Continuous checkpoints to a standby (COLO and Remus style), built on
 * staging memory (staging.h); docs/snapshots.md, "Checkpoints".
 *
 * The primary, every epoch: pauses its guest, collects the dirty log,
 * copies the dirty pages into staging with
 * migram_checkpoint_sender_stage() (the first epoch copies every non-zero
 * page), resumes the guest, and ships the staged pages with
 * migram_checkpoint_sender_ship(), which waits for the standby's
 * acknowledgement.
 *
 * The standby, for each epoch, receives the whole epoch into its own
 * staging copy of every block (seed 004's colo_cache) and only after the
 * epoch's end record (page count and checksum) has arrived and checked
 * does it copy the pages into its memory and acknowledge.  A primary
 * that dies, a cut connection or a corrupt record mid-epoch leaves the
 * standby's memory exactly at the last applied epoch; the partial epoch
 * is discarded.
 *
 * Both ends work on the migratable blocks of a RAM list, in list order;
 * the two lists must have the same blocks (names and used lengths, which
 * the connection's hello record carries and the standby checks).  The
 * list's layout (blocks added, removed or resized) must not change while
 * a sender or receiver exists.
 *
 * Wire format (integers little-endian):
 *
 *     hello:   "MIGRAMCK", u32 version (1), u32 nblocks (1..1024),
 *              then per block u64 used_length, u16 name length (1..255),
 *              the name (no NUL)
 *     record:  24 bytes: u32 tag, u32 block, u64 a, u64 b
 *       "EPOC" begin epoch a (b = 0); epochs count 0, 1, 2, ...
 *       "PAGE" pages [a, a + b) of block (1 <= b <= 256), followed by
 *              b * 4096 bytes
 *       "DEVS" the epoch's device state: a = its length (1 byte to
 *              MIGRAM_SNAPSHOT_MAX_DEVICE_BYTES), b = 0, followed by the
 *              bytes; at most one per epoch, anywhere before DONE
 *       "DONE" end of epoch: a = pages in it, b = checksum of its records
 *              and data (the device state's too)
 *     ack (standby to primary): a record "ACKD", a = epoch, b = pages
 */
#ifndef MIGRAM_CHECKPOINT_H
#define MIGRAM_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "migram/ramblock.h"
#include "migram/snapshot.h"

G_BEGIN_DECLS

/** Pages in one PAGE record at most. */
#define MIGRAM_CHECKPOINT_MAX_RUN 256u

/** One epoch, at either end. */
typedef struct {
	uint64_t epoch;   /**< its number (0 is the full one) */
	uint64_t pages;   /**< pages shipped or applied */
	uint64_t bytes;   /**< bytes on the wire, records included */
	uint64_t send_ns; /**< primary: sending; standby: receiving */
	uint64_t ack_ns;  /**< primary: end of sending to the ack;
			       standby: applying the cache to memory */
} MigramCheckpointStats;

/** Opaque; the primary's end.  Single owner, one thread at a time. */
typedef struct MigramCheckpointSender MigramCheckpointSender;

/** Opaque; the standby's end.  Single owner, one thread at a time. */
typedef struct MigramCheckpointReceiver MigramCheckpointReceiver;

/**
 * The primary's end over @p fd (a connected stream socket, blocking): a
 * staging per migratable block of @p list, and the hello record sent.
 *
 * @param list the guest's blocks; borrowed, must outlive the sender.
 * @param fd the connection; borrowed (the caller closes it after free).
 * @param error MIGRAM_ERROR_INVALID for a list without blocks,
 *        MIGRAM_ERROR_IO when the hello cannot be sent.
 * @return the sender (free with migram_checkpoint_sender_free()), or NULL.
 *
 * Context: Any thread registered with RCU (it walks the list).
 */
MigramCheckpointSender *migram_checkpoint_sender_new(MigramRamList *list,
						     int fd, GError **error);

/**
 * Free @p s (NULL is fine).  Does not close its fd.
 *
 * Context: The owning thread.
 */
void migram_checkpoint_sender_free(MigramCheckpointSender *s);

/**
 * Allocate the stagings' memory now (migram_staging_populate()), so that
 * stage() during the pause costs only memcpy.  Call it outside the pause.
 *
 * @param s the sender.
 * @param error as migram_staging_populate().
 * @return true on success.
 *
 * Context: The owning thread, outside the pause.
 */
bool migram_checkpoint_sender_populate(MigramCheckpointSender *s,
				       GError **error);

/**
 * While the guest is paused: copy the next epoch's pages into staging.
 * The first epoch copies every non-zero page and ignores @p dirty; later
 * ones copy block i's pages set in @p dirty[i] (the dirty log collected
 * at this pause, cleared for the next epoch by the caller).
 *
 * @param s the sender; its previous epoch must have been shipped.
 * @param dirty per block (list order) a bitmap of used_length / 4 KiB
 *        bits; may be NULL for the first epoch.
 * @param stats added to (zero it first); may be NULL.
 * @param error MIGRAM_ERROR_INVALID when an epoch is already staged or
 *        @p dirty is missing.
 * @return true on success.
 *
 * Context: The owning thread, guest paused.  Never allocates or locks.
 */
bool migram_checkpoint_sender_stage(MigramCheckpointSender *s,
				    const unsigned long *const *dirty,
				    MigramStageStats *stats, GError **error);

/**
 * Called after each PAGE record is sent (progress, or a test that kills
 * the primary mid-epoch); @p pages_sent counts this epoch's pages so far.
 */
typedef void (*MigramCheckpointRunHook)(uint64_t epoch, uint64_t pages_sent,
					void *opaque);

/**
 * Attach the embedder's device state (vCPU registers, device models) to
 * the staged epoch: it is shipped after the epoch's pages, under the
 * epoch's checksum, and the standby applies it with the pages or not at
 * all.  Call it after migram_checkpoint_sender_stage(), normally with the
 * state saved in the same pause.
 *
 * @param s the sender, with an epoch staged.
 * @param data @p len bytes (copied); replaces an earlier call's for this
 *        epoch.
 * @param len 1 to MIGRAM_SNAPSHOT_MAX_DEVICE_BYTES.
 * @param error MIGRAM_ERROR_INVALID for a bad length or nothing staged.
 * @return true on success.
 *
 * Context: The owning thread.
 */
bool migram_checkpoint_sender_set_device_state(MigramCheckpointSender *s,
					       const void *data, size_t len,
					       GError **error);

/**
 * Install @p hook (NULL removes it); it runs on the thread calling
 * migram_checkpoint_sender_ship().
 *
 * Context: The owning thread, not during ship().
 */
void migram_checkpoint_sender_set_run_hook(MigramCheckpointSender *s,
					   MigramCheckpointRunHook hook,
					   void *opaque);

/**
 * Ship the staged epoch (the guest may run) and wait for its ack.  The
 * staging is released as it is sent.
 *
 * @param s the sender, with an epoch staged.
 * @param stats filled in; may be NULL.
 * @param error MIGRAM_ERROR_IO for a failed send or receive,
 *        MIGRAM_ERROR_PROTOCOL for a wrong ack (naming the epoch).  The
 *        standby then still holds the previous epoch; the sender cannot
 *        be used further.
 * @return true once the standby has applied the epoch.
 *
 * Context: The owning thread.
 */
bool migram_checkpoint_sender_ship(MigramCheckpointSender *s,
				   MigramCheckpointStats *stats,
				   GError **error);

/**
 * The number the next staged epoch will have (0 before the first).
 *
 * Context: The owning thread.
 */
uint64_t migram_checkpoint_sender_next_epoch(const MigramCheckpointSender *s);

/**
 * The standby's end: reads the hello from @p fd and checks that it
 * names exactly @p list's migratable blocks, then allocates the
 * colo_cache (a staging per block).
 *
 * @param list the standby's blocks; borrowed, must outlive the receiver.
 *        Nothing else may write them while the receiver applies epochs.
 * @param fd the connection (blocking), read from; borrowed.
 * @param ack_fd where acks are written (normally @p fd), or -1 for none.
 * @param error MIGRAM_ERROR_PROTOCOL for a bad hello or another layout
 *        (naming the block and the stream offset), MIGRAM_ERROR_IO.
 * @return the receiver (free with migram_checkpoint_receiver_free()).
 *
 * Context: Any thread registered with RCU.
 */
MigramCheckpointReceiver *migram_checkpoint_receiver_new(MigramRamList *list,
							 int fd, int ack_fd,
							 GError **error);

/**
 * Free @p r (NULL is fine); closes no fd.
 *
 * Context: The owning thread.
 */
void migram_checkpoint_receiver_free(MigramCheckpointReceiver *r);

/**
 * Receive one epoch into the colo_cache, check its end record, apply it
 * to memory and acknowledge it.
 *
 * @param r the receiver.
 * @param stats filled in for an applied epoch; may be NULL.
 * @param closed set to true when the connection ended cleanly between
 *        epochs (nothing applied, true returned), else false.
 * @param error MIGRAM_ERROR_PROTOCOL for a bad record (naming the epoch,
 *        the block, the page and the stream offset), MIGRAM_ERROR_IO for
 *        a connection that ended or failed inside an epoch.  Either way
 *        the partial epoch is discarded and memory holds the last
 *        applied epoch.
 * @return true when an epoch was applied or the connection closed.
 *
 * Context: The owning thread.
 */
bool migram_checkpoint_receiver_next(MigramCheckpointReceiver *r,
				     MigramCheckpointStats *stats, bool *closed,
				     GError **error);

/**
 * The device state of the last applied epoch that carried one (an epoch
 * without one leaves the earlier state in place).  It always belongs to
 * an epoch whose pages are in memory: both are applied together.
 *
 * @param r the receiver.
 * @return a new reference (g_bytes_unref()), or NULL when no applied
 *         epoch carried a device state.
 *
 * Context: The owning thread.
 */
GBytes *
migram_checkpoint_receiver_device_state(const MigramCheckpointReceiver *r);

/**
 * The last applied epoch.
 *
 * @return true and *@p epoch set, or false before the first one.
 *
 * Context: The owning thread.
 */
bool migram_checkpoint_receiver_epoch(const MigramCheckpointReceiver *r,
				      uint64_t *epoch);

G_END_DECLS

#endif /* MIGRAM_CHECKPOINT_H */
