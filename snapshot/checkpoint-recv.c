/* SPDX-License-Identifier: MIT */
/*
 * Checkpoints to a standby, the standby's end (include/migram/
 * checkpoint.h).  An epoch is received whole into the colo_cache (a
 * staging per block, seed 004) and checked against its end record before
 * a single byte of it reaches memory; anything wrong before that point
 * discards the cache, so memory never holds a half-applied epoch.
 */
#include <string.h>

#include "checkpoint-internal.h"
#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/migram.h"
#include "migram/staging.h"

typedef struct {
	char name[MIGRAM_RAM_IDSTR_MAX + 1];
	uint8_t *host;
	uint64_t npages;
	MigramStaging *cache;
} CkRecvBlock;

struct MigramCheckpointReceiver {
	int fd, ack_fd;
	CkRecvBlock *blocks;
	guint nblocks;
	bool have_epoch;
	uint64_t last_epoch;
	uint64_t offset; /* stream bytes consumed */
	uint8_t *buf;    /* one PAGE record's data */
	GBytes *pending; /* the epoch being received: its device state */
	GBytes *device;  /* the last applied one, or NULL */
};

static bool bad(GError **error, uint64_t offset, const char *fmt, ...)
	G_GNUC_PRINTF(3, 4);

static bool bad(GError **error, uint64_t offset, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
		    "checkpoint stream offset %" G_GUINT64_FORMAT ": %s",
		    offset, msg);
	return false;
}

static bool rd(MigramCheckpointReceiver *r, void *buf, size_t len,
	       const char *what, GError **error)
{
	size_t got = 0;
	bool ok = ck_read_all(r->fd, buf, len, &got, false, what, error);
	r->offset += got;
	return ok;
}

static bool read_hello(MigramCheckpointReceiver *r, MigramRamList *list,
		       GError **error)
{
	uint8_t h[16];
	if (!rd(r, h, sizeof(h), "the hello", error))
		return false;
	if (memcmp(h, CK_MAGIC, 8) != 0)
		return bad(error, 0, "not a checkpoint stream (magic)");
	if (snap_get32(h + 8) != CK_VERSION)
		return bad(error, 8, "version %u (this standby reads %u)",
			   snap_get32(h + 8), CK_VERSION);
	uint32_t n = snap_get32(h + 12);
	GArray *mine = g_array_new(FALSE, TRUE, sizeof(CkRecvBlock));
	urcu_memb_read_lock();
	for (MigramRamBlock *rb = migram_ram_list_next_migratable(list, NULL);
	     rb; rb = migram_ram_list_next_migratable(list, rb)) {
		CkRecvBlock b = { .host = migram_ram_block_host(rb),
				  .npages = migram_ram_block_used_length(rb) /
					    SNAP_PAGE };
		g_strlcpy(b.name, migram_ram_block_idstr(rb), sizeof(b.name));
		g_array_append_val(mine, b);
	}
	urcu_memb_read_unlock();
	r->nblocks = mine->len;
	r->blocks = (CkRecvBlock *)(void *)g_array_free(mine, FALSE);
	if (n != r->nblocks || n == 0)
		return bad(error, 12, "%u blocks, this standby has %u", n,
			   r->nblocks);
	for (guint i = 0; i < n; i++) {
		uint8_t e[10];
		char name[256];
		uint64_t at = r->offset;
		if (!rd(r, e, sizeof(e), "the hello's blocks", error))
			return false;
		uint64_t len = snap_get64(e);
		unsigned nl = (unsigned)e[8] | (unsigned)e[9] << 8;
		if (nl == 0 || nl > MIGRAM_RAM_IDSTR_MAX)
			return bad(error, at + 8,
				   "block %u: name length %u (1 to %u)", i, nl,
				   MIGRAM_RAM_IDSTR_MAX);
		if (!rd(r, name, nl, "a block name", error))
			return false;
		name[nl] = '\0';
		CkRecvBlock *b = &r->blocks[i];
		if (strlen(name) != nl || strcmp(name, b->name) != 0)
			return bad(error, at + 10,
				   "block %u is '%s', this standby's is '%s'",
				   i,
				   g_strcanon(name,
					      G_CSET_a_2_z G_CSET_A_2_Z
						      G_CSET_DIGITS "._-:/",
					      '?'),
				   b->name);
		if (len != b->npages * SNAP_PAGE)
			return bad(error, at,
				   "block '%s' is %" G_GUINT64_FORMAT
				   " bytes, this standby's %" G_GUINT64_FORMAT,
				   b->name, len, b->npages * SNAP_PAGE);
	}
	return true;
}

