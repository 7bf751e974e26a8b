/* SPDX-License-Identifier: MIT */
/*
 * The snapshot file's byte layout (docs/snapshots.md), shared by the
 * writer, the reader and restore.  Every integer is little-endian.
 *
 *   header, 64 bytes at offset 0
 *     0  magic "MIGRAMSN"         8  u32 version      12 u32 flags
 *    16  u32 nblocks             20  u32 target page size (4096)
 *    24  u64 snapshot id         32  u64 parent id (diff) or 0
 *    40  u64 epoch               48  u64 table length (nblocks * 320)
 *    56  u64 check: hash of bytes [0, 56) and of the table
 *   block table at 64: nblocks entries of 320 bytes
 *     0  u64 used_length          8  u64 page size
 *    16  u64 bitmap offset       24  u64 hashes offset (0: none)
 *    32  u64 pages offset        40  u64 present pages
 *    48  u16 name length, 6 zero bytes
 *    56  name, 256 bytes, NUL-padded
 *   312  u64 hot bitmap offset (0: none): pages written in the
 *        interval before the snapshot, prefetched first by a lazy restore
 *   with flag bit 1 (device state), 32 more table bytes after the
 *   entries: u64 offset (8-aligned), u64 length (1 B to 64 MiB), u64 hash
 *   of the bytes (snap_hash_bytes, seed 0), u64 zero
 *   then the bitmaps (ceil(npages / 64) u64 words each), hash arrays
 *   (npages u64 each) and hot bitmaps, then each block's pages region, 1 MiB
 * aligned.
 */
#ifndef MIGRAM_SNAPSHOT_INTERNAL_H
#define MIGRAM_SNAPSHOT_INTERNAL_H

#include <stdint.h>

#include "migram/ramblock.h"
#include "migram/snapshot.h"

#define SNAP_HEADER_LEN 64u
#define SNAP_ENTRY_LEN 320u
#define SNAP_NAME_AT 56u
#define SNAP_CHECK_AT 56u
#define SNAP_FLAG_DIFF 1u
#define SNAP_FLAG_DEVICE 2u /* the table ends with a device descriptor */
#define SNAP_DEVICE_LEN 32u /* u64 offset, u64 length, u64 hash, u64 0 */
#define SNAP_PAGE MIGRAM_TARGET_PAGE_SIZE

typedef struct {
	char name[MIGRAM_RAM_IDSTR_MAX + 1];
	uint64_t used_length;
	uint64_t page_size;
	uint64_t npages;
	uint64_t bitmap_offset;
	uint64_t hashes_offset;
	uint64_t pages_offset;
	uint64_t present;
	uint64_t hot_offset;
	unsigned long *bitmap; /* npages bits */
	unsigned long *hot;    /* npages bits, or NULL */
} SnapBlock;

struct MigramSnapshotFile {
	int fd;
	char *name;
	uint64_t file_size;
	uint32_t flags;
	uint64_t id, parent_id, epoch;
	guint nblocks;
	SnapBlock *blocks;
	uint64_t device_offset, device_len, device_hash; /* len 0: none */
};

static inline uint64_t snap_get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static inline uint32_t snap_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline void snap_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline void snap_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

/* A 64-bit hash of @p len bytes (the header check, the page hashes). */
uint64_t snap_hash_bytes(uint64_t seed, const void *buf, size_t len);

/* The header check over the header's first 56 bytes and the table. */
uint64_t snap_header_check(const uint8_t *header, const uint8_t *table,
			   size_t table_len);

/* pread/pwrite all of it, retrying short transfers and EINTR. */
bool snap_pread_all(int fd, void *buf, size_t len, uint64_t off,
		    const char *what, const char *file, GError **error);
bool snap_pwrite_all(int fd, const void *buf, size_t len, uint64_t off,
		     const char *what, const char *file, GError **error);

/* The writer's file and its block @p index, for the parallel write-out
 * (snapshot-write-out.c): NULL with an error when @p w is not started,
 * already finished, or has no block @p index. */
SnapBlock *snap_writer_block(MigramSnapshotWriter *w, guint index,
			     GError **error);
guint snap_writer_block_count(const MigramSnapshotWriter *w);
int snap_writer_fd(const MigramSnapshotWriter *w);
const char *snap_writer_path(const MigramSnapshotWriter *w);

/* Monotonic nanoseconds. */
uint64_t snap_now_ns(void);

#endif
