/* SPDX-License-Identifier: MIT */
/* migration/ private helpers.  Never installed. */
#ifndef MIGRAM_MIGRATION_INTERNAL_H
#define MIGRAM_MIGRATION_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

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
 * Sets *error (domain MIGRAM_ERROR, the given code) to "stream byte AT: "
 * followed by the formatted message, and returns false so parsers can
 * `return migram_stream_fail(...)`.  Any thread; error may be NULL.
 */
bool migram_stream_fail(GError **error, int code, uint64_t at, const char *fmt,
			...) G_GNUC_PRINTF(4, 5);

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
} SendBlock;

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
	uint64_t dirtied_in_period;
	PolicyState policy;
	MigramMigrationStats st; /* working copy */

	pthread_mutex_t stats_lock; /* protects pub */
	MigramMigrationStats pub;
};

/* send-pages.c */
bool migram_sender_sync(MigramMigration *m, GError **error);
bool migram_sender_section(MigramMigration *m, bool last, bool *pass_done,
			   GError **error);
bool migram_sender_check(MigramMigration *m, GError **error);

/* stats.c */
void migram_sender_publish(MigramMigration *m);

#endif /* MIGRAM_MIGRATION_INTERNAL_H */
