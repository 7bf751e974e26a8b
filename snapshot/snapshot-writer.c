/* SPDX-License-Identifier: MIT */
/*
 * Snapshot files: the writer.  start() fixes the layout (header and table
 * with room for a device descriptor, bitmaps and hash arrays, then each
 * block's pages 1 MiB aligned; the device state goes after them) and
 * sizes the file, sparse; pages go straight to their fixed offsets; finish
 * writes the metadata and, last, the header with its magic, then fsyncs.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "snapshot-internal.h"

typedef struct {
	SnapBlock b;
	uint64_t *hashes;   /* npages, or NULL */
	unsigned long *hot; /* npages bits, or NULL */
} WBlock;

struct MigramSnapshotWriter {
	int fd;
	char *path;
	MigramSnapshotParams params;
	GArray *blocks; /* WBlock */
	bool started, finished;
	uint64_t file_size;
	GBytes *device; /* or NULL */
};

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

MIGRAM_EXPORT MigramSnapshotWriter *
migram_snapshot_writer_new(const char *path, const MigramSnapshotParams *params,
			   GError **error)
{
	g_return_val_if_fail(path != NULL && params != NULL, NULL);
	if (params->diff && params->parent_id == 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%s: a diff snapshot needs its parent's id", path);
		return NULL;
	}
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		int e = errno;
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "%s: create: %s", path, g_strerror(e));
		return NULL;
	}
	MigramSnapshotWriter *w = g_new0(MigramSnapshotWriter, 1);
	w->fd = fd;
	w->path = g_strdup(path);
	w->params = *params;
	w->blocks = g_array_new(FALSE, TRUE, sizeof(WBlock));
	return w;
}

MIGRAM_EXPORT void migram_snapshot_writer_free(MigramSnapshotWriter *w)
{
	if (!w)
		return;
	close(w->fd);
	for (guint i = 0; i < w->blocks->len; i++) {
		WBlock *wb = &g_array_index(w->blocks, WBlock, i);
		migram_bitmap_free(wb->b.bitmap);
		migram_bitmap_free(wb->hot);
		g_free(wb->hashes);
	}
	g_array_unref(w->blocks);
	if (w->device)
		g_bytes_unref(w->device);
	g_free(w->path);
	g_free(w);
}

static bool winvalid(GError **error, const MigramSnapshotWriter *w,
		     const char *what)
{
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID, "%s: %s",
		    w->path, what);
	return false;
}

MIGRAM_EXPORT bool
migram_snapshot_writer_add_block(MigramSnapshotWriter *w, const char *name,
				 uint64_t used_length, uint64_t page_size,
				 guint *index, GError **error)
{
	g_return_val_if_fail(w != NULL && name != NULL, false);
	size_t len = strlen(name);
	if (w->started)
		return winvalid(error, w, "add_block after start");
	if (w->blocks->len >= MIGRAM_SNAPSHOT_MAX_BLOCKS)
		return winvalid(error, w, "too many blocks");
	if (len == 0 || len > MIGRAM_RAM_IDSTR_MAX)
		return winvalid(error, w, "block name of 0 or over 255 bytes");
	if (used_length == 0 || used_length % SNAP_PAGE ||
	    used_length > MIGRAM_SNAPSHOT_MAX_BLOCK_BYTES ||
	    page_size < SNAP_PAGE || (page_size & (page_size - 1))) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%s: block '%s': bad length %" G_GUINT64_FORMAT
			    " or page size %" G_GUINT64_FORMAT,
			    w->path, name, used_length, page_size);
		return false;
	}
	for (guint i = 0; i < w->blocks->len; i++)
		if (strcmp(g_array_index(w->blocks, WBlock, i).b.name, name) ==
		    0) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_EXISTS,
				    "%s: block '%s' added twice", w->path,
				    name);
			return false;
		}
	WBlock wb = { 0 };
	memcpy(wb.b.name, name, len + 1);
	wb.b.used_length = used_length;
	wb.b.page_size = page_size;
	wb.b.npages = used_length / SNAP_PAGE;
	wb.b.bitmap = migram_bitmap_new((size_t)wb.b.npages);
	if (!wb.b.bitmap) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "%s: block '%s': bitmap", w->path, name);
		return false;
	}
	if (index)
		*index = w->blocks->len;
	g_array_append_val(w->blocks, wb);
	return true;
}

