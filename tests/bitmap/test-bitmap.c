/* SPDX-License-Identifier: MIT */
/*
 * The word-bitmap toolkit against a naive bool-per-bit model.
 *
 * Every case draws thousands of random geometries (sizes that are and are
 * not multiples of the word size, ranges that start and end inside words,
 * the last partial word), runs the library operation and the model, and
 * compares bit by bit.  Tail bits past nbits are filled with garbage first:
 * results must ignore them and operations must not change them.
 * Reproduce a failure with the seed g_test prints (--seed).
 */
#include <string.h>

#include <migram/bitmap.h>

#include "migram-test-util.h"

#define W MIGRAM_BITS_PER_LONG

typedef struct {
	size_t nbits;
	size_t nwords;
	unsigned long *map;
	unsigned long tail; /* the tail bits as filled in */
	bool *ref;
} Case;

static unsigned int iterations(void)
{
	return migram_test_scale(2000);
}

static size_t pick_nbits(GRand *r)
{
	static const size_t edges[] = { 1,   2,   63,  64,  65,  127,
					128, 129, 191, 192, 193, 1000 };

	if (g_rand_boolean(r))
		return edges[g_rand_int_range(r, 0, G_N_ELEMENTS(edges))];
	return (size_t)g_rand_int_range(r, 1, 700);
}

static unsigned long tail_mask(size_t nbits)
{
	return nbits % W ? ~0UL << (nbits % W) : 0;
}

static unsigned long rand_word(GRand *r)
{
	unsigned long w = 0;

	for (size_t i = 0; i < sizeof(w) / 4; i++)
		w = (w << 16 << 16) | g_rand_int(r);
	return w;
}

/* A random bitmap of density p (0..1), garbage in the tail bits. */
static void case_init(Case *c, GRand *r, size_t nbits, double p)
{
	c->nbits = nbits;
	c->nwords = MIGRAM_BITS_TO_LONGS(nbits);
	c->map = g_new0(unsigned long, c->nwords);
	c->ref = g_new0(bool, nbits);
	for (size_t b = 0; b < nbits; b++) {
		c->ref[b] = g_rand_double(r) < p;
		if (c->ref[b])
			c->map[b / W] |= 1UL << (b % W);
	}
	c->tail = rand_word(r) & tail_mask(nbits);
	c->map[c->nwords - 1] |= c->tail;
}

static void case_clear(Case *c)
{
	g_free(c->map);
	g_free(c->ref);
}

static bool raw_bit(const unsigned long *map, size_t b)
{
	return (map[b / W] >> (b % W)) & 1;
}

/* The map equals the model, and the tail bits are as they were. */
static void case_check(const Case *c, const char *what)
{
	for (size_t b = 0; b < c->nbits; b++) {
		if (raw_bit(c->map, b) != c->ref[b])
			g_error("%s: nbits %zu: bit %zu is %d, model says %d",
				what, c->nbits, b, raw_bit(c->map, b),
				c->ref[b]);
	}
	g_assert_cmphex(c->map[c->nwords - 1] & tail_mask(c->nbits), ==,
			c->tail);
}

/* A random range [*start, *start + *nr) inside [0, nbits), maybe empty. */
static void pick_range(GRand *r, size_t nbits, size_t *start, size_t *nr)
{
	*start = (size_t)g_rand_int_range(r, 0, (gint32)nbits + 1);
	*nr = (size_t)g_rand_int_range(r, 0, (gint32)(nbits - *start) + 1);
}

