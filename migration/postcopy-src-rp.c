/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the source: the return-path thread.  One per connection; it
 * reads the destination's messages (hostile input, return-path.c) and
 * hands them to the migration thread under the state's lock: page
 * requests into the ring, received bitmaps, PONG/SHUT/RESUME_ACK, and
 * failures.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "migram/bitmap.h"
#include "postcopy-src-internal.h"
#include "return-path.h"
#include "stream-error.h"
#include "stream-internal.h"

/* Return-path thread: a hostile message fails the migration. */
static void rp_fail(SrcPostcopy *pc, GError *err)
{
	pthread_mutex_lock(&pc->lock);
	if (!pc->rp_error)
		pc->rp_error = err;
	else
		g_error_free(err);
	g_atomic_int_set(&pc->bad, 1);
	pthread_cond_broadcast(&pc->cond);
	pthread_mutex_unlock(&pc->lock);
}

static guint rp_block(MigramMigration *m, const char *idstr)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);
	const guint *v = g_hash_table_lookup(pc->index, idstr);

	return v ? *v : RP_BLOCK_NONE;
}

static bool rp_request(MigramMigration *m, guint bi, const MigramRpMessage *msg,
		       GError **error)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);
	SendBlock *sb = migram_sender_block(m, bi);
	uint64_t used = sb->pages * MIGRAM_TARGET_PAGE_SIZE;

	if (msg->start % sb->page_size || msg->len == 0 ||
	    msg->len % sb->page_size)
		return migram_rp_fail(error, msg->at,
				      "misaligned page request for ramblock "
				      "'%s': start %#" G_GINT64_MODIFIER
				      "x length %#x "
				      "(page size %#" G_GINT64_MODIFIER "x)",
				      sb->idstr, msg->start, msg->len,
				      sb->page_size);
	if (msg->start >= used || used - msg->start < msg->len)
		return migram_rp_fail(error, msg->at,
				      "page request overruns ramblock '%s': "
				      "start %#" G_GINT64_MODIFIER
				      "x length %#x, used "
				      "length %#" G_GINT64_MODIFIER "x",
				      sb->idstr, msg->start, msg->len, used);
	pthread_mutex_lock(&pc->lock);
	if (pc->q_len < REQ_QUEUE_MAX) {
		pc->q[(pc->q_head + pc->q_len) % REQ_QUEUE_MAX] =
			(PageReq){ bi, msg->start / MIGRAM_TARGET_PAGE_SIZE,
				   msg->len / MIGRAM_TARGET_PAGE_SIZE };
		pc->q_len++;
	} else {
		pc->q_dropped++; /* background sending gets there */
	}
	pthread_cond_broadcast(&pc->cond);
	pthread_mutex_unlock(&pc->lock);
	return true;
}

static bool rp_bitmap(MigramMigration *m, const MigramRpMessage *msg,
		      MigramChannel *ch, GError **error)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);
	guint bi = rp_block(m, msg->idstr);
	unsigned long *map;

	if (bi == RP_BLOCK_NONE)
		return migram_rp_fail(error, msg->at,
				      "received bitmap for "
				      "unknown ramblock '%s'",
				      msg->idstr);
	if (!pc->recv || pc->recv[bi])
		return migram_rp_fail(error, msg->at,
				      "received bitmap for "
				      "ramblock '%s' that was not asked "
				      "for",
				      msg->idstr);
	map = migram_bitmap_new(
		(size_t)MAX(migram_sender_block(m, bi)->pages, 1));
	if (!map) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "recovery: cannot allocate the received bitmap of "
			    "ramblock '%s' (%" G_GUINT64_FORMAT " pages)",
			    msg->idstr, migram_sender_block(m, bi)->pages);
		return false;
	}
	if (!migram_rp_read_bitmap(ch, msg->idstr, map,
				   migram_sender_block(m, bi)->pages, error)) {
		migram_bitmap_free(map);
		return false;
	}
	pthread_mutex_lock(&pc->lock);
	pc->recv[bi] = map;
	pc->recv_pending--;
	pthread_cond_broadcast(&pc->cond);
	pthread_mutex_unlock(&pc->lock);
	return true;
}

typedef enum {
	RP_NEXT, /* read the next message */
	RP_END,  /* SHUT, or the connection broke: the return path ends */
	RP_BAD,  /* a hostile message: *err is set */
} RpStep;

/*
 * One message from the destination, handed to the migration thread.  ch is
 * the return path's channel (a RECV_BITMAP's bitmap follows on it), or
 * NULL for a virtual one; last is the block of the last REQ_PAGES_ID.
 */
