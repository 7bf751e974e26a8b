/* SPDX-License-Identifier: MIT */
/*
 * MigramGuestLayout: guest-physical ranges -> (block, offset), and marks by
 * guest-physical address into the software log.
 *
 * The table is an array of ranges sorted by gpa, immutable once published.
 * Readers (vCPU and device threads) take the RCU read lock, dereference the
 * current table and binary-search it: no lock, no allocation.  Updaters
 * (map, unmap; serialized by `update_lock`) build a new array, publish it
 * with an exchange, wait for a grace period (after which no reader holds
 * the old one) and free the old array.
 *
 * Each range caches the RAM address of its first byte (the block's RAM
 * offset plus the range's offset in the block): a block's RAM offset never
 * changes while it is in the list, and a mapped block stays in its list.
 */
#include <pthread.h>
#include <string.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/guest-layout.h"
#include "migram/migram.h"
#include "migram/soft-log.h"
#include "guest-layout-internal.h"

#define PAGE MIGRAM_TARGET_PAGE_SIZE

typedef struct {
	uint64_t gpa;
	uint64_t size;
	uint64_t ram_addr; /* RAM address of byte gpa */
	uint64_t offset;   /* offset of byte gpa in block */
	MigramRamBlock *block;
} GpaRange;

typedef struct {
	guint n;
	GpaRange r[];
} GpaTable;

struct MigramGuestLayout {
	MigramDirtyBitmap *db;       /* the software log's, or NULL */
	pthread_mutex_t update_lock; /* serializes map and unmap */
	GpaTable *table;             /* RCU; never NULL */
	uint64_t out_of_range;       /* atomic */
};

static GpaTable *table_new(guint n)
{
	GpaTable *t = g_malloc0(sizeof(*t) + sizeof(GpaRange) * n);

	t->n = n;
	return t;
}

MIGRAM_EXPORT MigramGuestLayout *migram_guest_layout_new(MigramSoftLog *log)
{
	MigramGuestLayout *l = g_new0(MigramGuestLayout, 1);

	l->db = log ? migram_soft_log_bitmap(log) : NULL;
	pthread_mutex_init(&l->update_lock, NULL);
	l->table = table_new(0);
	return l;
}

MIGRAM_EXPORT void migram_guest_layout_free(MigramGuestLayout *l)
{
	if (!l)
		return;
	MIGRAM_ASSERT_NOT_RCU_READER();
	migram_rcu_synchronize();
	g_free(l->table);
	pthread_mutex_destroy(&l->update_lock);
	g_free(l);
}

/* Index of the last range with gpa <= @p gpa, or -1 (binary search). */
static gssize last_at_or_below(const GpaTable *t, uint64_t gpa)
{
	gssize lo = 0, hi = (gssize)t->n - 1, found = -1;

	while (lo <= hi) {
		gssize mid = lo + (hi - lo) / 2;

		if (t->r[mid].gpa <= gpa) {
			found = mid;
			lo = mid + 1;
		} else {
			hi = mid - 1;
		}
	}
	return found;
}

/* Publish @p next, wait for readers of the old table, free it. */
static void table_replace(MigramGuestLayout *l, GpaTable *next)
{
	GpaTable *old = l->table; /* only updaters write it, under the lock */

	/* Publish (a release store: readers see a fully built table). */
	__atomic_store_n(&l->table, next, __ATOMIC_RELEASE);

	pthread_mutex_unlock(&l->update_lock);
	migram_rcu_synchronize();
	g_free(old);
}

static bool check_map(const MigramGuestLayout *l, uint64_t gpa, uint64_t size,
		      MigramRamBlock *block, uint64_t offset, GError **error)
{
	if (!l || !block) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "guest layout: NULL %s", l ? "block" : "layout");
		return false;
	}
	if (!size || gpa % PAGE || size % PAGE || offset % PAGE ||
	    gpa > UINT64_MAX - (size - 1) ||
	    offset > migram_ram_block_max_length(block) ||
	    size > migram_ram_block_max_length(block) - offset) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "guest layout: gpa %#" G_GINT64_MODIFIER
			    "x + %#" G_GINT64_MODIFIER
			    "x at offset %#" G_GINT64_MODIFIER
			    "x of ramblock '%s' is empty, not 4 KiB aligned, "
			    "overflows or passes the block",
			    gpa, size, offset, migram_ram_block_idstr(block));
		return false;
	}
	return true;
}

MIGRAM_EXPORT bool migram_guest_layout_map(MigramGuestLayout *l, uint64_t gpa,
					   uint64_t size, MigramRamBlock *block,
					   uint64_t offset, GError **error)
{
	GpaTable *cur, *next;
	gssize below;
	guint at;

	if (!check_map(l, gpa, size, block, offset, error))
		return false;
	MIGRAM_ASSERT_NOT_RCU_READER();
	pthread_mutex_lock(&l->update_lock);
	cur = l->table; /* only updaters write it, under the lock */
	below = last_at_or_below(cur, gpa);
	at = (guint)(below + 1);
	if ((below >= 0 &&
	     cur->r[below].gpa + (cur->r[below].size - 1) >= gpa) ||
	    (at < cur->n && cur->r[at].gpa <= gpa + (size - 1))) {
		pthread_mutex_unlock(&l->update_lock);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_EXISTS,
			    "guest layout: gpa %#" G_GINT64_MODIFIER
			    "x + %#" G_GINT64_MODIFIER
			    "x overlaps a mapped range",
			    gpa, size);
		return false;
	}
	next = table_new(cur->n + 1);
	memcpy(next->r, cur->r, sizeof(GpaRange) * at);
	next->r[at] = (GpaRange){ gpa, size,
				  migram_ram_block_offset(block) + offset,
				  offset, block };
	memcpy(next->r + at + 1, cur->r + at, sizeof(GpaRange) * (cur->n - at));
	table_replace(l, next);
	return true;
}

