/* SPDX-License-Identifier: MIT */
/*
 * MigramChannel: buffered, gathering I/O over one file descriptor.
 *
 * Write side.  Small items are copied into a 64 KiB staging buffer; each
 * run of consecutive small items is one iovec.  A page payload queued with
 * put_ref() is its own iovec pointing into guest memory.  When the staging
 * buffer or the iovec array is full, the queue is flushed with writev().
 * 1024 iovecs (IOV_MAX) carry up to 512 pages of 4 KiB plus headers per call,
 * which is where loopback TCP reaches its plateau on this machine kind (see
 * docs/architecture.md).
 *
 * Read side.  read() fills a 256 KiB buffer; get_bytes() copies from it and
 * reads straight into the caller's memory once a long request has drained
 * it, so a large payload is not copied twice.
 *
 * Rate limit.  As QEMU's max-bandwidth: a budget of rate / 10 bytes per
 * 100 ms slice.  After each writev the bytes are charged to the slice; while
 * the slice is over budget the writer sleeps to the slice's end and carries
 * the excess into the next one, so the long-run rate is the limit even when
 * one flush is larger than a slice's budget.  Bytes written on other
 * connections of the same migration (the data channels) are charged to the
 * same slices by the writer's thread (migram_channel_charge), so the limit
 * is the migration's total.
 *
 * Errors are sticky (the first one is kept in ch->error).  Cancel sets a
 * flag any thread may set and shuts the fd down, so a blocked read or
 * write returns at once.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/channel.h"
#include "migram/migram.h"
#include "sender-env.h"
#include "stream-internal.h"

#define STAGE_BYTES ((size_t)64 * 1024)
#define MAX_IOV 1024
#define READ_BUF_BYTES ((size_t)256 * 1024)
#define SLICE_US 100000

struct MigramChannel {
	int fd;
	bool own_fd;
	bool not_socket; /* sendmsg said ENOTSOCK: use writev */
	bool exact;      /* never read past what was asked (return path) */
	int timeout_ms;  /* a read or write stalled this long fails; 0: never */
	GError *error;   /* sticky; channel thread only */
	int cancelled;   /* atomic */

	/* write queue */
	guint8 *stage;
	size_t stage_len;
	struct iovec iov[MAX_IOV];
	int niov;

	/* read buffer: bytes [rpos, rlen) are unread */
	guint8 *rbuf;
	size_t rpos, rlen;
	uint64_t read_offset;

	/* counters: atomic, read from any thread */
	uint64_t sent;
	uint64_t received;

	/* rate limit: rate is atomic, the slice is the writer's */
	uint64_t rate;
	uint64_t rate_slices; /* slices moved on from (tests) */
	gint64 slice_start;
	uint64_t slice_bytes;

	/* virtual channel (sender-env.h): both NULL for an fd channel */
	const MigramChannelSink *sink;
	const MigramClock *clock;
};

MIGRAM_EXPORT MigramChannel *migram_channel_new(int fd, bool own_fd)
{
	MigramChannel *ch = g_new0(MigramChannel, 1);

	ch->fd = fd;
	ch->own_fd = own_fd;
	ch->stage = g_malloc(STAGE_BYTES);
	ch->rbuf = g_malloc(READ_BUF_BYTES);
	return ch;
}

MigramChannel *migram_channel_new_virtual(const MigramChannelSink *sink,
					  const MigramClock *clock)
{
	MigramChannel *ch = migram_channel_new(-1, false);

	ch->sink = sink;
	ch->clock = clock;
	return ch;
}

MIGRAM_EXPORT void migram_channel_free(MigramChannel *ch)
{
	if (!ch)
		return;
	if (ch->own_fd && ch->fd >= 0)
		close(ch->fd);
	g_clear_error(&ch->error);
	g_free(ch->stage);
	g_free(ch->rbuf);
	g_free(ch);
}

MIGRAM_EXPORT int migram_channel_fd(const MigramChannel *ch)
{
	return ch->fd;
}

