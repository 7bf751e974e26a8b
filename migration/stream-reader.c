/* SPDX-License-Identifier: MIT */
/*
 * Reading QEMU's migration stream, one record at a time, as hostile input.
 *
 * The reader is a small state machine:
 *
 *   HEADER -> TOP -(START/PART/END "ram")-> RAM -(MEM_SIZE)-> BLOCKS -> RAM
 *                                           RAM -(PAGE)-> PAYLOAD -> RAM
 *                                           RAM -(EOS [+ footer])-> TOP
 *             TOP -(other section)-> DEVICE -(caller reads body)-> TOP
 *             TOP -(EOF)-> AFTER_EOF -(vmdesc | end)-> DONE
 *
 * Rules that keep hostile input out:
 *  - every length is bounded before anything is read or allocated: names
 *    are counted strings (<= 255), the configuration name <= 255, commands
 *    <= 65535 (their be16), the vmdesc <= 64 MiB;
 *  - every type byte, RAM flag combination, section id and version is
 *    checked; anything unknown is an error naming the value and the byte
 *    offset where the record starts;
 *  - recognised features migram does not implement (XBZRLE, compressed
 *    pages, multifd flushes, RDMA hooks) fail as "not supported yet", so
 *    they are never misparsed as something else;
 *  - a block list entry may not exceed what remains of the announced total.
 *
 * What pages mean (offset bounds, which block) is the receiver's check: the
 * reader does not know the destination's blocks.
 */
#include <string.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "migram/ramblock.h"
#include "migram/stream.h"
#include "stream-error.h"
#include "stream-internal.h"

#define MAX_VMDESC_BYTES (64u << 20)

enum state {
	ST_HEADER,
	ST_TOP,
	ST_RAM,
	ST_BLOCKS,
	ST_PAYLOAD,
	ST_DEVICE,
	ST_AFTER_EOF,
	ST_DONE,
	ST_RAW_DONE,
};

struct MigramStreamReader {
	MigramChannel *ch;
	enum state state;
	uint64_t page_size;
	char name[256]; /* section idstr or machine type */
	char block[MIGRAM_RAM_IDSTR_MAX + 1]; /* CONTINUE: last block */
	bool have_block;
	bool have_config;
	bool ram_started;
	uint32_t ram_id;
	bool in_ram_start;    /* the current RAM section is the START one */
	uint32_t section_id;  /* the section whose footer comes next */
	GArray *device_ids;   /* ids of started non-RAM sections */
	uint64_t blocks_left; /* bytes of MEM_SIZE total not yet listed */
	uint64_t payload_left;
	bool postcopy_huge; /* POSTCOPY_ADVISE with huge page blocks */
	bool page_sizes_ok; /* the caller reads block page sizes itself */
	bool raw;           /* preempt channel: RAM records, no sections */
	guint8 *buf;
	size_t buf_cap;
};

MIGRAM_EXPORT MigramStreamReader *migram_stream_reader_new(MigramChannel *ch)
{
	MigramStreamReader *r = g_new0(MigramStreamReader, 1);

	r->ch = ch;
	r->page_size = 4096;
	r->device_ids = g_array_new(FALSE, FALSE, sizeof(uint32_t));
	return r;
}

MIGRAM_EXPORT void migram_stream_reader_free(MigramStreamReader *r)
{
	if (!r)
		return;
	g_array_unref(r->device_ids);
	g_free(r->buf);
	g_free(r);
}

MIGRAM_EXPORT uint64_t
migram_stream_reader_page_size(const MigramStreamReader *r)
{
	return r->page_size;
}

/* Every reader error names the byte of the stream it was found at. */
#define fail migram_stream_fail

static uint64_t here(const MigramStreamReader *r)
{
	return migram_channel_read_offset(r->ch);
}

static void reserve(MigramStreamReader *r, size_t need)
{
	if (need > r->buf_cap) {
		r->buf_cap = need;
		r->buf = g_realloc(r->buf, r->buf_cap);
	}
}

