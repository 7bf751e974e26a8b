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

#include <glib.h>

#include "migram/migration.h"
#include "migram/stream.h"
#include "policy.h"

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
