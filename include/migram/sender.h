/* SPDX-License-Identifier: MIT */
/**
 * @file sender.h
 * MigramMigration: the precopy sender.
 *
 * A migration sends the migratable blocks of a MigramRamList over a
 * MigramChannel while the guest keeps running, and converges:
 *
 *     setup     migration bitmaps (every page dirty), start the dirty-log
 *               source on every block, header + block list, first sync
 *     iterate   PART sections: find the next dirty page (round robin over
 *               blocks, resuming where the last search stopped), clear the
 *               log of its chunk if a clear is owed, send it (zero pages as
 *               ZERO records, others by reference), honour the rate limit;
 *               a pass that finds nothing left syncs the log again
 *     converge  when what remains can be sent within the downtime limit at
 *               the bandwidth achieved: pause the guest (callback), final
 *               sync, send everything left in the END section, EOF
 *
 * Postponed, shifted log-clear.  Each sync marks every chunk of
 * 2^clear_bmap_shift pages of every block "clear owed" in clear_bmap
 * instead of re-arming the dirty log at once.  Just before the first page
 * of a chunk is sent, the chunk's log is cleared with the mask of pages
 * the syncs collected there, and the owed bit dropped.  Chunks never sent
 * are never cleared.  @c clear_at_sync re-arms everything right after each
 * sync instead (the classic mode, for comparison).
 *
 * Threads.  migram_migration_run() runs on the caller's thread (the
 * migration thread), which must be registered with RCU.
 * migram_migration_cancel() and migram_migration_get_stats() may be called
 * from any thread at any time.  The callbacks run on the migration thread.
 *
 * Events.  Each status change is queued: an event-loop embedder watches
 * migram_migration_get_event_fd() and takes changes with
 * migram_migration_next_event(); a threaded one may set a callback with
 * migram_migration_set_event_callback() (docs/embedding.md).
 */
#ifndef MIGRAM_SENDER_H
#define MIGRAM_SENDER_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/channel.h>
#include <migram/device-section.h>
#include <migram/dirty-log.h>
#include <migram/ramblock.h>

G_BEGIN_DECLS

/** Where a migration is. */
typedef enum {
	MIGRAM_MIGRATION_SETUP = 0, /**< bitmaps, header, first sync */
	MIGRAM_MIGRATION_ACTIVE,    /**< iterating while the guest runs */
	MIGRAM_MIGRATION_DEVICE,    /**< guest paused, sending the rest */
	MIGRAM_MIGRATION_COMPLETED, /**< everything sent */
	MIGRAM_MIGRATION_FAILED,    /**< stopped with an error */
	MIGRAM_MIGRATION_CANCELLED, /**< stopped by migram_migration_cancel() */
	MIGRAM_MIGRATION_POSTCOPY_ACTIVE, /**< destination runs; pages follow */
	MIGRAM_MIGRATION_POSTCOPY_PAUSED, /**< connection lost; waiting for
					       migram_migration_recover() */
	MIGRAM_MIGRATION_POSTCOPY_RECOVER, /**< receivedmap handshake */
} MigramMigrationStatus;

