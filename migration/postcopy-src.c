/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the source: the return path, the switch (discard list and
 * package), requested pages before background ones, and recovery.
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
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "migration-internal.h"

#define REQ_QUEUE_MAX 4096  /* requests waiting; more fall to background */
#define BACKGROUND_BATCH 64 /* pages between request checks */
#define RP_BLOCK_NONE G_MAXUINT

typedef struct {
	guint block;
	uint64_t page;   /* first target page */
	uint64_t npages; /* target pages */
} PageReq;

typedef struct {
	MigramMigration *m;
	MigramChannel *ch; /* owns a dup of the main channel's fd */
	pthread_t thread;
	bool running;
} RpConn;

struct SrcPostcopy {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* under lock */
	PageReq q[REQ_QUEUE_MAX];
	guint q_head, q_len;
	uint64_t q_dropped;
	bool rp_down;     /* the return path ended (EOF or error) */
	GError *rp_error; /* a hostile message: fails the migration */
	bool shut;        /* SHUT received */
	uint32_t shut_code;
	bool resume_acked;
	uint32_t last_pong;
	unsigned long **recv; /* per block, RECV_BITMAP results */
	guint recv_pending;
	bool paused;
	MigramChannel *recover_ch;
	int bad; /* atomic mirror of rp_error != NULL, for the page loop */

	/* migration thread only */
	RpConn *rp;
	GHashTable *index; /* idstr (owned) -> block index + 1 */
	guint *index_vals;
	MigramStreamWriter *pw; /* preempt writer, or NULL */
	gint64 t_switch;
};

static SendBlock *sb_at(MigramMigration *m, guint i)
{
	return &g_array_index(m->blocks, SendBlock, i);
}

SrcPostcopy *migram_postcopy_src_new(void)
{
	SrcPostcopy *pc = g_new0(SrcPostcopy, 1);

	pthread_mutex_init(&pc->lock, NULL);
	pthread_cond_init(&pc->cond, NULL);
	return pc;
}

void migram_postcopy_src_free(SrcPostcopy *pc)
{
	if (!pc)
		return;
	g_clear_error(&pc->rp_error);
	pthread_mutex_destroy(&pc->lock);
	pthread_cond_destroy(&pc->cond);
	g_free(pc);
}

void migram_postcopy_src_wake(MigramMigration *m)
{
	pthread_mutex_lock(&m->pc->lock);
	pthread_cond_broadcast(&m->pc->cond);
	pthread_mutex_unlock(&m->pc->lock);
}

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
	const guint *v = g_hash_table_lookup(m->pc->index, idstr);

	return v ? *v : RP_BLOCK_NONE;
}

