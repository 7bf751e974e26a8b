/* SPDX-License-Identifier: MIT */
/*
 * The receiver's commands: the return path, postcopy (advise, discard,
 * the package with LISTEN and RUN), the preempt channel's thread, the end
 * of a postcopy load, and pause and recovery.
 *
 * Pausing.  Once LISTEN was handled the guest may run here with pages
 * missing, so losing the connection must not fail the load: the loading
 * thread drops the dead connection, keeps userfaultfd and the fault
 * thread (faulting threads wait; placed pages stay), and waits for
 * migram_receiver_recover().  A stream that is malformed rather than cut
 * still fails: only a channel error (the socket broke or ended) pauses.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "receiver-internal.h"
#include "return-path.h"
#include "stream-internal.h"

static DstPostcopy *ensure_pc(MigramReceiver *r)
{
	if (!r->pc) {
		DstPostcopy *pc = migram_postcopy_dst_new(r->list);

		pthread_mutex_lock(&r->lock);
		r->pc = pc;
		pthread_mutex_unlock(&r->lock);
	}
	return r->pc;
}

/* A return path on a dup of the main channel's socket. */
static bool open_rp(MigramReceiver *r, MigramChannel *ch,
		    const MigramStreamRecord *rec, GError **error)
{
	int fd;

	if (!r->on_socket)
		return fail(error, MIGRAM_ERROR_UNSUPPORTED, rec,
			    "OPEN_RETURN_PATH: the stream is not on a socket "
			    "(postcopy and the return path need one)");
	fd = dup(migram_channel_fd(ch));
	if (fd < 0)
		return fail(error, MIGRAM_ERROR_IO, rec,
			    "OPEN_RETURN_PATH: dup: %s", g_strerror(errno));
	migram_postcopy_dst_set_rp(ensure_pc(r), migram_channel_new(fd, true));
	return true;
}

static uint32_t be32_at(const guint8 *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return GUINT32_FROM_BE(v);
}

/*
 * Read a package's bytes, growing with what arrives (a hostile length
 * costs what was sent), into a sealed memfd the package reader reads.
 */
static MigramChannel *read_package(MigramReceiver *r, uint32_t len,
				   const MigramStreamRecord *rec,
				   GError **error)
{
	g_autoptr(GByteArray) buf = g_byte_array_new();
	MigramChannel *src = migram_stream_reader_channel(r->reader);
	int fd;

	while (buf->len < len) {
		guint n = MIN(len - buf->len, MAX(buf->len, 64u * 1024));
		guint old = buf->len;

		g_byte_array_set_size(buf, old + n);
		if (!migram_channel_get_bytes(src, buf->data + old, n, error)) {
			g_prefix_error(error,
				       "stream byte %" G_GUINT64_FORMAT
				       ": PACKAGED of %u bytes: ",
				       rec->stream_offset, len);
			return NULL;
		}
	}
	fd = memfd_create("migram-package", MFD_CLOEXEC);
	if (fd < 0 || write(fd, buf->data, buf->len) != (ssize_t)buf->len ||
	    lseek(fd, 0, SEEK_SET) != 0) {
		fail(error, MIGRAM_ERROR_IO, rec, "package of %u bytes: %s",
		     len, g_strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	return migram_channel_new(fd, true);
}

/* PACKAGED: LISTEN, device state, PING, RUN, read as one unit. */
static bool load_package(MigramReceiver *r, const MigramStreamRecord *rec,
			 GError **error)
{
	uint32_t len = be32_at(rec->data);
	MigramStreamReader *outer = r->reader;
	MigramChannel *pch;
	bool ok = true, done = false;

	if (r->in_package)
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec,
			    "package inside a package");
	if (len > MAX_PACKAGE_BYTES)
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec,
			    "package of %u bytes (at most %u)", len,
			    MAX_PACKAGE_BYTES);
	pch = read_package(r, len, rec, error);
	if (!pch)
		return false;
	r->reader = migram_stream_reader_new_continued(pch, outer);
	r->in_package = true;
	while (ok && !done) {
		MigramStreamRecord in;
		bool end = false;

		ok = migram_channel_at_end(pch, &end, error);
		if (!ok || end)
			break;
		ok = migram_stream_reader_next(r->reader, &in, error) &&
		     migram_receiver_handle(r, &in, &done, error);
	}
	if (ok && done)
		ok = fail(error, MIGRAM_ERROR_PROTOCOL, rec,
			  "the package ends the stream");
	if (!ok && error && *error)
		g_prefix_error(
			error,
			"in the package at stream byte %" G_GUINT64_FORMAT ": ",
			rec->stream_offset);
	r->in_package = false;
	migram_stream_reader_free(r->reader);
	r->reader = outer;
	migram_channel_free(pch);
	return ok;
}

