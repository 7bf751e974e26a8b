/* SPDX-License-Identifier: MIT */
/*
 * The destination set-up every fuzz input is loaded into; see
 * fuzz-harness.h for the input format and the blocks.
 *
 * Out-of-bounds writes are caught by the MMU, not by ASan (block memory is
 * mmap()ed, which ASan does not track):
 *
 *     | guard | pc.ram 1 MiB                              | guard |
 *     | guard | vram: used (rw)    | past used (ro)       | guard |
 *     | guard | rom 64 KiB (ro)                           | guard |
 *
 * Guards are PROT_NONE.  The read-only tail of "vram" follows used_length
 * through the block's resize callback, so a page placed past used_length,
 * even inside max_length, faults at once.  "shared" is a memfd block mapped
 * by migram itself and has no guards; the receivedmap check after each load
 * covers it.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/channel.h>
#include <migram/migram.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>
#include <migram/stream.h>

#include "fuzz-harness.h"

/* The largest target page the reader accepts (page bits 16). */
#define MAX_TARGET_PAGE (64u * 1024)

enum {
	PC_RAM,
	VRAM,
	ROM,
	SHARED,
	N_FIXED
};

typedef struct {
	const char *name;
	guint8 *map; /* guard | max bytes | guard; NULL for "shared" */
	size_t map_len;
	guint8 *host; /* the block's memory */
	uint64_t max;
} FixedBlock;

struct FuzzHarness {
	MigramRamList *list;
	int stream_fd;
	size_t page;
	FixedBlock fixed[N_FIXED];
};

#define violation(...) fuzz_violation("fuzz-harness", __VA_ARGS__)

