/* SPDX-License-Identifier: MIT */
/*
 * migram-sim's connections (link.c): socketpairs for a forked run, TCP for
 * --transport tcp: and --role, and a new main connection after a cut
 * (postcopy recovery).
 */
#ifndef MIGRAM_SIM_LINK_H
#define MIGRAM_SIM_LINK_H

#include <migram/handshake.h>

#include "sim.h"

#define SIM_LINK_MAX_SPARES 4

/*
 * One side's connections: main, the optional preempt one, and how to get
 * a new main connection after a cut (postcopy recovery): a spare
 * socketpair end made before the fork, or TCP (connect or accept again).
 */
typedef struct {
	int fd;
	int preempt_fd; /* -1 without --preempt */
	int spare[SIM_LINK_MAX_SPARES];
	int nspare, next_spare;
	int listen_fd;                 /* TCP destination; -1 otherwise */
	int data_fd[SIM_MAX_CHANNELS]; /* --channels N > 1: N data sockets */
	unsigned int ndata;
	bool tcp; /* TCP source */
	/* the hello of the first connections, when they greeted: a
	 * reconnect greets with it too (same migration id, role MAIN) */
	bool greeted;
	MigramHandshake hello;
} SimLink;

/* Socketpairs for main, preempt and reconnects: src and dst ends. */
bool sim_link_pairs(const SimOptions *opt, SimLink *src, SimLink *dst);

/* Listen on --transport tcp:HOST:PORT; the fd, or -1 with *error set. */
int sim_link_tcp_listen(const SimOptions *opt, GError **error);

/*
 * TCP destination: accept main, preempt and data connections; keep
 * listening (lfd) for reconnects in postcopy.  With the handshake (unless
 * --no-handshake) in any order, each filed by the role its hello names; a
 * mismatch fails with both sides' values in *error.  Without it, by accept
 * order: main, preempt, data 0..N-1.
 */
bool sim_link_tcp_accept(const SimOptions *opt, int lfd, SimLink *lk,
			 GError **error);

/* TCP source: connect main (and preempt, data), retrying for up to 10 s;
 * each greeted with the handshake (unless --no-handshake) as soon as it is
 * connected.  MIGRAM_SIM_CONNECT_ORDER=reverse (tests) connects the data
 * channels first, in reverse, then preempt, then main. */
bool sim_link_tcp_connect(const SimOptions *opt, SimLink *lk, GError **error);

/*
 * A new main connection after a cut: a spare, or accept or connect again
 * until deadline (monotonic, us) or until wake_fd (if >= 0) is readable.
 * Returns the fd, -ETIMEDOUT, -EINTR (woken) or another -errno.
 */
int sim_link_reconnect(const SimOptions *opt, SimLink *lk, gint64 deadline,
		       int wake_fd);

/* Close preempt and the unused spares (not main, which a channel owns). */
void sim_link_close(SimLink *lk);

/* Close everything, main too: the other side's ends in a forked process. */
void sim_link_close_all(SimLink *lk);

#endif /* MIGRAM_SIM_LINK_H */
