/* SPDX-License-Identifier: MIT */
/*
 * The precopy sender: setup, the iteration loop, convergence, the final
 * pause and cleanup.  The page path is in send-pages.c, the convergence
 * decisions in policy.c, the statistics in stats.c.
 *
 * Threads.  Everything runs on the caller's (migration) thread.  Other
 * threads touch only: `cancelled` and the channel's cancel (cancel), the
 * published stats under stats_lock (get_stats), and `changed` /
 * `changed_block` from the list listener, which runs on whichever thread
 * updates the list (with the list mutex held).
 *
 * Block pointers in `blocks` were taken at setup.  They are used only
 * inside read-side sections that first check the list version is still
 * the one seen at setup: a removal bumps the version before it waits for
 * readers, so an unchanged version means no block was freed (the same
 * argument as the receiver's block cache).
 */
#include <pthread.h>
#include <string.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "device-sections.h"
#include "policy.h"
#include "postcopy-src.h"
#include "sender-internal.h"
#include "stream-internal.h"
#include "multifd.h"

#define DEFAULT_DOWNTIME_MS 300
#define DEFAULT_STALL_SYNCS 8

MIGRAM_EXPORT MigramMigration *
migram_migration_new(MigramRamList *list, const MigramLogSource *source,
		     const MigramMigrationConfig *config)
{
	MigramMigration *m;

	/* Programming errors: checked before anything is allocated. */
	g_return_val_if_fail(list != NULL, NULL);
	g_return_val_if_fail(source != NULL && source->ops != NULL, NULL);
	g_return_val_if_fail(config != NULL, NULL);
	m = g_new0(MigramMigration, 1);
	m->list = list;
	m->source = *source;
	m->cfg = *config;
	/* The config's strings are copied (migration.h). */
	m->machine_type = g_strdup(config->machine_type ? config->machine_type
							: "none");
	m->device_idstr = g_strdup(config->device_idstr ? config->device_idstr
							: "migram-device");
	m->cfg.machine_type = m->machine_type;
	m->cfg.device_idstr = m->device_idstr;
	if (!m->cfg.downtime_limit_ms)
		m->cfg.downtime_limit_ms = DEFAULT_DOWNTIME_MS;
	if (!m->cfg.stall_syncs)
		m->cfg.stall_syncs = DEFAULT_STALL_SYNCS;
	if (!m->cfg.throttle_initial)
		m->cfg.throttle_initial = 20;
	if (!m->cfg.throttle_increment)
		m->cfg.throttle_increment = 10;
	m->shift = m->cfg.clear_bmap_shift_set
			   ? m->cfg.clear_bmap_shift
			   : MIGRAM_CLEAR_BMAP_SHIFT_DEFAULT;
	m->blocks = g_array_new(FALSE, TRUE, sizeof(SendBlock));
	pthread_mutex_init(&m->stats_lock, NULL);
	pthread_mutex_init(&m->cancel_lock, NULL);
	m->event_fd = -1;
	/* Hook users: postcopy, or precopy's acknowledged completion. */
	if (m->cfg.postcopy)
		migram_sender_attach(m, &migram_postcopy_src_hooks);
	else if (m->cfg.return_path)
		migram_sender_attach(m, &migram_completion_hooks);
	return m;
}

MIGRAM_EXPORT void migram_migration_free(MigramMigration *m)
{
	if (!m)
		return;
	g_array_unref(m->blocks);
	migram_sender_hooks_destroy(m);
	migram_sender_events_free(m);
	pthread_mutex_destroy(&m->stats_lock);
	pthread_mutex_destroy(&m->cancel_lock);
	g_free(m->machine_type);
	g_free(m->device_idstr);
	g_free(m);
}

MIGRAM_EXPORT void migram_migration_cancel(MigramMigration *m)
{
	pthread_mutex_lock(&m->cancel_lock);
	g_atomic_int_set(&m->cancelled, 1);
	if (m->ch)
		migram_channel_cancel(m->ch);
	if (m->preempt && m->ch)
		migram_channel_cancel(m->preempt);
	if (m->mfd) /* multifd */
		migram_multifd_send_cancel(m->mfd);
	pthread_mutex_unlock(&m->cancel_lock);
	migram_sender_hooks_wake(m);
}

MIGRAM_EXPORT void migram_migration_set_preempt(MigramMigration *m,
						MigramChannel *preempt)
{
	m->preempt = preempt;
}

