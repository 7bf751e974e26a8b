/* SPDX-License-Identifier: MIT */
/*
 * Receiving threads of the data channels.  Each reads a packet header and
 * its offsets, checks them (multifd-wire.c), then reads the payloads with
 * readv() straight into guest memory: no intermediate buffer, no copy.
 * A zstd payload is read into the channel's buffer and decompressed
 * straight into the pages (multifd-zstd.c).
 * Zero pages are listed, not sent: a listed page is cleared only if it is
 * not zero already (fresh memory is never touched for writing).
 *
 * Ordering.  A page sent in section k and again in section k+1 on another
 * channel: each channel stops after its SYNC packet until the main stream
 * reaches the same sync point (a RAM EOS) and every channel has arrived,
 * so everything of section k is placed before anything of k+1 is read.
 *
 * Threads.  One thread per channel; the receiver's thread calls sync, the
 * counts and free; cancel from anywhere.  `lock` guards arrived, gen,
 * cancelled, error and each channel's ended flag.  The per-packet path
 * neither allocates nor locks (buffers are per channel, made at start).
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "buffer.h"
#include "stream-error.h"
#include "stream-internal.h"
#include "multifd.h"

typedef struct {
	MigramMultifdRecv *r; /* NULL when drained inline (no waiting) */
	const MigramMultifdBlock *blocks;
	unsigned int nblocks;
	unsigned int id;
	int fd;
	pthread_t thread;
	bool started;
	bool ended; /* clean end of stream; under r->lock */
	uint64_t syncs;
	uint64_t pages, zero;    /* atomics */
	MigramMultifdZstd *zstd; /* made at the first zstd packet */
	uint8_t *dst[MIGRAM_MULTIFD_PAGES_MAX];
	uint8_t hdr[MIGRAM_MULTIFD_HDR_SIZE];
	uint8_t raw[MIGRAM_MULTIFD_PAGES_MAX * 8];
	uint64_t off[MIGRAM_MULTIFD_PAGES_MAX];
	struct iovec iov[MIGRAM_MULTIFD_PAGES_MAX];
} RecvChan;

struct MigramMultifdRecv {
	MigramMultifdBlock *blocks;
	unsigned int nblocks;
	unsigned int n;
	RecvChan *ch;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int arrived;
	uint64_t gen;
	bool cancelled;
	GError *error; /* the first channel's failure */
};

/* Read exactly len bytes; *eof_clean when the stream ended before any. */
static bool read_full(RecvChan *c, void *buf, size_t len, bool *eof_clean,
		      const char *what, GError **error)
{
	size_t done = 0;

	if (eof_clean)
		*eof_clean = false;
	while (done < len) {
		ssize_t k = read(c->fd, (uint8_t *)buf + done, len - done);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "data channel %u: reading %s: %s", c->id,
				    what, g_strerror(errno));
			return false;
		}
		if (k == 0) {
			if (done == 0 && eof_clean) {
				*eof_clean = true;
				return false;
			}
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
				    "data channel %u: stream ended inside %s "
				    "(%zu of %zu bytes)",
				    c->id, what, done, len);
			return false;
		}
		done += (size_t)k;
	}
	return true;
}

/* readv until every iovec is full; iov is consumed. */
static bool readv_full(RecvChan *c, struct iovec *iov, int n,
		       const MigramMultifdHdr *h, GError **error)
{
	while (n > 0) {
		ssize_t k = readv(c->fd, iov, MIN(n, IOV_MAX));

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			g_set_error(error, MIGRAM_ERROR,
				    k < 0 ? MIGRAM_ERROR_IO
					  : MIGRAM_ERROR_PROTOCOL,
				    "data channel %u, packet %" G_GUINT64_FORMAT
				    ": %s in the payload",
				    c->id, h->packet_num,
				    k < 0 ? g_strerror(errno) : "stream ended");
			return false;
		}
		migram_iov_advance(&iov, &n, (size_t)k);
	}
	return true;
}

static const MigramMultifdBlock *lookup(RecvChan *c, const char *name)
{
	for (unsigned int i = 0; i < c->nblocks; i++)
		if (strcmp(c->blocks[i].name, name) == 0)
			return &c->blocks[i];
	return NULL;
}

static bool wait_sync(RecvChan *c)
{
	MigramMultifdRecv *r = c->r;
	uint64_t gen;
	bool ok;

	c->syncs++;
	if (!r)
		return true;
	pthread_mutex_lock(&r->lock);
	gen = r->gen;
	r->arrived++;
	pthread_cond_broadcast(&r->cond);
	while (r->gen == gen && !r->cancelled)
		pthread_cond_wait(&r->cond, &r->lock);
	ok = !r->cancelled;
	pthread_mutex_unlock(&r->lock);
	return ok;
}

