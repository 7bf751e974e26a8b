/* SPDX-License-Identifier: MIT */
/*
 * Checkpoints to a standby, the primary's end (include/migram/
 * checkpoint.h): stage an epoch's pages during the pause, ship them from
 * staging after it, wait for the standby's ack.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "checkpoint-internal.h"
#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/migram.h"
#include "migram/staging.h"

typedef struct {
	MigramRamBlock *block;
	MigramStaging *st;
	uint64_t npages;
} CkSendBlock;

struct MigramCheckpointSender {
	int fd;
	CkSendBlock *blocks;
	guint nblocks;
	uint64_t next_epoch;
	bool staged, broken;
	MigramCheckpointRunHook hook;
	void *hook_opaque;
	GBytes *device; /* the staged epoch's device state, or NULL */
};

bool ck_write_all(int fd, const void *buf, size_t len, const char *what,
		  GError **error)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == ENOTSOCK)
			n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "checkpoint: sending %s: %s", what,
				    n < 0 ? g_strerror(errno) : "closed");
			return false;
		}
		p += n;
		len -= (size_t)n;
	}
	return true;
}

bool ck_read_all(int fd, void *buf, size_t len, size_t *got, bool eof_ok,
		 const char *what, GError **error)
{
	uint8_t *p = buf;
	size_t done = 0;
	while (done < len) {
		ssize_t n = read(fd, p + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "checkpoint: receiving %s: %s", what,
				    g_strerror(errno));
			break;
		}
		if (n == 0) {
			if (done == 0 && eof_ok) {
				if (got)
					*got = 0;
				return true;
			}
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "checkpoint: the connection ended inside "
				    "%s (%zu of %zu bytes)",
				    what, done, len);
			break;
		}
		done += (size_t)n;
	}
	if (got)
		*got = done;
	return done == len;
}

MIGRAM_EXPORT MigramCheckpointSender *
migram_checkpoint_sender_new(MigramRamList *list, int fd, GError **error)
{
	g_return_val_if_fail(list != NULL && fd >= 0, NULL);
	MigramCheckpointSender *s = g_new0(MigramCheckpointSender, 1);
	s->fd = fd;
	GByteArray *hello = g_byte_array_new();
	GArray *blocks = g_array_new(FALSE, TRUE, sizeof(CkSendBlock));
	uint8_t b[16];
	for (unsigned i = 0; i < 8; i++)
		b[i] = (uint8_t)CK_MAGIC[i];
	snap_put32(b + 8, CK_VERSION);
	snap_put32(b + 12, 0); /* patched below */
	g_byte_array_append(hello, b, 16);
	urcu_memb_read_lock();
	for (MigramRamBlock *rb = migram_ram_list_next_migratable(list, NULL);
	     rb; rb = migram_ram_list_next_migratable(list, rb)) {
		const char *name = migram_ram_block_idstr(rb);
		CkSendBlock cb = { .block = rb,
				   .npages = migram_ram_block_used_length(rb) /
					     SNAP_PAGE };
		snap_put64(b, migram_ram_block_used_length(rb));
		snap_put32(b + 8, (uint32_t)strlen(name));
		g_byte_array_append(hello, b, 10);
		g_byte_array_append(hello, (const uint8_t *)name,
				    (guint)strlen(name));
		g_array_append_val(blocks, cb);
	}
	urcu_memb_read_unlock();
	s->nblocks = blocks->len;
	s->blocks = (CkSendBlock *)(void *)g_array_free(blocks, FALSE);
	snap_put32(hello->data + 12, s->nblocks);
	bool ok = true;
	if (s->nblocks == 0 || s->nblocks > CK_MAX_BLOCKS) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "checkpoint sender: %u migratable blocks (1 to %u)",
			    s->nblocks, CK_MAX_BLOCKS);
		ok = false;
	}
	for (guint i = 0; ok && i < s->nblocks; i++) {
		s->blocks[i].st =
			migram_staging_new_for_block(s->blocks[i].block, error);
		ok = s->blocks[i].st != NULL;
	}
	if (ok) {
		int one = 1;
		/* Small records (DONE, ACK) must not wait for Nagle. */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
				 sizeof(one));
		ok = ck_write_all(fd, hello->data, hello->len, "the hello",
				  error);
	}
	g_byte_array_free(hello, TRUE);
	if (!ok) {
		migram_checkpoint_sender_free(s);
		return NULL;
	}
	return s;
}

