/* SPDX-License-Identifier: MIT */
/**
 * @file verify.h
 * Verification after a migration: per-page hashes exchanged over a channel.
 *
 * Once a migration has ended (the source's guest paused, the destination's
 * load returned), the destination calls migram_verify_send() and the source
 * migram_verify_compare() on one connection (the migration's own, or any
 * other: a MigramChannel wraps any fd, see migram_channel_new()).  The
 * destination sends one 64-bit hash per target page of every migratable
 * block; the source hashes its own pages and compares, and reports the first
 * difference: a page (block, offset), a block only one side has, or a block
 * of another size.  migram-sim verifies every run this way.
 *
 * Wire format (all integers big-endian; docs/wire-format.md, "Verification"):
 *
 *     be32 magic 0x4d475648 ("MGVH")   be32 version (1)   be32 page size
 *     per block:  counted string idstr (1..255 bytes), be64 used_length,
 *                 ceil(used_length / page size) x be64 page hash
 *     end:        counted string of length 0
 *
 * A page's hash is 64-bit FNV-1a-like over its 64-bit words (a short last
 * page over its bytes); it detects corruption, it is not a cryptographic
 * proof against a peer that lies on purpose.
 *
 * A hostile stream cannot make migram_verify_compare() read or write outside
 * a block, loop without end or allocate more than a name per local block:
 * a geometry the source does not have ends the comparison with a difference,
 * a malformed stream ends it with a MIGRAM_ERROR_PROTOCOL naming the byte
 * offset and the field.
 */
#ifndef MIGRAM_VERIFY_H
#define MIGRAM_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/channel.h>
#include <migram/ramblock.h>

G_BEGIN_DECLS

/** Magic that opens a verification stream ("MGVH"). */
#define MIGRAM_VERIFY_MAGIC 0x4d475648u
/** Version of the verification stream this library writes and reads. */
#define MIGRAM_VERIFY_VERSION 1u

/** What the first difference found is. */
typedef enum {
	MIGRAM_VERIFY_EQUAL = 0,         /**< every compared page matched */
	MIGRAM_VERIFY_PAGE = 1,          /**< a page's content differs */
	MIGRAM_VERIFY_MISSING_HERE = 2,  /**< the peer has a block we lack */
	MIGRAM_VERIFY_MISSING_THERE = 3, /**< we have a block the peer lacks */
	MIGRAM_VERIFY_SIZE = 4,          /**< a block's used_length differs */
} MigramVerifyDiff;

/** The outcome of migram_verify_compare(). */
typedef struct {
	MigramVerifyDiff diff; /**< the first difference, or EQUAL */
	char block[256];       /**< its block's idstr ("" when EQUAL) */
	uint64_t offset;       /**< PAGE: byte offset of the page in block */
	uint64_t local_length; /**< SIZE: our used_length */
	uint64_t peer_length;  /**< SIZE: the peer's used_length */
	uint64_t blocks;       /**< blocks compared */
	uint64_t pages;        /**< pages compared (skipped ones excluded) */
	uint64_t skipped;      /**< pages the skip callback excluded */
	uint64_t differing;    /**< pages that differ (the first is offset) */
} MigramVerifyResult;

/**
 * Called for every page before it is compared; returning true leaves it out
 * (for example pages a destination guest legitimately wrote after a
 * postcopy switch-over, vouched for another way).
 *
 * @param block the block's idstr.
 * @param offset the page's byte offset in the block.
 * @param opaque the caller's pointer.
 * @return true to skip the page.
 *
 * Context: migram_verify_compare()'s thread, inside an RCU read-side
 * critical section: must not block or call synchronize_rcu.
 */
typedef bool (*MigramVerifySkipFn)(const char *block, uint64_t offset,
				   void *opaque);

/**
 * Hash one page as the verification stream does.
 *
 * @param page its first byte; need not be aligned.
 * @param len its length (MIGRAM_TARGET_PAGE_SIZE but for a short last page).
 * @return the 64-bit hash.
 *
 * Context: Any thread.  Never allocates or locks.
 */
uint64_t migram_verify_page_hash(const void *page, size_t len);

/**
 * Send the hashes of every migratable block of @p list (the destination's
 * half), then flush.
 *
 * @param list the blocks; their memory must not change meanwhile (the
 *        destination's guest not yet running, or paused).
 * @param ch the connection to the peer; its writes are queued and flushed
 *        before this returns.
 * @param error set (MIGRAM_ERROR_IO) when the flush fails; names the stage.
 * @return true when every hash was sent.
 *
 * Context: RCU-registered thread; takes the RCU read lock itself while it
 * hashes.  May block on the channel.  Allocates nothing per page.
 */
bool migram_verify_send(MigramRamList *list, MigramChannel *ch, GError **error);

/**
 * Read the peer's hashes from @p ch and compare them with the pages of
 * @p list (the source's half).
 *
 * Reading stops at the stream's end marker, or at the first block whose
 * name or size the source does not share (the rest of the stream is then
 * left unread: the channel is not usable for anything after that).  Page
 * differences do not stop it: all pages are compared and counted.
 *
 * @param list the source's blocks; their memory must not change meanwhile.
 * @param ch the connection the peer sends on.
 * @param skip optional: pages to leave out; NULL compares every page.
 * @param opaque passed to @p skip.
 * @param result filled on success; result->diff says whether they match.
 * @param error set on a read failure (MIGRAM_ERROR_IO), a short stream or
 *        a malformed one (MIGRAM_ERROR_PROTOCOL: bad magic, version or page
 *        size, a block sent twice), with the byte offset and the field.
 * @return true when the comparison ran to an answer, equal or not.
 *
 * Context: RCU-registered thread; holds the RCU read lock while it reads a
 * block's hashes (block removal waits for it).  May block on the channel.
 */
bool migram_verify_compare(MigramRamList *list, MigramChannel *ch,
			   MigramVerifySkipFn skip, void *opaque,
			   MigramVerifyResult *result, GError **error);

/**
 * A one-line description of @p result, such as "block 'ram1' page 7
 * (offset 0x7000) differs (3 pages differ)" or "2 blocks, 1024 pages equal".
 *
 * @param result a result migram_verify_compare() filled.
 * @return a newly allocated string; g_free() it.
 *
 * Context: Any thread.
 */
char *migram_verify_result_describe(const MigramVerifyResult *result);

G_END_DECLS

#endif /* MIGRAM_VERIFY_H */
