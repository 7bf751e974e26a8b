/* SPDX-License-Identifier: MIT */
/*
 * Snapshot files: the reader.  migram_snapshot_open() checks everything a
 * later access relies on (header, check, table, every region inside the
 * file and apart from the others, every bitmap's tail and count), so the
 * accessors only index validated arrays and pread inside the file.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "migram/verify.h"
#include "snapshot-internal.h"

#define K1 0x9e3779b97f4a7c15ull
#define K2 0xff51afd7ed558ccdull

uint64_t snap_hash_bytes(uint64_t seed, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t h = seed ^ (len * K1);
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		h = (h ^ (w * K1)) * K2;
		h ^= h >> 29;
	}
	for (; i < len; i++)
		h = (h ^ p[i]) * K1;
	h ^= h >> 33;
	h *= K2;
	h ^= h >> 33;
	return h;
}

MIGRAM_EXPORT uint64_t migram_snapshot_page_hash(const void *page)
{
	/* the library's one page hash, the one verification uses */
	return migram_verify_page_hash(page, SNAP_PAGE);
}

uint64_t snap_header_check(const uint8_t *header, const uint8_t *table,
			   size_t table_len)
{
	return snap_hash_bytes(snap_hash_bytes(1, header, SNAP_CHECK_AT), table,
			       table_len);
}

uint64_t snap_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

bool snap_pread_all(int fd, void *buf, size_t len, uint64_t off,
		    const char *what, const char *file, GError **error)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = errno;
			g_set_error(
				error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				"%s: reading %s at offset %" G_GUINT64_FORMAT
				": %s",
				file, what, off,
				n < 0 ? g_strerror(e) : "end of file");
			return false;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return true;
}

bool snap_pwrite_all(int fd, const void *buf, size_t len, uint64_t off,
		     const char *what, const char *file, GError **error)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = errno;
			g_set_error(
				error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				"%s: writing %s at offset %" G_GUINT64_FORMAT
				": %s",
				file, what, off,
				n < 0 ? g_strerror(e) : "no progress");
			return false;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return true;
}

static bool bad(GError **error, const MigramSnapshotFile *f, uint64_t off,
		const char *fmt, ...) G_GNUC_PRINTF(4, 5);

static bool bad(GError **error, const MigramSnapshotFile *f, uint64_t off,
		const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
		    "%s: offset %" G_GUINT64_FORMAT ": %s", f->name, off, msg);
	return false;
}

typedef struct {
	uint64_t start, len;
	const char *what;
	guint block;
} Region;

