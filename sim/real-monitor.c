/* SPDX-License-Identifier: MIT */
/*
 * Real mode: the monitor thread (injected disconnects, the postcopy
 * switch announcement, progress) and the report's figures.
 */
#include "real-internal.h"

/* --inject-disconnect-after: cut main that long into postcopy, once. */
static void maybe_cut(Monitor *mon, const MigramMigrationStats *st, gint64 now,
		      gint64 *t_active, bool *cut)
{
	if (!mon->opt->inject_disconnect_ms || *cut ||
	    st->status != MIGRAM_MIGRATION_POSTCOPY_ACTIVE)
		return;
	if (!*t_active)
		*t_active = now;
	if ((uint64_t)(now - *t_active) / 1000 < mon->opt->inject_disconnect_ms)
		return;
	shutdown(g_atomic_int_get(&mon->main_fd), SHUT_RDWR);
	*cut = true;
}

/* Two processes (--role): say when postcopy begins; true once said. */
static bool announce_switch(const SimOptions *opt, gint64 at_us)
{
	if (opt->role && !opt->quiet)
		fprintf(stderr,
			"migram-sim: source: switched to postcopy at %.1f s; "
			"the guest runs on the destination\n",
			(double)at_us / 1e6);
	return true;
}

gpointer real_monitor_main(gpointer p)
{
	Monitor *mon = p;
	uint64_t last_bytes = 0;
	gint64 last_t = mon->t0, t_active = 0;
	bool cut = false, switched = false;

	while (!g_atomic_int_get(&mon->done)) {
		MigramMigrationStats st;
		SimSample s;
		gint64 now;

		g_usleep(mon->opt->inject_disconnect_ms ? 5 * 1000
							: 100 * 1000);
		migram_migration_get_stats(mon->m, &st);
		now = g_get_monotonic_time();
		maybe_cut(mon, &st, now, &t_active, &cut);
		if (!switched && st.status >= MIGRAM_MIGRATION_POSTCOPY_ACTIVE)
			switched = announce_switch(mon->opt, now - mon->t0);
		if (mon->opt->inject_disconnect_ms && now - last_t < 100000)
			continue;
		s = (SimSample){
			.t = (double)(now - mon->t0) / 1e6,
			.remaining_pages = st.remaining_bytes / PAGE,
			.dirty_rate = st.dirty_bytes_rate,
			.bandwidth =
				(double)(st.transferred_bytes - last_bytes) *
				1e6 / (double)MAX(now - last_t, 1),
			.pages_sent = st.normal_pages + st.duplicate_pages,
			.pass = st.iterations,
			/* measured at the sync that ends a pass */
			.dirty_rate_known = st.iterations > 0,
			.paused = st.status == MIGRAM_MIGRATION_DEVICE,
			.postcopy = switched,
		};
		last_bytes = st.transferred_bytes;
		last_t = now;
		if (s.paused && mon->rep->pause_at < 0)
			mon->rep->pause_at = s.t;
		g_array_append_val(mon->rep->timeline, s);
		sim_progress(mon->opt, migram_migration_status_name(st.status),
			     &s, st.iterations);
	}
	sim_progress_done(mon->opt);
	return NULL;
}

void real_fill_report(SimReport *rep, const MigramMigrationStats *st)
{
	g_strlcpy(rep->status, migram_migration_status_name(st->status),
		  sizeof(rep->status));
	rep->total_bytes = st->total_bytes;
	rep->transferred_bytes = st->transferred_bytes;
	rep->normal_pages = st->normal_pages;
	rep->duplicate_pages = st->duplicate_pages;
	rep->dirty_sync_count = st->dirty_sync_count;
	rep->iterations = st->iterations;
	rep->log_clear_calls = st->log_clear_calls;
	rep->downtime_ms = st->downtime_ms;
	rep->downtime_parts_us[0] = st->downtime_pause_us;
	rep->downtime_parts_us[1] = st->downtime_sync_us;
	rep->downtime_parts_us[2] = st->downtime_pages_us;
	rep->downtime_parts_us[3] = st->downtime_device_us;
	rep->log_sync_us = st->log_sync_us;
	rep->log_clear_us = st->log_clear_us;
	rep->setup_time_ms = st->setup_time_ms;
	rep->total_time_ms = st->total_time_ms;
	rep->mbps = st->mbps;
	rep->throttle_percent = st->throttle_percent;
	rep->postcopy_time_ms = st->postcopy_time_ms;
	rep->postcopy_requests = st->postcopy_requests;
	rep->postcopy_urgent_pages = st->postcopy_urgent_pages;
	rep->postcopy_recoveries = st->postcopy_recoveries;
	rep->discard_pages = st->postcopy_discard_pages;
}
