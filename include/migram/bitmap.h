/* SPDX-License-Identifier: MIT */
/**
 * @file bitmap.h
 * Word bitmaps: the toolkit every dirty-tracking path in migram is built on.
 *
 * A bitmap is an array of `unsigned long`; bit `n` is bit `n % W` of word
 * `n / W`, where W is MIGRAM_BITS_PER_LONG.  Ranges are `(map, start, nr)`,
 * destinations come first, and no operation allocates except
 * migram_bitmap_new().
 *
 * Operations (pseudo-C; `[s, s+n)` is a half-open bit range):
 *
 *     migram_bitmap_set_bit(map, b)          map[b] = 1
 *     migram_bitmap_clear_bit(map, b)        map[b] = 0
 *     migram_bitmap_test_bit(map, b)         return map[b]
 *     migram_bitmap_set(map, s, n)           map[s, s+n) = 1
 *     migram_bitmap_clear(map, s, n)         map[s, s+n) = 0
 *     migram_bitmap_find_next_set(map, N, s) first set b in [s, N), else N
 *     migram_bitmap_find_next_zero(map, N, s) first clear b in [s, N), else N
 *     migram_bitmap_count(map, s, n)         number of set bits in [s, s+n)
 *     migram_bitmap_range_empty(map, s, n)   no bit set in [s, s+n)
 *     migram_bitmap_range_full(map, s, n)    every bit set in [s, s+n)
 *     migram_bitmap_copy(dst, src, N)        dst[0, N) = src[0, N)
 *     migram_bitmap_to_le64(out, map, N)     out = map as little-endian u64s
 *     migram_bitmap_from_le64(map, in, N)    map = in, tail bits cleared
 *     migram_bitmap_fold(c, f, N, k)         c[i] |= OR f[i<<k, (i+1)<<k)
 *     migram_bitmap_expand(f, N, c, k)       f[j] |= c[j>>k]   for j < N
 *
 * Atomic variants (one read-modify-write per word; safe against other
 * atomic writers of the same words, see each function's Ordering line):
 *
 *     migram_bitmap_test_bit_atomic (an acquire load),
 *     migram_bitmap_set_bit_atomic, migram_bitmap_clear_bit_atomic,
 *     migram_bitmap_test_and_set_bit_atomic,
 *     migram_bitmap_test_and_clear_bit_atomic,
 *     migram_bitmap_set_atomic, migram_bitmap_clear_atomic,
 *     migram_bitmap_test_and_clear_atomic,
 *     migram_bitmap_exchange_collect(dst, src, s, n)
 *         take src[s, s+n) atomically (zeroing it), dst |= taken,
 *         return the number of bits newly set in dst (dst written plainly)
 *     migram_bitmap_exchange_collect_atomic(dst, src, s, n)
 *         the same with an atomic OR into dst
 *     migram_bitmap_or_collect(dst, src, s, n)
 *         dst |= src[s, s+n) without taking; bits newly set in dst
 *     migram_bitmap_andnot_atomic(map, mask, s, n)
 *         map[s, s+n) &= ~mask, atomically per word
 *
 * Tail bits.  Bits past the bitmap's size in its last word are "don't care"
 * on input: every operation that returns a bit, a position or a count masks
 * them.  Operations never set a tail bit that was clear, except
 * migram_bitmap_copy(), which copies whole words.
 *
 * Sizes and positions are `size_t` bit numbers.  A position argument past the
 * bitmap is a caller bug unless the function says otherwise.
 */
#ifndef MIGRAM_BITMAP_H
#define MIGRAM_BITMAP_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

/** Number of bits in one bitmap word. */
#define MIGRAM_BITS_PER_LONG (sizeof(unsigned long) * CHAR_BIT)

/** Number of words needed to hold @p nbits bits. */
#define MIGRAM_BITS_TO_LONGS(nbits)                                            \
	(((nbits) + MIGRAM_BITS_PER_LONG - 1) / MIGRAM_BITS_PER_LONG)

/**
 * Allocate a zeroed bitmap of @p nbits bits.
 *
 * Uses g_try_malloc0(), so a guest-sized bitmap that does not fit fails
 * cleanly instead of aborting.
 *
 * @param nbits number of bits; 0 gives a valid one-word bitmap.
 * @return the bitmap, or NULL if memory ran out; caller frees with
 *         migram_bitmap_free().
 *
 * Context: Any thread.
 */
unsigned long *migram_bitmap_new(size_t nbits);

/**
 * Free a bitmap from migram_bitmap_new().
 *
 * @param map the bitmap, or NULL.
 *
 * Context: Any thread.
 */
void migram_bitmap_free(unsigned long *map);

