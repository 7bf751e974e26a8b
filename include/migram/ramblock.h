/* SPDX-License-Identifier: MIT */
/**
 * @file ramblock.h
 * RAM blocks and the RCU-protected RAM list.
 *
 * A MigramRamBlock is one contiguous piece of guest RAM: a host mapping,
 * its place in one global RAM address space (`offset`), its current and
 * reserved sizes, its backing page size, and the three migration bitmaps.
 * A MigramRamList holds the blocks.  vCPU, device and migration threads
 * read the list while the hypervisor's control thread adds, resizes and
 * removes blocks:
 *
 *  - Readers walk the list and look blocks up inside
 *    urcu_memb_read_lock() / urcu_memb_read_unlock(), without taking any
 *    lock, and never wait.  A block pointer a reader obtained stays valid
 *    until that reader's read-side section ends.
 *  - Updaters (add, resize, remove, bitmap setup and cleanup) serialize on
 *    the list's mutex, bump the list's version after each change, and then
 *    notify listeners.  A removed block is unlinked at once and its memory
 *    and bitmaps are freed after an RCU grace period.
 *
 * Operations and their contexts:
 *
 *     migram_ram_list_new / _free                  updater (free may block)
 *     migram_ram_list_add / _remove / _resize      updater, takes the mutex
 *     migram_ram_list_find / _find_by_addr /
 *       _find_by_host / _next / _next_migratable   RCU reader
 *     migram_ram_list_version / _count             any thread
 *     migram_ram_list_bitmaps_init / _free         updater, takes the mutex
 *     migram_ram_block_* accessors                 RCU reader, or the
 *                                                  updater that holds the
 *                                                  block
 *
 * Synchronization (x = may run concurrently on one list):
 *
 *                 find/next  add  remove  resize  bitmaps_init/free
 *     find/next       x       x     x       x            x
 *     add             x       -     -       -            -
 *     remove          x       -     -       -            -
 *     resize          x       -     -       -            -
 *
 * (the "-" pairs are serialized by the list mutex, so callers need not
 * exclude them themselves).
 *
 * Migration bitmaps.  All three use one bit per *target page* of
 * MIGRAM_TARGET_PAGE_SIZE bytes (the unit of the migration stream),
 * whatever the block's backing page size, and are sized for max_length so
 * that growing a block never reallocates them:
 *
 *     bmap         source: page still to send            max/4K bits
 *     receivedmap  destination: page placed               max/4K bits
 *     clear_bmap   source: chunk of 2^shift pages whose   ceil(max/4K/2^shift)
 *                  dirty log is still to be cleared        bits
 *
 * Threads: every thread that calls an "RCU reader" function must be
 * registered with urcu_memb_register_thread() (see migram.h).
 */
#ifndef MIGRAM_RAMBLOCK_H
#define MIGRAM_RAMBLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

/** Bytes per target page: the page unit of the migration stream. */
#define MIGRAM_TARGET_PAGE_SIZE 4096u
/** log2(MIGRAM_TARGET_PAGE_SIZE). */
#define MIGRAM_TARGET_PAGE_BITS 12

/** Longest idstr, in bytes, not counting the terminating NUL. */
#define MIGRAM_RAM_IDSTR_MAX 255

/** Smallest clear_bmap_shift accepted (one page per chunk). */
#define MIGRAM_CLEAR_BMAP_SHIFT_MIN 0
/** QEMU's default clear_bmap_shift: 2^18 pages, 1 GiB at 4 KiB pages. */
#define MIGRAM_CLEAR_BMAP_SHIFT_DEFAULT 18
/** Largest clear_bmap_shift accepted (QEMU's maximum, 8 TiB chunks). */
#define MIGRAM_CLEAR_BMAP_SHIFT_MAX 31

