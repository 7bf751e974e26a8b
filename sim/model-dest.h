/* SPDX-License-Identifier: MIT */
/*
 * Model mode's postcopy destination (model-dest.c): what the destination
 * holds, its guest's reader threads faulting on missing pages after the
 * switch, and the return path in virtual time (the sender's rp_pump,
 * sender-env.h).  Single-threaded: the migration thread of model mode.
 */
#ifndef MIGRAM_SIM_MODEL_DEST_H
#define MIGRAM_SIM_MODEL_DEST_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/migram.h>

#include "model-costs.h"
#include "sender-env.h"
#include "sim.h"

typedef struct ModelDest ModelDest;

/*
 * A destination for pages [0, pages) (RAM address / 4 KiB) of list's
 * blocks (borrowed), whose return path delivers to mig (borrowed), on the
 * virtual clock *now (seconds, borrowed: the model's clock, which the
 * pump advances).  NULL with *error set when memory runs out.
 */
ModelDest *model_dest_new(const SimOptions *opt, const ModelCosts *costs,
			  MigramRamList *list, MigramMigration *mig,
			  uint64_t pages, double *now, GError **error);
void model_dest_free(ModelDest *d);

/* The sender queued page p (it is on its way to the destination). */
void model_dest_sent(ModelDest *d, uint64_t p);
/* A flush the link delivers (placed) at virtual time t. */
void model_dest_flushed(ModelDest *d, double t);
/* A sync collected these pages of [first, first + n) (bit i = page
 * first + i): the destination's copies of them are stale. */
void model_dest_synced(ModelDest *d, uint64_t first, const unsigned long *map,
		       uint64_t n);
/* The sender's rp_pump (sender-env.h); link_free is when the link has
 * delivered everything queued so far. */
bool model_dest_pump(ModelDest *d, MigramRpWait wait, uint32_t value,
		     double link_free);
/* The destination's figures: faults, their latencies, blocked time,
 * reads; and whether the source waited for its SHUT. */
void model_dest_report(const ModelDest *d, SimReport *rep);
bool model_dest_shut(const ModelDest *d);
/* Whether the switch's discards were read: pages now arrive in postcopy. */
bool model_dest_postcopy(const ModelDest *d);

#endif /* MIGRAM_SIM_MODEL_DEST_H */