/**
 * Set bit @p bit.
 *
 * @param map the bitmap.
 * @param bit the bit number.
 *
 * Context: Any thread; the caller excludes concurrent writers of the word.
 */
void migram_bitmap_set_bit(unsigned long *map, size_t bit);

/**
 * Clear bit @p bit.
 *
 * @param map the bitmap.
 * @param bit the bit number.
 *
 * Context: Any thread; the caller excludes concurrent writers of the word.
 */
void migram_bitmap_clear_bit(unsigned long *map, size_t bit);

/**
 * Test bit @p bit.
 *
 * @param map the bitmap.
 * @param bit the bit number.
 * @return whether the bit is set.
 *
 * Context: Any thread; a relaxed atomic load, so it may race with atomic
 * writers and sees either the old or the new value.
 */
bool migram_bitmap_test_bit(const unsigned long *map, size_t bit);

/**
 * Clear bit @p bit and report whether it was set (not atomic).
 *
 * @param map the bitmap.
 * @param bit the bit number.
 * @return whether the bit was set.
 *
 * Context: Any thread; the caller excludes concurrent writers of the word.
 */
bool migram_bitmap_test_and_clear_bit(unsigned long *map, size_t bit);

/**
 * Set bits [@p start, @p start + @p nr).
 *
 * @param map the bitmap.
 * @param start first bit.
 * @param nr number of bits; 0 does nothing.
 *
 * Context: Any thread; the caller excludes concurrent writers of the words.
 */
void migram_bitmap_set(unsigned long *map, size_t start, size_t nr);

/**
 * Clear bits [@p start, @p start + @p nr).
 *
 * @param map the bitmap.
 * @param start first bit.
 * @param nr number of bits; 0 does nothing.
 *
 * Context: Any thread; the caller excludes concurrent writers of the words.
 */
void migram_bitmap_clear(unsigned long *map, size_t start, size_t nr);

/**
 * Find the first set bit at or after @p start.
 *
 * Scans a word at a time and skips runs of zero words four at a time.
 *
 * @param map the bitmap.
 * @param nbits size of the bitmap in bits.
 * @param start where to start; a value >= @p nbits returns @p nbits.
 * @return the bit number, or @p nbits when there is none.
 *
 * Context: Any thread.  Plain loads: against concurrent atomic writers the
 * result is a bit that was set at some moment during the call, or @p nbits.
 */
size_t migram_bitmap_find_next_set(const unsigned long *map, size_t nbits,
				   size_t start);

/**
 * Find the first clear bit at or after @p start.
 *
 * @param map the bitmap.
 * @param nbits size of the bitmap in bits.
 * @param start where to start; a value >= @p nbits returns @p nbits.
 * @return the bit number, or @p nbits when every bit is set.
 *
 * Context: Any thread (same caveat as migram_bitmap_find_next_set()).
 */
size_t migram_bitmap_find_next_zero(const unsigned long *map, size_t nbits,
				    size_t start);

/**
 * Count the set bits in [@p start, @p start + @p nr).
 *
 * @param map the bitmap.
 * @param start first bit.
 * @param nr number of bits.
 * @return the number of set bits.
 *
 * Context: Any thread.
 */
size_t migram_bitmap_count(const unsigned long *map, size_t start, size_t nr);

/**
 * Whether no bit in [@p start, @p start + @p nr) is set.
 *
 * @param map the bitmap.
 * @param start first bit.
 * @param nr number of bits; an empty range is empty.
 * @return true when every bit in the range is clear.
 *
 * Context: Any thread.
 */
bool migram_bitmap_range_empty(const unsigned long *map, size_t start,
			       size_t nr);

/**
 * Whether every bit in [@p start, @p start + @p nr) is set.
 *
 * @param map the bitmap.
 * @param start first bit.
 * @param nr number of bits; an empty range is full.
 * @return true when every bit in the range is set.
 *
 * Context: Any thread.
 */
bool migram_bitmap_range_full(const unsigned long *map, size_t start,
			      size_t nr);

/**
 * Copy the first @p nbits bits of @p src to @p dst (whole words).
 *
 * @param dst destination, at least MIGRAM_BITS_TO_LONGS(@p nbits) words.
 * @param src source, same size; must not overlap @p dst.
 * @param nbits number of bits.
 *
 * Context: Any thread; the caller excludes writers of @p dst.
 */
void migram_bitmap_copy(unsigned long *dst, const unsigned long *src,
			size_t nbits);

/**
 * Number of 64-bit words migram_bitmap_to_le64() writes for @p nbits bits.
 *
 * @param nbits number of bits.
 * @return ceil(@p nbits / 64).
 *
 * Context: Any thread.
 */