MIGRAM_EXPORT bool migram_snapshot_writer_add_list(MigramSnapshotWriter *w,
						   MigramRamList *list,
						   GError **error)
{
	bool ok = true;
	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next_migratable(list, NULL);
	     b && ok; b = migram_ram_list_next_migratable(list, b))
		ok = migram_snapshot_writer_add_block(
			w, migram_ram_block_idstr(b),
			migram_ram_block_used_length(b),
			migram_ram_block_page_size(b), NULL, error);
	urcu_memb_read_unlock();
	return ok;
}

MIGRAM_EXPORT bool migram_snapshot_writer_start(MigramSnapshotWriter *w,
						GError **error)
{
	g_return_val_if_fail(w != NULL, false);
	if (w->started)
		return winvalid(error, w, "started twice");
	if (w->blocks->len == 0)
		return winvalid(error, w, "no blocks");
	/* Room for the device descriptor, used or not: the state may be
	 * set until finish(). */
	uint64_t at = SNAP_HEADER_LEN +
		      (uint64_t)w->blocks->len * SNAP_ENTRY_LEN +
		      SNAP_DEVICE_LEN;
	for (guint i = 0; i < w->blocks->len; i++) {
		SnapBlock *b = &g_array_index(w->blocks, WBlock, i).b;
		b->bitmap_offset = at;
		at += migram_bitmap_le64_words((size_t)b->npages) * 8;
		b->hashes_offset = at; /* reserved; 0 in the table if unset */
		at += b->npages * 8;
		b->hot_offset = at; /* the same */
		at += migram_bitmap_le64_words((size_t)b->npages) * 8;
	}
	for (guint i = 0; i < w->blocks->len; i++) {
		SnapBlock *b = &g_array_index(w->blocks, WBlock, i).b;
		at = align_up(at, MIGRAM_SNAPSHOT_ALIGN);
		b->pages_offset = at;
		at += b->used_length;
	}
	w->file_size = at;
	if (ftruncate(w->fd, (off_t)at) < 0) {
		int e = errno;
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "%s: sizing to %" G_GUINT64_FORMAT " bytes: %s",
			    w->path, at, g_strerror(e));
		return false;
	}
	w->started = true;
	return true;
}

SnapBlock *snap_writer_block(MigramSnapshotWriter *w, guint index,
			     GError **error)
{
	if (!w->started || w->finished) {
		winvalid(error, w, "not started, or already finished");
		return NULL;
	}
	if (index >= w->blocks->len) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%s: no block %u", w->path, index);
		return NULL;
	}
	return &g_array_index(w->blocks, WBlock, index).b;
}

guint snap_writer_block_count(const MigramSnapshotWriter *w)
{
	return w->blocks->len;
}

int snap_writer_fd(const MigramSnapshotWriter *w)
{
	return w->fd;
}

const char *snap_writer_path(const MigramSnapshotWriter *w)
{
	return w->path;
}

MIGRAM_EXPORT bool migram_snapshot_writer_put_pages(MigramSnapshotWriter *w,
						    guint index, uint64_t first,
						    uint64_t npages,
						    const void *data,
						    GError **error)
{
	g_return_val_if_fail(w != NULL && data != NULL, false);
	SnapBlock *b = snap_writer_block(w, index, error);
	if (!b)
		return false;
	if (npages == 0 || first > b->npages || npages > b->npages - first) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%s: block '%s': pages [%" G_GUINT64_FORMAT
			    ", +%" G_GUINT64_FORMAT
			    ") outside its %" G_GUINT64_FORMAT,
			    w->path, b->name, first, npages, b->npages);
		return false;
	}
	if (!snap_pwrite_all(w->fd, data, (size_t)(npages * SNAP_PAGE),
			     b->pages_offset + first * SNAP_PAGE, "pages",
			     w->path, error))
		return false;
	migram_bitmap_set(b->bitmap, (size_t)first, (size_t)npages);
	return true;
}

