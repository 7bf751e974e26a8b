/* SPDX-License-Identifier: MIT */
/**
 * @file snapshot.h
 * Snapshot files with fixed page offsets, their writer, reader and restore.
 *
 * A snapshot file (docs/snapshots.md has the byte layout) holds, per RAM
 * block, a present-page bitmap, optional per-page hashes of the memory at
 * the snapshot instant, and the block's pages at fixed offsets: page i of
 * a block is at pages_offset + i * 4 KiB, pages_offset 1 MiB aligned
 * (QEMU's mapped-ram idea).  Pages not present take no space (the file is
 * sparse).  A full snapshot leaves zero pages out; a diff snapshot holds
 * only pages written since its parent (Firecracker's diff snapshots), and
 * names its parent by id, so restore composes base + diffs in order.
 *
 * Writing:
 *
 *     w = migram_snapshot_writer_new(path, &params, &err);
 *     migram_snapshot_writer_add_block(w, "pc.ram", len, 4096, &idx, &err);
 *     migram_snapshot_writer_start(w, &err);       lays the file out
 *     migram_snapshot_writer_put_pages(...) / _put_staging(...)
 *     migram_snapshot_writer_set_hashes(...)       optional
 *     migram_snapshot_writer_finish(w, &id, &err); header last, fsync
 *
 * A writer is used by one thread at a time.  A file whose writer did not
 * finish has no magic and is refused by the reader.
 *
 * Reading: migram_snapshot_open() validates the header, the block table
 * and every bitmap against the file's size before it returns, so the
 * accessors never read outside the file; every error names the offset.
 * An open file is immutable and may be read from any number of threads.
 *
 * Restore: migram_snapshot_restore() writes a chain (a full snapshot,
 * then diffs, each the child of the one before) into the blocks of a RAM
 * list with the same layout, eagerly and in parallel.
 * migram_snapshot_lazy_start() instead registers the blocks with
 * userfaultfd (missing mode) and serves each first touch from the chain,
 * while a background thread prefetches the rest;
 * migram_snapshot_lazy_finish() waits for the prefetch and cleans up.
 */
#ifndef MIGRAM_SNAPSHOT_H
#define MIGRAM_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include <migram/ramblock.h>
#include <migram/staging.h>

G_BEGIN_DECLS

/** The file's magic, at offset 0. */
#define MIGRAM_SNAPSHOT_MAGIC "MIGRAMSN"
/** The format version this library writes and reads. */
#define MIGRAM_SNAPSHOT_VERSION 1u
/** Alignment of every block's pages region. */
#define MIGRAM_SNAPSHOT_ALIGN (1u << 20)
/** Most blocks in one file. */
#define MIGRAM_SNAPSHOT_MAX_BLOCKS 1024u
/** Largest block (used_length) a file may describe: 1 TiB. */
#define MIGRAM_SNAPSHOT_MAX_BLOCK_BYTES (1ull << 40)
/** Largest device state a file may carry: 64 MiB. */
#define MIGRAM_SNAPSHOT_MAX_DEVICE_BYTES (64u << 20)

/** How to write a snapshot; zero-initialize, then fill. */
typedef struct {
	/** A diff: pages written since @c parent_id's snapshot. */
	bool diff;
	/** With @c diff: the parent's snapshot id. */
	uint64_t parent_id;
	/** The epoch number (0 for a base, parent's + 1 for a diff). */
	uint64_t epoch;
} MigramSnapshotParams;

/** Opaque; a snapshot being written.  One thread at a time. */
typedef struct MigramSnapshotWriter MigramSnapshotWriter;
/** Opaque; an open, validated snapshot file.  Immutable; any thread. */
typedef struct MigramSnapshotFile MigramSnapshotFile;

/**
 * The page hash recorded in snapshot files (64 bits, not cryptographic):
 * equal pages hash equal; used to verify a restore.
 *
 * @param page 4 KiB of readable bytes.
 * @return the hash.
 *
 * Context: Any thread.  Never allocates.
 */
uint64_t migram_snapshot_page_hash(const void *page);

