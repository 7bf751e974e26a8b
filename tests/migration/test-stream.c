/* SPDX-License-Identifier: MIT */
/*
 * The QEMU stream writer and reader: exact bytes against the reference
 * layout, round trips of every record kind, every truncation of a valid
 * stream, and a table of malformed and hostile inputs with their errors.
 */
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <migram/channel.h>
#include <migram/migram.h>
#include <migram/stream.h>

#include "migram-test-util.h"

#define P 4096

/* Run a writer into a memfd; return what it wrote. */
typedef void (*WriteFn)(MigramStreamWriter *w, gpointer data);

static GBytes *written(WriteFn fn, gpointer data)
{
	int fd = memfd_create("out", MFD_CLOEXEC);
	MigramChannel *ch = migram_channel_new(fd, true);
	MigramStreamWriter *w = migram_stream_writer_new(ch);
	g_autoptr(GError) error = NULL;
	struct stat st;
	guint8 *buf;

	fn(w, data);
	g_assert_true(migram_stream_writer_finish(w, &error));
	g_assert_no_error(error);
	fstat(fd, &st);
	buf = g_malloc(st.st_size);
	g_assert_cmpint(pread(fd, buf, st.st_size, 0), ==, st.st_size);
	migram_stream_writer_free(w);
	migram_channel_free(ch);
	return g_bytes_new_take(buf, st.st_size);
}

#define put8 migram_test_put8
#define put32 migram_test_put32
#define put64 migram_test_put64
#define putstr migram_test_putstr

/* The two page payloads of the minimal stream. */
typedef struct {
	guint8 a[P], b[P];
} MinimalPages;

static void write_minimal(MigramStreamWriter *w, gpointer data)
{
	const MinimalPages *pg = data;
	MigramStreamBlock blocks[] = { { "pc.ram", 0x4000, 0 } };

	migram_stream_writer_begin(w, "none");
	migram_stream_writer_ram_start(w, blocks, 1);
	migram_stream_writer_ram_open(w, false);
	migram_stream_writer_page(w, "pc.ram", 0, pg->a);
	migram_stream_writer_page(w, "pc.ram", 0x1000, pg->b);
	migram_stream_writer_zero_page(w, "pc.ram", 0x2000);
	migram_stream_writer_ram_close(w);
	migram_stream_writer_ram_open(w, true);
	migram_stream_writer_ram_close(w);
}

/* The layout of docs/wire-format.md, byte by byte. */
static GByteArray *expected_minimal(const MinimalPages *pg)
{
	GByteArray *a = g_byte_array_new();
	const char *json = "{\"page_size\": 4096, \"devices\": []}";

	put32(a, 0x5145564d);
	put32(a, 3);
	put8(a, 0x07); /* configuration */
	put32(a, 4);
	g_byte_array_append(a, (const guint8 *)"none", 4);
	put8(a, 0x01); /* START */
	put32(a, 2);
	putstr(a, "ram");
	put32(a, 0);
	put32(a, 4);
	put64(a, 0x4000 | 0x04); /* MEM_SIZE */
	putstr(a, "pc.ram");
	put64(a, 0x4000);
	put64(a, 0x10); /* EOS */
	put8(a, 0x7e);
	put32(a, 2);
	put8(a, 0x02); /* PART */
	put32(a, 2);
	put64(a, 0x0 | 0x08); /* PAGE, named */
	putstr(a, "pc.ram");
	g_byte_array_append(a, pg->a, P);
	put64(a, 0x1000 | 0x08 | 0x20); /* PAGE | CONTINUE */
	g_byte_array_append(a, pg->b, P);
	put64(a, 0x2000 | 0x02 | 0x20); /* ZERO | CONTINUE */
	put8(a, 0);
	put64(a, 0x10);
	put8(a, 0x7e);
	put32(a, 2);
	put8(a, 0x03); /* END */
	put32(a, 2);
	put64(a, 0x10);
	put8(a, 0x7e);
	put32(a, 2);
	put8(a, 0x00); /* EOF */
	put8(a, 0x06); /* vmdesc */
	put32(a, (uint32_t)strlen(json));
	g_byte_array_append(a, (const guint8 *)json, strlen(json));
	return a;
}

static void test_exact_bytes(void)
{
	g_autoptr(GBytes) got = NULL;
	g_autoptr(GByteArray) want = NULL;
	g_autofree MinimalPages *pg = g_new(MinimalPages, 1);
	gsize n;
	const guint8 *p;

	memset(pg->a, 0xaa, P);
	memset(pg->b, 0xbb, P);
	want = expected_minimal(pg);
	got = written(write_minimal, pg);
	p = g_bytes_get_data(got, &n);
	g_assert_cmpmem(p, n, want->data, want->len);
}

