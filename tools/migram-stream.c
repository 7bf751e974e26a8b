/* SPDX-License-Identifier: MIT */
/*
 * migram-stream: look into, extract from and write QEMU migration streams.
 *
 *   migram-stream info FILE [--json]
 *   migram-stream extract FILE --block NAME -o OUT
 *   migram-stream save -o OUT [--machine TYPE] NAME=IMAGE...
 *
 * Exit codes: 0 success, 1 bad or unreadable stream (one line on stderr
 * says what and where), 2 bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include <migram/bitmap.h>
#include <migram/channel.h>
#include <migram/migram.h>
#include <migram/snapshot.h>
#include <migram/stream.h>

#include "vmstate-walk.h"

#define PAGE 4096u

typedef struct {
	char name[256];
	guint64 length;
	guint64 page_size;
	guint64 normal;
	guint64 zero;
} BlockInfo;

typedef struct {
	char machine[256];
	GArray *blocks;     /* BlockInfo */
	GPtrArray *devices; /* "name" strings */
	guint ram_sections;
	guint64 bytes;
	guint64 vmdesc_bytes;
	bool vmdesc;
	char *stopped; /* why parsing stopped early, or NULL */

	/* extract */
	const char *want;
	int out_fd;
	unsigned long *written;
	guint8 *page;
} Scan;

static int usage_error(const char *msg)
{
	fprintf(stderr, "migram-stream: %s (see migram-stream --help)\n", msg);
	return 2;
}

static BlockInfo *find_block(Scan *s, const char *name)
{
	for (guint i = 0; i < s->blocks->len; i++) {
		BlockInfo *b = &g_array_index(s->blocks, BlockInfo, i);

		if (strcmp(b->name, name) == 0)
			return b;
	}
	return NULL;
}

static bool fail_at(GError **error, const MigramStreamRecord *rec,
		    const char *fmt, const char *name)
{
	g_autofree char *msg = g_strdup_printf(fmt, name);

	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
		    "stream byte %" G_GUINT64_FORMAT ": %s", rec->stream_offset,
		    msg);
	return false;
}

/* A page or zero page of the block being extracted. */
static bool extract_page(Scan *s, MigramStreamReader *r,
			 const MigramStreamRecord *rec, BlockInfo *b,
			 GError **error)
{
	size_t pfn = (size_t)(rec->offset / PAGE);

	if (rec->offset >= b->length || b->length - rec->offset < PAGE)
		return fail_at(error, rec, "page outside block '%s'", b->name);
	if (rec->type == MIGRAM_STREAM_REC_PAGE) {
		if (!migram_stream_reader_read_page(r, s->page, error))
			return false;
	} else {
		/* A page sent before and now zero must become zero. */
		if (!migram_bitmap_test_bit(s->written, pfn))
			return true;
		memset(s->page, 0, PAGE);
	}
	if (pwrite(s->out_fd, s->page, PAGE, (off_t)rec->offset) != PAGE) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "writing the output: %s", g_strerror(errno));
		return false;
	}
	migram_bitmap_set_bit(s->written, pfn);
	return true;
}

static bool on_page(Scan *s, MigramStreamReader *r,
		    const MigramStreamRecord *rec, GError **error)
{
	BlockInfo *b = find_block(s, rec->name);

	if (rec->type == MIGRAM_STREAM_REC_PAGE && rec->length != PAGE)
		return fail_at(error, rec,
			       "target pages of other than 4 KiB (block '%s'): "
			       "not supported",
			       rec->name);
	if (!b)
		return fail_at(error, rec,
			       "page for block '%s', not in the "
			       "block list",
			       rec->name);
	if (rec->type == MIGRAM_STREAM_REC_PAGE)
		b->normal++;
	else
		b->zero++;
	if (s->want && strcmp(s->want, rec->name) == 0)
		return extract_page(s, r, rec, b, error);
	return true;
}

