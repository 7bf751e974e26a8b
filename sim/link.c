/* SPDX-License-Identifier: MIT */
/*
 * migram-sim's connections: socketpairs made before the fork (main,
 * preempt, and spares for the reconnects of --inject-disconnect-after), or
 * TCP, where the destination listens and the source connects.
 *
 * After a postcopy cut each side needs a new main connection: the next
 * spare socketpair end, or for TCP an accept (destination, on the listener
 * it kept) or a connect (source), retried until a deadline.  That wait can
 * be woken early through a file descriptor (peer.c's, written when
 * SIGINT or SIGTERM arrives), so that no wait outlives the user's patience.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <migram/handshake.h>
#include <migram/migram.h>

#include "link.h"
#include "stream-internal.h"

bool sim_link_pairs(const SimOptions *opt, SimLink *src, SimLink *dst)
{
	int p[2];

	*src = (SimLink){ .preempt_fd = -1, .listen_fd = -1 };
	*dst = (SimLink){ .preempt_fd = -1, .listen_fd = -1 };
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p))
		return false;
	src->fd = p[0];
	dst->fd = p[1];
	if (opt->preempt) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p))
			return false;
		src->preempt_fd = p[0];
		dst->preempt_fd = p[1];
	}
	for (unsigned int i = 0; opt->channels > 1 && i < opt->channels; i++) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p))
			return false;
		src->data_fd[src->ndata++] = p[0];
		dst->data_fd[dst->ndata++] = p[1];
	}
	if (opt->inject_disconnect_ms)
		for (int i = 0; i < SIM_LINK_MAX_SPARES; i++) {
			if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				       p))
				return false;
			src->spare[src->nspare++] = p[0];
			dst->spare[dst->nspare++] = p[1];
		}
	return true;
}

static bool parse_hostport(const char *arg, struct sockaddr_in *a,
			   GError **error)
{
	g_autofree char *host = NULL;
	const char *colon = arg ? strrchr(arg, ':') : NULL;
	long port;

	if (!colon || colon == arg) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "transport tcp needs HOST:PORT, got '%s'",
			    arg ? arg : "");
		return false;
	}
	host = g_strndup(arg, (gsize)(colon - arg));
	port = strtol(colon + 1, NULL, 10);
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	if (port < 0 || port > 65535 ||
	    inet_pton(AF_INET, strcmp(host, "localhost") ? host : "127.0.0.1",
		      &a->sin_addr) != 1) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "bad tcp address '%s' (IPv4 HOST:PORT)", arg);
		return false;
	}
	return true;
}

int sim_link_tcp_listen(const SimOptions *opt, GError **error)
{
	struct sockaddr_in a;
	int one = 1, fd;

	if (!parse_hostport(opt->transport_arg, &a, error))
		return -1;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(fd, 1 + SIM_MAX_CHANNELS) < 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "listen on %s: %s", opt->transport_arg,
			    g_strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/*
 * One connection attempt; the fd or -errno.  With nobody listening, a
 * connect to a local port in the ephemeral range can be given that very
 * port and connect to itself (TCP simultaneous open); retried every 50 ms
 * for minutes that happens, so such a socket counts as refused.
 *
 * With a deadline (> 0), the connect waits no longer than it (-ETIMEDOUT)
 * and ends when wake_fd is readable (-EINTR): a listener whose backlog is
 * full (a peer that no longer accepts) otherwise holds a blocking connect
 * for the kernel's SYN retries, minutes, whatever --recover-timeout says
 * (found by the torture campaign C, seed 30200021).
 */