typedef struct {
	MigramStreamRecordType type;
	char name[256];
	uint64_t offset;
	uint64_t length;
	guint8 first_byte; /* PAGE payload's first byte */
} Rec;

/* Read every record (and page payloads) of bytes; NULL on error. */
static GArray *read_records(const void *bytes, size_t len, GError **error)
{
	MigramChannel *ch = migram_test_channel_over(bytes, len);
	MigramStreamReader *r = migram_stream_reader_new(ch);
	GArray *out = g_array_new(FALSE, TRUE, sizeof(Rec));
	MigramStreamRecord rec;
	guint8 *page = g_malloc(P);
	bool ok = true;

	do {
		Rec x = { 0 };

		ok = migram_stream_reader_next(r, &rec, error);
		if (!ok)
			break;
		x.type = rec.type;
		g_strlcpy(x.name, rec.name, sizeof(x.name));
		x.offset = rec.offset;
		x.length = rec.length;
		if (rec.type == MIGRAM_STREAM_REC_PAGE) {
			ok = migram_stream_reader_read_page(r, page, error);
			x.first_byte = page[0];
		}
		g_array_append_val(out, x);
	} while (ok && rec.type != MIGRAM_STREAM_REC_END);
	g_free(page);
	migram_stream_reader_free(r);
	migram_channel_free(ch);
	if (!ok)
		g_clear_pointer(&out, g_array_unref);
	return out;
}

/*
 * The round-trip stream's inputs: a block name of the longest length the
 * format allows and page payloads whose first byte says which page it is.
 * Each case that writes the stream gets its own, filled by the set-up.
 */
typedef struct {
	char long_name[256];
	guint8 pages[8][P];
} Roundtrip;

static void roundtrip_set_up(Roundtrip *f, gconstpointer data)
{
	(void)data;
	memset(f->long_name, 'n', 255);
	f->long_name[255] = '\0';
	for (int i = 0; i < 8; i++)
		memset(f->pages[i], 0x10 + i, P);
}

static void write_roundtrip(MigramStreamWriter *w, gpointer data)
{
	const Roundtrip *f = data;
	const char *long_name = f->long_name;
	MigramStreamBlock blocks[] = {
		{ "pc.ram", 8 * P, 0 },
		{ long_name, 4 * P, 0 },
		{ "vga.vram", 2 * P, 0 },
	};

	migram_stream_writer_begin(w, "pc-i440fx-7.2");
	migram_stream_writer_ram_start(w, blocks, 3);
	migram_stream_writer_ram_open(w, false);
	migram_stream_writer_page(w, "pc.ram", 0, f->pages[0]);
	migram_stream_writer_page(w, "pc.ram", 7 * P, f->pages[1]);
	migram_stream_writer_page(w, long_name, P, f->pages[2]);
	migram_stream_writer_zero_page(w, long_name, 3 * P);
	migram_stream_writer_ram_close(w);
	/* The CONTINUE context carries across sections. */
	migram_stream_writer_ram_open(w, false);
	migram_stream_writer_page(w, long_name, 0, f->pages[3]);
	migram_stream_writer_page(w, "vga.vram", P, f->pages[4]);
	migram_stream_writer_ram_close(w);
	migram_stream_writer_ram_open(w, true);
	migram_stream_writer_zero_page(w, "pc.ram", P);
	migram_stream_writer_page(w, "pc.ram", 2 * P, f->pages[5]);
	migram_stream_writer_ram_close(w);
}

