/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the source: the sender hooks (postcopy-src.h).  The other
 * jobs are in postcopy-src-{rp,switch,serve,recover}.c.
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
#include <sys/socket.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/migram.h"
#include "postcopy-src-internal.h"
#include "stream-internal.h"

static void *src_create(MigramMigration *m)
{
	SrcPostcopy *pc = g_new0(SrcPostcopy, 1);

	(void)m;
	pthread_mutex_init(&pc->lock, NULL);
	pthread_cond_init(&pc->cond, NULL);
	return pc;
}

static void src_destroy(void *state)
{
	SrcPostcopy *pc = state;

	g_clear_error(&pc->rp_error);
	pthread_mutex_destroy(&pc->lock);
	pthread_cond_destroy(&pc->cond);
	g_free(pc);
}

static void src_wake(MigramMigration *m, void *state)
{
	SrcPostcopy *pc = state;

	(void)m;
	pthread_mutex_lock(&pc->lock);
	pthread_cond_broadcast(&pc->cond);
	pthread_mutex_unlock(&pc->lock);
}

static bool is_socket(MigramChannel *ch)
{
	int type;
	socklen_t len = sizeof(type);

	return getsockopt(migram_channel_fd(ch), SOL_SOCKET, SO_TYPE, &type,
			  &len) == 0;
}

/* After the header: return path, PING(1), ADVISE; the RP thread. */
static bool src_setup(MigramMigration *m, void *state, GError **error)
{
	SrcPostcopy *pc = state;
	uint64_t summary = MIGRAM_TARGET_PAGE_SIZE, advise[2];
	uint32_t one = GUINT32_TO_BE(1);

	/* a virtual return path (model mode) needs no socket */
	if (!m->env.rp_pump && !is_socket(m->ch)) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			    "postcopy needs a socket (the return path flows "
			    "back on it); fd %d is not one",
			    migram_channel_fd(m->ch));
		return false;
	}
	if (m->preempt && !is_socket(m->preempt)) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			    "the postcopy preempt channel must be a socket");
		return false;
	}
	pc->index = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
					  NULL);
	migram_rcu_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next_migratable(m->list, NULL);
	     b; b = migram_ram_list_next_migratable(m->list, b))
		summary |= migram_ram_block_page_size(b);
	migram_rcu_read_unlock();
	advise[0] = GUINT64_TO_BE(summary);
	advise[1] = GUINT64_TO_BE((uint64_t)MIGRAM_TARGET_PAGE_SIZE);
	migram_stream_writer_command(m->w, MIGRAM_CMD_OPEN_RETURN_PATH, NULL,
				     0);
	migram_stream_writer_command(m->w, MIGRAM_CMD_PING, &one, 4);
	migram_stream_writer_command(m->w, MIGRAM_CMD_POSTCOPY_ADVISE, advise,
				     16);
	if (m->preempt)
		pc->pw = migram_stream_writer_new(m->preempt);
	/* Postcopy streams name huge page sizes (QEMU's rule); a planned
	 * switch (hybrid) keeps whole passes. */
	m->name_page_sizes = true;
	m->whole_passes = m->cfg.postcopy_after_passes != 0;
	return true;
}

/* After the block list: the request index, then the return path. */
static bool src_listen(MigramMigration *m, void *state, GError **error)
{
	SrcPostcopy *pc = state;

	pc->index_vals = g_new(guint, MAX(m->blocks->len, 1));
	for (guint i = 0; i < m->blocks->len; i++) {
		pc->index_vals[i] = i;
		g_hash_table_insert(pc->index,
				    g_strdup(migram_sender_block(m, i)->idstr),
				    &pc->index_vals[i]);
	}
	pc->vrp_last = RP_BLOCK_NONE;
	if (m->env.rp_pump) /* model mode: no thread, rp_pump delivers */
		return true;
	return migram_postcopy_src_rp_start(m, m->ch, error);
}

static bool src_check(MigramMigration *m, void *state, GError **error)
{
	SrcPostcopy *pc = state;

	(void)m;
	if (!g_atomic_int_get(&pc->bad))
		return true;
	pthread_mutex_lock(&pc->lock);
	if (error)
		*error = g_error_copy(pc->rp_error);
	pthread_mutex_unlock(&pc->lock);
	return false;
}

