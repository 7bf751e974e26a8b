/* SPDX-License-Identifier: MIT */
/*
 * The return-path reader under hostile bytes; see rp-harness.h for the
 * input format and the rules it checks.
 *
 * The rules are checked against an independent decoding of the input: the
 * harness knows where each message starts (the channel's read offset) and
 * decodes the wire format itself (docs of MIGRAM_RP_* in
 * return-path.h, design §7.4) to compare with what the parser
 * returned.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <migram/bitmap.h>
#include <migram/channel.h>
#include <migram/migram.h>

#include "return-path.h"
#include "stream-internal.h"
#include "fuzz-harness.h"
#include "rp-harness.h"

#define END_MARK UINT64_C(0x0123456789ABCDEF)
#define POISON 0xa5u

/* Sizes around word boundaries, a real block, and an empty one. */
const RpBlock rp_blocks[RP_N_BLOCKS] = {
	{ "pc.ram", 256 }, /* 1 MiB */
	{ "vram", 16 },    /* 64 KiB */
	{ "one", 1 },      { "odd", 65 },  { "word", 64 },
	{ "big", 4099 },   { "empty", 0 },
};

struct RpHarness {
	int fd;
};

#define violation(...) fuzz_violation("rp-harness", __VA_ARGS__)

RpHarness *rp_harness_new(void)
{
	RpHarness *h = g_new0(RpHarness, 1);

	h->fd = memfd_create("fuzz-return-path", MFD_CLOEXEC);
	if (h->fd < 0)
		violation("memfd_create: %s", g_strerror(errno));
	return h;
}

void rp_harness_free(RpHarness *h)
{
	if (!h)
		return;
	close(h->fd);
	g_free(h);
}

/* Big-endian fields of the input, where the harness knows they are. */
static uint64_t be(const uint8_t *p, int bytes)
{
	uint64_t v = 0;

	for (int i = 0; i < bytes; i++)
		v = v << 8 | p[i];
	return v;
}

static uint64_t rp_nbits(const char *name)
{
	for (int i = 0; i < RP_N_BLOCKS; i++)
		if (strcmp(name, rp_blocks[i].name) == 0)
			return rp_blocks[i].nbits;
	return rp_blocks[strlen(name) % RP_N_BLOCKS].nbits;
}

/* A failure must say what and where, on the return path. */
static void check_error(const GError *error, const char *what)
{
	if (!error)
		violation("%s failed without an error", what);
	if (error->domain != MIGRAM_ERROR)
		violation("%s: error outside MIGRAM_ERROR: %s", what,
			  error->message);
	if (!g_str_has_prefix(error->message, "return path byte "))
		violation("%s: error does not say where: %s", what,
			  error->message);
}

/* The counted name at p (n, then n bytes) is exactly idstr. */
static void check_name(const uint8_t *p, const char *idstr, uint64_t at)
{
	size_t n = p[0];

	if (n == 0 || strlen(idstr) != n || memcmp(p + 1, idstr, n) != 0)
		violation("message at byte %" G_GUINT64_FORMAT
			  ": name '%s' is not the wire's %zu bytes",
			  at, idstr, n);
}

/* A successful migram_rp_read() of the message at in[at..end). */
static void check_message(const uint8_t *in, size_t size, uint64_t at,
			  uint64_t end, const MigramRpMessage *msg)
{
	const uint8_t *p = in + at;
	uint64_t len;

	if (end < at + 4 || end > size)
		violation("message at byte %" G_GUINT64_FORMAT
			  " ends at %" G_GUINT64_FORMAT " of %zu",
			  at, end, size);
	len = be(p + 2, 2);
	if (end - at != 4 + len || len > MIGRAM_RP_MAX_LEN)
		violation("message at byte %" G_GUINT64_FORMAT
			  " of length %" G_GUINT64_FORMAT
			  " consumed %" G_GUINT64_FORMAT " bytes",
			  at, len, end - at);
	if (msg->at != at || msg->type != be(p, 2))
		violation("message at byte %" G_GUINT64_FORMAT
			  ": at %" G_GUINT64_FORMAT ", type %u",
			  at, msg->at, msg->type);
	switch (msg->type) {
	case MIGRAM_RP_SHUT:
	case MIGRAM_RP_PONG:
	case MIGRAM_RP_RESUME_ACK:
		if (len != 4 || msg->value != be(p + 4, 4))
			violation("u32 message at byte %" G_GUINT64_FORMAT, at);
		return;
	case MIGRAM_RP_REQ_PAGES_ID:
		if (len != 13 + (uint64_t)p[16])
			violation("REQ_PAGES_ID at byte %" G_GUINT64_FORMAT
				  " of length %" G_GUINT64_FORMAT,
				  at, len);
		check_name(p + 16, msg->idstr, at);
		/* fall through */
	case MIGRAM_RP_REQ_PAGES:
		if ((msg->type == MIGRAM_RP_REQ_PAGES && len != 12) ||
		    msg->start != be(p + 4, 8) || msg->len != be(p + 12, 4))
			violation("page request at byte %" G_GUINT64_FORMAT,
				  at);
		return;
	case MIGRAM_RP_RECV_BITMAP:
		if (len != 1 + (uint64_t)p[4])
			violation("RECV_BITMAP at byte %" G_GUINT64_FORMAT
				  " of length %" G_GUINT64_FORMAT,
				  at, len);
		check_name(p + 4, msg->idstr, at);
		return;
	default:
		violation("message type %u at byte %" G_GUINT64_FORMAT
			  " accepted",
			  msg->type, at);
	}
}

