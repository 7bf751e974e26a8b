/* SPDX-License-Identifier: MIT */
/*
 * The optional connection handshake (include/migram/handshake.h).
 *
 * Both directions carry the same hello.  The reader trusts nothing: every
 * field is checked as it is read, a block count is bounded before any
 * block is read, and names are counted strings; the only allocation is the
 * set of the peer's block names (at most MIGRAM_HANDSHAKE_MAX_BLOCKS).
 * Each side compares the two hellos with the same rules, so a mismatch
 * gives the same message on both ends.
 */
#include <stdarg.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include "migram-common.h"
#include "migram/handshake.h"
#include "migram/migram.h"

#define PAGE MIGRAM_TARGET_PAGE_SIZE

MIGRAM_EXPORT void migram_handshake_init(MigramHandshake *hs)
{
	g_return_if_fail(hs);

	memset(hs, 0, sizeof(*hs));
	for (size_t i = 0; i < sizeof(hs->migration_id); i += 4) {
		guint32 r = g_random_int();

		memcpy(hs->migration_id + i, &r, 4);
	}
	hs->role = MIGRAM_HANDSHAKE_MAIN;
	hs->channels = 1;
	hs->page_size = PAGE;
	hs->peer_blocks = MIGRAM_HANDSHAKE_NO_BLOCKS;
}

MIGRAM_EXPORT const char *migram_handshake_role_name(uint32_t role,
						     char buf[16])
{
	switch (role) {
	case MIGRAM_HANDSHAKE_MAIN:
		return "main";
	case MIGRAM_HANDSHAKE_RETURN_PATH:
		return "return-path";
	case MIGRAM_HANDSHAKE_PREEMPT:
		return "preempt";
	}
	if (role >= MIGRAM_HANDSHAKE_DATA &&
	    role - MIGRAM_HANDSHAKE_DATA < 65536) {
		g_snprintf(buf, 16, "data-%u", role - MIGRAM_HANDSHAKE_DATA);
		return buf;
	}
	return "unknown";
}

static bool valid_role(uint32_t role)
{
	return role == MIGRAM_HANDSHAKE_MAIN ||
	       role == MIGRAM_HANDSHAKE_RETURN_PATH ||
	       role == MIGRAM_HANDSHAKE_PREEMPT ||
	       (role >= MIGRAM_HANDSHAKE_DATA &&
		role - MIGRAM_HANDSHAKE_DATA < 65536);
}

static void put_hello(MigramChannel *ch, const MigramHandshake *hs,
		      uint32_t role)
{
	migram_channel_put_be32(ch, MIGRAM_HANDSHAKE_MAGIC);
	migram_channel_put_be32(ch, MIGRAM_HANDSHAKE_VERSION);
	migram_channel_put_bytes(ch, hs->migration_id,
				 sizeof(hs->migration_id));
	migram_channel_put_be32(ch, role);
	migram_channel_put_be32(ch, hs->caps);
	migram_channel_put_be32(ch, hs->channels);
	migram_channel_put_be32(ch, hs->compression);
	migram_channel_put_be32(ch, hs->page_size);
	if (!hs->list) {
		migram_channel_put_be32(ch, MIGRAM_HANDSHAKE_NO_BLOCKS);
		return;
	}
	urcu_memb_read_lock();
	{
		uint32_t n = 0;

		for (MigramRamBlock *b =
			     migram_ram_list_next_migratable(hs->list, NULL);
		     b; b = migram_ram_list_next_migratable(hs->list, b))
			n++;
		migram_channel_put_be32(ch, n);
		for (MigramRamBlock *b =
			     migram_ram_list_next_migratable(hs->list, NULL);
		     b; b = migram_ram_list_next_migratable(hs->list, b)) {
			migram_channel_put_counted_string(
				ch, migram_ram_block_idstr(b));
			migram_channel_put_be64(
				ch, migram_ram_block_used_length(b));
		}
	}
	urcu_memb_read_unlock();
}

/* Prefix a read error with where and which field. */
static bool read_failed(GError **error, uint64_t at, const char *fmt, ...)
{
	g_autofree char *what = NULL;
	va_list ap;

	va_start(ap, fmt);
	what = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_prefix_error(error, "handshake byte %" G_GUINT64_FORMAT ": %s: ", at,
		       what);
	return false;
}