/** Block flags.  Values shared with QEMU's RAM_* flags where one exists. */
typedef enum {
	/** Memory belongs to the embedder; migram never unmaps it. */
	MIGRAM_RAM_CALLER_OWNED = 1u << 0, /* QEMU RAM_PREALLOC */
	/** Mapping is shared (memfd, hugetlb, or shared caller memory). */
	MIGRAM_RAM_SHARED = 1u << 1,
	/** used_length may change within max_length. */
	MIGRAM_RAM_RESIZEABLE = 1u << 2,
	/** Part of migration (QEMU RAM_MIGRATABLE); others are skipped. */
	MIGRAM_RAM_MIGRATABLE = 1u << 4,
	/** Backed by hugetlb pages (migram's own flag). */
	MIGRAM_RAM_HUGETLB = 1u << 16,
	/**
	 * MIGRAM_RAM_BACKEND_ANON: do not advise transparent huge pages
	 * (migram's own flag).  By default an anonymous block is
	 * madvise(MADV_HUGEPAGE)d, as QEMU does with guest RAM: first
	 * touches and the reads of never-written memory (the huge zero page)
	 * then cost one fault per 2 MiB instead of one per 4 KiB.  Set it
	 * where 4 KiB granularity matters more (a strict per-page
	 * userfaultfd-WP count); postcopy's destination turns huge pages off
	 * by itself before it registers a block with userfaultfd.
	 */
	MIGRAM_RAM_NO_THP = 1u << 17,
} MigramRamFlags;

/** Where a block's host memory comes from. */
typedef enum {
	/** Anonymous private memory, mapped by migram. */
	MIGRAM_RAM_BACKEND_ANON = 0,
	/** A memfd mapped shared: its fd can be handed to another process. */
	MIGRAM_RAM_BACKEND_MEMFD,
	/** A hugetlb memfd with 2 MiB pages, mapped shared. */
	MIGRAM_RAM_BACKEND_HUGETLB,
	/** Memory the embedder mapped and passes in
	 * (MigramRamBlockConfig.host). */
	MIGRAM_RAM_BACKEND_CALLER,
} MigramRamBackend;

/** What changed, for listeners. */
typedef enum {
	MIGRAM_RAM_EVENT_ADDED = 1,   /**< a block was added */
	MIGRAM_RAM_EVENT_REMOVED = 2, /**< a block was unlinked */
	MIGRAM_RAM_EVENT_RESIZED = 3, /**< a block's used_length changed */
} MigramRamEvent;

/** Opaque; owned by its list. */
typedef struct MigramRamBlock MigramRamBlock;
/** Opaque; created by migram_ram_list_new(), single owner. */
typedef struct MigramRamList MigramRamList;

/**
 * A block's resize callback.
 *
 * Called on the updater's thread with the list mutex held, after the new
 * used_length is visible to readers and the version was bumped, before
 * listeners run.  It must not call list updaters (the mutex is held);
 * lookups are fine.
 *
 * @param block the block.
 * @param old_length used_length before.
 * @param new_length used_length now.
 * @param opaque MigramRamBlockConfig.resized_opaque.
 */
typedef void (*MigramRamResizedFunc)(MigramRamBlock *block, uint64_t old_length,
				     uint64_t new_length, void *opaque);

/**
 * A list listener.
 *
 * Called on the updater's thread with the list mutex held, after the change
 * is visible and the version bumped.  For MIGRAM_RAM_EVENT_REMOVED the block
 * is already unlinked but not yet freed: it may be read during the call.
 * It must not call list updaters; lookups are fine.
 *
 * @param list the list.
 * @param event what changed.
 * @param block the block concerned.
 * @param opaque the pointer given to migram_ram_list_add_listener().
 */
typedef void (*MigramRamListenerFunc)(MigramRamList *list, MigramRamEvent event,
				      MigramRamBlock *block, void *opaque);

