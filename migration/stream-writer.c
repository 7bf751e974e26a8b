/* SPDX-License-Identifier: MIT */
/*
 * Writing QEMU's migration stream.
 *
 * Only framing lives here: which bytes make a header, a section, a page
 * record.  What to send and when is the sender's business.  The layout is
 * the one QEMU 7.2 loads (docs/wire-format.md):
 *
 *   "QEVM" 3 | 0x07 config | 0x01 START "ram" 0 4 MEM_SIZE list EOS 0x7e id
 *   | { 0x02 PART id records EOS 0x7e id }* | 0x03 END id records EOS 0x7e id
 *   | 0x00 EOF | 0x06 vmdesc
 *
 * A page record names its block unless it is the block the previous page
 * record on this channel named (CONTINUE).  That context survives section
 * boundaries, as in QEMU; MEM_SIZE does not set it.
 */
#include <string.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "migram/ramblock.h"
#include "migram/stream.h"
#include "stream-internal.h"

/* Any id works if used consistently; QEMU's pc machine gives RAM 2. */
#define RAM_SECTION_ID 2u

struct MigramStreamWriter {
	MigramChannel *ch;
	const char *last_ptr; /* the last idstr pointer named */
	char last_block[MIGRAM_RAM_IDSTR_MAX + 1]; /* and its contents */
	bool have_last;
};

MIGRAM_EXPORT MigramStreamWriter *migram_stream_writer_new(MigramChannel *ch)
{
	MigramStreamWriter *w = g_new0(MigramStreamWriter, 1);

	w->ch = ch;
	return w;
}

MIGRAM_EXPORT void migram_stream_writer_free(MigramStreamWriter *w)
{
	g_free(w);
}

MIGRAM_EXPORT void migram_stream_writer_begin(MigramStreamWriter *w,
					      const char *machine_type)
{
	size_t n = strlen(machine_type);

	migram_channel_put_be32(w->ch, MIGRAM_QEMU_VM_FILE_MAGIC);
	migram_channel_put_be32(w->ch, MIGRAM_QEMU_VM_FILE_VERSION);
	migram_channel_put_u8(w->ch, MIGRAM_QEMU_VM_CONFIGURATION);
	migram_channel_put_be32(w->ch, (uint32_t)MIN(n, 255));
	migram_channel_put_bytes(w->ch, machine_type, MIN(n, 255));
}

static void section_header(MigramStreamWriter *w, uint8_t type)
{
	migram_channel_put_u8(w->ch, type);
	migram_channel_put_be32(w->ch, RAM_SECTION_ID);
	if (type == MIGRAM_QEMU_VM_SECTION_START) {
		migram_channel_put_counted_string(w->ch, "ram");
		migram_channel_put_be32(w->ch, 0); /* instance */
		migram_channel_put_be32(w->ch, MIGRAM_QEMU_RAM_SECTION_VERSION);
	}
}

static void section_trailer(MigramStreamWriter *w)
{
	migram_channel_put_be64(w->ch, MIGRAM_RAM_FLAG_EOS);
	migram_channel_put_u8(w->ch, MIGRAM_QEMU_VM_SECTION_FOOTER);
	migram_channel_put_be32(w->ch, RAM_SECTION_ID);
}

MIGRAM_EXPORT void
migram_stream_writer_ram_start(MigramStreamWriter *w,
			       const MigramStreamBlock *blocks, size_t n)
{
	uint64_t total = 0;

	for (size_t i = 0; i < n; i++) {
		/* A length below the page size would spill into the flags. */
		if (blocks[i].used_length % MIGRAM_TARGET_PAGE_SIZE) {
			migram_channel_set_error(
				w->ch,
				g_error_new(
					MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
					"block '%s': length %#" G_GINT64_MODIFIER
					"x is not a whole number of 4 KiB "
					"pages",
					blocks[i].idstr,
					blocks[i].used_length));
			return;
		}
		total += blocks[i].used_length;
	}
	section_header(w, MIGRAM_QEMU_VM_SECTION_START);
	migram_channel_put_be64(w->ch, total | MIGRAM_RAM_FLAG_MEM_SIZE);
	for (size_t i = 0; i < n; i++) {
		migram_channel_put_counted_string(w->ch, blocks[i].idstr);
		migram_channel_put_be64(w->ch, blocks[i].used_length);
		if (blocks[i].page_size)
			migram_channel_put_be64(w->ch, blocks[i].page_size);
	}
	section_trailer(w);
}

MIGRAM_EXPORT void migram_stream_writer_ram_open(MigramStreamWriter *w,
						 bool last)
{
	section_header(w, last ? MIGRAM_QEMU_VM_SECTION_END
			       : MIGRAM_QEMU_VM_SECTION_PART);
}

MIGRAM_EXPORT void migram_stream_writer_ram_close(MigramStreamWriter *w)
{
	section_trailer(w);
}

MIGRAM_EXPORT void migram_stream_writer_reset_continue(MigramStreamWriter *w)
{
	w->have_last = false;
	w->last_ptr = NULL;
}

