/* SPDX-License-Identifier: MIT */
/*
 * MigramReceiver: loading streams into destination blocks, and refusing
 * hostile ones without touching memory outside the named page.
 */
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/migram.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>
#include <migram/stream.h>

#include "migram-test-util.h"

#define P 4096u
#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)

#define put8 migram_test_put8
#define put32 migram_test_put32
#define put64 migram_test_put64
#define putstr migram_test_putstr

static MigramRamBlock *add(MigramRamList *l, const char *id,
			   MigramRamBackend backend, uint64_t used,
			   uint64_t max)
{
	g_autoptr(GError) error = NULL;
	MigramRamBlock *b = migram_ram_list_add(l,
						&(MigramRamBlockConfig){
							.idstr = id,
							.backend = backend,
							.used_length = used,
							.max_length = max },
						&error);

	g_assert_no_error(error);
	return b;
}

/* Fill a block: page i holds a pattern, every 5th page is left zero. */
static void fill(MigramRamBlock *b, guint8 seed)
{
	guint8 *h = migram_ram_block_host(b);
	uint64_t n = migram_ram_block_used_length(b) / P;

	for (uint64_t i = 0; i < n; i++) {
		if (i % 5 == 4)
			continue;
		for (unsigned int k = 0; k < P; k += 64)
			h[i * P + k] = (guint8)(seed + i + k / 64);
	}
}

/*
 * The simplest sender: every used page of every migratable block, zero
 * pages as ZERO records, in two PART sections and an END section.
 */
static void send_list(MigramChannel *ch, MigramRamList *list,
		      const char *machine)
{
	MigramStreamWriter *w = migram_stream_writer_new(ch);
	GArray *blocks = g_array_new(FALSE, FALSE, sizeof(MigramStreamBlock));
	g_autoptr(GError) error = NULL;

	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next_migratable(list, NULL); b;
	     b = migram_ram_list_next_migratable(list, b)) {
		MigramStreamBlock sb = { migram_ram_block_idstr(b),
					 migram_ram_block_used_length(b), 0 };

		g_array_append_val(blocks, sb);
	}
	migram_stream_writer_begin(w, machine);
	migram_stream_writer_ram_start(w, (MigramStreamBlock *)blocks->data,
				       blocks->len);
	for (int part = 0; part < 3; part++) {
		migram_stream_writer_ram_open(w, part == 2);
		for (guint i = 0; i < blocks->len; i++) {
			MigramStreamBlock *sb =
				&g_array_index(blocks, MigramStreamBlock, i);
			MigramRamBlock *b = migram_ram_list_find(list,
								 sb->idstr);
			const guint8 *h = migram_ram_block_host(b);
			uint64_t n = sb->used_length / P;

			/* Part k sends pages k, k+3, k+6, ... */
			for (uint64_t p = (uint64_t)part; p < n; p += 3) {
				if (migram_bitmap_range_empty(
					    (const unsigned long *)(h + p * P),
					    0, P * 8))
					migram_stream_writer_zero_page(
						w, sb->idstr, p * P);
				else
					migram_stream_writer_page(w, sb->idstr,
								  p * P,
								  h + p * P);
			}
			/* Flush within the read section: refs point here. */
			g_assert_true(migram_channel_flush(ch, NULL));
		}
		migram_stream_writer_ram_close(w);
	}
	urcu_memb_read_unlock();
	g_assert_true(migram_stream_writer_finish(w, &error));
	g_assert_no_error(error);
	migram_stream_writer_free(w);
	g_array_unref(blocks);
}

/* A stream of list's RAM, as a channel ready to read. */
static MigramChannel *stream_of(MigramRamList *list, const char *machine)
{
	int fd = memfd_create("stream", MFD_CLOEXEC);
	MigramChannel *ch = migram_channel_new(fd, false);

	send_list(ch, list, machine);
	migram_channel_free(ch);
	lseek(fd, 0, SEEK_SET);
	return migram_channel_new(fd, true);
}