static bool rp_request(MigramMigration *m, guint bi, const MigramRpMessage *msg,
		       GError **error)
{
	SrcPostcopy *pc = m->pc;
	SendBlock *sb = sb_at(m, bi);
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
	SrcPostcopy *pc = m->pc;
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
	map = migram_bitmap_new((size_t)MAX(sb_at(m, bi)->pages, 1));
	if (!map) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "recovery: cannot allocate the received bitmap of "
			    "ramblock '%s' (%" G_GUINT64_FORMAT " pages)",
			    msg->idstr, sb_at(m, bi)->pages);
		return false;
	}
	if (!migram_rp_read_bitmap(ch, msg->idstr, map, sb_at(m, bi)->pages,
				   error)) {
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

static void *rp_thread(void *opaque)
{
	RpConn *c = opaque;
	MigramMigration *m = c->m;
	SrcPostcopy *pc = m->pc;
	guint last = RP_BLOCK_NONE;
	GError *err = NULL;

	for (;;) {
		MigramRpMessage msg;
		bool ok = true;

		if (!migram_rp_read(c->ch, &msg, &err)) {
			/* A broken connection pauses; bad bytes fail. */
			if (migram_channel_error(c->ch))
				g_clear_error(&err);
			break;
		}
		switch (msg.type) {
		case MIGRAM_RP_SHUT:
			pthread_mutex_lock(&pc->lock);
			pc->shut = true;
			pc->shut_code = msg.value;
			pthread_cond_broadcast(&pc->cond);
			pthread_mutex_unlock(&pc->lock);
			goto out;
		case MIGRAM_RP_PONG:
			pthread_mutex_lock(&pc->lock);
			pc->last_pong = msg.value;
			pthread_cond_broadcast(&pc->cond);
			pthread_mutex_unlock(&pc->lock);
			break;
		case MIGRAM_RP_REQ_PAGES_ID:
			last = rp_block(m, msg.idstr);
			if (last == RP_BLOCK_NONE) {
				ok = migram_rp_fail(&err, msg.at,
						    "page request for unknown "
						    "ramblock '%s'",
						    msg.idstr);
				break;
			}
			ok = rp_request(m, last, &msg, &err);
			break;
		case MIGRAM_RP_REQ_PAGES:
			ok = last != RP_BLOCK_NONE
				     ? rp_request(m, last, &msg, &err)
				     : migram_rp_fail(&err, msg.at,
						      "REQ_PAGES before "
						      "any REQ_PAGES_ID");
			break;
		case MIGRAM_RP_RECV_BITMAP:
			ok = rp_bitmap(m, &msg, c->ch, &err);
			if (!ok && migram_channel_error(c->ch)) {
				g_clear_error(&err);
				goto out;
			}
			break;
		case MIGRAM_RP_RESUME_ACK:
			if (msg.value != 1) {
				ok = migram_rp_fail(&err, msg.at,
						    "RESUME_ACK value %u "
						    "(expected 1)",
						    msg.value);
				break;
			}
			pthread_mutex_lock(&pc->lock);
			pc->resume_acked = true;
			pthread_cond_broadcast(&pc->cond);
			pthread_mutex_unlock(&pc->lock);
			break;
		}
		if (!ok)
			break;
	}
out:
	if (err)
		rp_fail(pc, err);
	pthread_mutex_lock(&pc->lock);
	pc->rp_down = true;
	pthread_cond_broadcast(&pc->cond);
	pthread_mutex_unlock(&pc->lock);
	return NULL;
}

static bool rp_start(MigramMigration *m, MigramChannel *main_ch, GError **error)
{
	int fd = dup(migram_channel_fd(main_ch));
	RpConn *c;

	if (fd < 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "return path: dup of fd %d failed: %s",
			    migram_channel_fd(main_ch), g_strerror(errno));
		return false;
	}
	c = g_new0(RpConn, 1);
	c->m = m;
	c->ch = migram_channel_new(fd, true);
	migram_channel_set_exact_reads(c->ch); /* leave the rest to main */
	pthread_mutex_lock(&m->pc->lock);
	m->pc->rp_down = false;
	m->pc->shut = false;
	pthread_mutex_unlock(&m->pc->lock);
	if (pthread_create(&c->thread, NULL, rp_thread, c) != 0) {
		migram_channel_free(c->ch);
		g_free(c);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "return path: cannot start its thread");
		return false;
	}
	c->running = true;
	m->pc->rp = c;
	return true;
}

/* End the return-path thread: shut the socket's read side, join. */
static void rp_stop(MigramMigration *m)
{
	RpConn *c = m->pc->rp;
	bool down;

	if (!c)
		return;
	pthread_mutex_lock(&m->pc->lock);
	down = m->pc->rp_down || m->pc->shut; /* SHUT: it is ending */
	pthread_mutex_unlock(&m->pc->lock);
	/* After SHUT the thread ended by itself: the socket stays whole. */
	if (!down)
		shutdown(migram_channel_fd(c->ch), SHUT_RD);
	if (c->running)
		pthread_join(c->thread, NULL);
	migram_channel_free(c->ch);
	g_free(c);
	m->pc->rp = NULL;
}

static bool is_socket(MigramChannel *ch)
{
	int type;
	socklen_t len = sizeof(type);

	return getsockopt(migram_channel_fd(ch), SOL_SOCKET, SO_TYPE, &type,
			  &len) == 0;
}

