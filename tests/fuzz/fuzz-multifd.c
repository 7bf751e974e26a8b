/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: a data channel (multifd) fed hostile bytes.
 *
 * Each input is what one data connection carries: a 64-byte initial
 * packet, then packets (header, offsets, payloads).  The initial packet is
 * checked with migram_multifd_parse_init() as the receiver does for 4
 * channels; the rest is read by the receiver's own reading code
 * (migram_multifd_recv_drain_fd(), the loop each channel thread runs)
 * from a memfd, into two blocks ("pc.ram", 16 pages, and "small", 2
 * pages) fenced by PROT_NONE pages.  A crash, a write into a fence (the
 * kernel's readv() reports EFAULT: an I/O error, which reading a memfd
 * never gives otherwise), or a failure without a
 * MIGRAM_ERROR naming the data connection or channel is a finding.
 * zstd payloads (flag 0x4) go through the decompression into place; the
 * corpus has a compressed packet.
 *
 * With -DMULTIFD_CORPUS=1 the file instead builds a program writing seed
 * inputs into the directory it is given (tests/fuzz/build.sh).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <migram/bitmap.h>
#include <migram/migram.h>

#include "multifd.h"

#define PG MIGRAM_MULTIFD_PAGE

#ifndef MULTIFD_CORPUS

/* A block between two PROT_NONE pages. */
static uint8_t *fenced(size_t pages)
{
	uint8_t *m = mmap(NULL, (pages + 2) * PG, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (m == MAP_FAILED)
		abort();
	mprotect(m, PG, PROT_NONE);
	mprotect(m + (pages + 1) * PG, PG, PROT_NONE);
	return m + PG;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The fuzz target is a program, not library code: static state is fine. */
static MigramMultifdBlock blocks[2];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	blocks[0] = (MigramMultifdBlock){ "pc.ram", fenced(16), 16 * PG,
					  migram_bitmap_new(16) };
	blocks[1] = (MigramMultifdBlock){ "small", fenced(2), 2 * PG,
					  migram_bitmap_new(2) };
	return 0;
}

static void check_error(const GError *error)
{
	if (!error || error->domain != MIGRAM_ERROR ||
	    !strstr(error->message, "data c") ||
	    error->code == MIGRAM_ERROR_IO) {
		fprintf(stderr, "multifd fuzz: bad failure: %s\n",
			error ? error->message : "(no error)");
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autoptr(GError) error = NULL;
	MigramMultifdIds ids = { { 0 } };
	uint64_t syncs = 0;
	uint8_t id;
	int fd;

	if (size < MIGRAM_MULTIFD_INIT_SIZE)
		return 0;
	if (!migram_multifd_parse_init(data, 4, NULL, &ids, "data connection 0",
				       &id, &error)) {
		check_error(error);
		return 0;
	}
	fd = memfd_create("multifd-fuzz", 0);
	if (fd < 0)
		abort();
	data += MIGRAM_MULTIFD_INIT_SIZE;
	size -= MIGRAM_MULTIFD_INIT_SIZE;
	if (size && write(fd, data, size) != (ssize_t)size)
		abort();
	lseek(fd, 0, SEEK_SET);
	if (!migram_multifd_recv_drain_fd(blocks, 2, fd, &syncs, &error))
		check_error(error);
	else if (error)
		abort();
	close(fd);
	return 0;
}

#else /* the seed corpus */
#include <zstd.h>

static void put(const char *dir, const char *name, const uint8_t *b, size_t n)
{
	char *path = g_strdup_printf("%s/%s", dir, name);

	if (!g_file_set_contents(path, (const char *)b, (gssize)n, NULL))
		abort();
	g_free(path);
}

int main(int argc, char **argv)
{
	static uint8_t buf[4 * (MIGRAM_MULTIFD_HDR_SIZE + 8 * 128 + 4 * PG) +
			   MIGRAM_MULTIFD_INIT_SIZE];
	uint8_t uuid[16] = { 1 };
	uint64_t offs[4] = { 0, PG, 3 * PG, 5 * PG };
	MigramMultifdHdr h = { .pages_alloc = 128 };
	size_t n;

	if (argc != 2)
		return 2;
	g_mkdir_with_parents(argv[1], 0755);
	migram_multifd_encode_init(buf, uuid, 0);
	n = MIGRAM_MULTIFD_INIT_SIZE;
	put(argv[1], "init-only", buf, n);
	/* two pages and two zero pages of pc.ram, then a SYNC */
	g_strlcpy(h.block, "pc.ram", sizeof(h.block));
	h.normal = 2;
	h.zero = 2;
	h.next_packet_size = 2 * PG;
	h.packet_num = 0;
	n += migram_multifd_encode_hdr(buf + n, &h, offs);
	memset(buf + n, 0x5a, 2 * PG);
	n += 2 * PG;
	memset(&h, 0, sizeof(h));
	h.flags = MIGRAM_MULTIFD_FLAG_SYNC;
	h.pages_alloc = 128;
	h.packet_num = 1;
	n += migram_multifd_encode_hdr(buf + n, &h, offs);
	put(argv[1], "pages-sync", buf, n);
	/* one page of "small" */
	memset(&h, 0, sizeof(h));
	g_strlcpy(h.block, "small", sizeof(h.block));
	h.pages_alloc = 128;
	h.normal = 1;
	h.next_packet_size = PG;
	h.packet_num = 2;
	n = MIGRAM_MULTIFD_INIT_SIZE;
	n += migram_multifd_encode_hdr(buf + n, &h, offs + 1);
	memset(buf + n, 0x33, PG);
	n += PG;
	put(argv[1], "small", buf, n);
	/* two zstd-compressed pages of pc.ram (one frame, as QEMU 7.2 would
	 * flush it), then a SYNC */
	memset(&h, 0, sizeof(h));
	g_strlcpy(h.block, "pc.ram", sizeof(h.block));
	h.flags = MIGRAM_MULTIFD_FLAG_ZSTD;
	h.pages_alloc = 128;
	h.normal = 2;
	h.packet_num = 3;
	{
		static uint8_t pages[2 * PG];
		size_t hl = MIGRAM_MULTIFD_HDR_SIZE + 8 * 128, z;

		for (size_t i = 0; i < sizeof(pages); i++)
			pages[i] = (uint8_t)(i % 61);
		n = MIGRAM_MULTIFD_INIT_SIZE;
		z = ZSTD_compress(buf + n + hl, 2 * PG, pages, sizeof(pages),
				  1);
		if (ZSTD_isError(z))
			abort();
		h.next_packet_size = (uint32_t)z;
		n += migram_multifd_encode_hdr(buf + n, &h, offs);
		n += z;
		memset(&h, 0, sizeof(h));
		h.flags = MIGRAM_MULTIFD_FLAG_SYNC;
		h.pages_alloc = 128;
		h.packet_num = 4;
		n += migram_multifd_encode_hdr(buf + n, &h, offs);
		put(argv[1], "zstd-sync", buf, n);
	}
	return 0;
}

#endif