/** Options and callbacks; zero-initialize, then set what you need. */
typedef struct {
	/** Longest acceptable pause, ms; 0 means QEMU's 300. */
	uint64_t downtime_limit_ms;
	/** Bytes per second on the channel; 0 means unlimited. */
	uint64_t max_bandwidth;
	/**
	 * clear_bmap chunk exponent (MIGRAM_CLEAR_BMAP_SHIFT_MIN..MAX);
	 * @c clear_bmap_shift_set must be true to use it, otherwise QEMU's
	 * default of 18 applies.
	 */
	unsigned int clear_bmap_shift;
	/** Use @c clear_bmap_shift (a zero shift is a valid choice). */
	bool clear_bmap_shift_set;
	/** Re-arm the whole log right after each sync (no postponed clear). */
	bool clear_at_sync;
	/** Throttle the guest (callback) when iterations stop converging. */
	bool auto_converge;
	/** First throttle percentage; 0 means QEMU's 20. */
	unsigned int throttle_initial;
	/** Throttle step; 0 means QEMU's 10. */
	unsigned int throttle_increment;
	/**
	 * Syncs in a row without a new lowest remainder before the migration
	 * counts as not converging; 0 means 8.  Without auto-converge (or at
	 * a 99 % throttle) it then fails with MIGRAM_ERROR_NOT_CONVERGED and
	 * the guest keeps running.
	 */
	unsigned int stall_syncs;
	/** Give up after this long, ms (MIGRAM_ERROR_NOT_CONVERGED); 0: never.
	 */
	uint64_t max_time_ms;
	/** Machine type for the configuration section; NULL means "none".
	 * Copied by migram_migration_new(). */
	const char *machine_type;

	/**
	 * Advise postcopy: open the return path (the channel must be a
	 * socket), send POSTCOPY_ADVISE and huge-page sizes in the block list,
	 * and switch to postcopy when migram_migration_start_postcopy() asks
	 * or after @c postcopy_after_passes passes.  Without a switch the
	 * migration still completes as precopy when it converges.
	 */
	bool postcopy;
	/**
	 * Switch to postcopy by itself after this many complete passes over
	 * RAM (1 is the usual hybrid: one precopy pass, then postcopy); 0
	 * means only on request.
	 */
	unsigned int postcopy_after_passes;

	/**
	 * Device state, optional: called once on the migration thread with
	 * the guest paused; append the state to @p out.  It travels as one
	 * FULL section (docs/wire-format.md, "device blob") after the RAM, or
	 * inside the postcopy package.  Returning false fails the migration.
	 */
	bool (*save_device)(void *opaque, GByteArray *out, GError **error);
	/** The device section's idstr; NULL means "migram-device".  Copied
	 * by migram_migration_new(). */
	const char *device_idstr;
	/**
	 * Postcopy: the connection failed and the migration is paused; call
	 * migram_migration_recover() with a new connection (from this
	 * callback or any thread) or migram_migration_cancel().  Called on
	 * the migration thread.
	 */
	void (*postcopy_paused)(void *opaque);

	/**
	 * Stop every writer of guest memory (vCPUs, device DMA) and return
	 * once they are quiet.  Required.
	 */
	void (*pause_guest)(void *opaque);
	/** Let the guest run again when a migration fails after pausing it. */
	void (*resume_guest)(void *opaque);
	/**
	 * Auto-converge: slow the guest to @p percent % of its time
	 * throttled.  Called with 0 when the migration ends, whatever the
	 * outcome (completed, failed, cancelled), if it was ever called with
	 * more.
	 */
	void (*throttle_guest)(void *opaque, unsigned int percent);
	/** Passed to the callbacks. */
	void *opaque;
	/**
	 * Bytes per second the channel carries once the guest is paused, for
	 * the downtime estimate (QEMU 8.2's avail-switchover-bandwidth);
	 * 0, the default, estimates with the rate measured while the guest
	 * runs, as QEMU 7.2 does.  Where vCPUs and migration share the
	 * host's cores, the paused rate can be several times the live one
	 * (docs/performance.md): with it known, the migration stops as soon
	 * as the remainder fits the limit at that rate.  Too high a value
	 * overruns the downtime limit.  Added in 0.2.
	 */
	uint64_t switchover_bandwidth;
	/**
	 * Precopy: ask the destination for a return path (QEMU's
	 * "return-path" capability; the channel must be a socket) and report
	 * completed only once it answered SHUT 0, that is, loaded the whole
	 * stream.  A failed load, or a connection that ends or breaks before
	 * SHUT, fails the migration and resumes the guest (resume_guest).
	 * Without it (false, the default) the migration completes when its
	 * last byte is written, as QEMU's without a return path: a
	 * destination that then fails leaves neither side running the guest.
	 * Postcopy always has a return path and always waits for SHUT.
	 * Added in 0.3.
	 */
	bool return_path;
	/**
	 * Fail the migration when a connection stops moving without
	 * closing: a read or write on the migration's channels (main and
	 * preempt) that makes no progress for this many milliseconds fails
	 * with MIGRAM_ERROR_IO, naming the fd and the time, and TCP sockets
	 * get TCP_USER_TIMEOUT too.  Writes on the data channels
	 * (multifd_fds) get the same limit.  The wait for the destination's
	 * SHUT (postcopy, or precopy with @c return_path) gets the same
	 * limit, and so do the postcopy recovery handshake's waits (a
	 * stalled one counts as a lost connection: paused again) and the
	 * switch's wait for PONG 2 (stalled there, the migration fails
	 * before the destination runs, and the source guest resumes).
	 * 0, the default, waits forever, as QEMU does (a stalled peer then
	 * holds the migration until it is cancelled).  Choose it well above
	 * the longest pause the destination may legitimately take
	 * (docs/operations.md).  Sockets only: a pipe or file blocks as
	 * before.  Added in 0.3.
	 */
	unsigned int io_timeout_ms;
	/**
	 * Device state as named, versioned sections (device-section.h): each
	 * saved once with the guest paused and sent as one FULL section,
	 * after save_device's blob if there is one.  Borrowed; must outlive
	 * the migration.  Names must be 1..255 bytes and unique per instance
	 * id; a bad list fails the migration at the device stage.
	 * Added in 0.3.
	 */
	const MigramDeviceSection *device_sections;
	/** How many device_sections there are.  Added in 0.3. */
	unsigned int n_device_sections;
	/**
	 * Data channels (multifd; added in 0.3): the number of connected
	 * sockets in @c multifd_fds that carry the precopy pages beside the
	 * main channel, one sending thread each (1..255); 0, the default,
	 * sends every page on the main channel as before.  The main channel
	 * then carries the block list, the sync points (every RAM EOS) and
	 * the device state; postcopy pages stay on it (the data channels stop
	 * at the switch).  docs/wire-format.md, "Data channels".  The rate
	 * limit (@c max_bandwidth) applies to the sum of the main channel and
	 * the data channels (one budget, charged every batch).
	 */
	unsigned int multifd_channels;
	/**
	 * The data channels' sockets, @c multifd_channels of them, connected
	 * to the destination's (in any order: each carries its id).  The
	 * array and the fds are borrowed until migram_migration_run()
	 * returns; run shuts them down (shutdown(2)) before it returns, the
	 * caller closes them.  Added in 0.3.
	 */
	const int *multifd_fds;
	/**
	 * Compression of the data channels' payloads (added in 0.3):
	 * MIGRAM_MULTIFD_COMPRESSION_NONE (0, the default) or
	 * MIGRAM_MULTIFD_COMPRESSION_ZSTD, QEMU 7.2's multifd-compression=zstd
	 * wire form (one zstd stream per channel, flushed every packet).
	 * Each channel thread compresses its own packets; the destination
	 * needs no setting (it decompresses every packet flagged zstd
	 * straight into the pages).  Ignored without data channels.
	 */
	unsigned int multifd_compression;
	/**
	 * zstd level for MIGRAM_MULTIFD_COMPRESSION_ZSTD (1..19; 0 means 1,
	 * QEMU's default multifd-zstd-level).  Added in 0.3.
	 */
	int multifd_zstd_level;
	/**
	 * Where zero pages go with data channels (added in 0.3):
	 * MIGRAM_MULTIFD_ZERO_LISTED (0, the default): a channel thread finds
	 * them and lists their offsets in its packet (QEMU 9.0's zero_pages
	 * field), 8 bytes each on the wire.  MIGRAM_MULTIFD_ZERO_MAIN: the
	 * migration thread finds them and writes ZERO records on the main
	 * stream, and the channels send every page they are given whole, as
	 * QEMU 7.2 does: the form a QEMU 7.2 destination understands
	 * (docs/wire-format.md, "QEMU 7.2").  Ignored without data channels.
	 */
	unsigned int multifd_zero_pages;
	/**
	 * The 16-byte UUID every data channel's initial packet carries:
	 * QEMU's VM UUID (-uuid), which a QEMU 7.2 destination requires to
	 * equal its own.  NULL, the default, sends all zero bytes, the UUID
	 * of a QEMU VM started without -uuid.  Borrowed until
	 * migram_migration_run() returns.  Added in 0.3.
	 */
	const uint8_t *multifd_uuid;
} MigramMigrationConfig;

