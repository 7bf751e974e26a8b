/* SPDX-License-Identifier: MIT */
/* The verification-stream fuzz harness: see verify-harness.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/migram.h>
#include <migram/verify.h>

#include "verify-harness.h"

#define PAGE MIGRAM_TARGET_PAGE_SIZE

struct VerifyHarness {
	MigramRamList *list;
	int fd; /* a memfd the input is written to */
};

static const struct {
	const char *name;
	uint64_t pages;
} blocks[] = { { "ram0", 4 }, { "ram1", 2 } };

VerifyHarness *verify_harness_new(void)
{
	VerifyHarness *h = g_new0(VerifyHarness, 1);

	h->list = migram_ram_list_new();
	for (size_t i = 0; i < G_N_ELEMENTS(blocks); i++) {
		MigramRamBlockConfig c = {
			.idstr = blocks[i].name,
			.used_length = blocks[i].pages * PAGE,
		};
		MigramRamBlock *b = migram_ram_list_add(h->list, &c, NULL);
		guint8 *m;

		g_assert(b);
		m = migram_ram_block_host(b);
		for (uint64_t k = 0; k < c.used_length; k++)
			m[k] = (guint8)(k / PAGE * 31 + i);
	}
	h->fd = memfd_create("fuzz-verify", MFD_CLOEXEC);
	g_assert(h->fd >= 0);
	return h;
}

void verify_harness_free(VerifyHarness *h)
{
	migram_ram_list_free(h->list);
	close(h->fd);
	g_free(h);
}

bool verify_harness_run(VerifyHarness *h, const uint8_t *data, size_t size)
{
	g_autoptr(GError) error = NULL;
	MigramVerifyResult res;
	MigramChannel *ch;
	bool ok;

	g_assert(ftruncate(h->fd, 0) == 0);
	g_assert(pwrite(h->fd, data, size, 0) == (ssize_t)size);
	g_assert(lseek(h->fd, 0, SEEK_SET) == 0);
	ch = migram_channel_new(dup(h->fd), true);
	ok = migram_verify_compare(h->list, ch, NULL, NULL, &res, &error);
	migram_channel_free(ch);
	if (!ok) {
		g_assert(error && error->domain == MIGRAM_ERROR);
		g_assert(strstr(error->message, "verify stream byte"));
		return false;
	}
	g_assert(!error);
	g_assert(res.pages + res.skipped <= 6 && res.blocks <= 2);
	g_assert(res.differing <= res.pages);
	if (res.diff == MIGRAM_VERIFY_PAGE)
		g_assert(res.offset < 4 * PAGE && res.offset % PAGE == 0);
	g_free(migram_verify_result_describe(&res));
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

GByteArray *verify_harness_seed(VerifyHarness *h, int n)
{
	GByteArray *a;

	if (n < 0 || n >= VERIFY_SEEDS)
		return NULL;
	a = g_byte_array_new();
	put32(a, MIGRAM_VERIFY_MAGIC);
	put32(a, MIGRAM_VERIFY_VERSION);
	put32(a, PAGE);
	urcu_memb_read_lock();
	for (size_t i = 0; i < G_N_ELEMENTS(blocks); i++) {
		MigramRamBlock *b = migram_ram_list_find(h->list,
							 blocks[i].name);
		const guint8 *m = migram_ram_block_host(b);

		if (n == 1 && i == 1)
			break; /* ram1 missing */
		putstr(a, blocks[i].name);
		put64(a, (blocks[i].pages + (n == 2)) * PAGE); /* 2: size */
		for (uint64_t p = 0; p < blocks[i].pages + (n == 2); p++)
			put64(a, p < blocks[i].pages && !(n == 3 && p == 1)
					 ? migram_verify_page_hash(m + p * PAGE,
								   PAGE)
					 : p); /* 3: page 1 differs */
	}
	urcu_memb_read_unlock();
	putstr(a, "");
	return a;
}