/**
 * Create (or truncate) @p path and begin a snapshot.
 *
 * @param path the file.
 * @param params how (copied).
 * @param error MIGRAM_ERROR_IO when the file cannot be created;
 *        MIGRAM_ERROR_INVALID for a diff without a parent id.
 * @return a writer; free with migram_snapshot_writer_free().
 *
 * Context: Any thread.
 */
MigramSnapshotWriter *
migram_snapshot_writer_new(const char *path, const MigramSnapshotParams *params,
			   GError **error);

/**
 * Describe a block, before migram_snapshot_writer_start().
 *
 * @param w the writer.
 * @param name the block's idstr, 1 to 255 bytes, unique in the file.
 * @param used_length bytes, a positive multiple of 4 KiB, at most
 *        MIGRAM_SNAPSHOT_MAX_BLOCK_BYTES.
 * @param page_size the block's backing page size (recorded; restore
 *        checks it against the target block).
 * @param index where the block's index in the file is stored.
 * @param error MIGRAM_ERROR_INVALID for a bad name, size, a duplicate, too
 *        many blocks, or a writer already started.
 * @return true on success.
 *
 * Context: The writer's thread.
 */
bool migram_snapshot_writer_add_block(MigramSnapshotWriter *w, const char *name,
				      uint64_t used_length, uint64_t page_size,
				      guint *index, GError **error);

/**
 * Add every migratable block of @p list (name, used_length, page size),
 * in list order; indices follow the list.
 *
 * @param w the writer.
 * @param list the list.
 * @param error as migram_snapshot_writer_add_block().
 * @return true on success.
 *
 * Context: The writer's thread; takes the RCU read lock itself.
 */
bool migram_snapshot_writer_add_list(MigramSnapshotWriter *w,
				     MigramRamList *list, GError **error);

/**
 * Lay the file out (its final, sparse size) so pages can be written.
 *
 * @param w the writer.
 * @param error MIGRAM_ERROR_INVALID without blocks or when started twice;
 *        MIGRAM_ERROR_IO when the file cannot be sized.
 * @return true on success.
 *
 * Context: The writer's thread.
 */
bool migram_snapshot_writer_start(MigramSnapshotWriter *w, GError **error);

/**
 * Write pages [@p first, @p first + @p npages) of block @p index and mark
 * them present.
 *
 * @param w a started writer.
 * @param index the block.
 * @param first the first page.
 * @param npages how many, > 0.
 * @param data @p npages * 4 KiB bytes.
 * @param error MIGRAM_ERROR_INVALID for a bad block or range;
 *        MIGRAM_ERROR_IO when the write fails.
 * @return true on success.
 *
 * Context: The writer's thread.
 */
bool migram_snapshot_writer_put_pages(MigramSnapshotWriter *w, guint index,
				      uint64_t first, uint64_t npages,
				      const void *data, GError **error);

/**
 * Write every present page of @p st into block @p index (staging page i is
 * block page i), in runs of up to @p max_run pages; with @p release, clear
 * each run from the staging once written (its memory goes back).
 *
 * @param w a started writer.
 * @param index the block.
 * @param st the staging; at most the block's pages long in use.
 * @param max_run the longest single write, in pages, > 0.
 * @param release clear written runs from @p st.
 * @param written where the number of pages written is stored; may be NULL.
 * @param error as migram_snapshot_writer_put_pages().
 * @return true on success.
 *
 * Context: The writer's thread; other threads may read @p st meanwhile.
 */
bool migram_snapshot_writer_put_staging(MigramSnapshotWriter *w, guint index,
					MigramStaging *st, uint64_t max_run,
					bool release, uint64_t *written,
					GError **error);

/** Options of migram_snapshot_writer_put_staging_all(). */
typedef struct {
	/** writer threads, 1 to 64 (0: one).  More than one pays only
	 *  where one thread's copy into the page cache is the limit: on
	 *  ext4 and tmpfs one file's buffered writes serialize on its
	 *  inode, and two writers measured slower than one
	 *  (docs/snapshots.md, "Writing the file") */
	guint threads;
	/** bytes in one write at most, rounded down to whole pages
	 *  (0: 1 MiB; at least one page) */
	uint64_t max_io;
	/** a gap of at most this many absent pages between two present
	 *  runs is written as zeros, so both runs go out in one write; the
	 *  gap stays absent in the bitmap, and a restore never reads it.
	 *  It costs file space (those pages are no longer holes) and saves
	 *  a system call and an extent per gap.  0: never; at most 256. */
	uint64_t bridge_pages;
	/** clear each written run from its staging (its memory goes back) */
	bool release;
} MigramSnapshotWriteOptions;

