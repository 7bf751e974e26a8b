/* SPDX-License-Identifier: MIT */
/*
 * The receiver set-up shared by the libFuzzer target (fuzz-receiver.c) and
 * the regression test (tests/migration/test-fuzz-regressions.c), so that a
 * crash found by one replays byte for byte in the other.
 *
 * An input is one mode byte followed by the stream:
 *
 *     byte 0, bit 0   create_blocks
 *             bit 1   stop_at_devices
 *             bit 2   insist on machine type FUZZ_MACHINE_TYPE
 *             bit 3   reader only: walk the records with
 *                     migram_stream_reader_next() as a stream tool does
 *                     (read every other page payload, skip the rest, leave
 *                     device section bodies to the reader), no receiver
 *     bytes 1..       the migration stream
 *
 * The destination list, created once, holds:
 *
 *     "pc.ram"  caller memory, 1 MiB, between PROT_NONE guard pages
 *     "vram"    caller memory, used 64 KiB of max 256 KiB, guarded; the
 *               part past used_length is read-only (a resize callback
 *               moves the boundary), so a write past used_length faults
 *     "rom"     caller memory, 64 KiB, not migratable, read-only
 *     "shared"  a memfd block of 128 KiB (migram's own backend)
 *
 * After every load the harness checks what the receiver left behind and
 * aborts on a broken rule (a failure without a located GError, a received
 * bit past a block's used_length, a destination block gone or moved, a
 * file descriptor left open, such as a postcopy userfaultfd), then
 * removes the blocks the load created and frees the migration bitmaps.  The
 * next load starts with "vram" back at 64 KiB and every block zeroed.
 *
 * The calling thread must be registered with RCU.
 */
#ifndef MIGRAM_FUZZ_HARNESS_H
#define MIGRAM_FUZZ_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include <migram/receiver.h>

/** Mode byte bits. */
#define FUZZ_MODE_CREATE_BLOCKS 0x01u
#define FUZZ_MODE_STOP_AT_DEVICES 0x02u
#define FUZZ_MODE_MACHINE_TYPE 0x04u
#define FUZZ_MODE_READER_ONLY 0x08u

/** The machine type FUZZ_MODE_MACHINE_TYPE insists on. */
#define FUZZ_MACHINE_TYPE "pc-i440fx-7.2"

/** Block geometry of the destination list. */
#define FUZZ_PC_RAM_BYTES (UINT64_C(1) << 20)
#define FUZZ_VRAM_USED (UINT64_C(64) << 10)
#define FUZZ_VRAM_MAX (UINT64_C(256) << 10)
#define FUZZ_ROM_BYTES (UINT64_C(64) << 10)
#define FUZZ_SHARED_BYTES (UINT64_C(128) << 10)

typedef struct FuzzHarness FuzzHarness;

/* Create the destination list and the stream memfd; aborts on failure. */
FuzzHarness *fuzz_harness_new(void);

/* Free everything (not inside an RCU read-side section). */
void fuzz_harness_free(FuzzHarness *h);

/*
 * Load one input (mode byte + stream).  Returns what
 * migram_receiver_load() returned, with its error and stats; aborts when a
 * rule is broken.  @p stats may be NULL.  In reader-only mode, returns
 * whether the walk reached the end of the stream; stats.bytes is what it
 * consumed and the other figures count records.
 */
bool fuzz_harness_run(FuzzHarness *h, const uint8_t *data, size_t size,
		      MigramReceiverStats *stats, GError **error);

/*
 * The memory of one of the four destination blocks ("pc.ram", "vram",
 * "rom", "shared") as the last load left it: the harness zeroes it only
 * when the next load starts.  NULL for another name.
 */
const uint8_t *fuzz_harness_host(const FuzzHarness *h, const char *block);

/*
 * Shared by the fuzz harnesses: report a broken rule (who: the harness's
 * name) and abort, so libFuzzer keeps the input; and replace the contents
 * of fd with data, offset 0 after.
 */
void fuzz_violation(const char *who, const char *fmt, ...)
	G_GNUC_PRINTF(2, 3) G_GNUC_NORETURN;
void fuzz_fill_fd(int fd, const uint8_t *data, size_t size);

/*
 * Tests: code 0 means the load succeeded; otherwise it failed with that
 * MIGRAM_ERROR code, a message containing @message, and a byte offset.
 */
void fuzz_assert_outcome(bool ok, const GError *error, int code,
			 const char *message);

#endif /* MIGRAM_FUZZ_HARNESS_H */
