/* SPDX-License-Identifier: MIT */
/* migration/ private helpers.  Never installed. */
#ifndef MIGRAM_MIGRATION_INTERNAL_H
#define MIGRAM_MIGRATION_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include "migram/stream.h"

/*
 * Whether len bytes at buf are all zero (buffer.c): zero-page detection on
 * both ends of a migration.  Any thread; reads only.
 */
bool migram_buffer_is_zero(const void *buf, size_t len);

/*
 * Convergence policy (policy.c): pure functions over what one sync saw,
 * so they can be tested without threads or a guest.
 */
typedef enum {
	POLICY_CONTINUE, /* keep iterating */
	POLICY_COMPLETE, /* what remains fits the downtime limit */
	POLICY_THROTTLE, /* slow the guest down to throttle_percent */
	POLICY_GIVE_UP,  /* not converging, nothing left to try */
} PolicyDecision;

typedef struct {
	/* configuration */
	uint64_t downtime_limit_ms;
	unsigned int stall_syncs;
	bool auto_converge;
	unsigned int throttle_initial;
	unsigned int throttle_increment;
	/* state carried from sync to sync */
	uint64_t best_remaining; /* lowest remainder seen (UINT64_MAX first) */
	unsigned int stalls;     /* syncs since best_remaining improved */
	unsigned int dirty_high; /* syncs in a row dirtying > half sent */
	unsigned int throttle_percent;
	uint64_t expected_downtime_ms;
	bool not_converging;
	/* the send rate of the latest window, and what it sends within the
	 * downtime limit (QEMU's threshold_size); 0 until a window ended */
	double window_bw;
	uint64_t threshold_bytes;
	/* the configured paused rate (bytes/s), or 0: estimate with the
	 * live rate */
	double switchover_bw;
} PolicyState;

void migram_policy_init(PolicyState *ps, uint64_t downtime_limit_ms,
			unsigned int stall_syncs, bool auto_converge,
			unsigned int throttle_initial,
			unsigned int throttle_increment);

/*
 * After a sync: remaining_bytes still dirty; in the period since the last
 * sync sent_bytes went out in period_us and dirtied_bytes were newly
 * dirtied.
 */
PolicyDecision migram_policy_after_sync(PolicyState *ps,
					uint64_t remaining_bytes,
					uint64_t sent_bytes,
					uint64_t dirtied_bytes,
					uint64_t period_us);

/*
 * A bandwidth window ended: sent_bytes went out in window_us.  Updates
 * window_bw and threshold_bytes.
 */
void migram_policy_window(PolicyState *ps, uint64_t sent_bytes,
			  uint64_t window_us);

/*
 * The configured paused rate (MigramMigrationConfig.switchover_bandwidth;
 * 0: none): the downtime estimates use it instead of measured rates.
 */
void migram_policy_set_switchover(PolicyState *ps, uint64_t bytes_per_s);

/*
 * Mid-pass: is what is left in bmap already below what the downtime limit
 * allows at the window's rate?  Then a sync is worth making now, and
 * migram_policy_mid_pass() decides on what it found.
 */
bool migram_policy_worth_sync(const PolicyState *ps, uint64_t remaining_bytes);

/*
 * After a mid-pass sync that found dirtied_bytes newly dirty while
 * sent_bytes went out since the sync before: POLICY_COMPLETE when
 * remaining_bytes fit the downtime limit at the window's rate and the
 * guest dirties at least a quarter as fast as the link drains (below
 * that, the rest of the pass goes out live and its end leaves little to
 * send paused); else POLICY_CONTINUE (stalls and throttling are judged at
 * pass ends only).
 */
PolicyDecision migram_policy_mid_pass(PolicyState *ps, uint64_t remaining_bytes,
				      uint64_t dirtied_bytes,
				      uint64_t sent_bytes);

/*
 * Sets *error (domain MIGRAM_ERROR, the given code) to "stream byte AT: "
 * followed by the formatted message, and returns false so parsers can
 * `return migram_stream_fail(...)`.  Any thread; error may be NULL.
 */
bool migram_stream_fail(GError **error, int code, uint64_t at, const char *fmt,
			...) G_GNUC_PRINTF(4, 5);