/*
 * Read len bytes into the reader's buffer, NUL-terminated.  The buffer
 * grows with the bytes that arrive (chunks of 64 KiB, then doubling), not
 * with the announced length: a truncated stream announcing a 64 MiB vmdesc
 * costs what it sent, not 64 MiB.
 */
static bool read_blob(MigramStreamReader *r, size_t len, GError **error)
{
	size_t got = 0;

	reserve(r, 1);
	while (got < len) {
		size_t n = MIN(len - got, MAX(got, (size_t)64 * 1024));

		reserve(r, got + n + 1);
		if (!migram_channel_get_bytes(r->ch, r->buf + got, n, error))
			return false;
		got += n;
	}
	r->buf[len] = '\0';
	return true;
}

static bool read_name(MigramStreamReader *r, char *dst, const char *what,
		      GError **error)
{
	uint64_t at = here(r);

	if (!migram_channel_get_counted_string(r->ch, dst, error))
		return false;
	if (dst[0] == '\0')
		return fail(error, MIGRAM_ERROR_PROTOCOL, at, "empty %s name",
			    what);
	return true;
}

static bool read_header(MigramStreamReader *r, GError **error)
{
	uint32_t magic, version;

	if (!migram_channel_get_be32(r->ch, &magic, error) ||
	    !migram_channel_get_be32(r->ch, &version, error))
		return false;
	if (magic != MIGRAM_QEMU_VM_FILE_MAGIC)
		return fail(error, MIGRAM_ERROR_PROTOCOL, 0,
			    "bad magic 0x%08x (expected 0x%08x, \"QEVM\")",
			    magic, MIGRAM_QEMU_VM_FILE_MAGIC);
	if (version != MIGRAM_QEMU_VM_FILE_VERSION)
		return fail(error, MIGRAM_ERROR_PROTOCOL, 4,
			    "stream version %u (only %u is supported)", version,
			    MIGRAM_QEMU_VM_FILE_VERSION);
	r->state = ST_TOP;
	return true;
}

/* Configuration subsections: target-page-bits, capabilities, uuid. */
static bool read_config_subsections(MigramStreamReader *r, GError **error)
{
	for (;;) {
		char name[256];
		uint32_t version, v, count;
		uint64_t at = here(r);
		uint8_t t;

		if (!migram_channel_peek_u8(r->ch, &t, error))
			return false;
		if (t != MIGRAM_QEMU_VM_SUBSECTION)
			return true;
		if (!migram_channel_get_u8(r->ch, &t, error) ||
		    !read_name(r, name, "subsection", error) ||
		    !migram_channel_get_be32(r->ch, &version, error))
			return false;
		if (strcmp(name, "configuration/target-page-bits") == 0) {
			if (!migram_channel_get_be32(r->ch, &v, error))
				return false;
			if (v < 10 || v > 16)
				return fail(error, MIGRAM_ERROR_PROTOCOL, at,
					    "target page bits %u out of 10..16",
					    v);
			r->page_size = UINT64_C(1) << v;
		} else if (strcmp(name, "configuration/capabilities") == 0) {
			if (!migram_channel_get_be32(r->ch, &count, error))
				return false;
			for (uint32_t i = 0; i < count; i++)
				if (!read_name(r, name, "capability", error))
					return false;
		} else if (strcmp(name, "configuration/uuid") == 0) {
			if (!migram_channel_skip(r->ch, 16, error))
				return false;
		} else {
			return fail(error, MIGRAM_ERROR_PROTOCOL, at,
				    "unknown configuration subsection '%s'",
				    name);
		}
	}
}

static bool read_config(MigramStreamReader *r, MigramStreamRecord *rec,
			GError **error)
{
	uint32_t len;

	if (r->have_config || r->ram_started || r->device_ids->len)
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec->stream_offset,
			    "configuration section not right after the header");
	if (!migram_channel_get_be32(r->ch, &len, error))
		return false;
	if (len > 255)
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec->stream_offset,
			    "machine type of %u bytes (at most 255)", len);
	if (!migram_channel_get_bytes(r->ch, r->name, len, error))
		return false;
	r->name[len] = '\0';
	r->have_config = true;
	rec->type = MIGRAM_STREAM_REC_CONFIGURATION;
	rec->name = r->name;
	return read_config_subsections(r, error);
}

