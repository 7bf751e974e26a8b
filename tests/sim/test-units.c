/* SPDX-License-Identifier: MIT */
/*
 * The simulator's command-line units (sim/units.c): sizes, rates and
 * durations, with and without a unit, and what must be refused; and a
 * reconnect's deadline and hello (sim/link.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

#include <migram/handshake.h>
#include <migram/migram.h>

#include "link.h"
#include "sim.h"

#define US UINT64_C(1)
#define MS UINT64_C(1000)
#define S UINT64_C(1000000)

static void test_duration(void)
{
	static const struct {
		const char *text;
		uint64_t plain_us; /* the option's own unit */
		uint64_t want_us;
	} good[] = {
		{ "1s", MS, 1 * S },       { "200ms", MS, 200 * MS },
		{ "1.5s", S, 1500 * MS },  { "2m", S, 120 * S },
		{ "2min", S, 120 * S },    { "1h", S, 3600 * S },
		{ "500us", MS, 500 * US }, { "0", S, 0 },
		{ "300", MS, 300 * MS },   { "30", S, 30 * S },
		{ "250", US, 250 * US },   { "0.5us", US, 1 },
		{ ".25s", MS, 250 * MS },  { "0.001ms", MS, 1 },
	};
	static const char *const bad[] = {
		"",   "s",     "1x",  "-1s", "1 s", "1sec",
		"1S", "1e30h", "nan", "inf", "1s2", "1.5.s",
	};

	for (guint i = 0; i < G_N_ELEMENTS(good); i++) {
		uint64_t us = 42;

		g_test_message("'%s'", good[i].text);
		g_assert_true(sim_parse_duration(good[i].text, good[i].plain_us,
						 &us));
		g_assert_cmpuint(us, ==, good[i].want_us);
	}
	for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
		uint64_t us = 42;

		g_test_message("'%s'", bad[i]);
		g_assert_false(sim_parse_duration(bad[i], MS, &us));
		g_assert_cmpuint(us, ==, 42);
	}
}

static void test_format_duration(void)
{
	static const struct {
		uint64_t us;
		const char *want;
	} cases[] = {
		{ 180 * S, "3m" },     { 3600 * S, "1h" },
		{ 5 * S, "5s" },       { 1500 * MS, "1.5s" },
		{ 250 * MS, "250ms" }, { 17 * US, "17us" },
		{ 0, "0s" },
	};

	for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autofree char *s = sim_format_duration(cases[i].us);

		g_assert_cmpstr(s, ==, cases[i].want);
	}
}

static void test_size_rate(void)
{
	g_assert_cmpuint(sim_parse_size("2G"), ==, UINT64_C(2) << 30);
	g_assert_cmpuint(sim_parse_size("64KiB"), ==, 64 << 10);
	g_assert_cmpuint(sim_parse_size("4096"), ==, 4096);
	g_assert_cmpuint(sim_parse_size("1.5M"), ==, 3 << 19);
	g_assert_cmpuint(sim_parse_size("lots"), ==, 0);
	g_assert_cmpuint(sim_parse_size("-1G"), ==, 0);
	g_assert_cmpuint(sim_parse_size("2Q"), ==, 0);
	g_assert_cmpuint(sim_parse_size("99999999T"), ==, 0);
	g_assert_cmpuint(sim_parse_rate("200M/s"), ==, 200 << 20);
	g_assert_cmpuint(sim_parse_rate("10Gbit/s"), ==, UINT64_C(1250000000));
	g_assert_cmpuint(sim_parse_rate("200M"), ==, 0);
	g_assert_cmpuint(sim_parse_rate("0Gbit/s"), ==, 0);
	g_assert_cmpuint(sim_parse_rate("10Gbitps"), ==, 0);
}

/*
 * A reconnect to a listener that no longer accepts (its backlog full:
 * the kernel drops the SYN) ends at its deadline.  A blocking connect()
 * held migram-sim's postcopy source past --recover-timeout for the SYN
 * retries, minutes (torture campaign C, seed 30200021).
 */
