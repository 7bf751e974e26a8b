/* SPDX-License-Identifier: MIT */
/*
 * Model mode's postcopy destination: the far end of the return path in
 * virtual time.
 *
 * What it holds.  `have` is the set of pages whose current copy the
 * destination holds (or has on its way): a send sets a page's bit, a sync
 * that collects the page clears it (the copy is stale).  After the switch's
 * final sync, the clear bits are exactly the source's bmap: the pages the
 * destination must still get.
 *
 * Its guest.  After the switch the guest runs on the destination.  As
 * real mode's destination (real-dest.c), `--threads` reader threads each
 * read one page every `touch_s` (a 20 us sleep and the timer's slack),
 * picking a block at random and a page in it (--hot-weight of the reads go
 * to the first --hot-fraction of the block).  A read of a page the
 * destination lacks is a fault: the reader blocks, and the first fault on
 * a page sends a page request.  The request reaches the source `fault_s`
 * (the fault thread's and the return-path thread's wake-ups) plus half a
 * round trip later.  The reader resumes when the flush holding the page is
 * delivered, half a round trip after the link placed it.
 *
 * The return path.  rp_pump delivers the requests that have arrived by
 * the clock's now; a wait for PONG runs the clock to when the PING's
 * answer arrives (the link delivered everything before it, plus a round
 * trip); a wait for SHUT runs it to when every page is placed, plus a
 * round trip.
 */
#include <math.h>
#include <string.h>

#include <migram/bitmap.h>
#include <migram/ramblock.h>

#include <urcu/urcu-memb.h>
#include "model-dest.h"
#include "postcopy-dst.h"

#define PAGE ((uint64_t)MIGRAM_TARGET_PAGE_SIZE)
#define MAX_READERS 64
#define TOUCH_CAP 65536 /* reads per reader and pump; past it they skip */

typedef struct {
	uint64_t first, pages; /* RAM address / 4 KiB; used length */
	char idstr[MIGRAM_RAM_IDSTR_MAX + 1];
} DestBlock;

typedef struct {
	double t;      /* its next read */
	bool blocked;  /* on `page`, since t_fault */
	bool queued;   /* `page` is in a flush the link has not delivered */
	uint64_t page; /* RAM page */
	double t_fault;
} Reader;

struct ModelDest {
	const SimOptions *opt;
	const ModelCosts *c;
	MigramMigration *mig;  /* borrowed */
	double *now;           /* the model's clock, borrowed */
	unsigned long *have;   /* current copy held (or on its way) */
	unsigned long *wanted; /* requested and not yet sent */
	unsigned long *held;   /* ever sent: memory the destination has */
	uint64_t pages;
	GArray *blocks; /* DestBlock */
	Reader r[MAX_READERS];
	unsigned int nreaders;
	bool switching, running, shut, any_queued;
	uint64_t rng;
	/* figures */
	uint64_t faults, touches, placed, blocked_us, max_us;
	uint64_t hist[MIGRAM_LATENCY_BUCKETS];
};

/* splitmix64, as model-guest.c */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
	return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

ModelDest *model_dest_new(const SimOptions *opt, const ModelCosts *costs,
			  MigramRamList *list, MigramMigration *mig,
			  uint64_t pages, double *now, GError **error)
{
	ModelDest *d = g_new0(ModelDest, 1);

	d->opt = opt;
	d->c = costs;
	d->mig = mig;
	d->now = now;
	d->pages = pages;
	d->rng = 0xde57000ULL ^ pages;
	d->blocks = g_array_new(FALSE, TRUE, sizeof(DestBlock));
	d->nreaders = opt->workload == SIM_WORKLOAD_IDLE
			      ? 0
			      : MIN(MAX(opt->threads, 1u), MAX_READERS);
	d->have = migram_bitmap_new(pages);
	d->wanted = migram_bitmap_new(pages);
	d->held = migram_bitmap_new(pages);
	if (!d->have || !d->wanted || !d->held) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "model mode: no memory for the destination's "
			    "records of %" G_GUINT64_FORMAT " pages",
			    pages);
		model_dest_free(d);
		return NULL;
	}
	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next_migratable(list, NULL); b;
	     b = migram_ram_list_next_migratable(list, b)) {
		DestBlock db = {
			.first = migram_ram_block_offset(b) / PAGE,
			.pages = migram_ram_block_used_length(b) / PAGE,
		};

		g_strlcpy(db.idstr, migram_ram_block_idstr(b),
			  sizeof(db.idstr));
		if (db.pages)
			g_array_append_val(d->blocks, db);
	}
	urcu_memb_read_unlock();
	if (!d->blocks->len)
		d->nreaders = 0;
	return d;
}