static void test_roundtrip(Roundtrip *f, gconstpointer data)
{
	const char *long_name = f->long_name;
	g_autoptr(GBytes) bytes = NULL;
	g_autoptr(GError) error = NULL;
	g_autoptr(GArray) recs = NULL;
	const struct {
		MigramStreamRecordType type;
		const char *name;
		uint64_t offset;
		int page;
	} want[] = {
		{ MIGRAM_STREAM_REC_CONFIGURATION, "pc-i440fx-7.2", 0, -1 },
		{ MIGRAM_STREAM_REC_SECTION_START, "ram", 0, -1 },
		{ MIGRAM_STREAM_REC_BLOCK, "pc.ram", 0, -1 },
		{ MIGRAM_STREAM_REC_BLOCK, long_name, 0, -1 },
		{ MIGRAM_STREAM_REC_BLOCK, "vga.vram", 0, -1 },
		{ MIGRAM_STREAM_REC_SECTION_DONE, "", 0, -1 },
		{ MIGRAM_STREAM_REC_SECTION_PART, "ram", 0, -1 },
		{ MIGRAM_STREAM_REC_PAGE, "pc.ram", 0, 0 },
		{ MIGRAM_STREAM_REC_PAGE, "pc.ram", 7 * P, 1 },
		{ MIGRAM_STREAM_REC_PAGE, long_name, P, 2 },
		{ MIGRAM_STREAM_REC_ZERO_PAGE, long_name, 3 * P, -1 },
		{ MIGRAM_STREAM_REC_SECTION_DONE, "", 0, -1 },
		{ MIGRAM_STREAM_REC_SECTION_PART, "ram", 0, -1 },
		{ MIGRAM_STREAM_REC_PAGE, long_name, 0, 3 },
		{ MIGRAM_STREAM_REC_PAGE, "vga.vram", P, 4 },
		{ MIGRAM_STREAM_REC_SECTION_DONE, "", 0, -1 },
		{ MIGRAM_STREAM_REC_SECTION_END, "ram", 0, -1 },
		{ MIGRAM_STREAM_REC_ZERO_PAGE, "pc.ram", P, -1 },
		{ MIGRAM_STREAM_REC_PAGE, "pc.ram", 2 * P, 5 },
		{ MIGRAM_STREAM_REC_SECTION_DONE, "", 0, -1 },
		{ MIGRAM_STREAM_REC_EOF, "", 0, -1 },
		{ MIGRAM_STREAM_REC_VMDESC, "", 0, -1 },
		{ MIGRAM_STREAM_REC_END, "", 0, -1 },
	};
	gsize n;
	const guint8 *p;

	(void)data;
	bytes = written(write_roundtrip, f);
	p = g_bytes_get_data(bytes, &n);
	recs = read_records(p, n, &error);
	g_assert_no_error(error);
	g_assert_cmpuint(recs->len, ==, G_N_ELEMENTS(want));
	for (guint i = 0; i < recs->len; i++) {
		Rec *r = &g_array_index(recs, Rec, i);

		g_assert_cmpint(r->type, ==, want[i].type);
		g_assert_cmpstr(r->name, ==, want[i].name);
		g_assert_cmphex(r->offset, ==, want[i].offset);
		if (want[i].page >= 0)
			g_assert_cmphex(r->first_byte, ==, 0x10 + want[i].page);
	}
	/* Block lengths travel too. */
	g_assert_cmphex(g_array_index(recs, Rec, 2).length, ==, 8 * P);
	g_assert_cmphex(g_array_index(recs, Rec, 3).length, ==, 4 * P);

	/* CONTINUE saved the names: 3 named page records out of 8. */
	g_assert_nonnull(memmem(p, n, long_name, 255));
}

/*
 * Cut a valid stream at every length: each cut fails cleanly, except the
 * ones that end right after EOF (the vmdesc is optional).
 */
static void test_every_truncation(Roundtrip *f, gconstpointer data)
{
	g_autoptr(GBytes) bytes = NULL;
	gsize n;
	const guint8 *p;
	size_t eof_at;
	unsigned int failures = 0;

	(void)data;
	bytes = written(write_roundtrip, f);
	p = g_bytes_get_data(bytes, &n);
	/* The EOF byte sits just before 0x06 + be32 length + JSON. */
	for (eof_at = n - 6; eof_at > 0; eof_at--) {
		guint32 len;

		memcpy(&len, p + eof_at + 2, 4);
		if (p[eof_at] == 0x00 && p[eof_at + 1] == 0x06 &&
		    GUINT32_FROM_BE(len) == n - (eof_at + 6))
			break;
	}
	g_assert_cmpuint(eof_at, >, 0);
	for (size_t len = 0; len < n; len++) {
		GError *error = NULL;
		GArray *recs = read_records(p, len, &error);

		if (len == eof_at + 1) {
			g_assert_no_error(error);
			g_assert_nonnull(recs);
			g_array_unref(recs);
			continue;
		}
		g_assert_null(recs);
		g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
		if (!strstr(error->message, "stream byte") &&
		    !strstr(error->message, "end of stream"))
			g_error("cut at %zu: \"%s\" says not where", len,
				error->message);
		g_error_free(error);
		failures++;
	}
	g_assert_cmpuint(failures, ==, n - 1);
}

/* Streams built by hand: each must fail with this code and message. */
typedef struct {
	const char *name;
	void (*build)(GByteArray *a);
	int code;
	const char *needle;
} BadCase;

static void header(GByteArray *a)
{
	put32(a, 0x5145564d);
	put32(a, 3);
	put8(a, 0x07);
	put32(a, 4);
	g_byte_array_append(a, (const guint8 *)"none", 4);
}

