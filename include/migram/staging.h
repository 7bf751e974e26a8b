/* SPDX-License-Identifier: MIT */
/**
 * @file staging.h
 * Staging memory: a memfd-backed copy of some of a block's pages.
 *
 * A MigramStaging holds up to @c npages target pages (4 KiB) of one RAM
 * block and a present list, one bit per page.  While the guest is paused
 * the embedder copies pages into it at memcpy speed (copy()); after the
 * guest resumes, the pages are drained at leisure (first_data_range(),
 * page_content(), get_slice()) and released (clear_range(), which punches
 * the memory out of the memfd).  It is crosvm's StagingMemory, and with
 * every page copied it is QEMU's colo_cache: a staging copy of a whole
 * block (migram_staging_new_for_block()).
 *
 * The memory is a memfd mapped shared, so it is accounted as guest memory
 * is (the fd shows in /proc/PID/fd as "memfd:migram-staging:NAME"), and a
 * never-copied or cleared page occupies no memory.
 *
 * Threads.  Every function may be called from any thread.  Copies, reads
 * and clears of DIFFERENT pages may run concurrently on one staging; the
 * present list is updated with atomic bit operations (a copy publishes its
 * bits with release after its memcpy; page_content() tests with acquire,
 * so a reader that sees a page present sees its bytes).  Copies, clears
 * and reads of the SAME page must be ordered by the caller (the guest is
 * paused, or one drain thread owns the page).  first_data_range() and
 * present_pages() give a value true at some instant during the call.
 *
 * RCU.  A staging made for a block is the embedder's, not the block's:
 * the embedder keeps it next to the block and frees it when it is done,
 * and if other threads find it through an RCU-published pointer, frees it
 * only after a grace period (migram_staging_free_rcu() does that).  No
 * function here enters or requires an RCU read-side section.
 *
 * Hot path: copy(), page_content(), first_data_range() and clear_range()
 * never allocate or lock.
 */
#ifndef MIGRAM_STAGING_H
#define MIGRAM_STAGING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include <migram/ramblock.h>

G_BEGIN_DECLS

/** Opaque; single owner (see the file comment for sharing). */
typedef struct MigramStaging MigramStaging;

/**
 * Create a staging area of @p npages target pages, none present.
 *
 * @param name a name for the memfd ("pc.ram"); copied; NULL for "anon".
 * @param npages the number of 4 KiB pages, > 0.
 * @param error MIGRAM_ERROR_INVALID for 0 pages or a size that overflows;
 *        MIGRAM_ERROR_IO when memfd_create, ftruncate or mmap fails.
 * @return a new staging; free with migram_staging_free().
 *
 * Context: Any thread.
 */
MigramStaging *migram_staging_new(const char *name, uint64_t npages,
				  GError **error);

/**
 * Create a staging area sized for @p block's max_length and named after it
 * (seed 004's colo_cache when every page is copied into it).
 *
 * @param block the block; read for its idstr and max_length only.
 * @param error as migram_staging_new().
 * @return a new staging; free with migram_staging_free().  It does not
 *         refer to the block afterwards.
 *
 * Context: RCU reader, or the updater holding the block.
 */
MigramStaging *migram_staging_new_for_block(const MigramRamBlock *block,
					    GError **error);

/**
 * Unmap and close the staging now.
 *
 * @param st the staging, or NULL.
 *
 * Context: Any thread; no other thread may use @p st.
 */
void migram_staging_free(MigramStaging *st);

/**
 * Free the staging after an RCU grace period (readers that found it
 * through an RCU-published pointer may finish with it).
 *
 * @param st the staging, or NULL.
 *
 * Context: Any registered RCU thread; the caller has already unpublished
 * @p st.  Returns at once (call_rcu).
 */
void migram_staging_free_rcu(MigramStaging *st);

/**
 * The staging's size.
 *
 * @param st the staging.
 * @return the number of 4 KiB pages it can hold.
 *
 * Context: Any thread.
 */
uint64_t migram_staging_page_count(const MigramStaging *st);

/**
 * The memfd behind the staging (for accounting, or to hand to another
 * process).
 *
 * @param st the staging.
 * @return the fd; borrowed, closed by migram_staging_free().
 *
 * Context: Any thread.
 */
int migram_staging_fd(const MigramStaging *st);

/**
 * Copy @p pages pages from @p src into pages [@p idx, @p idx + @p pages)
 * and mark them present.
 *
 * @param st the staging.
 * @param src the first source page's address: @p pages * 4 KiB readable
 *        bytes (the block's host mapping plus idx * 4 KiB, typically).
 * @param idx the first page.
 * @param pages the number of pages, > 0.
 * @param error MIGRAM_ERROR_INVALID when the range is not inside the
 *        staging (nothing is copied then).
 * @return true on success.
 *
 * Context: Any thread.  Never allocates or locks.
 */
bool migram_staging_copy(MigramStaging *st, const void *src, uint64_t idx,
			 uint64_t pages, GError **error);

