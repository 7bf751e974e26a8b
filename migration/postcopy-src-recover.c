/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the source: waiting for the return path, and recovery.
 *
 * A lost connection pauses postcopy: the migration thread stops using the
 * dead channels, waits for migram_migration_recover() (or cancel), adopts
 * the new channel, asks for every block's receivedmap (RECV_BITMAP),
 * rebuilds bmap as "not received", and resumes (POSTCOPY_RESUME, then the
 * destination's RESUME_ACK).  A recovery that loses its connection too
 * starts over.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "postcopy-src-internal.h"
#include "stream-internal.h"

static bool holds(const SrcPostcopy *pc, SrcWait what)
{
	switch (what) {
	case SRC_WAIT_RECV:
		return pc->recv_pending == 0;
	case SRC_WAIT_ACK:
		return pc->resume_acked;
	case SRC_WAIT_PONG2:
		return pc->last_pong == 2;
	case SRC_WAIT_SHUT:
		return pc->shut;
	}
	return false;
}

/*
 * Model mode (sender-env.h): the pump runs the virtual clock to the
 * message and delivers it.  Never lost: a message that does not come is
 * an error.
 */
static bool wait_virtual(MigramMigration *m, SrcPostcopy *pc, SrcWait what,
			 GError **error)
{
	MigramRpWait w = what == SRC_WAIT_SHUT    ? MIGRAM_RP_WAIT_SHUT
			 : what == SRC_WAIT_PONG2 ? MIGRAM_RP_WAIT_PONG
						  : MIGRAM_RP_WAIT_NONE;
	bool ok;

	m->env.rp_pump(m->env.opaque, w, 2);
	/* a hostile message ended the return path, as on a socket */
	if (!migram_sender_check(m, error))
		return false;
	pthread_mutex_lock(&pc->lock);
	ok = holds(pc, what);
	pthread_mutex_unlock(&pc->lock);
	if (!ok)
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "virtual return path: the destination never "
			    "sent the %s awaited",
			    what == SRC_WAIT_SHUT    ? "SHUT"
			    : what == SRC_WAIT_PONG2 ? "PONG 2"
						     : "recovery answer");
	return ok;
}

bool migram_postcopy_src_wait(MigramMigration *m, SrcWait what, bool *lost,
			      GError **error)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);
	/* The SHUT wait has the I/O timeout (completion.c).  So do the
	 * recovery handshake's: a new connection that stops moving (a black
	 * hole, found by the torture campaign C) counts as lost, and the
	 * source pauses again instead of waiting forever.  So does the
	 * switch's PONG 2: a black hole there (torture seed 83756148) left
	 * the source waiting forever with its guest paused; now it resumes
	 * the guest after io_timeout_ms and fails with "stalled". */
	bool timed = true; /* every wait: PONG 2 too (seed 83756148) */
	unsigned int ms = timed ? m->cfg.io_timeout_ms : 0;
	struct timespec until = migram_deadline_after(ms);
	bool ok, stalled = false;

	*lost = false;
	if (m->env.rp_pump)
		return wait_virtual(m, pc, what, error);
	pthread_mutex_lock(&pc->lock);
	while (!holds(pc, what) && !pc->rp_down && !pc->rp_error &&
	       !g_atomic_int_get(&m->cancelled) && !stalled) {
		if (ms)
			stalled = pthread_cond_timedwait(&pc->cond, &pc->lock,
							 &until) == ETIMEDOUT;
		else
			pthread_cond_wait(&pc->cond, &pc->lock);
	}
	ok = holds(pc, what);
	if (!ok && !pc->rp_error && !g_atomic_int_get(&m->cancelled) &&
	    (!stalled || what != SRC_WAIT_SHUT))
		*lost = true;
	pthread_mutex_unlock(&pc->lock);
	if (!ok && stalled && what == SRC_WAIT_SHUT &&
	    !g_atomic_int_get(&m->cancelled))
		return migram_sender_shut_stalled(m, ms, error);
	if (!ok && stalled && what == SRC_WAIT_PONG2 &&
	    !g_atomic_int_get(&m->cancelled)) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "return path on fd %d stalled: no PONG 2 from "
			    "the destination for %u ms while switching to "
			    "postcopy, before the destination could run: the "
			    "source keeps the guest",
			    migram_channel_fd(m->ch), ms);
		return false;
	}
	if (!ok && !*lost)
		migram_sender_check(m, error);
	return ok;
}

/* Stop using the dead connection (and end preempt: recovery goes on
 * without it). */
static void drop_connection(MigramMigration *m, SrcPostcopy *pc)
{
	shutdown(migram_channel_fd(m->ch), SHUT_RDWR);
	migram_postcopy_src_rp_stop(m);
	if (pc->pw) {
		shutdown(migram_channel_fd(m->preempt), SHUT_RDWR);
		migram_stream_writer_free(pc->pw);
		pc->pw = NULL;
		m->st.postcopy_preempt = false;
	}
}

/* Paused: the new channel from recover(), or NULL on cancel. */
static MigramChannel *wait_for_channel(MigramMigration *m, SrcPostcopy *pc)
{
	MigramChannel *ch;

	m->st.status = MIGRAM_MIGRATION_POSTCOPY_PAUSED;
	migram_sender_publish(m);
	pthread_mutex_lock(&pc->lock);
	pc->paused = true;
	pthread_mutex_unlock(&pc->lock);
	if (m->cfg.postcopy_paused)
		m->cfg.postcopy_paused(m->cfg.opaque);
	pthread_mutex_lock(&pc->lock);
	while (!pc->recover_ch && !g_atomic_int_get(&m->cancelled))
		pthread_cond_wait(&pc->cond, &pc->lock);
	ch = pc->recover_ch;
	pc->recover_ch = NULL;
	pc->paused = false;
	pthread_mutex_unlock(&pc->lock);
	return ch;
}

