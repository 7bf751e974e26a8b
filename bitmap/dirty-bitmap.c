/* SPDX-License-Identifier: MIT */
/*
 * MigramDirtyBitmap: a lock-free dirty bitmap over one range of guest RAM.
 *
 * Markers (vCPU exit handlers, device models) set bits with one atomic OR;
 * drainers take them with one atomic exchange per non-zero word (see
 * bitmap-atomic.c for the ordering argument).  The bitmap's words are sized
 * once at creation and never move, so no lock or RCU protects them: the
 * owner must simply not free the bitmap while others use it.
 *
 * Geometry is validated once in migram_dirty_bitmap_new(); after that every
 * address conversion is a subtraction and a shift.
 */
#include "migram-common.h"
#include "migram/migram.h"
#include "migram/dirty-bitmap.h"
#include "bitmap-internal.h"

struct MigramDirtyBitmap {
	uint64_t ram_start;
	uint64_t ram_size;
	uint64_t page_size;
	uint64_t page_count;
	unsigned int page_shift;
	unsigned long *words;  /* page_count bits; atomic access only */
	uint64_t out_of_range; /* atomic: marks outside the range */
};

unsigned long *migram_dirty_bitmap_words(struct MigramDirtyBitmap *db)
{
	return db->words;
}

MIGRAM_EXPORT MigramDirtyBitmap *migram_dirty_bitmap_new(uint64_t ram_start,
							 uint64_t ram_size,
							 uint64_t page_size,
							 GError **error)
{
	MigramDirtyBitmap *db;
	uint64_t pages;

	if (page_size == 0 || (page_size & (page_size - 1)) != 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "dirty bitmap: page size %" G_GUINT64_FORMAT
			    " is not a power of two",
			    page_size);
		return NULL;
	}
	if (ram_size == 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "dirty bitmap: empty range at %#" G_GINT64_MODIFIER
			    "x",
			    ram_start);
		return NULL;
	}
	if (ram_start > UINT64_MAX - (ram_size - 1)) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "dirty bitmap: range %#" G_GINT64_MODIFIER
			    "x + %#" G_GINT64_MODIFIER "x overflows 64 bits",
			    ram_start, ram_size);
		return NULL;
	}
	pages = ram_size / page_size + (ram_size % page_size != 0);
	if (pages > SIZE_MAX - MIGRAM_BITS_PER_LONG) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "dirty bitmap: %" G_GUINT64_FORMAT
			    " pages do not fit this host's address space",
			    pages);
		return NULL;
	}

	db = g_new0(MigramDirtyBitmap, 1);
	db->words = migram_bitmap_new((size_t)pages);
	if (!db->words) {
		g_free(db);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "dirty bitmap: cannot allocate %" G_GUINT64_FORMAT
			    " bits",
			    pages);
		return NULL;
	}
	db->ram_start = ram_start;
	db->ram_size = ram_size;
	db->page_size = page_size;
	db->page_count = pages;
	db->page_shift = (unsigned int)__builtin_ctzll(page_size);
	return db;
}

MIGRAM_EXPORT void migram_dirty_bitmap_free(MigramDirtyBitmap *db)
{
	if (!db)
		return;
	migram_bitmap_free(db->words);
	g_free(db);
}

MIGRAM_EXPORT uint64_t
migram_dirty_bitmap_page_count(const MigramDirtyBitmap *db)
{
	return db->page_count;
}

MIGRAM_EXPORT unsigned int
migram_dirty_bitmap_page_shift(const MigramDirtyBitmap *db)
{
	return db->page_shift;
}

MIGRAM_EXPORT uint64_t
migram_dirty_bitmap_page_size(const MigramDirtyBitmap *db)
{
	return db->page_size;
}

MIGRAM_EXPORT uint64_t
migram_dirty_bitmap_ram_start(const MigramDirtyBitmap *db)
{
	return db->ram_start;
}

MIGRAM_EXPORT uint64_t migram_dirty_bitmap_ram_size(const MigramDirtyBitmap *db)
{
	return db->ram_size;
}

