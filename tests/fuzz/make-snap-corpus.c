/* SPDX-License-Identifier: MIT */
/* Write the snapshot fuzzer's seed corpus: a full and a diff sample. */
#include <stdio.h>

#include "snap-harness.h"

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: make-snap-corpus DIR\n");
		return 2;
	}
	g_mkdir_with_parents(argv[1], 0755);
	for (int diff = 0; diff < 2; diff++) {
		size_t n;
		g_autofree uint8_t *s = snap_fuzz_sample(diff, &n);
		g_autofree char *p = g_strdup_printf("%s/%s", argv[1],
						     diff ? "diff" : "full");
		if (!g_file_set_contents(p, (const char *)s, (gssize)n, NULL))
			return 1;
	}
	return 0;
}