static void ram_start(GByteArray *a, uint32_t version)
{
	put8(a, 0x01);
	put32(a, 2);
	putstr(a, "ram");
	put32(a, 0);
	put32(a, version);
}

static void list_one(GByteArray *a)
{
	ram_start(a, 4);
	put64(a, 0x4000 | 4);
	putstr(a, "pc.ram");
	put64(a, 0x4000);
	put64(a, 0x10);
	put8(a, 0x7e);
	put32(a, 2);
	put8(a, 0x02);
	put32(a, 2);
}

static void b_magic(GByteArray *a)
{
	put32(a, 0x51455650);
	put32(a, 3);
}

static void b_version(GByteArray *a)
{
	put32(a, 0x5145564d);
	put32(a, 2);
}

static void b_type(GByteArray *a)
{
	header(a);
	put8(a, 0x42);
}

static void b_ram_version(GByteArray *a)
{
	header(a);
	ram_start(a, 5);
}

static void b_continue_first(GByteArray *a)
{
	header(a);
	list_one(a);
	put64(a, 0x1000 | 0x08 | 0x20);
}

static void b_flag(GByteArray *a, uint64_t flag)
{
	header(a);
	list_one(a);
	put64(a, 0x1000 | flag);
}

static void b_xbzrle(GByteArray *a)
{
	b_flag(a, 0x40);
}

static void b_compress(GByteArray *a)
{
	b_flag(a, 0x100);
}

static void b_multifd(GByteArray *a)
{
	b_flag(a, 0x200);
}

static void b_hook(GByteArray *a)
{
	b_flag(a, 0x80);
}

static void b_unknown_flags(GByteArray *a)
{
	b_flag(a, 0x08 | 0x02); /* PAGE and ZERO at once */
}

static void b_full_flag(GByteArray *a)
{
	b_flag(a, 0x01);
}

static void b_list_overflow(GByteArray *a)
{
	header(a);
	ram_start(a, 4);
	put64(a, 0x1000 | 4);
	putstr(a, "pc.ram");
	put64(a, 0x2000); /* more than the announced total */
}

static void b_empty_name(GByteArray *a)
{
	header(a);
	ram_start(a, 4);
	put64(a, 0x1000 | 4);
	putstr(a, "");
}

static void b_footer_mismatch(GByteArray *a)
{
	header(a);
	ram_start(a, 4);
	put64(a, 0x1000 | 4);
	putstr(a, "pc.ram");
	put64(a, 0x1000);
	put64(a, 0x10);
	put8(a, 0x7e);
	put32(a, 9);
}

static void b_unknown_section(GByteArray *a)
{
	header(a);
	put8(a, 0x02);
	put32(a, 77);
}

static void b_after_eof(GByteArray *a)
{
	header(a);
	put8(a, 0x00);
	put8(a, 0x01);
}

static void b_huge_vmdesc(GByteArray *a)
{
	header(a);
	put8(a, 0x00);
	put8(a, 0x06);
	put32(a, 0xffffffff);
}

static void b_long_config(GByteArray *a)
{
	put32(a, 0x5145564d);
	put32(a, 3);
	put8(a, 0x07);
	put32(a, 0x10000000); /* a 256 MiB "machine name" */
}

static void b_second_start(GByteArray *a)
{
	header(a);
	list_one(a);
	put64(a, 0x10);
	put8(a, 0x7e);
	put32(a, 2);
	ram_start(a, 4);
}

static void b_list_in_part(GByteArray *a)
{
	header(a);
	list_one(a);
	put64(a, 0x1000 | 4);
}

static void b_subsection(GByteArray *a)
{
	header(a);
	/* configuration followed by an unknown subsection */
	put8(a, 0x05);
	putstr(a, "configuration/bogus");
	put32(a, 1);
}

static void b_page_bits(GByteArray *a)
{
	header(a);
	put8(a, 0x05);
	putstr(a, "configuration/target-page-bits");
	put32(a, 1);
	put32(a, 40);
}

static void b_vmdesc_early(GByteArray *a)
{
	header(a);
	put8(a, 0x06);
	put32(a, 2);
}

