/* SPDX-License-Identifier: MIT */
/*
 * Writer threads that dirty guest memory during a real-mode migration.
 *
 * Each write stamps 16 bytes of a page at the writer's own slot: the
 * writer id and a sequence number, and the page index mixed with the
 * sequence, then marks the page in the software dirty log (write first,
 * then mark).  The workload can be paused (stop-and-copy) and throttled
 * (auto-converge), and aims at a total dirty rate across its threads.
 */
#ifndef MIGRAM_SIM_WORKLOAD_H
#define MIGRAM_SIM_WORKLOAD_H

#include <migram/dirty-bitmap.h>
#include <migram/ramblock.h>

#include "sim.h"

typedef struct SimGuest SimGuest;

/*
 * The block's content before the migration (--fill): SIM_FILL_PATTERN
 * gives three pages in four a byte pattern and leaves the fourth zero (a
 * ZERO record on the wire); SIM_FILL_RANDOM gives every byte a
 * pseudo-random value (a fixed seed per page: incompressible, the same
 * on every run); SIM_FILL_ZERO touches nothing.  Before any writer runs.
 */
void sim_fill_block(MigramRamBlock *b, SimFill fill);

/*
 * Start opt->threads writers over the blocks (borrowed; the caller keeps
 * them alive until sim_guest_stop()).  The idle workload starts none.
 */
SimGuest *sim_guest_start(const SimOptions *opt, MigramRamBlock **blocks,
			  guint nblocks, MigramDirtyBitmap *log);

/* Pause every writer and wait until all are quiet (the pause callback). */
void sim_guest_pause(void *guest);
/* Auto-converge's throttle: writers sleep percent % of their time. */
void sim_guest_throttle(void *guest, unsigned int percent);
/* Let paused writers run again (a migration failed after the pause). */
void sim_guest_resume(void *guest);
/* How many writes the writers made so far. */
uint64_t sim_guest_writes(SimGuest *g);

/*
 * With the guest paused: true if every page of its blocks holds only
 * what fill put there and the writers' own stamps (nothing else wrote
 * it); *detail (free it) says so, or names the first page that does not.
 */
bool sim_guest_check(SimGuest *g, SimFill fill, char **detail);

/* Stop and join the writers; returns how many writes they made. */
uint64_t sim_guest_stop(SimGuest *g);

#endif
