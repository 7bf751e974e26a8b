/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the source, shared by its files (never installed):
 *   postcopy-src.c          the sender hooks (setup, listen, check, switch
 *                           decision, run, precopy end, cleanup, wake)
 *   postcopy-src-rp.c       the return-path thread
 *   postcopy-src-switch.c   the switch: discard list and package
 *   postcopy-src-serve.c    requested pages before background ones
 *   postcopy-src-recover.c  waits on the return path, pause and recovery
 *
 * Threads.  The migration thread does everything that writes the stream
 * and owns bmap.  One return-path thread per connection reads the
 * destination's messages and hands them over under `lock`: page requests
 * into a fixed ring (`q`), received bitmaps, PONG/SHUT/RESUME_ACK values,
 * and failures.  The migration thread waits on `cond` when it needs one of
 * those; cancel() and recover() broadcast it.
 *
 * Invariant after the switch.  The guest is paused for good, so memory is
 * final and bmap holds exactly the pages the destination still needs (the
 * discard list dropped the stale copies of all of them).  A page leaves
 * bmap when it is queued to a channel.  If the connection fails, pages in
 * flight may be lost: recovery rebuilds bmap as "not in the destination's
 * receivedmap", which puts them back.  A requested page whose bit is clear
 * was already sent and is not sent twice.
 */
#ifndef MIGRAM_POSTCOPY_SRC_INTERNAL_H
#define MIGRAM_POSTCOPY_SRC_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "migram/channel.h"
#include "postcopy-src.h"
#include "sender-internal.h"

#define REQ_QUEUE_MAX 4096  /* requests waiting; more fall to background */
#define BACKGROUND_BATCH 64 /* pages between request checks */
#define RP_BLOCK_NONE G_MAXUINT

typedef struct {
	guint block;
	uint64_t page;   /* first target page */
	uint64_t npages; /* target pages */
} PageReq;

typedef struct {
	MigramMigration *m;
	MigramChannel *ch; /* owns a dup of the main channel's fd */
	pthread_t thread;
	bool running;
} RpConn;

typedef struct SrcPostcopy SrcPostcopy;

struct SrcPostcopy {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* under lock */
	PageReq q[REQ_QUEUE_MAX];
	guint q_head, q_len;
	uint64_t q_dropped;
	bool rp_down;     /* the return path ended (EOF or error) */
	GError *rp_error; /* a hostile message: fails the migration */
	bool shut;        /* SHUT received */
	uint32_t shut_code;
	bool resume_acked;
	uint32_t last_pong;
	unsigned long **recv; /* per block, RECV_BITMAP results */
	guint recv_pending;
	bool paused;
	MigramChannel *recover_ch;
	int bad; /* atomic mirror of rp_error != NULL, for the page loop */

	/* migration thread only */
	RpConn *rp;
	GHashTable *index; /* idstr (owned) -> block index + 1 */
	guint *index_vals;
	MigramStreamWriter *pw; /* preempt writer, or NULL */
	gint64 t_switch;
	guint vrp_last; /* virtual return path: the last REQ_PAGES_ID block */
};

/* The postcopy state of m, or NULL without cfg.postcopy.  Any thread. */
static inline SrcPostcopy *migram_postcopy_src_of(const MigramMigration *m)
{
	return migram_sender_hook_state(m, &migram_postcopy_src_hooks);
}

/* Migration thread unless said otherwise. */

/* postcopy-src-rp.c: start the return-path thread on a dup of main_ch's
 * socket; stop it (shut the read side, join). */
bool migram_postcopy_src_rp_start(MigramMigration *m, MigramChannel *main_ch,
				  GError **error);
void migram_postcopy_src_rp_stop(MigramMigration *m);

/* postcopy-src-switch.c: pause, final sync, discards, the package. */
bool migram_postcopy_src_switch(MigramMigration *m, GError **error);

/* postcopy-src-serve.c: one PART section (requests first, then a batch
 * of background pages); whether the connection is lost. */
bool migram_postcopy_src_section(MigramMigration *m, GError **error);
bool migram_postcopy_src_lost(MigramMigration *m);

/* postcopy-src-recover.c: wait (on cond) until the return path delivered
 * what; false when lost (*lost set) or failed or cancelled (*error
 * set).  RECV, ACK and SHUT wait at most io_timeout_ms (if set): a stalled
 * RECV or ACK is lost, a stalled SHUT an error. */
typedef enum {
	SRC_WAIT_RECV,  /* every RECV_BITMAP answered */
	SRC_WAIT_ACK,   /* RESUME_ACK */
	SRC_WAIT_PONG2, /* PONG 2 (the discards were read) */
	SRC_WAIT_SHUT,  /* SHUT */
} SrcWait;
bool migram_postcopy_src_wait(MigramMigration *m, SrcWait what, bool *lost,
			      GError **error);
/* Paused after a lost connection: wait for recover() and redo the
 * handshake on the new channel; false only on cancel or a hostile
 * message. */
bool migram_postcopy_src_recover(MigramMigration *m, GError **error);

#endif /* MIGRAM_POSTCOPY_SRC_INTERNAL_H */