static gint region_cmp(gconstpointer a, gconstpointer b)
{
	const Region *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

#define NOT_A_BLOCK G_MAXUINT /* Region.block of the file's own parts */

static char *region_name(const Region *r)
{
	return r->block == NOT_A_BLOCK
		       ? g_strdup(r->what)
		       : g_strdup_printf("block %u's %s", r->block, r->what);
}

/* Every region inside the file and none overlapping another. */
static bool check_regions(MigramSnapshotFile *f, GArray *regions,
			  GError **error)
{
	for (guint i = 0; i < regions->len; i++) {
		Region *r = &g_array_index(regions, Region, i);
		if (r->start > f->file_size ||
		    r->len > f->file_size - r->start) {
			g_autofree char *n = region_name(r);
			return bad(
				error, f, r->start,
				"%s (%" G_GUINT64_FORMAT
				" bytes) runs past the end of the file (%" G_GUINT64_FORMAT
				" bytes): truncated?",
				n, r->len, f->file_size);
		}
	}
	g_array_sort(regions, region_cmp);
	for (guint i = 1; i < regions->len; i++) {
		Region *p = &g_array_index(regions, Region, i - 1);
		Region *r = &g_array_index(regions, Region, i);
		if (p->start + p->len > r->start) {
			g_autofree char *rn = region_name(r);
			g_autofree char *pn = region_name(p);
			return bad(error, f, r->start, "%s overlaps %s", rn,
				   pn);
		}
	}
	return true;
}

/* The device descriptor at file offset @p at. */
static bool parse_device(MigramSnapshotFile *f, const uint8_t *d, uint64_t at,
			 GArray *regions, GError **error)
{
	f->device_offset = snap_get64(d);
	f->device_len = snap_get64(d + 8);
	f->device_hash = snap_get64(d + 16);
	if (f->device_offset % 8 || f->device_offset == 0)
		return bad(error, f, at,
			   "device state offset %" G_GUINT64_FORMAT
			   " is not a positive multiple of 8",
			   f->device_offset);
	if (f->device_len == 0 ||
	    f->device_len > MIGRAM_SNAPSHOT_MAX_DEVICE_BYTES)
		return bad(error, f, at + 8,
			   "device state of %" G_GUINT64_FORMAT
			   " bytes (1 to %u)",
			   f->device_len, MIGRAM_SNAPSHOT_MAX_DEVICE_BYTES);
	if (snap_get64(d + 24) != 0)
		return bad(error, f, at + 24,
			   "reserved device descriptor field not zero");
	Region r = { f->device_offset, f->device_len, "the device state",
		     NOT_A_BLOCK };
	g_array_append_val(regions, r);
	return true;
}

static bool parse_entry(MigramSnapshotFile *f, guint i, const uint8_t *e,
			uint64_t at, GError **error)
{
	SnapBlock *b = &f->blocks[i];
	b->used_length = snap_get64(e);
	b->page_size = snap_get64(e + 8);
	b->bitmap_offset = snap_get64(e + 16);
	b->hashes_offset = snap_get64(e + 24);
	b->hot_offset = snap_get64(e + 312);
	b->pages_offset = snap_get64(e + 32);
	b->present = snap_get64(e + 40);
	unsigned name_len = (unsigned)e[48] | (unsigned)e[49] << 8;
	if (name_len == 0 || name_len > MIGRAM_RAM_IDSTR_MAX)
		return bad(error, f, at + 48, "block %u: name length %u", i,
			   name_len);
	if (memchr(e + SNAP_NAME_AT, 0, name_len))
		return bad(error, f, at + SNAP_NAME_AT,
			   "block %u: NUL inside its name", i);
	memcpy(b->name, e + SNAP_NAME_AT, name_len);
	b->name[name_len] = 0;
	for (guint j = 0; j < i; j++)
		if (strcmp(f->blocks[j].name, b->name) == 0)
			return bad(error, f, at + SNAP_NAME_AT,
				   "block %u: name '%s' used twice", i,
				   b->name);
	if (b->used_length == 0 || b->used_length % SNAP_PAGE ||
	    b->used_length > MIGRAM_SNAPSHOT_MAX_BLOCK_BYTES)
		return bad(error, f, at,
			   "block '%s': used_length %" G_GUINT64_FORMAT
			   " is not a positive multiple of 4 KiB up to 1 TiB",
			   b->name, b->used_length);
	if (b->page_size < SNAP_PAGE || (b->page_size & (b->page_size - 1)) ||
	    b->page_size > (1u << 30))
		return bad(error, f, at + 8,
			   "block '%s': page size %" G_GUINT64_FORMAT, b->name,
			   b->page_size);
	if (b->pages_offset % MIGRAM_SNAPSHOT_ALIGN || b->bitmap_offset % 8 ||
	    b->hashes_offset % 8 || b->hot_offset % 8)
		return bad(
			error, f, at + 16,
			"block '%s': misaligned offsets (bitmap %" G_GUINT64_FORMAT
			", hashes %" G_GUINT64_FORMAT
			", pages %" G_GUINT64_FORMAT ")",
			b->name, b->bitmap_offset, b->hashes_offset,
			b->pages_offset);
	b->npages = b->used_length / SNAP_PAGE;
	if (b->present > b->npages)
		return bad(error, f, at + 40,
			   "block '%s': %" G_GUINT64_FORMAT
			   " present pages of %" G_GUINT64_FORMAT,
			   b->name, b->present, b->npages);
	return true;
}

/* Read a bitmap of b->npages bits at @p off (tail bits must be clear). */
static unsigned long *read_bitmap(MigramSnapshotFile *f, const SnapBlock *b,
				  uint64_t off, const char *what,
				  GError **error)
{
	size_t words = migram_bitmap_le64_words((size_t)b->npages);
	uint64_t *raw = g_try_new0(uint64_t, words);
	unsigned long *map = NULL;
	if (!raw) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "%s: block '%s': %s of %zu words", f->name, b->name,
			    what, words);
		return NULL;
	}
	if (!snap_pread_all(f->fd, raw, words * 8, off, what, f->name, error))
		goto out;
	uint64_t tail = b->npages % 64;
	if (tail && GUINT64_FROM_LE(raw[words - 1]) >> tail) {
		bad(error, f, off + (words - 1) * 8,
		    "block '%s': %s bits past its %" G_GUINT64_FORMAT " pages",
		    b->name, what, b->npages);
		goto out;
	}
	map = migram_bitmap_new((size_t)b->npages);
	if (!map) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "%s: block '%s': %s", f->name, b->name, what);
		goto out;
	}
	migram_bitmap_from_le64(map, raw, (size_t)b->npages);