size_t migram_bitmap_le64_words(size_t nbits);

/**
 * Serialize a bitmap as little-endian 64-bit words.
 *
 * Bit n lands in bit n % 64 of word n / 64 whatever the host's word size or
 * byte order; bits past @p nbits in the last word are written as zero.  This
 * is the layout of QEMU's postcopy-recovery received bitmap.
 *
 * @param out destination, migram_bitmap_le64_words(@p nbits) words.
 * @param map the bitmap.
 * @param nbits number of bits.
 *
 * Context: Any thread; plain loads of @p map.
 */
void migram_bitmap_to_le64(uint64_t *out, const unsigned long *map,
			   size_t nbits);

/**
 * Load a bitmap from little-endian 64-bit words.
 *
 * Bits of @p in past @p nbits are ignored; tail bits of @p map past @p nbits
 * are cleared.
 *
 * @param map destination, MIGRAM_BITS_TO_LONGS(@p nbits) words.
 * @param in source, migram_bitmap_le64_words(@p nbits) words.
 * @param nbits number of bits.
 *
 * Context: Any thread; the caller excludes writers of @p map.
 */
void migram_bitmap_from_le64(unsigned long *map, const uint64_t *in,
			     size_t nbits);

/**
 * Fold a fine bitmap into a coarse one: coarse bit i is set when any fine
 * bit in [i << @p shift, (i + 1) << @p shift) is set.  Coarse bits are only
 * ever set (an OR), never cleared: clear @p coarse first for a plain fold.
 *
 * @param coarse destination, ceil(@p fine_nbits / 2^shift) bits.
 * @param fine source bitmap.
 * @param fine_nbits size of @p fine in bits.
 * @param shift log2 of fine bits per coarse bit, below the word width.
 *
 * Context: Any thread; the caller excludes writers of @p coarse.
 */
void migram_bitmap_fold(unsigned long *coarse, const unsigned long *fine,
			size_t fine_nbits, unsigned int shift);

/**
 * Expand a coarse bitmap into a fine one: fine bit j is set when coarse bit
 * j >> @p shift is set (an OR; fine bits are never cleared).
 *
 * @param fine destination bitmap.
 * @param fine_nbits size of @p fine in bits; bits at or past it stay clear.
 * @param coarse source, ceil(@p fine_nbits / 2^shift) bits.
 * @param shift log2 of fine bits per coarse bit, below the word width.
 *
 * Context: Any thread; the caller excludes writers of @p fine.
 */
void migram_bitmap_expand(unsigned long *fine, size_t fine_nbits,
			  const unsigned long *coarse, unsigned int shift);

/**
 * Read bit @p bit with an acquire load, against concurrent atomic writers.
 *
 * @param map the bitmap.
 * @param bit the bit number.
 * @return whether the bit is set.
 *
 * Context: Any thread.
 * Ordering: acquire; pairs with the release of migram_bitmap_set_bit_atomic()
 * and migram_bitmap_set_atomic(), so what was written before the bit was
 * set is visible once it reads set.
 */
bool migram_bitmap_test_bit_atomic(const unsigned long *map, size_t bit);

/**
 * Atomically set bit @p bit.
 *
 * @param map the bitmap.
 * @param bit the bit number.
 *
 * Context: Any thread.
 * Ordering: release; pairs with the acquire of
 * migram_bitmap_exchange_collect() and the test-and-clear variants.
 */
void migram_bitmap_set_bit_atomic(unsigned long *map, size_t bit);

/**
 * Atomically clear bit @p bit.
 *
 * @param map the bitmap.
 * @param bit the bit number.
 *
 * Context: Any thread.
 * Ordering: release.
 */
void migram_bitmap_clear_bit_atomic(unsigned long *map, size_t bit);

/**
 * Atomically set bit @p bit and report whether it was already set.
 *
 * @param map the bitmap.
 * @param bit the bit number.
 * @return true when the bit was set before the call.
 *
 * Context: Any thread.
 * Ordering: acquire and release (one atomic fetch-or).
 */
bool migram_bitmap_test_and_set_bit_atomic(unsigned long *map, size_t bit);

/**
 * Atomically clear bit @p bit and report whether it was set.
 *
 * @param map the bitmap.
 * @param bit the bit number.
 * @return true when the bit was set before the call.
 *
 * Context: Any thread.
 * Ordering: acquire and release (one atomic fetch-and).
 */
bool migram_bitmap_test_and_clear_bit_atomic(unsigned long *map, size_t bit);