/** What migram_snapshot_writer_put_staging_all() did. */
typedef struct {
	uint64_t pages_written; /**< present pages written (and marked) */
	uint64_t pages_bridged; /**< absent pages written as zeros */
	uint64_t writes;        /**< pwritev() calls that completed a batch */
	uint64_t elapsed_ns;    /**< wall time of the call, no fsync */
	guint threads;          /**< threads that wrote */
} MigramSnapshotWriteStats;

/**
 * Write every present page of every staging in @p staging into the
 * block of the same index, with @p opts->threads writers in parallel.
 * Work is cut into chunks of 16 MiB of one block, taken from an atomic
 * counter; inside a chunk, present runs (and gaps of up to
 * @p opts->bridge_pages absent pages between them) are gathered into
 * writes of up to @p opts->max_io bytes, one pwritev() each, at the pages'
 * fixed offsets.  Page i of staging i's block goes to page i of block i.
 *
 * On failure some pages may be written and marked; the writer must then
 * be freed without migram_snapshot_writer_finish(), which leaves a file
 * without magic (refused by migram_snapshot_open()).
 *
 * @param w a started writer.
 * @param staging one per block of @p w, in index order; NULL entries are
 *        skipped.  Borrowed; nobody may add pages to them during the call.
 * @param n_staging the writer's block count.
 * @param opts options; NULL means all defaults (release off).
 * @param stats filled in on success; may be NULL.
 * @param error MIGRAM_ERROR_INVALID for a bad count or options, or a
 *        staging longer than its block; MIGRAM_ERROR_IO naming the file,
 *        the block and the offset when a write fails.
 * @return true on success.
 *
 * Context: The writer's thread, which must not be inside an RCU read-side
 * section; the writer threads it starts touch no RCU-protected data.
 * Other threads may read the stagings meanwhile.
 */
bool migram_snapshot_writer_put_staging_all(
	MigramSnapshotWriter *w, MigramStaging *const *staging, guint n_staging,
	const MigramSnapshotWriteOptions *opts, MigramSnapshotWriteStats *stats,
	GError **error);

/**
 * Record the per-page hashes of block @p index (one per page of
 * used_length: the memory at the snapshot instant, present or not).
 *
 * @param w a started writer.
 * @param index the block.
 * @param hashes used_length / 4 KiB hashes (copied).
 * @param error MIGRAM_ERROR_INVALID for a bad block.
 * @return true on success.
 *
 * Context: The writer's thread.
 */
bool migram_snapshot_writer_set_hashes(MigramSnapshotWriter *w, guint index,
				       const uint64_t *hashes, GError **error);

/**
 * Record block @p index's hot pages: those the guest wrote in the
 * interval before the snapshot (the dirty log collected at the pause).
 * A lazy restore prefetches them before the others.
 *
 * @param w a started writer.
 * @param index the block.
 * @param hot used_length / 4 KiB bits (copied).
 * @param error MIGRAM_ERROR_INVALID for a bad block.
 * @return true on success.
 *
 * Context: The writer's thread.
 */
bool migram_snapshot_writer_set_hot(MigramSnapshotWriter *w, guint index,
				    const unsigned long *hot, GError **error);

/**
 * Store the embedder's device state (vCPU registers, device models: any
 * bytes) with the snapshot.  It is written at finish(), after the pages,
 * with a 64-bit hash the reader checks.  A diff carries the whole device
 * state of its own instant (device state is never diffed); a restore
 * takes the last file's.
 *
 * @param w a writer, before migram_snapshot_writer_finish().
 * @param data @p len bytes (copied); replaces an earlier call's.
 * @param len 1 to MIGRAM_SNAPSHOT_MAX_DEVICE_BYTES.
 * @param error MIGRAM_ERROR_INVALID for a bad length or a finished writer.
 * @return true on success.
 *
 * Context: The writer's thread.
 */
