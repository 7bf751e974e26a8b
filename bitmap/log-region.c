/* SPDX-License-Identifier: MIT */
/*
 * Shared dirty-log regions (memfd) and their RCU-replaceable holder.
 *
 * A region is a bitmap of 4 KiB pages in a memfd, mapped MAP_SHARED, so a
 * device in another process can mark it with atomic ORs while this process
 * collects with exchange-and-collect.  The memfd is sealed against growing
 * and shrinking: a peer cannot truncate it and make our accesses fault.
 *
 * The holder publishes the current region with rcu_xchg_pointer().  Writers
 * run `read_lock; r = rcu_dereference(current); mark r; read_unlock`, so a
 * writer may still mark the old region after a replacement has published the
 * new one.  replace() therefore waits for a grace period (after which no
 * writer can touch the old region) and only then moves the old region's
 * remaining marks into the new one and unmaps it.  Collectors follow the same
 * read-side pattern, and exchange-and-collect guarantees a mark is taken by
 * exactly one of them, so "collect during replace" neither loses nor
 * duplicates a mark.
 *
 * What it does not do: coordinate with a writer in another process.  The
 * embedder's device protocol (vhost-user SET_LOG_BASE and its reply) must
 * have switched that writer to the new fd before replace() unmaps the old
 * region.
 */
#include <pthread.h>
#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/migram.h"
#include "migram/shared-log.h"
#include "bitmap-internal.h"

#define LOG_PAGE_SHIFT 12

struct MigramLogRegion {
	int fd;
	uint64_t covered_bytes;
	uint64_t page_count;
	size_t map_bytes;
	unsigned long *words; /* shared mapping; atomic access only */
};

struct MigramSharedLog {
	pthread_mutex_t replace_lock; /* serializes replace() */
	MigramLogRegion *current;     /* RCU; written under replace_lock */
};

static size_t region_bytes(uint64_t pages)
{
	size_t bytes = MIGRAM_BITS_TO_LONGS((size_t)pages) *
		       sizeof(unsigned long);
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	return (bytes + pg - 1) / pg * pg;
}

/*
 * 2^52 bytes is the largest physical address space x86-64 and arm64
 * define; its log is 128 GiB of sparse memfd.  Anything bigger is a bug.
 */
#define MAX_COVERED_BYTES (UINT64_C(1) << 52)

static bool check_size(uint64_t covered_bytes, GError **error)
{
	if (covered_bytes == 0 || covered_bytes > MAX_COVERED_BYTES) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "log region: cannot track %" G_GUINT64_FORMAT
			    " bytes (1 to 2^52 allowed)",
			    covered_bytes);
		return false;
	}
	return true;
}

static MigramLogRegion *region_map(int fd, uint64_t covered_bytes,
				   GError **error)
{
	MigramLogRegion *r = g_new0(MigramLogRegion, 1);
	void *p;

	r->fd = fd;
	r->covered_bytes = covered_bytes;
	r->page_count = (covered_bytes + MIGRAM_LOG_PAGE_SIZE - 1) /
			MIGRAM_LOG_PAGE_SIZE;
	r->map_bytes = region_bytes(r->page_count);
	p = mmap(NULL, r->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		int e = errno;

		g_free(r);
		migram_error_errno(error, MIGRAM_ERROR_IO, e,
				   "log region: mmap of fd %d failed", fd);
		return NULL;
	}
	r->words = p;
	return r;
}

static bool io_error(GError **error, const char *what, int fd)
{
	int e = errno;

	if (fd >= 0)
		close(fd);
	return migram_error_errno(error, MIGRAM_ERROR_IO, e,
				  "log region: %s failed", what);
}

MIGRAM_EXPORT MigramLogRegion *migram_log_region_new(uint64_t covered_bytes,
						     GError **error)
{
	MigramLogRegion *r;
	uint64_t pages;
	int fd;

	if (!check_size(covered_bytes, error))
		return NULL;
	pages = (covered_bytes + MIGRAM_LOG_PAGE_SIZE - 1) /
		MIGRAM_LOG_PAGE_SIZE;
	fd = memfd_create("migram-dirty-log", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		io_error(error, "memfd_create", -1);
		return NULL;
	}
	if (ftruncate(fd, (off_t)region_bytes(pages)) < 0) {
		io_error(error, "ftruncate", fd);
		return NULL;
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) {
		io_error(error, "sealing", fd);
		return NULL;
	}
	r = region_map(fd, covered_bytes, error);
	if (!r)
		close(fd);
	return r;
}

MIGRAM_EXPORT MigramLogRegion *
migram_log_region_open(int fd, uint64_t covered_bytes, GError **error)
{
	MigramLogRegion *r;
	struct stat st;
	uint64_t pages;
	int own;

	if (!check_size(covered_bytes, error))
		return NULL;
	pages = (covered_bytes + MIGRAM_LOG_PAGE_SIZE - 1) /
		MIGRAM_LOG_PAGE_SIZE;
	if (fstat(fd, &st) < 0) {
		io_error(error, "fstat", -1);
		return NULL;
	}
	if ((uint64_t)st.st_size < region_bytes(pages)) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "log region: fd %d holds %" G_GINT64_FORMAT
			    " bytes, %zu needed to track %" G_GUINT64_FORMAT
			    " bytes",
			    fd, (gint64)st.st_size, region_bytes(pages),
			    covered_bytes);
		return NULL;
	}
	own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (own < 0) {
		io_error(error, "dup", -1);
		return NULL;
	}
	r = region_map(own, covered_bytes, error);
	if (!r)
		close(own);
	return r;
}