/** MigramMigrationConfig.multifd_zero_pages values. */
enum {
	MIGRAM_MULTIFD_ZERO_LISTED = 0, /**< listed in packets (QEMU 9.0) */
	MIGRAM_MULTIFD_ZERO_MAIN = 1,   /**< ZERO records on main (QEMU 7.2) */
};

/** MigramMigrationConfig.multifd_compression values (QEMU's names). */
enum {
	MIGRAM_MULTIFD_COMPRESSION_NONE = 0, /**< payloads as they are */
	MIGRAM_MULTIFD_COMPRESSION_ZSTD = 2, /**< zstd per packet */
};

/** QEMU's `query-migrate` RAM figures, and a few of migram's own. */
typedef struct {
	MigramMigrationStatus status; /**< where the migration is */
	uint64_t total_bytes;         /**< RAM to migrate (used lengths) */
	uint64_t transferred_bytes;   /**< stream bytes written */
	uint64_t remaining_bytes;     /**< dirty pages not yet sent, in bytes */
	uint64_t duplicate_pages;     /**< zero pages sent as ZERO records */
	uint64_t normal_pages;        /**< pages sent whole */
	uint64_t normal_bytes;        /**< their bytes */
	uint64_t dirty_sync_count;    /**< syncs of the dirty log */
	uint64_t dirty_pages_rate; /**< pages dirtied per second, last period */
	uint64_t dirty_bytes_rate; /**< the same in bytes per second */
	double mbps;               /**< bandwidth achieved, megabits/s */
	uint64_t expected_downtime_ms; /**< remaining / bandwidth */
	uint64_t downtime_ms;     /**< the call to pause_guest to the last byte
				       written (postcopy: to the package) */
	uint64_t setup_time_ms;   /**< start to the first iteration */
	uint64_t total_time_ms;   /**< start to now, or to the end */
	uint64_t iterations;      /**< complete passes over RAM */
	uint64_t log_clear_calls; /**< clear calls to the source */
	uint64_t log_clear_pages; /**< pages those calls covered */
	unsigned int throttle_percent; /**< auto-converge throttle applied
					    last; lifted when run returns */
	bool not_converging; /**< iterations stopped making progress */
	/* postcopy (all zero in a precopy migration) */
	uint64_t postcopy_requests;     /**< page requests received */
	uint64_t postcopy_urgent_pages; /**< pages sent because requested */
	uint64_t postcopy_requests_already_sent; /**< asked for, already sent */
	uint64_t postcopy_requests_overflowed;   /**< not queued (queue full);
						      background sending serves
						      them */
	uint64_t postcopy_background_pages; /**< pages sent in background */
	uint64_t postcopy_discard_ranges;   /**< ranges in the discard list */
	uint64_t postcopy_discard_pages;    /**< pages they cover */
	uint64_t postcopy_time_ms;          /**< switch to completion */
	uint64_t postcopy_recoveries;       /**< successful recoveries */
	bool postcopy_preempt;              /**< the preempt channel is used */
	/**
	 * Marks of the software log's bitmap that fell outside it since the
	 * log was created (migram_dirty_bitmap_out_of_range_marks()): writes
	 * the migration cannot see.  0 for other sources.  Added in 0.2.
	 */
	uint64_t out_of_range_marks;
	/**
	 * Where the downtime went, in µs (added in 0.2): pause_guest()
	 * returning, the final sync of the dirty log, the pages still dirty
	 * after it, and the device state plus the stream's end.  At a
	 * postcopy switch "pages" is the discard list and the PING(2)/PONG
	 * round trip, "device" the package.
	 */
	uint64_t downtime_pause_us;
	uint64_t downtime_sync_us;   /**< final dirty-log sync */
	uint64_t downtime_pages_us;  /**< the last pages */
	uint64_t downtime_device_us; /**< device state, EOF, flush */
	/**
	 * Time the migration thread spent in the dirty-log source's sync and
	 * clear calls while the guest ran (µs; added in 0.2).  With KVM the
	 * clears re-protect pages, and the guest's next writes to them fault:
	 * the guest's share of the cost shows in its progress, not here.
	 */
	uint64_t log_sync_us;
	uint64_t log_clear_us;
} MigramMigrationStats;