static void test_single_bits(void)
{
	GRand *r = g_rand_new_with_seed(g_test_rand_int());

	for (unsigned int i = 0; i < iterations(); i++) {
		Case c;
		size_t b;
		bool was;

		case_init(&c, r, pick_nbits(r), 0.5);
		b = (size_t)g_rand_int_range(r, 0, (gint32)c.nbits);
		g_assert_cmpint(migram_bitmap_test_bit(c.map, b), ==, c.ref[b]);
		g_assert_cmpint(migram_bitmap_test_bit_atomic(c.map, b), ==,
				c.ref[b]);
		switch (g_rand_int_range(r, 0, 8)) {
		case 0:
			migram_bitmap_set_bit(c.map, b);
			c.ref[b] = true;
			break;
		case 1:
			migram_bitmap_clear_bit(c.map, b);
			c.ref[b] = false;
			break;
		case 2:
			migram_bitmap_set_bit_atomic(c.map, b);
			c.ref[b] = true;
			break;
		case 3:
			migram_bitmap_clear_bit_atomic(c.map, b);
			c.ref[b] = false;
			break;
		case 4:
			was = migram_bitmap_test_and_clear_bit(c.map, b);
			g_assert_cmpint(was, ==, c.ref[b]);
			c.ref[b] = false;
			break;
		case 5:
			was = migram_bitmap_test_and_clear_bit_atomic(c.map, b);
			g_assert_cmpint(was, ==, c.ref[b]);
			c.ref[b] = false;
			break;
		default:
			was = migram_bitmap_test_and_set_bit_atomic(c.map, b);
			g_assert_cmpint(was, ==, c.ref[b]);
			c.ref[b] = true;
			break;
		}
		case_check(&c, "single bit");
		case_clear(&c);
	}
	g_rand_free(r);
}

/* One body, two implementations (plain and atomic), as QEMU's tests do. */
typedef size_t (*RangeOp)(unsigned long *map, size_t start, size_t nr);

static size_t plain_set(unsigned long *map, size_t start, size_t nr)
{
	migram_bitmap_set(map, start, nr);
	return SIZE_MAX;
}

static size_t plain_clear(unsigned long *map, size_t start, size_t nr)
{
	migram_bitmap_clear(map, start, nr);
	return SIZE_MAX;
}

static size_t atomic_clear(unsigned long *map, size_t start, size_t nr)
{
	migram_bitmap_clear_atomic(map, start, nr);
	return SIZE_MAX;
}

static void range_op_case(gconstpointer data, bool value)
{
	RangeOp op = (RangeOp)data;
	GRand *r = g_rand_new_with_seed(g_test_rand_int());

	for (unsigned int i = 0; i < iterations(); i++) {
		Case c;
		size_t start, nr, flipped = 0, ret;

		case_init(&c, r, pick_nbits(r), g_rand_double(r));
		pick_range(r, c.nbits, &start, &nr);
		for (size_t b = start; b < start + nr; b++) {
			flipped += c.ref[b] != value;
			c.ref[b] = value;
		}
		ret = op(c.map, start, nr);
		if (ret != SIZE_MAX)
			g_assert_cmpuint(ret, ==, flipped);
		case_check(&c, value ? "set range" : "clear range");
		case_clear(&c);
	}
	g_rand_free(r);
}

static void test_set_range(gconstpointer data)
{
	range_op_case(data, true);
}

static void test_clear_range(gconstpointer data)
{
	range_op_case(data, false);
}

static void test_test_and_clear_range(void)
{
	GRand *r = g_rand_new_with_seed(g_test_rand_int());

	for (unsigned int i = 0; i < iterations(); i++) {
		Case c;
		size_t start, nr;
		bool any = false;

		/* Sparse, so that "nothing was set" happens often. */
		case_init(&c, r, pick_nbits(r), g_rand_double(r) * 0.05);
		pick_range(r, c.nbits, &start, &nr);
		for (size_t b = start; b < start + nr; b++) {
			any |= c.ref[b];
			c.ref[b] = false;
		}
		g_assert_cmpint(migram_bitmap_test_and_clear_atomic(c.map,
								    start, nr),
				==, any);
		case_check(&c, "test and clear range");
		case_clear(&c);
	}
	g_rand_free(r);
}