static bool device_started(MigramStreamReader *r, uint32_t id)
{
	for (guint i = 0; i < r->device_ids->len; i++)
		if (g_array_index(r->device_ids, uint32_t, i) == id)
			return true;
	return false;
}

static bool read_section(MigramStreamReader *r, uint8_t type,
			 MigramStreamRecord *rec, GError **error)
{
	uint32_t id;

	if (!migram_channel_get_be32(r->ch, &id, error))
		return false;
	rec->section_id = id;
	rec->type = type == MIGRAM_QEMU_VM_SECTION_START
			    ? MIGRAM_STREAM_REC_SECTION_START
		    : type == MIGRAM_QEMU_VM_SECTION_PART
			    ? MIGRAM_STREAM_REC_SECTION_PART
		    : type == MIGRAM_QEMU_VM_SECTION_END
			    ? MIGRAM_STREAM_REC_SECTION_END
			    : MIGRAM_STREAM_REC_SECTION_FULL;
	r->section_id = id;
	if (type == MIGRAM_QEMU_VM_SECTION_PART ||
	    type == MIGRAM_QEMU_VM_SECTION_END) {
		if (r->ram_started && id == r->ram_id) {
			rec->is_ram = true;
			rec->name = "ram";
			r->in_ram_start = false;
			r->state = ST_RAM;
			return true;
		}
		if (!device_started(r, id))
			return fail(error, MIGRAM_ERROR_PROTOCOL,
				    rec->stream_offset,
				    "section id %u was never started", id);
		rec->name = "";
		r->state = ST_DEVICE;
		return true;
	}
	if (!read_name(r, r->name, "section", error) ||
	    !migram_channel_get_be32(r->ch, &rec->instance_id, error) ||
	    !migram_channel_get_be32(r->ch, &rec->version_id, error))
		return false;
	rec->name = r->name;
	if (strcmp(r->name, "ram") == 0 && rec->instance_id == 0) {
		if (type != MIGRAM_QEMU_VM_SECTION_START || r->ram_started)
			return fail(error, MIGRAM_ERROR_PROTOCOL,
				    rec->stream_offset,
				    "unexpected %s of section 'ram'",
				    type == MIGRAM_QEMU_VM_SECTION_START
					    ? "second START"
					    : "FULL section");
		if (rec->version_id != MIGRAM_QEMU_RAM_SECTION_VERSION)
			return fail(error, MIGRAM_ERROR_PROTOCOL,
				    rec->stream_offset,
				    "ram section version %u (only %u is "
				    "supported)",
				    rec->version_id,
				    MIGRAM_QEMU_RAM_SECTION_VERSION);
		if (device_started(r, id))
			return fail(error, MIGRAM_ERROR_PROTOCOL,
				    rec->stream_offset,
				    "section id %u is already in use", id);
		r->ram_started = true;
		r->ram_id = id;
		r->in_ram_start = true;
		rec->is_ram = true;
		r->state = ST_RAM;
		return true;
	}
	if ((r->ram_started && id == r->ram_id) ||
	    (type == MIGRAM_QEMU_VM_SECTION_START && device_started(r, id)))
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec->stream_offset,
			    "section id %u is already in use", id);
	if (type == MIGRAM_QEMU_VM_SECTION_START)
		g_array_append_val(r->device_ids, id);
	r->state = ST_DEVICE;
	return true;
}

static bool read_command(MigramStreamReader *r, MigramStreamRecord *rec,
			 GError **error)
{
	uint16_t len;

	if (!migram_channel_get_be16(r->ch, &rec->command, error) ||
	    !migram_channel_get_be16(r->ch, &len, error) ||
	    !read_blob(r, len, error))
		return false;
	rec->type = MIGRAM_STREAM_REC_COMMAND;
	rec->length = len;
	rec->data = r->buf;
	/* POSTCOPY_ADVISE: be64 page size summary, be64 target page size. */
	if (rec->command == 3 && len == 16) {
		uint64_t summary;

		memcpy(&summary, r->buf, 8);
		r->postcopy_huge = GUINT64_FROM_BE(summary) != r->page_size;
	}
	return true;
}