static bool failed(MigramChannel *ch)
{
	if (!ch->error && g_atomic_int_get(&ch->cancelled))
		ch->error = g_error_new(MIGRAM_ERROR, MIGRAM_ERROR_CANCELLED,
					"migration channel cancelled");
	return ch->error != NULL;
}

MIGRAM_EXPORT void migram_channel_set_error(MigramChannel *ch, GError *error)
{
	if (ch->error)
		g_error_free(error);
	else
		ch->error = error;
}

MIGRAM_EXPORT const GError *migram_channel_error(const MigramChannel *ch)
{
	return ch->error;
}

static bool report(MigramChannel *ch, GError **error)
{
	if (!failed(ch))
		return true;
	if (error)
		*error = g_error_copy(ch->error);
	return false;
}

static void io_fail(MigramChannel *ch, const char *what, int err)
{
	if (g_atomic_int_get(&ch->cancelled)) {
		failed(ch);
		return;
	}
	migram_channel_set_error(ch, g_error_new(MIGRAM_ERROR, MIGRAM_ERROR_IO,
						 "%s on fd %d failed: %s", what,
						 ch->fd, g_strerror(err)));
}

/*
 * Wait until fd is ready for events; false (the channel failed) on a poll
 * failure, or when the I/O timeout passes first: the connection stalled
 * (a peer that stopped reading, or writing, without closing).
 */
static bool wait_fd(MigramChannel *ch, short events)
{
	struct pollfd p = { .fd = ch->fd, .events = events };
	int r;

	while ((r = poll(&p, 1, ch->timeout_ms ? ch->timeout_ms : -1)) < 0) {
		if (errno != EINTR) {
			io_fail(ch, "poll", errno);
			return false;
		}
	}
	if (r == 0 && !failed(ch))
		migram_channel_set_error(
			ch,
			g_error_new(MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "connection on fd %d stalled: it could "
				    "not %s for %d ms (io_timeout_ms; "
				    "%" G_GUINT64_FORMAT
				    " bytes sent, %" G_GUINT64_FORMAT
				    " received)",
				    ch->fd, events == POLLIN ? "read" : "write",
				    ch->timeout_ms,
				    migram_channel_bytes_sent(ch),
				    migram_channel_bytes_received(ch)));
	return r > 0;
}

void migram_channel_set_io_timeout(MigramChannel *ch, unsigned int ms)
{
	int tcp_ms = (int)MIN(ms, (unsigned int)G_MAXINT);

	ch->timeout_ms = tcp_ms;
	/* TCP also gives up on data unacknowledged that long (ignored on
	 * other sockets). */
	(void)setsockopt(ch->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &tcp_ms,
			 sizeof(tcp_ms));
}

/* Charge n written bytes to the rate limit, sleeping while over budget. */
static void charge(MigramChannel *ch, size_t n)
{
	uint64_t rate = __atomic_load_n(&ch->rate, __ATOMIC_RELAXED);
	uint64_t budget;
	gint64 now;

	if (rate == 0)
		return;
	budget = MAX(rate / (G_USEC_PER_SEC / SLICE_US), 1);
	now = migram_clock_now(ch->clock);
	if (now - ch->slice_start >= SLICE_US) {
		ch->slice_start = now;
		ch->slice_bytes = 0;
		ch->rate_slices++;
	}
	ch->slice_bytes += n;
	while (ch->slice_bytes >= budget && !g_atomic_int_get(&ch->cancelled)) {
		gint64 end = ch->slice_start + SLICE_US;

		now = migram_clock_now(ch->clock);
		if (end > now)
			migram_clock_sleep(ch->clock, end - now);
		ch->slice_start = end;
		ch->slice_bytes -= budget;
		ch->rate_slices++;
	}
}

void migram_channel_charge(MigramChannel *ch, uint64_t n)
{
	charge(ch, (size_t)n);
}

/*
 * writev() that never raises SIGPIPE on a socket whose peer is gone: the
 * embedder gets EPIPE as an error instead of a signal.  Pipes and files
 * cannot take MSG_NOSIGNAL; embedders that write to a pipe should ignore
 * SIGPIPE, as QEMU does.
 */
