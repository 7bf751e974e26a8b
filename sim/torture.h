/* SPDX-License-Identifier: MIT */
/*
 * migram-sim's test hooks for the torture campaign (tests/torture/), all
 * behind hidden options:
 *
 *   --debug-uffd-log async|fault  the source's dirty log is a userfaultfd
 *                                 write-protect log instead of the
 *                                 software one (the writers' marks are
 *                                 then ignored)
 *   --debug-hotplug add:TIME|resize:TIME
 *                                 that long after the start, hot-add a
 *                                 1 MiB block "hot0", or shrink the last
 *                                 block by a page and grow it back
 *   --debug-check-source          when the source's migration fails, say
 *                                 on stderr whether its guest runs again
 *                                 and whether every page still holds only
 *                                 the fill and the writers' own stamps
 *
 * What each prints starts with "migram-sim: torture:" so that the driver
 * can find it.  docs/reliability.md describes the campaign.
 */
#ifndef MIGRAM_SIM_TORTURE_H
#define MIGRAM_SIM_TORTURE_H

#include <migram/dirty-log-uffd.h>
#include <migram/ramblock.h>

#include "sim.h"
#include "workload.h"

typedef struct SimTorture SimTorture;

/*
 * Adjust the source's block config c for block i of spec s: caller-owned
 * memory (mapped here, never unmapped) for a ":caller" block, and room to
 * grow for the last block under --debug-hotplug resize.
 */
void sim_torture_block_config(const SimOptions *opt, guint i,
			      const SimBlockSpec *s, MigramRamBlockConfig *c);

/*
 * With --debug-uffd-log, open the userfaultfd log and fill src with it;
 * *log is then the caller's to free after the migration.  Without the
 * option, *log is NULL and src is left alone.  False with *error set when
 * the log cannot be opened.
 */
bool sim_torture_log(const SimOptions *opt, MigramLogSource *src,
		     MigramUffdLog **log, GError **error);

/*
 * With --debug-hotplug, start the thread that changes list mid-migration;
 * NULL without it.  list must outlive sim_torture_stop().
 */
SimTorture *sim_torture_start(const SimOptions *opt, MigramRamList *list);

/* Stop and join the hotplug thread; t may be NULL.  True when it
 * hot-added its block 'hot0'. */
bool sim_torture_stop(SimTorture *t);

/*
 * --debug-check-source, after a failed migration and before the guest is
 * paused for good: whether the writers run (their count grows within
 * 300 ms), then, paused, whether every page holds only its fill and
 * stamps.  Prints one "migram-sim: torture: source check: ..." line.
 * Leaves the guest paused.
 */
void sim_torture_check_source(const SimOptions *opt, SimGuest *guest);

#endif