static void test_reconnect_backlog_full(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), rc;
	int fill[8], nfill = 0;
	SimOptions opt = { 0 };
	SimLink lk = {
		.fd = -1, .preempt_fd = -1, .listen_fd = -1, .tcp = true
	};
	g_autofree char *arg = NULL;

	g_assert_cmpint(lfd, >=, 0);
	g_assert_cmpint(bind(lfd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
	g_assert_cmpint(listen(lfd, 0), ==, 0);
	g_assert_cmpint(getsockname(lfd, (struct sockaddr *)&a, &alen), ==, 0);
	/* fill the accept queue until a connect stays in progress */
	while (nfill < 8) {
		int fd = socket(AF_INET,
				SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		struct pollfd p = { fd, POLLOUT, 0 };

		g_assert_cmpint(fd, >=, 0);
		fill[nfill++] = fd;
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			continue;
		g_assert_cmpint(errno, ==, EINPROGRESS);
		if (poll(&p, 1, 200) == 0)
			break; /* the SYN was dropped: the queue is full */
	}
	arg = g_strdup_printf("127.0.0.1:%u", ntohs(a.sin_port));
	opt.transport_arg = arg;
	rc = sim_link_reconnect(&opt, &lk, g_get_monotonic_time() + 300 * 1000,
				-1);
	g_assert_cmpint(rc, ==, -ETIMEDOUT);
	for (int i = 0; i < nfill; i++)
		close(fill[i]);
	close(lfd);
}

/* ---- a reconnect greets with the first connections' hello ---------- */

static int listener(uint16_t *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	g_assert_cmpint(lfd, >=, 0);
	g_assert_cmpint(bind(lfd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
	g_assert_cmpint(listen(lfd, 8), ==, 0);
	g_assert_cmpint(getsockname(lfd, (struct sockaddr *)&a, &alen), ==, 0);
	*port = ntohs(a.sin_port);
	return lfd;
}

static int dial(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	g_assert_cmpint(connect(fd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
	return fd;
}

typedef struct {
	uint16_t port;
	MigramHandshake stranger, source;
} Dialers;

/* A stranger (another migration's id) calls first, then the source, who
 * says "R" after its hello. */
static gpointer dialers_main(gpointer p)
{
	Dialers *d = p;
	int fd = dial(d->port);
	GError *e = NULL;

	g_assert_false(migram_handshake_connect_fd(fd, &d->stranger, NULL, &e));
	g_assert_error(e, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&e);
	close(fd);
	fd = dial(d->port);
	g_assert_true(migram_handshake_connect_fd(fd, &d->source, NULL, &e));
	g_assert_no_error(e);
	g_assert_cmpint(write(fd, "R", 1), ==, 1);
	close(fd);
	return NULL;
}

/*
 * The destination, paused, waits for the source: a connection with
 * another migration's id is refused and the wait goes on; the source's
 * reconnect (same id, role MAIN) is the one returned.
 */
static void test_reconnect_hello_accept(void)
{
	SimOptions opt = { 0 };
	SimLink lk = { .fd = -1, .preempt_fd = -1, .greeted = true };
	Dialers d;
	GThread *t;
	char c = 0;
	int fd;

	lk.listen_fd = listener(&d.port);
	migram_handshake_init(&lk.hello); /* the adopted id */
	d.source = lk.hello;
	migram_handshake_init(&d.stranger); /* a fresh random id */
	g_assert_true(memcmp(d.stranger.migration_id, d.source.migration_id,
			     16) != 0);
	t = g_thread_new("dialers", dialers_main, &d);
	fd = sim_link_reconnect(&opt, &lk,
				g_get_monotonic_time() + 10 * G_USEC_PER_SEC,
				-1);
	g_assert_cmpint(fd, >=, 0);
	g_assert_cmpint(read(fd, &c, 1), ==, 1);
	g_assert_cmpint(c, ==, 'R');
	g_thread_join(t);
	close(fd);
	close(lk.listen_fd);
}

typedef struct {
	int lfd;
	MigramHandshake dest;
} Answerer;

static gpointer answerer_main(gpointer p)
{
	Answerer *a = p;
	int fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC);
	MigramHandshake peer;
	GError *e = NULL;

	g_assert_cmpint(fd, >=, 0);
	/* it answers, and both sides see the difference */
	g_assert_false(migram_handshake_accept_fd(fd, &a->dest, &peer, &e));
	g_assert_error(e, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_cmpuint(peer.role, ==, MIGRAM_HANDSHAKE_MAIN);
	g_clear_error(&e);
	close(fd);
	return NULL;
}

/* The source's reconnect reaches a destination that disagrees (postcopy
 * off there): -EPROTO, not a connection. */
static void test_reconnect_hello_connect(void)
{
	SimOptions opt = { 0 };
	SimLink lk = { .fd = -1,
		       .preempt_fd = -1,
		       .listen_fd = -1,
		       .tcp = true,
		       .greeted = true };
	g_autofree char *arg = NULL;
	Answerer a;
	uint16_t port;
	GThread *t;
	int rc;

	a.lfd = listener(&port);
	migram_handshake_init(&lk.hello);
	lk.hello.caps = MIGRAM_HANDSHAKE_CAP_POSTCOPY;
	a.dest = lk.hello; /* same id, but no postcopy */
	a.dest.caps = 0;
	arg = g_strdup_printf("127.0.0.1:%u", port);
	opt.transport_arg = arg;
	t = g_thread_new("answerer", answerer_main, &a);
	rc = sim_link_reconnect(&opt, &lk,
				g_get_monotonic_time() + 10 * G_USEC_PER_SEC,
				-1);
	g_assert_cmpint(rc, ==, -EPROTO);
	g_thread_join(t);
	close(a.lfd);
}

/* First a destination that is dying: it takes the connection and
 * resets it before answering.  Then the real one answers. */
static gpointer dying_then_answer(gpointer p)
{
	Answerer *a = p;
	int fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC);
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	MigramHandshake peer;
	GError *e = NULL;

	g_assert_cmpint(fd, >=, 0);
	/* close with a reset, as a process killed mid-hello does */
	g_assert_cmpint(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)),
			==, 0);
	close(fd);
	fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC);
	g_assert_cmpint(fd, >=, 0);
	g_assert_true(migram_handshake_accept_fd(fd, &a->dest, &peer, &e));
	g_assert_no_error(e);
	g_assert_cmpint(write(fd, "R", 1), ==, 1);
	close(fd);
	return NULL;
}

/* The source's reconnect meets a reset before any answer: not a refusal;
 * it connects again and recovers (CI, test-sim case 26: a destination
 * killed with -9 still held its listening socket for a moment). */
static void test_reconnect_hello_reset(void)
{
	SimOptions opt = { 0 };
	SimLink lk = { .fd = -1,
		       .preempt_fd = -1,
		       .listen_fd = -1,
		       .tcp = true,
		       .greeted = true };
	g_autofree char *arg = NULL;
	Answerer a;
	uint16_t port;
	char c = 0;
	int fd;

	a.lfd = listener(&port);
	migram_handshake_init(&lk.hello);
	a.dest = lk.hello;
	arg = g_strdup_printf("127.0.0.1:%u", port);
	opt.transport_arg = arg;
	GThread *t = g_thread_new("dying", dying_then_answer, &a);
	fd = sim_link_reconnect(&opt, &lk,
				g_get_monotonic_time() + 10 * G_USEC_PER_SEC,
				-1);
	g_assert_cmpint(fd, >=, 0);
	g_assert_cmpint(read(fd, &c, 1), ==, 1);
	g_assert_cmpint(c, ==, 'R');
	g_thread_join(t);
	close(fd);
	close(a.lfd);
}

/* The source's reconnect lands in a listener nobody accepts from (the
 * destination still blocked on its dead connection): its hello is bounded
 * by the deadline, not a wait forever (torture seed 20261264).  An
 * unanswered hello is not a refusal: it is tried again until the deadline,
 * which then ends it as a timeout (a destination still dying when the
 * source reconnects answered with a reset: CI, test-sim case 26). */
static void test_reconnect_hello_unanswered(void)
{
	SimOptions opt = { 0 };
	SimLink lk = { .fd = -1,
		       .preempt_fd = -1,
		       .listen_fd = -1,
		       .tcp = true,
		       .greeted = true };
	g_autofree char *arg = NULL;
	uint16_t port;
	int lfd = listener(&port), rc;

	migram_handshake_init(&lk.hello);
	arg = g_strdup_printf("127.0.0.1:%u", port);
	opt.transport_arg = arg;
	gint64 t0 = g_get_monotonic_time();
	rc = sim_link_reconnect(&opt, &lk, t0 + 300 * 1000, -1);
	g_assert_true(rc == -ETIMEDOUT || rc == -EPROTO);
	g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
	close(lfd);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/sim/units/duration", test_duration);
	g_test_add_func("/sim/units/format-duration", test_format_duration);
	g_test_add_func("/sim/units/size-rate", test_size_rate);
	g_test_add_func("/sim/units/reconnect-backlog-full",
			test_reconnect_backlog_full);
	g_test_add_func("/sim/units/reconnect-hello-accept",
			test_reconnect_hello_accept);
	g_test_add_func("/sim/units/reconnect-hello-connect",
			test_reconnect_hello_connect);
	g_test_add_func("/sim/units/reconnect-hello-reset",
			test_reconnect_hello_reset);
	g_test_add_func("/sim/units/reconnect-hello-unanswered",
			test_reconnect_hello_unanswered);
	return g_test_run();
}