static void test_find(void)
{
	GRand *r = g_rand_new_with_seed(g_test_rand_int());

	for (unsigned int i = 0; i < iterations(); i++) {
		Case c;
		double density[] = { 0.0, 0.002, 0.05, 0.5, 0.95, 0.998, 1.0 };

		case_init(
			&c, r, pick_nbits(r),
			density[g_rand_int_range(r, 0, G_N_ELEMENTS(density))]);
		for (int k = 0; k < 8; k++) {
			size_t start = (size_t)g_rand_int_range(
				r, 0, (gint32)c.nbits + 3);
			size_t want_set = c.nbits, want_zero = c.nbits;

			for (size_t b = start; b < c.nbits; b++) {
				if (c.ref[b] && want_set == c.nbits)
					want_set = b;
				if (!c.ref[b] && want_zero == c.nbits)
					want_zero = b;
			}
			g_assert_cmpuint(migram_bitmap_find_next_set(
						 c.map, c.nbits, start),
					 ==, want_set);
			g_assert_cmpuint(migram_bitmap_find_next_zero(
						 c.map, c.nbits, start),
					 ==, want_zero);
		}
		case_check(&c, "find");
		case_clear(&c);
	}
	g_rand_free(r);
}

static void test_count_empty_full(void)
{
	GRand *r = g_rand_new_with_seed(g_test_rand_int());

	for (unsigned int i = 0; i < iterations(); i++) {
		Case c;
		size_t start, nr, n = 0;
		/* Extreme densities make empty and full ranges common. */
		double p = (double[]){ 0.0, 0.01, 0.5, 0.99,
				       1.0 }[g_rand_int_range(r, 0, 5)];

		case_init(&c, r, pick_nbits(r), p);
		pick_range(r, c.nbits, &start, &nr);
		for (size_t b = start; b < start + nr; b++)
			n += c.ref[b];
		g_assert_cmpuint(migram_bitmap_count(c.map, start, nr), ==, n);
		g_assert_cmpint(migram_bitmap_range_empty(c.map, start, nr), ==,
				n == 0);
		g_assert_cmpint(migram_bitmap_range_full(c.map, start, nr), ==,
				n == nr);
		case_check(&c, "count");
		case_clear(&c);
	}
	g_rand_free(r);
}

static void test_copy(void)
{
	GRand *r = g_rand_new_with_seed(g_test_rand_int());

	for (unsigned int i = 0; i < iterations(); i++) {
		Case c;
		unsigned long *dst;

		case_init(&c, r, pick_nbits(r), 0.5);
		dst = g_new0(unsigned long, c.nwords);
		migram_bitmap_copy(dst, c.map, c.nbits);
		g_free(c.map);
		c.map = dst;
		case_check(&c, "copy");
		case_clear(&c);
	}
	g_rand_free(r);
}

typedef size_t (*CollectOp)(unsigned long *dst, unsigned long *src,
			    size_t start, size_t nr);

static void test_exchange_collect(gconstpointer data)
{
	CollectOp op = (CollectOp)data;
	GRand *r = g_rand_new_with_seed(g_test_rand_int());

	for (unsigned int i = 0; i < iterations(); i++) {
		Case src, dst;
		size_t nbits = pick_nbits(r), start, nr, fresh = 0;

		case_init(&src, r, nbits, g_rand_double(r) * 0.3);
		case_init(&dst, r, nbits, g_rand_double(r) * 0.3);
		pick_range(r, nbits, &start, &nr);
		for (size_t b = start; b < start + nr; b++) {
			if (src.ref[b] && !dst.ref[b]) {
				fresh++;
				dst.ref[b] = true;
			}
			src.ref[b] = false;
		}
		g_assert_cmpuint(op(dst.map, src.map, start, nr), ==, fresh);
		case_check(&src, "collect source");
		case_check(&dst, "collect destination");
		case_clear(&src);
		case_clear(&dst);
	}
	g_rand_free(r);
}