static ssize_t gather_write(MigramChannel *ch, struct iovec *iov, int n)
{
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)n };
	ssize_t w;

	/*
	 * Referenced pages are guest memory the guest may be writing right
	 * now: precopy reads it racily on purpose (a later write marks the
	 * dirty log again).  Tell ThreadSanitizer; no-op otherwise.
	 */
	migram_tsan_ignore_reads_begin();
	if (ch->not_socket) {
		w = writev(ch->fd, iov, n);
	} else {
		/* With a timeout, never block inside sendmsg: wait_fd's
		 * poll is where a stall is timed. */
		w = sendmsg(ch->fd, &msg,
			    MSG_NOSIGNAL | (ch->timeout_ms ? MSG_DONTWAIT : 0));
		if (w < 0 && errno == ENOTSOCK) {
			ch->not_socket = true;
			w = writev(ch->fd, iov, n);
		}
	}
	migram_tsan_ignore_reads_end();
	return w;
}

MIGRAM_EXPORT bool migram_channel_flush(MigramChannel *ch, GError **error)
{
	struct iovec *iov = ch->iov;
	int n = ch->niov;

	if (ch->sink && n > 0 && !failed(ch)) {
		GError *err = NULL;
		size_t bytes = 0;

		for (int i = 0; i < n; i++)
			bytes += iov[i].iov_len;
		if (ch->sink->write(ch->sink->opaque, iov, n, &err)) {
			__atomic_add_fetch(&ch->sent, (uint64_t)bytes,
					   __ATOMIC_RELAXED);
			charge(ch, bytes);
		} else {
			migram_channel_set_error(
				ch,
				err ? err
				    : g_error_new(MIGRAM_ERROR, MIGRAM_ERROR_IO,
						  "virtual channel: the "
						  "sink refused a write"));
		}
		n = 0;
	}
	while (n > 0 && !failed(ch)) {
		ssize_t w = gather_write(ch, iov, MIN(n, IOV_MAX));

		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN && wait_fd(ch, POLLOUT))
				continue;
			io_fail(ch, "write", errno);
			break;
		}
		__atomic_add_fetch(&ch->sent, (uint64_t)w, __ATOMIC_RELAXED);
		charge(ch, (size_t)w);
		migram_iov_advance(&iov, &n, (size_t)w);
	}
	ch->niov = 0;
	ch->stage_len = 0;
	return report(ch, error);
}

static bool room_for_iov(MigramChannel *ch)
{
	if (ch->niov < MAX_IOV)
		return true;
	return migram_channel_flush(ch, NULL);
}

MIGRAM_EXPORT void migram_channel_put_bytes(MigramChannel *ch, const void *data,
					    size_t len)
{
	const guint8 *src = data;

	while (len > 0 && !failed(ch)) {
		struct iovec *last = ch->niov ? &ch->iov[ch->niov - 1] : NULL;
		guint8 *at = ch->stage + ch->stage_len;
		size_t n = MIN(len, STAGE_BYTES - ch->stage_len);

		if (n == 0) {
			migram_channel_flush(ch, NULL);
			continue;
		}
		/* Extend the last iovec when it ends where staging does. */
		if (!last || (guint8 *)last->iov_base + last->iov_len != at) {
			if (!room_for_iov(ch))
				return;
			at = ch->stage + ch->stage_len;
			last = &ch->iov[ch->niov++];
			last->iov_base = at;
			last->iov_len = 0;
		}
		memcpy(at, src, n);
		last->iov_len += n;
		ch->stage_len += n;
		src += n;
		len -= n;
	}
}

MIGRAM_EXPORT void migram_channel_put_ref(MigramChannel *ch, const void *data,
					  size_t len)
{
	if (len == 0 || failed(ch) || !room_for_iov(ch))
		return;
	ch->iov[ch->niov].iov_base = (void *)data;
	ch->iov[ch->niov].iov_len = len;
	ch->niov++;
}

MIGRAM_EXPORT void migram_channel_put_u8(MigramChannel *ch, uint8_t v)
{
	migram_channel_put_bytes(ch, &v, 1);
}