void migram_migration_set_env(MigramMigration *m, const MigramSenderEnv *env)
{
	m->env = *env;
}

MIGRAM_EXPORT void migram_migration_start_postcopy(MigramMigration *m)
{
	g_atomic_int_set(&m->postcopy_wanted, 1);
}

/* Any list change fails the migration; remember the first block named. */
static void on_list_change(MigramRamList *list, MigramRamEvent event,
			   MigramRamBlock *block, void *opaque)
{
	MigramMigration *m = opaque;

	(void)list;
	(void)event;
	if (g_atomic_int_get(&m->changed))
		return;
	g_strlcpy(m->changed_block, migram_ram_block_idstr(block),
		  sizeof(m->changed_block));
	g_atomic_int_set(&m->changed, 1);
}

/* Start the log of one block taken at setup; false with *error set. */
static bool start_block(MigramMigration *m, const SendBlock *sb, GError **error)
{
	if (!sb->synced) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "ramblock '%s': cannot allocate the sync bitmap "
			    "for %" G_GUINT64_FORMAT " pages",
			    sb->idstr,
			    migram_ram_block_max_length(sb->block) /
				    MIGRAM_TARGET_PAGE_SIZE);
		return false;
	}
	if (!sb->bmap) {
		/* Added after bitmaps_init: the listener saw it too. */
		g_atomic_int_set(&m->changed, 1);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "ramblock '%s' changed during migration",
			    sb->idstr);
		return false;
	}
	return m->source.ops->start(m->source.opaque, sb->block, error);
}

static bool start_blocks(MigramMigration *m, GError **error)
{
	GArray *list = g_array_new(FALSE, FALSE, sizeof(MigramStreamBlock));
	bool ok = true;

	migram_rcu_read_lock();
	m->version = migram_ram_list_version(m->list);
	for (MigramRamBlock *b = migram_ram_list_next_migratable(m->list, NULL);
	     b && ok; b = migram_ram_list_next_migratable(m->list, b)) {
		SendBlock sb = {
			.block = b,
			.idstr = migram_ram_block_idstr(b),
			.host = migram_ram_block_host(b),
			.bmap = migram_ram_block_bmap(b),
			.clear_bmap = migram_ram_block_clear_bmap(b),
			.pages = migram_ram_block_used_length(b) /
				 MIGRAM_TARGET_PAGE_SIZE,
			.page_size = migram_ram_block_page_size(b),
		};
		MigramStreamBlock wb = { sb.idstr,
					 migram_ram_block_used_length(b), 0 };

		/* Postcopy streams name huge page sizes (QEMU's rule). */
		if (m->name_page_sizes &&
		    sb.page_size != MIGRAM_TARGET_PAGE_SIZE)
			wb.page_size = sb.page_size;

		sb.synced = migram_bitmap_new(
			(size_t)(migram_ram_block_max_length(b) /
				 MIGRAM_TARGET_PAGE_SIZE));
		g_array_append_val(m->blocks, sb);
		g_array_append_val(list, wb);
		m->dirty_pages += sb.pages;
		m->st.total_bytes += wb.used_length;
		ok = start_block(m, &sb, error);
	}
	if (ok)
		migram_stream_writer_ram_start(m->w,
					       (MigramStreamBlock *)list->data,
					       list->len);
	migram_rcu_read_unlock();
	g_array_unref(list);
	if (ok && m->version != migram_ram_list_version(m->list))
		g_atomic_int_set(&m->changed, 1);
	return ok && migram_sender_check(m, error);
}

static bool setup(MigramMigration *m, GError **error)
{
	m->listener = migram_ram_list_add_listener(m->list, on_list_change, m);
	if (!migram_ram_list_bitmaps_init(m->list, m->shift, error))
		return false;
	migram_channel_set_rate_limit(m->ch, m->cfg.max_bandwidth);
	m->w = migram_stream_writer_new(m->ch);
	if (!migram_sender_multifd_start(m, error)) /* multifd */
		return false;
	migram_stream_writer_begin(m->w, m->machine_type);
	if (!migram_sender_hooks_setup(m, error))
		return false;
	/* multifd: the START section's EOS is a sync point too */
	if (!start_blocks(m, error) || !migram_sender_multifd_sync(m, error) ||
	    !migram_sender_hooks_listen(m, error) ||
	    !migram_sender_sync(m, error))
		return false;
	/* bmap started all set: the first sync's finds are not new. */
	m->dirtied_in_period = 0;
	m->t_sync = migram_sender_now(m);
	m->sent_at_sync = migram_sender_bytes_sent(m);
	m->st.setup_time_ms = (uint64_t)(m->t_sync - m->t_start) / 1000;
	return migram_channel_flush(m->ch, error);
}