static const BadCase bad_cases[] = {
	{ "bad-magic", b_magic, MIGRAM_ERROR_PROTOCOL, "bad magic" },
	{ "version-2", b_version, MIGRAM_ERROR_PROTOCOL, "stream version 2" },
	{ "unknown-type", b_type, MIGRAM_ERROR_PROTOCOL,
	  "unknown section type 0x42" },
	{ "ram-version", b_ram_version, MIGRAM_ERROR_PROTOCOL,
	  "ram section version 5" },
	{ "continue-first", b_continue_first, MIGRAM_ERROR_PROTOCOL,
	  "CONTINUE but no block" },
	{ "xbzrle", b_xbzrle, MIGRAM_ERROR_UNSUPPORTED, "XBZRLE" },
	{ "compress", b_compress, MIGRAM_ERROR_UNSUPPORTED, "compressed page" },
	{ "multifd", b_multifd, MIGRAM_ERROR_UNSUPPORTED, "multifd flush" },
	{ "rdma-hook", b_hook, MIGRAM_ERROR_UNSUPPORTED, "RDMA hook" },
	{ "unknown-flags", b_unknown_flags, MIGRAM_ERROR_PROTOCOL,
	  "unknown RAM record flags 0xa" },
	{ "full-flag", b_full_flag, MIGRAM_ERROR_PROTOCOL,
	  "unknown RAM record flags 0x1" },
	{ "list-overflow", b_list_overflow, MIGRAM_ERROR_PROTOCOL,
	  "does not fit" },
	{ "empty-name", b_empty_name, MIGRAM_ERROR_PROTOCOL,
	  "empty block name" },
	{ "footer-mismatch", b_footer_mismatch, MIGRAM_ERROR_PROTOCOL,
	  "footer of section 9 inside section 2" },
	{ "unknown-section", b_unknown_section, MIGRAM_ERROR_PROTOCOL,
	  "section id 77 was never started" },
	{ "after-eof", b_after_eof, MIGRAM_ERROR_PROTOCOL, "after EOF" },
	{ "huge-vmdesc", b_huge_vmdesc, MIGRAM_ERROR_PROTOCOL, "vmdesc of" },
	{ "long-config", b_long_config, MIGRAM_ERROR_PROTOCOL,
	  "machine type of" },
	{ "second-start", b_second_start, MIGRAM_ERROR_PROTOCOL,
	  "second START" },
	{ "list-in-part", b_list_in_part, MIGRAM_ERROR_PROTOCOL,
	  "block list outside the START section" },
	{ "subsection", b_subsection, MIGRAM_ERROR_PROTOCOL,
	  "unknown configuration subsection" },
	{ "page-bits", b_page_bits, MIGRAM_ERROR_PROTOCOL,
	  "target page bits 40" },
	{ "vmdesc-early", b_vmdesc_early, MIGRAM_ERROR_PROTOCOL,
	  "vmdesc before EOF" },
};

static void test_bad_input(gconstpointer data)
{
	const BadCase *c = data;
	g_autoptr(GByteArray) a = g_byte_array_new();
	g_autoptr(GError) error = NULL;
	GArray *recs;

	c->build(a);
	/* Padding, so that a case cannot pass by merely running dry. */
	for (int i = 0; i < 64; i++)
		put8(a, 0);
	recs = read_records(a->data, a->len, &error);
	g_assert_null(recs);
	g_assert_error(error, MIGRAM_ERROR, c->code);
	if (!strstr(error->message, c->needle))
		g_error("%s: \"%s\" lacks \"%s\"", c->name, error->message,
			c->needle);
	g_assert_nonnull(strstr(error->message, "stream byte"));
}

/* A block length that is not whole pages fails the channel, not the wire. */
static void test_writer_refuses_partial_page(void)
{
	int fd = memfd_create("out", MFD_CLOEXEC);
	MigramChannel *ch = migram_channel_new(fd, true);
	MigramStreamWriter *w = migram_stream_writer_new(ch);
	MigramStreamBlock b = { "pc.ram", 0x4000 + 12, 0 };
	g_autoptr(GError) error = NULL;

	migram_stream_writer_begin(w, "none");
	migram_stream_writer_ram_start(w, &b, 1);
	g_assert_false(migram_stream_writer_finish(w, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(error->message, "whole number of 4 KiB"));
	migram_stream_writer_free(w);
	migram_channel_free(ch);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/migration/stream/exact-bytes", test_exact_bytes);
	g_test_add_func("/migration/stream/writer-refuses-partial-page",
			test_writer_refuses_partial_page);
	g_test_add("/migration/stream/roundtrip", Roundtrip, NULL,
		   roundtrip_set_up, test_roundtrip, NULL);
	g_test_add("/migration/stream/every-truncation", Roundtrip, NULL,
		   roundtrip_set_up, test_every_truncation, NULL);
	for (size_t i = 0; i < G_N_ELEMENTS(bad_cases); i++) {
		g_autofree char *path = g_strdup_printf(
			"/migration/stream/bad/%s", bad_cases[i].name);

		g_test_add_data_func(path, &bad_cases[i], test_bad_input);
	}
	return g_test_run();
}
