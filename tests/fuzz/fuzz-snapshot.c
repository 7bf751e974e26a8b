/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the snapshot-file parser (migram_snapshot_open_fd()),
 * fed hostile files (snap-harness.h says how an input becomes a file).
 * A crash, a read or write outside a buffer, or a failure without a
 * MIGRAM_ERROR is a finding; tests/fuzz/build.sh builds this,
 * docs/fuzzing.md says how to run it.
 */
#include <stddef.h>
#include <stdint.h>

#include "snap-harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autoptr(GError) error = NULL;

	(void)snap_fuzz_one(data, size, &error);
	return 0;
}