bool migram_snapshot_writer_set_device_state(MigramSnapshotWriter *w,
					     const void *data, size_t len,
					     GError **error);

/**
 * Write bitmaps, hashes, the block table and last the header, fsync.
 *
 * @param w a started writer; unusable afterwards (free it).
 * @param snapshot_id where the new snapshot's id is stored (a diff of it
 *        names it as its parent); may be NULL.
 * @param error MIGRAM_ERROR_INVALID when not started;
 *        MIGRAM_ERROR_IO when a write or fsync fails.
 * @return true on success.
 *
 * Context: The writer's thread.
 */
bool migram_snapshot_writer_finish(MigramSnapshotWriter *w,
				   uint64_t *snapshot_id, GError **error);

/**
 * Close the file and free the writer (an unfinished file stays behind,
 * without magic, and is refused by the reader).
 *
 * @param w the writer, or NULL.
 *
 * Context: The writer's thread.
 */
void migram_snapshot_writer_free(MigramSnapshotWriter *w);

/**
 * Open and validate a snapshot file.
 *
 * @param path the file.
 * @param error MIGRAM_ERROR_IO when it cannot be opened or read;
 *        MIGRAM_ERROR_PROTOCOL for a file that is not a finished snapshot
 *        of this version, is truncated or corrupted (the message names the
 *        offset and the field).
 * @return the file; close with migram_snapshot_close().
 *
 * Context: Any thread.
 */
MigramSnapshotFile *migram_snapshot_open(const char *path, GError **error);

/**
 * As migram_snapshot_open(), on an open descriptor (duplicated; the caller
 * keeps @p fd).
 *
 * @param fd a readable, seekable descriptor.
 * @param name what errors call the file.
 * @param error as migram_snapshot_open().
 * @return the file; close with migram_snapshot_close().
 *
 * Context: Any thread.
 */
MigramSnapshotFile *migram_snapshot_open_fd(int fd, const char *name,
					    GError **error);

/**
 * Close a snapshot file.
 *
 * @param f the file, or NULL.
 *
 * Context: Any thread; no other thread may use @p f.
 */
void migram_snapshot_close(MigramSnapshotFile *f);

/**
 * The snapshot's id.
 * @param f the file.
 * @return its id (never 0).
 * Context: Any thread.
 */
uint64_t migram_snapshot_id(const MigramSnapshotFile *f);

/**
 * The parent's id.
 * @param f the file.
 * @return the parent's id, 0 for a full snapshot.
 * Context: Any thread.
 */
uint64_t migram_snapshot_parent_id(const MigramSnapshotFile *f);

/**
 * Whether the file is a diff.
 * @param f the file.
 * @return true for a diff.
 * Context: Any thread.
 */
bool migram_snapshot_is_diff(const MigramSnapshotFile *f);

/**
 * The epoch number.
 * @param f the file.
 * @return the epoch recorded by the writer.
 * Context: Any thread.
 */
uint64_t migram_snapshot_epoch(const MigramSnapshotFile *f);

/**
 * The number of blocks.
 * @param f the file.
 * @return 1 to MIGRAM_SNAPSHOT_MAX_BLOCKS.
 * Context: Any thread.
 */
guint migram_snapshot_block_count(const MigramSnapshotFile *f);

/**
 * Find a block by name.
 * @param f the file.
 * @param name the idstr.
 * @param index where its index is stored.
 * @return false when there is none.
 * Context: Any thread.
 */
bool migram_snapshot_find_block(const MigramSnapshotFile *f, const char *name,
				guint *index);

/** One block of a file, as migram_snapshot_block_info() reports it. */
typedef struct {
	const char *name;       /**< idstr; borrowed, lives with the file */
	uint64_t used_length;   /**< bytes */
	uint64_t page_size;     /**< the backing page size recorded */
	uint64_t npages;        /**< used_length / 4 KiB */
	uint64_t present_pages; /**< pages stored in the file */
	uint64_t pages_offset;  /**< file offset of page 0 */
	uint64_t bitmap_offset; /**< file offset of the present bitmap */
	uint64_t hashes_offset; /**< file offset of the hashes, 0: none */
	uint64_t hot_offset;    /**< file offset of the hot bitmap, 0: none */
	uint64_t hot_pages;     /**< pages in the hot bitmap */
} MigramSnapshotBlockInfo;