MIGRAM_EXPORT void migram_checkpoint_sender_free(MigramCheckpointSender *s)
{
	if (!s)
		return;
	for (guint i = 0; i < s->nblocks; i++)
		migram_staging_free(s->blocks[i].st);
	g_free(s->blocks);
	if (s->device)
		g_bytes_unref(s->device);
	g_free(s);
}

MIGRAM_EXPORT bool migram_checkpoint_sender_populate(MigramCheckpointSender *s,
						     GError **error)
{
	g_return_val_if_fail(s != NULL, false);
	for (guint i = 0; i < s->nblocks; i++)
		if (!migram_staging_populate(s->blocks[i].st, 0,
					     s->blocks[i].npages, error))
			return false;
	return true;
}

MIGRAM_EXPORT bool
migram_checkpoint_sender_stage(MigramCheckpointSender *s,
			       const unsigned long *const *dirty,
			       MigramStageStats *stats, GError **error)
{
	g_return_val_if_fail(s != NULL, false);
	if (s->staged || s->broken) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "checkpoint epoch %" G_GUINT64_FORMAT ": %s",
			    s->next_epoch,
			    s->broken ? "the connection failed before"
				      : "already staged, not shipped");
		return false;
	}
	bool full = s->next_epoch == 0;
	if (!full && !dirty) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "checkpoint epoch %" G_GUINT64_FORMAT
			    ": no dirty bitmaps",
			    s->next_epoch);
		return false;
	}
	for (guint i = 0; i < s->nblocks; i++) {
		if (!full && !dirty[i]) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
				    "checkpoint epoch %" G_GUINT64_FORMAT
				    ": no dirty bitmap for block '%s'",
				    s->next_epoch,
				    migram_ram_block_idstr(s->blocks[i].block));
			return false;
		}
		if (!migram_snapshot_stage_block(s->blocks[i].st,
						 s->blocks[i].block,
						 full ? NULL : dirty[i], NULL,
						 stats, error))
			return false;
	}
	s->staged = true;
	return true;
}

MIGRAM_EXPORT void migram_checkpoint_sender_set_run_hook(
	MigramCheckpointSender *s, MigramCheckpointRunHook hook, void *opaque)
{
	g_return_if_fail(s != NULL);
	s->hook = hook;
	s->hook_opaque = opaque;
}

MIGRAM_EXPORT bool migram_checkpoint_sender_set_device_state(
	MigramCheckpointSender *s, const void *data, size_t len, GError **error)
{
	g_return_val_if_fail(s != NULL && (data != NULL || len == 0), false);
	if (!s->staged || s->broken) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "checkpoint epoch %" G_GUINT64_FORMAT
			    ": device state with %s",
			    s->next_epoch,
			    s->broken ? "the connection failed"
				      : "nothing staged");
		return false;
	}
	if (len == 0 || len > MIGRAM_SNAPSHOT_MAX_DEVICE_BYTES) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "checkpoint epoch %" G_GUINT64_FORMAT
			    ": device state of %zu bytes (1 to %u)",
			    s->next_epoch, len,
			    MIGRAM_SNAPSHOT_MAX_DEVICE_BYTES);
		return false;
	}
	if (s->device)
		g_bytes_unref(s->device);
	s->device = g_bytes_new(data, len);
	return true;
}

MIGRAM_EXPORT uint64_t
migram_checkpoint_sender_next_epoch(const MigramCheckpointSender *s)
{
	g_return_val_if_fail(s != NULL, 0);
	return s->next_epoch;
}