/* ---- the preempt channel ---- */

static void *preempt_main(void *opaque)
{
	MigramReceiver *r = opaque;
	MigramStreamReader *rd = migram_stream_reader_new_raw(
		r->preempt, MIGRAM_TARGET_PAGE_SIZE);
	DstPlacer pl;
	GError *err = NULL;
	bool ok = true;

	migram_postcopy_placer_init(&pl, true);
	while (ok) {
		MigramStreamRecord rec;
		void *buf;

		ok = migram_stream_reader_next(rd, &rec, &err);
		if (!ok || rec.type == MIGRAM_STREAM_REC_END)
			break;
		switch (rec.type) {
		case MIGRAM_STREAM_REC_SECTION_DONE:
			break;
		case MIGRAM_STREAM_REC_PAGE:
			buf = migram_postcopy_placer_buffer(r->pc, &pl,
							    rec.name,
							    rec.offset);
			ok = buf &&
			     migram_stream_reader_read_page(rd, buf, &err) &&
			     migram_postcopy_place(r->pc, &pl, rec.name,
						   rec.offset, false,
						   rec.stream_offset, &err);
			break;
		case MIGRAM_STREAM_REC_ZERO_PAGE:
			ok = rec.fill == 0
				     ? migram_postcopy_place(
					       r->pc, &pl, rec.name, rec.offset,
					       true, rec.stream_offset, &err)
				     : fail(&err, MIGRAM_ERROR_PROTOCOL, &rec,
					    "zero page record with fill byte "
					    "0x%02x",
					    rec.fill);
			break;
		default:
			ok = fail(&err, MIGRAM_ERROR_PROTOCOL, &rec,
				  "preempt channel: record type %d",
				  (int)rec.type);
		}
	}
	/* A cut connection is main's business; bad bytes fail the load. */
	if (!ok && err && !migram_channel_error(r->preempt)) {
		g_prefix_error(&err, "preempt channel: ");
		pthread_mutex_lock(&r->lock);
		r->preempt_error = err;
		err = NULL;
		if (r->ch)
			shutdown(migram_channel_fd(r->ch), SHUT_RD);
		pthread_mutex_unlock(&r->lock);
	}
	g_clear_error(&err);
	migram_postcopy_placer_clear(&pl);
	migram_stream_reader_free(rd);
	return NULL;
}

static void stop_preempt(MigramReceiver *r, bool wait_for_eos)
{
	if (!r->preempt_running)
		return;
	if (!wait_for_eos)
		shutdown(migram_channel_fd(r->preempt), SHUT_RD);
	pthread_join(r->preempt_thread, NULL);
	r->preempt_running = false;
}

/* ---- commands ---- */

static bool need_pc(MigramReceiver *r, const MigramStreamRecord *rec,
		    GError **error)
{
	if (r->pc && migram_postcopy_dst_state(r->pc) >= DST_ADVISE)
		return true;
	return fail(error, MIGRAM_ERROR_PROTOCOL, rec,
		    "postcopy command %u without POSTCOPY_ADVISE",
		    rec->command);
}

static bool cmd_listen(MigramReceiver *r, const MigramStreamRecord *rec,
		       GError **error)
{
	if (!need_pc(r, rec, error) ||
	    !migram_postcopy_dst_listen(r->pc, rec->stream_offset, error))
		return false;
	if (r->preempt) {
		if (pthread_create(&r->preempt_thread, NULL, preempt_main, r) !=
		    0)
			return fail(error, MIGRAM_ERROR_NO_MEMORY, rec,
				    "cannot start the preempt thread");
		r->preempt_running = true;
	}
	return true;
}