out:
	g_free(raw);
	return map;
}

static bool load_bitmaps(MigramSnapshotFile *f, SnapBlock *b, GError **error)
{
	b->bitmap = read_bitmap(f, b, b->bitmap_offset, "present", error);
	if (!b->bitmap)
		return false;
	uint64_t n = migram_bitmap_count(b->bitmap, 0, (size_t)b->npages);
	if (n != b->present)
		return bad(error, f, b->bitmap_offset,
			   "block '%s': bitmap has %" G_GUINT64_FORMAT
			   " present pages, the table says %" G_GUINT64_FORMAT,
			   b->name, n, b->present);
	if (b->hot_offset) {
		b->hot = read_bitmap(f, b, b->hot_offset, "hot", error);
		if (!b->hot)
			return false;
	}
	return true;
}

static bool parse(MigramSnapshotFile *f, GError **error)
{
	uint8_t h[SNAP_HEADER_LEN];
	if (f->file_size < SNAP_HEADER_LEN)
		return bad(error, f, 0,
			   "%" G_GUINT64_FORMAT
			   " bytes, shorter than the 64-byte header",
			   f->file_size);
	if (!snap_pread_all(f->fd, h, sizeof(h), 0, "the header", f->name,
			    error))
		return false;
	if (memcmp(h, MIGRAM_SNAPSHOT_MAGIC, 8) != 0)
		return bad(error, f, 0,
			   "no snapshot magic (not a snapshot, or its writer "
			   "did not finish)");
	uint32_t version = snap_get32(h + 8);
	if (version != MIGRAM_SNAPSHOT_VERSION)
		return bad(error, f, 8, "version %u, this library reads %u",
			   version, MIGRAM_SNAPSHOT_VERSION);
	f->flags = snap_get32(h + 12);
	if (f->flags & ~(SNAP_FLAG_DIFF | SNAP_FLAG_DEVICE))
		return bad(error, f, 12, "unknown flags 0x%x", f->flags);
	f->nblocks = snap_get32(h + 16);
	if (f->nblocks == 0 || f->nblocks > MIGRAM_SNAPSHOT_MAX_BLOCKS)
		return bad(error, f, 16, "%u blocks (1 to %u)", f->nblocks,
			   MIGRAM_SNAPSHOT_MAX_BLOCKS);
	if (snap_get32(h + 20) != SNAP_PAGE)
		return bad(error, f, 20, "target page size %u, not 4096",
			   snap_get32(h + 20));
	f->id = snap_get64(h + 24);
	f->parent_id = snap_get64(h + 32);
	f->epoch = snap_get64(h + 40);
	if (f->id == 0)
		return bad(error, f, 24, "snapshot id 0");
	if (!!(f->flags & SNAP_FLAG_DIFF) != (f->parent_id != 0))
		return bad(error, f, 32,
			   "parent id %" G_GUINT64_FORMAT " in a %s snapshot",
			   f->parent_id,
			   f->flags & SNAP_FLAG_DIFF ? "diff" : "full");
	uint64_t table_len = snap_get64(h + 48);
	uint64_t entries = (uint64_t)f->nblocks * SNAP_ENTRY_LEN;
	if (table_len !=
	    entries + (f->flags & SNAP_FLAG_DEVICE ? SNAP_DEVICE_LEN : 0))
		return bad(error, f, 48,
			   "table length %" G_GUINT64_FORMAT " for %u blocks",
			   table_len, f->nblocks);
	if (table_len > f->file_size - SNAP_HEADER_LEN)
		return bad(error, f, SNAP_HEADER_LEN,
			   "the block table runs past the end of the file: "
			   "truncated?");
	g_autofree uint8_t *table = g_malloc((gsize)table_len);
	if (!snap_pread_all(f->fd, table, (size_t)table_len, SNAP_HEADER_LEN,
			    "the block table", f->name, error))
		return false;
	if (snap_header_check(h, table, (size_t)table_len) !=
	    snap_get64(h + SNAP_CHECK_AT))
		return bad(error, f, SNAP_CHECK_AT,
			   "header check does not match: header or block "
			   "table corrupted");
	f->blocks = g_new0(SnapBlock, f->nblocks);
	g_autoptr(GArray) regions = g_array_new(FALSE, FALSE, sizeof(Region));
	Region hdr = { 0, SNAP_HEADER_LEN + table_len, "the header and table",
		       NOT_A_BLOCK };
	g_array_append_val(regions, hdr);
	if ((f->flags & SNAP_FLAG_DEVICE) &&
	    !parse_device(f, table + entries, SNAP_HEADER_LEN + entries,
			  regions, error))
		return false;
	for (guint i = 0; i < f->nblocks; i++) {
		uint64_t at = SNAP_HEADER_LEN + (uint64_t)i * SNAP_ENTRY_LEN;
		if (!parse_entry(f, i, table + (size_t)i * SNAP_ENTRY_LEN, at,
				 error))
			return false;
		SnapBlock *b = &f->blocks[i];
		Region r = { b->bitmap_offset,
			     migram_bitmap_le64_words((size_t)b->npages) * 8,
			     "bitmap", i };
		g_array_append_val(regions, r);
		r = (Region){ b->pages_offset, b->used_length, "pages", i };
		g_array_append_val(regions, r);
		if (b->hashes_offset) {
			r = (Region){ b->hashes_offset, b->npages * 8, "hashes",
				      i };
			g_array_append_val(regions, r);
		}
		if (b->hot_offset) {
			r = (Region){
				b->hot_offset,
				migram_bitmap_le64_words((size_t)b->npages) * 8,
				"hot bitmap", i
			};
			g_array_append_val(regions, r);
		}
	}
	if (!check_regions(f, regions, error))
		return false;
	for (guint i = 0; i < f->nblocks; i++)
		if (!load_bitmaps(f, &f->blocks[i], error))
			return false;
	return true;
}