/** How to create a block; zero-initialize, then fill what you need. */
typedef struct {
	/** Unique name, 1 to 255 bytes ("pc.ram", "0000:00:02.0/vga.vram"). */
	const char *idstr;
	/** Where the memory comes from. */
	MigramRamBackend backend;
	/** Bytes in use now; a multiple of the page size, > 0. */
	uint64_t used_length;
	/** Bytes reserved; 0 means used_length.  Larger makes it resizeable. */
	uint64_t max_length;
	/** MIGRAM_RAM_BACKEND_CALLER: the embedder's mapping of max_length. */
	void *host;
	/** MIGRAM_RAM_BACKEND_CALLER: the mapping's fd is @c fd. */
	bool has_fd;
	/** With @c has_fd: the caller's fd for the mapping (never closed). */
	int fd;
	/**
	 * MIGRAM_RAM_BACKEND_CALLER: the mapping's page size (0: the host's
	 * base page size).  Ignored for the other backends.
	 */
	uint64_t page_size;
	/**
	 * Extra flags: MIGRAM_RAM_SHARED for shared caller memory,
	 * MIGRAM_RAM_NO_THP for an anonymous block without huge pages.
	 */
	uint32_t flags;
	/** Leave the block out of migration (MIGRAM_RAM_MIGRATABLE unset). */
	bool not_migratable;
	/** Called after each resize; may be NULL. */
	MigramRamResizedFunc resized;
	/** Passed to @c resized. */
	void *resized_opaque;
} MigramRamBlockConfig;

/**
 * Create an empty RAM list.
 *
 * @return a new list; caller frees with migram_ram_list_free().
 *
 * Context: Any thread.
 */
MigramRamList *migram_ram_list_new(void);

/**
 * Remove every block, wait until all of them are freed, free the list.
 *
 * @param list the list, or NULL.
 *
 * Context: May block (RCU grace periods and the call_rcu barrier).  Not
 * inside an RCU read-side section; no other thread may use @p list.
 */
void migram_ram_list_free(MigramRamList *list);

/**
 * Create a block as @p config says and add it to the list.
 *
 * Its offset is the smallest gap in the global RAM address space that fits
 * max_length, aligned to 64 target pages (256 KiB) and to the block's page
 * size; freed gaps are reused.  The list stays sorted by max_length,
 * largest first (QEMU's order).
 *
 * @param list the list.
 * @param config what to create; copied, need not outlive the call.
 * @param error MIGRAM_ERROR_INVALID for a bad idstr, size or alignment;
 *        MIGRAM_ERROR_EXISTS for a duplicate idstr; MIGRAM_ERROR_NO_MEMORY
 *        when mapping fails or no hugetlb pages are reserved;
 *        MIGRAM_ERROR_IO when a system call fails.
 * @return the block; borrowed, owned by the list.  The calling updater may
 *         use it until it removes the block; other threads must obtain it
 *         through a lookup inside their RCU read-side section.
 *
 * Context: Updater.  Takes and releases the list mutex.  Calls listeners
 * (MIGRAM_RAM_EVENT_ADDED) before returning.
 */
MigramRamBlock *migram_ram_list_add(MigramRamList *list,
				    const MigramRamBlockConfig *config,
				    GError **error);

/**
 * Unlink the block named @p idstr and free it after a grace period.
 *
 * @param list the list.
 * @param idstr the block's name.
 * @param error MIGRAM_ERROR_NOT_FOUND when there is no such block.
 * @return true on success.
 *
 * Context: May block (one RCU grace period, so that no reader can still
 * find the block through the most-recently-used cache).  Updater: takes and
 * releases the list mutex; not inside an RCU read-side section.
 * Reclaim: the host memory (unless caller-owned), fd and bitmaps are freed
 * via call_rcu(); the embedder must not free them.  Caller-owned memory
 * must stay mapped until one more grace period after this call returns
 * (urcu_memb_synchronize_rcu()): readers may still be reading it.
 */
bool migram_ram_list_remove(MigramRamList *list, const char *idstr,
			    GError **error);

