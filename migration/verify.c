/* SPDX-License-Identifier: MIT */
/*
 * Verification after a migration (include/migram/verify.h): the destination
 * sends a hash per page of every migratable block, the source compares.
 *
 * The source's reader trusts nothing: a block's hashes are read only when
 * the peer's name and length match a local block, so the number of hashes
 * read is bounded by local memory; a block sent twice is a protocol error
 * (the set of names seen is the only allocation, one per local block).
 */
#include <stdarg.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "migram/verify.h"

#define PAGE MIGRAM_TARGET_PAGE_SIZE

MIGRAM_EXPORT uint64_t migram_verify_page_hash(const void *page, size_t len)
{
	const guint8 *p = page;
	uint64_t h = 0x84222325cbf29ce4ULL;
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		h = (h ^ w) * 0x100000001b3ULL;
	}
	for (; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

static uint64_t block_pages(uint64_t len)
{
	return (len + PAGE - 1) / PAGE;
}

static size_t page_len(uint64_t len, uint64_t p)
{
	uint64_t rest = len - p * PAGE;

	return rest < PAGE ? (size_t)rest : PAGE;
}

MIGRAM_EXPORT bool migram_verify_send(MigramRamList *list, MigramChannel *ch,
				      GError **error)
{
	g_return_val_if_fail(list && ch, false);

	migram_channel_put_be32(ch, MIGRAM_VERIFY_MAGIC);
	migram_channel_put_be32(ch, MIGRAM_VERIFY_VERSION);
	migram_channel_put_be32(ch, PAGE);
	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next_migratable(list, NULL); b;
	     b = migram_ram_list_next_migratable(list, b)) {
		uint64_t len = migram_ram_block_used_length(b);
		const guint8 *h = migram_ram_block_host(b);

		migram_channel_put_counted_string(ch,
						  migram_ram_block_idstr(b));
		migram_channel_put_be64(ch, len);
		for (uint64_t p = 0; p < block_pages(len); p++)
			migram_channel_put_be64(
				ch, migram_verify_page_hash(h + p * PAGE,
							    page_len(len, p)));
	}
	urcu_memb_read_unlock();
	migram_channel_put_counted_string(ch, "");
	if (!migram_channel_flush(ch, error)) {
		g_prefix_error(error, "verify: sending the page hashes: ");
		return false;
	}
	return true;
}

/* Prefix a read error with where and what in the verification stream. */
static bool read_failed(GError **error, uint64_t at, const char *fmt, ...)
{
	g_autofree char *what = NULL;
	va_list ap;

	va_start(ap, fmt);
	what = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_prefix_error(error,
		       "verify stream byte %" G_GUINT64_FORMAT ": reading %s: ",
		       at, what);
	return false;
}

static bool read_header(MigramChannel *ch, GError **error)
{
	static const char *const field[3] = { "magic", "version", "page size" };
	static const uint32_t want[3] = { MIGRAM_VERIFY_MAGIC,
					  MIGRAM_VERIFY_VERSION, PAGE };

	for (int i = 0; i < 3; i++) {
		uint64_t at = migram_channel_read_offset(ch);
		uint32_t v;

		if (!migram_channel_get_be32(ch, &v, error))
			return read_failed(error, at, "the %s", field[i]);
		if (v != want[i]) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
				    "verify stream byte %" G_GUINT64_FORMAT
				    ": %s %#x, expected %#x",
				    at, field[i], v, want[i]);
			return false;
		}
	}
	return true;
}

/* Compare one block's hashes (its geometry already matched). */
static bool compare_block(MigramRamBlock *b, MigramChannel *ch,
			  MigramVerifySkipFn skip, void *opaque,
			  MigramVerifyResult *res, GError **error)
{
	const char *name = migram_ram_block_idstr(b);
	uint64_t len = migram_ram_block_used_length(b);
	const guint8 *h = migram_ram_block_host(b);

	for (uint64_t p = 0; p < block_pages(len); p++) {
		uint64_t at = migram_channel_read_offset(ch), want;

		if (!migram_channel_get_be64(ch, &want, error))
			return read_failed(error, at,
					   "block '%s' page %" G_GUINT64_FORMAT
					   "'s hash",
					   name, p);
		if (skip && skip(name, p * PAGE, opaque)) {
			res->skipped++;
			continue;
		}
		res->pages++;
		if (want ==
		    migram_verify_page_hash(h + p * PAGE, page_len(len, p)))
			continue;
		if (res->differing++ == 0) {
			res->diff = MIGRAM_VERIFY_PAGE;
			g_strlcpy(res->block, name, sizeof(res->block));
			res->offset = p * PAGE;
		}
	}
	res->blocks++;
	return true;
}

