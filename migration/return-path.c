/* SPDX-License-Identifier: MIT */
/*
 * Postcopy's return path: the messages the destination sends the source
 * (QEMU's MIG_RP_MSG_*), framed as be16 type, be16 length, data.
 *
 * The source reads them as hostile input: every type has a fixed length or
 * a bounded one, names are counted strings of 1..255 bytes, and the
 * received bitmap that follows RECV_BITMAP must have exactly the size the
 * source expects and end with QEMU's end mark.  Errors name the byte
 * offset of the message on the return path.
 */
#include <string.h>

#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "return-path.h"
#include "stream-error.h"

#define RECV_BITMAP_ENDING UINT64_C(0x0123456789ABCDEF)

/*
 * A channel failure (the return path ended or broke) in the middle of
 * something: say where on the return path and what was being read.  The
 * channel keeps its own error, so callers can still tell a broken
 * connection from bad bytes with migram_channel_error().
 */
static void rp_prefix(GError **error, uint64_t at, const char *fmt, ...)
	G_GNUC_PRINTF(3, 4);

static void rp_prefix(GError **error, uint64_t at, const char *fmt, ...)
{
	g_autofree char *what = NULL;
	va_list ap;

	if (!error || !*error)
		return;
	va_start(ap, fmt);
	what = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_prefix_error(error,
		       "return path byte %" G_GUINT64_FORMAT ": %s: ", at,
		       what);
}

static const char *type_name(uint16_t type)
{
	static const char *const names[] = {
		[MIGRAM_RP_SHUT] = "SHUT",
		[MIGRAM_RP_PONG] = "PONG",
		[MIGRAM_RP_REQ_PAGES_ID] = "REQ_PAGES_ID",
		[MIGRAM_RP_REQ_PAGES] = "REQ_PAGES",
		[MIGRAM_RP_RECV_BITMAP] = "RECV_BITMAP",
		[MIGRAM_RP_RESUME_ACK] = "RESUME_ACK",
	};

	return type < G_N_ELEMENTS(names) && names[type] ? names[type] : "?";
}

/* The only length a fixed-size message may have; -1 when variable. */
static int fixed_length(uint16_t type)
{
	switch (type) {
	case MIGRAM_RP_SHUT:
	case MIGRAM_RP_PONG:
	case MIGRAM_RP_RESUME_ACK:
		return 4;
	case MIGRAM_RP_REQ_PAGES:
		return 12;
	default:
		return -1;
	}
}

/* A counted name at data[0..len): u8 n, n bytes, nothing after. */
static bool parse_name(const guint8 *data, size_t len,
		       char out[MIGRAM_RAM_IDSTR_MAX + 1])
{
	size_t n;

	if (len < 2)
		return false;
	n = data[0];
	if (n == 0 || len != 1 + n)
		return false;
	memcpy(out, data + 1, n);
	out[n] = '\0';
	return strlen(out) == n; /* no NUL inside */
}

bool migram_rp_read(MigramChannel *ch, MigramRpMessage *msg, GError **error)
{
	uint64_t at = migram_channel_read_offset(ch);
	uint16_t type, len;
	guint8 data[MIGRAM_RP_MAX_LEN];
	uint32_t u32;
	int fixed;

	memset(msg, 0, sizeof(*msg));
	msg->at = at;
	if (!migram_channel_get_be16(ch, &type, error) ||
	    !migram_channel_get_be16(ch, &len, error)) {
		rp_prefix(error, at, "message header");
		return false;
	}
	msg->type = type;
	if (type == 0 || type > MIGRAM_RP_RESUME_ACK)
		return migram_rp_fail(error, at,
				      "unknown message type "
				      "%u (length %u)",
				      type, len);
	fixed = fixed_length(type);
	if (fixed >= 0 && len != fixed)
		return migram_rp_fail(error, at,
				      "%s message of %u bytes (expected %d)",
				      type_name(type), len, fixed);
	if (len > sizeof(data))
		return migram_rp_fail(error, at,
				      "%s message of %u bytes (at most %zu)",
				      type_name(type), len, sizeof(data));
	if (!migram_channel_get_bytes(ch, data, len, error)) {
		rp_prefix(error, at, "%s message of %u bytes", type_name(type),
			  len);
		return false;
	}
	switch (type) {
	case MIGRAM_RP_SHUT:
	case MIGRAM_RP_PONG:
	case MIGRAM_RP_RESUME_ACK:
		memcpy(&u32, data, 4);
		msg->value = GUINT32_FROM_BE(u32);
		return true;
	case MIGRAM_RP_REQ_PAGES_ID:
		if (len < 13 || !parse_name(data + 12, len - 12u, msg->idstr))
			return migram_rp_fail(error, at,
					      "REQ_PAGES_ID of %u bytes with a "
					      "bad block name",
					      len);
		/* fall through */
	case MIGRAM_RP_REQ_PAGES: {
		uint64_t start;
		uint32_t n;

		memcpy(&start, data, 8);
		memcpy(&n, data + 8, 4);
		msg->start = GUINT64_FROM_BE(start);
		msg->len = GUINT32_FROM_BE(n);
		return true;
	}
	case MIGRAM_RP_RECV_BITMAP:
		if (!parse_name(data, len, msg->idstr))
			return migram_rp_fail(error, at,
					      "RECV_BITMAP of %u bytes with a "
					      "bad block name",
					      len);
		return true;
	}
	return migram_rp_fail(error, at, "unexpected message type %u", type);
}

