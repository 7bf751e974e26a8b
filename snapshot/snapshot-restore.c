/* SPDX-License-Identifier: MIT */
/*
 * Eager restore of a snapshot chain (base, then diffs) into a RAM list,
 * and verification against the hashes recorded at the snapshot instant.
 *
 * Work is cut into chunks of CHUNK pages of one block; reader threads
 * take chunks from an atomic counter.  Inside a chunk each page comes
 * from the newest file that holds it; runs of pages from the same file
 * are read with one pread straight into guest memory.
 */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "snapshot-internal.h"

#define CHUNK 4096u /* pages: 16 MiB */

typedef struct {
	uint8_t *host;
	guint *index; /* per file in the chain: this block's index there */
	uint64_t npages;
} RBlock;

typedef struct {
	MigramSnapshotFile *const *chain;
	guint n;
	RBlock *blocks;
	guint nblocks;
	uint64_t nchunks;
	uint64_t next;                     /* atomic */
	uint64_t pages_read, pages_zeroed; /* atomic */
	GError *error;                     /* first one; under lock */
	pthread_mutex_t lock;
} Job;

static bool layout_mismatch(GError **error, const MigramSnapshotFile *f,
			    const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static bool layout_mismatch(GError **error, const MigramSnapshotFile *f,
			    const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
		    "%s: not this RAM layout: %s", f->name, msg);
	return false;
}

/* @p f's blocks are exactly @p list's migratable blocks. */
static bool check_layout(const MigramSnapshotFile *f, MigramRamList *list,
			 GError **error)
{
	guint seen = 0;
	bool ok = true;
	urcu_memb_read_lock();
	for (MigramRamBlock *rb = migram_ram_list_next_migratable(list, NULL);
	     rb && ok; rb = migram_ram_list_next_migratable(list, rb)) {
		const char *name = migram_ram_block_idstr(rb);
		guint i;
		seen++;
		if (!migram_snapshot_find_block(f, name, &i)) {
			ok = layout_mismatch(error, f,
					     "block '%s' is not in the file",
					     name);
			break;
		}
		const SnapBlock *b = &f->blocks[i];
		uint64_t len = migram_ram_block_used_length(rb);
		if (b->used_length != len ||
		    b->page_size != migram_ram_block_page_size(rb))
			ok = layout_mismatch(
				error, f,
				"block '%s' is %" G_GUINT64_FORMAT
				" bytes of %" G_GUINT64_FORMAT
				"-byte pages here, %" G_GUINT64_FORMAT
				" of %" G_GUINT64_FORMAT " in the file",
				name, len, migram_ram_block_page_size(rb),
				b->used_length, b->page_size);
	}
	urcu_memb_read_unlock();
	if (ok && seen != f->nblocks)
		ok = layout_mismatch(error, f, "%u blocks in the file, %u here",
				     f->nblocks, seen);
	return ok;
}

MIGRAM_EXPORT bool migram_snapshot_check_chain(MigramSnapshotFile *const *chain,
					       guint n, MigramRamList *list,
					       GError **error)
{
	g_return_val_if_fail(chain != NULL && n > 0 && list != NULL, false);
	if (migram_snapshot_is_diff(chain[0])) {
		g_set_error(
			error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			"%s: a diff without its base (parent %016" G_GINT64_MODIFIER
			"x): restore needs the full snapshot first",
			chain[0]->name, chain[0]->parent_id);
		return false;
	}
	for (guint i = 1; i < n; i++) {
		if (!migram_snapshot_is_diff(chain[i]) ||
		    chain[i]->parent_id != chain[i - 1]->id) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
				    "%s: not a diff of %s (its parent is "
				    "%016" G_GINT64_MODIFIER
				    "x, that file is %016" G_GINT64_MODIFIER
				    "x)",
				    chain[i]->name, chain[i - 1]->name,
				    chain[i]->parent_id, chain[i - 1]->id);
			return false;
		}
	}
	for (guint i = 0; i < n; i++)
		if (!check_layout(chain[i], list, error))
			return false;
	return true;
}

static bool is_zero(const uint8_t *p, size_t len)
{
	static const uint8_t zero[256];
	for (size_t o = 0; o < len; o += sizeof(zero))
		if (memcmp(p + o, zero, sizeof(zero)) != 0)
			return false;
	return true;
}

/* The newest file holding page @p p of @p rb, or -1. */
static int source_of(const Job *job, const RBlock *rb, uint64_t p)
{
	for (int i = (int)job->n - 1; i >= 0; i--) {
		const SnapBlock *b = &job->chain[i]->blocks[rb->index[i]];
		if (migram_bitmap_test_bit(b->bitmap, (size_t)p))
			return i;
	}
	return -1;
}