MIGRAM_EXPORT bool
migram_dirty_bitmap_page_index_of(const MigramDirtyBitmap *db, uint64_t addr,
				  uint64_t *pfn)
{
	uint64_t off = addr - db->ram_start;

	/* Unsigned wrap turns addr < ram_start into a huge offset. */
	if (addr < db->ram_start || off >= db->ram_size)
		return false;
	if (pfn)
		*pfn = off >> db->page_shift;
	return true;
}

/*
 * The rare path of a mark outside the bitmap: one relaxed atomic add, and
 * in debug builds (the project's: no G_DISABLE_ASSERT) a critical.
 */
static __attribute__((noinline)) void
lost_mark(MigramDirtyBitmap *db, const char *what, uint64_t where)
{
	__atomic_add_fetch(&db->out_of_range, 1, __ATOMIC_RELAXED);
#ifndef G_DISABLE_ASSERT
	g_critical("dirty bitmap [%#" G_GINT64_MODIFIER
		   "x, +%#" G_GINT64_MODIFIER
		   "x): mark of %s %#" G_GINT64_MODIFIER
		   "x is outside it; the write is lost",
		   db->ram_start, db->ram_size, what, where);
#else
	(void)what;
	(void)where;
#endif
}

MIGRAM_EXPORT MigramMarkResult
migram_dirty_bitmap_mark_by_index(MigramDirtyBitmap *db, uint64_t pfn)
{
	if (G_UNLIKELY(pfn >= db->page_count)) {
		lost_mark(db, "page", pfn);
		return MIGRAM_MARK_OUT_OF_RANGE;
	}
	return migram_bitmap_test_and_set_bit_atomic(db->words, (size_t)pfn)
		       ? MIGRAM_MARK_ALREADY_DIRTY
		       : MIGRAM_MARK_NEWLY_DIRTY;
}

MIGRAM_EXPORT MigramMarkResult migram_dirty_bitmap_mark(MigramDirtyBitmap *db,
							uint64_t addr)
{
	uint64_t pfn;

	if (G_UNLIKELY(!migram_dirty_bitmap_page_index_of(db, addr, &pfn))) {
		lost_mark(db, "address", addr);
		return MIGRAM_MARK_OUT_OF_RANGE;
	}
	return migram_dirty_bitmap_mark_by_index(db, pfn);
}

MIGRAM_EXPORT bool migram_dirty_bitmap_set_dirty_by_index(MigramDirtyBitmap *db,
							  uint64_t pfn)
{
	return migram_dirty_bitmap_mark_by_index(db, pfn) ==
	       MIGRAM_MARK_NEWLY_DIRTY;
}

MIGRAM_EXPORT bool migram_dirty_bitmap_set_dirty(MigramDirtyBitmap *db,
						 uint64_t addr)
{
	return migram_dirty_bitmap_mark(db, addr) == MIGRAM_MARK_NEWLY_DIRTY;
}

MIGRAM_EXPORT uint64_t
migram_dirty_bitmap_out_of_range_marks(const MigramDirtyBitmap *db)
{
	return db ? __atomic_load_n(&db->out_of_range, __ATOMIC_RELAXED) : 0;
}

MIGRAM_EXPORT bool
migram_dirty_bitmap_is_dirty_by_index(const MigramDirtyBitmap *db, uint64_t pfn)
{
	if (pfn >= db->page_count)
		return false;
	return migram_bitmap_test_bit(db->words, (size_t)pfn);
}

MIGRAM_EXPORT uint64_t migram_dirty_bitmap_mark_range(MigramDirtyBitmap *db,
						      uint64_t offset,
						      uint64_t len)
{
	uint64_t first, n;

	if (!byte_range_pages(db->ram_size, db->page_shift, offset, len, &first,
			      &n))
		return 0;
	return migram_bitmap_set_atomic(db->words, (size_t)first, (size_t)n);
}