static void first_diff(MigramVerifyResult *res, MigramVerifyDiff diff,
		       const char *name)
{
	if (res->diff != MIGRAM_VERIFY_EQUAL)
		return;
	res->diff = diff;
	g_strlcpy(res->block, name, sizeof(res->block));
}

/* One block record; *done when the end marker or a stop was reached. */
static bool read_block(MigramRamList *list, MigramChannel *ch, GHashTable *seen,
		       MigramVerifySkipFn skip, void *opaque,
		       MigramVerifyResult *res, bool *done, GError **error)
{
	char name[256];
	uint64_t at = migram_channel_read_offset(ch), len;
	MigramRamBlock *b;
	bool ok;

	if (!migram_channel_get_counted_string(ch, name, error))
		return read_failed(error, at, "a block name");
	if (!name[0]) {
		*done = true;
		return true;
	}
	if (g_hash_table_contains(seen, name)) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "verify stream byte %" G_GUINT64_FORMAT
			    ": block '%s' sent twice",
			    at, name);
		return false;
	}
	at = migram_channel_read_offset(ch);
	if (!migram_channel_get_be64(ch, &len, error))
		return read_failed(error, at, "block '%s''s length", name);
	urcu_memb_read_lock();
	b = migram_ram_list_find(list, name);
	if (!b || !(migram_ram_block_flags(b) & MIGRAM_RAM_MIGRATABLE)) {
		first_diff(res, MIGRAM_VERIFY_MISSING_HERE, name);
		res->peer_length = len;
		*done = true;
		urcu_memb_read_unlock();
		return true;
	}
	if (migram_ram_block_used_length(b) != len) {
		first_diff(res, MIGRAM_VERIFY_SIZE, name);
		res->local_length = migram_ram_block_used_length(b);
		res->peer_length = len;
		*done = true;
		urcu_memb_read_unlock();
		return true;
	}
	g_hash_table_add(seen, g_strdup(name));
	ok = compare_block(b, ch, skip, opaque, res, error);
	urcu_memb_read_unlock();
	return ok;
}

MIGRAM_EXPORT bool migram_verify_compare(MigramRamList *list, MigramChannel *ch,
					 MigramVerifySkipFn skip, void *opaque,
					 MigramVerifyResult *result,
					 GError **error)
{
	g_autoptr(GHashTable) seen = NULL;
	MigramVerifyResult res = { 0 };
	bool done = false, stopped;

	g_return_val_if_fail(list && ch && result, false);

	if (!read_header(ch, error))
		return false;
	seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	while (!done)
		if (!read_block(list, ch, seen, skip, opaque, &res, &done,
				error))
			return false;
	/* Every local migratable block must have been in the stream. */
	stopped = res.diff == MIGRAM_VERIFY_MISSING_HERE ||
		  res.diff == MIGRAM_VERIFY_SIZE;
	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next_migratable(list, NULL);
	     b && !stopped; b = migram_ram_list_next_migratable(list, b))
		if (!g_hash_table_contains(seen, migram_ram_block_idstr(b))) {
			first_diff(&res, MIGRAM_VERIFY_MISSING_THERE,
				   migram_ram_block_idstr(b));
			break;
		}
	urcu_memb_read_unlock();
	*result = res;
	return true;
}

MIGRAM_EXPORT char *migram_verify_result_describe(const MigramVerifyResult *r)
{
	g_return_val_if_fail(r, NULL);

	switch (r->diff) {
	case MIGRAM_VERIFY_EQUAL:
		return g_strdup_printf("%" G_GUINT64_FORMAT
				       " blocks, %" G_GUINT64_FORMAT
				       " pages equal (per-page hashes)%s",
				       r->blocks, r->pages,
				       r->skipped ? "; some pages skipped"
						  : "");
	case MIGRAM_VERIFY_PAGE:
		return g_strdup_printf("block '%s' page %" G_GUINT64_FORMAT
				       " (offset %#" G_GINT64_MODIFIER
				       "x) differs (%" G_GUINT64_FORMAT
				       " pages differ)",
				       r->block, r->offset / PAGE, r->offset,
				       r->differing);
	case MIGRAM_VERIFY_MISSING_HERE:
		return g_strdup_printf("block '%s' exists only on the peer",
				       r->block);
	case MIGRAM_VERIFY_MISSING_THERE:
		return g_strdup_printf("block '%s' is missing on the peer",
				       r->block);
	case MIGRAM_VERIFY_SIZE:
		return g_strdup_printf("block '%s' is %#" G_GINT64_MODIFIER
				       "x bytes here, %#" G_GINT64_MODIFIER
				       "x on the peer",
				       r->block, r->local_length,
				       r->peer_length);
	}
	return g_strdup("unknown verification result");
}
