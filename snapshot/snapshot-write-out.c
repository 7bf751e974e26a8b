/* SPDX-License-Identifier: MIT */
/*
 * Snapshot files: the parallel write-out of staging
 * (migram_snapshot_writer_put_staging_all()).
 *
 * The stagings are cut into chunks of CHUNK pages of one block; writer
 * threads take chunks from an atomic counter.  A chunk is a multiple of
 * 64 pages, so no two threads ever touch the same word of a block's
 * present bitmap, and each thread marks its pages without atomics.
 *
 * Inside a chunk, present runs are gathered into batches: a batch is one
 * pwritev() of up to max_io bytes covering the file pages [first, end).
 * A run joins the current batch when the absent gap before it is at most
 * bridge_pages long (the gap is written from a buffer of zeros and stays
 * absent in the bitmap) and the batch stays within max_io and MAX_IOV
 * iovecs.  A page is marked present only once its batch is on the file.
 *
 * Errors: each thread keeps its own first error; the first thread's error
 * in thread order is reported.  A failing thread also stops the others by
 * exhausting the chunk counter.  No lock is taken.
 */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "migram/staging.h"
#include "snapshot-internal.h"

#define CHUNK 4096u     /* pages: 16 MiB, a multiple of BITS_PER_LONG */
#define MAX_IOV 64u     /* iovecs in one write, well under IOV_MAX */
#define MAX_BRIDGE 256u /* pages: the zero buffer is 1 MiB */
#define MAX_THREADS 64u
#define DEFAULT_IO ((uint64_t)1 << 20) /* 1 MiB */

G_STATIC_ASSERT(CHUNK % (8 * sizeof(unsigned long)) == 0);

typedef struct {
	MigramSnapshotWriter *w;
	MigramStaging *const *staging;
	guint nblocks;
	uint64_t nchunks;
	uint64_t next; /* atomic: the next chunk to take */
	uint64_t max_pages, bridge;
	bool release;
	int fd;
	const char *path;
	const uint8_t *zeros; /* bridge pages of zeros, or NULL */
} Job;

typedef struct {
	uint64_t first, n;
} Run;

typedef struct {
	Job *job;
	GError *error;
	uint64_t written, bridged, writes;
	/* The batch being gathered. */
	struct iovec iov[MAX_IOV];
	Run runs[MAX_IOV];
	guint iovcnt, nruns;
	uint64_t first, end; /* file pages [first, end) of the block */
} Writer;

static bool pwritev_all(int fd, struct iovec *iov, int cnt, uint64_t off,
			int *err)
{
	while (cnt > 0) {
		ssize_t n = pwritev(fd, iov, cnt, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			*err = n < 0 ? errno : 0;
			return false;
		}
		off += (uint64_t)n;
		migram_iov_advance(&iov, &cnt, (size_t)n);
	}
	return true;
}

/* Write the batch of block @p b (staging @p st), mark its runs present
 * and, with release, hand the batch's span back from the staging. */
static bool flush(Writer *wr, SnapBlock *b, MigramStaging *st)
{
	if (wr->iovcnt == 0)
		return true;
	Job *job = wr->job;
	uint64_t off = b->pages_offset + wr->first * SNAP_PAGE;
	int e = 0;
	if (!pwritev_all(job->fd, wr->iov, (int)wr->iovcnt, off, &e)) {
		g_set_error(&wr->error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "%s: block '%s': writing pages [%" G_GUINT64_FORMAT
			    ", %" G_GUINT64_FORMAT
			    ") at offset %" G_GUINT64_FORMAT ": %s",
			    job->path, b->name, wr->first, wr->end, off,
			    e ? g_strerror(e) : "no progress");
		return false;
	}
	uint64_t n = 0;
	for (guint i = 0; i < wr->nruns; i++) {
		migram_bitmap_set(b->bitmap, (size_t)wr->runs[i].first,
				  (size_t)wr->runs[i].n);
		n += wr->runs[i].n;
	}
	wr->written += n;
	wr->bridged += wr->end - wr->first - n;
	wr->writes++;
	wr->iovcnt = wr->nruns = 0;
	if (job->release &&
	    !migram_staging_clear_range(st, wr->first, wr->end - wr->first,
					&wr->error))
		return false;
	return true;
}

/* Pages [start, end) of block @p bi. */
static bool write_chunk(Writer *wr, guint bi, uint64_t start, uint64_t end)
{
	Job *job = wr->job;
	MigramStaging *st = job->staging[bi];
	SnapBlock *b = snap_writer_block(job->w, bi, &wr->error);
	if (!b)
		return false;
	uint64_t from = start, first, n;
	while (from < end && migram_staging_next_data_range(
				     st, from, job->max_pages, &first, &n)) {
		if (first >= end)
			break;
		n = MIN(n, end - first);
		uint64_t gap = 0;
		if (wr->iovcnt) {
			gap = first - wr->end;
			bool joins = gap <= job->bridge &&
				     wr->end - wr->first + gap + n <=
					     job->max_pages &&
				     wr->iovcnt + 2 <= MAX_IOV;
			if (!joins) {
				if (!flush(wr, b, st))
					return false;
				gap = 0;
			}
		}
		const void *src = migram_staging_get_slice(st, first, n,
							   &wr->error);
		if (!src)
			return false;
		if (wr->iovcnt == 0) {
			wr->first = first;
		} else if (gap) {
			wr->iov[wr->iovcnt++] = (struct iovec){
				.iov_base = (void *)job->zeros,
				.iov_len = (size_t)(gap * SNAP_PAGE),
			};
		}
		wr->iov[wr->iovcnt++] = (struct iovec){
			.iov_base = (void *)src,
			.iov_len = (size_t)(n * SNAP_PAGE),
		};
		wr->runs[wr->nruns++] = (Run){ first, n };
		wr->end = first + n;
		from = first + n;
	}
	return flush(wr, b, st);
}

