/* SPDX-License-Identifier: MIT */
/*
 * zstd payloads on the data channels: transfers with 1, 2 and 4 channels
 * of random and of compressible pages, byte for byte over three sections
 * (the per-channel stream carries over packets and sync points); and
 * hostile compressed payloads (a corrupt frame, one that decodes to fewer
 * or more bytes than its pages, unused bytes, a size above the limit):
 * each fails naming channel, packet and offset, and nothing is written
 * outside the pages the packet names.
 */
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <zstd.h>

#include <migram/bitmap.h>
#include <migram/migram.h>

#include "migram-test-util.h"
#include "multifd.h"

#define PAGE MIGRAM_MULTIFD_PAGE
#define NPAGES 512 /* 2 MiB */
/* the hostile packets' block: pages 1 and 2 may be named, 0 and 3 never */
#define FENCED_PAGES 4

typedef struct {
	uint8_t *src, *dst;
	unsigned long *recv;
	MigramMultifdBlock block;
	int snd[4], rcv[4];
	uint8_t uuid[16];
} Fixture;

static void fx_setup(Fixture *f, gconstpointer data)
{
	(void)data;
	f->src = g_malloc0(NPAGES * PAGE);
	f->dst = g_malloc0(NPAGES * PAGE);
	f->recv = migram_bitmap_new(NPAGES);
	f->block = (MigramMultifdBlock){ "pc.ram", f->dst, NPAGES * PAGE,
					 f->recv };
	for (int i = 0; i < 4; i++) {
		int sv[2];

		g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
		f->snd[i] = sv[0];
		f->rcv[i] = sv[1];
	}
	memset(f->uuid, 0x5c, sizeof(f->uuid));
}

static void fx_teardown(Fixture *f, gconstpointer data)
{
	(void)data;
	for (int i = 0; i < 4; i++) {
		close(f->snd[i]);
		close(f->rcv[i]);
	}
	g_free(f->src);
	g_free(f->dst);
	migram_bitmap_free(f->recv);
}

/* Random pages, or compressible ones (a short text repeated with the
 * page number); every 7th page zero. */
static void fill(Fixture *f, uint32_t seed, bool compressible)
{
	GRand *r = g_rand_new_with_seed(seed);

	for (size_t p = 0; p < NPAGES; p++) {
		uint8_t *pg = f->src + p * PAGE;

		if (p % 7 == 0) {
			memset(pg, 0, PAGE);
		} else if (compressible) {
			for (size_t i = 0; i < PAGE; i += 64)
				g_snprintf((char *)pg + i, 64,
					   "page %zu seed %u line %zu .......",
					   p, seed, i / 64);
		} else {
			for (size_t i = 0; i < PAGE; i += 4)
				*(uint32_t *)(pg + i) = g_rand_int(r);
		}
	}
	g_rand_free(r);
}

typedef struct {
	MigramMultifdRecv *r;
	bool ok;
	GError *error;
} SyncJob;

static gpointer sync_thread(gpointer opaque)
{
	SyncJob *j = opaque;

	j->ok = true;
	for (int i = 0; i < 3 && j->ok; i++)
		j->ok = migram_multifd_recv_sync(j->r, &j->error);
	return NULL;
}

typedef struct {
	unsigned int channels;
	bool compressible;
} TransferCase;

static void test_transfer(Fixture *f, gconstpointer data)
{
	const TransferCase *tc = data;
	g_autoptr(GError) error = NULL;
	MigramMultifdSend *s;
	MigramMultifdRecv *r;
	SyncJob job = { 0 };
	GThread *t;
	uint64_t pages, zero, bytes, rp, rz;

	s = migram_multifd_send_new(tc->channels, f->snd, f->uuid, 0, &error);
	g_assert_no_error(error);
	g_assert_true(migram_multifd_send_set_zstd(s, 3, &error));
	r = migram_multifd_recv_new(&f->block, 1, tc->channels, f->rcv, f->uuid,
				    &error);
	g_assert_no_error(error);
	job.r = r;
	t = g_thread_new("sync", sync_thread, &job);
	for (uint32_t k = 1; k <= 3; k++) {
		fill(f, k, tc->compressible);
		for (uint64_t p = 0; p < NPAGES; p++)
			g_assert_true(migram_multifd_send_queue(
				s, "pc.ram", f->src, p * PAGE, &error));
		g_assert_true(migram_multifd_send_sync(s, &error));
	}
	g_thread_join(t);
	g_assert_no_error(job.error);
	g_assert_true(job.ok);
	g_assert_cmpmem(f->dst, NPAGES * PAGE, f->src, NPAGES * PAGE);
	for (size_t p = 0; p < NPAGES; p++)
		g_assert_true(migram_bitmap_test_bit(f->recv, p));
	migram_multifd_send_counts(s, &pages, &zero, &bytes);
	migram_multifd_recv_counts(r, &rp, &rz);
	g_assert_cmpuint(pages + zero, ==, 3 * NPAGES);
	g_assert_cmpuint(rp, ==, pages);
	g_assert_cmpuint(rz, ==, zero);
	g_test_message("%u channels, %s: %" G_GUINT64_FORMAT
		       " payload bytes as %" G_GUINT64_FORMAT " on the wire",
		       tc->channels, tc->compressible ? "text" : "random",
		       pages * PAGE, bytes);
	if (tc->compressible) /* the text compresses at least 4:1 */
		g_assert_cmpuint(bytes, <, pages * PAGE / 4);
	else /* random pages barely grow: headers and zstd framing */
		g_assert_cmpuint(bytes, <, pages * PAGE + 64 * PAGE);
	migram_multifd_send_free(s);
	migram_multifd_recv_free(r);
}