static bool on_block(Scan *s, const MigramStreamRecord *rec, GError **error)
{
	BlockInfo b = { .length = rec->length, .page_size = rec->page_size };

	if (find_block(s, rec->name))
		return fail_at(error, rec, "block '%s' listed twice",
			       rec->name);
	g_strlcpy(b.name, rec->name, sizeof(b.name));
	g_array_append_val(s->blocks, b);
	if (s->want && strcmp(s->want, rec->name) == 0) {
		s->written = migram_bitmap_new((size_t)(rec->length / PAGE));
		if (!s->written || ftruncate(s->out_fd, (off_t)rec->length) < 0)
			return fail_at(error, rec,
				       "cannot size the output for '%s'",
				       rec->name);
	}
	return true;
}

/* A device section: skip its body with the vmdesc, or stop there. */
static bool on_device(Scan *s, const VmDesc *desc, MigramChannel *ch,
		      const MigramStreamRecord *rec, bool *stop, GError **error)
{
	g_autoptr(GError) err = NULL;

	g_ptr_array_add(s->devices,
			g_strdup(rec->name[0] ? rec->name : "(continued)"));
	if (desc && rec->name[0] &&
	    vmdesc_skip_device(desc, rec->name, rec->instance_id, ch, &err))
		return true;
	s->stopped = g_strdup_printf(
		"stopped at device section '%s' (byte %" G_GUINT64_FORMAT
		"): %s",
		rec->name, rec->stream_offset,
		err ? err->message : "no vmdesc to describe it");
	*stop = true;
	(void)error;
	return true;
}

static bool scan(const char *path, Scan *s, GError **error)
{
	int fd = strcmp(path, "-") == 0 ? dup(0) : open(path, O_RDONLY);
	VmDesc *desc = NULL;
	MigramChannel *ch;
	MigramStreamReader *r;
	MigramStreamRecord rec;
	bool ok = true, stop = false;

	if (fd < 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO, "%s: %s",
			    path, g_strerror(errno));
		return false;
	}
	if (strcmp(path, "-") != 0)
		desc = vmdesc_load_from_file(path, NULL);
	ch = migram_channel_new(fd, true);
	r = migram_stream_reader_new(ch);
	while (ok && !stop) {
		ok = migram_stream_reader_next(r, &rec, error);
		if (!ok)
			break;
		switch (rec.type) {
		case MIGRAM_STREAM_REC_CONFIGURATION:
			g_strlcpy(s->machine, rec.name, sizeof(s->machine));
			break;
		case MIGRAM_STREAM_REC_SECTION_START:
		case MIGRAM_STREAM_REC_SECTION_PART:
		case MIGRAM_STREAM_REC_SECTION_END:
		case MIGRAM_STREAM_REC_SECTION_FULL:
			if (rec.is_ram)
				s->ram_sections++;
			else
				ok = on_device(s, desc, ch, &rec, &stop, error);
			break;
		case MIGRAM_STREAM_REC_BLOCK:
			ok = on_block(s, &rec, error);
			break;
		case MIGRAM_STREAM_REC_PAGE:
		case MIGRAM_STREAM_REC_ZERO_PAGE:
			ok = on_page(s, r, &rec, error);
			break;
		case MIGRAM_STREAM_REC_VMDESC:
			s->vmdesc = true;
			s->vmdesc_bytes = rec.length;
			break;
		case MIGRAM_STREAM_REC_END:
			stop = true;
			break;
		default:
			break;
		}
	}
	s->bytes = migram_channel_read_offset(ch);
	migram_stream_reader_free(r);
	migram_channel_free(ch);
	vmdesc_free(desc);
	return ok;
}

static void scan_init(Scan *s)
{
	memset(s, 0, sizeof(*s));
	s->blocks = g_array_new(FALSE, TRUE, sizeof(BlockInfo));
	s->devices = g_ptr_array_new_with_free_func(g_free);
	s->out_fd = -1;
	s->page = g_malloc(PAGE);
}

static void scan_clear(Scan *s)
{
	g_array_unref(s->blocks);
	g_ptr_array_unref(s->devices);
	g_free(s->stopped);
	g_free(s->page);
	migram_bitmap_free(s->written);
}