MIGRAM_EXPORT uint64_t migram_dirty_bitmap_drain_into(MigramDirtyBitmap *db,
						      MigramPageFunc fn,
						      void *opaque)
{
	size_t nwords = MIGRAM_BITS_TO_LONGS(db->page_count);
	uint64_t n = 0;

	for (size_t w = 0; w < nwords; w++) {
		unsigned long got;

		if (!__atomic_load_n(&db->words[w], __ATOMIC_RELAXED))
			continue;
		got = __atomic_exchange_n(&db->words[w], 0UL, __ATOMIC_ACQUIRE);
		while (got) {
			unsigned int b = (unsigned int)__builtin_ctzl(got);

			got &= got - 1;
			fn((uint64_t)w * MIGRAM_BITS_PER_LONG + b, opaque);
			n++;
		}
	}
	return n;
}

static void append_pfn(uint64_t pfn, void *opaque)
{
	guint64 v = pfn;

	g_array_append_val((GArray *)opaque, v);
}

MIGRAM_EXPORT GArray *migram_dirty_bitmap_drain(MigramDirtyBitmap *db)
{
	GArray *out = g_array_new(FALSE, FALSE, sizeof(guint64));

	migram_dirty_bitmap_drain_into(db, append_pfn, out);
	return out;
}

MIGRAM_EXPORT uint64_t migram_dirty_bitmap_collect(MigramDirtyBitmap *db,
						   unsigned long *dst,
						   uint64_t first_pfn,
						   uint64_t npages)
{
	if (first_pfn >= db->page_count)
		return 0;
	npages = MIN(npages, db->page_count - first_pfn);
	return migram_bitmap_exchange_collect(dst, db->words, (size_t)first_pfn,
					      (size_t)npages);
}

MIGRAM_EXPORT bool
migram_dirty_bitmap_fold_into_finer(const MigramDirtyBitmap *coarse,
				    MigramDirtyBitmap *fine, GError **error)
{
	unsigned int k;
	uint64_t c;

	if (coarse->ram_start != fine->ram_start ||
	    coarse->ram_size != fine->ram_size) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "fold: ranges differ (%#" G_GINT64_MODIFIER
			    "x+%#" G_GINT64_MODIFIER "x vs %#" G_GINT64_MODIFIER
			    "x+%#" G_GINT64_MODIFIER "x)",
			    coarse->ram_start, coarse->ram_size,
			    fine->ram_start, fine->ram_size);
		return false;
	}
	if (fine->page_size >= coarse->page_size) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "fold: fine page size %" G_GUINT64_FORMAT
			    " is not smaller than coarse %" G_GUINT64_FORMAT,
			    fine->page_size, coarse->page_size);
		return false;
	}
	k = coarse->page_shift - fine->page_shift;
	c = migram_bitmap_find_next_set(coarse->words, coarse->page_count, 0);
	while (c < coarse->page_count) {
		uint64_t first = c << k;
		uint64_t n = MIN((uint64_t)1 << k, fine->page_count - first);

		migram_bitmap_set_atomic(fine->words, (size_t)first, (size_t)n);
		c = migram_bitmap_find_next_set(coarse->words,
						coarse->page_count, c + 1);
	}
	return true;
}

MIGRAM_EXPORT uint64_t migram_dirty_bitmap_peek(const MigramDirtyBitmap *db,
						uint64_t window,
						uint64_t npages,
						unsigned long *dst)
{
	g_return_val_if_fail(window % MIGRAM_BITS_PER_LONG == 0, 0);
	g_return_val_if_fail(window <= db->page_count &&
				     npages <= db->page_count - window,
			     0);
	return migram_bitmap_or_collect(dst,
					db->words +
						window / MIGRAM_BITS_PER_LONG,
					0, (size_t)npages);
}

MIGRAM_EXPORT void migram_dirty_bitmap_clear_masked(MigramDirtyBitmap *db,
						    uint64_t window,
						    const unsigned long *mask,
						    uint64_t first,
						    uint64_t npages)
{
	g_return_if_fail(window % MIGRAM_BITS_PER_LONG == 0);
	g_return_if_fail(window <= db->page_count && first <= db->page_count &&
			 npages <= db->page_count - window - first);
	migram_bitmap_andnot_atomic(db->words + window / MIGRAM_BITS_PER_LONG,
				    mask, (size_t)first, (size_t)npages);
}