void fuzz_violation(const char *who, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: rule broken: ", who);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

static void protect(void *addr, size_t len, int prot)
{
	if (len && mprotect(addr, len, prot) != 0)
		violation("mprotect(%p, %zu): %s", addr, len,
			  g_strerror(errno));
}

/* "vram": read-write up to used_length, read-only past it. */
static void vram_resized(MigramRamBlock *block, uint64_t old_length,
			 uint64_t new_length, void *opaque)
{
	guint8 *host = migram_ram_block_host(block);
	uint64_t max = migram_ram_block_max_length(block);

	(void)old_length;
	(void)opaque;
	protect(host, (size_t)new_length, PROT_READ | PROT_WRITE);
	protect(host + new_length, (size_t)(max - new_length), PROT_READ);
}

static void map_guarded(FuzzHarness *h, FixedBlock *f, uint64_t rw_bytes)
{
	f->map_len = (size_t)f->max + 2 * h->page;
	f->map = mmap(NULL, f->map_len, PROT_NONE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (f->map == MAP_FAILED)
		violation("mmap %zu bytes: %s", f->map_len, g_strerror(errno));
	f->host = f->map + h->page;
	protect(f->host, (size_t)rw_bytes, PROT_READ | PROT_WRITE);
	protect(f->host + rw_bytes, (size_t)(f->max - rw_bytes), PROT_READ);
}

static void add_block(FuzzHarness *h, const MigramRamBlockConfig *c)
{
	g_autoptr(GError) error = NULL;

	if (!migram_ram_list_add(h->list, c, &error))
		violation("cannot add block '%s': %s", c->idstr,
			  error->message);
}

/* dup() returns the lowest free descriptor: a leaked one raises it. */
static int lowest_free_fd(const FuzzHarness *h)
{
	int fd = dup(h->stream_fd);

	if (fd < 0)
		violation("dup: %s", g_strerror(errno));
	close(fd);
	return fd;
}

FuzzHarness *fuzz_harness_new(void)
{
	FuzzHarness *h = g_new0(FuzzHarness, 1);
	FixedBlock *f = h->fixed;
	MigramRamBlock *b;

	h->page = (size_t)sysconf(_SC_PAGESIZE);
	h->list = migram_ram_list_new();
	h->stream_fd = memfd_create("fuzz-stream", MFD_CLOEXEC);
	if (h->stream_fd < 0)
		violation("memfd_create: %s", g_strerror(errno));

	f[PC_RAM] = (FixedBlock){ .name = "pc.ram", .max = FUZZ_PC_RAM_BYTES };
	map_guarded(h, &f[PC_RAM], FUZZ_PC_RAM_BYTES);
	add_block(h, &(MigramRamBlockConfig){
			     .idstr = "pc.ram",
			     .backend = MIGRAM_RAM_BACKEND_CALLER,
			     .used_length = FUZZ_PC_RAM_BYTES,
			     .host = f[PC_RAM].host,
		     });

	f[VRAM] = (FixedBlock){ .name = "vram", .max = FUZZ_VRAM_MAX };
	map_guarded(h, &f[VRAM], FUZZ_VRAM_USED);
	add_block(h, &(MigramRamBlockConfig){
			     .idstr = "vram",
			     .backend = MIGRAM_RAM_BACKEND_CALLER,
			     .used_length = FUZZ_VRAM_USED,
			     .max_length = FUZZ_VRAM_MAX,
			     .host = f[VRAM].host,
			     .resized = vram_resized,
		     });

	f[ROM] = (FixedBlock){ .name = "rom", .max = FUZZ_ROM_BYTES };
	map_guarded(h, &f[ROM], 0);
	add_block(h, &(MigramRamBlockConfig){
			     .idstr = "rom",
			     .backend = MIGRAM_RAM_BACKEND_CALLER,
			     .used_length = FUZZ_ROM_BYTES,
			     .host = f[ROM].host,
			     .not_migratable = true,
		     });

	f[SHARED] = (FixedBlock){ .name = "shared", .max = FUZZ_SHARED_BYTES };
	add_block(h, &(MigramRamBlockConfig){
			     .idstr = "shared",
			     .backend = MIGRAM_RAM_BACKEND_MEMFD,
			     .used_length = FUZZ_SHARED_BYTES,
		     });
	urcu_memb_read_lock();
	b = migram_ram_list_find(h->list, "shared");
	f[SHARED].host = b ? migram_ram_block_host(b) : NULL;
	urcu_memb_read_unlock();
	if (!f[SHARED].host)
		violation("block 'shared' missing after add");
	return h;
}

void fuzz_harness_free(FuzzHarness *h)
{
	if (!h)
		return;
	/* Waits for readers and reclaim, so the caller memory can go. */
	migram_ram_list_free(h->list);
	for (int i = 0; i < N_FIXED; i++)
		if (h->fixed[i].map)
			munmap(h->fixed[i].map, h->fixed[i].map_len);
	close(h->stream_fd);
	g_free(h);
}

const uint8_t *fuzz_harness_host(const FuzzHarness *h, const char *block)
{
	for (int i = 0; i < N_FIXED; i++)
		if (strcmp(block, h->fixed[i].name) == 0)
			return h->fixed[i].host;
	return NULL;
}

void fuzz_fill_fd(int fd, const uint8_t *data, size_t size)
{
	/* The previous load left the file offset anywhere. */
	if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0)
		violation("ftruncate: %s", g_strerror(errno));
	while (size > 0) {
		ssize_t w = write(fd, data, size);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			violation("write: %s", g_strerror(errno));
		data += w;
		size -= (size_t)w;
	}
	if (lseek(fd, 0, SEEK_SET) != 0)
		violation("lseek: %s", g_strerror(errno));
}

/* Back to the initial state: "vram" at 64 KiB, every block zero. */
static void reset_blocks(FuzzHarness *h)
{
	g_autoptr(GError) error = NULL;
	MigramRamBlock *b;
	int fd = -1;

	if (!migram_ram_list_resize(h->list, "vram", FUZZ_VRAM_USED, &error))
		violation("cannot reset vram: %s", error->message);
	/* Private anonymous memory reads as zero after MADV_DONTNEED. */
	madvise(h->fixed[PC_RAM].host, FUZZ_PC_RAM_BYTES, MADV_DONTNEED);
	madvise(h->fixed[VRAM].host, FUZZ_VRAM_MAX, MADV_DONTNEED);
	urcu_memb_read_lock();
	b = migram_ram_list_find(h->list, "shared");
	if (b)
		fd = migram_ram_block_fd(b);
	urcu_memb_read_unlock();
	if (fd < 0 || fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				0, (off_t)FUZZ_SHARED_BYTES) != 0)
		violation("cannot zero block 'shared'");
}

