/* SPDX-License-Identifier: MIT */
/*
 * The verification-stream fuzz harness (fuzz-verify.c, make-corpus.c):
 * a fixed source list (ram0: 4 pages, ram1: 2 pages, known contents) that
 * migram_verify_compare() compares hostile hash streams against.
 */
#ifndef VERIFY_HARNESS_H
#define VERIFY_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

typedef struct VerifyHarness VerifyHarness;

/* The list; the calling thread must be registered with urcu-memb. */
VerifyHarness *verify_harness_new(void);
void verify_harness_free(VerifyHarness *h);

/*
 * Compare data (a verification stream) with the list.  Aborts on a broken
 * contract: a failure without a located MIGRAM_ERROR, or a result whose
 * fields do not fit the list.  Returns whether the comparison answered.
 */
bool verify_harness_run(VerifyHarness *h, const uint8_t *data, size_t size);

/* Seed n (0..VERIFY_SEEDS-1): valid and near-valid streams; NULL past. */
#define VERIFY_SEEDS 4
GByteArray *verify_harness_seed(VerifyHarness *h, int n);

#endif /* VERIFY_HARNESS_H */