static RpStep rp_handle(MigramMigration *m, MigramChannel *ch,
			const MigramRpMessage *msg, guint *last, GError **err)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);
	bool ok = true;

	switch (msg->type) {
	case MIGRAM_RP_SHUT:
		pthread_mutex_lock(&pc->lock);
		pc->shut = true;
		pc->shut_code = msg->value;
		pthread_cond_broadcast(&pc->cond);
		pthread_mutex_unlock(&pc->lock);
		return RP_END;
	case MIGRAM_RP_PONG:
		pthread_mutex_lock(&pc->lock);
		pc->last_pong = msg->value;
		pthread_cond_broadcast(&pc->cond);
		pthread_mutex_unlock(&pc->lock);
		break;
	case MIGRAM_RP_REQ_PAGES_ID:
		*last = rp_block(m, msg->idstr);
		if (*last == RP_BLOCK_NONE) {
			ok = migram_rp_fail(err, msg->at,
					    "page request for unknown "
					    "ramblock '%s'",
					    msg->idstr);
			break;
		}
		ok = rp_request(m, *last, msg, err);
		break;
	case MIGRAM_RP_REQ_PAGES:
		ok = *last != RP_BLOCK_NONE
			     ? rp_request(m, *last, msg, err)
			     : migram_rp_fail(err, msg->at,
					      "REQ_PAGES before "
					      "any REQ_PAGES_ID");
		break;
	case MIGRAM_RP_RECV_BITMAP:
		if (!ch) {
			ok = migram_rp_fail(err, msg->at,
					    "received bitmap on a virtual "
					    "return path");
			break;
		}
		ok = rp_bitmap(m, msg, ch, err);
		if (!ok && migram_channel_error(ch)) {
			g_clear_error(err);
			return RP_END;
		}
		break;
	case MIGRAM_RP_RESUME_ACK:
		if (msg->value != 1) {
			ok = migram_rp_fail(err, msg->at,
					    "RESUME_ACK value %u "
					    "(expected 1)",
					    msg->value);
			break;
		}
		pthread_mutex_lock(&pc->lock);
		pc->resume_acked = true;
		pthread_cond_broadcast(&pc->cond);
		pthread_mutex_unlock(&pc->lock);
		break;
	default:
		ok = migram_rp_fail(err, msg->at,
				    "unknown return path message type %u",
				    msg->type);
		break;
	}
	return ok ? RP_NEXT : RP_BAD;
}

static void *rp_thread(void *opaque)
{
	RpConn *c = opaque;
	MigramMigration *m = c->m;
	SrcPostcopy *pc = migram_postcopy_src_of(m);
	guint last = RP_BLOCK_NONE;
	GError *err = NULL;
	MigramRpMessage msg;

	for (;;) {
		if (!migram_rp_read(c->ch, &msg, &err)) {
			/* A broken connection pauses; bad bytes fail. */
			if (migram_channel_error(c->ch))
				g_clear_error(&err);
			break;
		}
		if (rp_handle(m, c->ch, &msg, &last, &err) != RP_NEXT)
			break;
	}
	if (err)
		rp_fail(pc, err);
	pthread_mutex_lock(&pc->lock);
	pc->rp_down = true;
	pthread_cond_broadcast(&pc->cond);
	pthread_mutex_unlock(&pc->lock);
	return NULL;
}

bool migram_migration_rp_deliver(MigramMigration *m, const MigramRpMessage *msg,
				 GError **error)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);
	GError *err = NULL;

	if (!pc) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "return path message type %u for a migration "
			    "without postcopy",
			    msg->type);
		return false;
	}
	if (rp_handle(m, NULL, msg, &pc->vrp_last, &err) != RP_BAD)
		return true;
	if (error)
		*error = g_error_copy(err);
	rp_fail(pc, err);
	return false;
}

bool migram_postcopy_src_rp_start(MigramMigration *m, MigramChannel *main_ch,
				  GError **error)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);
	int fd = dup(migram_channel_fd(main_ch));
	RpConn *c;

	if (fd < 0) {
		migram_error_errno(error, MIGRAM_ERROR_IO, errno,
				   "return path: dup of fd %d failed",
				   migram_channel_fd(main_ch));
		return false;
	}
	c = g_new0(RpConn, 1);
	c->m = m;
	c->ch = migram_channel_new(fd, true);
	migram_channel_set_exact_reads(c->ch); /* leave the rest to main */
	pthread_mutex_lock(&pc->lock);
	pc->rp_down = false;
	pc->shut = false;
	pthread_mutex_unlock(&pc->lock);
	if (pthread_create(&c->thread, NULL, rp_thread, c) != 0) {
		migram_channel_free(c->ch);
		g_free(c);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "return path: cannot start its thread");
		return false;
	}
	c->running = true;
	pc->rp = c;
	return true;
}

/* End the return-path thread: shut the socket's read side, join. */
void migram_postcopy_src_rp_stop(MigramMigration *m)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);
	RpConn *c = pc->rp;
	bool down;

	if (!c)
		return;
	pthread_mutex_lock(&pc->lock);
	down = pc->rp_down || pc->shut; /* SHUT: it is ending */
	pthread_mutex_unlock(&pc->lock);
	/* After SHUT the thread ended by itself: the socket stays whole. */
	if (!down)
		shutdown(migram_channel_fd(c->ch), SHUT_RD);
	if (c->running)
		pthread_join(c->thread, NULL);
	migram_channel_free(c->ch);
	g_free(c);
	pc->rp = NULL;
}