static bool read_vmdesc(MigramStreamReader *r, MigramStreamRecord *rec,
			GError **error)
{
	uint32_t len;

	if (!migram_channel_get_be32(r->ch, &len, error))
		return false;
	if (len > MAX_VMDESC_BYTES)
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec->stream_offset,
			    "vmdesc of %u bytes (at most %u)", len,
			    MAX_VMDESC_BYTES);
	if (!read_blob(r, len, error))
		return false;
	rec->type = MIGRAM_STREAM_REC_VMDESC;
	rec->length = len;
	rec->data = r->buf;
	r->state = ST_DONE;
	return true;
}

static bool read_top(MigramStreamReader *r, MigramStreamRecord *rec,
		     GError **error)
{
	uint8_t type;

	if (!migram_channel_get_u8(r->ch, &type, error))
		return false;
	switch (type) {
	case MIGRAM_QEMU_VM_EOF:
		rec->type = MIGRAM_STREAM_REC_EOF;
		r->state = ST_AFTER_EOF;
		return true;
	case MIGRAM_QEMU_VM_SECTION_START:
	case MIGRAM_QEMU_VM_SECTION_PART:
	case MIGRAM_QEMU_VM_SECTION_END:
	case MIGRAM_QEMU_VM_SECTION_FULL:
		return read_section(r, type, rec, error);
	case MIGRAM_QEMU_VM_CONFIGURATION:
		return read_config(r, rec, error);
	case MIGRAM_QEMU_VM_COMMAND:
		return read_command(r, rec, error);
	case MIGRAM_QEMU_VM_VMDESCRIPTION:
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec->stream_offset,
			    "vmdesc before EOF");
	default:
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec->stream_offset,
			    "unknown section type 0x%02x", type);
	}
}

/* EOS read: an optional footer must name the current section. */
static bool read_footer(MigramStreamReader *r, GError **error)
{
	uint64_t at = here(r);
	uint32_t id;
	uint8_t t;

	if (!migram_channel_peek_u8(r->ch, &t, error))
		return false;
	if (t != MIGRAM_QEMU_VM_SECTION_FOOTER)
		return true;
	if (!migram_channel_get_u8(r->ch, &t, error) ||
	    !migram_channel_get_be32(r->ch, &id, error))
		return false;
	if (id != r->section_id)
		return fail(error, MIGRAM_ERROR_PROTOCOL, at,
			    "footer of section %u inside section %u", id,
			    r->section_id);
	return true;
}

static bool read_block_entry(MigramStreamReader *r, MigramStreamRecord *rec,
			     GError **error)
{
	if (!read_name(r, r->name, "block", error) ||
	    !migram_channel_get_be64(r->ch, &rec->length, error))
		return false;
	rec->type = MIGRAM_STREAM_REC_BLOCK;
	rec->name = r->name;
	if (rec->length == 0 || rec->length > r->blocks_left)
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec->stream_offset,
			    "block '%s' of %#" G_GINT64_MODIFIER
			    "x bytes does not fit the %#" G_GINT64_MODIFIER
			    "x bytes left of the block list total",
			    r->name, rec->length, r->blocks_left);
	if (r->postcopy_huge && !r->page_sizes_ok)
		return fail(error, MIGRAM_ERROR_UNSUPPORTED, rec->stream_offset,
			    "postcopy block list with huge page blocks: not "
			    "supported yet");
	r->blocks_left -= rec->length;
	if (r->blocks_left == 0)
		r->state = ST_RAM;
	return true;
}

static const char *unsupported_flag(uint64_t base)
{
	switch (base) {
	case MIGRAM_RAM_FLAG_XBZRLE:
		return "XBZRLE page";
	case MIGRAM_RAM_FLAG_COMPRESS_PAGE:
		return "compressed page";
	case MIGRAM_RAM_FLAG_MULTIFD_FLUSH:
		return "multifd flush";
	case MIGRAM_RAM_FLAG_HOOK:
		return "RDMA hook";
	default:
		return NULL;
	}
}

