/* SPDX-License-Identifier: MIT */
/*
 * Checkpoints to a standby: the wire format shared by the primary
 * (checkpoint-send.c) and the standby (checkpoint-recv.c); the layout is
 * documented in include/migram/checkpoint.h and docs/snapshots.md.
 */
#ifndef MIGRAM_CHECKPOINT_INTERNAL_H
#define MIGRAM_CHECKPOINT_INTERNAL_H

#include <stdint.h>

#include "migram/checkpoint.h"
#include "snapshot-internal.h"

#define CK_MAGIC "MIGRAMCK"
#define CK_VERSION 1u
#define CK_MAX_BLOCKS 1024u
#define CK_REC_LEN 24u
#define CK_TAG(a, b, c, d)                                                     \
	((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 |            \
	 (uint32_t)(d) << 24)
#define CK_TAG_EPOCH CK_TAG('E', 'P', 'O', 'C')
#define CK_TAG_PAGE CK_TAG('P', 'A', 'G', 'E')
#define CK_TAG_DEVS CK_TAG('D', 'E', 'V', 'S')
#define CK_TAG_DONE CK_TAG('D', 'O', 'N', 'E')
#define CK_TAG_ACK CK_TAG('A', 'C', 'K', 'D')
#define CK_SEED 0x636b7074ull

typedef struct {
	uint32_t tag, block;
	uint64_t a, b;
} CkRecord;

static inline void ck_rec_put(uint8_t *p, const CkRecord *r)
{
	snap_put32(p, r->tag);
	snap_put32(p + 4, r->block);
	snap_put64(p + 8, r->a);
	snap_put64(p + 16, r->b);
}

static inline void ck_rec_get(const uint8_t *p, CkRecord *r)
{
	r->tag = snap_get32(p);
	r->block = snap_get32(p + 4);
	r->a = snap_get64(p + 8);
	r->b = snap_get64(p + 16);
}

/*
 * Write all of @p len bytes to @p fd (a stream socket or a pipe),
 * retrying short writes and EINTR; MSG_NOSIGNAL on sockets.
 */
bool ck_write_all(int fd, const void *buf, size_t len, const char *what,
		  GError **error);

/*
 * Read exactly @p len bytes.  *got (if not NULL) is what arrived; an end
 * of stream before @p len is an error (MIGRAM_ERROR_IO) unless nothing
 * arrived and @p eof_ok, then true with *got 0.
 */
bool ck_read_all(int fd, void *buf, size_t len, size_t *got, bool eof_ok,
		 const char *what, GError **error);

#endif