/* The same with the place named: "WHERE byte AT: message". */
bool migram_fail_vat(GError **error, int code, const char *where, uint64_t at,
		     const char *fmt, va_list ap) G_GNUC_PRINTF(5, 0);

/*
 * channel.c: reads never take more bytes from the fd than the caller asked
 * for, so another reader of the same socket (after the return path ended)
 * finds the rest.  The channel's thread, before its first read.
 */
void migram_channel_set_exact_reads(MigramChannel *ch);

/*
 * channel.c: rate-limit slices the writer moved on from so far (it slept
 * to the slice's end, or the slice had run out).  The writer's thread.
 */
uint64_t migram_channel_rate_slices(const MigramChannel *ch);

/*
 * Reader extensions for postcopy (stream-reader.c).  Same thread rules as
 * the reader itself.
 *
 * new_continued: a reader for a recovered connection, which carries no
 * header: it knows prev's page size, RAM section id and device sections.
 * new_raw: a reader for the preempt channel: RAM records only (PAGE,
 * ZERO, CONTINUE), then EOS and END.
 * accept_page_sizes: after POSTCOPY_ADVISE with huge pages, the caller
 * reads the be64 page size that follows each huge-page block's entry with
 * read_block_page_size (only the destination knows which blocks have one).
 * read_device_blob: in a device section, a be32 length (<= max) and that
 * many bytes into out.
 */
MigramStreamReader *
migram_stream_reader_new_continued(MigramChannel *ch,
				   const MigramStreamReader *prev);
MigramStreamReader *migram_stream_reader_new_raw(MigramChannel *ch,
						 uint64_t page_size);
void migram_stream_reader_accept_page_sizes(MigramStreamReader *r);
bool migram_stream_reader_read_block_page_size(MigramStreamReader *r,
					       uint64_t *page_size,
					       GError **error);
bool migram_stream_reader_read_device_blob(MigramStreamReader *r, size_t max,
					   GByteArray *out, GError **error);
MigramChannel *migram_stream_reader_channel(const MigramStreamReader *r);

/*
 * Writer extensions (stream-writer.c), same rules as the writer.  Command
 * numbers are QEMU's MIG_CMD_* (docs/wire-format.md).  A device blob is a
 * FULL section (version MIGRAM_DEVICE_BLOB_VERSION) whose body is a be32
 * length and that many bytes, then the footer.  encode_* append to a byte
 * array (the postcopy package is built in memory); eos writes a bare EOS
 * word (the end of the preempt channel); finish_postcopy writes EOF with no
 * vmdesc, as QEMU does after postcopy.
 */
enum {
	MIGRAM_CMD_OPEN_RETURN_PATH = 1,
	MIGRAM_CMD_PING = 2,
	MIGRAM_CMD_POSTCOPY_ADVISE = 3,
	MIGRAM_CMD_POSTCOPY_LISTEN = 4,
	MIGRAM_CMD_POSTCOPY_RUN = 5,
	MIGRAM_CMD_POSTCOPY_RAM_DISCARD = 6,
	MIGRAM_CMD_PACKAGED = 7,
	MIGRAM_CMD_POSTCOPY_RESUME = 9,
	MIGRAM_CMD_RECV_BITMAP = 10,
};
#define MIGRAM_DEVICE_BLOB_VERSION 1u
#define MIGRAM_DEVICE_SECTION_ID 3u
#define MIGRAM_DEVICE_BLOB_MAX (256u << 20)
#define MIGRAM_DISCARDS_PER_COMMAND 12 /* QEMU's MAX_DISCARDS_PER_COMMAND */

void migram_stream_writer_command(MigramStreamWriter *w, uint16_t cmd,
				  const void *data, uint16_t len);
void migram_stream_encode_device(GByteArray *out, const char *idstr,
				 uint32_t section_id, const void *data,
				 uint32_t len);
void migram_stream_encode_command(GByteArray *out, uint16_t cmd,
				  const void *data, uint16_t len);
void migram_stream_writer_put_raw(MigramStreamWriter *w, const void *data,
				  size_t len);
