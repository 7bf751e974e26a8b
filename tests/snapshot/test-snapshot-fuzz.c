/* SPDX-License-Identifier: MIT */
/*
 * The snapshot fuzz harness as a regression test: the samples parse, and
 * mutations of them (byte flips, truncations, size changes) fail with a
 * MIGRAM_ERROR naming an offset or parse, never crash.
 */
#include <string.h>

#include <migram/migram.h>

#include "migram-test-util.h"
#include "snap-harness.h"

static void test_samples(void)
{
	for (int diff = 0; diff < 2; diff++) {
		size_t n;
		g_autofree uint8_t *s = snap_fuzz_sample(diff, &n);
		g_autoptr(GError) err = NULL;
		g_assert_true(snap_fuzz_one(s, n, &err));
		g_assert_no_error(err);
	}
}

static void test_mutations(void)
{
	size_t n;
	g_autofree uint8_t *s = snap_fuzz_sample(FALSE, &n);
	g_autofree uint8_t *m = g_malloc(n);
	GRand *r = g_rand_new_with_seed(4242);
	guint runs = migram_test_scale(2000), parsed = 0;
	for (guint i = 0; i < runs; i++) {
		memcpy(m, s, n);
		size_t len = n;
		switch (g_rand_int_range(r, 0, 4)) {
		case 0: /* truncate the bytes */
			len = (size_t)g_rand_int_range(r, 0, (gint32)n);
			break;
		case 1: /* change the file size */
			m[1] = (uint8_t)g_rand_int(r);
			m[2] = (uint8_t)g_rand_int(r);
			break;
		default: /* flip bytes in the header, table or bitmaps */
			for (int k = g_rand_int_range(r, 1, 5); k > 0; k--)
				m[4 + g_rand_int_range(r, 0, 1200)] ^=
					(uint8_t)g_rand_int_range(r, 1, 256);
		}
		GError *err = NULL;
		if (snap_fuzz_one(m, len, &err)) {
			parsed++;
		} else {
			g_assert_nonnull(err);
			g_assert_true(err->domain == MIGRAM_ERROR);
			g_assert_nonnull(strstr(err->message, "offset"));
			g_error_free(err);
		}
	}
	g_test_message("%u of %u mutations parsed", parsed, runs);
	g_rand_free(r);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/snapshot/snapshot-fuzz/samples", test_samples);
	g_test_add_func("/snapshot/snapshot-fuzz/mutations", test_mutations);
	return g_test_run();
}