static void assert_same(MigramRamList *src, MigramRamList *dst)
{
	urcu_memb_read_lock();
	for (MigramRamBlock *s = migram_ram_list_next_migratable(src, NULL); s;
	     s = migram_ram_list_next_migratable(src, s)) {
		MigramRamBlock *d =
			migram_ram_list_find(dst, migram_ram_block_idstr(s));
		uint64_t len = migram_ram_block_used_length(s);
		unsigned long *recv;

		g_assert_nonnull(d);
		g_assert_cmpuint(migram_ram_block_used_length(d), ==, len);
		g_assert_cmpmem(migram_ram_block_host(d), len,
				migram_ram_block_host(s), len);
		recv = migram_ram_block_receivedmap(d);
		g_assert_nonnull(recv);
		g_assert_true(migram_bitmap_range_full(recv, 0, len / P));
		g_assert_true(migram_bitmap_range_empty(
			recv, len / P,
			(migram_ram_block_max_length(d) - len) / P));
	}
	urcu_memb_read_unlock();
}

/* Fill @src with three blocks of patterned pages; returns @src. */
static MigramRamList *source_list(MigramRamList *src)
{
	fill(add(src, "pc.ram", MIGRAM_RAM_BACKEND_ANON, 4 * MiB, 0), 1);
	fill(add(src, "vga.vram", MIGRAM_RAM_BACKEND_MEMFD, 1 * MiB, 0), 2);
	fill(add(src, "small", MIGRAM_RAM_BACKEND_ANON, 64 * KiB, 0), 3);
	return src;
}

/*
 * Every case gets a source and a destination list, empty, and the
 * tear-down frees whatever they hold (a case may replace dst).
 */
typedef struct {
	MigramRamList *src;
	MigramRamList *dst;
} Fixture;

static void fx_set_up(Fixture *f, gconstpointer data)
{
	(void)data;
	f->src = migram_ram_list_new();
	f->dst = migram_ram_list_new();
}

static void fx_tear_down(Fixture *f, gconstpointer data)
{
	(void)data;
	migram_ram_list_free(f->src);
	migram_ram_list_free(f->dst);
}

static void test_roundtrip(Fixture *f, gconstpointer data)
{
	MigramRamList *src = source_list(f->src);
	MigramRamList *dst = f->dst;
	MigramReceiver *r = migram_receiver_new(dst, NULL);
	MigramChannel *ch = stream_of(src, "none");
	g_autoptr(GError) error = NULL;
	MigramReceiverStats st;

	(void)data;
	add(dst, "pc.ram", MIGRAM_RAM_BACKEND_ANON, 4 * MiB, 0);
	add(dst, "vga.vram", MIGRAM_RAM_BACKEND_MEMFD, 1 * MiB, 0);
	add(dst, "small", MIGRAM_RAM_BACKEND_ANON, 64 * KiB, 0);
	g_assert_true(migram_receiver_load(r, ch, &error));
	g_assert_no_error(error);
	assert_same(src, dst);
	migram_receiver_get_stats(r, &st);
	g_assert_cmpuint(st.normal_pages + st.zero_pages, ==,
			 (4 * MiB + 1 * MiB + 64 * KiB) / P);
	g_assert_cmpuint(st.zero_pages, ==, 1024 / 5 + 256 / 5 + 16 / 5);
	g_assert_cmpuint(st.zero_pages_written, ==, 0);
	g_assert_cmpuint(st.sections, ==, 4);
	g_assert_cmpuint(st.bytes, ==, migram_channel_read_offset(ch));
	migram_channel_free(ch);
	migram_receiver_free(r);
}

static void test_create_blocks(Fixture *f, gconstpointer data)
{
	MigramRamList *src = source_list(f->src);
	MigramRamList *dst = f->dst;
	MigramReceiver *r = migram_receiver_new(
		dst, &(MigramReceiverConfig){ .create_blocks = true });
	MigramChannel *ch = stream_of(src, "none");
	g_autoptr(GError) error = NULL;

	(void)data;
	g_assert_true(migram_receiver_load(r, ch, &error));
	g_assert_no_error(error);
	g_assert_cmpuint(migram_ram_list_count(dst), ==, 3);
	assert_same(src, dst);
	migram_channel_free(ch);
	migram_receiver_free(r);
}