static bool bad(GError **error, uint64_t at, const char *fmt, ...)
{
	g_autofree char *what = NULL;
	va_list ap;

	va_start(ap, fmt);
	what = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
		    "handshake byte %" G_GUINT64_FORMAT ": %s", at, what);
	return false;
}

/* Labels for the two sides in mismatch messages. */
typedef struct {
	const char *us, *them;
	bool us_source; /* whether this side is the source */
} Sides;

/* First mismatch wins; later ones are dropped. */
static void mismatch(GError **m, const char *fmt, ...)
{
	g_autofree char *what = NULL;
	va_list ap;

	if (*m)
		return;
	va_start(ap, fmt);
	what = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_set_error(m, MIGRAM_ERROR, MIGRAM_ERROR_INVALID, "handshake: %s",
		    what);
}

/*
 * The peer's block list against ours (when we have one): same names, same
 * used lengths, nothing on one side only.  Reads every record.
 */
static bool read_blocks(MigramChannel *ch, uint32_t n, MigramRamList *list,
			const Sides *s, GError **m, GError **error)
{
	g_autoptr(GHashTable) seen =
		g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

	for (uint32_t i = 0; i < n; i++) {
		uint64_t at = migram_channel_read_offset(ch), len;
		char name[256];
		MigramRamBlock *b;

		if (!migram_channel_get_counted_string(ch, name, error))
			return read_failed(error, at, "block %u's name", i);
		if (!name[0])
			return bad(error, at, "block %u has an empty name", i);
		if (g_hash_table_contains(seen, name))
			return bad(error, at, "block '%s' listed twice", name);
		g_hash_table_add(seen, g_strdup(name));
		at = migram_channel_read_offset(ch);
		if (!migram_channel_get_be64(ch, &len, error))
			return read_failed(error, at, "block '%s''s length",
					   name);
		if (!list)
			continue;
		urcu_memb_read_lock();
		b = migram_ram_list_find(list, name);
		if (!b || !(migram_ram_block_flags(b) & MIGRAM_RAM_MIGRATABLE))
			mismatch(m, "block '%s' exists on the %s only", name,
				 s->them);
		else if (migram_ram_block_used_length(b) != len) {
			uint64_t ours = migram_ram_block_used_length(b);

			mismatch(m,
				 "block '%s' differs in size: source "
				 "%#" G_GINT64_MODIFIER "x, destination "
				 "%#" G_GINT64_MODIFIER "x",
				 name, s->us_source ? ours : len,
				 s->us_source ? len : ours);
		}
		urcu_memb_read_unlock();
	}
	if (!list)
		return true;
	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next_migratable(list, NULL); b;
	     b = migram_ram_list_next_migratable(list, b))
		if (!g_hash_table_contains(seen, migram_ram_block_idstr(b))) {
			mismatch(m, "block '%s' exists on the %s only",
				 migram_ram_block_idstr(b), s->us);
			break;
		}
	urcu_memb_read_unlock();
	return true;
}

static char *id_hex(const uint8_t id[16])
{
	GString *s = g_string_new(NULL);

	for (int i = 0; i < 16; i++)
		g_string_append_printf(s, "%02x", id[i]);
	return g_string_free(s, FALSE);
}

static bool id_zero(const uint8_t id[16])
{
	for (int i = 0; i < 16; i++)
		if (id[i])
			return false;
	return true;
}

/*
 * Read a hello into peer.  Protocol errors (a malformed hello) fail;
 * disagreements with local go to *m, the first one only.
 */
