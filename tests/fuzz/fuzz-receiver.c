/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the stream reader and the receiver, fed hostile bytes.
 *
 * Each input is a mode byte and a migration stream (fuzz-harness.h).  It is
 * loaded with migram_receiver_load() into one destination list, created on
 * the first input and reused (the harness restores it after each load).
 * A crash, a hang, a leak, a write outside the named page (guard pages,
 * read-only memory) or a failure without a located MIGRAM_ERROR is a
 * finding; tests/fuzz/build.sh builds this, docs/fuzzing.md says how to
 * run it and how to turn a finding into a regression test.
 */
#include <stddef.h>
#include <stdint.h>

#include <urcu/urcu-memb.h>

#include "fuzz-harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The fuzz target is a program, not library code: static state is fine. */
static FuzzHarness *harness;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	urcu_memb_register_thread();
	harness = fuzz_harness_new();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autoptr(GError) error = NULL;

	fuzz_harness_run(harness, data, size, NULL, &error);
	return 0;
}
