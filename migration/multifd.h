/* SPDX-License-Identifier: MIT */
/*
 * Multi-channel transfer (multifd): the data channels' wire format
 * (multifd-wire.c), the sending threads (multifd-send.c) and the receiving
 * threads (multifd-recv.c).  Never installed.  docs/wire-format.md,
 * "Data channels (multifd)", describes the bytes and the decisions.
 *
 * The interface to the sender and the receiver is deliberately narrow:
 * setup (new), "queue this page" (queue), per-section sync (sync), cleanup
 * (free) and cancel, so it can become a table of hooks later.
 */
#ifndef MIGRAM_MULTIFD_H
#define MIGRAM_MULTIFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <glib.h>

/* QEMU's values (migration/multifd.h, 7.2 and later). */
#define MIGRAM_MULTIFD_MAGIC 0x11223344u
#define MIGRAM_MULTIFD_VERSION 1u
#define MIGRAM_MULTIFD_FLAG_SYNC 0x1u
/* Compression method bits (1 << 1 .. 1 << 3 in 7.2): zstd (2 << 1) is
 * read and written (multifd-zstd.c), zlib (1 << 1) and others refused. */
#define MIGRAM_MULTIFD_FLAG_COMPRESSION_MASK 0xEu
#define MIGRAM_MULTIFD_FLAG_ZSTD 0x4u
/* 512 KiB of 4 KiB pages per packet, as QEMU's MULTIFD_PACKET_SIZE. */
#define MIGRAM_MULTIFD_PAGES_MAX 128u
/* At most 255 channels: the initial packet's id is one byte. */
#define MIGRAM_MULTIFD_CHANNELS_MAX 255u
#define MIGRAM_MULTIFD_INIT_SIZE 64u
#define MIGRAM_MULTIFD_HDR_SIZE 320u
#define MIGRAM_MULTIFD_NAME_SIZE 256u
#define MIGRAM_MULTIFD_PAGE 4096u
/* A compressed payload's size limit: twice a full packet, as QEMU's
 * buffer (zstd's worst case for 512 KiB is far below). */
#define MIGRAM_MULTIFD_ZSTD_MAX                                                \
	(2u * MIGRAM_MULTIFD_PAGES_MAX * MIGRAM_MULTIFD_PAGE)

/* A packet's fixed header, decoded. */
typedef struct {
	uint32_t flags;
	uint32_t pages_alloc;
	uint32_t normal;           /* pages with a payload */
	uint32_t zero;             /* pages listed as zero, no payload */
	uint32_t next_packet_size; /* payload bytes */
	uint64_t packet_num;
	char block[MIGRAM_MULTIFD_NAME_SIZE]; /* NUL-terminated */
} MigramMultifdHdr;

/* Which channel ids a receiver has seen (duplicate detection). */
typedef struct {
	uint64_t seen[4];
} MigramMultifdIds;

/*
 * The initial packet: be32 magic, be32 version, 16-byte UUID, u8 id,
 * 7 + 32 bytes of zero.  @p out must hold MIGRAM_MULTIFD_INIT_SIZE bytes.
 * Context: any thread.
 */
void migram_multifd_encode_init(uint8_t *out, const uint8_t uuid[16],
				uint8_t id);

/*
 * Check an initial packet for a destination expecting @p nchannels
 * channels: magic, version, id below @p nchannels and not in @p ids (which
 * it is added to), and, if @p uuid is not NULL, the same UUID.  @p where
 * names the connection in errors ("data connection 2").  Returns the id in
 * @p id, or false with MIGRAM_ERROR_PROTOCOL.  Context: one thread per
 * @p ids at a time.
 */
bool migram_multifd_parse_init(const uint8_t *in, unsigned int nchannels,
			       const uint8_t *uuid, MigramMultifdIds *ids,
			       const char *where, uint8_t *id, GError **error);

/*
 * Encode a header and its offset array (@p h->normal payload offsets,
 * then @p h->zero zero-page offsets, then zeros up to @p h->pages_alloc
 * entries: QEMU always sends the whole array) into @p out, which must hold
 * MIGRAM_MULTIFD_HDR_SIZE + 8 * pages_alloc bytes; returns the bytes
 * written.  @p h->block is copied up to its NUL.  Context: any thread.
 */
size_t migram_multifd_encode_hdr(uint8_t *out, const MigramMultifdHdr *h,
				 const uint64_t *offsets);