static bool is_fixed(const FuzzHarness *h, const char *name)
{
	for (int i = 0; i < N_FIXED; i++)
		if (strcmp(name, h->fixed[i].name) == 0)
			return true;
	return false;
}

/*
 * What a load must leave behind: every destination block still there at
 * the same address with the same migratability, and no received bit past
 * any block's used_length.  Collects the names of the blocks the load
 * created into @p created.  Returns whether any block has bitmaps.
 */
static bool check_list(FuzzHarness *h, GPtrArray *created)
{
	bool bitmaps = false;
	int seen = 0;

	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next(h->list, NULL); b;
	     b = migram_ram_list_next(h->list, b)) {
		const char *name = migram_ram_block_idstr(b);
		const unsigned long *rmap = migram_ram_block_receivedmap(b);
		size_t used = (size_t)(migram_ram_block_used_length(b) >>
				       MIGRAM_TARGET_PAGE_BITS);
		size_t max = (size_t)(migram_ram_block_max_length(b) >>
				      MIGRAM_TARGET_PAGE_BITS);
		size_t bad;

		if (rmap) {
			bitmaps = true;
			bad = migram_bitmap_find_next_set(rmap, max, used);
			if (bad < max)
				violation("block '%s': page %zu received, past "
					  "used length of %zu pages",
					  name, bad, used);
		}
		if (!is_fixed(h, name)) {
			g_ptr_array_add(created, g_strdup(name));
			continue;
		}
		seen++;
		if (migram_ram_block_host(b) != fuzz_harness_host(h, name))
			violation("block '%s' moved", name);
		if (!(migram_ram_block_flags(b) & MIGRAM_RAM_MIGRATABLE) !=
		    (strcmp(name, "rom") == 0))
			violation("block '%s' changed migratability", name);
	}
	urcu_memb_read_unlock();
	if (seen != N_FIXED)
		violation("%d of the %d destination blocks left", seen,
			  N_FIXED);
	return bitmaps;
}

/*
 * Reader-only mode: walk the records as a stream tool does.  Each record
 * but the last must consume bytes (or the walk would spin), and a PAGE's
 * length must be the reader's page size, at most 64 KiB.  The payload goes
 * into a heap buffer of exactly that length, so ASan sees any overrun.
 */
static bool walk_reader(MigramChannel *ch, MigramReceiverStats *st,
			GError **error)
{
	MigramStreamReader *r = migram_stream_reader_new(ch);
	MigramStreamRecord rec;
	bool ok;

	for (uint64_t n = 0;; n++) {
		uint64_t before = migram_channel_read_offset(ch);
		g_autofree guint8 *page = NULL;

		ok = migram_stream_reader_next(r, &rec, error);
		if (!ok || rec.type == MIGRAM_STREAM_REC_END)
			break;
		if (migram_channel_read_offset(ch) == before)
			violation("record type %d at byte %" G_GUINT64_FORMAT
				  " consumed nothing",
				  (int)rec.type, before);
		switch (rec.type) {
		case MIGRAM_STREAM_REC_PAGE:
			if (rec.length != migram_stream_reader_page_size(r) ||
			    rec.length > MAX_TARGET_PAGE)
				violation("page of %" G_GUINT64_FORMAT " bytes",
					  rec.length);
			st->normal_pages++;
			if (n % 2)
				break; /* the next call skips it */
			page = g_malloc(rec.length);
			ok = migram_stream_reader_read_page(r, page, error);
			break;
		case MIGRAM_STREAM_REC_ZERO_PAGE:
			st->zero_pages++;
			break;
		case MIGRAM_STREAM_REC_SECTION_DONE:
			st->sections++;
			break;
		default:
			break;
		}
		if (!ok)
			break;
	}
	st->bytes = migram_channel_read_offset(ch);
	migram_stream_reader_free(r);
	return ok;
}

