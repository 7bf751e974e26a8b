/* SPDX-License-Identifier: MIT */
/*
 * The handshake fuzz harness (fuzz-handshake.c, make-corpus.c): a
 * destination with a fixed block list (pc.ram: 4 pages, vga: 2 pages)
 * that migram_handshake_accept()s hostile hellos.
 */
#ifndef HANDSHAKE_HARNESS_H
#define HANDSHAKE_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

typedef struct HsHarness HsHarness;

/* The list; the calling thread must be registered with urcu-memb. */
HsHarness *hs_harness_new(void);
void hs_harness_free(HsHarness *h);

/*
 * Accept data as a source's hello.  Aborts on a broken contract: a
 * failure without a MIGRAM_ERROR naming the handshake, or a success with
 * a role the library does not know.  Returns whether it was accepted.
 */
bool hs_harness_run(HsHarness *h, const uint8_t *data, size_t size);

/* Seed n (0..HS_SEEDS-1): valid and near-valid hellos; NULL past. */
#define HS_SEEDS 4
GByteArray *hs_harness_seed(HsHarness *h, int n);

#endif /* HANDSHAKE_HARNESS_H */