/*
 * Decode and check a fixed header read on channel @p channel: magic,
 * version, no compression but zstd, no unknown flag, pages_alloc at most
 * MIGRAM_MULTIFD_PAGES_MAX, normal + zero at most pages_alloc, the payload
 * size equal to normal pages (zstd: 1..MIGRAM_MULTIFD_ZSTD_MAX bytes when
 * there are normal pages), a NUL-terminated block name, a name when
 * pages are listed.  False with MIGRAM_ERROR_PROTOCOL naming the channel
 * and packet.  Context: any thread.
 */
bool migram_multifd_parse_hdr(const uint8_t *in, unsigned int channel,
			      MigramMultifdHdr *h, GError **error);

/*
 * Decode the @p n big-endian offsets after a header into @p out and check
 * each is page-aligned and inside a block of @p used_length bytes.  False
 * with MIGRAM_ERROR_PROTOCOL naming the channel, packet, block and offset.
 * Context: any thread.
 */
bool migram_multifd_parse_offsets(const uint8_t *in, uint32_t n,
				  const MigramMultifdHdr *h,
				  uint64_t used_length, unsigned int channel,
				  uint64_t *out, GError **error);

/* ---- zstd (multifd-zstd.c) ---- */

typedef struct MigramMultifdZstd MigramMultifdZstd;

/*
 * A channel's zstd state: a compression stream at @p level (@p send) or a
 * decompression stream, and a MIGRAM_MULTIFD_ZSTD_MAX-byte buffer.  NULL
 * with MIGRAM_ERROR_INVALID naming @p channel.  One thread at a time per
 * state; free with migram_multifd_zstd_free (NULL is fine).
 */
MigramMultifdZstd *migram_multifd_zstd_new(bool send, int level,
					   unsigned int channel,
					   GError **error);
void migram_multifd_zstd_free(MigramMultifdZstd *z);

/*
 * Compress the @p n pages @p pages (guest memory, read racily) into the
 * state's buffer, flushed at the end (QEMU 7.2's form); *out / *out_len
 * are valid until the next call.  False with MIGRAM_ERROR_IO naming the
 * channel and packet.  No allocation.
 */
bool migram_multifd_zstd_compress(MigramMultifdZstd *z,
				  const struct iovec *pages, uint32_t n,
				  unsigned int channel, uint64_t packet,
				  const uint8_t **out, uint32_t *out_len,
				  GError **error);

/* The buffer a compressed payload is read into (MIGRAM_MULTIFD_ZSTD_MAX
 * bytes). */
uint8_t *migram_multifd_zstd_buffer(MigramMultifdZstd *z);

/*
 * Decompress the first @p in_len bytes of the buffer into the @p n pages
 * @p pages (4096 bytes each; @p offs their offsets, for errors), writing
 * nothing outside them.  False with MIGRAM_ERROR_PROTOCOL naming the
 * channel, packet and offset when the data is corrupt, ends before the
 * last page is full, decodes to more, or leaves bytes unused.  No
 * allocation.
 */
bool migram_multifd_zstd_decompress(MigramMultifdZstd *z, uint32_t in_len,
				    uint8_t *const *pages, const uint64_t *offs,
				    uint32_t n, unsigned int channel,
				    uint64_t packet, GError **error);

/* ---- receiving (multifd-recv.c) ---- */

/* A block the data channels may write: a snapshot taken by the receiver. */
typedef struct {
	const char *name;           /* borrowed */
	uint8_t *host;              /* borrowed guest memory */
	uint64_t used_length;       /* bytes */
	unsigned long *receivedmap; /* borrowed; bits set atomically, or NULL */
} MigramMultifdBlock;

typedef struct MigramMultifdRecv MigramMultifdRecv;

/*
 * Receiving threads for @p n data connections @p fds (borrowed, in any
 * order: each names its id in its initial packet).  @p blocks (copied
 * array; names, memory and maps borrowed) is what packets may name.
 * @p uuid, if not NULL, must match every initial packet.  Reads the
 * initial packets on the calling thread, then starts one thread per
 * channel.  NULL with MIGRAM_ERROR_PROTOCOL (bad initial packet),
 * MIGRAM_ERROR_IO (read or thread creation).
 * Context: the receiver's thread.
 */
MigramMultifdRecv *migram_multifd_recv_new(const MigramMultifdBlock *blocks,
					   unsigned int nblocks, unsigned int n,
					   const int *fds, const uint8_t *uuid,
					   GError **error);