/** Opaque; single owner. */
typedef struct MigramMigration MigramMigration;

/**
 * Create a migration of @p list's migratable blocks.
 *
 * @param list the blocks; borrowed, must outlive the migration.
 * @param source the dirty-log source; copied (its opaque is borrowed).
 * @param config options and callbacks; copied, its strings
 *        (machine_type, device_idstr) included: they need not outlive
 *        this call.
 * @return a new migration; caller frees with migram_migration_free().
 *         NULL @p list, @p source (or its ops) or @p config is a
 *         programming error: a critical and NULL, nothing allocated.  The
 *         config's contents are checked by migram_migration_run(), which
 *         can report them.
 *
 * Context: Any thread.
 */
MigramMigration *migram_migration_new(MigramRamList *list,
				      const MigramLogSource *source,
				      const MigramMigrationConfig *config);

/**
 * Free a migration (not while migram_migration_run() runs).
 *
 * @param m the migration, or NULL.
 *
 * Context: Any thread, after run returned.
 */
void migram_migration_free(MigramMigration *m);

/**
 * Run the whole migration on @p ch: setup, iterations, convergence, the
 * final pause and the end of the stream.  Returns when it completed,
 * failed or was cancelled; the list's migration bitmaps are freed and the
 * source stopped in every case.
 *
 * @param m the migration.
 * @param ch the channel to the destination; borrowed, not closed.
 * @param error MIGRAM_ERROR_CANCELLED, MIGRAM_ERROR_NOT_CONVERGED (the guest
 *        was never paused and keeps running), MIGRAM_ERROR_INVALID when the
 *        block list changed (the message names the block), MIGRAM_ERROR_IO
 *        from the channel, MIGRAM_ERROR_NO_MEMORY when a bitmap cannot
 *        be allocated, or a source's error.  A config without
 *        @c pause_guest fails at once with MIGRAM_ERROR_INVALID.
 * @return true when the migration completed; false always comes with
 *         @p error set (a NULL @p m or @p ch is a programming error: a
 *         critical and false).
 *
 * Context: Migration thread only; registered with RCU; not inside a
 * read-side section.  May block.  An auto-converge throttle is lifted
 * (throttle_guest(0)) before it returns, on every path.
 */