static void cleanup(MigramMigration *m)
{
	migram_sender_hooks_cleanup(m);
	migram_sender_multifd_stop(m); /* multifd */
	if (m->listener)
		migram_ram_list_remove_listener(m->list, m->listener);
	if (m->list_held) {
		migram_ram_list_release(m->list);
		m->list_held = false;
	}
	migram_rcu_read_lock();
	if (migram_ram_list_version(m->list) == m->version) {
		for (guint i = 0; i < m->blocks->len; i++)
			m->source.ops->stop(
				m->source.opaque,
				g_array_index(m->blocks, SendBlock, i).block);
	}
	migram_rcu_read_unlock();
	for (guint i = 0; i < m->blocks->len; i++)
		migram_bitmap_free(
			g_array_index(m->blocks, SendBlock, i).synced);
	g_array_set_size(m->blocks, 0);
	migram_ram_list_bitmaps_free(m->list);
	migram_stream_writer_free(m->w);
	m->w = NULL;
}

/* After a pass: sync, account the period, decide. */
static bool after_pass(MigramMigration *m, bool *complete, GError **error)
{
	gint64 now;
	uint64_t sent, period;
	PolicyDecision d;

	m->st.iterations++;
	m->quiet_pass = false;
	if (!migram_sender_sync(m, error))
		return false;
	now = migram_sender_now(m);
	period = (uint64_t)MAX(now - m->t_sync, 1);
	sent = migram_sender_bytes_sent(m) - m->sent_at_sync;
	m->st.dirty_pages_rate = m->dirtied_in_period * G_USEC_PER_SEC / period;
	m->st.dirty_bytes_rate = m->st.dirty_pages_rate *
				 MIGRAM_TARGET_PAGE_SIZE;
	m->st.mbps = (double)sent * 8.0 / (double)period;
	m->st.remaining_bytes = m->dirty_pages * MIGRAM_TARGET_PAGE_SIZE;
	d = migram_policy_after_sync(&m->policy, m->st.remaining_bytes, sent,
				     m->dirtied_in_period *
					     MIGRAM_TARGET_PAGE_SIZE,
				     period);
	m->st.expected_downtime_ms = m->policy.expected_downtime_ms;
	m->st.not_converging = m->policy.not_converging;
	m->dirtied_in_period = 0;
	m->t_sync = now;
	m->sent_at_sync = m->sent_at_any_sync = migram_sender_bytes_sent(m);
	switch (d) {
	case POLICY_COMPLETE:
		*complete = true;
		return true;
	case POLICY_THROTTLE:
		m->st.throttle_percent = m->policy.throttle_percent;
		if (m->cfg.throttle_guest)
			m->cfg.throttle_guest(m->cfg.opaque,
					      m->policy.throttle_percent);
		return true;
	case POLICY_GIVE_UP:
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_CONVERGED,
			    "migration does not converge: %" G_GUINT64_FORMAT
			    " bytes still dirty after %u syncs without "
			    "progress (%" G_GUINT64_FORMAT
			    " ms expected downtime, limit %" G_GUINT64_FORMAT
			    " ms)",
			    m->st.remaining_bytes, m->cfg.stall_syncs,
			    m->st.expected_downtime_ms,
			    m->cfg.downtime_limit_ms);
		return false;
	default:
		return true;
	}
}

#define WINDOW_US ((gint64)100 * 1000) /* QEMU's BUFFER_DELAY */

/*
 * Between sections: close the bandwidth window every 100 ms, and sync
 * mid-pass once what is left may fit the downtime limit (policy.c).
 */