static void print_json(const char *path, const Scan *s)
{
	g_autoptr(JsonBuilder) b = json_builder_new();
	g_autoptr(JsonGenerator) gen = json_generator_new();
	g_autoptr(JsonNode) root = NULL;
	g_autofree char *text = NULL;
	guint64 normal = 0, zero = 0;

	json_builder_begin_object(b);
	json_builder_set_member_name(b, "file");
	json_builder_add_string_value(b, path);
	json_builder_set_member_name(b, "bytes");
	json_builder_add_int_value(b, (gint64)s->bytes);
	json_builder_set_member_name(b, "machine");
	json_builder_add_string_value(b, s->machine);
	json_builder_set_member_name(b, "ram_sections");
	json_builder_add_int_value(b, s->ram_sections);
	json_builder_set_member_name(b, "blocks");
	json_builder_begin_array(b);
	for (guint i = 0; i < s->blocks->len; i++) {
		const BlockInfo *k = &g_array_index(s->blocks, BlockInfo, i);

		json_builder_begin_object(b);
		json_builder_set_member_name(b, "name");
		json_builder_add_string_value(b, k->name);
		json_builder_set_member_name(b, "length");
		json_builder_add_int_value(b, (gint64)k->length);
		json_builder_set_member_name(b, "page_size");
		json_builder_add_int_value(b, (gint64)k->page_size);
		json_builder_set_member_name(b, "normal_pages");
		json_builder_add_int_value(b, (gint64)k->normal);
		json_builder_set_member_name(b, "zero_pages");
		json_builder_add_int_value(b, (gint64)k->zero);
		json_builder_end_object(b);
		normal += k->normal;
		zero += k->zero;
	}
	json_builder_end_array(b);
	json_builder_set_member_name(b, "normal_pages");
	json_builder_add_int_value(b, (gint64)normal);
	json_builder_set_member_name(b, "zero_pages");
	json_builder_add_int_value(b, (gint64)zero);
	json_builder_set_member_name(b, "devices");
	json_builder_begin_array(b);
	for (guint i = 0; i < s->devices->len; i++)
		json_builder_add_string_value(b, s->devices->pdata[i]);
	json_builder_end_array(b);
	json_builder_set_member_name(b, "vmdesc_bytes");
	json_builder_add_int_value(b, s->vmdesc ? (gint64)s->vmdesc_bytes : -1);
	json_builder_set_member_name(b, "complete");
	json_builder_add_boolean_value(b, s->stopped == NULL);
	json_builder_end_object(b);
	root = json_builder_get_root(b);
	json_generator_set_root(gen, root);
	json_generator_set_pretty(gen, TRUE);
	text = json_generator_to_data(gen, NULL);
	printf("%s\n", text);
}

static void print_human(const char *path, const Scan *s)
{
	guint64 normal = 0, zero = 0;

	printf("stream:   %s, %" G_GUINT64_FORMAT " bytes read\n", path,
	       s->bytes);
	printf("machine:  %s\n", s->machine[0] ? s->machine : "(none)");
	printf("ram:      %u sections (START, PARTs, END)\n", s->ram_sections);
	printf("blocks:   %-32s %14s %10s %10s\n", "name", "length", "normal",
	       "zero");
	for (guint i = 0; i < s->blocks->len; i++) {
		const BlockInfo *k = &g_array_index(s->blocks, BlockInfo, i);

		printf("          %-32s %#14" G_GINT64_MODIFIER
		       "x %10" G_GUINT64_FORMAT " %10" G_GUINT64_FORMAT "\n",
		       k->name, k->length, k->normal, k->zero);
		normal += k->normal;
		zero += k->zero;
	}
	printf("pages:    %" G_GUINT64_FORMAT " normal, %" G_GUINT64_FORMAT
	       " zero\n",
	       normal, zero);
	printf("devices:  %u sections", s->devices->len);
	for (guint i = 0; i < s->devices->len; i++)
		printf("%s%s", i ? ", " : ": ", (char *)s->devices->pdata[i]);
	printf("\nvmdesc:   %s\n", s->vmdesc ? "present" : "absent");
	if (s->stopped)
		printf("note:     %s\n", s->stopped);
}