bool migram_migration_run(MigramMigration *m, MigramChannel *ch,
			  GError **error);

/**
 * Use @p preempt for requested pages in postcopy, so they never queue
 * behind background pages on the main channel (QEMU 7.2's
 * postcopy-preempt: raw RAM records, no header, an EOS at the end).  Call
 * before migram_migration_run(); the destination must be given the other
 * end with migram_receiver_set_preempt().  After a recovery the preempt
 * channel is no longer used.
 *
 * @param m the migration, which advises postcopy.
 * @param preempt a connected socket's channel; borrowed until run returns.
 *
 * Context: The thread that will call run, before it.
 */
void migram_migration_set_preempt(MigramMigration *m, MigramChannel *preempt);

/**
 * Ask for the switch to postcopy.  The migration thread makes it at its
 * next section boundary: pause the guest, final sync, discard list,
 * package (LISTEN, device state, RUN), then the remaining pages with
 * requested ones first.  Before run, it makes the migration pure postcopy
 * (switch right after setup).  Ignored without @c postcopy in the config.
 *
 * @param m the migration.
 *
 * Context: Any thread.
 */
void migram_migration_start_postcopy(MigramMigration *m);

/**
 * Give a paused postcopy migration a new connection to the destination
 * (which must be given the other end with migram_receiver_recover()).  The
 * migration thread asks for the destination's receivedmap, resends every
 * page not received and finishes.  The old channel is no longer used;
 * @p ch is used until run returns.
 *
 * @param m the migration.
 * @param ch a connected socket's channel; borrowed until run returns.
 * @param error MIGRAM_ERROR_INVALID when the migration is not paused.
 * @return true when the migration took the channel.
 *
 * Context: Any thread (also the postcopy_paused callback).
 */
