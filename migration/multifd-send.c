/* SPDX-License-Identifier: MIT */
/*
 * Sending threads of the data channels.  The migration thread fills a
 * batch of up to MIGRAM_MULTIFD_PAGES_MAX pages of one block (a pointer
 * and an offset per page: no copy, no lock) and hands a full batch to an
 * idle channel by swapping batch buffers under the hand-off lock.  The
 * channel thread then looks at every page, lists zero pages without their
 * bytes, and writes one packet with writev(): header and offsets first,
 * then the payloads straight from guest memory, or, with zstd
 * (migram_multifd_send_set_zstd), one compressed payload in their place.
 *
 * Threads.  `lock` guards every channel's state (idle, job, sync, quit),
 * the shared error and `cancelled`; `cond` signals every change.  The
 * migration thread owns `cur`; a channel owns its job while busy.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/migram.h"
#include "buffer.h"
#include "stream-error.h"
#include "stream-internal.h"
#include "multifd.h"

typedef struct {
	const char *name;
	const uint8_t *host;
	uint32_t n;
	uint64_t off[MIGRAM_MULTIFD_PAGES_MAX];
} Batch;

typedef struct {
	MigramMultifdSend *s;
	unsigned int id;
	int fd;
	pthread_t thread;
	bool started;
	bool busy; /* a job or a sync is pending */
	bool sync; /* the pending job ends with the SYNC flag */
	Batch *job;
	uint64_t packet_num;
	uint64_t pages, zero, bytes; /* atomics */
	MigramMultifdZstd *zstd;     /* NULL: payloads as they are */
	uint8_t hdr[MIGRAM_MULTIFD_HDR_SIZE + 8 * MIGRAM_MULTIFD_PAGES_MAX];
	uint64_t order[MIGRAM_MULTIFD_PAGES_MAX];
	struct iovec iov[MIGRAM_MULTIFD_PAGES_MAX + 1];
} SendChan;

struct MigramMultifdSend {
	unsigned int n;
	int timeout_ms; /* a write stalled this long fails; -1: never */
	SendChan *ch;
	Batch *cur;
	Batch *spare;      /* n + 1 batches: one per channel and cur */
	unsigned int next; /* round robin start */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool quit, cancelled;
	bool whole; /* never list zero pages (set before the threads read) */
	GError *error;
};

static bool write_all(SendChan *c, struct iovec *iov, int n, GError **error)
{
	while (n > 0) {
		struct msghdr msg = { .msg_iov = iov,
				      .msg_iovlen = (size_t)MIN(n, IOV_MAX) };
		ssize_t k;

		/* data channels are sockets: MSG_NOSIGNAL, never SIGPIPE.  The
		 * payloads are guest memory the guest may be writing: read
		 * racily on purpose (a later write marks the log again), as
		 * the main channel does; tell ThreadSanitizer. */
		migram_tsan_ignore_reads_begin();
		k = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		migram_tsan_ignore_reads_end();

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* A full socket: wait for room, at most io_timeout_ms
			 * (a black-holed link never closes; cancel's shutdown
			 * wakes the poll). */
			struct pollfd p = { .fd = c->fd, .events = POLLOUT };
			int r = poll(&p, 1, c->s->timeout_ms);

			if (r < 0 && errno != EINTR) {
				g_set_error(
					error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
					"data channel %u, packet %" G_GUINT64_FORMAT
					": poll: %s",
					c->id, c->packet_num,
					g_strerror(errno));
				return false;
			}
			if (r == 0) {
				g_set_error(
					error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
					"data channel %u, packet %" G_GUINT64_FORMAT
					": connection on fd %d stalled: it "
					"could not write for %d ms "
					"(io_timeout_ms)",
					c->id, c->packet_num, c->fd,
					c->s->timeout_ms);
				return false;
			}
			continue;
		}
		if (k < 0) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "data channel %u, packet %" G_GUINT64_FORMAT
				    ": %s",
				    c->id, c->packet_num, g_strerror(errno));
			return false;
		}
		__atomic_fetch_add(&c->bytes, (uint64_t)k, __ATOMIC_RELAXED);
		migram_iov_advance(&iov, &n, (size_t)k);
	}
	return true;
}

