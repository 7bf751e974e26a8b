/* SPDX-License-Identifier: MIT */
/*
 * The snapshot-file parser under hostile input (tests/fuzz/fuzz-snapshot.c
 * and the test-snapshot-fuzz regression test).
 *
 * An input is a 4-byte little-endian file size S and then the file's
 * first bytes B: the file is B followed by zeros up to max(S, |B|) bytes
 * (sparse in a memfd), so a short input can describe a file with 1 MiB
 * aligned pages regions.  S is capped at SNAP_FUZZ_MAX_SIZE.
 */
#ifndef MIGRAM_SNAP_HARNESS_H
#define MIGRAM_SNAP_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#define SNAP_FUZZ_MAX_SIZE (64u << 20)

/*
 * Open the file the input describes; if it parses, describe it and read
 * the first and last page and the hashes of every block.  Returns true if
 * it parsed; otherwise *error says why (a MIGRAM_ERROR naming an offset).
 */
bool snap_fuzz_one(const uint8_t *data, size_t size, GError **error);

/* A small valid file as an input (free with g_free); two blocks. */
uint8_t *snap_fuzz_sample(gboolean diff, size_t *size);

#endif
