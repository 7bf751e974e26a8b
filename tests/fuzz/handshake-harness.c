/* SPDX-License-Identifier: MIT */
/* The handshake fuzz harness: see handshake-harness.h. */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/handshake.h>
#include <migram/migram.h>

#include "handshake-harness.h"

#define PAGE MIGRAM_TARGET_PAGE_SIZE

struct HsHarness {
	MigramRamList *list;
	MigramHandshake local;
};

static const struct {
	const char *name;
	uint64_t pages;
} blocks[] = { { "pc.ram", 4 }, { "vga", 2 } };

static const uint8_t fixed_id[16] = { 1, 2,  3,  4,  5,  6,  7,  8,
				      9, 10, 11, 12, 13, 14, 15, 16 };

HsHarness *hs_harness_new(void)
{
	HsHarness *h = g_new0(HsHarness, 1);

	h->list = migram_ram_list_new();
	for (size_t i = 0; i < G_N_ELEMENTS(blocks); i++) {
		MigramRamBlockConfig c = {
			.idstr = blocks[i].name,
			.used_length = blocks[i].pages * PAGE,
		};

		g_assert(migram_ram_list_add(h->list, &c, NULL));
	}
	migram_handshake_init(&h->local);
	h->local.list = h->list;
	return h;
}

void hs_harness_free(HsHarness *h)
{
	migram_ram_list_free(h->list);
	g_free(h);
}

bool hs_harness_run(HsHarness *h, const uint8_t *data, size_t size)
{
	g_autoptr(GError) error = NULL;
	MigramHandshake local = h->local, peer;
	MigramChannel *ch;
	int sp[2];
	bool ok;

	/* Inputs larger than a socket buffer are cut: a hello is small. */
	if (size > 64 * 1024)
		size = 64 * 1024;
	memcpy(local.migration_id, fixed_id, 16);
	g_assert(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	g_assert(setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &(int){ 256 * 1024 },
			    sizeof(int)) == 0);
	g_assert(write(sp[0], data, size) == (ssize_t)size);
	shutdown(sp[0], SHUT_WR);
	ch = migram_channel_new(sp[1], true);
	ok = migram_handshake_accept(ch, &local, &peer, &error);
	migram_channel_free(ch);
	close(sp[0]);
	if (!ok) {
		g_assert(error && error->domain == MIGRAM_ERROR);
		g_assert(g_str_has_prefix(error->message, "handshake"));
		return false;
	}
	g_assert(!error);
	g_assert(peer.role == MIGRAM_HANDSHAKE_MAIN ||
		 peer.role == MIGRAM_HANDSHAKE_RETURN_PATH ||
		 peer.role == MIGRAM_HANDSHAKE_PREEMPT ||
		 (peer.role >= MIGRAM_HANDSHAKE_DATA &&
		  peer.role < MIGRAM_HANDSHAKE_DATA + 65536));
	g_assert(peer.peer_blocks == G_N_ELEMENTS(blocks) ||
		 peer.peer_blocks == MIGRAM_HANDSHAKE_NO_BLOCKS);
	return true;
}

static void put32(GByteArray *a, uint32_t v)
{
	v = GUINT32_TO_BE(v);
	g_byte_array_append(a, (const guint8 *)&v, 4);
}

static void put64(GByteArray *a, uint64_t v)
{
	v = GUINT64_TO_BE(v);
	g_byte_array_append(a, (const guint8 *)&v, 8);
}

static void putstr(GByteArray *a, const char *s)
{
	guint8 n = (guint8)strlen(s);

	g_byte_array_append(a, &n, 1);
	g_byte_array_append(a, (const guint8 *)s, n);
}

GByteArray *hs_harness_seed(HsHarness *h, int n)
{
	static const uint32_t roles[HS_SEEDS] = { MIGRAM_HANDSHAKE_MAIN,
						  MIGRAM_HANDSHAKE_PREEMPT,
						  MIGRAM_HANDSHAKE_DATA + 1,
						  MIGRAM_HANDSHAKE_MAIN };
	GByteArray *a;

	(void)h;
	if (n < 0 || n >= HS_SEEDS)
		return NULL;
	a = g_byte_array_new();
	put32(a, MIGRAM_HANDSHAKE_MAGIC);
	put32(a, MIGRAM_HANDSHAKE_VERSION);
	g_byte_array_append(a, fixed_id, 16);
	put32(a, roles[n]);
	put32(a, n == 3 ? MIGRAM_HANDSHAKE_CAP_POSTCOPY : 0);
	put32(a, 1);
	put32(a, 0);
	put32(a, PAGE);
	if (n == 1) { /* no block list */
		put32(a, MIGRAM_HANDSHAKE_NO_BLOCKS);
		return a;
	}
	put32(a, G_N_ELEMENTS(blocks));
	for (size_t i = 0; i < G_N_ELEMENTS(blocks); i++) {
		putstr(a, blocks[i].name);
		put64(a, blocks[i].pages * PAGE);
	}
	return a;
}