MIGRAM_EXPORT bool migram_snapshot_writer_put_staging(
	MigramSnapshotWriter *w, guint index, MigramStaging *st,
	uint64_t max_run, bool release, uint64_t *written, GError **error)
{
	g_return_val_if_fail(w != NULL && st != NULL && max_run > 0, false);
	SnapBlock *b = snap_writer_block(w, index, error);
	if (!b)
		return false;
	uint64_t from = 0, first, n, total = 0;
	while (migram_staging_next_data_range(st, from, max_run, &first, &n)) {
		if (first + n > b->npages) {
			g_set_error(
				error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
				"%s: block '%s': staging page %" G_GUINT64_FORMAT
				" past its %" G_GUINT64_FORMAT " pages",
				w->path, b->name, first + n - 1, b->npages);
			return false;
		}
		const void *src = migram_staging_get_slice(st, first, n, error);
		if (!src || !migram_snapshot_writer_put_pages(w, index, first,
							      n, src, error))
			return false;
		if (release && !migram_staging_clear_range(st, first, n, error))
			return false;
		total += n;
		from = first + n;
	}
	if (written)
		*written = total;
	return true;
}

MIGRAM_EXPORT bool migram_snapshot_writer_set_hashes(MigramSnapshotWriter *w,
						     guint index,
						     const uint64_t *hashes,
						     GError **error)
{
	g_return_val_if_fail(w != NULL && hashes != NULL, false);
	if (!snap_writer_block(w, index, error))
		return false;
	WBlock *wb = &g_array_index(w->blocks, WBlock, index);
	g_free(wb->hashes);
	wb->hashes = g_memdup2(hashes, (gsize)(wb->b.npages * 8));
	return true;
}

MIGRAM_EXPORT bool migram_snapshot_writer_set_hot(MigramSnapshotWriter *w,
						  guint index,
						  const unsigned long *hot,
						  GError **error)
{
	g_return_val_if_fail(w != NULL && hot != NULL, false);
	if (!snap_writer_block(w, index, error))
		return false;
	WBlock *wb = &g_array_index(w->blocks, WBlock, index);
	if (!wb->hot)
		wb->hot = migram_bitmap_new((size_t)wb->b.npages);
	migram_bitmap_copy(wb->hot, hot, (size_t)wb->b.npages);
	return true;
}

static void put_entry(uint8_t *e, const WBlock *wb)
{
	const SnapBlock *b = &wb->b;
	size_t len = strlen(b->name);
	snap_put64(e, b->used_length);
	snap_put64(e + 8, b->page_size);
	snap_put64(e + 16, b->bitmap_offset);
	snap_put64(e + 24, wb->hashes ? b->hashes_offset : 0);
	snap_put64(e + 32, b->pages_offset);
	snap_put64(e + 40,
		   migram_bitmap_count(b->bitmap, 0, (size_t)b->npages));
	e[48] = (uint8_t)len;
	e[49] = (uint8_t)(len >> 8);
	memcpy(e + SNAP_NAME_AT, b->name, len);
	snap_put64(e + 312, wb->hot ? b->hot_offset : 0);
}

static bool write_metadata(MigramSnapshotWriter *w, GError **error)
{
	for (guint i = 0; i < w->blocks->len; i++) {
		WBlock *wb = &g_array_index(w->blocks, WBlock, i);
		size_t words = migram_bitmap_le64_words((size_t)wb->b.npages);
		g_autofree uint64_t *le = g_new(uint64_t, words);
		migram_bitmap_to_le64(le, wb->b.bitmap, (size_t)wb->b.npages);
		if (!snap_pwrite_all(w->fd, le, words * 8, wb->b.bitmap_offset,
				     "a bitmap", w->path, error))
			return false;
		if (wb->hot) {
			migram_bitmap_to_le64(le, wb->hot,
					      (size_t)wb->b.npages);
			if (!snap_pwrite_all(w->fd, le, words * 8,
					     wb->b.hot_offset, "a hot bitmap",
					     w->path, error))
				return false;
		}
		if (!wb->hashes)
			continue;
		g_autofree uint8_t *raw = g_malloc((gsize)(wb->b.npages * 8));
		for (uint64_t p = 0; p < wb->b.npages; p++)
			snap_put64(raw + p * 8, wb->hashes[p]);
		if (!snap_pwrite_all(w->fd, raw, (size_t)(wb->b.npages * 8),
				     wb->b.hashes_offset, "page hashes",
				     w->path, error))
			return false;
	}
	return true;
}

