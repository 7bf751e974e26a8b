/* SPDX-License-Identifier: MIT */
/* The snapshot-file parser under hostile input; see snap-harness.h. */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include <migram/migram.h>
#include <migram/snapshot.h>

#include "snap-harness.h"

static int memfd_of(const uint8_t *data, size_t size)
{
	int fd = memfd_create("snap-fuzz", MFD_CLOEXEC);
	g_assert(fd >= 0);
	uint32_t want = 0;
	if (size >= 4) {
		want = (uint32_t)data[0] | (uint32_t)data[1] << 8 |
		       (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
		data += 4;
		size -= 4;
	} else {
		size = 0;
	}
	if (want > SNAP_FUZZ_MAX_SIZE)
		want = SNAP_FUZZ_MAX_SIZE;
	if (size && write(fd, data, size) != (ssize_t)size)
		g_error("snap-fuzz: write to memfd failed");
	if (want > size && ftruncate(fd, want) != 0)
		g_error("snap-fuzz: ftruncate failed");
	return fd;
}

bool snap_fuzz_one(const uint8_t *data, size_t size, GError **error)
{
	int fd = memfd_of(data, size);
	MigramSnapshotFile *f = migram_snapshot_open_fd(fd, "fuzz", error);
	close(fd);
	if (!f) {
		g_assert(error == NULL ||
			 (*error && (*error)->domain == MIGRAM_ERROR));
		return false;
	}
	g_free(migram_snapshot_describe(f));
	uint8_t page[4096];
	for (guint i = 0; i < migram_snapshot_block_count(f); i++) {
		MigramSnapshotBlockInfo info;
		migram_snapshot_block_info(f, i, &info);
		g_assert(info.npages > 0);
		g_assert(migram_snapshot_read_pages(f, i, 0, 1, page, NULL));
		g_assert(migram_snapshot_read_pages(f, i, info.npages - 1, 1,
						    page, NULL));
		(void)migram_snapshot_page_present(f, i, info.npages - 1);
		g_free(migram_snapshot_read_hashes(f, i, NULL));
	}
	GBytes *dev = migram_snapshot_read_device_state(f, NULL);
	if (dev)
		g_bytes_unref(dev);
	migram_snapshot_close(f);
	return true;
}

uint8_t *snap_fuzz_sample(gboolean diff, size_t *size)
{
	g_autofree char *dir = g_dir_make_tmp("snap-sample-XXXXXX", NULL);
	g_autofree char *path = g_build_filename(dir, "s", NULL);
	MigramSnapshotParams p = { .diff = diff,
				   .parent_id = diff ? 42 : 0,
				   .epoch = diff ? 1 : 0 };
	MigramSnapshotWriter *w = migram_snapshot_writer_new(path, &p, NULL);
	g_assert(w);
	g_assert(migram_snapshot_writer_add_block(w, "pc.ram", 70 * 4096, 4096,
						  NULL, NULL));
	g_assert(migram_snapshot_writer_add_block(w, "rom", 4096, 4096, NULL,
						  NULL));
	g_assert(migram_snapshot_writer_start(w, NULL));
	uint8_t page[4096];
	memset(page, 0xab, sizeof(page));
	g_assert(migram_snapshot_writer_put_pages(w, 0, 3, 1, page, NULL));
	g_assert(migram_snapshot_writer_put_pages(w, 0, 69, 1, page, NULL));
	uint64_t h[70] = { 1, 2, 3 };
	g_assert(migram_snapshot_writer_set_hashes(w, 0, h, NULL));
	unsigned long hot[2] = { 0x18, 0x20 }; /* pages 3, 4 and 69 */
	g_assert(migram_snapshot_writer_set_hot(w, 0, hot, NULL));
	/* The diff sample carries a device state (its descriptor is in the
	 * kept metadata; its bytes, past the pages, are not). */
	if (diff)
		g_assert(migram_snapshot_writer_set_device_state(w, "vcpu0", 5,
								 NULL));
	g_assert(migram_snapshot_writer_finish(w, NULL, NULL));
	migram_snapshot_writer_free(w);
	gchar *bytes = NULL;
	gsize len = 0;
	g_assert(g_file_get_contents(path, &bytes, &len, NULL));
	g_unlink(path);
	g_rmdir(dir);
	/* The metadata only: everything before the first pages region. */
	size_t keep = MIN(len, (gsize)4096);
	uint8_t *out = g_malloc(4 + keep);
	out[0] = (uint8_t)len;
	out[1] = (uint8_t)(len >> 8);
	out[2] = (uint8_t)(len >> 16);
	out[3] = (uint8_t)(len >> 24);
	memcpy(out + 4, bytes, keep);
	g_free(bytes);
	*size = 4 + keep;
	return out;
}