void model_dest_free(ModelDest *d)
{
	if (!d)
		return;
	migram_bitmap_free(d->have);
	migram_bitmap_free(d->wanted);
	migram_bitmap_free(d->held);
	g_array_unref(d->blocks);
	g_free(d);
}

void model_dest_sent(ModelDest *d, uint64_t p)
{
	migram_bitmap_set_bit(d->have, p);
	migram_bitmap_set_bit(d->held, p);
	if (d->switching || d->running)
		d->placed++;
	if (!migram_bitmap_test_bit(d->wanted, p))
		return;
	migram_bitmap_clear_bit(d->wanted, p);
	for (unsigned int i = 0; i < d->nreaders; i++)
		if (d->r[i].blocked && d->r[i].page == p) {
			d->r[i].queued = true;
			d->any_queued = true;
		}
}

static unsigned int latency_bucket(uint64_t us)
{
	return us ? MIN(g_bit_storage(us) - 1, MIGRAM_LATENCY_BUCKETS - 1) : 0;
}

void model_dest_flushed(ModelDest *d, double t)
{
	double resume = t + d->c->latency_s / 2;

	if (!d->any_queued)
		return;
	d->any_queued = false;
	for (unsigned int i = 0; i < d->nreaders; i++) {
		Reader *r = &d->r[i];
		uint64_t us;

		if (!r->queued)
			continue;
		us = (uint64_t)llround((resume - r->t_fault) * 1e6);
		d->faults++;
		d->hist[latency_bucket(us)]++;
		d->max_us = MAX(d->max_us, us);
		d->blocked_us += us;
		r->t = resume + d->c->touch_s;
		r->blocked = r->queued = false;
	}
}

void model_dest_synced(ModelDest *d, uint64_t first, const unsigned long *map,
		       uint64_t n)
{
	const unsigned int bpl = 8 * sizeof(unsigned long);

	if (first % bpl == 0) {
		unsigned long *h = d->have + first / bpl;

		for (uint64_t w = 0; w < (n + bpl - 1) / bpl; w++)
			h[w] &= ~map[w];
		return;
	}
	for (uint64_t i = migram_bitmap_find_next_set(map, n, 0); i < n;
	     i = migram_bitmap_find_next_set(map, n, i + 1))
		migram_bitmap_clear_bit(d->have, first + i);
}

static void deliver(ModelDest *d, const MigramRpMessage *msg)
{
	g_autoptr(GError) error = NULL;

	/* a refused message fails the migration through the sender's own
	 * check; nothing to add here */
	migram_migration_rp_deliver(d->mig, msg, &error);
}

/* A reader's fault on page `off` of block b: block; the first fault on the
 * page requests it. */
static void fault(ModelDest *d, Reader *r, const DestBlock *b, uint64_t off)
{
	uint64_t p = b->first + off;
	MigramRpMessage msg = {
		.type = MIGRAM_RP_REQ_PAGES_ID,
		.start = off * PAGE,
		.len = (uint32_t)PAGE,
	};

	r->blocked = true;
	r->page = p;
	r->t_fault = r->t;
	if (migram_bitmap_test_bit(d->wanted, p))
		return;
	migram_bitmap_set_bit(d->wanted, p);
	g_strlcpy(msg.idstr, b->idstr, sizeof(msg.idstr));
	deliver(d, &msg);
}

