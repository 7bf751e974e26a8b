/* SPDX-License-Identifier: MIT */
/*
 * Postcopy's return path messages (return-path.c).  Never installed.
 */
#ifndef MIGRAM_RETURN_PATH_H
#define MIGRAM_RETURN_PATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include "migram/channel.h"
#include "migram/ramblock.h"

/*
 * The postcopy return path (return-path.c): destination to source.
 * Readers and writers are single-threaded per channel; callers serialize.
 */
enum {
	MIGRAM_RP_SHUT = 1,         /* be32 error, 0 = clean */
	MIGRAM_RP_PONG = 2,         /* be32 value from PING */
	MIGRAM_RP_REQ_PAGES_ID = 3, /* be64 start, be32 len, u8 n, idstr */
	MIGRAM_RP_REQ_PAGES = 4,    /* be64 start, be32 len (last block) */
	MIGRAM_RP_RECV_BITMAP = 5,  /* u8 n, idstr; then the bitmap */
	MIGRAM_RP_RESUME_ACK = 6,   /* be32 1 */
};
#define MIGRAM_RP_MAX_LEN 512 /* QEMU's buffer for one message */

typedef struct {
	uint16_t type;
	uint64_t at;    /* byte offset of the message on the return path */
	uint32_t value; /* SHUT, PONG, RESUME_ACK */
	uint64_t start; /* REQ_PAGES*: block-relative byte offset */
	uint32_t len;   /* REQ_PAGES*: bytes */
	char idstr[MIGRAM_RAM_IDSTR_MAX + 1]; /* REQ_PAGES_ID, RECV_BITMAP */
} MigramRpMessage;

/* One message; a RECV_BITMAP's bitmap is read with read_bitmap next. */
bool migram_rp_read(MigramChannel *ch, MigramRpMessage *msg, GError **error);
/* be64 size (must be bitmap_bytes(nbits)), LE words, be64 end mark. */
bool migram_rp_read_bitmap(MigramChannel *ch, const char *idstr,
			   unsigned long *map, uint64_t nbits, GError **error);
size_t migram_rp_bitmap_bytes(uint64_t nbits);
void migram_rp_write_u32(MigramChannel *ch, uint16_t type, uint32_t value);
/* REQ_PAGES_ID when idstr is non-NULL, else REQ_PAGES. */
void migram_rp_write_req(MigramChannel *ch, const char *idstr, uint64_t start,
			 uint32_t len);
void migram_rp_write_bitmap(MigramChannel *ch, const char *idstr,
			    const unsigned long *map, uint64_t nbits);

#endif /* MIGRAM_RETURN_PATH_H */