size_t migram_rp_bitmap_bytes(uint64_t nbits)
{
	return (size_t)(((nbits + 7) / 8 + 7) & ~UINT64_C(7));
}

bool migram_rp_read_bitmap(MigramChannel *ch, const char *idstr,
			   unsigned long *map, uint64_t nbits, GError **error)
{
	uint64_t at = migram_channel_read_offset(ch);
	size_t want = migram_rp_bitmap_bytes(nbits);
	uint64_t size, end;
	g_autofree uint64_t *words = NULL;

	if (!migram_channel_get_be64(ch, &size, error)) {
		rp_prefix(error, at, "received bitmap of ramblock '%s'", idstr);
		return false;
	}
	if (size != want)
		return migram_rp_fail(error, at,
				      "received bitmap of ramblock '%s' has "
				      "%" G_GUINT64_FORMAT
				      " bytes, expected %zu",
				      idstr, size, want);
	words = g_new0(uint64_t, migram_bitmap_le64_words((size_t)nbits) + 1);
	if (!migram_channel_get_bytes(ch, words, want, error) ||
	    !migram_channel_get_be64(ch, &end, error)) {
		rp_prefix(error, at, "received bitmap of ramblock '%s'", idstr);
		return false;
	}
	if (end != RECV_BITMAP_ENDING)
		return migram_rp_fail(error, at,
				      "received bitmap of ramblock '%s' ends "
				      "with %#" G_GINT64_MODIFIER
				      "x, not the end mark",
				      idstr, end);
	migram_bitmap_from_le64(map, words, (size_t)nbits);
	return true;
}

static void head(MigramChannel *ch, uint16_t type, uint16_t len)
{
	migram_channel_put_be16(ch, type);
	migram_channel_put_be16(ch, len);
}

void migram_rp_write_u32(MigramChannel *ch, uint16_t type, uint32_t value)
{
	head(ch, type, 4);
	migram_channel_put_be32(ch, value);
}

void migram_rp_write_req(MigramChannel *ch, const char *idstr, uint64_t start,
			 uint32_t len)
{
	size_t n = idstr ? strlen(idstr) : 0;

	head(ch, idstr ? MIGRAM_RP_REQ_PAGES_ID : MIGRAM_RP_REQ_PAGES,
	     (uint16_t)(12 + (idstr ? 1 + n : 0)));
	migram_channel_put_be64(ch, start);
	migram_channel_put_be32(ch, len);
	if (idstr)
		migram_channel_put_counted_string(ch, idstr);
}

void migram_rp_write_bitmap(MigramChannel *ch, const char *idstr,
			    const unsigned long *map, uint64_t nbits)
{
	size_t bytes = migram_rp_bitmap_bytes(nbits);
	g_autofree uint64_t *words =
		g_new0(uint64_t, migram_bitmap_le64_words((size_t)nbits) + 1);

	head(ch, MIGRAM_RP_RECV_BITMAP, (uint16_t)(1 + strlen(idstr)));
	migram_channel_put_counted_string(ch, idstr);
	migram_bitmap_to_le64(words, map, (size_t)nbits);
	migram_channel_put_be64(ch, bytes);
	migram_channel_put_bytes(ch, words, bytes);
	migram_channel_put_be64(ch, RECV_BITMAP_ENDING);
}