void migram_stream_writer_eos(MigramStreamWriter *w);
bool migram_stream_writer_finish_postcopy(MigramStreamWriter *w,
					  GError **error);
MigramChannel *migram_stream_writer_channel(const MigramStreamWriter *w);

/*
 * The postcopy return path (return-path.c): destination to source.
 * Readers and writers are single-threaded per channel; callers serialize.
 */
enum {
	MIGRAM_RP_SHUT = 1,         /* be32 error, 0 = clean */
	MIGRAM_RP_PONG = 2,         /* be32 value from PING */
	MIGRAM_RP_REQ_PAGES_ID = 3, /* be64 start, be32 len, u8 n, idstr */
	MIGRAM_RP_REQ_PAGES = 4,    /* be64 start, be32 len (last block) */
	MIGRAM_RP_RECV_BITMAP = 5,  /* u8 n, idstr; then the bitmap */
	MIGRAM_RP_RESUME_ACK = 6,   /* be32 1 */
};
#define MIGRAM_RP_MAX_LEN 512 /* QEMU's buffer for one message */

typedef struct {
	uint16_t type;
	uint64_t at;     /* byte offset of the message on the return path */
	uint32_t value;  /* SHUT, PONG, RESUME_ACK */
	uint64_t start;  /* REQ_PAGES*: block-relative byte offset */
	uint32_t len;    /* REQ_PAGES*: bytes */
	char idstr[256]; /* REQ_PAGES_ID, RECV_BITMAP */
} MigramRpMessage;

/* "return path byte AT: ..." (MIGRAM_ERROR_PROTOCOL); returns false. */
bool migram_rp_fail(GError **error, uint64_t at, const char *fmt, ...)
	G_GNUC_PRINTF(3, 4);
/* One message; a RECV_BITMAP's bitmap is read with read_bitmap next. */
bool migram_rp_read(MigramChannel *ch, MigramRpMessage *msg, GError **error);
/* be64 size (must be bitmap_bytes(nbits)), LE words, be64 end mark. */
bool migram_rp_read_bitmap(MigramChannel *ch, const char *idstr,
			   unsigned long *map, uint64_t nbits, GError **error);
size_t migram_rp_bitmap_bytes(uint64_t nbits);
void migram_rp_write_u32(MigramChannel *ch, uint16_t type, uint32_t value);
/* REQ_PAGES_ID when idstr is non-NULL, else REQ_PAGES. */
void migram_rp_write_req(MigramChannel *ch, const char *idstr, uint64_t start,
			 uint32_t len);
void migram_rp_write_bitmap(MigramChannel *ch, const char *idstr,
			    const unsigned long *map, uint64_t nbits);

/*
 * The sender's state (sender.c, send-pages.c, stats.c).  Everything but
 * `cancelled`, `changed`, `ch` and the published stats belongs to the
 * migration thread.
 */

#include "migram/migration.h"
#include "migram/stream.h"

typedef struct {
	MigramRamBlock *block; /* valid in read sections at `version` */
	const char *idstr;
	guint8 *host;
	unsigned long *bmap;       /* the block's: pages still to send */
	unsigned long *clear_bmap; /* the block's: chunks owing a log clear */
	unsigned long *synced;     /* ours: collected by syncs, not cleared */
	uint64_t pages;            /* used_length in target pages */
	uint64_t page_size;        /* the block's host page size, bytes */
} SendBlock;

typedef struct SrcPostcopy SrcPostcopy;

#define MIGRAM_EVENT_QUEUE 32u

struct MigramMigration {
	MigramRamList *list;
	MigramLogSource source;
	MigramMigrationConfig cfg;
	char *machine_type;
	unsigned int shift;

	GArray *blocks; /* SendBlock, in list order */
	uint64_t version;
	guint listener;
	char changed_block[256];
	int changed;   /* atomic: the list changed under the migration */
	int cancelled; /* atomic */
	/*
	 * Serializes cancel against the end of run: cancel touches the
	 * channel only while run still holds it (ch is set and cleared under
	 * the lock), so a caller may free the channel once run returned.
	 */
	pthread_mutex_t cancel_lock;
	MigramChannel *ch; /* under cancel_lock for other threads */
	MigramStreamWriter *w;