/* After the header: return path, PING(1), ADVISE; the RP thread. */
bool migram_postcopy_src_setup(MigramMigration *m, GError **error)
{
	SrcPostcopy *pc = m->pc;
	uint64_t summary = MIGRAM_TARGET_PAGE_SIZE, advise[2];
	uint32_t one = GUINT32_TO_BE(1);

	if (!is_socket(m->ch)) {
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
	return true;
}

/* After the block list: the request index, then the return path. */
bool migram_postcopy_src_listen(MigramMigration *m, GError **error)
{
	m->pc->index_vals = g_new(guint, MAX(m->blocks->len, 1));
	for (guint i = 0; i < m->blocks->len; i++) {
		m->pc->index_vals[i] = i;
		g_hash_table_insert(m->pc->index, g_strdup(sb_at(m, i)->idstr),
				    &m->pc->index_vals[i]);
	}
	return rp_start(m, m->ch, error);
}

bool migram_postcopy_src_check(MigramMigration *m, GError **error)
{
	SrcPostcopy *pc = m->pc;

	if (!g_atomic_int_get(&pc->bad))
		return true;
	pthread_mutex_lock(&pc->lock);
	if (error)
		*error = g_error_copy(pc->rp_error);
	pthread_mutex_unlock(&pc->lock);
	return false;
}

bool migram_postcopy_src_should_switch(MigramMigration *m)
{
	return g_atomic_int_get(&m->postcopy_wanted) != 0;
}

/* Huge page blocks: a partly dirty host page becomes wholly dirty. */
static void canonicalize(MigramMigration *m, SendBlock *sb)
{
	uint64_t hp = sb->page_size / MIGRAM_TARGET_PAGE_SIZE;

	if (hp <= 1)
		return;
	for (uint64_t p = 0; p < sb->pages; p += hp) {
		uint64_t n = MIN(hp, sb->pages - p);
		size_t set;

		if (migram_bitmap_range_empty(sb->bmap, (size_t)p, (size_t)n))
			continue;
		set = migram_bitmap_count(sb->bmap, (size_t)p, (size_t)n);
		migram_bitmap_set(sb->bmap, (size_t)p, (size_t)n);
		m->dirty_pages += n - set;
	}
}

/* One POSTCOPY_RAM_DISCARD command with up to 12 ranges. */
static void send_discards(MigramMigration *m, SendBlock *sb,
			  const uint64_t *ranges, size_t n)
{
	guint8 buf[3 + 255 + 16 * MIGRAM_DISCARDS_PER_COMMAND];
	size_t len = strlen(sb->idstr), o = 0;

	buf[o++] = 0; /* version */
	buf[o++] = (guint8)len;
	memcpy(buf + o, sb->idstr, len);
	o += len;
	buf[o++] = 0;
	for (size_t i = 0; i < 2 * n; i++) {
		uint64_t be = GUINT64_TO_BE(ranges[i]);

		memcpy(buf + o, &be, 8);
		o += 8;
	}
	migram_stream_writer_command(m->w, MIGRAM_CMD_POSTCOPY_RAM_DISCARD, buf,
				     (uint16_t)o);
}

/* Every run of set bits in bmap becomes a discard range. */
static void discard_block(MigramMigration *m, SendBlock *sb)
{
	uint64_t ranges[2 * MIGRAM_DISCARDS_PER_COMMAND];
	size_t n = 0;
	size_t p = 0, end = (size_t)sb->pages;

	for (;;) {
		size_t s = migram_bitmap_find_next_set(sb->bmap, end, p), e;

		if (s >= end)
			break;
		e = migram_bitmap_find_next_zero(sb->bmap, end, s);
		ranges[2 * n] = (uint64_t)s * MIGRAM_TARGET_PAGE_SIZE;
		ranges[2 * n + 1] = (uint64_t)(e - s) * MIGRAM_TARGET_PAGE_SIZE;
		m->st.postcopy_discard_ranges++;
		m->st.postcopy_discard_pages += e - s;
		if (++n == MIGRAM_DISCARDS_PER_COMMAND) {
			send_discards(m, sb, ranges, n);
			n = 0;
		}
		p = e;
	}
	if (n)
		send_discards(m, sb, ranges, n);
}

static void ping(GByteArray *pkg, MigramMigration *m, uint32_t v)
{
	uint32_t be = GUINT32_TO_BE(v);

	if (pkg)
		migram_stream_encode_command(pkg, MIGRAM_CMD_PING, &be, 4);
	else
		migram_stream_writer_command(m->w, MIGRAM_CMD_PING, &be, 4);
}

typedef bool (*WaitPred)(SrcPostcopy *pc);
static bool wait_for(MigramMigration *m, WaitPred pred, bool *lost,
		     GError **error);
static bool pred_pong2(SrcPostcopy *pc);

/*
 * The switch: pause, final sync, discards, PING(2), the package (LISTEN,
 * device state, PING(3), RUN), PING(4).  Once the package is flushed the
 * destination may be running: from there on the source never resumes.
 */
static bool switch_over(MigramMigration *m, GError **error)
{
	g_autoptr(GByteArray) pkg = g_byte_array_new();
	uint32_t be;
	bool ok = true, lost = false;

	gint64 t[4];

	m->st.status = MIGRAM_MIGRATION_DEVICE;
	migram_sender_publish(m);
	/* the downtime starts with the request to stop, as QEMU's */
	m->t_pause = t[0] = g_get_monotonic_time();
	m->cfg.pause_guest(m->cfg.opaque);
	t[1] = g_get_monotonic_time();
	m->last_stage = true; /* the guest stays paused: no more clears */
	migram_channel_set_rate_limit(m->ch, 0);
	if (!migram_sender_sync(m, error))
		return false;
	t[2] = g_get_monotonic_time();
	migram_rcu_read_lock();
	for (guint i = 0; i < m->blocks->len; i++) {
		canonicalize(m, sb_at(m, i));
		discard_block(m, sb_at(m, i));
	}
	migram_rcu_read_unlock();
	ping(NULL, m, 2);
	/*
	 * The PONG of PING(2) says the discards arrived and nothing of the
	 * package has: a connection lost before it leaves the guest only
	 * here, so the source may resume it.  One round trip of downtime
	 * buys that certainty.
	 */
	if (!migram_channel_flush(m->ch, error))
		return false;
	if (!wait_for(m, pred_pong2, &lost, error)) {
		if (lost)
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "connection lost while switching to "
				    "postcopy, before the destination could "
				    "run: the source keeps the guest");
		return false;
	}
	t[3] = g_get_monotonic_time();
	migram_stream_encode_command(pkg, MIGRAM_CMD_POSTCOPY_LISTEN, NULL, 0);
	ok = migram_sender_encode_device(m, pkg, error);
	if (!ok)
		return false;
	ping(pkg, m, 3);
	migram_stream_encode_command(pkg, MIGRAM_CMD_POSTCOPY_RUN, NULL, 0);
	be = GUINT32_TO_BE(pkg->len);
	migram_stream_writer_command(m->w, MIGRAM_CMD_PACKAGED, &be, 4);
	migram_stream_writer_put_raw(m->w, pkg->data, pkg->len);
	ping(NULL, m, 4);
	if (!migram_channel_flush(m->ch, error))
		return false;
	m->postcopy_committed = true;
	m->pc->t_switch = g_get_monotonic_time();
	m->st.downtime_ms = (uint64_t)(m->pc->t_switch - m->t_pause) / 1000;
	/* postcopy's parts: the discards and PONG(2) count as "pages", the
	 * package as "device" */
	m->st.downtime_pause_us = (uint64_t)(t[1] - t[0]);
	m->st.downtime_sync_us = (uint64_t)(t[2] - t[1]);
	m->st.downtime_pages_us = (uint64_t)(t[3] - t[2]);
	m->st.downtime_device_us = (uint64_t)(m->pc->t_switch - t[3]);
	m->st.status = MIGRAM_MIGRATION_POSTCOPY_ACTIVE;
	m->st.postcopy_preempt = m->pc->pw != NULL;
	m->st.remaining_bytes = m->dirty_pages * MIGRAM_TARGET_PAGE_SIZE;
	m->cur = 0;
	m->cur_page = 0;
	migram_sender_publish(m);
	return true;
}

