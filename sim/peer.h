/* SPDX-License-Identifier: MIT */
/*
 * migram-sim's watch over its peer and over the user (peer.c): a postcopy
 * side whose peer died says so at once and waits for it only up to
 * --recover-timeout; SIGINT and SIGTERM stop the run so that the report is
 * still printed.
 */
#ifndef MIGRAM_SIM_PEER_H
#define MIGRAM_SIM_PEER_H

#include <migram/channel.h>

#include "link.h"
#include "sim.h"

/*
 * Block SIGINT and SIGTERM and start the thread that takes them (a
 * signalfd: no work in a signal handler).  Call from main before any other
 * thread exists, so that every thread inherits the blocked set.  NULL
 * (with a message on stderr) if that fails; the run then goes on without.
 */
SimPeer *sim_peer_new(void);

/* Stop the signal thread and free; NULL is fine. */
void sim_peer_free(SimPeer *p);

/* In a forked child: SIGINT and SIGTERM act as by default again. */
void sim_peer_child(void);

/*
 * What a signal stops: fn(data) runs on the signal thread (it cancels the
 * migration or the load; it must not block for long).  With none set a
 * signal ends the process as if nothing caught it.  Setting NULL waits
 * for a running fn to return, so data may be freed afterwards.
 */
void sim_peer_set_cancel(SimPeer *p, void (*fn)(void *), void *data);

/*
 * For the postcopy_paused callbacks: print at once that the migration is
 * paused, why (the broken channel's error, if it has one) and for how long
 * it waits; then wait for a new connection (link.c) up to
 * --recover-timeout after since (a monotonic time in µs; 0: now).  side is
 * "source" or "destination".  The new fd, or -1 when it gave up (timed out,
 * woken by a signal, or no way to reconnect): the caller then cancels the run,
 * and sim_peer_outcome() reports why.  p may be NULL (no signals).
 */
int sim_peer_await(SimPeer *p, const SimOptions *opt, SimLink *lk, gint64 since,
		   const char *side, MigramChannel *broken);

/*
 * After the run: when a signal or the recovery timeout ended it, set the
 * report's error to say so and return the exit code for it (128 + the
 * signal, or SIM_EXIT_RECOVER_TIMEOUT); otherwise return rc.
 */
int sim_peer_outcome(SimPeer *p, int rc, SimReport *rep);

#endif /* MIGRAM_SIM_PEER_H */
