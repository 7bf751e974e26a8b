/* SPDX-License-Identifier: MIT */
/**
 * @file channel.h
 * MigramChannel: buffered, gathering I/O over one file descriptor.
 *
 * One channel carries one direction of a migration stream over a socket,
 * pipe or regular file.  Writes are queued and go out with writev():
 * small items (headers, integers) are packed into a staging buffer, while a
 * page payload is queued *by reference* (a pointer into guest memory) and
 * never copied.  Reads come from a large buffer filled with read(); a long
 * read goes straight into the caller's memory once the buffer is drained.
 *
 *     put_u8/be16/be32/be64/bytes/counted_string   queue (staging copy)
 *     put_ref(p, n)                                 queue a reference
 *     flush()                                       writev everything
 *     get_u8/be16/be32/be64/bytes/counted_string    exact reads
 *
 * Integers are big-endian, as on QEMU's stream.
 *
 * Errors are sticky: the first failure (I/O, end of stream, cancel) is kept,
 * every later call does nothing and fails with that error, and the caller
 * checks once where convenient.  The put_* calls return nothing for that
 * reason; flush() and the get_* calls report it.
 *
 * A referenced page is read by writev() during the flush that sends it, so
 * the bytes sent are what the page holds at that moment.  The caller may
 * modify the page at any time (a migration re-sends pages written after
 * their dirty bit was cleared), but must keep it mapped until the next
 * flush() returns.
 *
 * Threads: a channel is used by one thread at a time, except
 * migram_channel_set_rate_limit(), migram_channel_bytes_sent(),
 * migram_channel_bytes_received() and migram_channel_cancel(), which any
 * thread may call at any time.
 */
#ifndef MIGRAM_CHANNEL_H
#define MIGRAM_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

/** Opaque; single owner. */
typedef struct MigramChannel MigramChannel;

/**
 * Create a channel over @p fd.
 *
 * @param fd an open, blocking file descriptor (socket, pipe or file).
 * @param own_fd close @p fd in migram_channel_free().
 * @return a new channel; caller frees with migram_channel_free().
 *
 * Context: Any thread.
 */
MigramChannel *migram_channel_new(int fd, bool own_fd);

/**
 * Free a channel without flushing (call migram_channel_flush() first to
 * send what is queued).
 *
 * @param ch the channel, or NULL.
 *
 * Context: The channel's thread.
 */
void migram_channel_free(MigramChannel *ch);

/**
 * The channel's file descriptor.
 *
 * @param ch the channel.
 * @return the fd; borrowed.
 *
 * Context: Any thread.
 */
int migram_channel_fd(const MigramChannel *ch);

/**
 * Queue one byte.
 *
 * @param ch the channel.
 * @param v the byte.
 *
 * Context: The channel's thread.  Does nothing once the channel has failed.
 */
void migram_channel_put_u8(MigramChannel *ch, uint8_t v);

/**
 * Queue a big-endian 16-bit integer.
 *
 * @param ch the channel.
 * @param v the value.
 *
 * Context: The channel's thread.
 */
void migram_channel_put_be16(MigramChannel *ch, uint16_t v);

/**
 * Queue a big-endian 32-bit integer.
 *
 * @param ch the channel.
 * @param v the value.
 *
 * Context: The channel's thread.
 */
void migram_channel_put_be32(MigramChannel *ch, uint32_t v);

/**
 * Queue a big-endian 64-bit integer.
 *
 * @param ch the channel.
 * @param v the value.
 *
 * Context: The channel's thread.
 */
void migram_channel_put_be64(MigramChannel *ch, uint64_t v);

/**
 * Queue a copy of @p len bytes.
 *
 * @param ch the channel.
 * @param data the bytes.
 * @param len their number.
 *
 * Context: The channel's thread.
 */
void migram_channel_put_bytes(MigramChannel *ch, const void *data, size_t len);

/**
 * Queue a counted string: one length byte, then the bytes (no NUL).
 *
 * @param ch the channel.
 * @param s a string of 0 to 255 bytes; a longer one fails the channel.
 *
 * Context: The channel's thread.
 */
void migram_channel_put_counted_string(MigramChannel *ch, const char *s);

/**
 * Queue @p len bytes at @p data by reference (no copy).
 *
 * @param ch the channel.
 * @param data the bytes; must stay mapped until the next
 *        migram_channel_flush() returns (they are read during it).
 * @param len their number.
 *
 * Context: The channel's thread.
 */
void migram_channel_put_ref(MigramChannel *ch, const void *data, size_t len);

/**
 * Write everything queued, honouring the rate limit.
 *
 * Retries on EINTR and short writes; sleeps when the rate limit's budget
 * for the current time slice is spent.
 *
 * @param ch the channel.
 * @param error the channel's first error: MIGRAM_ERROR_IO for a failed
 *        write, MIGRAM_ERROR_CANCELLED after migram_channel_cancel().
 * @return true when everything queued was written.
 *
 * Context: The channel's thread.  May block.
 */
bool migram_channel_flush(MigramChannel *ch, GError **error);

/**
 * Read one byte.
 *
 * @param ch the channel.
 * @param v where to store it.
 * @param error MIGRAM_ERROR_PROTOCOL at end of stream (the message gives
 *        the byte offset), MIGRAM_ERROR_IO for a failed read.
 * @return true on success.
 *
 * Context: The channel's thread.  May block.
 */
