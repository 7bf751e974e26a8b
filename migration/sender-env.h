/* SPDX-License-Identifier: MIT */
/*
 * The sender's environment (private, never installed): the clock it reads
 * and sleeps on, where its channel's bytes go, and how it learns whether a
 * page is zero.  The default is the real world (g_get_monotonic_time(),
 * g_usleep(), the fd, the page's bytes).  migram-sim's model mode
 * (sim/model.c) replaces all three to run the real sender core in virtual
 * time over a modelled link, without page contents.
 *
 * Threads: an environment is installed before the migration (or channel)
 * is used and never changed afterwards; its functions are called on the
 * migration thread only, on the sender's hot path: they must not block,
 * and of the migration's functions they may call only the any-thread ones
 * (migram_migration_get_stats()).
 */
#ifndef MIGRAM_SENDER_ENV_H
#define MIGRAM_SENDER_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <glib.h>

#include "migram/channel.h"
#include "migram/migration.h"
#include "migram/ramblock.h"
#include "return-path.h"

/* A clock in microseconds, and a sleep on it.  Both may be NULL members of
 * a NULL clock: then the real ones are used. */
typedef struct {
	gint64 (*now_us)(void *opaque);
	void (*sleep_us)(void *opaque, gint64 us);
	void *opaque;
} MigramClock;

/* The real clock unless clock (or its member) says otherwise. */
static inline gint64 migram_clock_now(const MigramClock *clock)
{
	return clock && clock->now_us ? clock->now_us(clock->opaque)
				      : g_get_monotonic_time();
}

static inline void migram_clock_sleep(const MigramClock *clock, gint64 us)
{
	if (clock && clock->sleep_us)
		clock->sleep_us(clock->opaque, us);
	else
		g_usleep((gulong)us);
}

/*
 * Where a virtual channel's bytes go.  write() takes all n iovecs (it may
 * not keep pointers past its return and must not read payloads it does not
 * need: page payloads point into guest memory, which in model mode is an
 * inaccessible mapping); false with *error set fails the channel.
 */
typedef struct {
	bool (*write)(void *opaque, const struct iovec *iov, int n,
		      GError **error);
	void *opaque;
} MigramChannelSink;

/*
 * A channel with no fd: flushes go to sink (borrowed, must outlive the
 * channel), the rate limit reads and sleeps on clock (borrowed, or NULL
 * for the real one).  Reads fail.  Free with migram_channel_free().
 */
MigramChannel *migram_channel_new_virtual(const MigramChannelSink *sink,
					  const MigramClock *clock);

/*
 * What a postcopy source waits for on a virtual return path (rp_pump):
 * nothing (deliver what has arrived by now), the PONG of a PING, or the
 * destination's SHUT at the end.
 */
typedef enum {
	MIGRAM_RP_WAIT_NONE,
	MIGRAM_RP_WAIT_PONG,
	MIGRAM_RP_WAIT_SHUT,
} MigramRpWait;

/*
 * The sender's hooks.  clock replaces the real clock for every time the
 * sender reads (periods, windows, sections, max_time, downtime) and for its
 * channel's rate limit if that channel is virtual.  page_is_zero, when
 * set, answers the zero-page check instead of reading the page, and the
 * payload of a non-zero page is only referenced, never read by the sender.
 */
typedef struct {
	MigramClock clock;
	bool (*page_is_zero)(void *opaque, MigramRamBlock *block,
			     uint64_t page);
	void *opaque; /* for page_is_zero and rp_pump */
	/*
	 * A return path in virtual time (model mode), or NULL for the real
	 * one.  With it, a postcopy source needs no socket and starts no
	 * return-path thread: where it looks for the destination's messages
	 * (before each postcopy section) it calls rp_pump(opaque,
	 * MIGRAM_RP_WAIT_NONE, 0), and where it waits for one it calls
	 * rp_pump(opaque, MIGRAM_RP_WAIT_PONG, value) or (..._SHUT, 0).  The
	 * pump delivers, with migram_migration_rp_deliver(), what the
	 * destination has sent by the clock's now; for a wait it first
	 * advances the clock until the awaited message arrived.  It returns
	 * false when that message will never come: the wait then fails with
	 * an error (a virtual return path is never "lost", so there is no
	 * recovery).  Migration thread; it must not call the migration's
	 * functions other than migram_migration_rp_deliver() and
	 * migram_migration_get_stats().
	 */
	bool (*rp_pump)(void *opaque, MigramRpWait wait, uint32_t value);
} MigramSenderEnv;

/* Install env (copied) before migram_migration_run().  Caller's thread. */
void migram_migration_set_env(MigramMigration *m, const MigramSenderEnv *env);

/*
 * Hand one destination message to a postcopy source as its return-path
 * thread would: PONG, SHUT, REQ_PAGES_ID, REQ_PAGES or RESUME_ACK (a
 * RECV_BITMAP needs a channel and fails).  The message is checked as
 * hostile input; false with *error set fails the migration (as a bad
 * message on a real return path does).  Only from env.rp_pump, on the
 * migration thread; msg is borrowed.
 */
bool migram_migration_rp_deliver(MigramMigration *m, const MigramRpMessage *msg,
				 GError **error);

#endif /* MIGRAM_SENDER_ENV_H */