/* The new channel becomes the main one, with a return path of its own. */
static bool adopt_channel(MigramMigration *m, MigramChannel *ch, GError **error)
{
	pthread_mutex_lock(&m->cancel_lock);
	m->ch = ch;
	if (m->cfg.io_timeout_ms)
		migram_channel_set_io_timeout(ch, m->cfg.io_timeout_ms);
	m->preempt = NULL;
	pthread_mutex_unlock(&m->cancel_lock);
	migram_stream_writer_free(m->w);
	m->w = migram_stream_writer_new(ch);
	m->st.status = MIGRAM_MIGRATION_POSTCOPY_RECOVER;
	migram_sender_publish(m);
	return migram_postcopy_src_rp_start(m, ch, error);
}

/* Ask for every block's receivedmap. */
static void request_bitmaps(MigramMigration *m, SrcPostcopy *pc)
{
	pthread_mutex_lock(&pc->lock);
	pc->recv = g_new0(unsigned long *, m->blocks->len);
	pc->recv_pending = m->blocks->len;
	pc->resume_acked = false;
	pthread_mutex_unlock(&pc->lock);
	for (guint i = 0; i < m->blocks->len; i++) {
		const char *id = migram_sender_block(m, i)->idstr;
		guint8 buf[MIGRAM_RAM_IDSTR_MAX + 2];
		size_t n = strlen(id);

		buf[0] = (guint8)n;
		g_strlcpy((char *)buf + 1, id, sizeof(buf) - 1);
		migram_stream_writer_command(m->w, MIGRAM_CMD_RECV_BITMAP, buf,
					     (uint16_t)(n + 1));
	}
}

/* bmap = not received. */
static void rebuild_bmap(MigramMigration *m, SrcPostcopy *pc)
{
	m->dirty_pages = 0;
	for (guint i = 0; i < m->blocks->len; i++) {
		SendBlock *sb = migram_sender_block(m, i);

		migram_bitmap_clear(sb->bmap, 0, (size_t)sb->pages);
		migram_bitmap_set(sb->bmap, 0, (size_t)sb->pages);
		migram_bitmap_andnot_atomic(sb->bmap, pc->recv[i], 0,
					    (size_t)sb->pages);
		m->dirty_pages += migram_bitmap_count(sb->bmap, 0,
						      (size_t)sb->pages);
	}
}

static void free_bitmaps(MigramMigration *m, SrcPostcopy *pc)
{
	for (guint i = 0; i < m->blocks->len; i++)
		migram_bitmap_free(pc->recv[i]);
	g_clear_pointer(&pc->recv, g_free);
}

/*
 * The receivedmap handshake on the adopted channel: RECV_BITMAP for every
 * block, bmap rebuilt from the answers, POSTCOPY_RESUME, RESUME_ACK.
 * true with *lost set when this connection failed too; false on cancel or
 * a hostile message (*error set).
 */
static bool handshake(MigramMigration *m, SrcPostcopy *pc, MigramChannel *ch,
		      bool *lost, GError **error)
{
	bool ok = true;

	*lost = false;
	request_bitmaps(m, pc);
	if (!migram_channel_flush(ch, NULL)) {
		*lost = true;
	} else if (!migram_postcopy_src_wait(m, SRC_WAIT_RECV, lost, error)) {
		ok = *lost;
	} else {
		rebuild_bmap(m, pc);
		migram_stream_writer_command(m->w, MIGRAM_CMD_POSTCOPY_RESUME,
					     NULL, 0);
		if (!migram_channel_flush(ch, NULL))
			*lost = true;
		else if (!migram_postcopy_src_wait(m, SRC_WAIT_ACK, lost,
						   error) &&
			 !*lost)
			ok = false;
	}
	free_bitmaps(m, pc);
	return ok;
}

bool migram_postcopy_src_recover(MigramMigration *m, GError **error)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);

	for (;;) {
		MigramChannel *ch;
		bool lost;

		drop_connection(m, pc);
		if (!migram_sender_check(m, error))
			return false;
		ch = wait_for_channel(m, pc);
		if (!ch)
			return migram_sender_check(m, error);
		if (!adopt_channel(m, ch, error))
			return false;
		if (!handshake(m, pc, ch, &lost, error))
			return false;
		if (lost)
			continue;
		m->st.postcopy_recoveries++;
		m->st.status = MIGRAM_MIGRATION_POSTCOPY_ACTIVE;
		m->cur = 0;
		m->cur_page = 0;
		migram_sender_publish(m);
		return true;
	}
}

MIGRAM_EXPORT bool migram_migration_recover(MigramMigration *m,
					    MigramChannel *ch, GError **error)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);
	bool ok;

	if (!pc) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "recover: the migration does not advise postcopy");
		return false;
	}
	pthread_mutex_lock(&pc->lock);
	ok = pc->paused && !pc->recover_ch;
	if (ok) {
		pc->recover_ch = ch;
		pthread_cond_broadcast(&pc->cond);
	}
	pthread_mutex_unlock(&pc->lock);
	if (!ok)
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "recover: the migration is not paused in postcopy");
	return ok;
}
