/* SPDX-License-Identifier: MIT */
/*
 * migram-sim's watch over its peer and over the user.
 *
 * Peer death in postcopy.  After the switch neither side can finish alone:
 * the guest runs on the destination, and the pages it lacks are only on
 * the source.  When the connection breaks, the library pauses both sides
 * and calls postcopy_paused; real.c's callbacks call sim_peer_await(),
 * which prints one line on stderr at once (what broke, and how long it
 * waits), then waits for a new connection (link.c: accept on the kept
 * listener, or connect again) up to --recover-timeout.  A peer that
 * restarts and reconnects in time resumes the migration; otherwise the
 * caller cancels, the run ends, main prints the report, and the exit code
 * is SIM_EXIT_RECOVER_TIMEOUT.
 *
 * Signals.  SIGINT and SIGTERM are blocked in every thread (main blocks
 * them before starting any) and read from a signalfd by one thread here,
 * so no code runs in a signal handler.  The first signal is recorded,
 * wakes any sim_peer_await() (through the wake pipe, which then stays
 * readable) and calls the cancel hook real.c set for the running
 * migration or load: the run ends as a cancelled one, and main still
 * prints the report; the exit code is 128 + the signal.  With no hook set
 * (before the run, or after it) and for a second signal, the signal takes
 * its default action: the process ends as it always did.
 *
 * Locking: lock guards the hook and the outcome; the signal thread holds
 * it while it calls the hook, so that clearing the hook waits for a
 * running call.  signo is also read without it (atomic).
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <migram/channel.h>

#include "peer.h"

struct SimPeer {
	int sfd;     /* signalfd for SIGINT and SIGTERM */
	int wake[2]; /* written once a signal came: wakes sim_peer_await() */
	int quit[2]; /* written by sim_peer_free(): ends the thread */
	GThread *thread;
	int signo; /* atomic: the first signal, or 0 */

	pthread_mutex_t lock;
	pthread_cond_t started_cond;
	/* protected by: lock */
	bool started; /* the thread is in its loop */
	void (*cancel)(void *data);
	void *cancel_data;
	char *gave_up; /* why the recovery was abandoned, or NULL */
	bool timed_out;
};

static void signal_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
}

static const char *signal_name(int signo)
{
	return signo == SIGINT    ? "SIGINT"
	       : signo == SIGTERM ? "SIGTERM"
				  : "a signal";
}

/* Let signo take its default action in this process, now. */
static void die_by(int signo)
{
	sigset_t set;

	signal(signo, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, signo);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	raise(signo);
	_exit(128 + signo); /* not reached */
}

static void on_signal(SimPeer *p, int signo)
{
	char c = 1;

	pthread_mutex_lock(&p->lock);
	if (g_atomic_int_get(&p->signo) || !p->cancel) {
		pthread_mutex_unlock(&p->lock);
		die_by(signo);
	}
	g_atomic_int_set(&p->signo, signo);
	if (write(p->wake[1], &c, 1) < 0) {
		/* a full pipe is already readable: nothing to do */
	}
	fprintf(stderr, "migram-sim: %s: stopping the run, then the report\n",
		signal_name(signo));
	p->cancel(p->cancel_data);
	pthread_mutex_unlock(&p->lock);
}