static bool send_record(MigramCheckpointSender *s, const CkRecord *r,
			uint64_t *sum, uint64_t *bytes, GError **error)
{
	uint8_t b[CK_REC_LEN];
	ck_rec_put(b, r);
	if (sum)
		*sum = snap_hash_bytes(*sum, b, CK_REC_LEN);
	*bytes += CK_REC_LEN;
	return ck_write_all(s->fd, b, CK_REC_LEN, "a record", error);
}

static bool ship(MigramCheckpointSender *s, MigramCheckpointStats *st,
		 GError **error)
{
	uint64_t e = s->next_epoch, sum = CK_SEED;
	CkRecord r = { .tag = CK_TAG_EPOCH, .a = e };
	uint64_t t0 = snap_now_ns();
	if (!send_record(s, &r, &sum, &st->bytes, error))
		return false;
	for (guint i = 0; i < s->nblocks; i++) {
		uint64_t first, n;
		while (migram_staging_first_data_range(
			s->blocks[i].st, MIGRAM_CHECKPOINT_MAX_RUN, &first,
			&n)) {
			const void *data = migram_staging_get_slice(
				s->blocks[i].st, first, n, error);
			r = (CkRecord){ .tag = CK_TAG_PAGE,
					.block = i,
					.a = first,
					.b = n };
			if (!data ||
			    !send_record(s, &r, &sum, &st->bytes, error))
				return false;
			sum = snap_hash_bytes(sum, data, n * SNAP_PAGE);
			if (!ck_write_all(s->fd, data, n * SNAP_PAGE, "pages",
					  error))
				return false;
			st->bytes += n * SNAP_PAGE;
			st->pages += n;
			/* Released as sent (its error is only accounting). */
			(void)migram_staging_clear_range(s->blocks[i].st, first,
							 n, NULL);
			if (s->hook)
				s->hook(e, st->pages, s->hook_opaque);
		}
	}
	if (s->device) {
		gsize len;
		const void *d = g_bytes_get_data(s->device, &len);
		r = (CkRecord){ .tag = CK_TAG_DEVS, .a = len };
		if (!send_record(s, &r, &sum, &st->bytes, error) ||
		    !ck_write_all(s->fd, d, len, "the device state", error))
			return false;
		sum = snap_hash_bytes(sum, d, len);
		st->bytes += len;
	}
	r = (CkRecord){ .tag = CK_TAG_DONE, .a = st->pages, .b = sum };
	if (!send_record(s, &r, NULL, &st->bytes, error))
		return false;
	uint64_t t1 = snap_now_ns();
	st->send_ns = t1 - t0;
	uint8_t b[CK_REC_LEN];
	if (!ck_read_all(s->fd, b, CK_REC_LEN, NULL, false, "the ack", error))
		return false;
	st->ack_ns = snap_now_ns() - t1;
	ck_rec_get(b, &r);
	if (r.tag != CK_TAG_ACK || r.a != e || r.b != st->pages) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "checkpoint epoch %" G_GUINT64_FORMAT
			    ": bad ack (tag 0x%08x, epoch %" G_GUINT64_FORMAT
			    ", %" G_GUINT64_FORMAT
			    " pages of %" G_GUINT64_FORMAT ")",
			    e, r.tag, r.a, r.b, st->pages);
		return false;
	}
	return true;
}

MIGRAM_EXPORT bool migram_checkpoint_sender_ship(MigramCheckpointSender *s,
						 MigramCheckpointStats *stats,
						 GError **error)
{
	g_return_val_if_fail(s != NULL, false);
	if (!s->staged || s->broken) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "checkpoint epoch %" G_GUINT64_FORMAT ": %s",
			    s->next_epoch,
			    s->broken ? "the connection failed before"
				      : "nothing staged");
		return false;
	}
	MigramCheckpointStats st = { .epoch = s->next_epoch };
	if (!ship(s, &st, error)) {
		s->broken = true;
		g_prefix_error(error,
			       "checkpoint epoch %" G_GUINT64_FORMAT ": ",
			       s->next_epoch);
		return false;
	}
	s->staged = false;
	s->next_epoch++;
	if (s->device) {
		g_bytes_unref(s->device);
		s->device = NULL;
	}
	if (stats)
		*stats = st;
	return true;
}
