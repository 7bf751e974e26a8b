/* SPDX-License-Identifier: MIT */
/*
 * Device state as named, versioned sections (include/migram/device-section.h).
 *
 * Each section is QEMU's FULL framing (type byte, be32 section id, counted
 * idstr, be32 instance id, be32 version id, body, footer: type byte and the
 * section id again) with migram's body: a be32 length and that many bytes.
 * The reader side bounds the body before reading it (stream-reader.c) and
 * leaves the meaning of name and version to the embedder's loader.
 */
#include <string.h>

#include "device-sections.h"
#include "migram/migram.h"
#include "stream-error.h"
#include "stream-internal.h"

static void put32(GByteArray *out, uint32_t v)
{
	v = GUINT32_TO_BE(v);
	g_byte_array_append(out, (const guint8 *)&v, 4);
}

static void encode(GByteArray *out, const MigramDeviceSection *s,
		   uint32_t section_id, const GByteArray *body)
{
	guint8 n = (guint8)strlen(s->idstr);

	g_byte_array_append(out, &(guint8){ MIGRAM_QEMU_VM_SECTION_FULL }, 1);
	put32(out, section_id);
	g_byte_array_append(out, &n, 1);
	g_byte_array_append(out, (const guint8 *)s->idstr, n);
	put32(out, s->instance_id);
	put32(out, s->version_id);
	put32(out, body->len);
	g_byte_array_append(out, body->data, body->len);
	g_byte_array_append(out, &(guint8){ MIGRAM_QEMU_VM_SECTION_FOOTER }, 1);
	put32(out, section_id);
}

/* Names 1..255 bytes, not "ram" instance 0, a save each, no duplicates. */
static bool check(const MigramDeviceSection *s, unsigned int n, GError **error)
{
	for (unsigned int i = 0; i < n; i++) {
		size_t len = s[i].idstr ? strlen(s[i].idstr) : 0;

		if (len == 0 || len > 255 || !s[i].save ||
		    (strcmp(s[i].idstr, "ram") == 0 && s[i].instance_id == 0)) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
				    "device section %u ('%.40s' instance %u): "
				    "needs a name of 1 to 255 bytes other "
				    "than the RAM section's and a save "
				    "callback",
				    i, s[i].idstr ? s[i].idstr : "(null)",
				    s[i].instance_id);
			return false;
		}
		for (unsigned int j = 0; j < i; j++)
			if (strcmp(s[j].idstr, s[i].idstr) == 0 &&
			    s[j].instance_id == s[i].instance_id) {
				g_set_error(error, MIGRAM_ERROR,
					    MIGRAM_ERROR_INVALID,
					    "device sections %u and %u are "
					    "both '%s' instance %u",
					    j, i, s[i].idstr, s[i].instance_id);
				return false;
			}
	}
	return true;
}

bool migram_device_sections_encode(const MigramDeviceSection *s, unsigned int n,
				   GByteArray *out, GError **error)
{
	if (n == 0)
		return true;
	if (!s || !check(s, n, error)) {
		if (!s)
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
				    "%u device sections but no array", n);
		return false;
	}
	for (unsigned int i = 0; i < n; i++) {
		g_autoptr(GByteArray) body = g_byte_array_new();

		if (!s[i].save(s[i].opaque, body, error)) {
			g_prefix_error(error,
				       "saving device section '%s' instance "
				       "%u: ",
				       s[i].idstr, s[i].instance_id);
			return false;
		}
		if (body->len > MIGRAM_DEVICE_SECTION_MAX) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
				    "device section '%s' instance %u: %u "
				    "bytes (at most %u)",
				    s[i].idstr, s[i].instance_id, body->len,
				    MIGRAM_DEVICE_SECTION_MAX);
			return false;
		}
		encode(out, &s[i], MIGRAM_NAMED_SECTION_ID0 + i, body);
	}
	return true;
}

bool migram_device_section_load(MigramStreamReader *r,
				const MigramStreamRecord *rec,
				MigramDeviceLoadFn load, void *opaque,
				GError **error)
{
	g_autoptr(GByteArray) body = g_byte_array_new();
	MigramDeviceSectionInfo info = {
		.idstr = rec->name,
		.instance_id = rec->instance_id,
		.version_id = rec->version_id,
		.section_id = rec->section_id,
		.stream_offset = rec->stream_offset,
	};
	GError *err = NULL;

	if (!migram_stream_reader_read_device_blob(r, MIGRAM_DEVICE_SECTION_MAX,
						   body, error))
		return false;
	if (load(opaque, &info, body->data, body->len, &err))
		return true;
	migram_stream_fail(error, err ? err->code : MIGRAM_ERROR_INVALID,
			   rec->stream_offset,
			   "device section '%s' instance %u version %u "
			   "(%u bytes) refused: %s",
			   rec->name, rec->instance_id, rec->version_id,
			   body->len, err ? err->message : "no reason given");
	g_clear_error(&err);
	return false;
}