static gpointer signal_main(gpointer data)
{
	SimPeer *p = data;

	pthread_mutex_lock(&p->lock);
	p->started = true;
	pthread_cond_signal(&p->started_cond);
	pthread_mutex_unlock(&p->lock);
	for (;;) {
		struct pollfd fds[2] = { { p->sfd, POLLIN, 0 },
					 { p->quit[0], POLLIN, 0 } };
		struct signalfd_siginfo si;

		if (poll(fds, 2, -1) < 0 && errno != EINTR)
			break;
		if (fds[1].revents)
			break;
		if (fds[0].revents &&
		    read(p->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			on_signal(p, (int)si.ssi_signo);
	}
	return NULL;
}

SimPeer *sim_peer_new(void)
{
	SimPeer *p = g_new0(SimPeer, 1);
	sigset_t set;

	signal_set(&set);
	p->wake[0] = p->wake[1] = p->quit[0] = p->quit[1] = -1;
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0 ||
	    (p->sfd = signalfd(-1, &set, SFD_CLOEXEC)) < 0 ||
	    pipe2(p->wake, O_CLOEXEC | O_NONBLOCK) < 0 ||
	    pipe2(p->quit, O_CLOEXEC) < 0) {
		fprintf(stderr,
			"migram-sim: signals: %s (SIGINT and SIGTERM "
			"will not print the report)\n",
			g_strerror(errno));
		pthread_sigmask(SIG_UNBLOCK, &set, NULL);
		if (p->sfd >= 0)
			close(p->sfd);
		for (int i = 0; i < 2; i++) {
			if (p->wake[i] >= 0)
				close(p->wake[i]);
			if (p->quit[i] >= 0)
				close(p->quit[i]);
		}
		g_free(p);
		return NULL;
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->started_cond, NULL);
	return p;
}

/*
 * The signal thread starts with the first run that sets a cancel hook,
 * which is after real.c forked its destination: a child forked while
 * another thread runs may inherit a lock held for good (ASan's allocator
 * lock did, and every thread of such a child hung).  Signals that come
 * earlier wait, blocked, in the signalfd.  Main thread.
 */
static void start_thread(SimPeer *p)
{
	if (p->thread)
		return;
	p->thread = g_thread_new("sim-signals", signal_main, p);
	pthread_mutex_lock(&p->lock);
	while (!p->started)
		pthread_cond_wait(&p->started_cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

void sim_peer_free(SimPeer *p)
{
	char c = 1;

	if (!p)
		return;
	if (write(p->quit[1], &c, 1) < 0)
		g_warning("sim_peer_free: %s", g_strerror(errno));
	if (p->thread)
		g_thread_join(p->thread);
	close(p->sfd);
	for (int i = 0; i < 2; i++) {
		close(p->wake[i]);
		close(p->quit[i]);
	}
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->started_cond);
	g_free(p->gave_up);
	g_free(p);
}

void sim_peer_child(void)
{
	sigset_t set;

	signal_set(&set);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

void sim_peer_set_cancel(SimPeer *p, void (*fn)(void *), void *data)
{
	bool late;

	if (!p)
		return;
	if (fn)
		start_thread(p);
	pthread_mutex_lock(&p->lock);
	p->cancel = fn;
	p->cancel_data = data;
	/* A signal that came before the run had anything to cancel. */
	late = fn && g_atomic_int_get(&p->signo);
	if (late)
		fn(data);
	pthread_mutex_unlock(&p->lock);
}

/* Record why the recovery ends without the peer (under no lock). */
static void give_up(SimPeer *p, const char *why, bool timed_out)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	g_free(p->gave_up);
	p->gave_up = g_strdup(why);
	p->timed_out = timed_out;
	pthread_mutex_unlock(&p->lock);
}

int sim_peer_await(SimPeer *p, const SimOptions *opt, SimLink *lk, gint64 since,
		   const char *side, MigramChannel *broken)
{
	const char *peer = strcmp(side, "source") ? "source" : "destination";
	const GError *cause = broken ? migram_channel_error(broken) : NULL;
	g_autofree char *limit =
		sim_format_duration(opt->recover_timeout_ms * 1000);
	g_autofree char *reason =
		cause ? g_strdup_printf("lost the connection to the %s: %s",
					peer, cause->message)
		      : g_strdup_printf("lost the connection to the %s", peer);
	g_autofree char *why = NULL;
	gint64 t0 = since > 0 ? since : g_get_monotonic_time();
	int fd;

	fprintf(stderr,
		"migram-sim: %s: postcopy paused: %s; waiting up to %s for "
		"the %s to reconnect (--recover-timeout)\n",
		side, reason, limit, peer);
	fd = sim_link_reconnect(opt, lk,
				t0 + (gint64)opt->recover_timeout_ms * 1000,
				p ? p->wake[0] : -1);
	if (fd >= 0) {
		fprintf(stderr,
			"migram-sim: %s: connected to the %s again after "
			"%.1f s; recovering\n",
			side, peer,
			(double)(g_get_monotonic_time() - t0) / 1e6);
		return fd;
	}
	if (fd == -ETIMEDOUT)
		why = g_strdup_printf("the %s did not reconnect within %s "
				      "(--recover-timeout) after postcopy "
				      "paused: %s",
				      peer, limit, reason);
	else if (fd == -EINTR)
		why = g_strdup_printf("interrupted by %s while postcopy was "
				      "paused: %s",
				      signal_name(g_atomic_int_get(&p->signo)),
				      reason);
	else
		why = g_strdup_printf("postcopy paused and the %s cannot be "
				      "reconnected (%s): %s",
				      peer, g_strerror(-fd), reason);
	fprintf(stderr, "migram-sim: %s: giving up: %s\n", side, why);
	give_up(p, why, fd == -ETIMEDOUT);
	return -1;
}

int sim_peer_outcome(SimPeer *p, int rc, SimReport *rep)
{
	int signo;

	if (!p)
		return rc;
	signo = g_atomic_int_get(&p->signo);
	pthread_mutex_lock(&p->lock);
	if (p->gave_up) {
		g_free(rep->error);
		rep->error = g_strdup(p->gave_up);
		if (p->timed_out)
			rc = SIM_EXIT_RECOVER_TIMEOUT;
	} else if (signo) {
		g_autofree char *was = rep->error;

		rep->error = g_strdup_printf("interrupted by %s%s%s",
					     signal_name(signo),
					     was ? "; " : "", was ? was : "");
	}
	pthread_mutex_unlock(&p->lock);
	return signo ? 128 + signo : rc;
}
