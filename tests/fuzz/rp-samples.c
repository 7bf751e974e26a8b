/* SPDX-License-Identifier: MIT */
/*
 * Sample return-path inputs, with their expected outcome.  Bitmap sizes
 * are the harness's (rp_blocks in rp-harness.c): "pc.ram" 256 bits,
 * "vram" 16, "odd" 65.
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <migram/bitmap.h>
#include <migram/migram.h>

#include "return-path.h"
#include "rp-harness.h"
#include "rp-samples.h"

#define END_MARK UINT64_C(0x0123456789ABCDEF)

static void head(MigramChannel *ch, uint16_t type, uint16_t len)
{
	migram_channel_put_be16(ch, type);
	migram_channel_put_be16(ch, len);
}

/* A bitmap of nbits with every third bit set, as the writer sends it. */
static void bitmap(MigramChannel *ch, const char *idstr, uint64_t nbits)
{
	unsigned long *map = migram_bitmap_new((size_t)MAX(nbits, 1));

	for (uint64_t i = 0; i < nbits; i += 3)
		migram_bitmap_set_bit(map, (size_t)i);
	migram_rp_write_bitmap(ch, idstr, map, nbits);
	migram_bitmap_free(map);
}

/* ---- valid ---- */

static void shut(MigramChannel *ch)
{
	migram_rp_write_u32(ch, MIGRAM_RP_SHUT, 0);
}

static void shut_error(MigramChannel *ch)
{
	migram_rp_write_u32(ch, MIGRAM_RP_SHUT, 1);
}

static void pong(MigramChannel *ch)
{
	migram_rp_write_u32(ch, MIGRAM_RP_PONG, 3);
}

static void req_pages_id(MigramChannel *ch)
{
	migram_rp_write_req(ch, "pc.ram", 0x1000, 0x1000);
}

static void req_pages(MigramChannel *ch)
{
	migram_rp_write_req(ch, "pc.ram", 0x1000, 0x1000);
	migram_rp_write_req(ch, NULL, 0xff000, 0x1000);
}

static void recv_bitmap(MigramChannel *ch)
{
	bitmap(ch, "pc.ram", 256);
}

static void recv_bitmap_odd(MigramChannel *ch)
{
	bitmap(ch, "odd", 65);
}

static void recv_bitmap_empty(MigramChannel *ch)
{
	bitmap(ch, "empty", 0);
}

static void resume_ack(MigramChannel *ch)
{
	migram_rp_write_u32(ch, MIGRAM_RP_RESUME_ACK, 1);
}

/* What a destination sends over one connection, recovery included. */
static void session(MigramChannel *ch)
{
	migram_rp_write_u32(ch, MIGRAM_RP_PONG, 1);
	migram_rp_write_u32(ch, MIGRAM_RP_PONG, 2);
	migram_rp_write_req(ch, "pc.ram", 0x5000, 0x1000);
	migram_rp_write_req(ch, NULL, 0x6000, 0x1000);
	migram_rp_write_req(ch, "vram", 0, 0x1000);
	bitmap(ch, "pc.ram", 256);
	bitmap(ch, "vram", 16);
	migram_rp_write_u32(ch, MIGRAM_RP_RESUME_ACK, 1);
	migram_rp_write_req(ch, "pc.ram", 0x7000, 0x1000);
	migram_rp_write_u32(ch, MIGRAM_RP_SHUT, 0);
}

static void empty(MigramChannel *ch)
{
	(void)ch;
}

/* ---- wrong lengths and types ---- */

static void shut_len_3(MigramChannel *ch)
{
	head(ch, MIGRAM_RP_SHUT, 3);
	migram_channel_put_bytes(ch, "\0\0\0", 3);
}

static void pong_len_5(MigramChannel *ch)
{
	head(ch, MIGRAM_RP_PONG, 5);
	migram_channel_put_bytes(ch, "\0\0\0\0\0", 5);
}

static void resume_ack_len_0(MigramChannel *ch)
{
	head(ch, MIGRAM_RP_RESUME_ACK, 0);
}

