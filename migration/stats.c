/* SPDX-License-Identifier: MIT */
/*
 * Migration statistics: the published snapshot and its JSON form; and the
 * status-change events.
 *
 * The migration thread keeps a working copy and publishes it under
 * stats_lock after every section and sync; readers copy the published
 * one under the same lock.  The hot path never takes the lock.
 *
 * Events.  Every status change goes through publish, so publish is where
 * a change is seen: under stats_lock (the snapshot with the new status is
 * already visible) it is queued and the eventfd bumped; the callback runs
 * after the lock is dropped, on the migration thread.  An embedder that
 * reads the fd and then drains the queue never misses a change: a change
 * queued after its drain bumps the fd again.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "dirty-log-internal.h"
#include "sender-internal.h"

/* Under stats_lock: queue @p s, dropping the oldest when full. */
static void event_push(MigramMigration *m, MigramMigrationStatus s)
{
	uint64_t one = 1;

	if (m->event_len == MIGRAM_EVENT_QUEUE) {
		m->event_head = (m->event_head + 1) % MIGRAM_EVENT_QUEUE;
		m->event_len--;
	}
	m->event_q[(m->event_head + m->event_len) % MIGRAM_EVENT_QUEUE] = s;
	m->event_len++;
	m->event_any = true;
	m->event_last = s;
	/* EAGAIN only at a counter of 2^64 - 2: it is readable anyway. */
	if (m->event_fd >= 0 && write(m->event_fd, &one, sizeof(one)) < 0)
		g_debug("migration event fd: %s", g_strerror(errno));
}

void migram_sender_events_free(MigramMigration *m)
{
	if (m->event_fd >= 0)
		close(m->event_fd);
	m->event_fd = -1;
}

MIGRAM_EXPORT bool
migram_migration_set_event_callback(MigramMigration *m,
				    MigramMigrationEventFunc fn, void *opaque,
				    GError **error)
{
	if (!m) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "set_event_callback: NULL migration");
		return false;
	}
	pthread_mutex_lock(&m->stats_lock);
	m->event_fn = fn;
	m->event_opaque = opaque;
	pthread_mutex_unlock(&m->stats_lock);
	return true;
}

MIGRAM_EXPORT int migram_migration_get_event_fd(MigramMigration *m,
						GError **error)
{
	int fd;

	if (!m) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "get_event_fd: NULL migration");
		return -1;
	}
	pthread_mutex_lock(&m->stats_lock);
	if (m->event_fd < 0) {
		m->event_fd = eventfd(m->event_len, EFD_CLOEXEC | EFD_NONBLOCK);
		if (m->event_fd < 0) {
			int e = errno;

			pthread_mutex_unlock(&m->stats_lock);
			migram_error_errno(error, MIGRAM_ERROR_IO, e,
					   "eventfd");
			return -1;
		}
	}
	fd = m->event_fd;
	pthread_mutex_unlock(&m->stats_lock);
	return fd;
}

MIGRAM_EXPORT bool migram_migration_next_event(MigramMigration *m,
					       MigramMigrationStatus *status)
{
	bool got = false;

	g_return_val_if_fail(m != NULL && status != NULL, false);
	pthread_mutex_lock(&m->stats_lock);
	if (m->event_len) {
		*status = m->event_q[m->event_head];
		m->event_head = (m->event_head + 1) % MIGRAM_EVENT_QUEUE;
		m->event_len--;
		got = true;
	}
	pthread_mutex_unlock(&m->stats_lock);
	return got;
}

void migram_sender_publish(MigramMigration *m)
{
	MigramMigrationEventFunc fn = NULL;
	void *opaque = NULL;
	bool changed;

	m->st.out_of_range_marks = migram_soft_log_lost_marks(&m->source);
	m->st.transferred_bytes = m->ch ? migram_sender_bytes_sent(m)
					: m->st.transferred_bytes;
	if (m->st.status != MIGRAM_MIGRATION_COMPLETED &&
	    m->st.status != MIGRAM_MIGRATION_FAILED &&
	    m->st.status != MIGRAM_MIGRATION_CANCELLED)
		m->st.total_time_ms =
			(uint64_t)(migram_sender_now(m) - m->t_start) / 1000;
	pthread_mutex_lock(&m->stats_lock);
	m->pub = m->st;
	changed = !m->event_any || m->event_last != m->st.status;
	if (changed) {
		event_push(m, m->st.status);
		fn = m->event_fn;
		opaque = m->event_opaque;
	}
	pthread_mutex_unlock(&m->stats_lock);
	if (fn)
		fn(m, m->st.status, opaque);
}