static bool read_hello(MigramChannel *ch, const MigramHandshake *local,
		       const Sides *s, MigramHandshake *peer, GError **m,
		       GError **error)
{
	uint64_t at = migram_channel_read_offset(ch);
	uint32_t magic, version, n;

	memset(peer, 0, sizeof(*peer));
	if (!migram_channel_get_be32(ch, &magic, error))
		return read_failed(error, at, "reading the magic");
	if (magic != MIGRAM_HANDSHAKE_MAGIC)
		return bad(error, at,
			   "magic %#x, expected %#x (is the peer in "
			   "QEMU-compatible mode, without the handshake?)",
			   magic, MIGRAM_HANDSHAKE_MAGIC);
	at = migram_channel_read_offset(ch);
	if (!migram_channel_get_be32(ch, &version, error))
		return read_failed(error, at, "reading the version");
	if (version != MIGRAM_HANDSHAKE_VERSION) {
		mismatch(m,
			 "protocol version differs: source %u, destination %u",
			 s->us_source ? MIGRAM_HANDSHAKE_VERSION : version,
			 s->us_source ? version : MIGRAM_HANDSHAKE_VERSION);
		return true; /* the rest is in a format we do not know */
	}
	at = migram_channel_read_offset(ch);
	if (!migram_channel_get_bytes(ch, peer->migration_id, 16, error) ||
	    !migram_channel_get_be32(ch, &peer->role, error) ||
	    !migram_channel_get_be32(ch, &peer->caps, error) ||
	    !migram_channel_get_be32(ch, &peer->channels, error) ||
	    !migram_channel_get_be32(ch, &peer->compression, error) ||
	    !migram_channel_get_be32(ch, &peer->page_size, error))
		return read_failed(error, at, "reading the fixed fields");
	if (!valid_role(peer->role))
		return bad(error, at + 16, "unknown role %#x", peer->role);
	at = migram_channel_read_offset(ch);
	if (!migram_channel_get_be32(ch, &n, error))
		return read_failed(error, at, "reading the block count");
	if (n != MIGRAM_HANDSHAKE_NO_BLOCKS && n > MIGRAM_HANDSHAKE_MAX_BLOCKS)
		return bad(error, at, "%u blocks, at most %u", n,
			   MIGRAM_HANDSHAKE_MAX_BLOCKS);
	peer->peer_blocks = n;
	if (n == MIGRAM_HANDSHAKE_NO_BLOCKS)
		return true;
	return read_blocks(ch, n, local->list, s, m, error);
}

/* Data channels a hello announces: channels counts the main one too. */
static uint32_t data_channels(const MigramHandshake *hs)
{
	return hs->channels ? hs->channels - 1 : 0;
}

static const char *on_off(uint32_t caps, uint32_t bit)
{
	return caps & bit ? "on" : "off";
}

/*
 * The fields both sides must agree on (the blocks were compared on read),
 * worded the same on both ends: the source's value first.
 */
static void compare(const MigramHandshake *l, const MigramHandshake *p,
		    uint32_t role, const Sides *s, GError **m)
{
	static const struct {
		uint32_t bit;
		const char *name;
	} caps[] = { { MIGRAM_HANDSHAKE_CAP_POSTCOPY, "postcopy" },
		     { MIGRAM_HANDSHAKE_CAP_PREEMPT, "preempt" } };
	const MigramHandshake *src = s->us_source ? l : p;
	const MigramHandshake *dst = s->us_source ? p : l;

	if (memcmp(src->migration_id, dst->migration_id, 16) != 0) {
		g_autofree char *a = id_hex(src->migration_id);
		g_autofree char *b = id_hex(dst->migration_id);

		mismatch(m, "migration id differs: source %s, destination %s",
			 a, b);
	}
	for (size_t i = 0; i < G_N_ELEMENTS(caps); i++)
		if ((src->caps ^ dst->caps) & caps[i].bit)
			mismatch(m, "%s differs: source %s, destination %s",
				 caps[i].name, on_off(src->caps, caps[i].bit),
				 on_off(dst->caps, caps[i].bit));
	if (src->caps != dst->caps)
		mismatch(m,
			 "capability flags differ: source %#x, destination %#x",
			 src->caps, dst->caps);
	if (src->channels != dst->channels)
		mismatch(m,
			 "channels differ: source %u (%u data), destination "
			 "%u (%u data)",
			 src->channels, data_channels(src), dst->channels,
			 data_channels(dst));
	/* a data channel's number must be below the agreed count */
	if (role >= MIGRAM_HANDSHAKE_DATA &&
	    role - MIGRAM_HANDSHAKE_DATA >= data_channels(src))
		mismatch(m, "data channel %u, but %u data channels agreed",
			 role - MIGRAM_HANDSHAKE_DATA, data_channels(src));
	if (src->compression != dst->compression)
		mismatch(m, "compression differs: source %u, destination %u",
			 src->compression, dst->compression);
	if (src->page_size != dst->page_size)
		mismatch(m, "page size differs: source %u, destination %u",
			 src->page_size, dst->page_size);
}

