/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the source's return-path reader, fed hostile bytes.
 *
 * Each input is a mode byte and a return-path stream (rp-harness.h): the
 * messages a destination sends the source (SHUT, PONG, REQ_PAGES_ID,
 * REQ_PAGES, RECV_BITMAP and its bitmap, RESUME_ACK).  They are read with
 * migram_rp_read() and migram_rp_read_bitmap() as the source's
 * return-path thread reads them.  A crash, a read or write outside a
 * buffer, a message that differs from the wire, or a failure without a
 * located MIGRAM_ERROR is a finding; tests/fuzz/build.sh builds this,
 * docs/fuzzing.md says how to run it.
 */
#include <stddef.h>
#include <stdint.h>

#include "rp-harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The fuzz target is a program, not library code: static state is fine. */
static RpHarness *harness;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	harness = rp_harness_new();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autoptr(GError) error = NULL;

	rp_harness_run(harness, data, size, NULL, &error);
	return 0;
}