static void test_resize_from_stream(Fixture *f, gconstpointer data)
{
	MigramRamList *src = f->src;
	MigramRamList *dst = f->dst;
	MigramReceiver *r = migram_receiver_new(dst, NULL);
	MigramChannel *ch;
	g_autoptr(GError) error = NULL;

	(void)data;
	fill(add(src, "acpi", MIGRAM_RAM_BACKEND_ANON, 128 * KiB, 0), 9);
	add(dst, "acpi", MIGRAM_RAM_BACKEND_ANON, 64 * KiB, 256 * KiB);
	ch = stream_of(src, "none");
	g_assert_true(migram_receiver_load(r, ch, &error));
	g_assert_no_error(error);
	assert_same(src, dst);
	migram_channel_free(ch);
	migram_receiver_free(r);
}

/* Load src's stream into dst; expect this error. */
static void expect_load_error(MigramRamList *src, MigramRamList *dst,
			      const MigramReceiverConfig *cfg, int code,
			      const char *needle)
{
	MigramReceiver *r = migram_receiver_new(dst, cfg);
	MigramChannel *ch = stream_of(src, "none");
	g_autoptr(GError) error = NULL;

	g_assert_false(migram_receiver_load(r, ch, &error));
	g_assert_error(error, MIGRAM_ERROR, code);
	if (!strstr(error->message, needle))
		g_error("\"%s\" lacks \"%s\"", error->message, needle);
	g_assert_nonnull(strstr(error->message, "stream byte"));
	migram_channel_free(ch);
	migram_receiver_free(r);
}

static void test_block_list_errors(Fixture *f, gconstpointer data)
{
	MigramRamList *src = f->src;
	MigramRamList *dst = f->dst;

	(void)data;
	fill(add(src, "pc.ram", MIGRAM_RAM_BACKEND_ANON, 1 * MiB, 0), 1);
	/* Unknown block. */
	expect_load_error(src, dst, NULL, MIGRAM_ERROR_NOT_FOUND,
			  "unknown ramblock 'pc.ram'");
	/* Size mismatch on a fixed-size block. */
	add(dst, "pc.ram", MIGRAM_RAM_BACKEND_ANON, 2 * MiB, 0);
	expect_load_error(src, dst, NULL, MIGRAM_ERROR_INVALID,
			  "size mismatch: ramblock 'pc.ram' is 0x100000 in "
			  "the stream, 0x200000 here");
	/* Machine type. */
	migram_ram_list_resize(dst, "pc.ram", 1 * MiB, NULL);
	expect_load_error(
		src, dst,
		&(MigramReceiverConfig){ .machine_type = "pc-q35-7.2" },
		MIGRAM_ERROR_INVALID,
		"machine type received is 'none', local is 'pc-q35-7.2'");
	migram_ram_list_free(dst);

	/* A block the destination keeps out of migration. */
	f->dst = dst = migram_ram_list_new();
	migram_ram_list_add(dst,
			    &(MigramRamBlockConfig){ .idstr = "pc.ram",
						     .used_length = 1 * MiB,
						     .not_migratable = true },
			    NULL);
	expect_load_error(src, dst, NULL, MIGRAM_ERROR_INVALID,
			  "'pc.ram' is not migratable");
}

/* Header, configuration, START with one block of len bytes, then PART. */
static GByteArray *hostile_prefix(const char *block, uint64_t len)
{
	GByteArray *a = g_byte_array_new();

	put32(a, 0x5145564d);
	put32(a, 3);
	put8(a, 0x07);
	put32(a, 4);
	g_byte_array_append(a, (const guint8 *)"none", 4);
	put8(a, 0x01);
	put32(a, 2);
	putstr(a, "ram");
	put32(a, 0);
	put32(a, 4);
	put64(a, len | 4);
	putstr(a, block);
	put64(a, len);
	put64(a, 0x10);
	put8(a, 0x7e);
	put32(a, 2);
	put8(a, 0x02);
	put32(a, 2);
	return a;
}