static void req_pages_len_13(MigramChannel *ch)
{
	head(ch, MIGRAM_RP_REQ_PAGES, 13);
	migram_channel_put_be64(ch, 0);
	migram_channel_put_be32(ch, 0x1000);
	migram_channel_put_u8(ch, 0);
}

static void req_pages_id_len_12(MigramChannel *ch)
{
	head(ch, MIGRAM_RP_REQ_PAGES_ID, 12);
	migram_channel_put_be64(ch, 0);
	migram_channel_put_be32(ch, 0x1000);
}

static void req_pages_id_too_long(MigramChannel *ch)
{
	guint8 junk[513] = { 0 };

	head(ch, MIGRAM_RP_REQ_PAGES_ID, sizeof(junk));
	migram_channel_put_bytes(ch, junk, sizeof(junk));
}

static void recv_bitmap_len_0(MigramChannel *ch)
{
	head(ch, MIGRAM_RP_RECV_BITMAP, 0);
}

static void type_0(MigramChannel *ch)
{
	head(ch, 0, 4);
	migram_channel_put_be32(ch, 0);
}

/* SWITCHOVER_ACK (8.1+): migram's source never asks for it. */
static void type_7(MigramChannel *ch)
{
	head(ch, 7, 0);
}

static void type_ffff(MigramChannel *ch)
{
	head(ch, 0xffff, 0xffff);
}

/* ---- bad names ---- */

/* A REQ_PAGES_ID with the given name bytes and declared name length. */
static void req_id_name(MigramChannel *ch, const void *name, uint8_t n,
			size_t bytes)
{
	head(ch, MIGRAM_RP_REQ_PAGES_ID, (uint16_t)(13 + bytes));
	migram_channel_put_be64(ch, 0x1000);
	migram_channel_put_be32(ch, 0x1000);
	migram_channel_put_u8(ch, n);
	migram_channel_put_bytes(ch, name, bytes);
}

static void req_id_empty_name(MigramChannel *ch)
{
	req_id_name(ch, "", 0, 0);
}

static void req_id_nul_in_name(MigramChannel *ch)
{
	req_id_name(ch, "pc\0ram", 6, 6);
}

static void req_id_trailing(MigramChannel *ch)
{
	req_id_name(ch, "pc.ramXX", 6, 8);
}

static void req_id_short_name(MigramChannel *ch)
{
	req_id_name(ch, "pc.ra", 6, 5);
}

static void recv_bitmap_empty_name(MigramChannel *ch)
{
	head(ch, MIGRAM_RP_RECV_BITMAP, 1);
	migram_channel_put_u8(ch, 0);
}

static void recv_bitmap_trailing(MigramChannel *ch)
{
	head(ch, MIGRAM_RP_RECV_BITMAP, 8);
	migram_channel_put_counted_string(ch, "pc.ram");
	migram_channel_put_u8(ch, 'X');
}

static void recv_bitmap_nul_in_name(MigramChannel *ch)
{
	head(ch, MIGRAM_RP_RECV_BITMAP, 7);
	migram_channel_put_u8(ch, 6);
	migram_channel_put_bytes(ch, "pc\0ram", 6);
}

/* ---- bad bitmaps ---- */

/* RECV_BITMAP for "pc.ram" (256 bits, 32 bytes): size, bytes, mark. */
static void pc_bitmap(MigramChannel *ch, uint64_t size, size_t bytes,
		      uint64_t mark)
{
	guint8 ones[64];

	memset(ones, 0xff, sizeof(ones));
	head(ch, MIGRAM_RP_RECV_BITMAP, 7);
	migram_channel_put_counted_string(ch, "pc.ram");
	migram_channel_put_be64(ch, size);
	migram_channel_put_bytes(ch, ones, bytes);
	migram_channel_put_be64(ch, mark);
}

static void bitmap_too_big(MigramChannel *ch)
{
	pc_bitmap(ch, 40, 40, END_MARK);
}

static void bitmap_too_small(MigramChannel *ch)
{
	pc_bitmap(ch, 24, 24, END_MARK);
}

