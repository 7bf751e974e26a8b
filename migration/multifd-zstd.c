/* SPDX-License-Identifier: MIT */
/*
 * zstd compression of data-channel payloads, in QEMU 7.2's wire form
 * (multifd-compression=zstd): one zstd stream per channel that lives as
 * long as the channel; each packet's normal pages are fed to it in order
 * and flushed at the packet's end (the frame is never ended), so a packet
 * decompresses only after every earlier packet of its channel.  The
 * header's next_packet_size is the compressed size, the flag
 * MIGRAM_MULTIFD_FLAG_ZSTD marks the packet.
 *
 * The receiver reads the compressed bytes into a per-channel buffer and
 * decompresses straight into each page: the output window is the page
 * itself (4096 bytes), so nothing is ever written outside a page the
 * header named, and no second copy is made.  A frame that is corrupt,
 * decompresses to fewer or more bytes than the pages, or leaves input
 * unused fails naming the channel, packet and page offset.
 *
 * Contexts and buffers are made once per channel (at set-up, or at the
 * first compressed packet on the receiving side); the per-packet path
 * neither allocates nor locks.  One thread per context.
 */
#include <string.h>

#include <zstd.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/migram.h"
#include "multifd.h"

struct MigramMultifdZstd {
	ZSTD_CCtx *cctx; /* sending */
	ZSTD_DCtx *dctx; /* receiving */
	uint8_t *buf;
	size_t cap;
};

MigramMultifdZstd *migram_multifd_zstd_new(bool send, int level,
					   unsigned int channel, GError **error)
{
	MigramMultifdZstd *z;
	size_t r = 0;

	if (send && (level < 1 || level > ZSTD_maxCLevel())) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "data channel %u: zstd level %d (1..%d)", channel,
			    level, ZSTD_maxCLevel());
		return NULL;
	}
	z = g_new0(MigramMultifdZstd, 1);

	z->cap = (size_t)MIGRAM_MULTIFD_ZSTD_MAX;
	z->buf = g_malloc(z->cap);
	if (send) {
		z->cctx = ZSTD_createCCtx();
		if (z->cctx)
			r = ZSTD_CCtx_setParameter(z->cctx,
						   ZSTD_c_compressionLevel,
						   level);
	} else {
		z->dctx = ZSTD_createDCtx();
	}
	if ((send && !z->cctx) || (!send && !z->dctx) || ZSTD_isError(r)) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "data channel %u: cannot set up zstd%s%s", channel,
			    ZSTD_isError(r) ? ": " : "",
			    ZSTD_isError(r) ? ZSTD_getErrorName(r) : "");
		migram_multifd_zstd_free(z);
		return NULL;
	}
	return z;
}

void migram_multifd_zstd_free(MigramMultifdZstd *z)
{
	if (!z)
		return;
	ZSTD_freeCCtx(z->cctx);
	ZSTD_freeDCtx(z->dctx);
	g_free(z->buf);
	g_free(z);
}

bool migram_multifd_zstd_compress(MigramMultifdZstd *z,
				  const struct iovec *pages, uint32_t n,
				  unsigned int channel, uint64_t packet,
				  const uint8_t **out, uint32_t *out_len,
				  GError **error)
{
	ZSTD_outBuffer o = { z->buf, z->cap, 0 };

	for (uint32_t i = 0; i < n; i++) {
		ZSTD_inBuffer in = { pages[i].iov_base, pages[i].iov_len, 0 };
		ZSTD_EndDirective d = i + 1 == n ? ZSTD_e_flush
						 : ZSTD_e_continue;
		size_t r;

		/* guest memory the guest may be writing: a torn page is
		 * dirty again and re-sent after the next sync point */
		migram_tsan_ignore_reads_begin();
		do {
			r = ZSTD_compressStream2(z->cctx, &o, &in, d);
		} while (!ZSTD_isError(r) && o.pos < o.size &&
			 (in.pos < in.size || (d == ZSTD_e_flush && r > 0)));
		migram_tsan_ignore_reads_end();
		if (ZSTD_isError(r) || in.pos < in.size || r > 0) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "data channel %u, packet %" G_GUINT64_FORMAT
				    ": zstd compression of page %u: %s",
				    channel, packet, i,
				    ZSTD_isError(r) ? ZSTD_getErrorName(r)
						    : "output buffer full");
			return false;
		}
	}
	*out = z->buf;
	*out_len = (uint32_t)o.pos;
	return true;
}

uint8_t *migram_multifd_zstd_buffer(MigramMultifdZstd *z)
{
	return z->buf;
}

bool migram_multifd_zstd_decompress(MigramMultifdZstd *z, uint32_t in_len,
				    uint8_t *const *pages, const uint64_t *offs,
				    uint32_t n, unsigned int channel,
				    uint64_t packet, GError **error)
{
	ZSTD_inBuffer in = { z->buf, in_len, 0 };
	uint8_t spare;

	for (uint32_t i = 0; i < n; i++) {
		ZSTD_outBuffer o = { pages[i], MIGRAM_MULTIFD_PAGE, 0 };
		size_t r;

		do {
			r = ZSTD_decompressStream(z->dctx, &o, &in);
		} while (!ZSTD_isError(r) && o.pos < o.size &&
			 in.pos < in.size);
		if (ZSTD_isError(r) || o.pos < o.size) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
				    "data channel %u, packet %" G_GUINT64_FORMAT
				    ", offset 0x%" G_GINT64_MODIFIER
				    "x: zstd payload %s (%zu of %u bytes of "
				    "page %u)",
				    channel, packet, offs[i],
				    ZSTD_isError(r) ? ZSTD_getErrorName(r)
						    : "ends early",
				    o.pos, MIGRAM_MULTIFD_PAGE, i);
			return false;
		}
	}
	/* Every compressed byte must be used, and none may decode to more:
	 * drain what is left into a one-byte window, which must stay
	 * empty. */
	while (in.pos < in.size) {
		ZSTD_outBuffer o = { &spare, 1, 0 };
		size_t before = in.pos;
		size_t r = ZSTD_decompressStream(z->dctx, &o, &in);

		if (ZSTD_isError(r) || o.pos || in.pos == before) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
				    "data channel %u, packet %" G_GUINT64_FORMAT
				    ": zstd payload %s after its %u pages "
				    "(at compressed byte %zu of %u)",
				    channel, packet,
				    ZSTD_isError(r) ? ZSTD_getErrorName(r)
				    : o.pos         ? "decodes to more bytes"
						    : "has unused bytes",
				    n, before, in_len);
			return false;
		}
	}
	return true;
}