/**
 * Change the used_length of the block named @p idstr.
 *
 * Growth never moves the mapping or the migration bitmaps: both are sized
 * for max_length at creation.  Shrinking keeps the memory past the new
 * used_length mapped (readers that raced with the shrink stay safe).
 *
 * @param list the list.
 * @param idstr the block's name.
 * @param new_length the new used_length: > 0, <= max_length, a multiple of
 *        the block's page size.
 * @param error MIGRAM_ERROR_NOT_FOUND, or MIGRAM_ERROR_INVALID when the
 *        block is not resizeable or @p new_length is out of bounds.
 * @return true on success (also when the length does not change, in which
 *         case nothing is notified).
 *
 * Context: Updater.  Takes and releases the list mutex.  Calls the block's
 * resize callback, then listeners (MIGRAM_RAM_EVENT_RESIZED).
 */
bool migram_ram_list_resize(MigramRamList *list, const char *idstr,
			    uint64_t new_length, GError **error);

/**
 * Hold the list: until the matching migram_ram_list_release(), add, remove
 * and resize fail with MIGRAM_ERROR_BUSY and a message that names @p why.
 *
 * A migration holds the list from its switch to postcopy to its end: the
 * guest then runs on the destination with the blocks of the switch, and a
 * block added or resized on the source could never reach it (QEMU refuses
 * device_add while migrating for the same reason).  An embedder may hold
 * it too, around anything that needs the block set fixed.
 *
 * @param list the list.
 * @param why what holds it, for the error of a refused change; copied
 *        (the first holder's reason is kept while holds nest).
 * @return the list version at the hold: a caller that saw version V
 *         before and gets V back knows no change came in between.
 *
 * Context: Updater.  Takes and releases the list mutex; not from inside a
 * listener.  Holds nest (a count); every hold needs one release.
 * Added in 0.3.
 */
uint64_t migram_ram_list_hold(MigramRamList *list, const char *why);

/**
 * Release one hold of migram_ram_list_hold().  With the last one, changes
 * are allowed again.
 *
 * @param list the list; a release without a hold is a programming error
 *        (g_return_if_fail).
 *
 * Context: Updater.  Takes and releases the list mutex.  Added in 0.3.
 */
void migram_ram_list_release(MigramRamList *list);

/**
 * Register a listener for list changes.
 *
 * @param list the list.
 * @param fn the callback.
 * @param opaque passed to @p fn.
 * @return an id (> 0) for migram_ram_list_remove_listener().
 *
 * Context: Updater.  Takes and releases the list mutex; not from inside a
 * listener.
 */
guint migram_ram_list_add_listener(MigramRamList *list,
				   MigramRamListenerFunc fn, void *opaque);

/**
 * Unregister a listener.  After it returns, the listener is not running and
 * will not be called again.
 *
 * @param list the list.
 * @param id the id migram_ram_list_add_listener() returned.
 *
 * Context: Updater.  Takes and releases the list mutex; not from inside a
 * listener.
 */
void migram_ram_list_remove_listener(MigramRamList *list, guint id);

/**
 * The list's version: bumped once after every add, remove and resize.
 *
 * @param list the list.
 * @return the version.
 *
 * Context: Any thread.
 * Ordering: acquire; pairs with the release of the bump, so a reader that
 * sees a version also sees the change that produced it.
 */
uint64_t migram_ram_list_version(const MigramRamList *list);

/**
 * Number of blocks in the list.
 *
 * @param list the list.
 * @return the count at some instant during the call.
 *
 * Context: Any thread.
 */
guint migram_ram_list_count(const MigramRamList *list);

/**
 * Look a block up by name.
 *
 * @param list the list.
 * @param idstr the name.
 * @return the block or NULL; borrowed, valid until the caller's RCU
 *         read-side section ends.
 *
 * Context: RCU reader.  Lock-free.
 */
MigramRamBlock *migram_ram_list_find(MigramRamList *list, const char *idstr);

/**
 * Look up the block holding global RAM address @p ram_addr.
 *
 * Checks the most-recently-used block first (one atomic load), then walks
 * the list and caches what it found.  An address in a gap between blocks,
 * or past a block's used_length, finds nothing.
 *
 * @param list the list.
 * @param ram_addr an address in the global RAM address space.
 * @param offset where the offset inside the block is stored; may be NULL.
 * @return the block or NULL; borrowed, valid until the caller's RCU
 *         read-side section ends.
 *
 * Context: RCU reader.  Lock-free.
 */
