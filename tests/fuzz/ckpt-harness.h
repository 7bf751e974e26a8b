/* SPDX-License-Identifier: MIT */
/*
 * The standby's checkpoint reader under hostile input
 * (tests/fuzz/fuzz-checkpoint.c and tests/snapshot/test-checkpoint.c).
 *
 * An input is the byte stream a primary would send (checkpoint.h's wire
 * format) to a standby with two blocks, "pc.ram" (16 pages) and "vga"
 * (8 pages).  Beyond "no crash, errors are MIGRAM_ERRORs", the harness
 * checks the standby's guarantee: after a failure its memory is exactly
 * what the last applied epoch left (zero before the first).
 */
#ifndef MIGRAM_CKPT_HARNESS_H
#define MIGRAM_CKPT_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

/*
 * Feed the input to a fresh standby until the stream ends or fails.
 * *applied (may be NULL): epochs applied.  Returns true when the stream
 * ended cleanly between epochs; otherwise *error says why.
 */
bool ckpt_fuzz_one(const uint8_t *data, size_t size, unsigned *applied,
		   GError **error);

/*
 * A valid stream of two epochs, the first with a device state (free with
 * g_free); *epoch1_at: where the second epoch's first record starts.
 */
uint8_t *ckpt_fuzz_sample(size_t *size, size_t *epoch1_at);

#endif
