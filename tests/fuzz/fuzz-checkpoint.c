/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the standby's checkpoint reader
 * (migram_checkpoint_receiver_new() and _next()) fed hostile streams; the
 * harness (ckpt-harness.h) also checks that a failed epoch left memory at
 * the last applied one.  Built by tests/fuzz/build.sh; with
 * -DCKPT_CORPUS it is instead a program writing the seed corpus into the
 * directory given.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ckpt-harness.h"

#ifdef CKPT_CORPUS
int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	g_mkdir_with_parents(argv[1], 0755);
	size_t size, at;
	g_autofree uint8_t *s = ckpt_fuzz_sample(&size, &at);
	g_autofree char *p1 = g_build_filename(argv[1], "two-epochs", NULL);
	g_autofree char *p2 = g_build_filename(argv[1], "hello-epoch0", NULL);
	if (!g_file_set_contents(p1, (const char *)s, (gssize)size, NULL) ||
	    !g_file_set_contents(p2, (const char *)s, (gssize)at, NULL))
		return 1;
	return 0;
}
#else
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autoptr(GError) error = NULL;

	(void)ckpt_fuzz_one(data, size, NULL, &error);
	return 0;
}
#endif