static bool read_page_block(MigramStreamReader *r, uint64_t flags,
			    MigramStreamRecord *rec, GError **error)
{
	if (flags & MIGRAM_RAM_FLAG_CONTINUE) {
		if (!r->have_block)
			return fail(error, MIGRAM_ERROR_PROTOCOL,
				    rec->stream_offset,
				    "page record with CONTINUE but no block "
				    "named before");
	} else {
		if (!read_name(r, r->block, "block", error))
			return false;
		r->have_block = true;
	}
	rec->name = r->block;
	return true;
}

static bool read_ram(MigramStreamReader *r, MigramStreamRecord *rec,
		     GError **error)
{
	uint64_t word, flags, base;
	const char *what;

	if (!migram_channel_get_be64(r->ch, &word, error))
		return false;
	flags = word & (r->page_size - 1);
	base = flags & ~(uint64_t)MIGRAM_RAM_FLAG_CONTINUE;
	rec->offset = word & ~(r->page_size - 1);
	if ((what = unsupported_flag(base)))
		return fail(error, MIGRAM_ERROR_UNSUPPORTED, rec->stream_offset,
			    "%s record (flags 0x%" G_GINT64_MODIFIER
			    "x): not supported yet",
			    what, flags);
	switch (flags) {
	case MIGRAM_RAM_FLAG_MEM_SIZE:
		if (!r->in_ram_start)
			return fail(error, MIGRAM_ERROR_PROTOCOL,
				    rec->stream_offset,
				    "block list outside the START section");
		r->in_ram_start = false; /* one list per stream */
		r->blocks_left = rec->offset;
		rec->offset = 0; /* the total is not an offset */
		if (r->blocks_left == 0)
			return fail(error, MIGRAM_ERROR_PROTOCOL,
				    rec->stream_offset, "empty block list");
		r->state = ST_BLOCKS;
		rec->stream_offset = here(r);
		return read_block_entry(r, rec, error);
	case MIGRAM_RAM_FLAG_EOS:
		rec->type = MIGRAM_STREAM_REC_SECTION_DONE;
		rec->section_id = r->section_id;
		if (r->raw) {
			r->state = ST_RAW_DONE;
			return true;
		}
		r->state = ST_TOP;
		return read_footer(r, error);
	case MIGRAM_RAM_FLAG_PAGE:
	case MIGRAM_RAM_FLAG_PAGE | MIGRAM_RAM_FLAG_CONTINUE:
		if (!read_page_block(r, flags, rec, error))
			return false;
		rec->type = MIGRAM_STREAM_REC_PAGE;
		rec->length = r->page_size;
		r->payload_left = r->page_size;
		r->state = ST_PAYLOAD;
		return true;
	case MIGRAM_RAM_FLAG_ZERO:
	case MIGRAM_RAM_FLAG_ZERO | MIGRAM_RAM_FLAG_CONTINUE:
		if (!read_page_block(r, flags, rec, error))
			return false;
		rec->type = MIGRAM_STREAM_REC_ZERO_PAGE;
		return migram_channel_get_u8(r->ch, &rec->fill, error);
	default:
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec->stream_offset,
			    "unknown RAM record flags 0x%" G_GINT64_MODIFIER
			    "x",
			    flags);
	}
}

static bool read_after_eof(MigramStreamReader *r, MigramStreamRecord *rec,
			   GError **error)
{
	bool end;
	uint8_t type;

	if (!migram_channel_at_end(r->ch, &end, error))
		return false;
	if (end) {
		rec->type = MIGRAM_STREAM_REC_END;
		r->state = ST_DONE;
		return true;
	}
	if (!migram_channel_get_u8(r->ch, &type, error))
		return false;
	if (type != MIGRAM_QEMU_VM_VMDESCRIPTION)
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec->stream_offset,
			    "byte 0x%02x after EOF (only a vmdesc may follow)",
			    type);
	return read_vmdesc(r, rec, error);
}