MIGRAM_EXPORT bool migram_snapshot_writer_set_device_state(
	MigramSnapshotWriter *w, const void *data, size_t len, GError **error)
{
	g_return_val_if_fail(w != NULL && (data != NULL || len == 0), false);
	if (w->finished)
		return winvalid(error, w, "set_device_state after finish");
	if (len == 0 || len > MIGRAM_SNAPSHOT_MAX_DEVICE_BYTES) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%s: device state of %zu bytes (1 to %u)", w->path,
			    len, MIGRAM_SNAPSHOT_MAX_DEVICE_BYTES);
		return false;
	}
	if (w->device)
		g_bytes_unref(w->device);
	w->device = g_bytes_new(data, len);
	return true;
}

/* The device descriptor (after the entries) and the state itself, at the
 * end of the file. */
static bool write_device(MigramSnapshotWriter *w, uint8_t *desc, GError **error)
{
	gsize len;
	const uint8_t *data = g_bytes_get_data(w->device, &len);
	uint64_t off = align_up(w->file_size, SNAP_PAGE);
	snap_put64(desc, off);
	snap_put64(desc + 8, len);
	snap_put64(desc + 16, snap_hash_bytes(0, data, len));
	snap_put64(desc + 24, 0);
	return snap_pwrite_all(w->fd, data, len, off, "the device state",
			       w->path, error);
}

MIGRAM_EXPORT bool migram_snapshot_writer_finish(MigramSnapshotWriter *w,
						 uint64_t *snapshot_id,
						 GError **error)
{
	g_return_val_if_fail(w != NULL, false);
	if (!w->started || w->finished)
		return winvalid(error, w, "finish: not started, or twice");
	w->finished = true;
	if (!write_metadata(w, error))
		return false;
	size_t entries = (size_t)w->blocks->len * SNAP_ENTRY_LEN;
	size_t table_len = entries + (w->device ? SNAP_DEVICE_LEN : 0);
	g_autofree uint8_t *table = g_malloc0(table_len);
	for (guint i = 0; i < w->blocks->len; i++)
		put_entry(table + (size_t)i * SNAP_ENTRY_LEN,
			  &g_array_index(w->blocks, WBlock, i));
	if (w->device && !write_device(w, table + entries, error))
		return false;
	uint64_t id;
	do
		id = ((uint64_t)g_random_int() << 32) | g_random_int();
	while (id == 0);
	uint8_t h[SNAP_HEADER_LEN] = { 0 };
	for (int i = 0; i < 8; i++)
		h[i] = (uint8_t)MIGRAM_SNAPSHOT_MAGIC[i];
	snap_put32(h + 8, MIGRAM_SNAPSHOT_VERSION);
	snap_put32(h + 12, (w->params.diff ? SNAP_FLAG_DIFF : 0) |
				   (w->device ? SNAP_FLAG_DEVICE : 0));
	snap_put32(h + 16, w->blocks->len);
	snap_put32(h + 20, SNAP_PAGE);
	snap_put64(h + 24, id);
	snap_put64(h + 32, w->params.diff ? w->params.parent_id : 0);
	snap_put64(h + 40, w->params.epoch);
	snap_put64(h + 48, table_len);
	snap_put64(h + SNAP_CHECK_AT, snap_header_check(h, table, table_len));
	if (!snap_pwrite_all(w->fd, table, table_len, SNAP_HEADER_LEN,
			     "the block table", w->path, error))
		return false;
	/* Everything else reaches the disk before the magic does. */
	if (fdatasync(w->fd) < 0 ||
	    !snap_pwrite_all(w->fd, h, sizeof(h), 0, "the header", w->path,
			     error) ||
	    fdatasync(w->fd) < 0) {
		if (error && !*error) {
			int e = errno;
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "%s: fdatasync: %s", w->path,
				    g_strerror(e));
		}
		return false;
	}
	if (snapshot_id)
		*snapshot_id = id;
	return true;
}
