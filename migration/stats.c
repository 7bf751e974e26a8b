/* SPDX-License-Identifier: MIT */
/*
 * Migration statistics: the published snapshot and its JSON form.
 *
 * The migration thread keeps a working copy and publishes it under
 * stats_lock after every section and sync; readers copy the published
 * one under the same lock.  The hot path never takes the lock.
 */
#include <pthread.h>
#include "migram-common.h"
#include "migration-internal.h"

void migram_sender_publish(MigramMigration *m)
{
	m->st.out_of_range_marks = migram_soft_log_lost_marks(&m->source);
	m->st.transferred_bytes = m->ch ? migram_channel_bytes_sent(m->ch)
					: m->st.transferred_bytes;
	if (m->st.status != MIGRAM_MIGRATION_COMPLETED &&
	    m->st.status != MIGRAM_MIGRATION_FAILED &&
	    m->st.status != MIGRAM_MIGRATION_CANCELLED)
		m->st.total_time_ms =
			(uint64_t)(g_get_monotonic_time() - m->t_start) / 1000;
	pthread_mutex_lock(&m->stats_lock);
	m->pub = m->st;
	pthread_mutex_unlock(&m->stats_lock);
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