MIGRAM_EXPORT void migram_migration_get_stats(MigramMigration *m,
					      MigramMigrationStats *stats)
{
	pthread_mutex_lock(&m->stats_lock);
	*stats = m->pub;
	pthread_mutex_unlock(&m->stats_lock);
}

MIGRAM_EXPORT const char *
migram_migration_status_name(MigramMigrationStatus status)
{
	switch (status) {
	case MIGRAM_MIGRATION_SETUP:
		return "setup";
	case MIGRAM_MIGRATION_ACTIVE:
		return "active";
	case MIGRAM_MIGRATION_DEVICE:
		return "device";
	case MIGRAM_MIGRATION_COMPLETED:
		return "completed";
	case MIGRAM_MIGRATION_FAILED:
		return "failed";
	case MIGRAM_MIGRATION_CANCELLED:
		return "cancelled";
	case MIGRAM_MIGRATION_POSTCOPY_ACTIVE:
		return "postcopy-active";
	case MIGRAM_MIGRATION_POSTCOPY_PAUSED:
		return "postcopy-paused";
	case MIGRAM_MIGRATION_POSTCOPY_RECOVER:
		return "postcopy-recover";
	}
	return "unknown";
}

MIGRAM_EXPORT char *
migram_migration_stats_to_json(const MigramMigrationStats *s)
{
	GString *j = g_string_new("{");
	char num[G_ASCII_DTOSTR_BUF_SIZE];

	g_string_append_printf(j, "\"status\": \"%s\"",
			       migram_migration_status_name(s->status));
#define U64(name, field)                                                       \
	g_string_append_printf(j, ", \"" name "\": %" G_GUINT64_FORMAT,        \
			       (guint64)(s->field))
	U64("total", total_bytes);
	U64("transferred", transferred_bytes);
	U64("remaining", remaining_bytes);
	U64("duplicate", duplicate_pages);
	U64("normal", normal_pages);
	U64("normal_bytes", normal_bytes);
	U64("dirty_sync_count", dirty_sync_count);
	U64("dirty_pages_rate", dirty_pages_rate);
	U64("dirty_bytes_rate", dirty_bytes_rate);
	U64("expected_downtime", expected_downtime_ms);
	U64("downtime", downtime_ms);
	U64("setup_time", setup_time_ms);
	U64("total_time", total_time_ms);
	U64("iterations", iterations);
	U64("log_clear_calls", log_clear_calls);
	U64("log_clear_pages", log_clear_pages);
	U64("throttle_percent", throttle_percent);
	U64("postcopy_requests", postcopy_requests);
	U64("postcopy_urgent_pages", postcopy_urgent_pages);
	U64("postcopy_requests_already_sent", postcopy_requests_already_sent);
	U64("postcopy_requests_overflowed", postcopy_requests_overflowed);
	U64("postcopy_background_pages", postcopy_background_pages);
	U64("postcopy_discard_ranges", postcopy_discard_ranges);
	U64("postcopy_discard_pages", postcopy_discard_pages);
	U64("postcopy_time", postcopy_time_ms);
	U64("postcopy_recoveries", postcopy_recoveries);
	U64("out_of_range_marks", out_of_range_marks);
	U64("downtime_pause_us", downtime_pause_us);
	U64("downtime_sync_us", downtime_sync_us);
	U64("downtime_pages_us", downtime_pages_us);
	U64("downtime_device_us", downtime_device_us);
	U64("log_sync_us", log_sync_us);
	U64("log_clear_us", log_clear_us);
#undef U64
	g_string_append_printf(j, ", \"postcopy_preempt\": %s",
			       s->postcopy_preempt ? "true" : "false");
	/* Locale-independent: a decimal comma would break the JSON. */
	g_string_append_printf(j, ", \"mbps\": %s",
			       g_ascii_formatd(num, sizeof(num), "%.3f",
					       s->mbps));
	g_string_append_printf(j, ", \"not_converging\": %s}",
			       s->not_converging ? "true" : "false");
	return g_string_free(j, FALSE);
}