/*
 * Send the host page holding target page p if it is still dirty, on w.
 * Every target page of a huge page goes, consecutively (the destination
 * places whole host pages).  Inside a read-side section.
 */
static bool send_host_page(MigramMigration *m, SendBlock *sb, uint64_t p,
			   MigramStreamWriter *w)
{
	uint64_t hp = sb->page_size / MIGRAM_TARGET_PAGE_SIZE;
	uint64_t first = p - p % hp, n = MIN(hp, sb->pages - first);

	if (migram_bitmap_range_empty(sb->bmap, (size_t)first, (size_t)n))
		return false;
	for (uint64_t i = first; i < first + n; i++) {
		const guint8 *data = sb->host + i * MIGRAM_TARGET_PAGE_SIZE;
		uint64_t off = i * MIGRAM_TARGET_PAGE_SIZE;

		if (migram_bitmap_test_and_clear_bit(sb->bmap, (size_t)i))
			m->dirty_pages--;
		if (migram_buffer_is_zero(data, MIGRAM_TARGET_PAGE_SIZE)) {
			migram_stream_writer_zero_page(w, sb->idstr, off);
			m->st.duplicate_pages++;
		} else {
			migram_stream_writer_page(w, sb->idstr, off, data);
			m->st.normal_pages++;
			m->st.normal_bytes += MIGRAM_TARGET_PAGE_SIZE;
		}
	}
	return true;
}