static int connect_wait(int fd, gint64 deadline, int wake_fd)
{
	struct pollfd p[2] = { { fd, POLLOUT, 0 }, { wake_fd, POLLIN, 0 } };
	int err = 0;
	socklen_t elen = sizeof(err);

	for (;;) {
		gint64 left = deadline - g_get_monotonic_time();
		int n;

		if (left <= 0)
			return ETIMEDOUT;
		n = poll(p, 2, (int)MIN((left + 999) / 1000, (gint64)1000));
		if (n < 0 && errno != EINTR)
			return errno;
		if (n > 0 && p[1].revents)
			return EINTR;
		if (n > 0 && p[0].revents)
			break;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
		return errno;
	return err;
}

static int connect_once(const struct sockaddr_in *a, gint64 deadline,
			int wake_fd)
{
	int fd = socket(AF_INET,
			SOCK_STREAM | SOCK_CLOEXEC |
				(deadline > 0 ? SOCK_NONBLOCK : 0),
			0),
	    err, r;
	struct sockaddr_in me;
	socklen_t len = sizeof(me);

	if (fd < 0)
		return -errno;
	r = connect(fd, (const struct sockaddr *)a, sizeof(*a));
	if (r != 0 && errno == EINPROGRESS && deadline > 0) {
		err = connect_wait(fd, deadline, wake_fd);
		if (err) {
			close(fd);
			return -err;
		}
		r = 0;
	}
	if (r == 0 && deadline > 0 &&
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0)
		r = -1;
	if (r == 0) {
		if (getsockname(fd, (struct sockaddr *)&me, &len) != 0 ||
		    me.sin_port != a->sin_port ||
		    me.sin_addr.s_addr != a->sin_addr.s_addr)
			return fd;
		err = ECONNREFUSED;
	} else {
		err = errno;
	}
	close(fd);
	return -err;
}

/* Connect, retrying for up to 10 s (the destination may start later). */
static int tcp_connect(const SimOptions *opt, GError **error)
{
	struct sockaddr_in a;
	int fd = -EINVAL;

	if (!parse_hostport(opt->transport_arg, &a, error))
		return -1;
	for (int i = 0; i < 200; i++) {
		fd = connect_once(&a, 0, -1);
		if (fd >= 0)
			return fd;
		g_usleep(50 * 1000);
	}
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO, "connect to %s: %s",
		    opt->transport_arg, g_strerror(-fd));
	return -1;
}

/* The hello migram-sim's peers exchange: what must agree, no block list
 * (the destination creates its blocks from the stream). */
static void sim_hello(const SimOptions *opt, MigramHandshake *hs)
{
	migram_handshake_init(hs);
	if (opt->mode != SIM_MODE_PRECOPY)
		hs->caps |= MIGRAM_HANDSHAKE_CAP_POSTCOPY;
	if (opt->preempt)
		hs->caps |= MIGRAM_HANDSHAKE_CAP_PREEMPT;
	hs->channels = opt->channels > 1 ? opt->channels + 1 : 1;
}

static unsigned int data_wanted(const SimOptions *opt)
{
	return opt->channels > 1 ? opt->channels : 0;
}

/* File an accepted, greeted connection by the role of its hello. */
static bool file_by_role(SimLink *lk, int fd, uint32_t role, GError **error)
{
	int *slot = NULL;
	char rb[16];

	if (role == MIGRAM_HANDSHAKE_MAIN)
		slot = &lk->fd;
	else if (role == MIGRAM_HANDSHAKE_PREEMPT)
		slot = &lk->preempt_fd;
	else if (role >= MIGRAM_HANDSHAKE_DATA &&
		 role - MIGRAM_HANDSHAKE_DATA < lk->ndata)
		slot = &lk->data_fd[role - MIGRAM_HANDSHAKE_DATA];
	if (!slot || *slot >= 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "handshake: %s %s connection",
			    slot ? "a second" : "an unexpected",
			    migram_handshake_role_name(role, rb));
		close(fd);
		return false;
	}
	*slot = fd;
	return true;
}

bool sim_link_tcp_accept(const SimOptions *opt, int lfd, SimLink *lk,
			 GError **error)
{
	unsigned int want = 1 + (opt->preempt ? 1 : 0) + data_wanted(opt);
	MigramHandshake local;

	*lk = (SimLink){ .fd = -1, .preempt_fd = -1, .listen_fd = -1 };
	lk->ndata = data_wanted(opt);
	for (unsigned int i = 0; i < lk->ndata; i++)
		lk->data_fd[i] = -1;
	if (opt->mode != SIM_MODE_PRECOPY)
		lk->listen_fd = lfd;
	sim_hello(opt, &local);
	memset(local.migration_id, 0, sizeof(local.migration_id));
	for (unsigned int i = 0; i < want; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		MigramHandshake peer;

		if (fd < 0) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "accept (connection %u of %u): %s", i + 1,
				    want, g_strerror(errno));
			return false;
		}
		if (opt->no_handshake) {
			/* by accept order: main, preempt, data 0..N-1 */
			if (lk->fd < 0)
				lk->fd = fd;
			else if (opt->preempt && lk->preempt_fd < 0)
				lk->preempt_fd = fd;
			else
				lk->data_fd[i - 1 - (opt->preempt ? 1 : 0)] =
					fd;
			continue;
		}
		if (!migram_handshake_accept_fd(fd, &local, &peer, error)) {
			close(fd);
			return false;
		}
		if (!file_by_role(lk, fd, peer.role, error))
			return false;
	}
	/* local now holds the adopted migration id */
	lk->hello = local;
	lk->greeted = !opt->no_handshake;
	return true;
}