MIGRAM_EXPORT MigramSnapshotFile *
migram_snapshot_open_fd(int fd, const char *name, GError **error)
{
	struct stat sb;
	MigramSnapshotFile *f = g_new0(MigramSnapshotFile, 1);
	f->name = g_strdup(name ? name : "snapshot");
	f->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (f->fd < 0 || fstat(f->fd, &sb) < 0) {
		int e = errno;
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO, "%s: %s",
			    f->name, g_strerror(e));
		migram_snapshot_close(f);
		return NULL;
	}
	f->file_size = (uint64_t)sb.st_size;
	if (!parse(f, error)) {
		migram_snapshot_close(f);
		return NULL;
	}
	return f;
}

MIGRAM_EXPORT MigramSnapshotFile *migram_snapshot_open(const char *path,
						       GError **error)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "%s: open: %s", path, g_strerror(e));
		return NULL;
	}
	MigramSnapshotFile *f = migram_snapshot_open_fd(fd, path, error);
	close(fd);
	return f;
}

MIGRAM_EXPORT void migram_snapshot_close(MigramSnapshotFile *f)
{
	if (!f)
		return;
	if (f->fd >= 0)
		close(f->fd);
	for (guint i = 0; f->blocks && i < f->nblocks; i++) {
		migram_bitmap_free(f->blocks[i].bitmap);
		migram_bitmap_free(f->blocks[i].hot);
	}
	g_free(f->blocks);
	g_free(f->name);
	g_free(f);
}