/* A snapshot file (snapshot.h) rather than a stream: its magic. */
static bool is_snapshot_file(const char *path)
{
	char magic[8];
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : NULL;
	bool yes = f && fread(magic, 1, 8, f) == 8 &&
		   memcmp(magic, MIGRAM_SNAPSHOT_MAGIC, 8) == 0;
	if (f)
		fclose(f);
	return yes;
}

static int snapshot_info(const char *path, gboolean json)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(MigramSnapshotFile) f = migram_snapshot_open(path, &error);
	if (!f) {
		fprintf(stderr, "migram-stream: %s\n", error->message);
		return 1;
	}
	if (!json) {
		g_autofree char *d = migram_snapshot_describe(f);
		printf("file:     %s\n%s", path, d);
		return 0;
	}
	g_autoptr(JsonBuilder) jb = json_builder_new();
	json_builder_begin_object(jb);
	json_builder_set_member_name(jb, "file");
	json_builder_add_string_value(jb, path);
	json_builder_set_member_name(jb, "kind");
	json_builder_add_string_value(jb, "snapshot");
	json_builder_set_member_name(jb, "diff");
	json_builder_add_boolean_value(jb, migram_snapshot_is_diff(f));
	json_builder_set_member_name(jb, "id");
	json_builder_add_int_value(jb, (gint64)migram_snapshot_id(f));
	json_builder_set_member_name(jb, "parent");
	json_builder_add_int_value(jb, (gint64)migram_snapshot_parent_id(f));
	json_builder_set_member_name(jb, "epoch");
	json_builder_add_int_value(jb, (gint64)migram_snapshot_epoch(f));
	json_builder_set_member_name(jb, "device_state_bytes");
	json_builder_add_int_value(
		jb, (gint64)migram_snapshot_device_state_size(f));
	json_builder_set_member_name(jb, "blocks");
	json_builder_begin_array(jb);
	for (guint i = 0; i < migram_snapshot_block_count(f); i++) {
		MigramSnapshotBlockInfo b;
		migram_snapshot_block_info(f, i, &b);
		json_builder_begin_object(jb);
		json_builder_set_member_name(jb, "name");
		json_builder_add_string_value(jb, b.name);
		json_builder_set_member_name(jb, "used_length");
		json_builder_add_int_value(jb, (gint64)b.used_length);
		json_builder_set_member_name(jb, "page_size");
		json_builder_add_int_value(jb, (gint64)b.page_size);
		json_builder_set_member_name(jb, "present_pages");
		json_builder_add_int_value(jb, (gint64)b.present_pages);
		json_builder_set_member_name(jb, "pages_offset");
		json_builder_add_int_value(jb, (gint64)b.pages_offset);
		json_builder_set_member_name(jb, "hot_pages");
		json_builder_add_int_value(jb, (gint64)b.hot_pages);
		json_builder_set_member_name(jb, "hashes");
		json_builder_add_boolean_value(jb, b.hashes_offset != 0);
		json_builder_end_object(jb);
	}
	json_builder_end_array(jb);
	json_builder_end_object(jb);
	g_autoptr(JsonGenerator) gen = json_generator_new();
	g_autoptr(JsonNode) root = json_builder_get_root(jb);
	json_generator_set_root(gen, root);
	g_autofree char *text = json_generator_to_data(gen, NULL);
	printf("%s\n", text);
	return 0;
}

static int cmd_info(int argc, char **argv)
{
	gboolean json = FALSE;
	GOptionEntry entries[] = { { "json", 'j', 0, G_OPTION_ARG_NONE, &json,
				     "Print JSON for machines", NULL },
				   { NULL, 0, 0, 0, NULL, NULL, NULL } };
	g_autoptr(GOptionContext) ctx = g_option_context_new("FILE");
	g_autoptr(GError) error = NULL;
	Scan s;
	int rc = 0;

	g_option_context_set_summary(ctx,
				     "Sections, blocks and page counts "
				     "of a migration stream (- for stdin).");
	g_option_context_add_main_entries(ctx, entries, NULL);
	if (!g_option_context_parse(ctx, &argc, &argv, &error))
		return usage_error(error->message);
	if (argc != 2)
		return usage_error("info takes one FILE");
	if (is_snapshot_file(argv[1]))
		return snapshot_info(argv[1], json);
	scan_init(&s);
	if (!scan(argv[1], &s, &error)) {
		fprintf(stderr, "migram-stream: %s: %s\n", argv[1],
			error->message);
		rc = 1;
	} else if (json) {
		print_json(argv[1], &s);
	} else {
		print_human(argv[1], &s);
	}
	scan_clear(&s);
	return rc;
}