static void bitmap_huge(MigramChannel *ch)
{
	pc_bitmap(ch, UINT64_MAX, 32, END_MARK);
}

static void bitmap_bad_end(MigramChannel *ch)
{
	pc_bitmap(ch, 32, 32, 0xefcdab8967452301);
}

/* The bitmap, then the input ends where the end mark belongs. */
static void bitmap_no_end(MigramChannel *ch)
{
	guint8 ones[32];

	memset(ones, 0xff, sizeof(ones));
	head(ch, MIGRAM_RP_RECV_BITMAP, 7);
	migram_channel_put_counted_string(ch, "pc.ram");
	migram_channel_put_be64(ch, sizeof(ones));
	migram_channel_put_bytes(ch, ones, sizeof(ones));
}

/* A bitmap for "odd" (65 bits, 16 bytes) with bits past the end set. */
static void bitmap_tail_bits(MigramChannel *ch)
{
	guint8 ones[16];

	memset(ones, 0xff, sizeof(ones));
	head(ch, MIGRAM_RP_RECV_BITMAP, 4);
	migram_channel_put_counted_string(ch, "odd");
	migram_channel_put_be64(ch, 16);
	migram_channel_put_bytes(ch, ones, sizeof(ones));
	migram_channel_put_be64(ch, END_MARK);
}

/* ---- cut short ---- */

static void cut_header(MigramChannel *ch)
{
	shut(ch);
	migram_channel_put_u8(ch, 0);
}

static void cut_body(MigramChannel *ch)
{
	head(ch, MIGRAM_RP_REQ_PAGES_ID, 19);
	migram_channel_put_be64(ch, 0x1000);
}

#define OK 0
#define EXACT RP_MODE_EXACT_READS
#define PROTO MIGRAM_ERROR_PROTOCOL