static void page_record(GByteArray *a, const char *block, uint64_t off,
			guint8 fill_byte)
{
	guint8 page[P];

	put64(a, off | 0x08);
	putstr(a, block);
	memset(page, fill_byte, P);
	g_byte_array_append(a, page, P);
}

/*
 * A hostile page must fail the load with an error naming the block, the
 * offset and the stream position, and leave every byte of the destination
 * except the named page untouched (here: all of it, since the named page is
 * outside the block).
 */
static void test_hostile_pages(Fixture *f, gconstpointer data)
{
	MigramRamList *dst = f->dst;
	MigramRamBlock *b = add(dst, "vram", MIGRAM_RAM_BACKEND_ANON, 64 * KiB,
				256 * KiB);
	guint8 *h = migram_ram_block_host(b);
	g_autofree guint8 *before = NULL;
	const struct {
		uint64_t off;
		const char *needle;
	} cases[] = {
		{ 64 * KiB, "page at offset 0x10000 is outside ramblock 'vram' "
			    "(used length 0x10000)" },
		{ 128 * KiB, "outside ramblock 'vram'" }, /* reserved tail */
		{ UINT64_MAX & ~(uint64_t)(P - 1), "outside ramblock" },
	};

	(void)data;
	memset(h, 0x11, 256 * KiB);
	before = g_memdup2(h, 256 * KiB);
	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autoptr(GByteArray) a = hostile_prefix("vram", 64 * KiB);
		g_autoptr(GError) error = NULL;
		MigramReceiver *r = migram_receiver_new(dst, NULL);
		MigramChannel *ch;
		uint64_t rec_at;

		page_record(a, "vram", 0, 0x22); /* one good page first */
		rec_at = a->len;
		page_record(a, "vram", cases[i].off, 0x33);
		ch = migram_test_channel_over(a->data, a->len);
		g_assert_false(migram_receiver_load(r, ch, &error));
		g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
		if (!strstr(error->message, cases[i].needle))
			g_error("\"%s\" lacks \"%s\"", error->message,
				cases[i].needle);
		{
			g_autofree char *where = g_strdup_printf(
				"stream byte %" G_GUINT64_FORMAT ":", rec_at);

			g_assert_nonnull(strstr(error->message, where));
		}
		/* The good page landed, nothing else changed. */
		g_assert_cmpuint(h[0], ==, 0x22);
		g_assert_cmpmem(h + P, 256 * KiB - P, before + P,
				256 * KiB - P);
		memset(h, 0x11, P);
		migram_channel_free(ch);
		migram_receiver_free(r);
	}
}

static void test_hostile_records(Fixture *f, gconstpointer data)
{
	MigramRamList *dst = f->dst;
	struct {
		const char *what;
		int code;
		const char *needle;
	} cases[] = {
		{ "fill", MIGRAM_ERROR_PROTOCOL, "fill byte 0x55" },
		{ "unknown", MIGRAM_ERROR_NOT_FOUND,
		  "page for unknown ramblock 'nope'" },
		{ "early", MIGRAM_ERROR_PROTOCOL,
		  "page record before the block list" },
	};

	(void)data;
	add(dst, "pc.ram", MIGRAM_RAM_BACKEND_ANON, 64 * KiB, 0);
	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autoptr(GByteArray) a = NULL;
		g_autoptr(GError) error = NULL;
		MigramReceiver *r = migram_receiver_new(dst, NULL);
		MigramChannel *ch;

		if (i == 2) {
			/* START section: a page before MEM_SIZE. */
			a = g_byte_array_new();
			put32(a, 0x5145564d);
			put32(a, 3);
			put8(a, 0x01);
			put32(a, 2);
			putstr(a, "ram");
			put32(a, 0);
			put32(a, 4);
			page_record(a, "pc.ram", 0, 1);
		} else {
			a = hostile_prefix("pc.ram", 64 * KiB);
			if (i == 0) {
				put64(a, 0x1000 | 0x02);
				putstr(a, "pc.ram");
				put8(a, 0x55);
			} else {
				page_record(a, "nope", 0, 1);
			}
		}
		ch = migram_test_channel_over(a->data, a->len);
		g_assert_false(migram_receiver_load(r, ch, &error));
		g_assert_error(error, MIGRAM_ERROR, cases[i].code);
		if (!strstr(error->message, cases[i].needle))
			g_error("%s: \"%s\" lacks \"%s\"", cases[i].what,
				error->message, cases[i].needle);
		migram_channel_free(ch);
		migram_receiver_free(r);
	}
}

