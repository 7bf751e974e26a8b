/* SPDX-License-Identifier: MIT */
/*
 * The stream layer's private extensions (channel.c, stream-reader.c,
 * stream-writer.c) and QEMU's command numbers.  Never installed.
 */
#ifndef MIGRAM_STREAM_INTERNAL_H
#define MIGRAM_STREAM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include "migram/channel.h"
#include "migram/stream.h"

/*
 * channel.c: reads never take more bytes from the fd than the caller asked
 * for, so another reader of the same socket (after the return path ended)
 * finds the rest.  The channel's thread, before its first read.
 */
void migram_channel_set_exact_reads(MigramChannel *ch);
/* A blocking read or write that makes no progress for @ms fails the
 * channel, naming the fd and the time (0: wait forever); sets
 * TCP_USER_TIMEOUT on TCP sockets.  Owner thread, before use. */
void migram_channel_set_io_timeout(MigramChannel *ch, unsigned int ms);

/*
 * channel.c: rate-limit slices the writer moved on from so far (it slept
 * to the slice's end, or the slice had run out).  The writer's thread.
 */
uint64_t migram_channel_rate_slices(const MigramChannel *ch);

/*
 * channel.c: charge @n bytes written on another connection of the same
 * migration (a data channel) to this channel's rate-limit slices, sleeping
 * while over budget, as if this channel had written them: the limit then
 * applies to the sum.  No lock; the writer's thread only.
 */
void migram_channel_charge(MigramChannel *ch, uint64_t n);

/*
 * Reader extensions for postcopy (stream-reader.c).  Same thread rules as
 * the reader itself.
 *
 * new_continued: a reader for a recovered connection, which carries no
 * header: it knows prev's page size, RAM section id and device sections.
 * new_raw: a reader for the preempt channel: RAM records only (PAGE,
 * ZERO, CONTINUE), then EOS and END.
 * accept_page_sizes: after POSTCOPY_ADVISE with huge pages, the caller
 * reads the be64 page size that follows each huge-page block's entry with
 * read_block_page_size (only the destination knows which blocks have one).
 * read_device_blob: in a device section, a be32 length (<= max) and that
 * many bytes into out.
 */
MigramStreamReader *
migram_stream_reader_new_continued(MigramChannel *ch,
				   const MigramStreamReader *prev);
MigramStreamReader *migram_stream_reader_new_raw(MigramChannel *ch,
						 uint64_t page_size);
void migram_stream_reader_accept_page_sizes(MigramStreamReader *r);
bool migram_stream_reader_read_block_page_size(MigramStreamReader *r,
					       uint64_t *page_size,
					       GError **error);
bool migram_stream_reader_read_device_blob(MigramStreamReader *r, size_t max,
					   GByteArray *out, GError **error);
MigramChannel *migram_stream_reader_channel(const MigramStreamReader *r);

/*
 * Writer extensions (stream-writer.c), same rules as the writer.  Command
 * numbers are QEMU's MIG_CMD_* (docs/wire-format.md).  A device blob is a
 * FULL section (version MIGRAM_DEVICE_BLOB_VERSION) whose body is a be32
 * length and that many bytes, then the footer.  encode_* append to a byte
 * array (the postcopy package is built in memory); eos writes a bare EOS
 * word (the end of the preempt channel); finish_postcopy writes EOF with no
 * vmdesc, as QEMU does after postcopy.
 */
enum {
	MIGRAM_CMD_OPEN_RETURN_PATH = 1,
	MIGRAM_CMD_PING = 2,
	MIGRAM_CMD_POSTCOPY_ADVISE = 3,
	MIGRAM_CMD_POSTCOPY_LISTEN = 4,
	MIGRAM_CMD_POSTCOPY_RUN = 5,
	MIGRAM_CMD_POSTCOPY_RAM_DISCARD = 6,
	MIGRAM_CMD_PACKAGED = 7,
	MIGRAM_CMD_POSTCOPY_RESUME = 9,
	MIGRAM_CMD_RECV_BITMAP = 10,
};
#define MIGRAM_DEVICE_BLOB_VERSION 1u
#define MIGRAM_DEVICE_SECTION_ID 3u
#define MIGRAM_DEVICE_BLOB_MAX (256u << 20)
#define MIGRAM_DISCARDS_PER_COMMAND 12 /* QEMU's MAX_DISCARDS_PER_COMMAND */

void migram_stream_writer_command(MigramStreamWriter *w, uint16_t cmd,
				  const void *data, uint16_t len);
void migram_stream_encode_device(GByteArray *out, const char *idstr,
				 uint32_t section_id, const void *data,
				 uint32_t len);
void migram_stream_encode_command(GByteArray *out, uint16_t cmd,
				  const void *data, uint16_t len);
void migram_stream_writer_put_raw(MigramStreamWriter *w, const void *data,
				  size_t len);
void migram_stream_writer_eos(MigramStreamWriter *w);
bool migram_stream_writer_finish_postcopy(MigramStreamWriter *w,
					  GError **error);

#endif /* MIGRAM_STREAM_INTERNAL_H */