/* Send the job (possibly empty) as one packet. */
static bool send_packet(SendChan *c, const Batch *b, bool sync, GError **error)
{
	MigramMultifdHdr h = { 0 };
	uint32_t normal = 0, zero = 0;
	int niov = 1;

	for (uint32_t i = 0; i < b->n; i++) {
		const uint8_t *p = b->host + b->off[i];

		if (!c->s->whole &&
		    migram_buffer_is_zero(p, MIGRAM_MULTIFD_PAGE)) {
			c->order[b->n - 1 - zero++] = b->off[i];
		} else {
			c->order[normal++] = b->off[i];
			c->iov[niov].iov_base = (void *)p;
			c->iov[niov++].iov_len = MIGRAM_MULTIFD_PAGE;
		}
	}
	/* zero pages were stored from the end, in reverse: restore order */
	for (uint32_t i = 0; i < zero / 2; i++) {
		uint64_t t = c->order[normal + i];

		c->order[normal + i] = c->order[b->n - 1 - i];
		c->order[b->n - 1 - i] = t;
	}
	h.flags = sync ? MIGRAM_MULTIFD_FLAG_SYNC : 0;
	h.pages_alloc = MIGRAM_MULTIFD_PAGES_MAX;
	h.normal = normal;
	h.zero = zero;
	h.next_packet_size = normal * MIGRAM_MULTIFD_PAGE;
	if (c->zstd && normal) { /* one compressed payload replaces them */
		const uint8_t *z;
		uint32_t zlen;

		if (!migram_multifd_zstd_compress(c->zstd, c->iov + 1, normal,
						  c->id, c->packet_num, &z,
						  &zlen, error))
			return false;
		h.flags |= MIGRAM_MULTIFD_FLAG_ZSTD;
		h.next_packet_size = zlen;
		c->iov[1].iov_base = (void *)z;
		c->iov[1].iov_len = zlen;
		niov = 2;
	}
	h.packet_num = c->packet_num;
	if (b->n)
		g_strlcpy(h.block, b->name, sizeof(h.block));
	c->iov[0].iov_base = c->hdr;
	c->iov[0].iov_len = migram_multifd_encode_hdr(c->hdr, &h, c->order);
	if (!write_all(c, c->iov, niov, error))
		return false;
	c->packet_num++;
	__atomic_fetch_add(&c->pages, normal, __ATOMIC_RELAXED);
	__atomic_fetch_add(&c->zero, zero, __ATOMIC_RELAXED);
	return true;
}

static void *chan_thread(void *opaque)
{
	SendChan *c = opaque;
	MigramMultifdSend *s = c->s;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		GError *err = NULL;
		bool sync, ok;

		while (!c->busy && !s->quit && !s->cancelled)
			pthread_cond_wait(&s->cond, &s->lock);
		if (s->quit || s->cancelled)
			break;
		sync = c->sync;
		pthread_mutex_unlock(&s->lock);
		ok = send_packet(c, c->job, sync, &err);
		pthread_mutex_lock(&s->lock);
		c->job->n = 0;
		c->busy = false;
		c->sync = false;
		pthread_cond_broadcast(&s->cond);
		if (!ok) {
			if (!s->error)
				s->error = err;
			else
				g_error_free(err);
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static bool failed_locked(MigramMultifdSend *s, GError **error)
{
	if (s->error) {
		g_propagate_error(error, g_error_copy(s->error));
		return true;
	}
	if (s->cancelled) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_CANCELLED,
			    "data channels cancelled");
		return true;
	}
	return false;
}