static bool pop_request(MigramMigration *m, PageReq *r)
{
	SrcPostcopy *pc = m->pc;
	bool got;

	pthread_mutex_lock(&pc->lock);
	m->st.postcopy_requests_overflowed = pc->q_dropped;
	got = pc->q_len > 0;
	if (got) {
		*r = pc->q[pc->q_head];
		pc->q_head = (pc->q_head + 1) % REQ_QUEUE_MAX;
		pc->q_len--;
	}
	pthread_mutex_unlock(&pc->lock);
	return got;
}

/* Requested pages: on the preempt channel (flushed at once) or main. */
static bool serve_request(MigramMigration *m, const PageReq *r, GError **error)
{
	SendBlock *sb = sb_at(m, r->block);
	MigramStreamWriter *w = m->pc->pw ? m->pc->pw : m->w;
	bool any = false;

	m->st.postcopy_requests++;
	for (uint64_t p = r->page; p < r->page + r->npages; p++)
		if (send_host_page(m, sb, p, w)) {
			any = true;
			m->st.postcopy_urgent_pages++;
		}
	if (!any) {
		m->st.postcopy_requests_already_sent++;
		return true;
	}
	/* Locality: the background continues after the requested page. */
	m->cur = r->block;
	m->cur_page = r->page + r->npages;
	if (w == m->w)
		return true;
	/* A broken preempt connection pauses, as main would. */
	return migram_channel_flush(m->preempt, error);
}

/* One PART section: requests first, up to a batch of background pages. */
static bool postcopy_section(MigramMigration *m, GError **error)
{
	guint sent = 0;
	bool ok = true;

	migram_stream_writer_ram_open(m->w, false);
	migram_rcu_read_lock();
	while (ok && sent < BACKGROUND_BATCH && m->dirty_pages) {
		PageReq r;
		guint bi;
		uint64_t p;

		if (pop_request(m, &r)) {
			ok = serve_request(m, &r, error);
			continue;
		}
		if (!migram_sender_find_dirty(m, &bi, &p))
			break;
		send_host_page(m, sb_at(m, bi), p, m->w);
		m->st.postcopy_background_pages++;
		m->cur = bi;
		m->cur_page = p + 1;
		sent++;
	}
	migram_stream_writer_ram_close(m->w);
	ok = migram_channel_flush(m->ch, ok ? error : NULL) && ok;
	migram_rcu_read_unlock();
	m->st.transferred_bytes =
		migram_sender_bytes_sent(m) +
		(m->preempt ? migram_channel_bytes_sent(m->preempt) : 0);
	m->st.remaining_bytes = m->dirty_pages * MIGRAM_TARGET_PAGE_SIZE;
	return ok;
}

