/* SPDX-License-Identifier: MIT */
/*
 * The sender's state (sender.c, send-pages.c, stats.c, and the postcopy
 * source in postcopy-src.c).  Everything but `cancelled`, `changed`, `ch`
 * and the published stats belongs to the migration thread.  Never
 * installed.
 */
#ifndef MIGRAM_SENDER_INTERNAL_H
#define MIGRAM_SENDER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <glib.h>

#include "migram/sender.h"
#include "migram/stream.h"
#include "policy.h"
#include "sender-env.h"

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

/*
 * Sender hooks: what a feature that rides on the sender core (postcopy
 * today; data channels and snapshots the same way) plugs into the core's
 * steps, so the core never names the feature.  A hook user attaches its
 * table once, in migram_migration_new() (migram_sender_attach()); every
 * entry may be NULL (nothing to do).  Tables are called in attach order
 * with the state their create() returned.  Unless said otherwise a hook
 * runs on the migration thread (the one in migram_migration_run()), with
 * no sender lock held and outside RCU read-side sections, and may use the
 * core API below.  See docs/architecture.md, "Sender core and hooks".
 *
 * create:        migram_migration_new() (the embedder's thread): the
 *                user's state, owned by the migration until destroy.
 * destroy:       migram_migration_free() (the embedder's thread).
 * setup:         run(), after the stream header, before the block list:
 *                write commands that go before the RAM, open side
 *                channels; may set the core's stream options
 *                (name_page_sizes, whole_passes).
 * listen:        run(), after the block list went out (m->blocks is
 *                filled), before the first sync: start helper threads.
 * check:         core check points (between sections, in every sync):
 *                false with *error fails the migration (a helper
 *                thread's failure surfaces here).  Must be cheap: it runs
 *                on the send path and may not allocate or lock unless it
 *                is failing.
 * should_switch: between sections and after iterating: true takes the
 *                migration over from precopy; the core stops iterating
 *                and calls this table's run instead of finishing.
 * run:           the migration after the switch: sends the rest and
 *                completes (or fails); replaces the core's finish.
 * precopy_done:  after the core finished precopy (EOF written): wait for
 *                what the destination says at the end.
 * cleanup:       run()'s end, success or not, before the core frees its
 *                blocks and writer: stop helper threads, drop channels.
 * wake:          migram_migration_cancel() (any thread), after the
 *                channels were cancelled under cancel_lock (not held
 *                now): wake the user's waits so they see `cancelled`.
 */
typedef struct {
	const char *name;
	void *(*create)(MigramMigration *m);
	void (*destroy)(void *state);
	bool (*setup)(MigramMigration *m, void *state, GError **error);
	bool (*listen)(MigramMigration *m, void *state, GError **error);
	bool (*check)(MigramMigration *m, void *state, GError **error);
	bool (*should_switch)(MigramMigration *m, void *state);
	bool (*run)(MigramMigration *m, void *state, GError **error);
	bool (*precopy_done)(MigramMigration *m, void *state, GError **error);
	void (*cleanup)(MigramMigration *m, void *state);
	void (*wake)(MigramMigration *m, void *state);
} MigramSenderHooks;

/* One attached hook user. */
typedef struct {
	const MigramSenderHooks *ops;
	void *state;
} MigramSenderHook;

#define MIGRAM_SENDER_HOOKS_MAX 4u

#define MIGRAM_EVENT_QUEUE 32u

struct MigramMigration {
	MigramRamList *list;
	MigramLogSource source;
	MigramMigrationConfig cfg;
	char *machine_type; /* cfg.machine_type points here */
	char *device_idstr; /* cfg.device_idstr points here */
	unsigned int shift;

	GArray *blocks; /* SendBlock, in list order */
	uint64_t version;
	guint listener;
	char changed_block[MIGRAM_RAM_IDSTR_MAX + 1];
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

	/* hook users (sender-hooks.c), attached in migram_migration_new()
	 * and fixed from then on: any thread may read them */
	MigramSenderHook hooks[MIGRAM_SENDER_HOOKS_MAX];
	unsigned int n_hooks;
	/* stream options a hook's setup may set */
	bool name_page_sizes; /* the block list names huge page sizes */
	bool whole_passes;    /* no mid-pass syncs: complete at pass ends */

	/* the public postcopy controls (read by the postcopy hooks) */
	int postcopy_wanted;     /* atomic: start_postcopy() was called */
	bool postcopy_committed; /* the package went out: never resume */
	bool list_held; /* migram_ram_list_hold() from the switch to cleanup */
	MigramChannel *preempt; /* borrowed, optional */

	/* clock and zero check (sender-env.h); all zero: the real ones */
	MigramSenderEnv env;

	/* data channels (multifd-send.c); NULL without; set under
	 * cancel_lock.  mfd_seen_*: the channels' counts already in st;
	 * mfd_charged: their bytes charged to m->ch's rate limit;
	 * mfd_queued: pages queued (a charge every batch). */
	struct MigramMultifdSend *mfd;
	uint64_t mfd_seen_pages, mfd_seen_zero, mfd_seen_bytes;
	uint64_t mfd_charged, mfd_queued;