static int cmd_extract(int argc, char **argv)
{
	char *block = NULL, *out = NULL;
	GOptionEntry entries[] = {
		{ "block", 'b', 0, G_OPTION_ARG_STRING, &block,
		  "The RAM block to extract", "NAME" },
		{ "output", 'o', 0, G_OPTION_ARG_FILENAME, &out,
		  "Where to write its memory image", "OUT" },
		{ NULL, 0, 0, 0, NULL, NULL, NULL }
	};
	g_autoptr(GOptionContext) ctx = g_option_context_new("FILE");
	g_autoptr(GError) error = NULL;
	Scan s;
	int rc = 0;

	g_option_context_set_summary(
		ctx, "Write a RAM block's final memory image (pages never "
		     "sent read as zero).");
	g_option_context_add_main_entries(ctx, entries, NULL);
	if (!g_option_context_parse(ctx, &argc, &argv, &error))
		return usage_error(error->message);
	if (argc != 2 || !block || !out)
		return usage_error("extract takes FILE, --block and -o");
	scan_init(&s);
	s.want = block;
	s.out_fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (s.out_fd < 0) {
		fprintf(stderr, "migram-stream: %s: %s\n", out,
			g_strerror(errno));
		rc = 1;
	} else if (!scan(argv[1], &s, &error)) {
		fprintf(stderr, "migram-stream: %s: %s\n", argv[1],
			error->message);
		rc = 1;
	} else if (!find_block(&s, block)) {
		fprintf(stderr, "migram-stream: %s: no block '%s'\n", argv[1],
			block);
		rc = 1;
	}
	if (s.out_fd >= 0)
		close(s.out_fd);
	if (rc)
		unlink(out);
	scan_clear(&s);
	g_free(block);
	g_free(out);
	return rc;
}

typedef struct {
	char *name;
	guint8 *mem;
	gsize len;
} Image;

static bool page_is_zero(const guint8 *p)
{
	return migram_bitmap_range_empty((const unsigned long *)p, 0, PAGE * 8);
}

static bool map_image(const char *arg, Image *im, GError **error)
{
	const char *eq = strchr(arg, '=');
	struct stat st;
	int fd;

	if (!eq || eq == arg || strlen(eq) > 255 + 1) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "'%s' is not NAME=IMAGE", arg);
		return false;
	}
	im->name = g_strndup(arg, (gsize)(eq - arg));
	fd = open(eq + 1, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size == 0 ||
	    st.st_size % PAGE) {
		if (fd >= 0)
			close(fd);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%s: must be a non-empty file of whole 4 KiB pages",
			    eq + 1);
		return false;
	}
	im->len = (gsize)st.st_size;
	im->mem = mmap(NULL, im->len, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (im->mem == MAP_FAILED) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "%s: mmap: %s", eq + 1, g_strerror(errno));
		im->mem = NULL;
		return false;
	}
	return true;
}

