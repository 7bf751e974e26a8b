/* SPDX-License-Identifier: MIT */
/**
 * @file receiver.h
 * MigramReceiver: load a migration stream into destination RAM blocks.
 *
 * The receiver reads a QEMU-format stream from a channel (socket, pipe or
 * file: the same code) and places its pages into the blocks of a
 * MigramRamList:
 *
 *  - the block list in the START section is matched against the list by
 *    idstr; a length that differs resizes a resizeable block (within
 *    max_length) and is an error naming the block otherwise; with
 *    @c create_blocks, a block the list lacks is created (anonymous memory,
 *    placed with 4 KiB pages and advised transparent huge pages once the
 *    load completed; a ZERO record for a page of such a block that no
 *    record placed yet does not touch the page);
 *  - a PAGE is read straight into the block's memory at its offset;
 *  - a ZERO page is applied only where the page is not already zero, so
 *    untouched destination memory stays unpopulated;
 *  - every placed page sets its bit in the block's receivedmap (the
 *    receiver allocates the list's migration bitmaps if they are not).
 *
 * The stream is hostile: before any write, a page's block must exist and be
 * migratable, its offset must be page aligned and the page must lie inside
 * used_length.  A violation ends the load with a GError naming the block,
 * the offset and the byte position in the stream; no byte outside the named
 * page is ever written, and no size from the stream drives an allocation.
 */
#ifndef MIGRAM_RECEIVER_H
#define MIGRAM_RECEIVER_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/channel.h>
#include <migram/device-section.h>
#include <migram/postcopy-stats.h>
#include <migram/ramblock.h>

G_BEGIN_DECLS

/** Options; zero-initialize for the defaults. */
typedef struct {
	/** Create blocks the stream lists but the destination lacks. */
	bool create_blocks;
	/**
	 * The machine type the configuration section must name, or NULL to
	 * accept any (QEMU destinations insist on their own).
	 */
	const char *machine_type;
	/**
	 * Stop, successfully, at the first non-RAM section once the RAM END
	 * section is complete (a QEMU stream's device state follows its RAM).
	 * Without it such a section is an error.
	 */
	bool stop_at_devices;

	/**
	 * Device state: called on the loading thread for every FULL section
	 * in migram's device-blob form (docs/wire-format.md).  Without it such
	 * a section is an error.  Returning false fails the load.
	 */
	bool (*load_device)(void *opaque, const char *idstr, const guint8 *data,
			    size_t len, GError **error);
	/**
	 * Postcopy: the destination may start its guest now (the package's
	 * RUN).  Called on the loading thread, which then keeps loading pages
	 * while the guest runs; must not block.  Pages not yet received fault
	 * and are fetched on demand.
	 */
	void (*postcopy_run)(void *opaque);
	/**
	 * Postcopy: the connection failed; the load is paused (placed pages
	 * stay, faulting threads wait).  Call migram_receiver_recover() with
	 * a new connection, from this callback or any thread, or
	 * migram_receiver_cancel().  Called on the loading thread.
	 */
	void (*postcopy_paused)(void *opaque);
	/** Passed to the callbacks. */
	void *opaque;
	/**
	 * Device state as named, versioned sections (device-section.h):
	 * called on the loading thread for every device FULL section with its
	 * name, instance and version (whatever the version), the single
	 * save_device blob included; it refuses an unknown name or version by
	 * returning false with an error, and the load fails with that reason
	 * and the section's place.  Takes precedence over load_device.
	 * Added in 0.3.
	 */
	MigramDeviceLoadFn load_section;
	/**
	 * Data channels (multifd; added in 0.3): the number of connected
	 * sockets in @c multifd_fds the source sends precopy pages on (its
	 * @c multifd_channels); 0, the default, expects every page on the
	 * main channel.  After the block list, the load reads each data
	 * channel's initial packet and starts one thread per channel, which
	 * reads payloads straight into guest memory.  At every RAM EOS of
	 * the main stream the load waits until every channel has placed what
	 * was sent before it (QEMU 7.2's sync points); the channels stop at
	 * a postcopy LISTEN.  A channel's error fails the load, naming the
	 * channel, packet and offset.
	 */
	unsigned int multifd_channels;
	/**
	 * The data channels' sockets, in any order; the array and the fds
	 * are borrowed until migram_receiver_load() returns, which shuts them
	 * down (shutdown(2)) before it does; the caller closes them.  Blocks
	 * must not be removed during the load.  Added in 0.3.
	 */
	const int *multifd_fds;
	/**
	 * A read of the main channel that makes no progress for this many
	 * milliseconds fails it with a "stalled" error (MIGRAM_ERROR_IO,
	 * naming the fd and the time), as the source's io_timeout_ms does:
	 * before the postcopy switch the load fails; after it the stall is a
	 * lost connection, and the load pauses for migram_receiver_recover()
	 * (whose channel gets the same limit).  TCP sockets get
	 * TCP_USER_TIMEOUT too.  The preempt and data channels have none:
	 * they may be idle for a whole pass, or for good after the switch.
	 * 0, the default, waits forever, as QEMU does.  Choose it above the
	 * longest silence of a healthy source (its pause and device save).
	 * Sockets only.  Added in 0.3.
	 */
	unsigned int io_timeout_ms;
} MigramReceiverConfig;