MigramRamBlock *migram_ram_list_find_by_addr(MigramRamList *list,
					     uint64_t ram_addr,
					     uint64_t *offset);

/**
 * Look up the block whose host mapping holds @p host (within used_length).
 *
 * @param list the list.
 * @param host a host virtual address.
 * @param offset where the offset inside the block is stored; may be NULL.
 * @return the block or NULL; borrowed, valid until the caller's RCU
 *         read-side section ends.
 *
 * Context: RCU reader.  Lock-free.
 */
MigramRamBlock *migram_ram_list_find_by_host(MigramRamList *list,
					     const void *host,
					     uint64_t *offset);

/**
 * Iterate: the block after @p prev, or the first block when @p prev is
 * NULL.  Blocks come largest max_length first.
 *
 * @param list the list.
 * @param prev a block obtained in the same read-side section, or NULL.
 * @return the next block, or NULL at the end; borrowed, valid until the
 *         caller's RCU read-side section ends.
 *
 * Context: RCU reader.  A block removed concurrently may or may not be
 * visited; a block added concurrently may or may not be visited.
 */
MigramRamBlock *migram_ram_list_next(MigramRamList *list, MigramRamBlock *prev);

/**
 * As migram_ram_list_next(), skipping blocks without
 * MIGRAM_RAM_MIGRATABLE.
 *
 * @param list the list.
 * @param prev a block obtained in the same read-side section, or NULL.
 * @return the next migratable block, or NULL at the end; borrowed, valid
 *         until the caller's RCU read-side section ends.
 *
 * Context: RCU reader.
 */
MigramRamBlock *migram_ram_list_next_migratable(MigramRamList *list,
						MigramRamBlock *prev);

/**
 * Allocate the migration bitmaps of every migratable block: bmap with every
 * used page set (each page must be sent once), receivedmap clear, and
 * clear_bmap clear with one bit per 2^@p clear_bmap_shift target pages.
 *
 * @param list the list.
 * @param clear_bmap_shift chunk size exponent, MIGRAM_CLEAR_BMAP_SHIFT_MIN
 *        to MIGRAM_CLEAR_BMAP_SHIFT_MAX (QEMU's default is
 *        MIGRAM_CLEAR_BMAP_SHIFT_DEFAULT).
 * @param error MIGRAM_ERROR_INVALID for a shift out of range or bitmaps
 *        already allocated; MIGRAM_ERROR_NO_MEMORY (nothing is left
 *        allocated then).
 * @return true on success.
 *
 * Context: Updater.  Takes and releases the list mutex.  Blocks added
 * afterwards get no bitmaps (a migration fails on any list change).
 */
bool migram_ram_list_bitmaps_init(MigramRamList *list,
				  unsigned int clear_bmap_shift,
				  GError **error);

/**
 * Free every block's migration bitmaps (after a grace period, so a reader
 * that fetched a bitmap pointer may finish with it).
 *
 * @param list the list.
 *
 * Context: May block (one RCU grace period).  Updater: takes and releases
 * the list mutex; not inside an RCU read-side section.
 */
void migram_ram_list_bitmaps_free(MigramRamList *list);

/**
 * The block's name.
 *
 * @param block the block.
 * @return a NUL-terminated string; borrowed, lives as long as the block.
 *
 * Context: RCU reader, or the updater holding the block.
 */
const char *migram_ram_block_idstr(const MigramRamBlock *block);

/**
 * The block's host mapping (max_length bytes).
 *
 * @param block the block.
 * @return the mapping; borrowed, lives as long as the block.
 *
 * Context: RCU reader, or the updater holding the block.
 */
void *migram_ram_block_host(const MigramRamBlock *block);

/**
 * The block's start in the global RAM address space.
 *
 * @param block the block.
 * @return the offset; fixed for the block's life.
 *
 * Context: RCU reader, or the updater holding the block.
 */
