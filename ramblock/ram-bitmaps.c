/* SPDX-License-Identifier: MIT */
/*
 * Migration bitmaps of RAM blocks, and the block accessors.
 *
 * One owner: migram_ram_list_bitmaps_init() allocates bmap, receivedmap
 * and clear_bmap for every migratable block, migram_ram_list_bitmaps_free()
 * frees them, and a block's RCU reclaim frees whatever it still has.  All
 * three are sized for max_length in target pages, so a resize never
 * reallocates them.
 *
 * Setup allocates everything first and publishes the pointers only when
 * every allocation succeeded, so a failure leaves nothing behind and no
 * reader ever saw a half-built set.  Cleanup unpublishes the pointers under
 * the list mutex, waits for a grace period (a reader may have fetched a
 * pointer just before), then frees.
 *
 * Memory cost per block, P = max_length / 4 KiB target pages:
 *     bmap P bits, receivedmap P bits, clear_bmap ceil(P / 2^shift) bits;
 * for 1 TiB of RAM: 32 MiB + 32 MiB + 128 bytes at shift 18.
 */
#include <pthread.h>
#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "ramblock-internal.h"

typedef struct {
	MigramRamBlock *block;
	unsigned long *bmap;
	unsigned long *receivedmap;
	unsigned long *clear_bmap;
} BitmapSet;

static uint64_t target_pages(uint64_t bytes)
{
	return bytes >> MIGRAM_TARGET_PAGE_BITS;
}

static void free_set(BitmapSet *s)
{
	migram_bitmap_free(s->bmap);
	migram_bitmap_free(s->receivedmap);
	migram_bitmap_free(s->clear_bmap);
}

void migram_ram_block_free_bitmaps(MigramRamBlock *b)
{
	BitmapSet s = { b, b->bmap, b->receivedmap, b->clear_bmap };

	b->bmap = b->receivedmap = b->clear_bmap = NULL;
	free_set(&s);
}

MIGRAM_EXPORT bool migram_ram_list_bitmaps_init(MigramRamList *list,
						unsigned int clear_bmap_shift,
						GError **error)
{
	g_autoptr(GArray) sets = g_array_new(FALSE, TRUE, sizeof(BitmapSet));
	MigramRamBlock *b;

	g_return_val_if_fail(list != NULL, false);
	if (clear_bmap_shift > MIGRAM_CLEAR_BMAP_SHIFT_MAX) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "clear_bmap_shift %u is out of range %d..%d",
			    clear_bmap_shift, MIGRAM_CLEAR_BMAP_SHIFT_MIN,
			    MIGRAM_CLEAR_BMAP_SHIFT_MAX);
		return false;
	}
	pthread_mutex_lock(&list->mutex);
	if (list->bitmaps_active) {
		pthread_mutex_unlock(&list->mutex);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "migration bitmaps are already allocated");
		return false;
	}
	cds_list_for_each_entry(b, &list->blocks, node) {
		uint64_t pages = target_pages(b->max_length);
		uint64_t chunks = ((pages - 1) >> clear_bmap_shift) + 1;
		BitmapSet s = { .block = b };

		if (!(b->flags & MIGRAM_RAM_MIGRATABLE))
			continue;
		s.bmap = migram_bitmap_new((size_t)pages);
		s.receivedmap = migram_bitmap_new((size_t)pages);
		s.clear_bmap = migram_bitmap_new((size_t)chunks);
		g_array_append_val(sets, s);
		if (!s.bmap || !s.receivedmap || !s.clear_bmap) {
			for (guint i = 0; i < sets->len; i++)
				free_set(&g_array_index(sets, BitmapSet, i));
			pthread_mutex_unlock(&list->mutex);
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
				    "ram block '%s': cannot allocate migration "
				    "bitmaps for %" G_GUINT64_FORMAT " pages",
				    b->idstr, pages);
			return false;
		}
		/* Every page in use must be sent once. */
		migram_bitmap_set(s.bmap, 0,
				  (size_t)target_pages(b->used_length));
	}
	for (guint i = 0; i < sets->len; i++) {
		BitmapSet *s = &g_array_index(sets, BitmapSet, i);

		s->block->clear_bmap_shift = clear_bmap_shift;
		__atomic_store_n(&s->block->bmap, s->bmap, __ATOMIC_RELEASE);
		__atomic_store_n(&s->block->receivedmap, s->receivedmap,
				 __ATOMIC_RELEASE);
		__atomic_store_n(&s->block->clear_bmap, s->clear_bmap,
				 __ATOMIC_RELEASE);
	}
	list->bitmaps_active = true;
	list->clear_bmap_shift = clear_bmap_shift;
	pthread_mutex_unlock(&list->mutex);
	return true;
}