static const RpSample samples[] = {
	/* Valid, one of each type, and a whole session. */
	{ "shut", 0, shut, OK, NULL },
	{ "shut-error", 0, shut_error, OK, NULL },
	{ "pong", 0, pong, OK, NULL },
	{ "req-pages-id", 0, req_pages_id, OK, NULL },
	{ "req-pages", 0, req_pages, OK, NULL },
	{ "recv-bitmap", 0, recv_bitmap, OK, NULL },
	{ "recv-bitmap-odd", 0, recv_bitmap_odd, OK, NULL },
	{ "recv-bitmap-empty", 0, recv_bitmap_empty, OK, NULL },
	{ "recv-bitmap-tail-bits", 0, bitmap_tail_bits, OK, NULL },
	{ "resume-ack", 0, resume_ack, OK, NULL },
	{ "session", 0, session, OK, NULL },
	{ "session-exact", EXACT, session, OK, NULL },
	{ "empty", 0, empty, OK, NULL },

	/* Hostile. */
	{ "shut-len-3", 0, shut_len_3, PROTO,
	  "return path byte 0: SHUT message of 3 bytes (expected 4)" },
	{ "pong-len-5", 0, pong_len_5, PROTO,
	  "return path byte 0: PONG message of 5 bytes (expected 4)" },
	{ "resume-ack-len-0", 0, resume_ack_len_0, PROTO,
	  "return path byte 0: RESUME_ACK message of 0 bytes (expected 4)" },
	{ "req-pages-len-13", 0, req_pages_len_13, PROTO,
	  "return path byte 0: REQ_PAGES message of 13 bytes (expected 12)" },
	{ "req-pages-id-len-12", 0, req_pages_id_len_12, PROTO,
	  "return path byte 0: REQ_PAGES_ID of 12 bytes with a bad block "
	  "name" },
	{ "req-pages-id-too-long", 0, req_pages_id_too_long, PROTO,
	  "return path byte 0: REQ_PAGES_ID message of 513 bytes (at most "
	  "512)" },
	{ "recv-bitmap-len-0", 0, recv_bitmap_len_0, PROTO,
	  "return path byte 0: RECV_BITMAP of 0 bytes with a bad block name" },
	{ "type-0", 0, type_0, PROTO,
	  "return path byte 0: unknown message type 0 (length 4)" },
	{ "type-7", 0, type_7, PROTO,
	  "return path byte 0: unknown message type 7 (length 0)" },
	{ "type-ffff", 0, type_ffff, PROTO,
	  "return path byte 0: unknown message type 65535" },
	{ "req-id-empty-name", 0, req_id_empty_name, PROTO,
	  "return path byte 0: REQ_PAGES_ID of 13 bytes with a bad block "
	  "name" },
	{ "req-id-nul-in-name", 0, req_id_nul_in_name, PROTO,
	  "return path byte 0: REQ_PAGES_ID of 19 bytes with a bad block "
	  "name" },
	{ "req-id-trailing", 0, req_id_trailing, PROTO,
	  "return path byte 0: REQ_PAGES_ID of 21 bytes with a bad block "
	  "name" },
	{ "req-id-short-name", 0, req_id_short_name, PROTO,
	  "return path byte 0: REQ_PAGES_ID of 18 bytes with a bad block "
	  "name" },
	{ "recv-bitmap-empty-name", 0, recv_bitmap_empty_name, PROTO,
	  "return path byte 0: RECV_BITMAP of 1 bytes with a bad block name" },
	{ "recv-bitmap-trailing", 0, recv_bitmap_trailing, PROTO,
	  "return path byte 0: RECV_BITMAP of 8 bytes with a bad block name" },
	{ "recv-bitmap-nul-in-name", 0, recv_bitmap_nul_in_name, PROTO,
	  "return path byte 0: RECV_BITMAP of 7 bytes with a bad block name" },
	{ "bitmap-too-big", 0, bitmap_too_big, PROTO,
	  "return path byte 11: received bitmap of ramblock 'pc.ram' has 40 "
	  "bytes, expected 32" },
	{ "bitmap-too-small", 0, bitmap_too_small, PROTO,
	  "return path byte 11: received bitmap of ramblock 'pc.ram' has 24 "
	  "bytes, expected 32" },
	{ "bitmap-huge", 0, bitmap_huge, PROTO,
	  "has 18446744073709551615 bytes, expected 32" },
	{ "bitmap-bad-end", 0, bitmap_bad_end, PROTO,
	  "return path byte 11: received bitmap of ramblock 'pc.ram' ends "
	  "with 0xefcdab8967452301, not the end mark" },
	{ "bitmap-no-end", 0, bitmap_no_end, PROTO,
	  "return path byte 11: received bitmap of ramblock 'pc.ram': "
	  "unexpected end of stream at byte 51" },
	{ "cut-header", 0, cut_header, PROTO,
	  "return path byte 8: message header: unexpected end of stream at "
	  "byte 9" },
	{ "cut-body", 0, cut_body, PROTO,
	  "return path byte 0: REQ_PAGES_ID message of 19 bytes: unexpected "
	  "end of stream at byte 12" },
	{ "cut-body-exact", EXACT, cut_body, PROTO,
	  "return path byte 0: REQ_PAGES_ID message of 19 bytes: unexpected "
	  "end of stream at byte 12" },
};

const RpSample *rp_samples(size_t *n)
{
	*n = G_N_ELEMENTS(samples);
	return samples;
}

GBytes *rp_sample_bytes(const RpSample *s)
{
	GByteArray *out = g_byte_array_new();
	MigramChannel *ch;
	guint8 buf[4096];
	ssize_t n;
	int fd = memfd_create("rp-sample", MFD_CLOEXEC);

	g_assert(fd >= 0);
	ch = migram_channel_new(fd, false);
	s->build(ch);
	g_assert(migram_channel_flush(ch, NULL));
	migram_channel_free(ch);

	g_byte_array_append(out, &s->mode, 1);
	g_assert(lseek(fd, 0, SEEK_SET) == 0);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		g_byte_array_append(out, buf, (guint)n);
	g_assert(n == 0);
	close(fd);
	return g_byte_array_free_to_bytes(out);
}