/**
 * Describe block @p index.
 * @param f the file.
 * @param index below migram_snapshot_block_count().
 * @param info filled in.
 * Context: Any thread.
 */
void migram_snapshot_block_info(const MigramSnapshotFile *f, guint index,
				MigramSnapshotBlockInfo *info);

/**
 * The size of the file's device state, without reading it.
 * @param f the file.
 * @return bytes, or 0 when the file has none.
 * Context: Any thread.
 */
uint64_t migram_snapshot_device_state_size(const MigramSnapshotFile *f);

/**
 * The device state stored with migram_snapshot_writer_set_device_state().
 *
 * @param f the file.
 * @param error MIGRAM_ERROR_NOT_FOUND when the file has none;
 *        MIGRAM_ERROR_PROTOCOL naming the offset when its hash does not
 *        match; MIGRAM_ERROR_IO.
 * @return the bytes (free with g_bytes_unref()), or NULL.
 *
 * Context: Any thread.
 */
GBytes *migram_snapshot_read_device_state(const MigramSnapshotFile *f,
					  GError **error);

/**
 * Whether page @p page of block @p index is stored in the file.
 * @param f the file.
 * @param index the block.
 * @param page below the block's npages.
 * @return true if present.
 * Context: Any thread.  Never allocates.
 */
bool migram_snapshot_page_present(const MigramSnapshotFile *f, guint index,
				  uint64_t page);

/**
 * Read pages [@p first, @p first + @p npages) of block @p index from their
 * fixed offsets (absent pages read as zeros).
 *
 * @param f the file.
 * @param index the block.
 * @param first the first page.
 * @param npages how many.
 * @param buf @p npages * 4 KiB writable bytes.
 * @param error MIGRAM_ERROR_INVALID for a bad range; MIGRAM_ERROR_IO when
 *        the read fails or the file shrank (naming the offset).
 * @return true on success.
 *
 * Context: Any thread (pread).  Never allocates.
 */
bool migram_snapshot_read_pages(const MigramSnapshotFile *f, guint index,
				uint64_t first, uint64_t npages, void *buf,
				GError **error);

/**
 * The per-page hashes of block @p index, read from the file.
 *
 * @param f the file.
 * @param index the block.
 * @param error MIGRAM_ERROR_NOT_FOUND when the file has none;
 *        MIGRAM_ERROR_IO when reading fails.
 * @return npages hashes; free with g_free().
 *
 * Context: Any thread.
 */
uint64_t *migram_snapshot_read_hashes(const MigramSnapshotFile *f, guint index,
				      GError **error);

/**
 * A human-readable description (header, and per block its geometry,
 * offsets and present pages), for `migram-stream info`.
 *
 * @param f the file.
 * @return a string; free with g_free().
 *
 * Context: Any thread.
 */
char *migram_snapshot_describe(const MigramSnapshotFile *f);

/** What a restore did. */
typedef struct {
	uint64_t pages_read;   /**< pages read from files */
	uint64_t pages_zeroed; /**< pages a full snapshot left out, zeroed */
	uint64_t bytes_read;   /**< bytes read from files */
	uint64_t elapsed_ns;   /**< wall time of the restore */
	guint threads;         /**< threads that read */
} MigramRestoreStats;

/**
 * Check that @p chain is a base followed by its diffs, in order, and that
 * each file's blocks match @p list's migratable blocks (names, lengths,
 * page sizes, and no block left out).
 *
 * @param chain the files, base first.
 * @param n the number of files, > 0.
 * @param list the target.
 * @param error MIGRAM_ERROR_INVALID naming the file and the mismatch ("a
 *        diff without its base", "block 'x' is 8 MiB here, 4 MiB in the
 *        file").
 * @return true when the chain can be restored into @p list.
 *
 * Context: Any registered RCU thread; takes the read lock itself.
 */
bool migram_snapshot_check_chain(MigramSnapshotFile *const *chain, guint n,
				 MigramRamList *list, GError **error);

