/* SPDX-License-Identifier: MIT */
/*
 * Staging memory (staging.h): a memfd mapping and a present list.
 *
 * Publication: copy() does its memcpy, then sets the present bits with an
 * atomic OR (release); readers load the words with acquire.  clear_range()
 * clears the bits first (release) and then punches the memory out, so a
 * reader that still sees a bit set reads either the page or zeros, never
 * another page's bytes; the contract leaves same-page races to the caller.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "migram/staging.h"

#define PAGE MIGRAM_TARGET_PAGE_SIZE
#define BITS_PER_LONG (sizeof(unsigned long) * 8)

struct MigramStaging {
	struct rcu_head rcu;
	uint8_t *mem;
	uint64_t npages;
	int fd;
	unsigned long *present;
};

MIGRAM_EXPORT MigramStaging *migram_staging_new(const char *name,
						uint64_t npages, GError **error)
{
	if (npages == 0 || npages > (UINT64_MAX / PAGE) ||
	    npages > (uint64_t)SIZE_MAX / PAGE) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "staging %s: bad size of %" G_GUINT64_FORMAT
			    " pages",
			    name ? name : "anon", npages);
		return NULL;
	}
	g_autofree char *fdname = g_strdup_printf("migram-staging:%.200s",
						  name ? name : "anon");
	int fd = memfd_create(fdname, MFD_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "staging %s: memfd_create: %s", fdname,
			    g_strerror(e));
		return NULL;
	}
	size_t len = (size_t)(npages * PAGE);
	if (ftruncate(fd, (off_t)len) < 0) {
		int e = errno;
		close(fd);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "staging %s: ftruncate to %zu bytes: %s", fdname,
			    len, g_strerror(e));
		return NULL;
	}
	void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED) {
		int e = errno;
		close(fd);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "staging %s: mmap of %zu bytes: %s", fdname, len,
			    g_strerror(e));
		return NULL;
	}
	unsigned long *present = migram_bitmap_new((size_t)npages);
	if (!present) {
		munmap(mem, len);
		close(fd);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "staging %s: present list of %" G_GUINT64_FORMAT
			    " bits",
			    fdname, npages);
		return NULL;
	}
	MigramStaging *st = g_new0(MigramStaging, 1);
	st->mem = mem;
	st->npages = npages;
	st->fd = fd;
	st->present = present;
	return st;
}

MIGRAM_EXPORT MigramStaging *
migram_staging_new_for_block(const MigramRamBlock *block, GError **error)
{
	g_return_val_if_fail(block != NULL, NULL);
	uint64_t npages = migram_ram_block_max_length(block) / PAGE;
	return migram_staging_new(migram_ram_block_idstr(block), npages, error);
}

MIGRAM_EXPORT void migram_staging_free(MigramStaging *st)
{
	if (!st)
		return;
	munmap(st->mem, (size_t)(st->npages * PAGE));
	close(st->fd);
	migram_bitmap_free(st->present);
	g_free(st);
}

static void staging_reclaim(struct rcu_head *head)
{
	migram_staging_free(caa_container_of(head, MigramStaging, rcu));
}

MIGRAM_EXPORT void migram_staging_free_rcu(MigramStaging *st)
{
	if (st)
		urcu_memb_call_rcu(&st->rcu, staging_reclaim);
}

MIGRAM_EXPORT uint64_t migram_staging_page_count(const MigramStaging *st)
{
	g_return_val_if_fail(st != NULL, 0);
	return st->npages;
}

MIGRAM_EXPORT int migram_staging_fd(const MigramStaging *st)
{
	g_return_val_if_fail(st != NULL, -1);
	return st->fd;
}

static bool range_ok(const MigramStaging *st, uint64_t idx, uint64_t pages,
		     const char *what, GError **error)
{
	if (idx > st->npages || pages > st->npages - idx) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "staging %s: pages [%" G_GUINT64_FORMAT
			    ", +%" G_GUINT64_FORMAT
			    ") outside its %" G_GUINT64_FORMAT " pages",
			    what, idx, pages, st->npages);
		return false;
	}
	return true;
}

MIGRAM_EXPORT bool migram_staging_copy(MigramStaging *st, const void *src,
				       uint64_t idx, uint64_t pages,
				       GError **error)
{
	g_return_val_if_fail(st != NULL && src != NULL, false);
	if (pages == 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "staging copy: 0 pages at %" G_GUINT64_FORMAT, idx);
		return false;
	}
	if (!range_ok(st, idx, pages, "copy", error))
		return false;
	memcpy(st->mem + idx * PAGE, src, (size_t)(pages * PAGE));
	migram_bitmap_set_atomic(st->present, (size_t)idx, (size_t)pages);
	return true;
}

MIGRAM_EXPORT bool migram_staging_is_present(const MigramStaging *st,
					     uint64_t idx)
{
	g_return_val_if_fail(st != NULL && idx < st->npages, false);
	unsigned long w = __atomic_load_n(&st->present[idx / BITS_PER_LONG],
					  __ATOMIC_ACQUIRE);
	return (w >> (idx % BITS_PER_LONG)) & 1;
}

MIGRAM_EXPORT bool migram_staging_page_content(const MigramStaging *st,
					       uint64_t idx,
					       const void **content,
					       GError **error)
{
	g_return_val_if_fail(st != NULL && content != NULL, false);
	if (idx >= st->npages) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "staging page_content: page %" G_GUINT64_FORMAT
			    " past the end (%" G_GUINT64_FORMAT " pages)",
			    idx, st->npages);
		return false;
	}
	*content = migram_staging_is_present(st, idx) ? st->mem + idx * PAGE
						      : NULL;
	return true;
}

MIGRAM_EXPORT const void *migram_staging_get_slice(const MigramStaging *st,
						   uint64_t idx, uint64_t pages,
						   GError **error)
{
	g_return_val_if_fail(st != NULL, NULL);
	if (pages == 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "staging get_slice: 0 pages at %" G_GUINT64_FORMAT,
			    idx);
		return NULL;
	}
	if (!range_ok(st, idx, pages, "get_slice", error))
		return NULL;
	return st->mem + idx * PAGE;
}

/* First bit of @p want (1: set, 0: clear) at or after @p from, else n. */
static uint64_t scan(const unsigned long *map, uint64_t n, uint64_t from,
		     bool want)
{
	while (from < n) {
		uint64_t wi = from / BITS_PER_LONG;
		unsigned long w = __atomic_load_n(&map[wi], __ATOMIC_ACQUIRE);
		if (!want)
			w = ~w;
		w &= ~0UL << (from % BITS_PER_LONG);
		if (w) {
			uint64_t bit = wi * BITS_PER_LONG +
				       (uint64_t)__builtin_ctzl(w);
			return bit < n ? bit : n;
		}
		from = (wi + 1) * BITS_PER_LONG;
	}
	return n;
}