static bool mid_pass(MigramMigration *m, bool *complete, GError **error)
{
	gint64 now = migram_sender_now(m);
	uint64_t sent = migram_sender_bytes_sent(m), fresh;

	if (now - m->t_window >= WINDOW_US) {
		migram_policy_window(&m->policy, sent - m->sent_at_window,
				     (uint64_t)(now - m->t_window));
		m->t_window = now;
		m->sent_at_window = sent;
	}
	/* A planned switch (hybrid) keeps its passes: it completes in
	 * precopy only at a pass's end, as before. */
	if (m->whole_passes || m->quiet_pass ||
	    !migram_policy_worth_sync(&m->policy,
				      m->dirty_pages * MIGRAM_TARGET_PAGE_SIZE))
		return true;
	fresh = m->dirtied_in_period;
	if (!migram_sender_sync(m, error))
		return false;
	fresh = m->dirtied_in_period - fresh;
	m->st.remaining_bytes = m->dirty_pages * MIGRAM_TARGET_PAGE_SIZE;
	*complete = migram_policy_mid_pass(&m->policy, m->st.remaining_bytes,
					   fresh * MIGRAM_TARGET_PAGE_SIZE,
					   sent - m->sent_at_any_sync) ==
		    POLICY_COMPLETE;
	/* A quiet guest: no more mid-pass syncs until the pass ends (each
	 * would owe every chunk a clear for nothing). */
	m->quiet_pass = !*complete &&
			m->st.remaining_bytes <= m->policy.threshold_bytes;
	m->sent_at_any_sync = sent;
	m->st.expected_downtime_ms = m->policy.expected_downtime_ms;
	return true;
}

static bool iterate(MigramMigration *m, GError **error)
{
	bool complete = false, pass_done;

	m->t_window = migram_sender_now(m);
	m->sent_at_window = m->sent_at_any_sync = migram_sender_bytes_sent(m);
	while (!complete) {
		if (!migram_sender_check(m, error))
			return false;
		if (migram_sender_hooks_switch(m))
			return true;
		if (m->cfg.max_time_ms &&
		    (uint64_t)(migram_sender_now(m) - m->t_start) / 1000 >
			    m->cfg.max_time_ms) {
			g_set_error(
				error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_CONVERGED,
				"migration did not finish within %" G_GUINT64_FORMAT
				" ms (%" G_GUINT64_FORMAT " bytes still dirty)",
				m->cfg.max_time_ms, m->st.remaining_bytes);
			return false;
		}
		if (!migram_sender_section(m, false, &pass_done, error))
			return false;
		if (pass_done && !after_pass(m, &complete, error))
			return false;
		if (!pass_done && !mid_pass(m, &complete, error))
			return false;
		migram_sender_publish(m);
	}
	return true;
}

/* The device state: the single blob (if any), then the named sections. */
bool migram_sender_encode_device(MigramMigration *m, GByteArray *out,
				 GError **error)
{
	g_autoptr(GByteArray) blob = NULL;

	if (!m->cfg.save_device)
		return migram_device_sections_encode(m->cfg.device_sections,
						     m->cfg.n_device_sections,
						     out, error);
	blob = g_byte_array_new();
	if (!m->cfg.save_device(m->cfg.opaque, blob, error))
		return false;
	if (blob->len > MIGRAM_DEVICE_BLOB_MAX) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "device state of %u bytes (at most %u)", blob->len,
			    MIGRAM_DEVICE_BLOB_MAX);
		return false;
	}
	migram_stream_encode_device(out, m->device_idstr,
				    MIGRAM_DEVICE_SECTION_ID, blob->data,
				    blob->len);
	return migram_device_sections_encode(m->cfg.device_sections,
					     m->cfg.n_device_sections, out,
					     error);
}

static bool save_device(MigramMigration *m, GError **error)
{
	g_autoptr(GByteArray) enc = g_byte_array_new();

	if (!migram_sender_encode_device(m, enc, error))
		return false;
	migram_stream_writer_put_raw(m->w, enc->data, enc->len);
	return true;
}

