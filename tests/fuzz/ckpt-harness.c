/* SPDX-License-Identifier: MIT */
/* The standby's checkpoint reader under hostile input; ckpt-harness.h. */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <migram/checkpoint.h>
#include <migram/migram.h>

#include "checkpoint-internal.h"
#include "ckpt-harness.h"

#define NB 2
static const char *const names[NB] = { "pc.ram", "vga" };
static const uint64_t npages[NB] = { 16, 8 };

bool ckpt_fuzz_one(const uint8_t *data, size_t size, unsigned *applied,
		   GError **error)
{
	MigramRamList *list = migram_ram_list_new();
	uint8_t *host[NB], *good[NB];
	for (int i = 0; i < NB; i++) {
		MigramRamBlockConfig c = { .idstr = names[i],
					   .used_length = npages[i] * 4096,
					   .backend = MIGRAM_RAM_BACKEND_ANON };
		MigramRamBlock *b = migram_ram_list_add(list, &c, NULL);
		g_assert(b);
		host[i] = migram_ram_block_host(b);
		good[i] = g_malloc0(npages[i] * 4096);
	}
	int fd = memfd_create("ckpt-fuzz", MFD_CLOEXEC);
	g_assert(fd >= 0);
	if (size && write(fd, data, size) != (ssize_t)size)
		g_error("ckpt-fuzz: write to memfd failed");
	g_assert(lseek(fd, 0, SEEK_SET) == 0);
	unsigned n = 0;
	bool closed = false;
	GBytes *good_dev = NULL; /* the device state of the last applied */
	MigramCheckpointReceiver *r = migram_checkpoint_receiver_new(list, fd,
								     -1, error);
	while (r && !closed) {
		MigramCheckpointStats st;
		if (!migram_checkpoint_receiver_next(r, &st, &closed, error))
			break;
		if (closed)
			break;
		g_assert_cmpuint(st.epoch, ==, n);
		n++;
		for (int i = 0; i < NB; i++)
			memcpy(good[i], host[i], npages[i] * 4096);
		if (good_dev)
			g_bytes_unref(good_dev);
		good_dev = migram_checkpoint_receiver_device_state(r);
	}
	if (!closed)
		g_assert(error == NULL ||
			 (*error && (*error)->domain == MIGRAM_ERROR));
	/* Never a half-applied epoch. */
	for (int i = 0; i < NB; i++) {
		g_assert(memcmp(good[i], host[i], npages[i] * 4096) == 0);
		g_free(good[i]);
	}
	/* Nor a device state from an epoch that was not applied. */
	GBytes *dev = r ? migram_checkpoint_receiver_device_state(r) : NULL;
	g_assert((dev == NULL) == (good_dev == NULL));
	g_assert(!dev || g_bytes_equal(dev, good_dev));
	if (dev)
		g_bytes_unref(dev);
	if (good_dev)
		g_bytes_unref(good_dev);
	uint64_t e = 0;
	g_assert(!r || migram_checkpoint_receiver_epoch(r, &e) == (n > 0));
	g_assert(n == 0 || e == n - 1);
	migram_checkpoint_receiver_free(r);
	close(fd);
	migram_ram_list_free(list);
	if (applied)
		*applied = n;
	return closed;
}

static void put_rec(GByteArray *b, uint32_t tag, uint32_t blk, uint64_t x,
		    uint64_t y, uint64_t *sum)
{
	uint8_t r[CK_REC_LEN];
	ck_rec_put(r, &(CkRecord){ .tag = tag, .block = blk, .a = x, .b = y });
	if (sum)
		*sum = snap_hash_bytes(*sum, r, CK_REC_LEN);
	g_byte_array_append(b, r, CK_REC_LEN);
}

static void put_pages(GByteArray *b, uint32_t blk, uint64_t first, uint64_t n,
		      uint8_t fill, uint64_t *sum, uint64_t *count)
{
	put_rec(b, CK_TAG_PAGE, blk, first, n, sum);
	uint8_t *d = g_malloc(n * 4096);
	for (uint64_t i = 0; i < n * 4096; i++)
		d[i] = (uint8_t)(fill + i * 7);
	*sum = snap_hash_bytes(*sum, d, n * 4096);
	g_byte_array_append(b, d, (guint)(n * 4096));
	g_free(d);
	*count += n;
}

uint8_t *ckpt_fuzz_sample(size_t *size, size_t *epoch1_at)
{
	GByteArray *b = g_byte_array_new();
	uint8_t h[16];
	memcpy(h, "MIGRAMCK", 8);
	snap_put32(h + 8, CK_VERSION);
	snap_put32(h + 12, NB);
	g_byte_array_append(b, h, 16);
	for (int i = 0; i < NB; i++) {
		snap_put64(h, npages[i] * 4096);
		h[8] = (uint8_t)strlen(names[i]);
		h[9] = 0;
		g_byte_array_append(b, h, 10);
		g_byte_array_append(b, (const uint8_t *)names[i],
				    (guint)strlen(names[i]));
	}
	uint64_t sum = CK_SEED, count = 0;
	put_rec(b, CK_TAG_EPOCH, 0, 0, 0, &sum);
	put_pages(b, 0, 0, 3, 0x11, &sum, &count);
	put_pages(b, 1, 7, 1, 0x22, &sum, &count);
	/* Epoch 0 carries a device state (40 bytes). */
	static const char dev[41] = "vcpu0 rip=7c00 rsp=7000 cr0=11 --------";
	put_rec(b, CK_TAG_DEVS, 0, 40, 0, &sum);
	sum = snap_hash_bytes(sum, dev, 40);
	g_byte_array_append(b, (const uint8_t *)dev, 40);
	put_rec(b, CK_TAG_DONE, 0, count, sum, NULL);
	*epoch1_at = b->len;
	sum = CK_SEED;
	count = 0;
	put_rec(b, CK_TAG_EPOCH, 0, 1, 0, &sum);
	put_pages(b, 0, 1, 1, 0x33, &sum, &count);
	put_rec(b, CK_TAG_DONE, 0, count, sum, NULL);
	*size = b->len;
	return g_byte_array_free(b, FALSE);
}