static bool read_done(MigramStreamReader *r, MigramStreamRecord *rec,
		      GError **error)
{
	bool end;

	if (!migram_channel_at_end(r->ch, &end, error))
		return false;
	if (!end)
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec->stream_offset,
			    "data after the end of the stream");
	rec->type = MIGRAM_STREAM_REC_END;
	return true;
}

MIGRAM_EXPORT bool migram_stream_reader_next(MigramStreamReader *r,
					     MigramStreamRecord *rec,
					     GError **error)
{
	memset(rec, 0, sizeof(*rec));
	rec->name = "";
	if (r->state == ST_PAYLOAD) {
		if (!migram_channel_skip(r->ch, r->payload_left, error))
			return false;
		r->payload_left = 0;
		r->state = ST_RAM;
	}
	if (r->state == ST_DEVICE) {
		/* The caller consumed the body; a footer may follow. */
		if (!read_footer(r, error))
			return false;
		r->state = ST_TOP;
	}
	if (r->state == ST_HEADER && !read_header(r, error))
		return false;
	rec->stream_offset = here(r);
	switch (r->state) {
	case ST_TOP:
		return read_top(r, rec, error);
	case ST_RAM:
		return read_ram(r, rec, error);
	case ST_BLOCKS:
		return read_block_entry(r, rec, error);
	case ST_AFTER_EOF:
		return read_after_eof(r, rec, error);
	case ST_DONE:
		return read_done(r, rec, error);
	case ST_RAW_DONE:
		rec->type = MIGRAM_STREAM_REC_END;
		return true;
	default:
		g_assert_not_reached();
	}
	return false;
}

MIGRAM_EXPORT bool migram_stream_reader_read_page(MigramStreamReader *r,
						  void *dst, GError **error)
{
	g_return_val_if_fail(r->state == ST_PAYLOAD, false);
	if (!migram_channel_get_bytes(r->ch, dst, r->payload_left, error))
		return false;
	r->payload_left = 0;
	r->state = ST_RAM;
	return true;
}

MigramStreamReader *
migram_stream_reader_new_continued(MigramChannel *ch,
				   const MigramStreamReader *prev)
{
	MigramStreamReader *r = migram_stream_reader_new(ch);

	r->state = ST_TOP;
	r->page_size = prev->page_size;
	r->have_config = true;
	r->ram_started = prev->ram_started;
	r->ram_id = prev->ram_id;
	r->postcopy_huge = prev->postcopy_huge;
	r->page_sizes_ok = prev->page_sizes_ok;
	g_array_append_vals(r->device_ids, prev->device_ids->data,
			    prev->device_ids->len);
	return r;
}

MigramStreamReader *migram_stream_reader_new_raw(MigramChannel *ch,
						 uint64_t page_size)
{
	MigramStreamReader *r = migram_stream_reader_new(ch);

	r->state = ST_RAM;
	r->raw = true;
	r->page_size = page_size;
	return r;
}

void migram_stream_reader_accept_page_sizes(MigramStreamReader *r)
{
	r->page_sizes_ok = true;
}

bool migram_stream_reader_read_block_page_size(MigramStreamReader *r,
					       uint64_t *page_size,
					       GError **error)
{
	g_return_val_if_fail(r->page_sizes_ok, false);
	return migram_channel_get_be64(r->ch, page_size, error);
}

bool migram_stream_reader_read_device_blob(MigramStreamReader *r, size_t max,
					   GByteArray *out, GError **error)
{
	uint64_t at = here(r);
	uint32_t len;

	if (r->state != ST_DEVICE)
		return fail(error, MIGRAM_ERROR_PROTOCOL, at,
			    "device data outside a device section");
	if (!migram_channel_get_be32(r->ch, &len, error))
		return false;
	if (len > max)
		return fail(error, MIGRAM_ERROR_PROTOCOL, at,
			    "device blob of %u bytes (at most %zu)", len, max);
	if (!read_blob(r, len, error))
		return false;
	g_byte_array_set_size(out, 0);
	g_byte_array_append(out, r->buf, len);
	return true;
}

MigramChannel *migram_stream_reader_channel(const MigramStreamReader *r)
{
	return r->ch;
}