/* A SYNC packet: wait for the main stream. */
static bool after_packet(RecvChan *c, const MigramMultifdHdr *h, GError **error)
{
	if ((h->flags & MIGRAM_MULTIFD_FLAG_SYNC) && !wait_sync(c)) {
		g_set_error(
			error, MIGRAM_ERROR, MIGRAM_ERROR_CANCELLED,
			"data channel %u: cancelled after packet %" G_GUINT64_FORMAT,
			c->id, h->packet_num);
		return false;
	}
	return true;
}

/* A zstd payload: read it whole, decompress into the pages in place.  The
 * channel's zstd state is made at its first compressed packet. */
static bool read_zstd(RecvChan *c, const MigramMultifdBlock *b,
		      const MigramMultifdHdr *h, GError **error)
{
	if (!c->zstd &&
	    !(c->zstd = migram_multifd_zstd_new(false, 0, c->id, error)))
		return false;
	if (!read_full(c, migram_multifd_zstd_buffer(c->zstd),
		       h->next_packet_size, NULL, "a zstd payload", error))
		return false;
	for (uint32_t i = 0; i < h->normal; i++)
		c->dst[i] = b->host + c->off[i];
	return migram_multifd_zstd_decompress(c->zstd, h->next_packet_size,
					      c->dst, c->off, h->normal, c->id,
					      h->packet_num, error);
}

/* One packet; false at the end (*end set when it was clean) or an error. */
static bool one_packet(RecvChan *c, bool *end, GError **error)
{
	MigramMultifdHdr h;
	const MigramMultifdBlock *b = NULL;
	uint32_t n;

	if (!read_full(c, c->hdr, sizeof(c->hdr), end, "a packet header",
		       error))
		return false;
	if (!migram_multifd_parse_hdr(c->hdr, c->id, &h, error))
		return false;
	n = h.normal + h.zero;
	/* the whole array (pages_alloc entries, at most 128) is on the wire */
	if (!read_full(c, c->raw, 8 * (size_t)h.pages_alloc, NULL,
		       "the page offsets", error))
		return false;
	if (n == 0)
		return after_packet(c, &h, error);
	if (!(b = lookup(c, h.block))) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "data channel %u, packet %" G_GUINT64_FORMAT
			    ": unknown block '%s'",
			    c->id, h.packet_num, h.block);
		return false;
	}
	if (!migram_multifd_parse_offsets(c->raw, n, &h, b->used_length, c->id,
					  c->off, error))
		return false;
	if (h.normal && (h.flags & MIGRAM_MULTIFD_FLAG_ZSTD)) {
		if (!read_zstd(c, b, &h, error))
			return false;
	} else {
		for (uint32_t i = 0; i < h.normal; i++) {
			c->iov[i].iov_base = b->host + c->off[i];
			c->iov[i].iov_len = MIGRAM_MULTIFD_PAGE;
		}
		if (h.normal &&
		    !readv_full(c, c->iov, (int)h.normal, &h, error))
			return false;
	}
	for (uint32_t i = h.normal; i < n; i++) {
		uint8_t *p = b->host + c->off[i];

		if (!migram_buffer_is_zero(p, MIGRAM_MULTIFD_PAGE))
			memset(p, 0, MIGRAM_MULTIFD_PAGE);
	}
	for (uint32_t i = 0; b->receivedmap && i < n; i++)
		migram_bitmap_set_bit_atomic(b->receivedmap,
					     (size_t)(c->off[i] /
						      MIGRAM_MULTIFD_PAGE));
	__atomic_fetch_add(&c->pages, h.normal, __ATOMIC_RELAXED);
	__atomic_fetch_add(&c->zero, h.zero, __ATOMIC_RELAXED);
	return after_packet(c, &h, error);
}

static bool run_channel(RecvChan *c, GError **error)
{
	bool end = false;

	while (one_packet(c, &end, error))
		;
	return end;
}

static void *chan_thread(void *opaque)
{
	RecvChan *c = opaque;
	MigramMultifdRecv *r = c->r;
	GError *err = NULL;
	bool clean = run_channel(c, &err);

	pthread_mutex_lock(&r->lock);
	if (clean)
		c->ended = true;
	else if (!r->error)
		r->error = g_steal_pointer(&err);
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	g_clear_error(&err);
	return NULL;
}

bool migram_multifd_recv_drain_fd(const MigramMultifdBlock *blocks,
				  unsigned int nblocks, int fd, uint64_t *syncs,
				  GError **error)
{
	RecvChan *c = g_new0(RecvChan, 1);
	bool ok;

	c->blocks = blocks;
	c->nblocks = nblocks;
	c->fd = fd;
	ok = run_channel(c, error);
	*syncs = c->syncs;
	migram_multifd_zstd_free(c->zstd);
	g_free(c);
	return ok;
}