static bool cmd_run(MigramReceiver *r, const MigramStreamRecord *rec,
		    GError **error)
{
	if (!r->pc || migram_postcopy_dst_state(r->pc) != DST_LISTENING)
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec,
			    "POSTCOPY_RUN before POSTCOPY_LISTEN");
	migram_postcopy_dst_run(r->pc);
	if (r->cfg.postcopy_run)
		r->cfg.postcopy_run(r->cfg.opaque);
	return true;
}

static bool cmd_resume(MigramReceiver *r, const MigramStreamRecord *rec,
		       GError **error)
{
	if (!r->recovering)
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec,
			    "POSTCOPY_RESUME outside a recovery");
	r->recovering = false;
	migram_postcopy_dst_rp_u32(r->pc, MIGRAM_RP_RESUME_ACK, 1);
	migram_postcopy_dst_rerequest(r->pc);
	migram_postcopy_dst_set_paused(r->pc, false, true);
	return true;
}

static bool check_len(const MigramStreamRecord *rec, uint64_t want,
		      const char *name, GError **error)
{
	if (rec->length == want)
		return true;
	return fail(error, MIGRAM_ERROR_PROTOCOL, rec,
		    "%s of %" G_GUINT64_FORMAT
		    " bytes (expected %" G_GUINT64_FORMAT ")",
		    name, rec->length, want);
}

bool migram_receiver_command(MigramReceiver *r, const MigramStreamRecord *rec,
			     GError **error)
{
	uint64_t summary;

	switch (rec->command) {
	case MIGRAM_CMD_OPEN_RETURN_PATH:
		return check_len(rec, 0, "OPEN_RETURN_PATH", error) &&
		       open_rp(r, r->ch, rec, error);
	case MIGRAM_CMD_PING:
		if (!check_len(rec, 4, "PING", error))
			return false;
		if (!r->pc || !migram_postcopy_dst_has_rp(r->pc))
			return fail(error, MIGRAM_ERROR_PROTOCOL, rec,
				    "PING without a return path");
		/* A failed PONG means the connection broke: main sees it. */
		migram_postcopy_dst_rp_u32(r->pc, MIGRAM_RP_PONG,
					   be32_at(rec->data));
		return true;
	case MIGRAM_CMD_POSTCOPY_ADVISE:
		if (r->list_done)
			return fail(error, MIGRAM_ERROR_PROTOCOL, rec,
				    "POSTCOPY_ADVISE after the block list");
		if (!migram_postcopy_dst_advise(ensure_pc(r), rec->data,
						(size_t)rec->length,
						rec->stream_offset, error))
			return false;
		memcpy(&summary, rec->data, 8);
		r->advise_huge = GUINT64_FROM_BE(summary) !=
				 MIGRAM_TARGET_PAGE_SIZE;
		migram_stream_reader_accept_page_sizes(r->reader);
		return true;
	case MIGRAM_CMD_POSTCOPY_RAM_DISCARD:
		return need_pc(r, rec, error) &&
		       migram_postcopy_dst_discard(r->pc, rec->data,
						   (size_t)rec->length,
						   rec->stream_offset, error);
	case MIGRAM_CMD_PACKAGED:
		return check_len(rec, 4, "PACKAGED", error) &&
		       need_pc(r, rec, error) && load_package(r, rec, error);
	case MIGRAM_CMD_POSTCOPY_LISTEN:
		return check_len(rec, 0, "POSTCOPY_LISTEN", error) &&
		       cmd_listen(r, rec, error);
	case MIGRAM_CMD_POSTCOPY_RUN:
		return check_len(rec, 0, "POSTCOPY_RUN", error) &&
		       cmd_run(r, rec, error);
	case MIGRAM_CMD_RECV_BITMAP:
		return need_pc(r, rec, error) &&
		       migram_postcopy_dst_send_bitmap(r->pc, rec->data,
						       (size_t)rec->length,
						       rec->stream_offset,
						       error);
	case MIGRAM_CMD_POSTCOPY_RESUME:
		return check_len(rec, 0, "POSTCOPY_RESUME", error) &&
		       cmd_resume(r, rec, error);
	}
	return fail(error, MIGRAM_ERROR_UNSUPPORTED, rec,
		    "command %u: not supported", rec->command);
}