/* ---- hostile compressed payloads ---- */

typedef struct {
	const char *name;
	uint32_t compress_pages; /* pages the frame really holds */
	uint32_t claim_pages;    /* pages the header lists */
	int damage;              /* 0 none, 1 corrupt, 2 trailing, 3 huge */
	const char *expect;
} Hostile;

static const Hostile hostile[] = {
	{ "corrupt-frame", 2, 2, 1, "offset 0x1000: zstd payload" },
	{ "too-short", 1, 2, 0, "offset 0x2000: zstd payload ends early" },
	{ "too-long", 2, 1, 0, "decodes to more bytes" },
	{ "unused-bytes", 1, 1, 2, "after its 1 pages" },
	{ "size-limit", 1, 1, 3, "zstd payload of 1048577 bytes" },
};

static void test_hostile(Fixture *f, gconstpointer data)
{
	const Hostile *t = data;
	size_t hdr_len = MIGRAM_MULTIFD_HDR_SIZE + 8 * 128;
	size_t cap = ZSTD_compressBound(2 * PAGE) + 64;
	uint8_t *pkt = g_malloc0(hdr_len + cap);
	uint8_t src[2 * PAGE];
	uint64_t offs[2] = { PAGE, 2 * PAGE }, syncs = 0;
	MigramMultifdHdr h = { .flags = MIGRAM_MULTIFD_FLAG_ZSTD,
			       .pages_alloc = 128,
			       .normal = t->claim_pages,
			       .packet_num = 9 };
	uint8_t *fenced = f->dst; /* pages 0 and 3 must stay zero */
	MigramMultifdBlock b = { "small", fenced, FENCED_PAGES * PAGE, NULL };
	g_autoptr(GError) error = NULL;
	size_t zlen, len;
	int fd = memfd_create("multifd-zstd-hostile", 0);

	g_assert_cmpint(fd, >=, 0);
	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)(i * 7 + i / 300);
	zlen = ZSTD_compress(pkt + hdr_len, cap, src, t->compress_pages * PAGE,
			     1);
	g_assert_false(ZSTD_isError(zlen));
	if (t->damage == 1) /* inside the first block's data */
		for (size_t i = zlen / 2; i < zlen; i++)
			pkt[hdr_len + i] ^= 0xa5;
	if (t->damage == 2) /* bytes that are no frame at all */
		zlen += 16;
	h.next_packet_size = (uint32_t)zlen;
	if (t->damage == 3)
		h.next_packet_size = MIGRAM_MULTIFD_ZSTD_MAX + 1;
	g_strlcpy(h.block, "small", sizeof(h.block));
	g_assert_cmpuint(migram_multifd_encode_hdr(pkt, &h, offs), ==, hdr_len);
	len = hdr_len + zlen;
	g_assert_cmpint(write(fd, pkt, len), ==, (ssize_t)len);
	g_assert_cmpint(lseek(fd, 0, SEEK_SET), ==, 0);
	g_assert_false(migram_multifd_recv_drain_fd(&b, 1, fd, &syncs, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
	if (!strstr(error->message, t->expect))
		g_error("'%s' lacks '%s'", error->message, t->expect);
	g_assert_nonnull(strstr(error->message, "data channel 0, packet 9"));
	for (size_t i = 0; i < PAGE; i++) {
		g_assert_cmpuint(fenced[i], ==, 0);
		g_assert_cmpuint(fenced[3 * PAGE + i], ==, 0);
	}
	close(fd);
	g_free(pkt);
}

/* A sender with zstd: a bad level is refused at set-up. */
static void test_bad_level(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramMultifdSend *s;

	(void)data;
	s = migram_multifd_send_new(1, f->snd, f->uuid, 0, &error);
	g_assert_no_error(error);
	g_assert_false(migram_multifd_send_set_zstd(s, 1000, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(error->message, "data channel 0"));
	migram_multifd_send_free(s);
}

int main(int argc, char **argv)
{
	static const TransferCase cases[] = {
		{ 1, false }, { 2, false }, { 4, false },
		{ 1, true },  { 2, true },  { 4, true },
	};

	g_test_init(&argc, &argv, NULL);
	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autofree char *path = g_strdup_printf(
			"/migration/multifd-zstd/transfer-%u-%s",
			cases[i].channels,
			cases[i].compressible ? "text" : "random");

		g_test_add(path, Fixture, &cases[i], fx_setup, test_transfer,
			   fx_teardown);
	}
	for (size_t i = 0; i < G_N_ELEMENTS(hostile); i++) {
		g_autofree char *path = g_strdup_printf(
			"/migration/multifd-zstd/hostile/%s", hostile[i].name);

		g_test_add(path, Fixture, &hostile[i], fx_setup, test_hostile,
			   fx_teardown);
	}
	g_test_add("/migration/multifd-zstd/bad-level", Fixture, NULL, fx_setup,
		   test_bad_level, fx_teardown);
	return g_test_run();
}