static bool restore_chunk(Job *job, const RBlock *rb, uint64_t start,
			  uint64_t end, GError **error)
{
	uint64_t p = start;
	while (p < end) {
		int src = source_of(job, rb, p);
		uint64_t q = p + 1;
		while (q < end && source_of(job, rb, q) == src)
			q++;
		uint8_t *dst = rb->host + p * SNAP_PAGE;
		size_t len = (size_t)((q - p) * SNAP_PAGE);
		if (src < 0) {
			if (!is_zero(dst, len))
				memset(dst, 0, len);
			__atomic_fetch_add(&job->pages_zeroed, q - p,
					   __ATOMIC_RELAXED);
		} else {
			const MigramSnapshotFile *f = job->chain[src];
			const SnapBlock *b = &f->blocks[rb->index[src]];
			if (!snap_pread_all(f->fd, dst, len,
					    b->pages_offset + p * SNAP_PAGE,
					    "pages", f->name, error))
				return false;
			__atomic_fetch_add(&job->pages_read, q - p,
					   __ATOMIC_RELAXED);
		}
		p = q;
	}
	return true;
}

static gpointer reader_main(gpointer data)
{
	Job *job = data;
	for (;;) {
		uint64_t c = __atomic_fetch_add(&job->next, 1,
						__ATOMIC_RELAXED);
		if (c >= job->nchunks)
			break;
		/* Chunk c: find its block. */
		guint bi = 0;
		uint64_t first = c;
		while (bi < job->nblocks) {
			uint64_t nc = (job->blocks[bi].npages + CHUNK - 1) /
				      CHUNK;
			if (first < nc)
				break;
			first -= nc;
			bi++;
		}
		const RBlock *rb = &job->blocks[bi];
		uint64_t start = first * CHUNK;
		uint64_t end = MIN(start + CHUNK, rb->npages);
		GError *err = NULL;
		if (!restore_chunk(job, rb, start, end, &err)) {
			pthread_mutex_lock(&job->lock);
			if (!job->error)
				job->error = err;
			else
				g_error_free(err);
			pthread_mutex_unlock(&job->lock);
			/* Stop everyone: no more chunks. */
			__atomic_store_n(&job->next, job->nchunks,
					 __ATOMIC_RELAXED);
			break;
		}
	}
	return NULL;
}

MIGRAM_EXPORT bool migram_snapshot_restore(MigramSnapshotFile *const *chain,
					   guint n, MigramRamList *list,
					   guint threads,
					   MigramRestoreStats *stats,
					   GError **error)
{
	MIGRAM_ASSERT_NOT_RCU_READER();
	uint64_t t0 = snap_now_ns();
	if (!migram_snapshot_check_chain(chain, n, list, error))
		return false;
	if (threads == 0)
		threads = MIN(g_get_num_processors(), 8u);
	threads = CLAMP(threads, 1u, 64u);
	Job job = { .chain = chain, .n = n, .nblocks = chain[0]->nblocks };
	pthread_mutex_init(&job.lock, NULL);
	job.blocks = g_new0(RBlock, job.nblocks);
	urcu_memb_read_lock();
	for (guint i = 0; i < job.nblocks; i++) {
		RBlock *rb = &job.blocks[i];
		const SnapBlock *b0 = &chain[0]->blocks[i];
		MigramRamBlock *blk = migram_ram_list_find(list, b0->name);
		rb->host = migram_ram_block_host(blk);
		rb->npages = b0->npages;
		rb->index = g_new(guint, n);
		for (guint f = 0; f < n; f++)
			migram_snapshot_find_block(chain[f], b0->name,
						   &rb->index[f]);
		job.nchunks += (rb->npages + CHUNK - 1) / CHUNK;
	}
	urcu_memb_read_unlock();
	threads = (guint)MIN((uint64_t)threads, MAX(job.nchunks, 1));
	GThread **th = g_new(GThread *, threads);
	for (guint t = 0; t < threads; t++)
		th[t] = g_thread_new("migram-restore", reader_main, &job);
	for (guint t = 0; t < threads; t++)
		g_thread_join(th[t]);
	g_free(th);
	for (guint i = 0; i < job.nblocks; i++)
		g_free(job.blocks[i].index);
	g_free(job.blocks);
	pthread_mutex_destroy(&job.lock);
	if (job.error) {
		g_propagate_error(error, job.error);
		return false;
	}
	if (stats)
		*stats = (MigramRestoreStats){
			.pages_read = job.pages_read,
			.pages_zeroed = job.pages_zeroed,
			.bytes_read = job.pages_read * SNAP_PAGE,
			.elapsed_ns = snap_now_ns() - t0,
			.threads = threads,
		};
	return true;
}

MIGRAM_EXPORT bool migram_snapshot_verify(const MigramSnapshotFile *f,
					  MigramRamList *list,
					  uint64_t *mismatched, GError **error)
{
	g_return_val_if_fail(f != NULL && list != NULL && mismatched, false);
	if (!check_layout(f, list, error))
		return false;
	uint64_t bad = 0;
	for (guint i = 0; i < f->nblocks; i++) {
		g_autofree uint64_t *h = migram_snapshot_read_hashes(f, i,
								     error);
		if (!h)
			return false;
		urcu_memb_read_lock();
		MigramRamBlock *blk = migram_ram_list_find(list,
							   f->blocks[i].name);
		const uint8_t *host = migram_ram_block_host(blk);
		for (uint64_t p = 0; p < f->blocks[i].npages; p++)
			if (migram_snapshot_page_hash(host + p * SNAP_PAGE) !=
			    h[p])
				bad++;
		urcu_memb_read_unlock();
	}
	*mismatched = bad;
	return true;
}