/**
 * Atomically set bits [@p start, @p start + @p nr), one atomic OR per word.
 *
 * @param map the bitmap.
 * @param start first bit.
 * @param nr number of bits.
 * @return the number of bits this call turned on (each counted by exactly
 *         one of several concurrent callers).
 *
 * Context: Any thread.
 * Ordering: release on every word.
 */
size_t migram_bitmap_set_atomic(unsigned long *map, size_t start, size_t nr);

/**
 * Atomically clear bits [@p start, @p start + @p nr), one atomic AND per
 * word.
 *
 * @param map the bitmap.
 * @param start first bit.
 * @param nr number of bits.
 *
 * Context: Any thread.
 * Ordering: release on every word.
 */
void migram_bitmap_clear_atomic(unsigned long *map, size_t start, size_t nr);

/**
 * Atomically clear bits [@p start, @p start + @p nr) and report whether any
 * of them was set.
 *
 * @param map the bitmap.
 * @param start first bit.
 * @param nr number of bits.
 * @return true when at least one bit of the range was set.
 *
 * Context: Any thread.
 * Ordering: acquire and release on every word it changes.
 */
bool migram_bitmap_test_and_clear_atomic(unsigned long *map, size_t start,
					 size_t nr);

/**
 * Exchange-and-collect: the sync primitive.
 *
 * For each word of [@p start, @p start + @p nr) in @p src: a plain (relaxed)
 * load first, and a zero word is skipped with no atomic operation; otherwise
 * the range's bits are taken atomically (an exchange with zero for a whole
 * word, an atomic AND for a partial one), OR-ed into the same bit positions
 * of @p dst, and the bits that were clear in @p dst are counted.
 *
 * A bit set in @p src concurrently with the call is either collected now or
 * left in @p src for the next call: never lost, never collected twice.
 *
 * @param dst destination bitmap, written with plain stores.
 * @param src source bitmap, concurrently marked by atomic writers.
 * @param start first bit of the range (same numbering in both bitmaps).
 * @param nr number of bits.
 * @return the number of bits that went from clear to set in @p dst.
 *
 * Context: Any thread; @p dst is owned by the caller (no other writer),
 * @p src may be written concurrently with atomic sets.
 * Ordering: acquire on each word taken, pairing with the release of
 * migram_bitmap_set_atomic() and friends: data written before a mark is
 * visible once the mark is collected.
 */
size_t migram_bitmap_exchange_collect(unsigned long *dst, unsigned long *src,
				      size_t start, size_t nr);

/**
 * Exchange-and-collect into a destination that others write concurrently.
 *
 * As migram_bitmap_exchange_collect(), but each word goes into @p dst with an
 * atomic OR, and the count is of bits that the OR itself turned on.
 *
 * @param dst destination bitmap, possibly marked concurrently.
 * @param src source bitmap, possibly marked concurrently.
 * @param start first bit of the range.
 * @param nr number of bits.
 * @return the number of bits that went from clear to set in @p dst.
 *
 * Context: Any thread.
 * Ordering: acquire on each word taken from @p src, release on each OR into
 * @p dst.
 */
size_t migram_bitmap_exchange_collect_atomic(unsigned long *dst,
					     unsigned long *src, size_t start,
					     size_t nr);

/**
 * Collect without taking: OR the set bits of @p src in [@p start,
 * @p start + @p nr) into @p dst, leaving @p src unchanged, and count the
 * bits newly set in @p dst.  The sync of a manual-protect dirty log: what
 * was written is read, tracking is not re-armed.
 *
 * @param dst destination bitmap, written with plain stores.
 * @param src source bitmap (relaxed atomic loads; may be marked
 *        concurrently).
 * @param start first bit.
 * @param nr number of bits.
 * @return the number of bits that went from clear to set in @p dst.
 *
 * Context: Any thread; @p dst is owned by the caller.
 * Ordering: acquire on each non-zero word read from @p src.
 */
size_t migram_bitmap_or_collect(unsigned long *dst, const unsigned long *src,
				size_t start, size_t nr);

/**
 * Atomically clear, in [@p start, @p start + @p nr) of @p map, exactly the
 * bits set in @p mask (one atomic AND per word that has any): the log-clear
 * of a manual-protect dirty log, which re-arms only what a sync collected.
 *
 * @param map the bitmap, possibly marked concurrently.
 * @param mask which bits to clear (same numbering).
 * @param start first bit.
 * @param nr number of bits.
 *
 * Context: Any thread.
 * Ordering: acquire and release on every word changed: page contents read
 * after this call include every write whose mark it cleared.
 */
void migram_bitmap_andnot_atomic(unsigned long *map, const unsigned long *mask,
				 size_t start, size_t nr);

G_END_DECLS

#endif /* MIGRAM_BITMAP_H */
