/* SPDX-License-Identifier: MIT */
/*
 * The data channels' bytes: the initial packet and the packet header with
 * its page offsets (QEMU's multifd layout; docs/wire-format.md).  Pure
 * functions over buffers; every check a hostile peer could trip is here,
 * so the fuzz target (tests/fuzz/fuzz-multifd.c) reaches all of them.
 */
#include <string.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "multifd.h"

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

void migram_multifd_encode_init(uint8_t *out, const uint8_t uuid[16],
				uint8_t id)
{
	memset(out, 0, MIGRAM_MULTIFD_INIT_SIZE);
	put32(out, MIGRAM_MULTIFD_MAGIC);
	put32(out + 4, MIGRAM_MULTIFD_VERSION);
	memcpy(out + 8, uuid, 16);
	out[24] = id;
}

bool migram_multifd_parse_init(const uint8_t *in, unsigned int nchannels,
			       const uint8_t *uuid, MigramMultifdIds *ids,
			       const char *where, uint8_t *id, GError **error)
{
	uint32_t magic = get32(in), version = get32(in + 4);
	uint8_t i = in[24];

	if (magic != MIGRAM_MULTIFD_MAGIC) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "%s: initial packet magic 0x%08x, expected "
			    "0x%08x",
			    where, magic, MIGRAM_MULTIFD_MAGIC);
		return false;
	}
	if (version != MIGRAM_MULTIFD_VERSION) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "%s: initial packet version %u, expected %u", where,
			    version, MIGRAM_MULTIFD_VERSION);
		return false;
	}
	if (uuid && memcmp(uuid, in + 8, 16) != 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "%s: initial packet names another migration "
			    "(UUID differs)",
			    where);
		return false;
	}
	if (i >= nchannels) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "%s: channel id %u out of range (%u channels)",
			    where, i, nchannels);
		return false;
	}
	if (ids->seen[i / 64] & ((uint64_t)1 << (i % 64))) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "%s: channel id %u announced twice", where, i);
		return false;
	}
	ids->seen[i / 64] |= (uint64_t)1 << (i % 64);
	*id = i;
	return true;
}

size_t migram_multifd_encode_hdr(uint8_t *out, const MigramMultifdHdr *h,
				 const uint64_t *offsets)
{
	uint32_t n = h->normal + h->zero;

	/* the offset array always has pages_alloc entries (QEMU writes the
	 * whole array; the unused tail is zero) */
	memset(out, 0, MIGRAM_MULTIFD_HDR_SIZE + 8 * (size_t)h->pages_alloc);
	put32(out, MIGRAM_MULTIFD_MAGIC);
	put32(out + 4, MIGRAM_MULTIFD_VERSION);
	put32(out + 8, h->flags);
	put32(out + 12, h->pages_alloc);
	put32(out + 16, h->normal);
	put32(out + 20, h->next_packet_size);
	put64(out + 24, h->packet_num);
	put32(out + 32, h->zero);
	/* 36: be32 unused, 40: 3 x be64 unused, 64: the name */
	memcpy(out + 64, h->block,
	       strnlen(h->block, MIGRAM_MULTIFD_NAME_SIZE - 1));
	for (uint32_t i = 0; i < n; i++)
		put64(out + MIGRAM_MULTIFD_HDR_SIZE + 8 * (size_t)i,
		      offsets[i]);
	return MIGRAM_MULTIFD_HDR_SIZE + 8 * (size_t)h->pages_alloc;
}

#define HDR_FAIL(...)                                                          \
	do {                                                                   \
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,        \
			    __VA_ARGS__);                                      \
		return false;                                                  \
	} while (0)