/**
 * Eager restore: write the chain's memory into @p list's blocks, reading
 * each page once from the newest file that holds it, @p threads readers
 * in parallel.  Pages no file holds are zeroed.
 *
 * @param chain the files, base first.
 * @param n the number of files.
 * @param list the target; its blocks must not be in use meanwhile.
 * @param threads reader threads, 1 to 64 (0: one per online CPU, up to 8).
 * @param stats filled in; may be NULL.
 * @param error as migram_snapshot_check_chain(), or MIGRAM_ERROR_IO.
 * @return true on success.
 *
 * Context: A registered RCU thread, not inside a read-side section (the
 * readers it starts register themselves).
 */
bool migram_snapshot_restore(MigramSnapshotFile *const *chain, guint n,
			     MigramRamList *list, guint threads,
			     MigramRestoreStats *stats, GError **error);

/**
 * Compare @p list's memory with the hashes of the chain's last file.
 *
 * @param f the file whose hashes to use.
 * @param list the restored list.
 * @param mismatched where the number of differing pages is stored.
 * @param error MIGRAM_ERROR_NOT_FOUND without hashes; MIGRAM_ERROR_INVALID
 *        for a layout mismatch; MIGRAM_ERROR_IO.
 * @return true when the comparison ran (see @p mismatched).
 *
 * Context: Any registered RCU thread; takes the read lock itself.
 */
bool migram_snapshot_verify(const MigramSnapshotFile *f, MigramRamList *list,
			    uint64_t *mismatched, GError **error);

/** What staging one block during a pause did. */
typedef struct {
	uint64_t pages_scanned; /**< pages looked at */
	uint64_t pages_copied;  /**< pages copied into the staging */
	uint64_t zero_skipped;  /**< full snapshot: zero pages left out */
	uint64_t copy_ns;       /**< time spent scanning and copying */
	uint64_t hash_ns;       /**< time spent hashing (0 without hashes) */
} MigramStageStats;

/**
 * Stage block @p block while the guest is paused: copy into @p st the
 * pages set in @p dirty (a diff epoch), or with @p dirty NULL every
 * non-zero page (a full snapshot; zero pages stay absent), and with
 * @p hashes record every page's migram_snapshot_page_hash().
 *
 * @param st a staging at least used_length / 4 KiB pages long.
 * @param block the block (its used_length bounds the pages looked at).
 * @param dirty a bitmap of used_length / 4 KiB bits, or NULL.
 * @param hashes used_length / 4 KiB hashes to fill, or NULL.
 * @param stats filled in (added to: zero it first); may be NULL.
 * @param error MIGRAM_ERROR_INVALID when @p st is too small.
 * @return true on success.
 *
 * Context: RCU reader, or the updater holding the block; the guest must
 * not write the block meanwhile (that is the pause).  Never allocates or
 * locks: staging is the pause's whole cost.
 */
bool migram_snapshot_stage_block(MigramStaging *st, const MigramRamBlock *block,
				 const unsigned long *dirty, uint64_t *hashes,
				 MigramStageStats *stats, GError **error);

/** Opaque; a lazy restore in progress.  Single owner. */
typedef struct MigramLazyRestore MigramLazyRestore;

/** What a lazy restore did. */
typedef struct {
	uint64_t faults;         /**< guest faults served from the files */
	uint64_t zero_faults;    /**< of those, pages no file holds (zeroed) */
	uint64_t prefetched;     /**< pages the background thread placed */
	uint64_t prefetched_hot; /**< of those, hot pages placed first */
	uint64_t first_fault_ns; /**< start to the first fault served, 0: none
				  */
	uint64_t elapsed_ns;     /**< start to every page placed */
} MigramLazyStats;

/**
 * Start a lazy restore of @p chain into @p list: register every block's
 * used_length with userfaultfd in missing mode, serve each first touch of
 * a page from the newest file holding it (or a zero page), and prefetch
 * every other page in a background thread: first the last file's hot
 * pages (migram_snapshot_writer_set_hot()), then the rest in address
 * order.  The guest
 * may run as soon as this returns.
 *
 * @param chain the files, base first; borrowed until
 *        migram_snapshot_lazy_finish() returns.
 * @param n the number of files.
 * @param list the target: fresh blocks never touched (anonymous or memfd,
 *        not hugetlb); none may be removed or resized meanwhile.
 * @param error as migram_snapshot_check_chain(); MIGRAM_ERROR_UNSUPPORTED
 *        without userfaultfd or for a hugetlb block; MIGRAM_ERROR_IO.
 * @return the restore; finish it with migram_snapshot_lazy_finish().
 *
 * Context: A registered RCU thread, not in a read-side section.  Starts
 * two threads (fault handler, prefetcher).
 */