	/* page search: where the last search stopped */
	guint cur;
	uint64_t cur_page;
	bool last_stage;

	/* accounting */
	uint64_t dirty_pages;
	gint64 t_start, t_sync, t_pause;
	uint64_t sent_at_sync;
	gint64 t_window; /* the bandwidth window (policy.window_bw) */
	uint64_t sent_at_window;
	uint64_t sent_at_any_sync; /* at the last sync, mid-pass or not */
	bool quiet_pass;           /* a mid-pass sync found the guest quiet */
	uint64_t dirtied_in_period;
	PolicyState policy;
	MigramMigrationStats st; /* working copy */

	pthread_mutex_t stats_lock; /* protects pub */
	MigramMigrationStats pub;

	/* postcopy (postcopy-src.c); pc is NULL without cfg.postcopy */
	SrcPostcopy *pc;
	int postcopy_wanted;     /* atomic: start_postcopy() was called */
	bool postcopy_committed; /* the package went out: never resume */
	MigramChannel *preempt;  /* borrowed, optional */

	/* data channels (multifd-send.c); NULL without; set under
	 * cancel_lock.  mfd_seen_*: the channels' counts already in st. */
	struct MigramMultifdSend *mfd;
	uint64_t mfd_seen_pages, mfd_seen_zero, mfd_seen_bytes;

	/* status-change events (stats.c); all under stats_lock */
	MigramMigrationEventFunc event_fn;
	void *event_opaque;
	int event_fd;   /* -1 until migram_migration_get_event_fd() */
	bool event_any; /* event_last is valid */
	MigramMigrationStatus event_last;
	MigramMigrationStatus event_q[MIGRAM_EVENT_QUEUE];
	unsigned int event_head, event_len;
};

/* send-pages.c */
bool migram_sender_sync(MigramMigration *m, GError **error);
bool migram_sender_section(MigramMigration *m, bool last, bool *pass_done,
			   GError **error);
bool migram_sender_check(MigramMigration *m, GError **error);
/* Bytes written on the main channel and every data channel. */
uint64_t migram_sender_bytes_sent(MigramMigration *m);
/* Data channels (multifd): start them (setup) / a sync point / stop. */
bool migram_sender_multifd_start(MigramMigration *m, GError **error);
bool migram_sender_multifd_sync(MigramMigration *m, GError **error);
void migram_sender_multifd_stop(MigramMigration *m);
/* The next page set in bmap from (cur, cur_page), round robin; false when
 * none is left.  Migration thread, inside a read-side section. */
bool migram_sender_find_dirty(MigramMigration *m, guint *bi, uint64_t *page);

/* sender.c: append the device FULL section (nothing without save_device) */
bool migram_sender_encode_device(MigramMigration *m, GByteArray *out,
				 GError **error);

/* postcopy-src.c */
SrcPostcopy *migram_postcopy_src_new(void);
void migram_postcopy_src_free(SrcPostcopy *pc);
bool migram_postcopy_src_setup(MigramMigration *m, GError **error);
bool migram_postcopy_src_listen(MigramMigration *m, GError **error);
bool migram_postcopy_src_should_switch(MigramMigration *m);
bool migram_postcopy_src_run(MigramMigration *m, GError **error);
bool migram_postcopy_src_check(MigramMigration *m, GError **error);
bool migram_postcopy_src_precopy_done(MigramMigration *m, GError **error);
void migram_postcopy_src_cleanup(MigramMigration *m);
void migram_postcopy_src_wake(MigramMigration *m);

/* soft-log.c: the software log's out-of-range marks; 0 for any other
 * source.  Any thread. */
uint64_t migram_soft_log_lost_marks(const MigramLogSource *source);
/* dirty-log-combined.c: the sum over a combined source's children (each
 * with migram_soft_log_lost_marks()); 0 for any other source. */
uint64_t migram_combined_log_lost_marks(const MigramLogSource *source);

/* stats.c */
void migram_sender_publish(MigramMigration *m);
/* Close the event fd (migram_migration_free). */
void migram_sender_events_free(MigramMigration *m);

#endif /* MIGRAM_MIGRATION_INTERNAL_H */