/* EOF after postcopy: preempt drained, every page placed, SHUT(0). */
bool migram_receiver_postcopy_finish(MigramReceiver *r,
				     const MigramStreamRecord *rec,
				     GError **error)
{
	stop_preempt(r, true);
	if (r->preempt_error) {
		g_propagate_error(error, r->preempt_error);
		r->preempt_error = NULL;
		return false;
	}
	return migram_postcopy_dst_complete(r->pc, rec->stream_offset, error);
}

/* ---- pause, recovery, the end ---- */

bool migram_receiver_pause(MigramReceiver *r, GError **error)
{
	MigramStreamReader *old = r->reader;
	MigramChannel *ch;
	int fd;

	/*
	 * Without a return path nobody can recover the load (the recovery
	 * handshake runs over it, and faults could never be served): a cut
	 * stream then fails instead of waiting forever.
	 */
	if (!r->pc || r->in_package || r->preempt_error ||
	    migram_postcopy_dst_state(r->pc) < DST_LISTENING ||
	    migram_postcopy_dst_state(r->pc) == DST_END ||
	    !migram_postcopy_dst_has_rp(r->pc) || !migram_channel_error(r->ch))
		return false;
	stop_preempt(r, false); /* recovery goes on without it */
	for (;;) {
		migram_postcopy_dst_set_rp(r->pc, NULL);
		r->placer.block = NULL; /* a half-built huge page is resent */
		migram_postcopy_dst_set_paused(r->pc, true, false);
		pthread_mutex_lock(&r->lock);
		r->paused = true;
		pthread_mutex_unlock(&r->lock);
		if (r->cfg.postcopy_paused)
			r->cfg.postcopy_paused(r->cfg.opaque);
		pthread_mutex_lock(&r->lock);
		while (!r->recover_ch && !r->cancelled)
			pthread_cond_wait(&r->cond, &r->lock);
		ch = r->recover_ch;
		r->recover_ch = NULL;
		r->paused = false;
		if (ch)
			r->ch = ch;
		pthread_mutex_unlock(&r->lock);
		if (!ch) {
			g_clear_error(error);
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_CANCELLED,
				    "postcopy load cancelled while paused");
			return false;
		}
		if (r->cfg.io_timeout_ms)
			migram_channel_set_io_timeout(ch, r->cfg.io_timeout_ms);
		fd = dup(migram_channel_fd(ch));
		if (fd >= 0)
			break;
	}
	migram_postcopy_dst_set_rp(r->pc, migram_channel_new(fd, true));
	r->reader = migram_stream_reader_new_continued(ch, old);
	migram_stream_reader_free(old);
	r->recovering = true;
	r->in_end = false;
	g_clear_error(error);
	return true;
}

void migram_receiver_load_end(MigramReceiver *r, bool ok)
{
	stop_preempt(r, false);
	if (r->pc && migram_postcopy_dst_has_rp(r->pc))
		migram_postcopy_dst_rp_u32(r->pc, MIGRAM_RP_SHUT, ok ? 0 : 1);
	pthread_mutex_lock(&r->lock);
	r->ch = NULL;
	pthread_mutex_unlock(&r->lock);
}

MIGRAM_EXPORT void migram_receiver_set_preempt(MigramReceiver *r,
					       MigramChannel *preempt)
{
	r->preempt = preempt;
}

MIGRAM_EXPORT bool migram_receiver_recover(MigramReceiver *r, MigramChannel *ch,
					   GError **error)
{
	bool ok;

	pthread_mutex_lock(&r->lock);
	ok = r->paused && !r->recover_ch;
	if (ok) {
		r->recover_ch = ch;
		pthread_cond_broadcast(&r->cond);
	}
	pthread_mutex_unlock(&r->lock);
	if (!ok)
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "recover: the load is not paused in postcopy");
	return ok;
}

MIGRAM_EXPORT void migram_receiver_cancel(MigramReceiver *r)
{
	pthread_mutex_lock(&r->lock);
	r->cancelled = true;
	if (r->ch)
		migram_channel_cancel(r->ch);
	migram_receiver_multifd_cancel_locked(r); /* multifd */
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

MIGRAM_EXPORT void migram_receiver_get_postcopy_stats(MigramReceiver *r,
						      MigramPostcopyStats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&r->lock);
	if (r->pc)
		migram_postcopy_dst_stats(r->pc, st);
	pthread_mutex_unlock(&r->lock);
}