static void test_le64(void)
{
	GRand *r = g_rand_new_with_seed(g_test_rand_int());

	for (unsigned int i = 0; i < iterations(); i++) {
		Case c;
		size_t n64;
		uint64_t *out;
		const guint8 *bytes;
		unsigned long *back;

		case_init(&c, r, pick_nbits(r), 0.5);
		n64 = migram_bitmap_le64_words(c.nbits);
		g_assert_cmpuint(n64, ==, (c.nbits + 63) / 64);
		out = g_new(uint64_t, n64);
		memset(out, 0xa5, n64 * sizeof(*out));
		migram_bitmap_to_le64(out, c.map, c.nbits);

		/* Bit n is bit n % 8 of byte n / 8: the wire meaning. */
		bytes = (const guint8 *)out;
		for (size_t b = 0; b < n64 * 64; b++) {
			bool v = (bytes[b / 8] >> (b % 8)) & 1;

			g_assert_cmpint(v, ==, b < c.nbits ? c.ref[b] : false);
		}

		/* And back, into a map whose tail holds garbage. */
		back = g_new(unsigned long, c.nwords);
		memset(back, 0xff, c.nwords * sizeof(*back));
		migram_bitmap_from_le64(back, out, c.nbits);
		for (size_t b = 0; b < c.nbits; b++)
			g_assert_cmpint(raw_bit(back, b), ==, c.ref[b]);
		g_assert_cmphex(back[c.nwords - 1] & tail_mask(c.nbits), ==, 0);
		g_free(back);
		g_free(out);
		case_check(&c, "le64");
		case_clear(&c);
	}
	g_rand_free(r);
}

static void test_fold_expand(void)
{
	GRand *r = g_rand_new_with_seed(g_test_rand_int());

	for (unsigned int i = 0; i < iterations(); i++) {
		Case fine, coarse;
		unsigned int k = (unsigned int)g_rand_int_range(r, 0, 11);
		size_t nbits = pick_nbits(r);
		size_t ncoarse = ((nbits - 1) >> k) + 1;
		double p = g_rand_double(r) * 0.1;

		/* fold: coarse |= any(fine group) */
		case_init(&fine, r, nbits, p);
		case_init(&coarse, r, ncoarse, 0.2);
		for (size_t b = 0; b < nbits; b++)
			coarse.ref[b >> k] |= fine.ref[b];
		migram_bitmap_fold(coarse.map, fine.map, nbits, k);
		case_check(&coarse, "fold");
		case_check(&fine, "fold source");
		case_clear(&fine);
		case_clear(&coarse);

		/* expand: fine |= coarse[j >> k] */
		case_init(&fine, r, nbits, 0.05);
		case_init(&coarse, r, ncoarse, p * 3);
		for (size_t b = 0; b < nbits; b++)
			fine.ref[b] |= coarse.ref[b >> k];
		migram_bitmap_expand(fine.map, nbits, coarse.map, k);
		case_check(&fine, "expand");
		case_clear(&fine);
		case_clear(&coarse);
	}
	g_rand_free(r);
}

static void test_or_collect_andnot(void)
{
	GRand *r = g_rand_new_with_seed(g_test_rand_int());

	for (unsigned int i = 0; i < iterations(); i++) {
		Case src, dst, mask;
		size_t nbits = pick_nbits(r), start, nr, fresh = 0;

		/* or_collect: dst |= src in range, src untouched */
		case_init(&src, r, nbits, g_rand_double(r) * 0.3);
		case_init(&dst, r, nbits, g_rand_double(r) * 0.3);
		pick_range(r, nbits, &start, &nr);
		for (size_t b = start; b < start + nr; b++) {
			fresh += src.ref[b] && !dst.ref[b];
			dst.ref[b] |= src.ref[b];
		}
		g_assert_cmpuint(migram_bitmap_or_collect(dst.map, src.map,
							  start, nr),
				 ==, fresh);
		case_check(&src, "or_collect source");
		case_check(&dst, "or_collect destination");

		/* andnot: src &= ~mask in range, only there */
		case_init(&mask, r, nbits, 0.5);
		pick_range(r, nbits, &start, &nr);
		for (size_t b = start; b < start + nr; b++)
			src.ref[b] = src.ref[b] && !mask.ref[b];
		migram_bitmap_andnot_atomic(src.map, mask.map, start, nr);
		case_check(&src, "andnot");
		case_clear(&src);
		case_clear(&dst);
		case_clear(&mask);
	}
	g_rand_free(r);
}