MigramMultifdRecv *migram_multifd_recv_new(const MigramMultifdBlock *blocks,
					   unsigned int nblocks, unsigned int n,
					   const int *fds, const uint8_t *uuid,
					   GError **error)
{
	MigramMultifdRecv *r;
	MigramMultifdIds ids = { { 0 } };

	if (n == 0 || n > MIGRAM_MULTIFD_CHANNELS_MAX) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%u data channels (1..%u)", n,
			    MIGRAM_MULTIFD_CHANNELS_MAX);
		return NULL;
	}
	r = g_new0(MigramMultifdRecv, 1);
	r->blocks = g_memdup2(blocks, sizeof(*blocks) * nblocks);
	r->nblocks = nblocks;
	r->n = n;
	r->ch = g_new0(RecvChan, n);
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	for (unsigned int i = 0; i < n; i++)
		r->ch[i].fd = -1;
	for (unsigned int i = 0; i < n; i++) {
		uint8_t init[MIGRAM_MULTIFD_INIT_SIZE];
		g_autofree char *where = g_strdup_printf(
			"data connection %u (fd %d)", i, fds[i]);
		RecvChan tmp = { .id = i, .fd = fds[i] };
		uint8_t id;

		if (!read_full(&tmp, init, sizeof(init), NULL,
			       "the initial packet", error) ||
		    !migram_multifd_parse_init(init, n, uuid, &ids, where, &id,
					       error)) {
			migram_multifd_recv_free(r);
			return NULL;
		}
		r->ch[id].fd = fds[i];
	}
	for (unsigned int i = 0; i < n; i++) {
		RecvChan *c = &r->ch[i];
		int e;

		c->r = r;
		c->blocks = r->blocks;
		c->nblocks = nblocks;
		c->id = i;
		e = pthread_create(&c->thread, NULL, chan_thread, c);
		if (e) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "data channel %u: cannot start its thread: "
				    "%s",
				    i, g_strerror(e));
			migram_multifd_recv_free(r);
			return NULL;
		}
		c->started = true;
	}
	return r;
}

bool migram_multifd_recv_sync(MigramMultifdRecv *r, GError **error)
{
	bool ok = true;

	pthread_mutex_lock(&r->lock);
	for (;;) {
		bool ended = false;

		for (unsigned int i = 0; i < r->n; i++)
			ended |= r->ch[i].ended;
		if (r->error || r->cancelled || ended || r->arrived == r->n)
			break;
		pthread_cond_wait(&r->cond, &r->lock);
	}
	if (r->error) {
		g_propagate_error(error, g_error_copy(r->error));
		ok = false;
	} else if (r->cancelled) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_CANCELLED,
			    "data channels cancelled");
		ok = false;
	} else if (r->arrived != r->n) {
		g_set_error(
			error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			"a data channel closed before sync point %" G_GUINT64_FORMAT
			" (%u of %u channels there)",
			r->gen + 1, r->arrived, r->n);
		ok = false;
	} else {
		r->arrived = 0;
		r->gen++;
		pthread_cond_broadcast(&r->cond);
	}
	pthread_mutex_unlock(&r->lock);
	return ok;
}

void migram_multifd_recv_cancel(MigramMultifdRecv *r)
{
	pthread_mutex_lock(&r->lock);
	r->cancelled = true;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	for (unsigned int i = 0; i < r->n; i++)
		if (r->ch[i].fd >= 0)
			shutdown(r->ch[i].fd, SHUT_RDWR);
}

void migram_multifd_recv_counts(MigramMultifdRecv *r, uint64_t *pages,
				uint64_t *zero_pages)
{
	*pages = *zero_pages = 0;
	for (unsigned int i = 0; i < r->n; i++) {
		*pages += __atomic_load_n(&r->ch[i].pages, __ATOMIC_RELAXED);
		*zero_pages += __atomic_load_n(&r->ch[i].zero,
					       __ATOMIC_RELAXED);
	}
}

void migram_multifd_recv_free(MigramMultifdRecv *r)
{
	if (!r)
		return;
	migram_multifd_recv_cancel(r);
	for (unsigned int i = 0; i < r->n; i++)
		if (r->ch[i].started)
			pthread_join(r->ch[i].thread, NULL);
	for (unsigned int i = 0; i < r->n; i++)
		migram_multifd_zstd_free(r->ch[i].zstd);
	g_clear_error(&r->error);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	g_free(r->ch);
	g_free(r->blocks);
	g_free(r);
}