MIGRAM_EXPORT MigramCheckpointReceiver *
migram_checkpoint_receiver_new(MigramRamList *list, int fd, int ack_fd,
			       GError **error)
{
	g_return_val_if_fail(list != NULL && fd >= 0, NULL);
	MigramCheckpointReceiver *r = g_new0(MigramCheckpointReceiver, 1);
	r->fd = fd;
	r->ack_fd = ack_fd;
	bool ok = read_hello(r, list, error);
	for (guint i = 0; ok && i < r->nblocks; i++) {
		r->blocks[i].cache = migram_staging_new(r->blocks[i].name,
							r->blocks[i].npages,
							error);
		ok = r->blocks[i].cache != NULL;
	}
	if (!ok) {
		migram_checkpoint_receiver_free(r);
		return NULL;
	}
	r->buf = g_malloc((size_t)MIGRAM_CHECKPOINT_MAX_RUN * SNAP_PAGE);
	return r;
}

MIGRAM_EXPORT void migram_checkpoint_receiver_free(MigramCheckpointReceiver *r)
{
	if (!r)
		return;
	for (guint i = 0; i < r->nblocks; i++)
		migram_staging_free(r->blocks[i].cache);
	g_free(r->blocks);
	g_free(r->buf);
	if (r->pending)
		g_bytes_unref(r->pending);
	if (r->device)
		g_bytes_unref(r->device);
	g_free(r);
}

MIGRAM_EXPORT bool
migram_checkpoint_receiver_epoch(const MigramCheckpointReceiver *r,
				 uint64_t *epoch)
{
	g_return_val_if_fail(r != NULL, false);
	if (r->have_epoch && epoch)
		*epoch = r->last_epoch;
	return r->have_epoch;
}

static void discard(MigramCheckpointReceiver *r)
{
	for (guint i = 0; i < r->nblocks; i++)
		(void)migram_staging_clear_range(r->blocks[i].cache, 0,
						 r->blocks[i].npages, NULL);
	if (r->pending) {
		g_bytes_unref(r->pending);
		r->pending = NULL;
	}
}

/* A DEVS record at @p at (already read into @p rec): its bytes into
 * r->pending, under the epoch's checksum. */
static bool receive_device(MigramCheckpointReceiver *r, uint64_t e, uint64_t at,
			   const CkRecord *rec, uint64_t *sum,
			   MigramCheckpointStats *st, GError **error)
{
	if (r->pending)
		return bad(error, at,
			   "epoch %" G_GUINT64_FORMAT ": a second device state",
			   e);
	if (rec->block != 0 || rec->b != 0 || rec->a == 0 ||
	    rec->a > MIGRAM_SNAPSHOT_MAX_DEVICE_BYTES)
		return bad(error, at,
			   "epoch %" G_GUINT64_FORMAT
			   ": device state record (block %u, %" G_GUINT64_FORMAT
			   " bytes, %" G_GUINT64_FORMAT
			   "): 1 to %u bytes, block and b 0",
			   e, rec->block, rec->a, rec->b,
			   MIGRAM_SNAPSHOT_MAX_DEVICE_BYTES);
	uint8_t b[CK_REC_LEN];
	ck_rec_put(b, rec);
	*sum = snap_hash_bytes(*sum, b, CK_REC_LEN);
	size_t len = (size_t)rec->a;
	uint8_t *data = g_malloc(len);
	if (!rd(r, data, len, "the device state", error)) {
		g_free(data);
		return false;
	}
	*sum = snap_hash_bytes(*sum, data, len);
	r->pending = g_bytes_new_take(data, len);
	st->bytes += len;
	return true;
}

/* The records after EPOC up to and including DONE, into the cache. */
static bool receive_pages(MigramCheckpointReceiver *r, uint64_t e, uint64_t sum,
			  MigramCheckpointStats *st, GError **error)
{
	for (;;) {
		uint8_t b[CK_REC_LEN];
		CkRecord rec;
		uint64_t at = r->offset;
		if (!rd(r, b, CK_REC_LEN, "a record", error))
			return false;
		st->bytes += CK_REC_LEN;
		ck_rec_get(b, &rec);
		if (rec.tag == CK_TAG_DONE) {
			if (rec.block != 0)
				return bad(error, at,
					   "epoch %" G_GUINT64_FORMAT
					   ": end record with block %u",
					   e, rec.block);
			if (rec.a != st->pages)
				return bad(
					error, at,
					"epoch %" G_GUINT64_FORMAT
					": end record says %" G_GUINT64_FORMAT
					" pages, %" G_GUINT64_FORMAT " arrived",
					e, rec.a, st->pages);
			if (rec.b != sum)
				return bad(
					error, at,
					"epoch %" G_GUINT64_FORMAT
					": checksum mismatch over its %" G_GUINT64_FORMAT
					" pages",
					e, st->pages);
			return true;
		}
		if (rec.tag == CK_TAG_DEVS) {
			if (!receive_device(r, e, at, &rec, &sum, st, error))
				return false;
			continue;
		}
		if (rec.tag != CK_TAG_PAGE)
			return bad(error, at,
				   "epoch %" G_GUINT64_FORMAT
				   ": unknown record tag 0x%08x",
				   e, rec.tag);
		if (rec.block >= r->nblocks)
			return bad(error, at,
				   "epoch %" G_GUINT64_FORMAT
				   ": block %u (there are %u)",
				   e, rec.block, r->nblocks);
		CkRecvBlock *blk = &r->blocks[rec.block];
		if (rec.b == 0 || rec.b > MIGRAM_CHECKPOINT_MAX_RUN ||
		    rec.a >= blk->npages || rec.b > blk->npages - rec.a)
			return bad(error, at,
				   "epoch %" G_GUINT64_FORMAT
				   ": block '%s': pages [%" G_GUINT64_FORMAT
				   ", +%" G_GUINT64_FORMAT
				   ") outside its %" G_GUINT64_FORMAT
				   " pages or over %u",
				   e, blk->name, rec.a, rec.b, blk->npages,
				   MIGRAM_CHECKPOINT_MAX_RUN);
		sum = snap_hash_bytes(sum, b, CK_REC_LEN);
		size_t len = (size_t)rec.b * SNAP_PAGE;
		if (!rd(r, r->buf, len, "a page record's data", error))
			return false;
		sum = snap_hash_bytes(sum, r->buf, len);
		if (!migram_staging_copy(blk->cache, r->buf, rec.a, rec.b,
					 error))
			return false;
		st->bytes += len;
		st->pages += rec.b;
	}
}

