/* SPDX-License-Identifier: MIT */
/*
 * The return-path reader set-up shared by the libFuzzer target
 * (fuzz-return-path.c) and the regression test
 * (tests/migration/test-postcopy-hostile.c), so that an input behaves the
 * same in both.
 *
 * An input is one mode byte followed by the return-path bytes (what a
 * destination sends the source, migration/return-path.c):
 *
 *     byte 0, bit 0   exact reads, as the source's return-path thread
 *                     reads (migram_channel_set_exact_reads)
 *     bytes 1..       the messages
 *
 * The harness reads messages with migram_rp_read() until the input ends
 * or a read fails, as the source's return-path thread does.  After a
 * RECV_BITMAP it reads the bitmap with migram_rp_read_bitmap() into a heap
 * bitmap of exactly the block's size (RP_BLOCKS below; a name not in the
 * table gets the size at index strlen(name) % RP_N_BLOCKS), so ASan sees a
 * write past it.  It aborts on a broken rule:
 *
 *  - a failure without an error, with an error outside MIGRAM_ERROR, or
 *    with one that does not start with "return path byte ";
 *  - a success that consumed other than 4 + length bytes, or a message
 *    whose fields differ from the bytes on the wire;
 *  - a bitmap read that succeeded with a bit other than the wire's, or a
 *    bit set past the block's end in the last word, or one that failed and
 *    still wrote the bitmap.
 */
#ifndef MIGRAM_RP_HARNESS_H
#define MIGRAM_RP_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

/** Mode byte bits. */
#define RP_MODE_EXACT_READS 0x01u

/** The blocks a RECV_BITMAP may name, and their sizes in target pages. */
typedef struct {
	const char *name;
	uint64_t nbits;
} RpBlock;

#define RP_N_BLOCKS 7
extern const RpBlock rp_blocks[RP_N_BLOCKS];

typedef struct {
	uint64_t messages; /* read successfully */
	uint64_t bitmaps;  /* read successfully */
	uint64_t bytes;    /* consumed */
} RpStats;

typedef struct RpHarness RpHarness;

/* Create the input memfd; aborts on failure. */
RpHarness *rp_harness_new(void);
void rp_harness_free(RpHarness *h);

/*
 * Read one input (mode byte + messages).  Returns true when the input
 * ended cleanly between two messages, false with @p error at the first
 * failure.  @p stats may be NULL.  Aborts when a rule is broken.
 */
bool rp_harness_run(RpHarness *h, const uint8_t *data, size_t size,
		    RpStats *stats, GError **error);

#endif /* MIGRAM_RP_HARNESS_H */