/* Connect one connection and greet it with @p role. */
static int connect_as(const SimOptions *opt, const MigramHandshake *hs,
		      uint32_t role, GError **error)
{
	MigramHandshake h = *hs;
	int fd = tcp_connect(opt, error);

	if (fd < 0 || opt->no_handshake)
		return fd;
	h.role = role;
	if (!migram_handshake_connect_fd(fd, &h, NULL, error)) {
		close(fd);
		return -1;
	}
	return fd;
}

bool sim_link_tcp_connect(const SimOptions *opt, SimLink *lk, GError **error)
{
	const char *order = g_getenv("MIGRAM_SIM_CONNECT_ORDER");
	bool reverse = order && strcmp(order, "reverse") == 0;
	uint32_t roles[2 + SIM_MAX_CHANNELS];
	unsigned int n = 0;
	MigramHandshake hs;

	*lk = (SimLink){ .preempt_fd = -1, .listen_fd = -1, .tcp = true };
	roles[n++] = MIGRAM_HANDSHAKE_MAIN;
	if (opt->preempt)
		roles[n++] = MIGRAM_HANDSHAKE_PREEMPT;
	for (unsigned int i = 0; i < data_wanted(opt); i++)
		roles[n++] = MIGRAM_HANDSHAKE_DATA + i;
	lk->ndata = data_wanted(opt);
	sim_hello(opt, &hs);
	for (unsigned int k = 0; k < n; k++) {
		uint32_t role = roles[reverse ? n - 1 - k : k];
		int fd = connect_as(opt, &hs, role, error);

		if (fd < 0)
			return false;
		if (role == MIGRAM_HANDSHAKE_MAIN)
			lk->fd = fd;
		else if (role == MIGRAM_HANDSHAKE_PREEMPT)
			lk->preempt_fd = fd;
		else
			lk->data_fd[role - MIGRAM_HANDSHAKE_DATA] = fd;
	}
	lk->hello = hs;
	lk->greeted = !opt->no_handshake;
	return true;
}

/*
 * A reconnect's hello: the same migration id, role MAIN.  Bounded by the
 * deadline (at most 10 s) through the channel's I/O timeout: a peer that
 * connects and says nothing, or a reconnect that lands in a listener the
 * peer does not accept from (torture seed 20261264: the source waited
 * for an answer forever; SO_RCVTIMEO does not help, the channel polls on
 * EAGAIN), must not hold the recovery.  The channel reads exactly the
 * hello, so nothing of the stream after it is taken.  False with the
 * reason printed.
 */
static bool greet_reconnect(SimLink *lk, int fd, gint64 deadline,
			    bool accepting, bool *answered)
{
	g_autoptr(GError) e = NULL;
	gint64 left = MIN(deadline - g_get_monotonic_time(),
			  (gint64)10 * G_USEC_PER_SEC);
	MigramChannel *ch = migram_channel_new(fd, false);
	MigramHandshake h = lk->hello, peer;
	bool ok;

	migram_channel_set_exact_reads(ch);
	migram_channel_set_io_timeout(ch, (unsigned int)MAX(left / 1000, 1));
	h.role = MIGRAM_HANDSHAKE_MAIN;
	ok = accepting ? migram_handshake_accept(ch, &lk->hello, &peer, &e)
		       : migram_handshake_connect(ch, &h, NULL, &e);
	if (ok && accepting && peer.role != MIGRAM_HANDSHAKE_MAIN) {
		char rb[16];

		g_set_error(&e, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "a %s connection where a reconnect was awaited",
			    migram_handshake_role_name(peer.role, rb));
		ok = false;
	}
	/* the limit (and its TCP_USER_TIMEOUT) goes with the hello */
	migram_channel_set_io_timeout(ch, 0);
	migram_channel_free(ch);
	/* INVALID: the peer answered and disagrees.  Anything else (a reset,
	 * an end of stream, no answer in time) may be a destination that is
	 * dying or not yet listening for real. */
	if (answered)
		*answered = ok || g_error_matches(e, MIGRAM_ERROR,
						  MIGRAM_ERROR_INVALID);
	if (!ok)
		fprintf(stderr, "migram-sim: reconnect %s: %s\n",
			g_error_matches(e, MIGRAM_ERROR, MIGRAM_ERROR_INVALID)
				? "refused"
				: "hello not answered",
			e->message);
	return ok;
}