/* The whole epoch is in the cache and checked: copy it into memory. */
static void apply(MigramCheckpointReceiver *r)
{
	for (guint i = 0; i < r->nblocks; i++) {
		CkRecvBlock *b = &r->blocks[i];
		uint64_t first, n;
		while (migram_staging_first_data_range(b->cache, 4096, &first,
						       &n)) {
			const void *src = migram_staging_get_slice(b->cache,
								   first, n,
								   NULL);
			memcpy(b->host + first * SNAP_PAGE, src, n * SNAP_PAGE);
			(void)migram_staging_clear_range(b->cache, first, n,
							 NULL);
		}
	}
}

MIGRAM_EXPORT bool migram_checkpoint_receiver_next(MigramCheckpointReceiver *r,
						   MigramCheckpointStats *stats,
						   bool *closed, GError **error)
{
	g_return_val_if_fail(r != NULL && closed != NULL, false);
	*closed = false;
	uint8_t b[CK_REC_LEN];
	size_t got = 0;
	uint64_t at = r->offset;
	bool ok = ck_read_all(r->fd, b, CK_REC_LEN, &got, true, "a record",
			      error);
	r->offset += got;
	if (ok && got == 0) {
		*closed = true;
		return true;
	}
	if (!ok)
		return false;
	CkRecord rec;
	ck_rec_get(b, &rec);
	uint64_t want = r->have_epoch ? r->last_epoch + 1 : 0;
	if (rec.tag != CK_TAG_EPOCH)
		return bad(error, at,
			   "expected the start of epoch %" G_GUINT64_FORMAT
			   ", found tag 0x%08x",
			   want, rec.tag);
	if (rec.a != want || rec.block != 0 || rec.b != 0)
		return bad(error, at,
			   "epoch %" G_GUINT64_FORMAT
			   " starts where epoch %" G_GUINT64_FORMAT
			   " was due (block %u, %" G_GUINT64_FORMAT ")",
			   rec.a, want, rec.block, rec.b);
	MigramCheckpointStats st = { .epoch = want, .bytes = CK_REC_LEN };
	uint64_t t0 = snap_now_ns();
	if (!receive_pages(r, want, snap_hash_bytes(CK_SEED, b, CK_REC_LEN),
			   &st, error)) {
		discard(r);
		g_prefix_error(error,
			       "checkpoint epoch %" G_GUINT64_FORMAT
			       " discarded (memory stays at %s): ",
			       want,
			       r->have_epoch ? "the previous epoch"
					     : "no epoch");
		return false;
	}
	uint64_t t1 = snap_now_ns();
	apply(r);
	if (r->pending) {
		if (r->device)
			g_bytes_unref(r->device);
		r->device = g_steal_pointer(&r->pending);
	}
	st.send_ns = t1 - t0;
	st.ack_ns = snap_now_ns() - t1;
	r->have_epoch = true;
	r->last_epoch = want;
	if (stats)
		*stats = st;
	if (r->ack_fd >= 0) {
		CkRecord ack = { .tag = CK_TAG_ACK, .a = want, .b = st.pages };
		ck_rec_put(b, &ack);
		if (!ck_write_all(r->ack_fd, b, CK_REC_LEN, "the ack", error)) {
			g_prefix_error(error,
				       "checkpoint epoch %" G_GUINT64_FORMAT
				       " (applied): ",
				       want);
			return false;
		}
	}
	return true;
}

MIGRAM_EXPORT GBytes *
migram_checkpoint_receiver_device_state(const MigramCheckpointReceiver *r)
{
	g_return_val_if_fail(r != NULL, NULL);
	return r->device ? g_bytes_ref(r->device) : NULL;
}