static uint64_t block_pages(const Job *job, guint bi)
{
	return job->staging[bi] ? snap_writer_block(job->w, bi, NULL)->npages
				: 0;
}

static gpointer writer_main(gpointer data)
{
	Writer *wr = data;
	Job *job = wr->job;
	for (;;) {
		uint64_t c = __atomic_fetch_add(&job->next, 1,
						__ATOMIC_RELAXED);
		if (c >= job->nchunks)
			break;
		guint bi = 0;
		uint64_t k = c;
		for (; bi < job->nblocks; bi++) {
			uint64_t nc = (block_pages(job, bi) + CHUNK - 1) /
				      CHUNK;
			if (k < nc)
				break;
			k -= nc;
		}
		uint64_t start = k * CHUNK;
		uint64_t end = MIN(start + CHUNK, block_pages(job, bi));
		if (!write_chunk(wr, bi, start, end)) {
			__atomic_store_n(&job->next, job->nchunks,
					 __ATOMIC_RELAXED);
			break;
		}
	}
	return NULL;
}

static bool bad_option(GError **error, const MigramSnapshotWriter *w,
		       const char *what, uint64_t v)
{
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
		    "%s: put_staging_all: %s %" G_GUINT64_FORMAT
		    " out of range",
		    snap_writer_path(w), what, v);
	return false;
}

MIGRAM_EXPORT bool migram_snapshot_writer_put_staging_all(
	MigramSnapshotWriter *w, MigramStaging *const *staging, guint n_staging,
	const MigramSnapshotWriteOptions *opts, MigramSnapshotWriteStats *stats,
	GError **error)
{
	g_return_val_if_fail(w != NULL && (staging != NULL || n_staging == 0),
			     false);
	MIGRAM_ASSERT_NOT_RCU_READER();
	uint64_t t0 = snap_now_ns();
	MigramSnapshotWriteOptions o = opts ? *opts
					    : (MigramSnapshotWriteOptions){ 0 };
	if (o.threads > MAX_THREADS)
		return bad_option(error, w, "threads", o.threads);
	if (o.bridge_pages > MAX_BRIDGE)
		return bad_option(error, w, "bridge_pages", o.bridge_pages);
	if (o.max_io == 0)
		o.max_io = DEFAULT_IO;
	if (o.max_io / SNAP_PAGE == 0 || o.max_io / SNAP_PAGE > UINT32_MAX)
		return bad_option(error, w, "max_io", o.max_io);
	if (!snap_writer_block(w, 0, error))
		return false;
	guint nblocks = snap_writer_block_count(w);
	if (n_staging != nblocks) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%s: put_staging_all: %u stagings for %u blocks",
			    snap_writer_path(w), n_staging, nblocks);
		return false;
	}
	Job job = {
		.w = w,
		.staging = staging,
		.nblocks = nblocks,
		.max_pages = o.max_io / SNAP_PAGE,
		.bridge = o.bridge_pages,
		.release = o.release,
		.fd = snap_writer_fd(w),
		.path = snap_writer_path(w),
	};
	for (guint i = 0; i < nblocks; i++) {
		if (!staging[i])
			continue;
		const SnapBlock *b = snap_writer_block(w, i, NULL);
		uint64_t first, n;
		if (migram_staging_next_data_range(staging[i], b->npages, 1,
						   &first, &n)) {
			g_set_error(
				error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
				"%s: block '%s': staging page %" G_GUINT64_FORMAT
				" past its %" G_GUINT64_FORMAT " pages",
				job.path, b->name, first, b->npages);
			return false;
		}
		job.nchunks += (b->npages + CHUNK - 1) / CHUNK;
	}
	guint threads =
		(guint)MAX(MIN((uint64_t)MAX(o.threads, 1u), job.nchunks), 1);
	g_autofree uint8_t *zeros = job.bridge
					    ? g_malloc0(job.bridge * SNAP_PAGE)
					    : NULL;
	job.zeros = zeros;
	Writer *wr = g_new0(Writer, threads);
	for (guint t = 0; t < threads; t++)
		wr[t].job = &job;
	if (threads == 1) {
		writer_main(&wr[0]);
	} else {
		GThread **th = g_new(GThread *, threads);
		for (guint t = 0; t < threads; t++)
			th[t] = g_thread_new("migram-snapwrite", writer_main,
					     &wr[t]);
		for (guint t = 0; t < threads; t++)
			g_thread_join(th[t]);
		g_free(th);
	}
	MigramSnapshotWriteStats s = { .threads = threads };
	GError *err = NULL;
	for (guint t = 0; t < threads; t++) {
		s.pages_written += wr[t].written;
		s.pages_bridged += wr[t].bridged;
		s.writes += wr[t].writes;
		if (wr[t].error && !err)
			err = wr[t].error;
		else if (wr[t].error)
			g_error_free(wr[t].error);
	}
	g_free(wr);
	if (err) {
		g_propagate_error(error, err);
		return false;
	}
	s.elapsed_ns = snap_now_ns() - t0;
	if (stats)
		*stats = s;
	return true;
}