static bool write_images(const char *out, const char *machine, Image *ims,
			 int n, GError **error)
{
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	g_autofree MigramStreamBlock *blocks = g_new0(MigramStreamBlock, n);
	MigramChannel *ch;
	MigramStreamWriter *w;
	bool ok;

	if (fd < 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO, "%s: %s", out,
			    g_strerror(errno));
		return false;
	}
	ch = migram_channel_new(fd, true);
	w = migram_stream_writer_new(ch);
	for (int i = 0; i < n; i++)
		blocks[i] = (MigramStreamBlock){ ims[i].name, ims[i].len, 0 };
	migram_stream_writer_begin(w, machine);
	migram_stream_writer_ram_start(w, blocks, (size_t)n);
	migram_stream_writer_ram_open(w, false);
	for (int i = 0; i < n; i++) {
		for (gsize off = 0; off < ims[i].len; off += PAGE) {
			if (page_is_zero(ims[i].mem + off))
				migram_stream_writer_zero_page(w, ims[i].name,
							       off);
			else
				migram_stream_writer_page(w, ims[i].name, off,
							  ims[i].mem + off);
		}
	}
	migram_stream_writer_ram_close(w);
	migram_stream_writer_ram_open(w, true);
	migram_stream_writer_ram_close(w);
	ok = migram_stream_writer_finish(w, error);
	migram_stream_writer_free(w);
	migram_channel_free(ch);
	return ok;
}

static int cmd_save(int argc, char **argv)
{
	char *out = NULL, *machine = NULL;
	GOptionEntry entries[] = {
		{ "output", 'o', 0, G_OPTION_ARG_FILENAME, &out,
		  "The stream file to write", "OUT" },
		{ "machine", 'm', 0, G_OPTION_ARG_STRING, &machine,
		  "Machine type for the configuration section (default none)",
		  "TYPE" },
		{ NULL, 0, 0, 0, NULL, NULL, NULL }
	};
	g_autoptr(GOptionContext) ctx = g_option_context_new("NAME=IMAGE...");
	g_autoptr(GError) error = NULL;
	Image *ims;
	int n, rc = 0;

	g_option_context_set_summary(
		ctx, "Write a stream holding each IMAGE file as RAM block "
		     "NAME, loadable by a QEMU destination with matching "
		     "blocks.");
	g_option_context_add_main_entries(ctx, entries, NULL);
	if (!g_option_context_parse(ctx, &argc, &argv, &error))
		return usage_error(error->message);
	if (argc < 2 || !out)
		return usage_error("save takes -o OUT and NAME=IMAGE...");
	n = argc - 1;
	ims = g_new0(Image, n);
	for (int i = 0; i < n && rc == 0; i++) {
		if (!map_image(argv[i + 1], &ims[i], &error)) {
			fprintf(stderr, "migram-stream: %s\n", error->message);
			rc = 2;
		}
	}
	if (rc == 0 &&
	    !write_images(out, machine ? machine : "none", ims, n, &error)) {
		fprintf(stderr, "migram-stream: %s\n", error->message);
		rc = 1;
	}
	for (int i = 0; i < n; i++) {
		if (ims[i].mem)
			munmap(ims[i].mem, ims[i].len);
		g_free(ims[i].name);
	}
	g_free(ims);
	g_free(out);
	g_free(machine);
	return rc;
}

static void print_help(FILE *f)
{
	fprintf(f,
		"Usage: migram-stream COMMAND [OPTION...]\n\n"
		"Commands:\n"
		"  info FILE [--json]                 (stream or snapshot file) sections, blocks, "
		"page counts\n"
		"  extract FILE --block NAME -o OUT   a block's memory "
		"image\n"
		"  save -o OUT [--machine TYPE] NAME=IMAGE...\n"
		"                                     write a stream from "
		"memory images\n\n"
		"Options:\n"
		"  -h, --help                         this help\n"
		"  --version                          print the version "
		"and exit\n\n"
		"COMMAND --help shows its options.  FILE may be - "
		"(standard input).\n"
		"Exit status: 0 success, 1 bad or unreadable stream, 2 bad "
		"usage.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return print_help(stderr), 2;
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
		return print_help(stdout), 0;
	if (strcmp(argv[1], "--version") == 0)
		return printf("migram-stream %s\n", migram_version_string()), 0;
	if (strcmp(argv[1], "info") == 0)
		return cmd_info(argc - 1, argv + 1);
	if (strcmp(argv[1], "extract") == 0)
		return cmd_extract(argc - 1, argv + 1);
	if (strcmp(argv[1], "save") == 0)
		return cmd_save(argc - 1, argv + 1);
	fprintf(stderr, "migram-stream: unknown command '%s'\n", argv[1]);
	print_help(stderr);
	return 2;
}
