/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the destination's side of the connection handshake
 * (migram_handshake_accept(), migram/handshake.h), fed hostile hellos.
 *
 * Each input is what a source sends first on a connection; the harness
 * (handshake-harness.c) accepts it against a fixed block list.  A crash, a
 * read outside a buffer, a hang, a failure without a located MIGRAM_ERROR
 * or an accepted hello with an unknown role is a finding;
 * tests/fuzz/build.sh builds this, docs/fuzzing.md says how to run it.
 */
#include <stddef.h>
#include <stdint.h>

#include <urcu/urcu-memb.h>

#include "handshake-harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The fuzz target is a program, not library code: static state is fine. */
static HsHarness *harness;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	urcu_memb_register_thread();
	harness = hs_harness_new();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	hs_harness_run(harness, data, size);
	return 0;
}