bool migram_channel_get_u8(MigramChannel *ch, uint8_t *v, GError **error);

/**
 * Read a big-endian 16-bit integer.
 *
 * @param ch the channel.
 * @param v where to store it.
 * @param error as for migram_channel_get_u8().
 * @return true on success.
 *
 * Context: The channel's thread.  May block.
 */
bool migram_channel_get_be16(MigramChannel *ch, uint16_t *v, GError **error);

/**
 * Read a big-endian 32-bit integer.
 *
 * @param ch the channel.
 * @param v where to store it.
 * @param error as for migram_channel_get_u8().
 * @return true on success.
 *
 * Context: The channel's thread.  May block.
 */
bool migram_channel_get_be32(MigramChannel *ch, uint32_t *v, GError **error);

/**
 * Read a big-endian 64-bit integer.
 *
 * @param ch the channel.
 * @param v where to store it.
 * @param error as for migram_channel_get_u8().
 * @return true on success.
 *
 * Context: The channel's thread.  May block.
 */
bool migram_channel_get_be64(MigramChannel *ch, uint64_t *v, GError **error);

/**
 * Read exactly @p len bytes into @p dst.
 *
 * Buffered bytes are copied; the rest is read straight into @p dst.  On a
 * truncated stream, @p dst may hold part of the bytes: never more than
 * @p len of them.
 *
 * @param ch the channel.
 * @param dst where to store them.
 * @param len how many.
 * @param error as for migram_channel_get_u8().
 * @return true on success.
 *
 * Context: The channel's thread.  May block.
 */
bool migram_channel_get_bytes(MigramChannel *ch, void *dst, size_t len,
			      GError **error);

/**
 * Look at the next byte without consuming it.
 *
 * @param ch the channel.
 * @param v where to store it.
 * @param error as for migram_channel_get_u8().
 * @return true on success.
 *
 * Context: The channel's thread.  May block.
 */
bool migram_channel_peek_u8(MigramChannel *ch, uint8_t *v, GError **error);

/**
 * Whether the stream has ended, without failing the channel if it has.
 *
 * @param ch the channel.
 * @param at_end set to true when no byte is left.
 * @param error MIGRAM_ERROR_IO for a failed read, or the sticky error.
 * @return false on error.
 *
 * Context: The channel's thread.  May block.
 */
bool migram_channel_at_end(MigramChannel *ch, bool *at_end, GError **error);

/**
 * Read and drop exactly @p len bytes.
 *
 * @param ch the channel.
 * @param len how many.
 * @param error as for migram_channel_get_u8().
 * @return true on success.
 *
 * Context: The channel's thread.  May block.
 */
bool migram_channel_skip(MigramChannel *ch, uint64_t len, GError **error);

/**
 * Read a counted string into @p buf (NUL-terminated).
 *
 * @param ch the channel.
 * @param buf at least 256 bytes.
 * @param error as for migram_channel_get_u8().
 * @return true on success.
 *
 * Context: The channel's thread.  May block.
 */
bool migram_channel_get_counted_string(MigramChannel *ch, char buf[256],
				       GError **error);

/**
 * Offset in the stream of the next byte to read (bytes consumed so far).
 *
 * @param ch the channel.
 * @return the offset.
 *
 * Context: The channel's thread.
 */
uint64_t migram_channel_read_offset(const MigramChannel *ch);

/**
 * Total bytes written to the fd.
 *
 * @param ch the channel.
 * @return the count.
 *
 * Context: Any thread.
 */
uint64_t migram_channel_bytes_sent(const MigramChannel *ch);

/**
 * Total bytes read from the fd.
 *
 * @param ch the channel.
 * @return the count.
 *
 * Context: Any thread.
 */
uint64_t migram_channel_bytes_received(const MigramChannel *ch);

/**
 * Limit the write rate.  Takes effect at the next time slice (100 ms).
 *
 * @param ch the channel.
 * @param bytes_per_second the limit; 0 for none.
 *
 * Context: Any thread.
 */
void migram_channel_set_rate_limit(MigramChannel *ch,
				   uint64_t bytes_per_second);

/**
 * Whether the current time slice's write budget is spent (so a sender can
 * stop queueing and yield, as QEMU's migration thread does).
 *
 * @param ch the channel.
 * @return true when more writes now would have to wait.
 *
 * Context: The channel's thread.
 */
bool migram_channel_rate_exceeded(MigramChannel *ch);

/**
 * Fail the channel from another thread: blocked and later calls return
 * MIGRAM_ERROR_CANCELLED (the fd is shut down so a blocked read or write
 * returns).
 *
 * @param ch the channel.
 *
 * Context: Any thread.
 */
void migram_channel_cancel(MigramChannel *ch);

/**
 * The channel's sticky error.
 *
 * @param ch the channel.
 * @return the first error, or NULL; borrowed, lives as long as @p ch.
 *
 * Context: The channel's thread.
 */
const GError *migram_channel_error(const MigramChannel *ch);

/**
 * Fail the channel with @p error unless it has failed already.
 *
 * @param ch the channel.
 * @param error the error; ownership passes to the channel.
 *
 * Context: The channel's thread.
 */
void migram_channel_set_error(MigramChannel *ch, GError *error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(MigramChannel, migram_channel_free)

G_END_DECLS

#endif /* MIGRAM_CHANNEL_H */