/* A numeric field of smaps for the mapping that starts at addr. */
static long smaps_field(const void *addr, const char *field)
{
	g_autofree char *smaps = NULL;
	g_autofree char *key = g_strdup_printf("\n%s:", field);
	char start[32];
	const char *p, *a;

	g_assert_true(
		g_file_get_contents("/proc/self/smaps", &smaps, NULL, NULL));
	g_snprintf(start, sizeof(start), "\n%lx-", (unsigned long)addr);
	p = strstr(smaps, start);
	g_assert_nonnull(p);
	a = strstr(p, key);
	g_assert_nonnull(a);
	return strtol(a + strlen(key), NULL, 10);
}

/* kB of anonymous memory in the mapping that starts at addr. */
static long anon_kb(const void *addr)
{
	return smaps_field(addr, "Anonymous");
}

static void zero_stream(GByteArray *a, const char *block, uint64_t pages)
{
	for (uint64_t i = 0; i < pages; i++) {
		put64(a, i * P | 0x02 | (i ? 0x20 : 0));
		if (i == 0)
			putstr(a, block);
		put8(a, 0);
	}
	put64(a, 0x10);
	put8(a, 0x00);
}

static void test_zero_pages_stay_unpopulated(Fixture *f, gconstpointer data)
{
	MigramRamList *dst = f->dst;
	/* Without transparent huge pages: the one byte written below would
	 * populate its whole 2 MiB page, and the count is per 4 KiB. */
	MigramRamBlock *b = migram_ram_list_add(
		dst,
		&(MigramRamBlockConfig){ .idstr = "pc.ram",
					 .backend = MIGRAM_RAM_BACKEND_ANON,
					 .used_length = 8 * MiB,
					 .flags = MIGRAM_RAM_NO_THP },
		NULL);
	g_autoptr(GByteArray) a = hostile_prefix("pc.ram", 8 * MiB);
	g_autoptr(GError) error = NULL;
	MigramReceiver *r = migram_receiver_new(dst, NULL);
	guint8 *h = migram_ram_block_host(b);
	MigramReceiverStats st;
	MigramChannel *ch;

	(void)data;
	/* One page already dirty: it must be cleared. */
	h[5 * P + 7] = 1;
	zero_stream(a, "pc.ram", 8 * MiB / P);
	ch = migram_test_channel_over(a->data, a->len);
	g_assert_true(migram_receiver_load(r, ch, &error));
	g_assert_no_error(error);
	migram_receiver_get_stats(r, &st);
	g_assert_cmpuint(st.zero_pages, ==, 8 * MiB / P);
	g_assert_cmpuint(st.zero_pages_written, ==, 1);
	g_assert_cmpuint(h[5 * P + 7], ==, 0);
	/* 2048 zero pages placed, at most the one we touched populated. */
	g_assert_cmpint(anon_kb(h), <=, 4);
	migram_channel_free(ch);
	migram_receiver_free(r);
}

/* Transparent huge pages follow madvise here (or are always on). */
static bool thp_madvise_works(void)
{
	g_autofree char *mode = NULL;

	return g_file_get_contents(
		       "/sys/kernel/mm/transparent_hugepage/enabled", &mode,
		       NULL, NULL) &&
	       !strstr(mode, "[never]");
}

/*
 * A block the load creates starts zero: its ZERO records need no look at
 * the page, so none of its pages is even mapped (mincore), unlike a read
 * check, which maps the zero page into every one of them.
 */