/*
 * A RECV_BITMAP's bitmap, at in[at..): read into a poisoned heap bitmap of
 * exactly its words, then compared with the wire.
 */
static bool read_bitmap(MigramChannel *ch, const uint8_t *in, size_t size,
			const char *idstr, GError **error)
{
	uint64_t nbits = rp_nbits(idstr);
	size_t words = MIGRAM_BITS_TO_LONGS(nbits);
	size_t want = migram_rp_bitmap_bytes(nbits);
	uint64_t at = migram_channel_read_offset(ch), end;
	g_autofree unsigned long *map =
		g_malloc(MAX(words, 1) * sizeof(unsigned long));
	const uint8_t *bits;
	bool ok;

	memset(map, POISON, words * sizeof(unsigned long));
	ok = migram_rp_read_bitmap(ch, idstr, map, nbits, error);
	end = migram_channel_read_offset(ch);
	if (!ok) {
		check_error(error ? *error : NULL, "migram_rp_read_bitmap");
		for (size_t i = 0; i < words * sizeof(unsigned long); i++)
			if (((const uint8_t *)map)[i] != POISON)
				violation("failed bitmap read of '%s' wrote "
					  "byte %zu of the bitmap",
					  idstr, i);
		return false;
	}
	if (end != at + 16 + want || end > size || be(in + at, 8) != want ||
	    be(in + at + 8 + want, 8) != END_MARK)
		violation("bitmap of '%s' at byte %" G_GUINT64_FORMAT
			  " accepted: %" G_GUINT64_FORMAT " bytes consumed, "
			  "%zu expected",
			  idstr, at, end - at, 16 + want);
	bits = in + at + 8;
	for (uint64_t i = 0; i < (uint64_t)words * MIGRAM_BITS_PER_LONG; i++) {
		bool wire = i < nbits && (bits[i / 8] >> (i % 8)) & 1;

		if (migram_bitmap_test_bit(map, (size_t)i) != wire)
			violation("bitmap of '%s' at byte %" G_GUINT64_FORMAT
				  ": bit %" G_GUINT64_FORMAT
				  " is not the wire's",
				  idstr, at, i);
	}
	return true;
}

bool rp_harness_run(RpHarness *h, const uint8_t *data, size_t size,
		    RpStats *stats, GError **error)
{
	RpStats st = { 0 };
	GError *err = NULL;
	MigramChannel *ch;
	uint8_t mode = size ? data[0] : 0;
	bool ok = true;

	if (size) {
		data++;
		size--;
	}
	fuzz_fill_fd(h->fd, data, size);
	ch = migram_channel_new(h->fd, false);
	if (mode & RP_MODE_EXACT_READS)
		migram_channel_set_exact_reads(ch);
	for (;;) {
		uint64_t at = migram_channel_read_offset(ch);
		MigramRpMessage msg;
		bool end = false;

		if (!migram_channel_at_end(ch, &end, &err))
			violation("at_end failed: %s", err->message);
		if (end)
			break;
		ok = migram_rp_read(ch, &msg, &err);
		if (!ok) {
			check_error(err, "migram_rp_read");
			break;
		}
		check_message(data, size, at, migram_channel_read_offset(ch),
			      &msg);
		st.messages++;
		if (msg.type == MIGRAM_RP_RECV_BITMAP) {
			ok = read_bitmap(ch, data, size, msg.idstr, &err);
			if (!ok)
				break;
			st.bitmaps++;
		}
	}
	st.bytes = migram_channel_read_offset(ch);
	if (st.bytes > size)
		violation("consumed %" G_GUINT64_FORMAT " of %zu bytes",
			  st.bytes, size);
	migram_channel_free(ch);
	if (stats)
		*stats = st;
	if (err)
		g_propagate_error(error, err);
	return ok;
}