/** What a load did. */
typedef struct {
	uint64_t normal_pages;       /**< PAGE records placed */
	uint64_t zero_pages;         /**< ZERO records applied */
	uint64_t zero_pages_written; /**< of which found non-zero, cleared */
	uint64_t sections;           /**< RAM sections read */
	uint64_t bytes;              /**< stream bytes consumed */
	bool stopped_at_device;      /**< stop_at_devices took effect */
	char device[256];            /**< the section it stopped at */
} MigramReceiverStats;

/** Opaque; single owner. */
typedef struct MigramReceiver MigramReceiver;

/**
 * Create a receiver that loads into @p list.
 *
 * @param list the destination blocks; borrowed, must outlive the receiver.
 * @param config options, or NULL for the defaults; copied, its string
 *        (machine_type) included.
 * @return a new receiver; caller frees with migram_receiver_free().
 *
 * Context: Any thread.
 */
MigramReceiver *migram_receiver_new(MigramRamList *list,
				    const MigramReceiverConfig *config);

/**
 * Free a receiver.  The list's migration bitmaps stay (the receivedmap is
 * the caller's to read); free them with migram_ram_list_bitmaps_free().
 *
 * @param r the receiver, or NULL.
 *
 * Context: The thread that used it.
 */
void migram_receiver_free(MigramReceiver *r);

/**
 * Load a whole stream from @p ch: header to EOF (and the vmdesc, if any).
 *
 * @param r the receiver.
 * @param ch the channel to read; borrowed.
 * @param error MIGRAM_ERROR_PROTOCOL for a malformed or hostile stream,
 *        MIGRAM_ERROR_NOT_FOUND for an unknown block, MIGRAM_ERROR_INVALID
 *        for a block whose size or page size does not match,
 *        MIGRAM_ERROR_UNSUPPORTED, MIGRAM_ERROR_IO, MIGRAM_ERROR_CANCELLED.
 *        Each message names the byte offset in the stream.
 * @return true when the stream loaded completely.
 *
 * Context: Migration thread only; the thread must be registered with RCU
 * (it takes the read lock around each record).  May block.  Updaters of
 * @p list may run concurrently; a block removed under the load fails it.
 */
bool migram_receiver_load(MigramReceiver *r, MigramChannel *ch, GError **error);

/**
 * Read postcopy's preempt channel (raw RAM records from the source's
 * migram_migration_set_preempt()) on a thread of the receiver's own once
 * LISTEN arrives.  Call before migram_receiver_load().
 *
 * @param r the receiver.
 * @param preempt the channel; borrowed until load returns.
 *
 * Context: The loading thread, before load.
 */
void migram_receiver_set_preempt(MigramReceiver *r, MigramChannel *preempt);

/**
 * Give a paused postcopy load a new connection from the source (which was
 * given the other end with migram_migration_recover()).  The load sends
 * its receivedmap when asked, resends its outstanding page requests and
 * continues to the end.  @p ch is used until load returns.
 *
 * @param r the receiver.
 * @param ch a connected socket's channel; borrowed until load returns.
 * @param error MIGRAM_ERROR_INVALID when the load is not paused.
 * @return true when the load took the channel.
 *
 * Context: Any thread (also the postcopy_paused callback).
 */
bool migram_receiver_recover(MigramReceiver *r, MigramChannel *ch,
			     GError **error);

/**
 * Stop a load: a paused postcopy load fails with MIGRAM_ERROR_CANCELLED;
 * any other load's channel is cancelled.  Faulting guest threads of a
 * postcopy load stay blocked until the caller unmaps or refills memory.
 *
 * @param r the receiver.
 *
 * Context: Any thread.
 */
void migram_receiver_cancel(MigramReceiver *r);

/**
 * A snapshot of the postcopy figures of the current or last load.
 *
 * @param r the receiver.
 * @param stats where to store them.
 *
 * Context: Any thread.  Takes the receiver's postcopy lock.
 */
void migram_receiver_get_postcopy_stats(MigramReceiver *r,
					MigramPostcopyStats *stats);

/**
 * Whether this host can run the destination side of postcopy: opens a
 * userfaultfd and checks it can place pages in missing mode.
 *
 * @param error MIGRAM_ERROR_UNSUPPORTED with the reason (the syscall's
 *        errno, vm.unprivileged_userfaultfd) when it cannot.
 * @return true when postcopy can be used.
 *
 * Context: Any thread.
 */
bool migram_postcopy_available(GError **error);

/**
 * What the last load did.
 *
 * @param r the receiver.
 * @param stats where to store the figures.
 *
 * Context: The thread that used it.
 */
void migram_receiver_get_stats(const MigramReceiver *r,
			       MigramReceiverStats *stats);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramReceiver, migram_receiver_free)

G_END_DECLS

#endif /* MIGRAM_RECEIVER_H */