static void test_created_zero_pages_untouched(Fixture *f, gconstpointer data)
{
	MigramRamList *dst = f->dst;
	g_autoptr(GByteArray) a = hostile_prefix("fresh.ram", 8 * MiB);
	g_autoptr(GError) error = NULL;
	MigramReceiver *r = migram_receiver_new(
		dst, &(MigramReceiverConfig){ .create_blocks = true });
	unsigned char vec[8 * MiB / P];
	MigramReceiverStats st;
	MigramRamBlock *b;
	MigramChannel *ch;
	size_t resident = 0;

	(void)data;
	zero_stream(a, "fresh.ram", 8 * MiB / P);
	ch = migram_test_channel_over(a->data, a->len);
	g_assert_true(migram_receiver_load(r, ch, &error));
	g_assert_no_error(error);
	migram_receiver_get_stats(r, &st);
	g_assert_cmpuint(st.zero_pages, ==, 8 * MiB / P);
	g_assert_cmpuint(st.zero_pages_written, ==, 0);
	urcu_memb_read_lock();
	b = migram_ram_list_find(dst, "fresh.ram");
	g_assert_nonnull(b);
	g_assert_cmpint(mincore(migram_ram_block_host(b), 8 * MiB, vec), ==, 0);
	for (size_t i = 0; i < G_N_ELEMENTS(vec); i++)
		resident += vec[i] & 1;
	/* every page was received, and none of them was touched */
	g_assert_true(migram_bitmap_test_bit_atomic(
		migram_ram_block_receivedmap(b), 8 * MiB / P - 1));
	urcu_memb_read_unlock();
	g_assert_cmpuint(resident, ==, 0);
	/* placed with small pages; huge pages are advised once loaded */
	if (thp_madvise_works())
		g_assert_cmpint(smaps_field(migram_ram_block_host(b),
					    "THPeligible"),
				==, 1);
	migram_channel_free(ch);
	migram_receiver_free(r);
}

static void device_after_ram(GByteArray *a)
{
	put8(a, 0x03); /* END */
	put32(a, 2);
	put64(a, 0x10);
	put8(a, 0x7e);
	put32(a, 2);
	put8(a, 0x04); /* FULL "timer" */
	put32(a, 0);
	putstr(a, "timer");
	put32(a, 0);
	put32(a, 2);
	put64(a, 0x1234); /* device state the receiver cannot parse */
}