/**
 * The content of page @p idx, if present.
 *
 * @param st the staging.
 * @param idx the page.
 * @param content where the page's address (4 KiB readable bytes) is
 *        stored, or NULL when the page is not present; valid until the
 *        page is cleared or the staging freed.
 * @param error MIGRAM_ERROR_INVALID when @p idx is past the end.
 * @return true on success (present or not), false for a bad index.
 *
 * Context: Any thread.  Never allocates or locks.
 */
bool migram_staging_page_content(const MigramStaging *st, uint64_t idx,
				 const void **content, GError **error);

/**
 * The bytes of pages [@p idx, @p idx + @p pages), present or not (an
 * absent page reads as zeros).
 *
 * @param st the staging.
 * @param idx the first page.
 * @param pages the number of pages, > 0.
 * @param error MIGRAM_ERROR_INVALID when the range is not inside.
 * @return the address of page @p idx, or NULL; borrowed as for
 *         migram_staging_page_content().
 *
 * Context: Any thread.
 */
const void *migram_staging_get_slice(const MigramStaging *st, uint64_t idx,
				     uint64_t pages, GError **error);

/**
 * The first run of consecutive present pages, at most @p max_pages long.
 *
 * @param st the staging.
 * @param max_pages the longest run to return, > 0.
 * @param first where the run's first page is stored.
 * @param npages where the run's length (1..@p max_pages) is stored.
 * @return true if a page is present, false when the staging is empty
 *         (@p first and @p npages are untouched then).
 *
 * Context: Any thread.  Never allocates or locks.
 */
bool migram_staging_first_data_range(const MigramStaging *st,
				     uint64_t max_pages, uint64_t *first,
				     uint64_t *npages);

/**
 * The first run of present pages at or after @p from, at most
 * @p max_pages long (first_data_range() from a position, for a drain that
 * does not clear as it goes).
 *
 * @param st the staging.
 * @param from the first page to look at.
 * @param max_pages the longest run to return, > 0.
 * @param first where the run's first page is stored.
 * @param npages where the run's length is stored.
 * @return true if a present page was found.
 *
 * Context: Any thread.  Never allocates or locks.
 */
bool migram_staging_next_data_range(const MigramStaging *st, uint64_t from,
				    uint64_t max_pages, uint64_t *first,
				    uint64_t *npages);

/**
 * Mark pages [@p idx, @p idx + @p pages) absent and give their memory
 * back (fallocate PUNCH_HOLE on the memfd; MADV_REMOVE where that fails).
 *
 * @param st the staging.
 * @param idx the first page.
 * @param pages the number of pages (0 does nothing).
 * @param error MIGRAM_ERROR_INVALID when the range is not inside;
 *        MIGRAM_ERROR_IO when the memory could not be released (the pages
 *        are absent all the same).
 * @return true on success.
 *
 * Context: Any thread.  Never allocates or locks (one system call).
 */
bool migram_staging_clear_range(MigramStaging *st, uint64_t idx, uint64_t pages,
				GError **error);

/**
 * Allocate the memory of pages [@p idx, @p idx + @p pages) now
 * (MADV_POPULATE_WRITE), so that a later copy() during a pause costs a
 * memcpy and no page faults.  Present bits and contents do not change
 * (absent pages stay zero).
 *
 * @param st the staging.
 * @param idx the first page.
 * @param pages the number of pages (0 does nothing).
 * @param error MIGRAM_ERROR_INVALID for a bad range;
 *        MIGRAM_ERROR_UNSUPPORTED before Linux 5.14;
 *        MIGRAM_ERROR_NO_MEMORY when the memory cannot be had.
 * @return true on success.
 *
 * Context: Any thread, outside the pause (it may take a while).
 */
bool migram_staging_populate(MigramStaging *st, uint64_t idx, uint64_t pages,
			     GError **error);

/**
 * Whether page @p idx is present.
 *
 * @param st the staging.
 * @param idx the page, below migram_staging_page_count().
 * @return true if present.
 *
 * Context: Any thread.  Acquire.
 */
bool migram_staging_is_present(const MigramStaging *st, uint64_t idx);

/**
 * The number of present pages.
 *
 * @param st the staging.
 * @return the count (exact when no copy or clear runs concurrently).
 *
 * Context: Any thread.  Counts the present list (not a hot-path call).
 */
uint64_t migram_staging_present_pages(const MigramStaging *st);

/**
 * The present list itself, for bulk walks (the snapshot writer's).
 *
 * @param st the staging.
 * @return migram_staging_page_count() bits; borrowed, read-only, lives as
 *         long as the staging.  Read it with the atomic bitmap helpers if
 *         copies or clears may run concurrently.
 *
 * Context: Any thread.
 */
const unsigned long *migram_staging_present_map(const MigramStaging *st);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramStaging, migram_staging_free)

G_END_DECLS

#endif /* MIGRAM_STAGING_H */