MIGRAM_EXPORT void migram_log_region_free(MigramLogRegion *region)
{
	if (!region)
		return;
	munmap(region->words, region->map_bytes);
	close(region->fd);
	g_free(region);
}

MIGRAM_EXPORT int migram_log_region_fd(const MigramLogRegion *region)
{
	return region->fd;
}

MIGRAM_EXPORT uint64_t
migram_log_region_page_count(const MigramLogRegion *region)
{
	return region->page_count;
}

MIGRAM_EXPORT uint64_t migram_log_region_mark(MigramLogRegion *region,
					      uint64_t offset, uint64_t len)
{
	uint64_t first, n;

	if (!byte_range_pages(region->covered_bytes, LOG_PAGE_SHIFT, offset,
			      len, &first, &n))
		return 0;
	return migram_bitmap_set_atomic(region->words, (size_t)first,
					(size_t)n);
}

MIGRAM_EXPORT bool migram_log_region_test(const MigramLogRegion *region,
					  uint64_t pfn)
{
	if (pfn >= region->page_count)
		return false;
	return migram_bitmap_test_bit(region->words, (size_t)pfn);
}

MIGRAM_EXPORT uint64_t migram_log_region_collect_words(MigramLogRegion *region,
						       unsigned long *dst,
						       uint64_t npages)
{
	npages = MIN(npages, region->page_count);
	return migram_bitmap_exchange_collect(dst, region->words, 0,
					      (size_t)npages);
}

MIGRAM_EXPORT MigramSharedLog *migram_shared_log_new(MigramLogRegion *initial)
{
	MigramSharedLog *log = g_new0(MigramSharedLog, 1);

	pthread_mutex_init(&log->replace_lock, NULL);
	log->current = initial;
	return log;
}

MIGRAM_EXPORT void migram_shared_log_free(MigramSharedLog *log)
{
	if (!log)
		return;
	MIGRAM_ASSERT_NOT_RCU_READER();
	/* Readers that raced with the caller's last use must be gone. */
	migram_rcu_synchronize();
	migram_log_region_free(log->current);
	pthread_mutex_destroy(&log->replace_lock);
	g_free(log);
}

MIGRAM_EXPORT uint64_t migram_shared_log_mark(MigramSharedLog *log,
					      uint64_t offset, uint64_t len)
{
	MigramLogRegion *r;
	uint64_t n = 0;

	migram_rcu_read_lock();
	r = migram_rcu_dereference(log->current);
	if (r)
		n = migram_log_region_mark(r, offset, len);
	migram_rcu_read_unlock();
	return n;
}

MIGRAM_EXPORT uint64_t migram_shared_log_collect_words(MigramSharedLog *log,
						       unsigned long *dst,
						       uint64_t npages)
{
	MigramLogRegion *r;
	uint64_t n = 0;

	migram_rcu_read_lock();
	r = migram_rcu_dereference(log->current);
	if (r)
		n = migram_log_region_collect_words(r, dst, npages);
	migram_rcu_read_unlock();
	return n;
}

MIGRAM_EXPORT uint64_t migram_shared_log_collect_range(MigramSharedLog *log,
						       unsigned long *dst,
						       uint64_t first,
						       uint64_t npages)
{
	MigramLogRegion *r;
	uint64_t n = 0;

	migram_rcu_read_lock();
	r = migram_rcu_dereference(log->current);
	if (r && first < r->page_count) {
		npages = MIN(npages, r->page_count - first);
		n = migram_bitmap_exchange_collect(dst, r->words, (size_t)first,
						   (size_t)npages);
	}
	migram_rcu_read_unlock();
	return n;
}

MIGRAM_EXPORT uint64_t migram_shared_log_collect(MigramSharedLog *log,
						 MigramDirtyBitmap *dst)
{
	MigramLogRegion *r;
	uint64_t n = 0;

	g_return_val_if_fail(
		migram_dirty_bitmap_page_size(dst) == MIGRAM_LOG_PAGE_SIZE, 0);
	migram_rcu_read_lock();
	r = migram_rcu_dereference(log->current);
	if (r) {
		uint64_t pages = MIN(r->page_count,
				     migram_dirty_bitmap_page_count(dst));

		n = migram_bitmap_exchange_collect_atomic(
			migram_dirty_bitmap_words(dst), r->words, 0,
			(size_t)pages);
	}
	migram_rcu_read_unlock();
	return n;
}

MIGRAM_EXPORT bool migram_shared_log_replace(MigramSharedLog *log,
					     MigramLogRegion *next,
					     GError **error)
{
	MigramLogRegion *old;

	g_return_val_if_fail(next != NULL, false);
	MIGRAM_ASSERT_NOT_RCU_READER();
	pthread_mutex_lock(&log->replace_lock);
	old = log->current;
	if (old && next->page_count < old->page_count) {
		pthread_mutex_unlock(&log->replace_lock);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "shared log: new region tracks %" G_GUINT64_FORMAT
			    " pages, fewer than the current %" G_GUINT64_FORMAT,
			    next->page_count, old->page_count);
		return false;
	}
	migram_rcu_xchg_pointer(&log->current, next);
	/* After this no writer or collector can still hold old. */
	migram_rcu_synchronize();
	if (old) {
		migram_bitmap_exchange_collect_atomic(next->words, old->words,
						      0,
						      (size_t)old->page_count);
		migram_log_region_free(old);
	}
	pthread_mutex_unlock(&log->replace_lock);
	return true;
}
