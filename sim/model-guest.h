/* SPDX-License-Identifier: MIT */
/*
 * Model mode's guest (model-guest.c): a memoryless write process over the
 * RAM's pages in virtual time, marked into a dirty log lazily (only where
 * and when the log is about to be read or re-armed), and the record of
 * which pages were ever written (a page never written still holds the
 * fill).  Single-threaded: the migration thread of model mode only.
 */
#ifndef MIGRAM_SIM_MODEL_GUEST_H
#define MIGRAM_SIM_MODEL_GUEST_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/dirty-bitmap.h>

#include "sim.h"

typedef struct ModelGuest ModelGuest;

/*
 * A guest over pages [0, pages) of log (RAM address / 4 KiB, borrowed; it
 * must outlive the guest), writing as opt's workload says.  NULL with
 * *error set when memory runs out.
 */
ModelGuest *model_guest_new(const SimOptions *opt, MigramDirtyBitmap *log,
			    uint64_t pages, GError **error);
void model_guest_free(ModelGuest *g);

/* Run the guest's clock to virtual time t (seconds). */
void model_guest_advance(ModelGuest *g, double t);

/*
 * Every write the guest made before now to pages [first, first + n) is
 * in the log (and in the written record) afterwards.
 */
void model_guest_catch_up(ModelGuest *g, double now, uint64_t first,
			  uint64_t n);

/* Auto-converge: the vCPUs sleep percent % of the time from now on. */
void model_guest_throttle(ModelGuest *g, double now, unsigned int percent);

/* The guest stops (the migration's pause): no writes after now. */
void model_guest_pause(ModelGuest *g, double now);

/* Whether page p was ever written (as far as caught up). */
bool model_guest_written(const ModelGuest *g, uint64_t p);

/* Page writes so far (expected; the Poisson draws vary around it). */
double model_guest_writes(const ModelGuest *g);

#endif /* MIGRAM_SIM_MODEL_GUEST_H */
