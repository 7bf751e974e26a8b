/* SPDX-License-Identifier: MIT */
/*
 * ramblock/ private structures.  White-box tests include this header to
 * check canaries; nothing outside ramblock/ and its tests may.
 */
#ifndef MIGRAM_RAMBLOCK_INTERNAL_H
#define MIGRAM_RAMBLOCK_INTERNAL_H

#include <pthread.h>
#include <glib.h>

#include <urcu/list.h>

#include "migram-rcu.h"

#include "migram/ramblock.h"

#define RAM_BLOCK_MAGIC 0x72616d626c6b2121ULL /* "ramblk!!" */
#define RAM_BLOCK_DEAD 0xdeadb10cdeadb10cULL

/* Offsets are aligned to this many target pages (one bitmap word). */
#define RAM_OFFSET_ALIGN_PAGES 64

struct MigramRamBlock {
	uint64_t magic; /* RAM_BLOCK_MAGIC while alive; DEAD once freed */

	/* RCU list link: published under list->mutex, read under RCU. */
	struct cds_list_head node;
	struct rcu_head rcu;
	MigramRamList *list;

	/* Identity: fixed from creation to free. */
	char idstr[MIGRAM_RAM_IDSTR_MAX + 1];
	MigramRamBackend backend;
	uint32_t flags;
	uint8_t *host;   /* max_length bytes mapped */
	uint64_t offset; /* start in the global RAM address space */
	uint64_t max_length;
	uint64_t page_size;
	int fd; /* -1 for anonymous memory */
	MigramRamResizedFunc resized;
	void *resized_opaque;

	/* Written under list->mutex with release stores, read with acquire. */
	uint64_t used_length;
	/* Migration thread only (destination). */
	uint64_t postcopy_length;

	/*
	 * Migration bitmaps: allocated by bitmaps_init and freed by
	 * bitmaps_free (both under list->mutex), or by the block's reclaim.
	 * Pointers are published with release stores; the bits themselves
	 * follow each accessor's contract.
	 */
	unsigned long *bmap;
	unsigned long *receivedmap;
	unsigned long *clear_bmap;
	unsigned int clear_bmap_shift;

	uint64_t canary; /* RAM_BLOCK_MAGIC ^ offset, for stress tests */
};

typedef struct {
	guint id;
	MigramRamListenerFunc fn;
	void *opaque;
} RamListener;

struct MigramRamList {
	/* Serializes updaters; guards everything below but blocks/mru. */
	pthread_mutex_t mutex;
	GArray *listeners; /* of RamListener */
	guint next_listener_id;
	bool bitmaps_active;
	unsigned int clear_bmap_shift;
	guint held;         /* migram_ram_list_hold() count */
	char held_why[160]; /* the first holder's reason */

	/* RCU: written under mutex, read lock-free. */
	struct cds_list_head blocks;
	/* RCU: any reader may write it (a cache); see ram-list.c. */
	MigramRamBlock *mru;
	/* Atomic: bumped (release) after each change. */
	uint64_t version;
	guint count; /* atomic */
};

/*
 * The RCU list, with C11-style atomics instead of liburcu's inline helpers
 * (whose volatile stores ThreadSanitizer cannot pair with the readers'
 * loads).  Readers follow only `next`, with acquire loads; updaters, under
 * list->mutex, publish with release stores and keep `prev` for themselves.
 * A removed node keeps its `next`, so a reader standing on it goes on.
 */
static inline struct cds_list_head *ram_list_next_rcu(struct cds_list_head *n)
{
	return __atomic_load_n(&n->next, __ATOMIC_ACQUIRE);
}

/* Insert node before pos.  Mutex held. */
static inline void ram_list_insert_before(struct cds_list_head *node,
					  struct cds_list_head *pos)
{
	node->next = pos;
	node->prev = pos->prev;
	__atomic_store_n(&pos->prev->next, node, __ATOMIC_RELEASE);
	pos->prev = node;
}

/* Unlink node; node->next stays valid for readers.  Mutex held. */
static inline void ram_list_unlink(struct cds_list_head *node)
{
	__atomic_store_n(&node->prev->next, node->next, __ATOMIC_RELEASE);
	node->next->prev = node->prev;
}

/*
 * A reader is done with what it read so far (TSan builds only): the reader
 * APIs call it before returning, so an embedder's own read_unlock, which
 * migram cannot annotate, still orders the reader before a later free.
 */
static inline void ram_reader_done(void)
{
	migram_tsan_release(&migram_rcu_grace_key);
}

/* ram-backend.c */
bool migram_ram_backend_map(MigramRamBlock *block,
			    const MigramRamBlockConfig *config, GError **error);
void migram_ram_backend_unmap(MigramRamBlock *block);

/* ram-bitmaps.c */
void migram_ram_block_free_bitmaps(MigramRamBlock *block);

#endif /* MIGRAM_RAMBLOCK_INTERNAL_H */
