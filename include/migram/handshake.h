/* SPDX-License-Identifier: MIT */
/**
 * @file handshake.h
 * An optional handshake at the start of every connection of a migration.
 *
 * QEMU's stream has none: the destination learns what comes from the
 * stream itself and tells a main connection from a preempt one only by the
 * order accept() returns them.  With the handshake, the source's side of
 * each connection sends a hello naming the protocol version, the
 * migration's id, the connection's role and the capabilities both sides
 * must agree on; the destination answers with its own, and both compare.
 * A mismatch fails on both sides before any page moves, with an error that
 * names both sides' values ("handshake: postcopy differs: source on,
 * destination off").  The destination learns each connection's role from
 * its hello, not from the accept order.
 *
 * It is opt-in: without calls to this API the connections carry QEMU's
 * stream exactly (the QEMU-compatible mode, the default, which QEMU peers
 * and existing embedders need).  With it, call migram_handshake_connect()
 * on each connection the source opens and migram_handshake_accept() on each
 * the destination accepts, before migram_migration_run() /
 * migram_receiver_load() / _set_preempt() get the channel; the stream then
 * follows on the same channel.  The return path shares the main
 * connection (its reverse direction), so the main hello covers it; the
 * RETURN_PATH role is for a return path on a connection of its own.
 *
 * Data channels (MigramMigrationConfig.multifd_fds): greet each with role
 * MIGRAM_HANDSHAKE_DATA + i through migram_handshake_connect_fd() before
 * migram_migration_run() writes its initial packet, with channels set to
 * 1 + multifd_channels in every hello of the migration.  The destination
 * accepts main, preempt and data connections in any order, greets each
 * with migram_handshake_accept_fd() (or _accept() on a channel) and files
 * it by the role in the source's hello: MAIN to migram_receiver_load(),
 * PREEMPT to migram_receiver_set_preempt(), DATA + i to
 * MigramReceiverConfig.multifd_fds (any order there is fine too: the
 * multifd initial packet names the channel).  A role seen twice is the
 * embedder's to refuse.
 *
 * Wire format (big-endian; docs/wire-format.md, "Handshake"), the same
 * message in both directions:
 *
 *     be32 magic 0x4d474853 ("MGHS")   be32 version (1)
 *     16 bytes migration id            be32 role
 *     be32 capability flags (MIGRAM_HANDSHAKE_CAP_*)
 *     be32 channels   be32 compression   be32 page size
 *     be32 block count (<= MIGRAM_HANDSHAKE_MAX_BLOCKS, or
 *          MIGRAM_HANDSHAKE_NO_BLOCKS), then per block: counted idstr
 *          (1..255 bytes), be64 used_length
 */
#ifndef MIGRAM_HANDSHAKE_H
#define MIGRAM_HANDSHAKE_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/channel.h>
#include <migram/ramblock.h>

G_BEGIN_DECLS

/** Magic that opens a hello ("MGHS"). */
#define MIGRAM_HANDSHAKE_MAGIC 0x4d474853u
/** The handshake version this library speaks. */
#define MIGRAM_HANDSHAKE_VERSION 1u
/** Most blocks a hello may list. */
#define MIGRAM_HANDSHAKE_MAX_BLOCKS 4096u
/** Block count meaning "no block list: accept the peer's". */
#define MIGRAM_HANDSHAKE_NO_BLOCKS 0xffffffffu

/** What a connection carries. */
typedef enum {
	MIGRAM_HANDSHAKE_MAIN = 1,        /**< the stream (and return path) */
	MIGRAM_HANDSHAKE_RETURN_PATH = 2, /**< a return path of its own */
	MIGRAM_HANDSHAKE_PREEMPT = 3,     /**< postcopy's urgent pages */
	/** Data channel N is MIGRAM_HANDSHAKE_DATA + N (N < 65536, and below
	 * the agreed number of data channels, channels - 1). */
	MIGRAM_HANDSHAKE_DATA = 0x100,
} MigramHandshakeRole;

/** Capability flags both sides must agree on. */
enum {
	MIGRAM_HANDSHAKE_CAP_POSTCOPY = 1u << 0, /**< postcopy may be used */
	MIGRAM_HANDSHAKE_CAP_PREEMPT = 1u << 1,  /**< a preempt channel */
};

/** One side's hello. */
typedef struct {
	/** Identifies the migration; every connection of one migration
	 * carries the same.  All zero on the destination: adopt the first
	 * main connection's (migram_handshake_accept() fills it in). */
	uint8_t migration_id[16];
	uint32_t role; /**< MigramHandshakeRole (DATA + N for data) */
	uint32_t caps; /**< MIGRAM_HANDSHAKE_CAP_* */
	/** Connections that carry pages: 1 (the main one) + the data
	 * channels (multifd_channels); 1 without data channels. */
	uint32_t channels;
	uint32_t compression; /**< 0: none (the only one this library has) */
	uint32_t page_size;   /**< target page size (4096) */
	/** Blocks to agree on (migratable ones, name and used_length), read
	 * when the hello is sent and compared; borrowed.  NULL: send no list
	 * and accept the peer's (a destination whose receiver creates its
	 * blocks from the stream). */
	MigramRamList *list;
	/** Filled in a peer's hello only: how many blocks it listed, or
	 * MIGRAM_HANDSHAKE_NO_BLOCKS. */
	uint32_t peer_blocks;
} MigramHandshake;