/* Pages the destination holds a stale copy of (the switch discards them). */
static uint64_t stale_pages(const ModelDest *d)
{
	const unsigned int bpl = 8 * sizeof(unsigned long);
	uint64_t n = 0;

	for (uint64_t w = 0; w < (d->pages + bpl - 1) / bpl; w++)
		n += (uint64_t)__builtin_popcountl(d->held[w] & ~d->have[w]);
	return n;
}

/* Run the readers up to guest time `until`: reads, and faults. */
static void run_readers(ModelDest *d, double until)
{
	double hot_f = MAX(d->opt->hot_fraction, 0.001);

	for (unsigned int i = 0; i < d->nreaders; i++) {
		Reader *r = &d->r[i];
		unsigned int k = 0;

		while (!r->blocked && r->t <= until) {
			const DestBlock *b;
			uint64_t hot, off;

			if (++k > TOUCH_CAP) { /* reads of held pages only */
				double skip =
					floor((until - r->t) / d->c->touch_s) +
					1;

				d->touches += (uint64_t)skip;
				r->t += skip * d->c->touch_s;
				break;
			}
			b = &g_array_index(d->blocks, DestBlock,
					   rng_next(&d->rng) % d->blocks->len);
			hot = MAX((uint64_t)((double)b->pages * hot_f), 1);
			off = rng_unit(&d->rng) < d->opt->hot_weight
				      ? rng_next(&d->rng) % hot
				      : rng_next(&d->rng) % b->pages;
			d->touches++;
			if (!migram_bitmap_test_bit(d->have, b->first + off))
				fault(d, r, b, off);
			else
				r->t += d->c->touch_s;
		}
	}
}

bool model_dest_pump(ModelDest *d, MigramRpWait wait, uint32_t value,
		     double link_free)
{
	double rtt = d->c->latency_s, at;
	MigramRpMessage msg = { 0 };

	switch (wait) {
	case MIGRAM_RP_WAIT_NONE:
		if (d->switching) {
			/* the package was flushed: the guest runs there once
			 * it arrived */
			d->switching = false;
			d->running = true;
			at = MAX(link_free, *d->now) + rtt / 2;
			for (unsigned int i = 0; i < d->nreaders; i++)
				d->r[i].t = at + d->c->touch_s * (i + 1) /
							 d->nreaders;
		}
		if (d->running)
			run_readers(d, *d->now - rtt / 2 - d->c->fault_s);
		return true;
	case MIGRAM_RP_WAIT_PONG:
		/* PING 2 follows the discards: dropping held pages costs */
		at = value == 2 ? (double)stale_pages(d) * d->c->discard_s : 0;
		*d->now = MAX(*d->now, link_free + at + rtt);
		msg.type = MIGRAM_RP_PONG;
		msg.value = value;
		if (value == 2)
			d->switching = true;
		deliver(d, &msg);
		return true;
	case MIGRAM_RP_WAIT_SHUT:
		at = MAX(*d->now, link_free) + rtt / 2;
		if (d->running)
			run_readers(d, at);
		*d->now = at + rtt / 2;
		msg.type = MIGRAM_RP_SHUT;
		d->shut = true;
		deliver(d, &msg);
		return true;
	}
	return false;
}

void model_dest_report(const ModelDest *d, SimReport *rep)
{
	rep->dest_figures = true;
	rep->faults = d->faults;
	memcpy(rep->fault_hist, d->hist, sizeof(d->hist));
	rep->fault_max_us = d->max_us;
	rep->fault_p50_us = migram_postcopy_latency_quantile(d->hist, d->max_us,
							     500);
	rep->fault_p99_us = migram_postcopy_latency_quantile(d->hist, d->max_us,
							     990);
	rep->blocked_ms = d->blocked_us / 1000;
	rep->dest_touches = d->touches;
	rep->placed_pages = d->placed;
}

bool model_dest_shut(const ModelDest *d)
{
	return d->shut;
}

bool model_dest_postcopy(const ModelDest *d)
{
	return d->switching || d->running;
}