MIGRAM_EXPORT bool migram_staging_next_data_range(const MigramStaging *st,
						  uint64_t from,
						  uint64_t max_pages,
						  uint64_t *first,
						  uint64_t *npages)
{
	g_return_val_if_fail(st != NULL && max_pages > 0 && first != NULL &&
				     npages != NULL,
			     false);
	for (;;) {
		uint64_t s = scan(st->present, st->npages, from, true);
		if (s >= st->npages)
			return false;
		uint64_t limit = st->npages - s > max_pages ? s + max_pages
							    : st->npages;
		uint64_t e = scan(st->present, limit, s, false);
		if (e == s) {
			/* Cleared between the two scans: look further on. */
			from = s + 1;
			continue;
		}
		*first = s;
		*npages = e - s;
		return true;
	}
}

MIGRAM_EXPORT bool migram_staging_first_data_range(const MigramStaging *st,
						   uint64_t max_pages,
						   uint64_t *first,
						   uint64_t *npages)
{
	return migram_staging_next_data_range(st, 0, max_pages, first, npages);
}

MIGRAM_EXPORT bool migram_staging_clear_range(MigramStaging *st, uint64_t idx,
					      uint64_t pages, GError **error)
{
	g_return_val_if_fail(st != NULL, false);
	if (!range_ok(st, idx, pages, "clear_range", error))
		return false;
	if (pages == 0)
		return true;
	migram_bitmap_clear_atomic(st->present, (size_t)idx, (size_t)pages);
	off_t off = (off_t)(idx * PAGE);
	off_t len = (off_t)(pages * PAGE);
	if (fallocate(st->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
		      len) == 0)
		return true;
	int e = errno;
	if (madvise(st->mem + idx * PAGE, (size_t)len, MADV_REMOVE) == 0)
		return true;
	int e2 = errno;
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
		    "staging clear_range: releasing pages [%" G_GUINT64_FORMAT
		    ", +%" G_GUINT64_FORMAT "): fallocate: %s; madvise: %s",
		    idx, pages, g_strerror(e), g_strerror(e2));
	return false;
}

MIGRAM_EXPORT uint64_t migram_staging_present_pages(const MigramStaging *st)
{
	g_return_val_if_fail(st != NULL, 0);
	uint64_t n = 0;
	uint64_t words = (st->npages + BITS_PER_LONG - 1) / BITS_PER_LONG;
	for (uint64_t i = 0; i < words; i++)
		n += (uint64_t)__builtin_popcountl(
			__atomic_load_n(&st->present[i], __ATOMIC_RELAXED));
	return n;
}

MIGRAM_EXPORT const unsigned long *
migram_staging_present_map(const MigramStaging *st)
{
	g_return_val_if_fail(st != NULL, NULL);
	return st->present;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

MIGRAM_EXPORT bool migram_staging_populate(MigramStaging *st, uint64_t idx,
					   uint64_t pages, GError **error)
{
	g_return_val_if_fail(st != NULL, false);
	if (!range_ok(st, idx, pages, "populate", error))
		return false;
	if (pages == 0)
		return true;
	if (madvise(st->mem + idx * PAGE, (size_t)(pages * PAGE),
		    MADV_POPULATE_WRITE) == 0)
		return true;
	int e = errno;
	g_set_error(error, MIGRAM_ERROR,
		    e == EINVAL ? MIGRAM_ERROR_UNSUPPORTED
				: MIGRAM_ERROR_NO_MEMORY,
		    "staging populate: pages [%" G_GUINT64_FORMAT
		    ", +%" G_GUINT64_FORMAT "): %s",
		    idx, pages, g_strerror(e));
	return false;
}