/*
 * Wait until fd (if >= 0) is readable, wake_fd is, or deadline passes, but
 * no longer than max_ms.  0 when fd is ready, -EINTR when woken,
 * -ETIMEDOUT at the deadline, -EAGAIN after max_ms.
 */
static int wait_fd(int fd, int wake_fd, gint64 deadline, int max_ms)
{
	struct pollfd p[2] = { { fd, POLLIN, 0 }, { wake_fd, POLLIN, 0 } };
	gint64 left = deadline - g_get_monotonic_time();
	int ms, n;

	if (left <= 0)
		return -ETIMEDOUT;
	ms = (int)MIN((left + 999) / 1000, (gint64)max_ms);
	n = poll(p, 2, ms);
	if (n < 0 && errno != EINTR)
		return -errno;
	if (n > 0 && p[1].revents)
		return -EINTR;
	if (n > 0 && p[0].revents)
		return 0;
	return g_get_monotonic_time() >= deadline ? -ETIMEDOUT : -EAGAIN;
}

int sim_link_reconnect(const SimOptions *opt, SimLink *lk, gint64 deadline,
		       int wake_fd)
{
	struct sockaddr_in a;

	if (lk->next_spare < lk->nspare)
		return lk->spare[lk->next_spare++];
	if (lk->listen_fd >= 0) {
		for (;;) {
			int rc = wait_fd(lk->listen_fd, wake_fd, deadline,
					 1000);
			int fd;

			if (rc == -EAGAIN)
				continue;
			if (rc < 0)
				return rc;
			fd = accept4(lk->listen_fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0)
				continue;
			/* a stranger's connection is refused; wait on */
			if (!lk->greeted ||
			    greet_reconnect(lk, fd, deadline, true, NULL))
				return fd;
			close(fd);
		}
	}
	if (!lk->tcp || !parse_hostport(opt->transport_arg, &a, NULL))
		return -ENOTCONN;
	for (;;) {
		int fd = connect_once(&a, deadline, wake_fd), rc;
		bool answered = true;

		if (fd >= 0 && lk->greeted &&
		    !greet_reconnect(lk, fd, deadline, false, &answered)) {
			close(fd);
			/* A refusal is final; a hello the peer did not answer
			 * (it was still dying: reset, closed) is tried again
			 * until the deadline (CI, test-sim case 26). */
			if (answered || g_get_monotonic_time() >= deadline)
				return -EPROTO;
			fd = -EAGAIN;
		}
		if (fd >= 0 || fd == -ETIMEDOUT || fd == -EINTR)
			return fd;
		/* Not yet: try again in 50 ms, unless woken or out of time. */
		rc = wait_fd(-1, wake_fd, deadline, 50);
		if (rc != -EAGAIN)
			return rc;
	}
}

void sim_link_close(SimLink *lk)
{
	if (lk->preempt_fd >= 0)
		close(lk->preempt_fd);
	for (int i = lk->next_spare; i < lk->nspare; i++)
		close(lk->spare[i]);
	lk->preempt_fd = -1;
	lk->nspare = lk->next_spare = 0;
	for (unsigned int i = 0; i < lk->ndata; i++)
		close(lk->data_fd[i]);
	lk->ndata = 0;
}

void sim_link_close_all(SimLink *lk)
{
	close(lk->fd);
	sim_link_close(lk);
}