MIGRAM_EXPORT void migram_ram_list_bitmaps_free(MigramRamList *list)
{
	g_autoptr(GArray) sets = g_array_new(FALSE, TRUE, sizeof(BitmapSet));
	MigramRamBlock *b;

	g_return_if_fail(list != NULL);
	MIGRAM_ASSERT_NOT_RCU_READER();
	pthread_mutex_lock(&list->mutex);
	cds_list_for_each_entry(b, &list->blocks, node) {
		BitmapSet s = {
			.block = b,
			.bmap = __atomic_exchange_n(&b->bmap, NULL,
						    __ATOMIC_ACQ_REL),
			.receivedmap = __atomic_exchange_n(
				&b->receivedmap, NULL, __ATOMIC_ACQ_REL),
			.clear_bmap = __atomic_exchange_n(&b->clear_bmap, NULL,
							  __ATOMIC_ACQ_REL),
		};

		g_array_append_val(sets, s);
	}
	list->bitmaps_active = false;
	pthread_mutex_unlock(&list->mutex);

	migram_rcu_synchronize();
	for (guint i = 0; i < sets->len; i++)
		free_set(&g_array_index(sets, BitmapSet, i));
}

MIGRAM_EXPORT const char *migram_ram_block_idstr(const MigramRamBlock *block)
{
	return block->idstr;
}

MIGRAM_EXPORT void *migram_ram_block_host(const MigramRamBlock *block)
{
	return block->host;
}

MIGRAM_EXPORT uint64_t migram_ram_block_offset(const MigramRamBlock *block)
{
	return block->offset;
}

MIGRAM_EXPORT uint64_t migram_ram_block_used_length(const MigramRamBlock *block)
{
	return __atomic_load_n(&block->used_length, __ATOMIC_ACQUIRE);
}

MIGRAM_EXPORT uint64_t migram_ram_block_max_length(const MigramRamBlock *block)
{
	return block->max_length;
}

MIGRAM_EXPORT uint64_t migram_ram_block_page_size(const MigramRamBlock *block)
{
	return block->page_size;
}

MIGRAM_EXPORT uint32_t migram_ram_block_flags(const MigramRamBlock *block)
{
	return block->flags;
}

MIGRAM_EXPORT int migram_ram_block_fd(const MigramRamBlock *block)
{
	return block->fd;
}

MIGRAM_EXPORT uint64_t
migram_ram_block_postcopy_length(const MigramRamBlock *block)
{
	return __atomic_load_n(&block->postcopy_length, __ATOMIC_RELAXED);
}

MIGRAM_EXPORT void migram_ram_block_set_postcopy_length(MigramRamBlock *block,
							uint64_t length)
{
	g_return_if_fail(length <= block->max_length);
	__atomic_store_n(&block->postcopy_length, length, __ATOMIC_RELAXED);
}

MIGRAM_EXPORT unsigned long *migram_ram_block_bmap(const MigramRamBlock *block)
{
	return __atomic_load_n(&block->bmap, __ATOMIC_ACQUIRE);
}

MIGRAM_EXPORT unsigned long *
migram_ram_block_receivedmap(const MigramRamBlock *block)
{
	return __atomic_load_n(&block->receivedmap, __ATOMIC_ACQUIRE);
}

MIGRAM_EXPORT unsigned long *
migram_ram_block_clear_bmap(const MigramRamBlock *block)
{
	return __atomic_load_n(&block->clear_bmap, __ATOMIC_ACQUIRE);
}

MIGRAM_EXPORT unsigned int
migram_ram_block_clear_bmap_shift(const MigramRamBlock *block)
{
	return block->clear_bmap_shift;
}
