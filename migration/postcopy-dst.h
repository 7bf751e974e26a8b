/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the destination (postcopy-dst.c), used by the receiver.
 * Never installed.  The threading rules are at the top of postcopy-dst.c:
 * the loading thread calls everything except what the preempt thread
 * calls (the placer functions, with a placer of its own); stats and
 * set_rp may be called from any thread.
 */
#ifndef MIGRAM_POSTCOPY_DST_H
#define MIGRAM_POSTCOPY_DST_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "migram/channel.h"
#include "migram/ramblock.h"
#include "migram/postcopy-stats.h"

/* QEMU's PostcopyState, in order. */
typedef enum {
	DST_NONE = 0,
	DST_ADVISE,
	DST_DISCARD,
	DST_LISTENING,
	DST_RUNNING,
	DST_END,
} DstState;

typedef struct DstPostcopy DstPostcopy;

/* One thread's page assembly: a host page being filled (huge pages). */
typedef struct {
	guint8 *buf; /* the largest page size, mmap'd on first use */
	size_t cap;
	void *block; /* the DstBlock being assembled, or NULL */
	uint64_t base;
	uint64_t count;
	bool all_zero;
	bool preempt;
} DstPlacer;

DstPostcopy *migram_postcopy_dst_new(MigramRamList *list);
void migram_postcopy_dst_free(DstPostcopy *pc);
DstState migram_postcopy_dst_state(const DstPostcopy *pc);

/* The return path (owned once set; NULL while paused). */
void migram_postcopy_dst_set_rp(DstPostcopy *pc, MigramChannel *rp);
bool migram_postcopy_dst_has_rp(DstPostcopy *pc);
bool migram_postcopy_dst_rp_u32(DstPostcopy *pc, uint16_t type, uint32_t value);

/* Commands; `at` is the command's stream offset for errors. */
bool migram_postcopy_dst_advise(DstPostcopy *pc, const guint8 *data, size_t len,
				uint64_t at, GError **error);
bool migram_postcopy_dst_discard(DstPostcopy *pc, const guint8 *data,
				 size_t len, uint64_t at, GError **error);
bool migram_postcopy_dst_listen(DstPostcopy *pc, uint64_t at, GError **error);
void migram_postcopy_dst_run(DstPostcopy *pc);
bool migram_postcopy_dst_complete(DstPostcopy *pc, uint64_t at, GError **error);
bool migram_postcopy_dst_send_bitmap(DstPostcopy *pc, const guint8 *data,
				     size_t len, uint64_t at, GError **error);
void migram_postcopy_dst_rerequest(DstPostcopy *pc);
void migram_postcopy_dst_set_paused(DstPostcopy *pc, bool paused,
				    bool recovered);

/* Placing pages (LISTENING and after). */
void migram_postcopy_placer_init(DstPlacer *pl, bool preempt);
void migram_postcopy_placer_clear(DstPlacer *pl);
/* Where the next target page's payload goes; NULL if out of memory. */
void *migram_postcopy_placer_buffer(DstPostcopy *pc, DstPlacer *pl,
				    const char *idstr, uint64_t offset);
bool migram_postcopy_place(DstPostcopy *pc, DstPlacer *pl, const char *idstr,
			   uint64_t offset, bool zero, uint64_t at,
			   GError **error);

void migram_postcopy_dst_stats(DstPostcopy *pc, MigramPostcopyStats *out);

/*
 * A latency quantile (permille: 500 for p50, 990 for p99) from the
 * power-of-two histogram of MIGRAM_LATENCY_BUCKETS buckets (bucket i:
 * [2^i, 2^(i+1)) us): the upper end of the bucket holding that rank,
 * capped at max_us, so at most twice the exact value.  0 with no samples.
 * Pure; any thread.
 */
uint64_t migram_postcopy_latency_quantile(const uint64_t *hist, uint64_t max_us,
					  unsigned int permille);

/*
 * Tests only: call hook(opaque, offset, zero) before every placement
 * ioctl (offset in the block, zero for UFFDIO_ZEROPAGE or a zero page); a
 * non-zero return is taken as that attempt's errno instead of making the
 * call (EAGAIN exercises the retry).  Set before LISTEN; NULL removes it.
 */
typedef int (*DstPlaceHook)(void *opaque, uint64_t offset, bool zero);
void migram_postcopy_dst_set_place_hook(DstPostcopy *pc, DstPlaceHook hook,
					void *opaque);

#endif /* MIGRAM_POSTCOPY_DST_H */