MIGRAM_EXPORT bool migram_guest_layout_unmap(MigramGuestLayout *l, uint64_t gpa,
					     GError **error)
{
	GpaTable *cur, *next;
	gssize i;

	if (!l) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "guest layout: NULL layout");
		return false;
	}
	MIGRAM_ASSERT_NOT_RCU_READER();
	pthread_mutex_lock(&l->update_lock);
	cur = l->table;
	i = last_at_or_below(cur, gpa);
	if (i < 0 || cur->r[i].gpa != gpa) {
		pthread_mutex_unlock(&l->update_lock);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND,
			    "guest layout: no range starts at gpa "
			    "%#" G_GINT64_MODIFIER "x",
			    gpa);
		return false;
	}
	next = table_new(cur->n - 1);
	memcpy(next->r, cur->r, sizeof(GpaRange) * (gsize)i);
	memcpy(next->r + i, cur->r + i + 1,
	       sizeof(GpaRange) * (cur->n - (guint)i - 1));
	table_replace(l, next);
	return true;
}

MIGRAM_EXPORT bool migram_guest_layout_lookup(MigramGuestLayout *l,
					      uint64_t gpa,
					      MigramRamBlock **block,
					      uint64_t *offset)
{
	const GpaTable *t;
	gssize i;
	bool found = false;

	g_return_val_if_fail(l != NULL, false);
	migram_rcu_read_lock();
	t = migram_rcu_dereference(l->table);
	i = last_at_or_below(t, gpa);
	if (i >= 0 && gpa - t->r[i].gpa < t->r[i].size) {
		if (block)
			*block = t->r[i].block;
		if (offset)
			*offset = t->r[i].offset + (gpa - t->r[i].gpa);
		found = true;
	}
	migram_rcu_read_unlock();
	return found;
}

MIGRAM_EXPORT MigramMarkResult migram_guest_layout_mark(MigramGuestLayout *l,
							uint64_t gpa,
							uint64_t len)
{
	const GpaTable *t;
	uint64_t newly = 0;
	bool outside = false;
	gssize i;

	g_return_val_if_fail(l != NULL, MIGRAM_MARK_OUT_OF_RANGE);
	if (!len)
		return MIGRAM_MARK_ALREADY_DIRTY;
	if (gpa > UINT64_MAX - (len - 1)) { /* clamp at the top of memory */
		outside = true;
		len = UINT64_MAX - gpa + 1;
	}
	migram_rcu_read_lock();
	t = migram_rcu_dereference(l->table);
	i = last_at_or_below(t, gpa);
	if (i < 0 || gpa - t->r[i].gpa >= t->r[i].size)
		i++; /* gpa is in a hole: start at the next range */
	while (len) {
		const GpaRange *r = (guint)i < t->n ? &t->r[i] : NULL;
		uint64_t in, n;

		if (!r || (r->gpa > gpa && r->gpa - gpa >= len)) {
			outside = true; /* the rest is in a hole */
			break;
		}
		if (r->gpa > gpa) { /* a hole before this range */
			uint64_t skip = r->gpa - gpa;

			outside = true;
			gpa += skip;
			len -= skip;
		}
		in = gpa - r->gpa;
		n = MIN(len, r->size - in);
		if (l->db)
			newly += migram_dirty_bitmap_mark_range(
				l->db, r->ram_addr + in, n);
		gpa += n;
		len -= n;
		i++;
	}
	migram_rcu_read_unlock();
	if (outside) {
		__atomic_add_fetch(&l->out_of_range, 1, __ATOMIC_RELAXED);
		return MIGRAM_MARK_OUT_OF_RANGE;
	}
	return newly ? MIGRAM_MARK_NEWLY_DIRTY : MIGRAM_MARK_ALREADY_DIRTY;
}

MIGRAM_EXPORT uint64_t
migram_guest_layout_out_of_range_marks(const MigramGuestLayout *l)
{
	return l ? __atomic_load_n(&l->out_of_range, __ATOMIC_RELAXED) : 0;
}

MIGRAM_EXPORT uint64_t migram_ram_list_ram_space(MigramRamList *list)
{
	uint64_t end = 0;

	migram_rcu_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next(list, NULL); b;
	     b = migram_ram_list_next(list, b))
		end = MAX(end, migram_ram_block_offset(b) +
				       migram_ram_block_max_length(b));
	migram_rcu_read_unlock();
	return end;
}

guint migram_guest_layout_block_ranges(MigramGuestLayout *l,
				       const MigramRamBlock *block,
				       MigramGpaRangeFunc fn, void *opaque)
{
	const GpaTable *t;
	guint n = 0;

	migram_rcu_read_lock();
	t = __atomic_load_n(&l->table, __ATOMIC_ACQUIRE);
	for (guint i = 0; i < t->n; i++) {
		if (t->r[i].block != block)
			continue;
		n++;
		if (fn)
			fn(t->r[i].gpa, t->r[i].size, t->r[i].offset, opaque);
	}
	migram_rcu_read_unlock();
	return n;
}