/**
 * Fill @p hs with this library's defaults: a fresh random migration id,
 * role MAIN, no capabilities, 1 channel, no compression, 4096-byte pages,
 * no block list.
 *
 * @param hs the hello to fill.
 *
 * Context: Any thread.
 */
void migram_handshake_init(MigramHandshake *hs);

/**
 * The source's side of a connection: send @p local, read the destination's
 * answer, compare.
 *
 * @param ch the connection, before anything else was sent on it.
 * @param local this side's hello (role says what this connection is).
 * @param peer optional: the destination's hello (its list is NULL).
 * @param error MIGRAM_ERROR_INVALID for a mismatch, naming the field and
 *        both sides' values; MIGRAM_ERROR_PROTOCOL for a malformed answer
 *        (byte offset, field); MIGRAM_ERROR_IO when the connection fails.
 * @return true when both sides agree; the stream may follow on @p ch.
 *
 * Context: RCU-registered thread when local->list is set (the read lock is
 * taken inside).  Blocks on the channel.
 */
bool migram_handshake_connect(MigramChannel *ch, const MigramHandshake *local,
			      MigramHandshake *peer, GError **error);

/**
 * The destination's side of a connection: read the source's hello, answer
 * with @p local (its role set to the source's), compare.  The answer is sent
 * even on a mismatch, so that the source fails with the same error.
 *
 * @param ch an accepted connection, nothing read from it yet.
 * @param local this side's hello; its role is ignored.  When its
 *        migration_id is all zero it adopts the id of the first hello it
 *        accepts, whatever its role (connections come in any order); after
 *        that every connection must carry that id.
 * @param peer filled with the source's hello: peer->role says what this
 *        connection is (MAIN, PREEMPT, DATA + N), whatever the accept
 *        order.
 * @param error as for migram_handshake_connect(); a data channel number
 *        not below the agreed data channels (channels - 1) is a mismatch
 *        (MIGRAM_ERROR_INVALID) on both sides.
 * @return true when both sides agree; hand @p ch on by its role.
 *
 * Context: as migram_handshake_connect().  Not from two threads on one
 * @p local at once.
 */
bool migram_handshake_accept(MigramChannel *ch, MigramHandshake *local,
			     MigramHandshake *peer, GError **error);

/**
 * migram_handshake_connect() on a bare fd, for a data channel (whose fd
 * MigramMigrationConfig.multifd_fds takes) or any connection: a temporary
 * channel over @p fd (not closed) carries the hello and the answer.
 *
 * @param fd a connected, blocking socket, nothing sent on it yet.
 * @param local as for migram_handshake_connect(); role DATA + i for data
 *        channel i.
 * @param peer optional, as for migram_handshake_connect().
 * @param error as for migram_handshake_connect(); MIGRAM_ERROR_PROTOCOL
 *        also when the destination sent bytes past its answer.
 * @return true when both sides agree; the multifd initial packet (or the
 *         stream) may follow on @p fd.
 *
 * Context: as migram_handshake_connect().
 */
bool migram_handshake_connect_fd(int fd, const MigramHandshake *local,
				 MigramHandshake *peer, GError **error);

/**
 * migram_handshake_accept() on a bare fd: a temporary channel over @p fd
 * (not closed) carries the hello and the answer; then hand @p fd on by
 * peer->role (MigramReceiverConfig.multifd_fds for DATA + i, or a channel
 * made over it for MAIN and PREEMPT).
 *
 * @param fd an accepted, blocking socket, nothing read from it yet.
 * @param local as for migram_handshake_accept().
 * @param peer filled with the source's hello, as for
 *        migram_handshake_accept().
 * @param error as for migram_handshake_accept(); MIGRAM_ERROR_PROTOCOL
 *        also when the source sent bytes past its hello before the answer.
 * @return true when both sides agree.
 *
 * Context: as migram_handshake_accept().
 */
bool migram_handshake_accept_fd(int fd, MigramHandshake *local,
				MigramHandshake *peer, GError **error);

/**
 * A role's name: "main", "return-path", "preempt", "data-3", "unknown".
 *
 * @param role a role value.
 * @param buf at least 16 bytes, where data-N names are written.
 * @return @p buf, or a static string.
 *
 * Context: Any thread.
 */
const char *migram_handshake_role_name(uint32_t role, char buf[16]);

G_END_DECLS

#endif /* MIGRAM_HANDSHAKE_H */