MIGRAM_EXPORT uint64_t migram_snapshot_id(const MigramSnapshotFile *f)
{
	return f->id;
}

MIGRAM_EXPORT uint64_t migram_snapshot_parent_id(const MigramSnapshotFile *f)
{
	return f->parent_id;
}

MIGRAM_EXPORT bool migram_snapshot_is_diff(const MigramSnapshotFile *f)
{
	return f->flags & SNAP_FLAG_DIFF;
}

MIGRAM_EXPORT uint64_t migram_snapshot_epoch(const MigramSnapshotFile *f)
{
	return f->epoch;
}

MIGRAM_EXPORT guint migram_snapshot_block_count(const MigramSnapshotFile *f)
{
	return f->nblocks;
}

MIGRAM_EXPORT bool migram_snapshot_find_block(const MigramSnapshotFile *f,
					      const char *name, guint *index)
{
	for (guint i = 0; i < f->nblocks; i++)
		if (strcmp(f->blocks[i].name, name) == 0) {
			*index = i;
			return true;
		}
	return false;
}

MIGRAM_EXPORT void migram_snapshot_block_info(const MigramSnapshotFile *f,
					      guint index,
					      MigramSnapshotBlockInfo *info)
{
	g_return_if_fail(f != NULL && index < f->nblocks && info != NULL);
	const SnapBlock *b = &f->blocks[index];
	*info = (MigramSnapshotBlockInfo){
		.name = b->name,
		.used_length = b->used_length,
		.page_size = b->page_size,
		.npages = b->npages,
		.present_pages = b->present,
		.pages_offset = b->pages_offset,
		.bitmap_offset = b->bitmap_offset,
		.hashes_offset = b->hashes_offset,
		.hot_offset = b->hot_offset,
		.hot_pages = b->hot ? migram_bitmap_count(b->hot, 0,
							  (size_t)b->npages)
				    : 0,
	};
}

MIGRAM_EXPORT bool migram_snapshot_page_present(const MigramSnapshotFile *f,
						guint index, uint64_t page)
{
	g_return_val_if_fail(f != NULL && index < f->nblocks, false);
	const SnapBlock *b = &f->blocks[index];
	g_return_val_if_fail(page < b->npages, false);
	return migram_bitmap_test_bit(b->bitmap, (size_t)page);
}

MIGRAM_EXPORT bool migram_snapshot_read_pages(const MigramSnapshotFile *f,
					      guint index, uint64_t first,
					      uint64_t npages, void *buf,
					      GError **error)
{
	g_return_val_if_fail(f != NULL && buf != NULL, false);
	if (index >= f->nblocks) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%s: no block %u (%u blocks)", f->name, index,
			    f->nblocks);
		return false;
	}
	const SnapBlock *b = &f->blocks[index];
	if (first > b->npages || npages > b->npages - first) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%s: block '%s': pages [%" G_GUINT64_FORMAT
			    ", +%" G_GUINT64_FORMAT
			    ") outside its %" G_GUINT64_FORMAT,
			    f->name, b->name, first, npages, b->npages);
		return false;
	}
	return snap_pread_all(f->fd, buf, (size_t)(npages * SNAP_PAGE),
			      b->pages_offset + first * SNAP_PAGE, "pages",
			      f->name, error);
}