MIGRAM_EXPORT void migram_channel_put_be16(MigramChannel *ch, uint16_t v)
{
	uint16_t be = GUINT16_TO_BE(v);

	migram_channel_put_bytes(ch, &be, sizeof(be));
}

MIGRAM_EXPORT void migram_channel_put_be32(MigramChannel *ch, uint32_t v)
{
	uint32_t be = GUINT32_TO_BE(v);

	migram_channel_put_bytes(ch, &be, sizeof(be));
}

MIGRAM_EXPORT void migram_channel_put_be64(MigramChannel *ch, uint64_t v)
{
	uint64_t be = GUINT64_TO_BE(v);

	migram_channel_put_bytes(ch, &be, sizeof(be));
}

MIGRAM_EXPORT void migram_channel_put_counted_string(MigramChannel *ch,
						     const char *s)
{
	size_t n = strlen(s);

	if (n > 255) {
		migram_channel_set_error(
			ch, g_error_new(MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
					"counted string '%.32s...' is %zu "
					"bytes, more than 255",
					s, n));
		return;
	}
	migram_channel_put_u8(ch, (uint8_t)n);
	migram_channel_put_bytes(ch, s, n);
}

/* One read(); false with the channel failed on error or end of stream. */
static bool read_some(MigramChannel *ch, void *dst, size_t max, size_t *got)
{
	for (;;) {
		ssize_t r;

		if (failed(ch))
			return false;
		if (ch->timeout_ms && !wait_fd(ch, POLLIN))
			return false;
		r = read(ch->fd, dst, max);
		if (r > 0) {
			*got = (size_t)r;
			__atomic_add_fetch(&ch->received, (uint64_t)r,
					   __ATOMIC_RELAXED);
			return true;
		}
		if (r == 0) {
			if (!failed(ch))
				migram_channel_set_error(
					ch,
					g_error_new(
						MIGRAM_ERROR,
						MIGRAM_ERROR_PROTOCOL,
						"unexpected end of stream at "
						"byte %" G_GUINT64_FORMAT,
						ch->read_offset +
							(ch->rlen - ch->rpos)));
			return false;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN && wait_fd(ch, POLLIN))
			continue;
		io_fail(ch, "read", errno);
		return false;
	}
}

MIGRAM_EXPORT bool migram_channel_get_bytes(MigramChannel *ch, void *dst,
					    size_t len, GError **error)
{
	guint8 *out = dst;

	if (failed(ch))
		return report(ch, error);
	while (len > 0) {
		size_t avail = ch->rlen - ch->rpos, got;

		if (avail > 0) {
			size_t n = MIN(avail, len);

			memcpy(out, ch->rbuf + ch->rpos, n);
			ch->rpos += n;
			ch->read_offset += n;
			out += n;
			len -= n;
			continue;
		}
		if (len >= READ_BUF_BYTES / 4) {
			/* Long request, empty buffer: read in place. */
			if (!read_some(ch, out, len, &got))
				break;
			ch->read_offset += got;
			out += got;
			len -= got;
			continue;
		}
		ch->rpos = ch->rlen = 0;
		if (!read_some(ch, ch->rbuf, ch->exact ? len : READ_BUF_BYTES,
			       &got))
			break;
		ch->rlen = got;
	}
	if (len > 0) {
		report(ch, error);
		return false;
	}
	return true;
}

MIGRAM_EXPORT bool migram_channel_peek_u8(MigramChannel *ch, uint8_t *v,
					  GError **error)
{
	size_t got;

	if (failed(ch))
		return report(ch, error);
	if (ch->rpos == ch->rlen) {
		ch->rpos = ch->rlen = 0;
		if (!read_some(ch, ch->rbuf, ch->exact ? 1 : READ_BUF_BYTES,
			       &got))
			return report(ch, error);
		ch->rlen = got;
	}
	*v = ch->rbuf[ch->rpos];
	return true;
}