/* The record word, then the block name unless it is the last one. */
static void record_head(MigramStreamWriter *w, const char *idstr,
			uint64_t offset, uint64_t flag)
{
	bool same = w->have_last &&
		    (idstr == w->last_ptr || strcmp(idstr, w->last_block) == 0);

	if (same) {
		migram_channel_put_be64(
			w->ch, offset | flag | MIGRAM_RAM_FLAG_CONTINUE);
		return;
	}
	migram_channel_put_be64(w->ch, offset | flag);
	migram_channel_put_counted_string(w->ch, idstr);
	g_strlcpy(w->last_block, idstr, sizeof(w->last_block));
	w->last_ptr = idstr;
	w->have_last = true;
}

MIGRAM_EXPORT void migram_stream_writer_page(MigramStreamWriter *w,
					     const char *idstr, uint64_t offset,
					     const void *data)
{
	record_head(w, idstr, offset, MIGRAM_RAM_FLAG_PAGE);
	migram_channel_put_ref(w->ch, data, MIGRAM_TARGET_PAGE_SIZE);
}

MIGRAM_EXPORT void migram_stream_writer_zero_page(MigramStreamWriter *w,
						  const char *idstr,
						  uint64_t offset)
{
	record_head(w, idstr, offset, MIGRAM_RAM_FLAG_ZERO);
	migram_channel_put_u8(w->ch, 0);
}

/*
 * QEMU's analysis script finds the JSON by its '{' after the last NUL of
 * the file, so no byte of the length after its last zero byte may be '{'
 * (0x7b).  Pad with spaces until the length is safe.
 */
static bool length_is_safe(uint32_t len)
{
	const guint8 b[4] = { len >> 24, len >> 16, len >> 8, len };
	int last_zero = -1;

	for (int i = 0; i < 4; i++)
		if (b[i] == 0)
			last_zero = i;
	for (int i = last_zero + 1; i < 4; i++)
		if (b[i] == '{')
			return false;
	return true;
}

MIGRAM_EXPORT bool migram_stream_writer_finish(MigramStreamWriter *w,
					       GError **error)
{
	GString *json = g_string_new(NULL);

	g_string_printf(json, "{\"page_size\": %u, \"devices\": []}",
			MIGRAM_TARGET_PAGE_SIZE);
	while (!length_is_safe((uint32_t)json->len))
		g_string_append_c(json, ' ');
	migram_channel_put_u8(w->ch, MIGRAM_QEMU_VM_EOF);
	migram_channel_put_u8(w->ch, MIGRAM_QEMU_VM_VMDESCRIPTION);
	migram_channel_put_be32(w->ch, (uint32_t)json->len);
	migram_channel_put_bytes(w->ch, json->str, json->len);
	g_string_free(json, TRUE);
	return migram_channel_flush(w->ch, error);
}

void migram_stream_writer_command(MigramStreamWriter *w, uint16_t cmd,
				  const void *data, uint16_t len)
{
	migram_channel_put_u8(w->ch, MIGRAM_QEMU_VM_COMMAND);
	migram_channel_put_be16(w->ch, cmd);
	migram_channel_put_be16(w->ch, len);
	if (len)
		migram_channel_put_bytes(w->ch, data, len);
}

void migram_stream_encode_device(GByteArray *out, const char *idstr,
				 uint32_t section_id, const void *data,
				 uint32_t len)
{
	guint8 n = (guint8)MIN(strlen(idstr), 255);
	uint32_t be;

	g_byte_array_append(out, &(guint8){ MIGRAM_QEMU_VM_SECTION_FULL }, 1);
	be = GUINT32_TO_BE(section_id);
	g_byte_array_append(out, (guint8 *)&be, 4);
	g_byte_array_append(out, &n, 1);
	g_byte_array_append(out, (const guint8 *)idstr, n);
	be = 0; /* instance */
	g_byte_array_append(out, (guint8 *)&be, 4);
	be = GUINT32_TO_BE(MIGRAM_DEVICE_BLOB_VERSION);
	g_byte_array_append(out, (guint8 *)&be, 4);
	be = GUINT32_TO_BE(len);
	g_byte_array_append(out, (guint8 *)&be, 4);
	g_byte_array_append(out, data, len);
	g_byte_array_append(out, &(guint8){ MIGRAM_QEMU_VM_SECTION_FOOTER }, 1);
	be = GUINT32_TO_BE(section_id);
	g_byte_array_append(out, (guint8 *)&be, 4);
}

void migram_stream_encode_command(GByteArray *out, uint16_t cmd,
				  const void *data, uint16_t len)
{
	guint8 h[5] = { MIGRAM_QEMU_VM_COMMAND, cmd >> 8, cmd & 0xff, len >> 8,
			len & 0xff };

	g_byte_array_append(out, h, sizeof(h));
	if (len)
		g_byte_array_append(out, data, len);
}

void migram_stream_writer_put_raw(MigramStreamWriter *w, const void *data,
				  size_t len)
{
	migram_channel_put_bytes(w->ch, data, len);
}

void migram_stream_writer_eos(MigramStreamWriter *w)
{
	migram_channel_put_be64(w->ch, MIGRAM_RAM_FLAG_EOS);
}

bool migram_stream_writer_finish_postcopy(MigramStreamWriter *w, GError **error)
{
	migram_channel_put_u8(w->ch, MIGRAM_QEMU_VM_EOF);
	return migram_channel_flush(w->ch, error);
}