bool migram_migration_recover(MigramMigration *m, MigramChannel *ch,
			      GError **error);

/**
 * Ask a running migration to stop.  It stops promptly (the channel is
 * cancelled so a blocked write returns), the destination sees the stream
 * end without EOF, and the source's memory and bitmaps stay consistent.
 *
 * @param m the migration.
 *
 * Context: Any thread.
 */
void migram_migration_cancel(MigramMigration *m);

/**
 * A consistent snapshot of the statistics.
 *
 * @param m the migration.
 * @param stats where to store it.
 *
 * Context: Any thread.  Takes and releases the migration's stats lock.
 */
void migram_migration_get_stats(MigramMigration *m,
				MigramMigrationStats *stats);

/**
 * The statistics as a JSON object (QEMU's names, in snake_case).
 *
 * @param stats a snapshot.
 * @return a new string; caller frees with g_free().
 *
 * Context: Any thread.
 */
char *migram_migration_stats_to_json(const MigramMigrationStats *stats);

/**
 * The status's name ("setup", "active", "device", "completed", "failed",
 * "cancelled", "postcopy-active", "postcopy-paused", "postcopy-recover").
 *
 * @param status the status.
 * @return a static string.
 *
 * Context: Any thread.
 */
const char *migram_migration_status_name(MigramMigrationStatus status);

/**
 * Called on every change of a migration's status (added in 0.2).
 *
 * @param m the migration.
 * @param status the new status.
 * @param opaque as given to migram_migration_set_event_callback().
 */
typedef void (*MigramMigrationEventFunc)(MigramMigration *m,
					 MigramMigrationStatus status,
					 void *opaque);

/**
 * Be told of every status change: setup, active, device,
 * postcopy-active, postcopy-paused, postcopy-recover, and one of
 * completed, failed, cancelled at the end.  @p fn runs on the migration
 * thread, right after the new status is visible to
 * migram_migration_get_stats(); it must not block for long (the migration
 * waits for it) and must not free @p m.  A setter, not a config field, so
 * MigramMigrationConfig keeps its 0.1 size.  Added in 0.2.
 *
 * @param m the migration.
 * @param fn the callback, or NULL to stop calling one.
 * @param opaque passed to @p fn.
 * @param error MIGRAM_ERROR_INVALID for a NULL @p m.
 * @return false with @p error set on bad input.
 *
 * Context: Any thread; takes and releases the stats lock.  Set it before
 * migram_migration_run() to see every change.
 */
bool migram_migration_set_event_callback(MigramMigration *m,
					 MigramMigrationEventFunc fn,
					 void *opaque, GError **error);

/**
 * An eventfd that is readable whenever a status change has been queued
 * since it was last read, for an event loop (a GSource with
 * g_source_add_unix_fd(), epoll, ...).  On readiness read the 8-byte
 * counter, then take the queued changes with
 * migram_migration_next_event() until it returns false.  Changes queued
 * before this call make the fd readable at once.  Added in 0.2.
 *
 * @param m the migration.
 * @param error MIGRAM_ERROR_INVALID for a NULL @p m, MIGRAM_ERROR_IO when
 *        eventfd() fails.
 * @return the fd (non-blocking, close-on-exec), the same on every call;
 *         borrowed: closed by migram_migration_free().  -1 on failure,
 *         with @p error set.
 *
 * Context: Any thread; takes and releases the stats lock.
 */
int migram_migration_get_event_fd(MigramMigration *m, GError **error);

/**
 * Take the oldest queued status change.  The queue holds the last 32
 * changes; if nobody takes them, the oldest are dropped (the newest, and
 * so the final status, is always kept).  Added in 0.2.
 *
 * @param m the migration.
 * @param status where the status is stored when one is taken.
 * @return true when a change was taken; false when the queue is empty
 *         (not an error) or @p m or @p status is NULL (a critical).
 *
 * Context: Any thread; takes and releases the stats lock.
 */
bool migram_migration_next_event(MigramMigration *m,
				 MigramMigrationStatus *status);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramMigration, migram_migration_free)

G_END_DECLS

#endif /* MIGRAM_SENDER_H */