MigramLazyRestore *migram_snapshot_lazy_start(MigramSnapshotFile *const *chain,
					      guint n, MigramRamList *list,
					      GError **error);

/**
 * Wait until every page is placed, stop the threads, unregister the
 * blocks and free @p lr.
 *
 * @param lr the restore (freed, also on failure).
 * @param stats filled in; may be NULL.
 * @param error the first error a thread met (MIGRAM_ERROR_IO naming the
 *        file and offset); the guest's memory is then incomplete.
 * @return true when every page was placed.
 *
 * Context: The thread that started it.  Blocks until the prefetch ends.
 */
bool migram_snapshot_lazy_finish(MigramLazyRestore *lr, MigramLazyStats *stats,
				 GError **error);

/** Opaque; a copy-before-write snapshot in progress.  Single owner. */
typedef struct MigramCowSnapshot MigramCowSnapshot;

/** What a copy-before-write snapshot did. */
typedef struct {
	uint64_t protect_ns;    /**< cow_start: registering and protecting */
	uint64_t wp_faults;     /**< guest writes that copied a page first */
	uint64_t pages_written; /**< pages written to the file */
	uint64_t from_staging;  /**< of those, taken from the copies */
	uint64_t zero_skipped;  /**< full snapshot: zero pages left out */
} MigramCowStats;

/**
 * Strategy "copy-before-write" (QEMU's background snapshot): while the
 * guest is paused, register every migratable block of @p list with
 * userfaultfd write-protect and protect its used_length (never-touched
 * pages too).  Then resume the guest: its first write to a page blocks
 * until a handler thread has copied the page's old content into a
 * staging area and unprotected it.  migram_snapshot_cow_write() then
 * writes the memory as it was at the pause.
 *
 * @param list the guest's RAM; no block may be added, removed or resized
 *        until migram_snapshot_cow_finish().
 * @param error MIGRAM_ERROR_UNSUPPORTED without userfaultfd write-protect
 *        on unpopulated memory (Linux 6.4) or shmem (for memfd blocks),
 *        or for a hugetlb block; MIGRAM_ERROR_IO.
 * @return the snapshot in progress.
 *
 * Context: A registered RCU thread, not in a read-side section, with the
 * guest paused.  Starts one thread (the write-fault handler).
 */
MigramCowSnapshot *migram_snapshot_cow_start(MigramRamList *list,
					     GError **error);

/**
 * Write the memory as it was at migram_snapshot_cow_start() into @p w:
 * every non-zero page (with @p dirty NULL) or the pages set in
 * dirty[i] for the i-th migratable block (a diff), each page taken from
 * its copy if the guest wrote it since, else from guest memory (still
 * protected, so unchanged), and unprotected once written.
 *
 * @param cow the snapshot in progress.
 * @param w a started writer whose blocks are the list's migratable
 *        blocks in list order (migram_snapshot_writer_add_list()).
 * @param dirty per block a bitmap of used_length / 4 KiB bits, or NULL.
 * @param error as migram_snapshot_writer_put_pages().
 * @return true on success.
 *
 * Context: The thread that started @p cow; the guest runs meanwhile.
 */
bool migram_snapshot_cow_write(MigramCowSnapshot *cow, MigramSnapshotWriter *w,
			       const unsigned long *const *dirty,
			       GError **error);

/**
 * Unprotect everything, stop the handler, unregister, free @p cow.
 *
 * @param cow the snapshot (freed).
 * @param stats filled in; may be NULL.
 *
 * Context: The thread that started @p cow.
 */
void migram_snapshot_cow_finish(MigramCowSnapshot *cow, MigramCowStats *stats);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramSnapshotWriter, migram_snapshot_writer_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramSnapshotFile, migram_snapshot_close)

G_END_DECLS

#endif /* MIGRAM_SNAPSHOT_H */