MIGRAM_EXPORT uint64_t *migram_snapshot_read_hashes(const MigramSnapshotFile *f,
						    guint index, GError **error)
{
	g_return_val_if_fail(f != NULL && index < f->nblocks, NULL);
	const SnapBlock *b = &f->blocks[index];
	if (!b->hashes_offset) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND,
			    "%s: block '%s' has no page hashes", f->name,
			    b->name);
		return NULL;
	}
	uint64_t *out = g_try_new0(uint64_t, b->npages);
	if (!out) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "%s: hashes of block '%s'", f->name, b->name);
		return NULL;
	}
	if (!snap_pread_all(f->fd, out, (size_t)(b->npages * 8),
			    b->hashes_offset, "page hashes", f->name, error)) {
		g_free(out);
		return NULL;
	}
	for (uint64_t i = 0; i < b->npages; i++)
		out[i] = GUINT64_FROM_LE(out[i]);
	return out;
}

MIGRAM_EXPORT char *migram_snapshot_describe(const MigramSnapshotFile *f)
{
	GString *s = g_string_new(NULL);
	g_string_append_printf(
		s,
		"snapshot file, format version %u, %s\n"
		"  id %016" G_GINT64_MODIFIER "x  parent %016" G_GINT64_MODIFIER
		"x  epoch %" G_GUINT64_FORMAT "\n"
		"  %" G_GUINT64_FORMAT " bytes, %u block(s)\n",
		MIGRAM_SNAPSHOT_VERSION,
		f->flags & SNAP_FLAG_DIFF ? "diff (needs its parent)" : "full",
		f->id, f->parent_id, f->epoch, f->file_size, f->nblocks);
	if (f->device_len)
		g_string_append_printf(s,
				       "  device state: %" G_GUINT64_FORMAT
				       " bytes @%" G_GUINT64_FORMAT "\n",
				       f->device_len, f->device_offset);
	for (guint i = 0; i < f->nblocks; i++) {
		const SnapBlock *b = &f->blocks[i];
		g_string_append_printf(
			s,
			"  block %u '%s': %" G_GUINT64_FORMAT
			" bytes (%" G_GUINT64_FORMAT
			" pages, page size %" G_GUINT64_FORMAT
			"), %" G_GUINT64_FORMAT " present\n"
			"    bitmap @%" G_GUINT64_FORMAT
			"  hashes @%" G_GUINT64_FORMAT
			"%s  pages @%" G_GUINT64_FORMAT
			"  hot pages %" G_GUINT64_FORMAT "\n",
			i, b->name, b->used_length, b->npages, b->page_size,
			b->present, b->bitmap_offset, b->hashes_offset,
			b->hashes_offset ? "" : " (none)", b->pages_offset,
			b->hot ? migram_bitmap_count(b->hot, 0,
						     (size_t)b->npages)
			       : 0);
	}
	return g_string_free(s, FALSE);
}

MIGRAM_EXPORT uint64_t
migram_snapshot_device_state_size(const MigramSnapshotFile *f)
{
	g_return_val_if_fail(f != NULL, 0);
	return f->device_len;
}

MIGRAM_EXPORT GBytes *
migram_snapshot_read_device_state(const MigramSnapshotFile *f, GError **error)
{
	g_return_val_if_fail(f != NULL, NULL);
	if (!f->device_len) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND,
			    "%s: no device state in this snapshot", f->name);
		return NULL;
	}
	uint8_t *buf = g_malloc((gsize)f->device_len);
	if (!snap_pread_all(f->fd, buf, (size_t)f->device_len, f->device_offset,
			    "the device state", f->name, error)) {
		g_free(buf);
		return NULL;
	}
	if (snap_hash_bytes(0, buf, (size_t)f->device_len) != f->device_hash) {
		g_free(buf);
		bad(error, f, f->device_offset,
		    "device state (%" G_GUINT64_FORMAT
		    " bytes) does not match its hash: corrupted",
		    f->device_len);
		return NULL;
	}
	return g_bytes_new_take(buf, (gsize)f->device_len);
}