static bool connection_lost(MigramMigration *m)
{
	bool down;

	if (migram_channel_error(m->ch) ||
	    (m->pc->pw && migram_channel_error(m->preempt)))
		return true;
	pthread_mutex_lock(&m->pc->lock);
	down = m->pc->rp_down && !m->pc->shut;
	pthread_mutex_unlock(&m->pc->lock);
	return down;
}

/* Wait (cond) until pred holds or the connection or migration ends. */

static bool pred_recv(SrcPostcopy *pc)
{
	return pc->recv_pending == 0;
}

static bool pred_ack(SrcPostcopy *pc)
{
	return pc->resume_acked;
}

static bool pred_pong2(SrcPostcopy *pc)
{
	return pc->last_pong == 2;
}

static bool pred_shut(SrcPostcopy *pc)
{
	return pc->shut;
}

/* false: lost (*lost set) or failed/cancelled (*error set). */
static bool wait_for(MigramMigration *m, WaitPred pred, bool *lost,
		     GError **error)
{
	SrcPostcopy *pc = m->pc;
	bool ok;

	*lost = false;
	pthread_mutex_lock(&pc->lock);
	while (!pred(pc) && !pc->rp_down && !pc->rp_error &&
	       !g_atomic_int_get(&m->cancelled))
		pthread_cond_wait(&pc->cond, &pc->lock);
	ok = pred(pc);
	if (!ok && !pc->rp_error && !g_atomic_int_get(&m->cancelled))
		*lost = true;
	pthread_mutex_unlock(&pc->lock);
	if (!ok && !*lost)
		migram_sender_check(m, error);
	return ok;
}

/*
 * Paused: stop using the dead connection, wait for recover() or cancel,
 * then the receivedmap handshake on the new one.  Loops while recovery
 * itself fails.  false only on cancel or a hostile message.
 */