static bool finish(GError *m, GError **error)
{
	if (m) {
		g_propagate_error(error, m);
		return false;
	}
	return true;
}

MIGRAM_EXPORT bool migram_handshake_connect(MigramChannel *ch,
					    const MigramHandshake *local,
					    MigramHandshake *peer,
					    GError **error)
{
	static const Sides s = { "source", "destination", true };
	MigramHandshake p;
	GError *m = NULL;

	g_return_val_if_fail(ch && local, false);

	put_hello(ch, local, local->role);
	if (!migram_channel_flush(ch, error)) {
		g_prefix_error(error, "handshake: sending the hello: ");
		return false;
	}
	if (!read_hello(ch, local, &s, &p, &m, error)) {
		g_clear_error(&m);
		g_prefix_error(error, "the destination's answer: ");
		return false;
	}
	if (!m && p.role != local->role) {
		char rb[16], pb[16];

		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "handshake: the destination answered a %s "
			    "connection as %s",
			    migram_handshake_role_name(local->role, rb),
			    migram_handshake_role_name(p.role, pb));
		return false;
	}
	if (!m)
		compare(local, &p, local->role, &s, &m);
	if (peer)
		*peer = p;
	return finish(m, error);
}

MIGRAM_EXPORT bool migram_handshake_accept(MigramChannel *ch,
					   MigramHandshake *local,
					   MigramHandshake *peer,
					   GError **error)
{
	static const Sides s = { "destination", "source", false };
	MigramHandshake p;
	GError *m = NULL;

	g_return_val_if_fail(ch && local && peer, false);

	if (!read_hello(ch, local, &s, &p, &m, error)) {
		g_clear_error(&m);
		return false;
	}
	/* Connections come in any order: the first hello, whatever its
	 * role, names the migration. */
	if (!m && id_zero(local->migration_id))
		memcpy(local->migration_id, p.migration_id, 16);
	if (!m)
		compare(local, &p, p.role, &s, &m);
	/* Answer even on a mismatch: the source fails with the same words. */
	put_hello(ch, local, p.role);
	if (!migram_channel_flush(ch, error)) {
		g_clear_error(&m);
		g_prefix_error(error, "handshake: sending the answer: ");
		return false;
	}
	*peer = p;
	return finish(m, error);
}

/*
 * The hello exchange is lockstep (the source sends nothing after its hello
 * until the answer came), so a temporary channel never reads past it; a
 * peer that sent more anyway is refused, since those bytes would be lost
 * with the temporary channel.
 */
static bool no_read_ahead(MigramChannel *ch, int fd, const char *whose,
			  GError **error)
{
	uint64_t extra = migram_channel_bytes_received(ch) -
			 migram_channel_read_offset(ch);

	if (!extra)
		return true;
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
		    "handshake on fd %d: %" G_GUINT64_FORMAT " bytes after "
		    "the %s hello arrived before the answer",
		    fd, extra, whose);
	return false;
}

MIGRAM_EXPORT bool migram_handshake_connect_fd(int fd,
					       const MigramHandshake *local,
					       MigramHandshake *peer,
					       GError **error)
{
	g_autoptr(MigramChannel) ch = NULL;

	g_return_val_if_fail(fd >= 0 && local, false);

	ch = migram_channel_new(fd, false);
	return migram_handshake_connect(ch, local, peer, error) &&
	       no_read_ahead(ch, fd, "destination's", error);
}

MIGRAM_EXPORT bool migram_handshake_accept_fd(int fd, MigramHandshake *local,
					      MigramHandshake *peer,
					      GError **error)
{
	g_autoptr(MigramChannel) ch = NULL;

	g_return_val_if_fail(fd >= 0 && local && peer, false);

	ch = migram_channel_new(fd, false);
	return migram_handshake_accept(ch, local, peer, error) &&
	       no_read_ahead(ch, fd, "source's", error);
}