/* Hand-written cases, as range lists: cross-word runs and edges. */
static void test_fixed_ranges(void)
{
	unsigned long *map = migram_bitmap_new(256);

	g_assert_nonnull(map);
	migram_test_assert_ranges(map, 256, "");
	migram_bitmap_set(map, 79, 19);
	migram_test_assert_ranges(map, 256, "79-97");
	migram_bitmap_set(map, 0, 64);
	migram_test_assert_ranges(map, 256, "0-63,79-97");
	migram_bitmap_clear(map, 60, 25);
	migram_test_assert_ranges(map, 256, "0-59,85-97");
	migram_bitmap_set(map, 255, 1);
	migram_test_assert_ranges(map, 256, "0-59,85-97,255");
	g_assert_cmpuint(migram_bitmap_find_next_set(map, 256, 98), ==, 255);
	g_assert_cmpuint(migram_bitmap_find_next_set(map, 255, 98), ==, 255);
	g_assert_cmpuint(migram_bitmap_find_next_zero(map, 256, 0), ==, 60);
	g_assert_cmpuint(migram_bitmap_count(map, 0, 256), ==, 60 + 13 + 1);
	migram_bitmap_clear(map, 0, 256);
	g_assert_true(migram_bitmap_range_empty(map, 0, 256));
	migram_bitmap_set(map, 64, 128);
	g_assert_true(migram_bitmap_range_full(map, 64, 128));
	g_assert_false(migram_bitmap_range_full(map, 63, 128));
	migram_bitmap_free(map);

	/* A zero-bit bitmap is still a valid allocation. */
	map = migram_bitmap_new(0);
	g_assert_nonnull(map);
	g_assert_cmpuint(migram_bitmap_find_next_set(map, 0, 0), ==, 0);
	migram_bitmap_free(map);
	/* An impossible size fails instead of aborting. */
	g_assert_null(migram_bitmap_new(SIZE_MAX));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/bitmap/bitmap/single-bits", test_single_bits);
	g_test_add_data_func("/bitmap/bitmap/set-range",
			     (gconstpointer)plain_set, test_set_range);
	g_test_add_data_func("/bitmap/bitmap/set-range-atomic",
			     (gconstpointer)migram_bitmap_set_atomic,
			     test_set_range);
	g_test_add_data_func("/bitmap/bitmap/clear-range",
			     (gconstpointer)plain_clear, test_clear_range);
	g_test_add_data_func("/bitmap/bitmap/clear-range-atomic",
			     (gconstpointer)atomic_clear, test_clear_range);
	g_test_add_func("/bitmap/bitmap/test-and-clear-range-atomic",
			test_test_and_clear_range);
	g_test_add_func("/bitmap/bitmap/find-next", test_find);
	g_test_add_func("/bitmap/bitmap/count-empty-full",
			test_count_empty_full);
	g_test_add_func("/bitmap/bitmap/copy", test_copy);
	g_test_add_data_func("/bitmap/bitmap/exchange-collect",
			     (gconstpointer)migram_bitmap_exchange_collect,
			     test_exchange_collect);
	g_test_add_data_func(
		"/bitmap/bitmap/exchange-collect-atomic",
		(gconstpointer)migram_bitmap_exchange_collect_atomic,
		test_exchange_collect);
	g_test_add_func("/bitmap/bitmap/or-collect-andnot",
			test_or_collect_andnot);
	g_test_add_func("/bitmap/bitmap/le64", test_le64);
	g_test_add_func("/bitmap/bitmap/fold-expand", test_fold_expand);
	g_test_add_func("/bitmap/bitmap/fixed-ranges", test_fixed_ranges);
	return g_test_run();
}