/* Give cur to an idle channel (waiting for one); sync: mark it so. */
static bool hand_off(MigramMultifdSend *s, GError **error)
{
	SendChan *c = NULL;

	pthread_mutex_lock(&s->lock);
	while (!failed_locked(s, error)) {
		for (unsigned int k = 0; k < s->n && !c; k++) {
			SendChan *t = &s->ch[(s->next + k) % s->n];

			if (!t->busy)
				c = t;
		}
		if (c)
			break;
		pthread_cond_wait(&s->cond, &s->lock);
	}
	if (c) {
		Batch *b = c->job;

		c->job = s->cur;
		s->cur = b;
		c->busy = true;
		s->next = (c->id + 1) % s->n;
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	return c != NULL;
}

bool migram_multifd_send_queue(MigramMultifdSend *s, const char *name,
			       const uint8_t *host, uint64_t offset,
			       GError **error)
{
	Batch *b = s->cur;

	if (b->n && (b->name != name || b->host != host)) {
		if (!hand_off(s, error))
			return false;
		b = s->cur;
	}
	b->name = name;
	b->host = host;
	b->off[b->n++] = offset;
	if (b->n == MIGRAM_MULTIFD_PAGES_MAX)
		return hand_off(s, error);
	return true;
}

bool migram_multifd_send_sync(MigramMultifdSend *s, GError **error)
{
	bool ok = true;

	if (s->cur->n && !hand_off(s, error))
		return false;
	pthread_mutex_lock(&s->lock);
	/* every channel: after its current job, one SYNC packet */
	for (unsigned int i = 0; i < s->n && ok; i++) {
		SendChan *c = &s->ch[i];

		while (ok && c->busy) {
			if (failed_locked(s, error))
				ok = false;
			else
				pthread_cond_wait(&s->cond, &s->lock);
		}
		if (!ok)
			break;
		c->job->n = 0;
		c->sync = true;
		c->busy = true;
		pthread_cond_broadcast(&s->cond);
	}
	for (unsigned int i = 0; i < s->n && ok; i++) {
		while (ok && s->ch[i].busy) {
			if (failed_locked(s, error))
				ok = false;
			else
				pthread_cond_wait(&s->cond, &s->lock);
		}
	}
	pthread_mutex_unlock(&s->lock);
	return ok;
}

void migram_multifd_send_whole_pages(MigramMultifdSend *s)
{
	pthread_mutex_lock(&s->lock); /* the threads read it under it */
	s->whole = true;
	pthread_mutex_unlock(&s->lock);
}

bool migram_multifd_send_set_zstd(MigramMultifdSend *s, int level,
				  GError **error)
{
	for (unsigned int i = 0; i < s->n; i++) {
		MigramMultifdZstd *z = migram_multifd_zstd_new(true, level, i,
							       error);

		if (!z)
			return false;
		/* the channel reads it after the hand-off's lock */
		pthread_mutex_lock(&s->lock);
		s->ch[i].zstd = z;
		pthread_mutex_unlock(&s->lock);
	}
	return true;
}

MigramMultifdSend *migram_multifd_send_new(unsigned int n, const int *fds,
					   const uint8_t uuid[16],
					   unsigned int io_timeout_ms,
					   GError **error)
{
	MigramMultifdSend *s;

	if (n == 0 || n > MIGRAM_MULTIFD_CHANNELS_MAX) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%u data channels (1..%u)", n,
			    MIGRAM_MULTIFD_CHANNELS_MAX);
		return NULL;
	}
	s = g_new0(MigramMultifdSend, 1);
	s->n = n;
	s->timeout_ms = io_timeout_ms ? (int)MIN(io_timeout_ms, INT_MAX) : -1;
	s->ch = g_new0(SendChan, n);
	s->spare = g_new0(Batch, n + 1);
	s->cur = &s->spare[n];
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	for (unsigned int i = 0; i < n; i++) {
		SendChan *c = &s->ch[i];
		uint8_t init[MIGRAM_MULTIFD_INIT_SIZE];
		struct iovec iov = { init, sizeof(init) };
		int e;

		c->s = s;
		c->id = i;
		c->fd = fds[i];
		c->job = &s->spare[i];
		migram_multifd_encode_init(init, uuid, (uint8_t)i);
		if (!write_all(c, &iov, 1, error)) {
			g_prefix_error(error, "initial packet: ");
			migram_multifd_send_free(s);
			return NULL;
		}
		e = pthread_create(&c->thread, NULL, chan_thread, c);
		if (e) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "data channel %u: cannot start its thread: "
				    "%s",
				    i, g_strerror(e));
			migram_multifd_send_free(s);
			return NULL;
		}
		c->started = true;
	}
	return s;
}

void migram_multifd_send_counts(MigramMultifdSend *s, uint64_t *pages,
				uint64_t *zero_pages, uint64_t *bytes)
{
	*pages = *zero_pages = *bytes = 0;
	for (unsigned int i = 0; i < s->n; i++) {
		*pages += __atomic_load_n(&s->ch[i].pages, __ATOMIC_RELAXED);
		*zero_pages += __atomic_load_n(&s->ch[i].zero,
					       __ATOMIC_RELAXED);
		*bytes += __atomic_load_n(&s->ch[i].bytes, __ATOMIC_RELAXED);
	}
}

void migram_multifd_send_cancel(MigramMultifdSend *s)
{
	pthread_mutex_lock(&s->lock);
	s->cancelled = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	for (unsigned int i = 0; i < s->n; i++)
		shutdown(s->ch[i].fd, SHUT_RDWR);
}

void migram_multifd_send_free(MigramMultifdSend *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->quit = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	for (unsigned int i = 0; i < s->n; i++)
		if (s->ch[i].started)
			pthread_join(s->ch[i].thread, NULL);
	for (unsigned int i = 0; i < s->n; i++)
		migram_multifd_zstd_free(s->ch[i].zstd);
	g_clear_error(&s->error);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->cond);
	g_free(s->spare);
	g_free(s->ch);
	g_free(s);
}
