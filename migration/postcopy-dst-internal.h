/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the destination, shared by its files (never installed):
 *   postcopy-dst.c          state, the block table, the return-path writer,
 *                           ADVISE, RUN, the end, recovery's bitmaps, stats
 *   postcopy-dst-discard.c  the discard list
 *   postcopy-dst-fault.c    userfaultfd registration and the fault thread
 *   postcopy-dst-place.c    placing pages (the placers, atomic placement)
 * The threading rules are in postcopy-dst.c.
 */
#ifndef MIGRAM_POSTCOPY_DST_INTERNAL_H
#define MIGRAM_POSTCOPY_DST_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "migram/ramblock.h"
#include "postcopy-dst.h"

typedef struct {
	char idstr[MIGRAM_RAM_IDSTR_MAX + 1];
	guint8 *host;
	uint64_t length; /* postcopy_length */
	uint64_t page_size;
	uint64_t pages; /* target pages */
	bool shared;
	unsigned long *receivedmap; /* the block's; atomic */
	unsigned long *requested;   /* ours; atomic */
	bool registered;
	bool zeroable;
} DstBlock;

struct DstPostcopy {
	MigramRamList *list;
	DstState state;
	GArray *blocks; /* DstBlock, from LISTEN (or the first discard) */

	pthread_mutex_t rp_lock;
	MigramChannel *rp; /* under rp_lock; NULL while paused */
	char rp_last[MIGRAM_RAM_IDSTR_MAX + 1]; /* block named by the last
						   request on rp */

	int uffd;
	int quit_fd;
	pthread_t fault_thread;
	bool fault_running;
	guint8 *zero; /* a zero buffer of the largest page size */
	uint64_t max_page;

	DstPlaceHook place_hook; /* tests: injected placement errors */
	void *place_hook_opaque;

	pthread_mutex_t lock; /* waiting, st */
	GHashTable *waiting;  /* host page address -> GArray of gint64 */
	MigramPostcopyStats st;
};

void migram_postcopy_dst_stop_fault_thread(DstPostcopy *pc);
/* Unregister the ranges; faulting threads then see ordinary memory. */
void migram_postcopy_dst_unregister_all(DstPostcopy *pc);
/* Caller holds rp_lock. */
bool migram_postcopy_dst_send_request(DstPostcopy *pc, DstBlock *b,
				      uint64_t off);
/* The block table (postcopy-dst.c). */
DstBlock *migram_postcopy_dst_block_by_name(DstPostcopy *pc, const char *idstr);
DstBlock *migram_postcopy_dst_block_by_host(DstPostcopy *pc, uintptr_t addr);
/*
 * The table of migratable blocks, taken once (at the first discard or at
 * LISTEN, named by `what` in errors).  The embedder must not add, remove or
 * resize blocks during a postcopy load (docs/postcopy.md); host pointers
 * stay valid until then.  A block's postcopy length is bounded by its used
 * length: a block the stream did not list keeps the length of an earlier
 * load, and nothing may be placed past used_length.
 */
bool migram_postcopy_dst_take_blocks(DstPostcopy *pc, const char *what,
				     uint64_t at, GError **error);
/*
 * Place one host page at b + off, atomically, waking every thread blocked
 * on it: UFFDIO_ZEROPAGE when zero and the range supports it, otherwise
 * UFFDIO_COPY from src (the zero buffer when zero).  The one retry policy
 * of every placement, the stream's and the fault thread's: EAGAIN (the
 * address space is changing under the copy) is retried until the kernel
 * gives an answer.  Returns 0, or the errno; EEXIST means the page is
 * already there (another channel or the fault thread won the race).
 * Any thread; never allocates or locks.
 */
int migram_postcopy_dst_place_page(DstPostcopy *pc, DstBlock *b, uint64_t off,
				   const void *src, bool zero);
/* After a successful placement: receivedmap, latencies, counters. */
void migram_postcopy_dst_placed(DstPostcopy *pc, DstPlacer *pl, DstBlock *b,
				uint64_t off);

#endif /* MIGRAM_POSTCOPY_DST_INTERNAL_H */