/* A failed load must say what and where: a MIGRAM_ERROR naming a byte. */
static void check_error(bool ok, const GError *error, size_t stream_bytes,
			const MigramReceiverStats *stats)
{
	if (ok) {
		if (error)
			violation("load succeeded with an error set: %s",
				  error->message);
	} else {
		if (!error)
			violation("load failed without an error");
		if (error->domain != MIGRAM_ERROR)
			violation("error outside MIGRAM_ERROR: %s",
				  error->message);
		if (!strstr(error->message, "byte "))
			violation("error does not say where: %s",
				  error->message);
	}
	if (stats->bytes > stream_bytes)
		violation("consumed %" G_GUINT64_FORMAT " bytes of a %zu-byte "
			  "stream",
			  stats->bytes, stream_bytes);
}

bool fuzz_harness_run(FuzzHarness *h, const uint8_t *data, size_t size,
		      MigramReceiverStats *stats, GError **error)
{
	MigramReceiverConfig cfg = { 0 };
	MigramReceiverStats st = { 0 };
	g_autoptr(GPtrArray) created = g_ptr_array_new_with_free_func(g_free);
	GError *err = NULL;
	MigramReceiver *r;
	MigramChannel *ch;
	uint8_t mode = size ? data[0] : 0;
	int free_fd;
	bool ok;

	if (size) {
		data++;
		size--;
	}
	cfg.create_blocks = mode & FUZZ_MODE_CREATE_BLOCKS;
	cfg.stop_at_devices = mode & FUZZ_MODE_STOP_AT_DEVICES;
	if (mode & FUZZ_MODE_MACHINE_TYPE)
		cfg.machine_type = FUZZ_MACHINE_TYPE;

	reset_blocks(h);
	fuzz_fill_fd(h->stream_fd, data, size);
	free_fd = lowest_free_fd(h);
	ch = migram_channel_new(h->stream_fd, false);
	if (mode & FUZZ_MODE_READER_ONLY) {
		ok = walk_reader(ch, &st, &err);
	} else {
		r = migram_receiver_new(h->list, &cfg);
		ok = migram_receiver_load(r, ch, &err);
		migram_receiver_get_stats(r, &st);
		migram_receiver_free(r);
	}
	migram_channel_free(ch);

	check_error(ok, err, size, &st);
	/* ADVISE opens a userfaultfd, LISTEN an eventfd, PACKAGED a memfd. */
	if (lowest_free_fd(h) != free_fd)
		violation("file descriptor %d leaked by the load", free_fd);
	if (check_list(h, created))
		migram_ram_list_bitmaps_free(h->list);
	for (guint i = 0; i < created->len; i++) {
		g_autoptr(GError) e = NULL;
		const char *name = g_ptr_array_index(created, i);

		if (!migram_ram_list_remove(h->list, name, &e))
			violation("cannot remove '%s': %s", name, e->message);
	}
	if (stats)
		*stats = st;
	if (err)
		g_propagate_error(error, err);
	return ok;
}

void fuzz_assert_outcome(bool ok, const GError *error, int code,
			 const char *message)
{
	if (code == 0) {
		g_assert_no_error(error);
		g_assert_true(ok);
		return;
	}
	g_assert_false(ok);
	g_assert_error(error, MIGRAM_ERROR, code);
	if (!strstr(error->message, message))
		g_error("error '%s' lacks '%s'", error->message, message);
	/* Where: every failure names a byte offset (stream or return path). */
	g_assert_nonnull(strstr(error->message, "byte "));
}