/*
 * The main stream reached a sync point (a RAM EOS): wait until every
 * channel has read its next SYNC packet (and so placed every page sent
 * before it), then let them go on.  False with the first channel's error
 * (naming channel, packet and offset), or MIGRAM_ERROR_CANCELLED.
 * Context: the receiver's thread.
 */
bool migram_multifd_recv_sync(MigramMultifdRecv *r, GError **error);

/* Stop every channel promptly (shuts the fds down).  Any thread. */
void migram_multifd_recv_cancel(MigramMultifdRecv *r);

/* Pages placed and zero pages listed, over all channels.  Any thread. */
void migram_multifd_recv_counts(MigramMultifdRecv *r, uint64_t *pages,
				uint64_t *zero_pages);

/* Cancel, join every thread, free.  NULL is fine.  The receiver's thread. */
void migram_multifd_recv_free(MigramMultifdRecv *r);

/*
 * Read one channel's packets from @p fd on the calling thread until the
 * end of the stream, without threads or waiting at SYNC packets (each
 * SYNC is counted in @p syncs); for the fuzz target and tests.  True at a
 * clean end of stream (between packets).
 */
bool migram_multifd_recv_drain_fd(const MigramMultifdBlock *blocks,
				  unsigned int nblocks, int fd, uint64_t *syncs,
				  GError **error);

/* ---- sending (multifd-send.c) ---- */

typedef struct MigramMultifdSend MigramMultifdSend;

/*
 * Sending threads for @p n connected data sockets @p fds (borrowed until
 * free; shut down by cancel).  Writes each channel's initial packet (id i
 * on fds[i], @p uuid) on the calling thread, then starts one thread per
 * channel.  A write that makes no progress for @p io_timeout_ms (0:
 * never) fails its channel with a "stalled" error, as the main channel's
 * do (the sockets are written with MSG_DONTWAIT and polled).  NULL with
 * MIGRAM_ERROR_INVALID (n out of 1..255) or MIGRAM_ERROR_IO.  Context:
 * the migration thread.
 */
MigramMultifdSend *migram_multifd_send_new(unsigned int n, const int *fds,
					   const uint8_t uuid[16],
					   unsigned int io_timeout_ms,
					   GError **error);

/*
 * Compress every later packet's payload with zstd at @p level (QEMU
 * 7.2's wire form, multifd-zstd.c).  Before the first queue; false with
 * MIGRAM_ERROR_INVALID if a channel's zstd state cannot be made.
 * Context: the migration thread.
 */
bool migram_multifd_send_set_zstd(MigramMultifdSend *s, int level,
				  GError **error);

/*
 * Send every later page whole, zero or not (QEMU 7.2's packets, whose
 * destination ignores a zero list): the caller writes zero pages on the
 * main stream instead.  Before the first queue.  Context: the migration
 * thread.
 */
void migram_multifd_send_whole_pages(MigramMultifdSend *s);

/*
 * Queue the page at @p offset of block @p name (borrowed until the next
 * sync returns) whose memory starts at @p host (mapped until then).  A
 * full batch, or a page of another block, hands the batch to an idle
 * channel (waiting for one).  The channel thread reads the page when it
 * sends it, detects zero pages and lists them instead.  False with the
 * first channel error.  Context: the migration thread; no allocation.
 */
bool migram_multifd_send_queue(MigramMultifdSend *s, const char *name,
			       const uint8_t *host, uint64_t offset,
			       GError **error);

/*
 * A sync point (before every RAM EOS on the main stream, as QEMU 7.2):
 * hand off the partial batch, send a SYNC packet on every channel and
 * wait until each has written everything before it.  False with the
 * first channel error (naming it) or MIGRAM_ERROR_CANCELLED.
 * Context: the migration thread.
 */
bool migram_multifd_send_sync(MigramMultifdSend *s, GError **error);

/* Normal pages, zero pages and bytes written over all channels.  Any
 * thread. */
void migram_multifd_send_counts(MigramMultifdSend *s, uint64_t *pages,
				uint64_t *zero_pages, uint64_t *bytes);

/* Stop every channel promptly: shut the fds down, wake all waits.  Any
 * thread, any time. */
void migram_multifd_send_cancel(MigramMultifdSend *s);

/* Stop and join every thread, free (the fds stay open).  NULL is fine.
 * The migration thread. */
void migram_multifd_send_free(MigramMultifdSend *s);

#endif /* MIGRAM_MULTIFD_H */