/* start_postcopy(), or the planned switch after postcopy_after_passes
 * passes (hybrid). */
static bool src_should_switch(MigramMigration *m, void *state)
{
	(void)state;
	if (m->cfg.postcopy_after_passes &&
	    m->st.iterations >= m->cfg.postcopy_after_passes)
		g_atomic_int_set(&m->postcopy_wanted, 1);
	return g_atomic_int_get(&m->postcopy_wanted) != 0;
}

static bool src_run(MigramMigration *m, void *state, GError **error)
{
	SrcPostcopy *pc = state;
	GError *err = NULL;

	if (!migram_postcopy_src_switch(m, error))
		return false;
	for (;;) {
		bool lost = false;

		while (m->dirty_pages && !migram_postcopy_src_lost(m)) {
			if (!migram_sender_check(m, error))
				return false;
			if (!migram_postcopy_src_section(m, &err)) {
				if (!migram_postcopy_src_lost(m)) {
					g_propagate_error(error, err);
					return false;
				}
				g_clear_error(&err);
			}
			migram_sender_publish(m);
		}
		if (!migram_postcopy_src_lost(m)) {
			/* Everything sent: END, EOF, then the destination's
			 * SHUT says every page is placed. */
			migram_stream_writer_ram_open(m->w, true);
			migram_stream_writer_ram_close(m->w);
			if (pc->pw) {
				migram_stream_writer_eos(pc->pw);
				migram_channel_flush(m->preempt, NULL);
			}
			/* A failed write is a lost connection (recover); a
			 * failed wait that is not one set the error (cancel,
			 * a hostile message). */
			if (migram_stream_writer_finish_postcopy(m->w, NULL)) {
				if (migram_postcopy_src_wait(m, SRC_WAIT_SHUT,
							     &lost, error))
					break;
				if (!lost)
					return false;
			}
		}
		if (!migram_postcopy_src_recover(m, error))
			return false;
	}
	if (pc->shut_code) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "destination ended postcopy with error %u",
			    pc->shut_code);
		return false;
	}
	m->st.postcopy_time_ms =
		(uint64_t)(migram_sender_now(m) - pc->t_switch) / 1000;
	m->st.transferred_bytes = migram_sender_bytes_sent(m);
	/* A change seen while serving failed the run; one made after the
	 * last page left is reported too, never passed in silence (torture
	 * seed 20275405: a block hot-added after the switch). */
	return migram_sender_check_unchanged(m, error);
}

/* Precopy finished with a return path open: the destination's SHUT. */
static bool src_precopy_done(MigramMigration *m, void *state, GError **error)
{
	SrcPostcopy *pc = state;
	bool lost;

	if (!migram_postcopy_src_wait(m, SRC_WAIT_SHUT, &lost, error)) {
		/* The load may have failed: the source must not call it done
		 * (the guest is resumed by the caller). */
		if (lost)
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "the destination did not confirm that it "
				    "loaded the stream: the return path ended "
				    "before its SHUT");
		return false;
	}
	if (pc->shut_code) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "destination reported error %u at the end",
			    pc->shut_code);
		return false;
	}
	return true;
}

static void src_cleanup(MigramMigration *m, void *state)
{
	SrcPostcopy *pc = state;

	migram_postcopy_src_rp_stop(m);
	if (pc->pw)
		migram_stream_writer_free(pc->pw);
	pc->pw = NULL;
	if (pc->index)
		g_hash_table_unref(pc->index);
	pc->index = NULL;
	g_free(pc->index_vals);
	pc->index_vals = NULL;
	pc->q_len = 0;
}

const MigramSenderHooks migram_postcopy_src_hooks = {
	.name = "postcopy",
	.create = src_create,
	.destroy = src_destroy,
	.setup = src_setup,
	.listen = src_listen,
	.check = src_check,
	.should_switch = src_should_switch,
	.run = src_run,
	.precopy_done = src_precopy_done,
	.cleanup = src_cleanup,
	.wake = src_wake,
};
