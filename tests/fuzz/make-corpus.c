/* SPDX-License-Identifier: MIT */
/*
 * Write the seed corpus of the receiver fuzz target into a directory:
 * every sample of stream-samples.c (valid streams from migram's writer,
 * and hand-made hostile variants) as "<name>", plus truncated copies of
 * the valid ones as "<name>.cut<bytes>".  With a second directory, also
 * the seeds of the return-path target there: every sample of
 * rp-samples.c.  With a third, the seeds of the verification target
 * (verify-harness.c) there; with a fourth, the handshake target's
 * (handshake-harness.c).
 *
 * usage: make-corpus DIR [RP_DIR [VERIFY_DIR [HANDSHAKE_DIR]]]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <glib.h>
#include <urcu/urcu-memb.h>

#include "handshake-harness.h"
#include "rp-samples.h"
#include "stream-samples.h"
#include "verify-harness.h"

/* Where to cut a valid stream: inside the header, config, list, pages. */
static const size_t cuts[] = { 1, 5, 9, 14, 30, 60, 100, 150, 4200 };

static void save(const char *dir, const char *name, const guint8 *data,
		 size_t len)
{
	g_autofree char *path = g_build_filename(dir, name, NULL);
	g_autoptr(GError) error = NULL;

	if (!g_file_set_contents(path, (const char *)data, (gssize)len,
				 &error)) {
		fprintf(stderr, "make-corpus: %s\n", error->message);
		exit(1);
	}
}

static void make_dir(const char *dir)
{
	if (g_mkdir_with_parents(dir, 0755) != 0) {
		fprintf(stderr, "make-corpus: %s: %s\n", dir,
			g_strerror(errno));
		exit(1);
	}
}

/* The return-path seeds: every sample as it is. */
static void rp_corpus(const char *dir)
{
	const RpSample *s;
	size_t n;

	make_dir(dir);
	s = rp_samples(&n);
	for (size_t i = 0; i < n; i++) {
		g_autoptr(GBytes) b = rp_sample_bytes(&s[i]);
		size_t len;
		const guint8 *data = g_bytes_get_data(b, &len);

		save(dir, s[i].name, data, len);
	}
	printf("make-corpus: %zu files in %s\n", n, dir);
}

/* The verification target's seeds: valid, a block missing, a size, a
 * page differing, and cuts of the valid one. */
static void verify_corpus(const char *dir)
{
	VerifyHarness *h = verify_harness_new();
	size_t files = 0;

	make_dir(dir);
	for (int i = 0; i < VERIFY_SEEDS; i++) {
		GByteArray *a = verify_harness_seed(h, i);
		g_autofree char *name = g_strdup_printf("verify-%d", i);

		save(dir, name, a->data, a->len);
		files++;
		for (size_t k = 0;
		     i == 0 && k < G_N_ELEMENTS(cuts) && cuts[k] < a->len;
		     k++) {
			g_autofree char *cut =
				g_strdup_printf("verify-0.cut%zu", cuts[k]);

			save(dir, cut, a->data, cuts[k]);
			files++;
		}
		g_byte_array_unref(a);
	}
	verify_harness_free(h);
	printf("make-corpus: %zu files in %s\n", files, dir);
}

/* The handshake target's seeds: hellos of each role, with and without a
 * block list, and cuts of the first. */
static void handshake_corpus(const char *dir)
{
	HsHarness *h = hs_harness_new();
	size_t files = 0;

	make_dir(dir);
	for (int i = 0; i < HS_SEEDS; i++) {
		GByteArray *a = hs_harness_seed(h, i);
		g_autofree char *name = g_strdup_printf("hello-%d", i);

		save(dir, name, a->data, a->len);
		files++;
		for (size_t k = 0;
		     i == 0 && k < G_N_ELEMENTS(cuts) && cuts[k] < a->len;
		     k++) {
			g_autofree char *cut = g_strdup_printf("hello-0.cut%zu",
							       cuts[k]);

			save(dir, cut, a->data, cuts[k]);
			files++;
		}
		g_byte_array_unref(a);
	}
	hs_harness_free(h);
	printf("make-corpus: %zu files in %s\n", files, dir);
}

int main(int argc, char **argv)
{
	const StreamSample *s;
	size_t n, files = 0;

	if (argc < 2 || argc > 5) {
		fprintf(stderr,
			"usage: %s DIR [RP_DIR [VERIFY_DIR [HANDSHAKE_DIR]]]\n",
			argv[0]);
		return 2;
	}
	make_dir(argv[1]);
	s = stream_samples(&n);
	for (size_t i = 0; i < n; i++) {
		g_autoptr(GBytes) b = stream_sample_bytes(&s[i]);
		size_t len;
		const guint8 *data = g_bytes_get_data(b, &len);

		save(argv[1], s[i].name, data, len);
		files++;
		if (s[i].code != 0)
			continue;
		for (size_t k = 0; k < G_N_ELEMENTS(cuts) && cuts[k] < len;
		     k++) {
			g_autofree char *name = g_strdup_printf("%s.cut%zu",
								s[i].name,
								cuts[k]);

			save(argv[1], name, data, cuts[k]);
			files++;
		}
	}
	printf("make-corpus: %zu files in %s\n", files, argv[1]);
	if (argc >= 3)
		rp_corpus(argv[2]);
	urcu_memb_register_thread(); /* the two harnesses' lists */
	if (argc >= 4)
		verify_corpus(argv[3]);
	if (argc == 5)
		handshake_corpus(argv[4]);
	return 0;
}
