/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the source's half of verification after a migration
 * (migram_verify_compare(), migram/verify.h), fed hostile hash streams.
 *
 * Each input is a verification stream compared against a fixed list
 * (verify-harness.c).  A crash, a read outside a buffer, a hang, a
 * failure without a located MIGRAM_ERROR, or a result that does not fit
 * the list is a finding; tests/fuzz/build.sh builds this and
 * docs/fuzzing.md says how to run it.
 */
#include <stddef.h>
#include <stdint.h>

#include <urcu/urcu-memb.h>

#include "verify-harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The fuzz target is a program, not library code: static state is fine. */
static VerifyHarness *harness;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	urcu_memb_register_thread();
	harness = verify_harness_new();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	verify_harness_run(harness, data, size);
	return 0;
}