bool migram_multifd_parse_hdr(const uint8_t *in, unsigned int channel,
			      MigramMultifdHdr *h, GError **error)
{
	uint32_t magic = get32(in), version = get32(in + 4);

	h->packet_num = get64(in + 24);
	if (magic != MIGRAM_MULTIFD_MAGIC)
		HDR_FAIL("data channel %u, packet %" G_GUINT64_FORMAT
			 ": magic 0x%08x, expected 0x%08x",
			 channel, h->packet_num, magic, MIGRAM_MULTIFD_MAGIC);
	if (version != MIGRAM_MULTIFD_VERSION)
		HDR_FAIL("data channel %u, packet %" G_GUINT64_FORMAT
			 ": version %u, expected %u",
			 channel, h->packet_num, version,
			 MIGRAM_MULTIFD_VERSION);
	h->flags = get32(in + 8);
	h->pages_alloc = get32(in + 12);
	h->normal = get32(in + 16);
	h->next_packet_size = get32(in + 20);
	h->zero = get32(in + 32);
	if ((h->flags & MIGRAM_MULTIFD_FLAG_COMPRESSION_MASK) &&
	    (h->flags & MIGRAM_MULTIFD_FLAG_COMPRESSION_MASK) !=
		    MIGRAM_MULTIFD_FLAG_ZSTD)
		HDR_FAIL("data channel %u, packet %" G_GUINT64_FORMAT
			 ": compression flags 0x%x: only zstd (0x%x) is "
			 "supported",
			 channel, h->packet_num,
			 h->flags & MIGRAM_MULTIFD_FLAG_COMPRESSION_MASK,
			 MIGRAM_MULTIFD_FLAG_ZSTD);
	if (h->flags &
	    ~(MIGRAM_MULTIFD_FLAG_SYNC | MIGRAM_MULTIFD_FLAG_COMPRESSION_MASK))
		HDR_FAIL("data channel %u, packet %" G_GUINT64_FORMAT
			 ": unknown flags 0x%x",
			 channel, h->packet_num, h->flags);
	if (h->pages_alloc > MIGRAM_MULTIFD_PAGES_MAX)
		HDR_FAIL("data channel %u, packet %" G_GUINT64_FORMAT
			 ": %u pages allocated, at most %u",
			 channel, h->packet_num, h->pages_alloc,
			 MIGRAM_MULTIFD_PAGES_MAX);
	/* both at most 2^32-1: the sum cannot wrap in 64 bits */
	if ((uint64_t)h->normal + h->zero > h->pages_alloc)
		HDR_FAIL("data channel %u, packet %" G_GUINT64_FORMAT
			 ": %u normal + %u zero pages, above the %u allocated",
			 channel, h->packet_num, h->normal, h->zero,
			 h->pages_alloc);
	/* QEMU 7.2 leaves the previous packet's size in a packet without
	 * pages (a SYNC): checked only where pages follow */
	if (h->normal && (h->flags & MIGRAM_MULTIFD_FLAG_ZSTD) &&
	    (h->next_packet_size == 0 ||
	     h->next_packet_size > MIGRAM_MULTIFD_ZSTD_MAX))
		HDR_FAIL("data channel %u, packet %" G_GUINT64_FORMAT
			 ": zstd payload of %u bytes for %u pages (1..%u)",
			 channel, h->packet_num, h->next_packet_size, h->normal,
			 MIGRAM_MULTIFD_ZSTD_MAX);
	if (h->normal && !(h->flags & MIGRAM_MULTIFD_FLAG_ZSTD) &&
	    (uint64_t)h->normal * MIGRAM_MULTIFD_PAGE != h->next_packet_size)
		HDR_FAIL("data channel %u, packet %" G_GUINT64_FORMAT
			 ": payload of %u bytes for %u pages",
			 channel, h->packet_num, h->next_packet_size,
			 h->normal);
	memcpy(h->block, in + 64, MIGRAM_MULTIFD_NAME_SIZE);
	if (!memchr(h->block, 0, MIGRAM_MULTIFD_NAME_SIZE))
		HDR_FAIL("data channel %u, packet %" G_GUINT64_FORMAT
			 ": block name not terminated within %u bytes",
			 channel, h->packet_num, MIGRAM_MULTIFD_NAME_SIZE);
	if (h->normal + h->zero && !h->block[0])
		HDR_FAIL("data channel %u, packet %" G_GUINT64_FORMAT
			 ": pages without a block name",
			 channel, h->packet_num);
	return true;
}

bool migram_multifd_parse_offsets(const uint8_t *in, uint32_t n,
				  const MigramMultifdHdr *h,
				  uint64_t used_length, unsigned int channel,
				  uint64_t *out, GError **error)
{
	for (uint32_t i = 0; i < n; i++) {
		uint64_t off = get64(in + 8 * (size_t)i);

		if (off % MIGRAM_MULTIFD_PAGE)
			HDR_FAIL("data channel %u, packet %" G_GUINT64_FORMAT
				 ": offset 0x%" G_GINT64_MODIFIER
				 "x in block '%s' is not page-aligned",
				 channel, h->packet_num, off, h->block);
		if (off >= used_length ||
		    used_length - off < MIGRAM_MULTIFD_PAGE)
			HDR_FAIL("data channel %u, packet %" G_GUINT64_FORMAT
				 ": offset 0x%" G_GINT64_MODIFIER
				 "x outside block '%s' (0x%" G_GINT64_MODIFIER
				 "x bytes)",
				 channel, h->packet_num, off, h->block,
				 used_length);
		out[i] = off;
	}
	return true;
}