MIGRAM_EXPORT bool migram_channel_at_end(MigramChannel *ch, bool *at_end,
					 GError **error)
{
	ssize_t r;

	if (failed(ch))
		return report(ch, error);
	*at_end = false;
	if (ch->rpos < ch->rlen)
		return true;
	for (;;) {
		r = read(ch->fd, ch->rbuf, READ_BUF_BYTES);
		if (r >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN && wait_fd(ch, POLLIN))
			continue;
		io_fail(ch, "read", errno);
		return report(ch, error);
	}
	ch->rpos = 0;
	ch->rlen = (size_t)r;
	__atomic_add_fetch(&ch->received, (uint64_t)r, __ATOMIC_RELAXED);
	*at_end = r == 0;
	return true;
}

MIGRAM_EXPORT bool migram_channel_skip(MigramChannel *ch, uint64_t len,
				       GError **error)
{
	guint8 scratch[4096];

	while (len > 0) {
		size_t n = (size_t)MIN(len, sizeof(scratch));

		if (!migram_channel_get_bytes(ch, scratch, n, error))
			return false;
		len -= n;
	}
	return report(ch, error);
}

MIGRAM_EXPORT bool migram_channel_get_u8(MigramChannel *ch, uint8_t *v,
					 GError **error)
{
	return migram_channel_get_bytes(ch, v, 1, error);
}

MIGRAM_EXPORT bool migram_channel_get_be16(MigramChannel *ch, uint16_t *v,
					   GError **error)
{
	uint16_t be;

	if (!migram_channel_get_bytes(ch, &be, sizeof(be), error))
		return false;
	*v = GUINT16_FROM_BE(be);
	return true;
}

MIGRAM_EXPORT bool migram_channel_get_be32(MigramChannel *ch, uint32_t *v,
					   GError **error)
{
	uint32_t be;

	if (!migram_channel_get_bytes(ch, &be, sizeof(be), error))
		return false;
	*v = GUINT32_FROM_BE(be);
	return true;
}

MIGRAM_EXPORT bool migram_channel_get_be64(MigramChannel *ch, uint64_t *v,
					   GError **error)
{
	uint64_t be;

	if (!migram_channel_get_bytes(ch, &be, sizeof(be), error))
		return false;
	*v = GUINT64_FROM_BE(be);
	return true;
}

MIGRAM_EXPORT bool migram_channel_get_counted_string(MigramChannel *ch,
						     char buf[256],
						     GError **error)
{
	uint8_t n;

	if (!migram_channel_get_u8(ch, &n, error) ||
	    !migram_channel_get_bytes(ch, buf, n, error))
		return false;
	buf[n] = '\0';
	return true;
}

MIGRAM_EXPORT uint64_t migram_channel_read_offset(const MigramChannel *ch)
{
	return ch->read_offset;
}

MIGRAM_EXPORT uint64_t migram_channel_bytes_sent(const MigramChannel *ch)
{
	return __atomic_load_n(&ch->sent, __ATOMIC_RELAXED);
}

MIGRAM_EXPORT uint64_t migram_channel_bytes_received(const MigramChannel *ch)
{
	return __atomic_load_n(&ch->received, __ATOMIC_RELAXED);
}

MIGRAM_EXPORT void migram_channel_set_rate_limit(MigramChannel *ch,
						 uint64_t bytes_per_second)
{
	__atomic_store_n(&ch->rate, bytes_per_second, __ATOMIC_RELAXED);
}

uint64_t migram_channel_rate_slices(const MigramChannel *ch)
{
	return ch->rate_slices;
}

MIGRAM_EXPORT bool migram_channel_rate_exceeded(MigramChannel *ch)
{
	uint64_t rate = __atomic_load_n(&ch->rate, __ATOMIC_RELAXED);

	if (rate == 0)
		return false;
	if (migram_clock_now(ch->clock) - ch->slice_start >= SLICE_US)
		return false;
	return ch->slice_bytes >= MAX(rate / (G_USEC_PER_SEC / SLICE_US), 1);
}

MIGRAM_EXPORT void migram_channel_cancel(MigramChannel *ch)
{
	g_atomic_int_set(&ch->cancelled, 1);
	if (ch->fd >= 0)
		shutdown(ch->fd, SHUT_RDWR);
}

void migram_channel_set_exact_reads(MigramChannel *ch)
{
	ch->exact = true;
}