/* Pause, final sync, everything left in the END section, EOF. */
static bool finish(MigramMigration *m, GError **error)
{
	bool pass_done;

	m->st.status = MIGRAM_MIGRATION_DEVICE;
	migram_sender_publish(m);
	gint64 t[5];

	/* the downtime starts with the request to stop, as QEMU's */
	m->t_pause = t[0] = migram_sender_now(m);
	m->cfg.pause_guest(m->cfg.opaque);
	t[1] = migram_sender_now(m);
	m->last_stage = true;
	migram_channel_set_rate_limit(m->ch, 0);
	if (!migram_sender_sync(m, error))
		return false;
	t[2] = migram_sender_now(m);
	if (!migram_sender_section(m, true, &pass_done, error))
		return false;
	t[3] = migram_sender_now(m);
	if (!save_device(m, error) || !migram_stream_writer_finish(m->w, error))
		return false;
	t[4] = migram_sender_now(m);
	m->st.downtime_pause_us = (uint64_t)(t[1] - t[0]);
	m->st.downtime_sync_us = (uint64_t)(t[2] - t[1]);
	m->st.downtime_pages_us = (uint64_t)(t[3] - t[2]);
	m->st.downtime_device_us = (uint64_t)(t[4] - t[3]);
	m->st.downtime_ms = (uint64_t)(t[4] - t[0]) / 1000;
	return true;
}

/*
 * Auto-converge throttled the guest: let it run at full speed again.  QEMU
 * does the same whatever the outcome (completed, failed, cancelled, after
 * postcopy); st.throttle_percent keeps the last value applied.
 */
static void lift_throttle(MigramMigration *m)
{
	if (m->policy.throttle_percent && m->cfg.throttle_guest)
		m->cfg.throttle_guest(m->cfg.opaque, 0);
	m->policy.throttle_percent = 0;
}

MIGRAM_EXPORT bool migram_migration_run(MigramMigration *m, MigramChannel *ch,
					GError **error)
{
	GError *err = NULL;
	bool ok;

	g_return_val_if_fail(m != NULL && ch != NULL, false);
	MIGRAM_ASSERT_NOT_RCU_READER();
	if (!m->cfg.pause_guest) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "migration config lacks the required pause_guest "
			    "callback");
		return false;
	}
	m->t_start = migram_sender_now(m);
	pthread_mutex_lock(&m->cancel_lock);
	m->ch = ch;
	if (m->cfg.io_timeout_ms) {
		migram_channel_set_io_timeout(ch, m->cfg.io_timeout_ms);
		if (m->preempt)
			migram_channel_set_io_timeout(m->preempt,
						      m->cfg.io_timeout_ms);
	}
	if (g_atomic_int_get(&m->cancelled))
		migram_channel_cancel(ch);
	pthread_mutex_unlock(&m->cancel_lock);
	migram_policy_init(&m->policy, m->cfg.downtime_limit_ms,
			   m->cfg.stall_syncs, m->cfg.auto_converge,
			   m->cfg.throttle_initial, m->cfg.throttle_increment);
	migram_policy_set_switchover(&m->policy, m->cfg.switchover_bandwidth);
	m->st.status = MIGRAM_MIGRATION_SETUP;
	migram_sender_publish(m);

	ok = setup(m, &err);
	if (ok) {
		const MigramSenderHook *taker;

		m->st.status = MIGRAM_MIGRATION_ACTIVE;
		ok = iterate(m, &err);
		taker = ok ? migram_sender_hooks_switch(m) : NULL;
		if (taker)
			ok = taker->ops->run(m, taker->state, &err);
		else if (ok)
			ok = finish(m, &err) &&
			     migram_sender_hooks_precopy_done(m, &err) &&
			     migram_sender_check_unchanged(m, &err);
	}
	/* A source's op that failed without saying why still gets a reason. */
	if (!ok && !err)
		g_set_error(&err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "migration failed without a reason (a dirty-log "
			    "source or callback returned false without setting "
			    "its error)");
	/* After the package the destination runs: never resume here. */
	if (!ok && m->t_pause && m->cfg.resume_guest && !m->postcopy_committed)
		m->cfg.resume_guest(m->cfg.opaque);
	cleanup(m);
	lift_throttle(m);
	m->st.status = ok ? MIGRAM_MIGRATION_COMPLETED
		       : g_error_matches(err, MIGRAM_ERROR,
					 MIGRAM_ERROR_CANCELLED)
			       ? MIGRAM_MIGRATION_CANCELLED
			       : MIGRAM_MIGRATION_FAILED;
	m->st.total_time_ms = (uint64_t)(migram_sender_now(m) - m->t_start) /
			      1000;
	migram_sender_publish(m);
	pthread_mutex_lock(&m->cancel_lock);
	m->ch = NULL;
	pthread_mutex_unlock(&m->cancel_lock);
	if (err)
		g_propagate_error(error, err);
	return ok;
}