static bool pause_and_recover(MigramMigration *m, GError **error)
{
	SrcPostcopy *pc = m->pc;

	for (;;) {
		MigramChannel *ch;
		bool lost = false;

		shutdown(migram_channel_fd(m->ch), SHUT_RDWR);
		rp_stop(m);
		if (pc->pw) {
			/* Recovery goes on without preempt: end it here. */
			shutdown(migram_channel_fd(m->preempt), SHUT_RDWR);
			migram_stream_writer_free(pc->pw);
			pc->pw = NULL;
			m->st.postcopy_preempt = false;
		}
		if (!migram_sender_check(m, error))
			return false;
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
		if (!ch)
			return migram_sender_check(m, error);

		pthread_mutex_lock(&m->cancel_lock);
		m->ch = ch;
		m->preempt = NULL;
		pthread_mutex_unlock(&m->cancel_lock);
		migram_stream_writer_free(m->w);
		m->w = migram_stream_writer_new(ch);
		m->st.status = MIGRAM_MIGRATION_POSTCOPY_RECOVER;
		migram_sender_publish(m);
		if (!rp_start(m, ch, error))
			return false;

		/* Ask for every block's receivedmap. */
		pthread_mutex_lock(&pc->lock);
		pc->recv = g_new0(unsigned long *, m->blocks->len);
		pc->recv_pending = m->blocks->len;
		pc->resume_acked = false;
		pthread_mutex_unlock(&pc->lock);
		for (guint i = 0; i < m->blocks->len; i++) {
			const char *id = sb_at(m, i)->idstr;
			guint8 buf[257];
			size_t n = strlen(id);

			buf[0] = (guint8)n;
			g_strlcpy((char *)buf + 1, id, sizeof(buf) - 1);
			migram_stream_writer_command(m->w,
						     MIGRAM_CMD_RECV_BITMAP,
						     buf, (uint16_t)(n + 1));
		}
		if (!migram_channel_flush(ch, NULL)) {
			lost = true; /* the new connection failed too */
		} else if (!wait_for(m, pred_recv, &lost, error)) {
			if (!lost)
				goto fail; /* cancelled or hostile: error set */
		} else {
			/* bmap = not received. */
			m->dirty_pages = 0;
			for (guint i = 0; i < m->blocks->len; i++) {
				SendBlock *sb = sb_at(m, i);

				migram_bitmap_clear(sb->bmap, 0,
						    (size_t)sb->pages);
				migram_bitmap_set(sb->bmap, 0,
						  (size_t)sb->pages);
				migram_bitmap_andnot_atomic(sb->bmap,
							    pc->recv[i], 0,
							    (size_t)sb->pages);
				m->dirty_pages += migram_bitmap_count(
					sb->bmap, 0, (size_t)sb->pages);
			}
			migram_stream_writer_command(m->w,
						     MIGRAM_CMD_POSTCOPY_RESUME,
						     NULL, 0);
			if (!migram_channel_flush(ch, NULL))
				lost = true;
			else if (!wait_for(m, pred_ack, &lost, error) && !lost)
				goto fail; /* cancelled or hostile: error set */
		}
		for (guint i = 0; i < m->blocks->len; i++)
			migram_bitmap_free(pc->recv[i]);
		g_clear_pointer(&pc->recv, g_free);
		if (lost)
			continue;
		m->st.postcopy_recoveries++;
		m->st.status = MIGRAM_MIGRATION_POSTCOPY_ACTIVE;
		m->cur = 0;
		m->cur_page = 0;
		migram_sender_publish(m);
		return true;
fail:
		for (guint i = 0; i < m->blocks->len; i++)
			migram_bitmap_free(pc->recv[i]);
		g_clear_pointer(&pc->recv, g_free);
		return false;
	}
}

bool migram_postcopy_src_run(MigramMigration *m, GError **error)
{
	SrcPostcopy *pc = m->pc;
	GError *err = NULL;

	if (!switch_over(m, error))
		return false;
	for (;;) {
		bool lost = false;

		while (m->dirty_pages && !connection_lost(m)) {
			if (!migram_sender_check(m, error))
				return false;
			if (!postcopy_section(m, &err)) {
				if (!connection_lost(m)) {
					g_propagate_error(error, err);
					return false;
				}
				g_clear_error(&err);
			}
			migram_sender_publish(m);
		}
		if (!connection_lost(m)) {
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
				if (wait_for(m, pred_shut, &lost, error))
					break;
				if (!lost)
					return false;
			}
		}
		if (!pause_and_recover(m, error))
			return false;
	}
	if (pc->shut_code) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "destination ended postcopy with error %u",
			    pc->shut_code);
		return false;
	}
	m->st.postcopy_time_ms =
		(uint64_t)(g_get_monotonic_time() - pc->t_switch) / 1000;
	m->st.transferred_bytes = migram_sender_bytes_sent(m);
	return true;
}

/* Precopy finished with a return path open: the destination's SHUT. */
bool migram_postcopy_src_precopy_done(MigramMigration *m, GError **error)
{
	SrcPostcopy *pc = m->pc;
	bool lost;

	if (!wait_for(m, pred_shut, &lost, error))
		return lost; /* a closed return path after EOF is fine */
	if (pc->shut_code) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "destination reported error %u at the end",
			    pc->shut_code);
		return false;
	}
	return true;
}

void migram_postcopy_src_cleanup(MigramMigration *m)
{
	SrcPostcopy *pc = m->pc;

	rp_stop(m);
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

MIGRAM_EXPORT bool migram_migration_recover(MigramMigration *m,
					    MigramChannel *ch, GError **error)
{
	SrcPostcopy *pc = m->pc;
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