static void test_device_sections(Fixture *f, gconstpointer data)
{
	MigramRamList *dst = f->dst;
	g_autoptr(GByteArray) a = hostile_prefix("pc.ram", 64 * KiB);
	g_autoptr(GError) error = NULL;
	MigramReceiver *r;
	MigramReceiverStats st;
	MigramChannel *ch;

	(void)data;
	add(dst, "pc.ram", MIGRAM_RAM_BACKEND_ANON, 64 * KiB, 0);
	page_record(a, "pc.ram", 0, 0x5a);
	put64(a, 0x10);
	put8(a, 0x7e);
	put32(a, 2);
	device_after_ram(a);

	r = migram_receiver_new(dst, &(MigramReceiverConfig){
					     .stop_at_devices = true });
	ch = migram_test_channel_over(a->data, a->len);
	g_assert_true(migram_receiver_load(r, ch, &error));
	g_assert_no_error(error);
	migram_receiver_get_stats(r, &st);
	g_assert_true(st.stopped_at_device);
	g_assert_cmpstr(st.device, ==, "timer");
	g_assert_cmpuint(st.normal_pages, ==, 1);
	migram_channel_free(ch);
	migram_receiver_free(r);

	r = migram_receiver_new(dst, NULL);
	ch = migram_test_channel_over(a->data, a->len);
	g_assert_false(migram_receiver_load(r, ch, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED);
	g_assert_nonnull(strstr(error->message, "device section 'timer'"));
	migram_channel_free(ch);
	migram_receiver_free(r);
}

typedef struct {
	MigramRamList *list;
	int fd;
} SendJob;

static gpointer send_main(gpointer p)
{
	SendJob *j = p;
	MigramChannel *ch = migram_channel_new(j->fd, true);

	urcu_memb_register_thread();
	send_list(ch, j->list, "none");
	urcu_memb_unregister_thread();
	migram_channel_free(ch);
	return NULL;
}

/* 1 GiB through a socketpair, compared byte for byte. */
static void test_socketpair_1g(Fixture *f, gconstpointer data)
{
	MigramRamList *src = f->src;
	MigramRamList *dst = f->dst;
	MigramReceiver *r = migram_receiver_new(dst, NULL);
	g_autoptr(GError) error = NULL;
	SendJob job = { .list = src };
	MigramChannel *ch;
	GThread *t;
	int fds[2];
	gint64 t0;

	(void)data;
	fill(add(src, "pc.ram", MIGRAM_RAM_BACKEND_ANON, 1024 * MiB, 0), 7);
	add(dst, "pc.ram", MIGRAM_RAM_BACKEND_ANON, 1024 * MiB, 0);
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
	job.fd = fds[0];
	ch = migram_channel_new(fds[1], true);
	t0 = g_get_monotonic_time();
	t = g_thread_new("sender", send_main, &job);
	g_assert_true(migram_receiver_load(r, ch, &error));
	g_assert_no_error(error);
	g_thread_join(t);
	g_test_message("1 GiB loaded in %.2f s",
		       (g_get_monotonic_time() - t0) / 1e6);
	assert_same(src, dst);
	migram_channel_free(ch);
	migram_receiver_free(r);
}

/* A source that sends the stream's header, then nothing, never closing:
 * with io_timeout_ms the load fails "stalled" instead of waiting
 * forever (the destination had no limit of its own: docs/reliability.md). */
static void test_stalled_source(Fixture *f, gconstpointer data)
{
	static const guint8 header[] = { 'Q', 'E', 'V', 'M', 0, 0, 0, 3 };
	MigramReceiver *r = migram_receiver_new(
		f->dst, &(MigramReceiverConfig){ .io_timeout_ms = 300 });
	g_autoptr(GError) error = NULL;
	MigramChannel *ch;
	int fds[2];

	(void)data;
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
	g_assert_cmpint(write(fds[0], header, sizeof(header)), ==,
			(ssize_t)sizeof(header));
	ch = migram_channel_new(fds[1], true);
	g_assert_false(migram_receiver_load(r, ch, &error));
	g_test_message("%s", error->message);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_nonnull(strstr(error->message, "stalled"));
	g_assert_nonnull(strstr(error->message, "could not read for 300 ms"));
	migram_channel_free(ch);
	migram_receiver_free(r);
	close(fds[0]);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	g_test_add("/migration/receiver/roundtrip", Fixture, NULL, fx_set_up,
		   test_roundtrip, fx_tear_down);
	g_test_add("/migration/receiver/create-blocks", Fixture, NULL,
		   fx_set_up, test_create_blocks, fx_tear_down);
	g_test_add("/migration/receiver/resize-from-stream", Fixture, NULL,
		   fx_set_up, test_resize_from_stream, fx_tear_down);
	g_test_add("/migration/receiver/block-list-errors", Fixture, NULL,
		   fx_set_up, test_block_list_errors, fx_tear_down);
	g_test_add("/migration/receiver/hostile-pages", Fixture, NULL,
		   fx_set_up, test_hostile_pages, fx_tear_down);
	g_test_add("/migration/receiver/hostile-records", Fixture, NULL,
		   fx_set_up, test_hostile_records, fx_tear_down);
	g_test_add("/migration/receiver/created-zero-pages-untouched", Fixture,
		   NULL, fx_set_up, test_created_zero_pages_untouched,
		   fx_tear_down);
	g_test_add("/migration/receiver/zero-pages-stay-unpopulated", Fixture,
		   NULL, fx_set_up, test_zero_pages_stay_unpopulated,
		   fx_tear_down);
	g_test_add("/migration/receiver/device-sections", Fixture, NULL,
		   fx_set_up, test_device_sections, fx_tear_down);
	g_test_add("/migration/receiver/stalled-source", Fixture, NULL,
		   fx_set_up, test_stalled_source, fx_tear_down);
	g_test_add("/migration/receiver/socketpair-1g", Fixture, NULL,
		   fx_set_up, test_socketpair_1g, fx_tear_down);
	return g_test_run();
}