	/* status-change events (stats.c); all under stats_lock */
	MigramMigrationEventFunc event_fn;
	void *event_opaque;
	int event_fd;   /* -1 until migram_migration_get_event_fd() */
	bool event_any; /* event_last is valid */
	MigramMigrationStatus event_last;
	MigramMigrationStatus event_q[MIGRAM_EVENT_QUEUE];
	unsigned int event_head, event_len;
};

/* The sender's clock (the real one unless env.clock replaces it). */
static inline gint64 migram_sender_now(const MigramMigration *m)
{
	return migram_clock_now(&m->env.clock);
}

/*
 * The core API for hook users and the core's own files.  Migration thread
 * unless said otherwise.
 */

/* sender-hooks.c: attach ops (migram_migration_new() only, before any
 * other thread sees m); its create() runs now. */
void migram_sender_attach(MigramMigration *m, const MigramSenderHooks *ops);
/* The state of the attached ops, or NULL if they are not attached.  Any
 * thread (the table is fixed once m is built). */
void *migram_sender_hook_state(const MigramMigration *m,
			       const MigramSenderHooks *ops);
/* The core's calls of every attached table's entry (see above). */
void migram_sender_hooks_destroy(MigramMigration *m);
bool migram_sender_hooks_setup(MigramMigration *m, GError **error);
bool migram_sender_hooks_listen(MigramMigration *m, GError **error);
bool migram_sender_hooks_check(MigramMigration *m, GError **error);
/* The first hook user that takes over from precopy, or NULL. */
const MigramSenderHook *migram_sender_hooks_switch(MigramMigration *m);
bool migram_sender_hooks_precopy_done(MigramMigration *m, GError **error);
void migram_sender_hooks_cleanup(MigramMigration *m);
void migram_sender_hooks_wake(MigramMigration *m);

/* The i-th block taken at setup. */
static inline SendBlock *migram_sender_block(MigramMigration *m, guint i)
{
	return &g_array_index(m->blocks, SendBlock, i);
}

/* send-pages.c: sync the log into bmap (counts dirtied_in_period); one
 * RAM section of pages (the whole rest when last); the core check points
 * (cancel, list change, then the hooks' check). */
bool migram_sender_sync(MigramMigration *m, GError **error);
/* Whether target page p of sb is zero: env.page_is_zero's answer, else
 * the page's bytes. */
bool migram_sender_page_is_zero(MigramMigration *m, SendBlock *sb, uint64_t p);
bool migram_sender_section(MigramMigration *m, bool last, bool *pass_done,
			   GError **error);
bool migram_sender_check(MigramMigration *m, GError **error);
/* The block list changed since it went out (the listener's `changed`):
 * false with MIGRAM_ERROR_INVALID naming the block.  Part of
 * migram_sender_check(), and run() asks again once precopy is done, so a
 * change during the device stage fails the migration.  Migration
 * thread; never allocates unless failing. */
bool migram_sender_check_unchanged(MigramMigration *m, GError **error);
/* Bytes written on the main channel and every data channel. */
uint64_t migram_sender_bytes_sent(MigramMigration *m);
/* Data channels (multifd): start them (setup) / a sync point / stop. */
bool migram_sender_multifd_start(MigramMigration *m, GError **error);
bool migram_sender_multifd_sync(MigramMigration *m, GError **error);
void migram_sender_multifd_stop(MigramMigration *m);
/* Charge the bytes the data channels wrote since the last call to the main
 * channel's rate limit (sleeping while over budget): max_bandwidth is the
 * migration's total.  The migration thread; no lock. */
void migram_sender_multifd_charge(MigramMigration *m);
/* completion.c: precopy's return path (config.return_path without
 * postcopy), a hook user: setup writes OPEN_RETURN_PATH after the header,
 * precopy_done waits for the destination's SHUT after EOF. */
extern const MigramSenderHooks migram_completion_hooks;
/* For pthread_cond_timedwait: CLOCK_REALTIME now + ms; and the error of a
 * postcopy SHUT wait that timed out (returns false). */
struct timespec migram_deadline_after(unsigned int ms);
bool migram_sender_shut_stalled(MigramMigration *m, unsigned int ms,
				GError **error);
/* The next page set in bmap from (cur, cur_page), round robin; false when
 * none is left.  Migration thread, inside a read-side section. */
bool migram_sender_find_dirty(MigramMigration *m, guint *bi, uint64_t *page);

/* sender.c: append the device FULL section (nothing without save_device) */
bool migram_sender_encode_device(MigramMigration *m, GByteArray *out,
				 GError **error);

/* stats.c */
void migram_sender_publish(MigramMigration *m);
/* Close the event fd (migram_migration_free). */
void migram_sender_events_free(MigramMigration *m);

#endif /* MIGRAM_SENDER_INTERNAL_H */