uint64_t migram_ram_block_offset(const MigramRamBlock *block);

/**
 * Bytes in use now.
 *
 * @param block the block.
 * @return used_length (an acquire load: a resize may change it).
 *
 * Context: RCU reader, or the updater holding the block.
 */
uint64_t migram_ram_block_used_length(const MigramRamBlock *block);

/**
 * Bytes reserved.
 *
 * @param block the block.
 * @return max_length; fixed for the block's life.
 *
 * Context: RCU reader, or the updater holding the block.
 */
uint64_t migram_ram_block_max_length(const MigramRamBlock *block);

/**
 * The backing page size (the host's base page, or 2 MiB for hugetlb).
 *
 * @param block the block.
 * @return the page size in bytes.
 *
 * Context: RCU reader, or the updater holding the block.
 */
uint64_t migram_ram_block_page_size(const MigramRamBlock *block);

/**
 * The block's MigramRamFlags.
 *
 * @param block the block.
 * @return the flags; fixed for the block's life.
 *
 * Context: RCU reader, or the updater holding the block.
 */
uint32_t migram_ram_block_flags(const MigramRamBlock *block);

/**
 * The block's file descriptor (memfd, hugetlb memfd, or the caller's).
 *
 * @param block the block.
 * @return the fd, or -1 for anonymous memory; borrowed, closed when the
 *         block is freed (a caller's fd is never closed).
 *
 * Context: RCU reader, or the updater holding the block.
 */
int migram_ram_block_fd(const MigramRamBlock *block);

/**
 * The used_length as agreed with the migration source (destination side),
 * which bounds postcopy page requests and userfaultfd registration.
 *
 * @param block the block.
 * @return postcopy_length; equals used_length at creation.
 *
 * Context: RCU reader, or the updater holding the block.
 */
uint64_t migram_ram_block_postcopy_length(const MigramRamBlock *block);

/**
 * Set postcopy_length (the destination does so from the stream's block
 * list, before the guest runs).
 *
 * @param block the block.
 * @param length the new value, at most max_length.
 *
 * Context: Migration thread only.
 */
void migram_ram_block_set_postcopy_length(MigramRamBlock *block,
					  uint64_t length);

/**
 * The source's dirty bitmap: bit i set means target page i must be sent.
 *
 * @param block the block.
 * @return max_length / 4 KiB bits, or NULL outside a migration; borrowed,
 *         valid until migram_ram_list_bitmaps_free() or the block's removal
 *         (and the end of the caller's read-side section).
 *
 * Context: RCU reader.  Written by the migration thread only.
 */
unsigned long *migram_ram_block_bmap(const MigramRamBlock *block);

/**
 * The destination's received bitmap: bit i set means target page i was
 * placed.
 *
 * @param block the block.
 * @return max_length / 4 KiB bits, or NULL outside a migration; borrowed,
 *         as for migram_ram_block_bmap().
 *
 * Context: RCU reader.  Written with atomic bit operations (postcopy has
 * several placing threads).
 */
unsigned long *migram_ram_block_receivedmap(const MigramRamBlock *block);

/**
 * The source's owed log-clear bitmap: bit c set means chunk c (target pages
 * [c << shift, (c + 1) << shift)) was synced but its dirty log not cleared.
 *
 * @param block the block.
 * @return the bitmap, or NULL outside a migration; borrowed, as for
 *         migram_ram_block_bmap().
 *
 * Context: RCU reader.  Written by the migration thread only.
 */
unsigned long *migram_ram_block_clear_bmap(const MigramRamBlock *block);

/**
 * The clear_bmap chunk exponent: one clear_bmap bit per 2^shift pages.
 *
 * @param block the block.
 * @return the shift set by migram_ram_list_bitmaps_init().
 *
 * Context: RCU reader.
 */
unsigned int migram_ram_block_clear_bmap_shift(const MigramRamBlock *block);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramRamList, migram_ram_list_free)

G_END_DECLS

#endif /* MIGRAM_RAMBLOCK_H */
