/* SPDX-License-Identifier: MIT */
/*
 * Skipping QEMU device sections using the stream's vmdesc.
 *
 * A described device is a list of fields, each `size` bytes (times
 * `array_len` when present), or a nested `struct` description; after the
 * fields come optional subsections, each on the wire as 0x05, a counted
 * name, a be32 version and then the subsection's own fields.  The walk
 * bounds nesting depth and total bytes, since the file is untrusted too.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include <migram/migram.h>

#include "vmstate-walk.h"

#define TAIL_BYTES (10u << 20)
#define MAX_DEPTH 16

struct VmDesc {
	JsonParser *parser;
	JsonArray *devices;
};

void vmdesc_free(VmDesc *d)
{
	if (!d)
		return;
	g_object_unref(d->parser);
	g_free(d);
}

static bool no_vmdesc(GError **error, const char *path, const char *why)
{
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND,
		    "%s: no vmdesc (%s)", path, why);
	return false;
}

/* The JSON's start and length in tail, found as QEMU's script does. */
static bool locate_json(const guint8 *tail, size_t n, size_t *start,
			size_t *len)
{
	const guint8 *nul = NULL, *brace;
	guint32 be;

	for (size_t i = n; i > 0; i--) {
		if (tail[i - 1] == 0) {
			nul = tail + i - 1;
			break;
		}
	}
	if (!nul)
		return false;
	brace = memchr(nul, '{', (size_t)(tail + n - nul));
	if (!brace || brace - tail < 5 || brace[-5] != 0x06)
		return false;
	memcpy(&be, brace - 4, 4);
	*start = (size_t)(brace - tail);
	*len = GUINT32_FROM_BE(be);
	return *start + *len <= n;
}

VmDesc *vmdesc_load_from_file(const char *path, GError **error)
{
	g_autofree guint8 *tail = NULL;
	size_t n, start, len;
	struct stat st;
	JsonNode *root;
	VmDesc *d;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		if (fd >= 0)
			close(fd);
		no_vmdesc(error, path, "not a regular file");
		return NULL;
	}
	n = (size_t)MIN((guint64)st.st_size, TAIL_BYTES);
	tail = g_malloc(n);
	if (pread(fd, tail, n, st.st_size - (off_t)n) != (ssize_t)n) {
		close(fd);
		no_vmdesc(error, path, "read failed");
		return NULL;
	}
	close(fd);
	if (!locate_json(tail, n, &start, &len)) {
		no_vmdesc(error, path, "no JSON trailer");
		return NULL;
	}
	d = g_new0(VmDesc, 1);
	d->parser = json_parser_new();
	if (!json_parser_load_from_data(d->parser, (const char *)tail + start,
					(gssize)len, error)) {
		vmdesc_free(d);
		return NULL;
	}
	root = json_parser_get_root(d->parser);
	if (!JSON_NODE_HOLDS_OBJECT(root) ||
	    !json_object_has_member(json_node_get_object(root), "devices")) {
		vmdesc_free(d);
		no_vmdesc(error, path, "JSON has no devices");
		return NULL;
	}
	d->devices = json_object_get_array_member(json_node_get_object(root),
						  "devices");
	return d;
}

static bool walk_vmsd(JsonObject *vmsd, MigramChannel *ch, int depth,
		      GError **error);

static bool walk_field(JsonObject *f, MigramChannel *ch, int depth,
		       GError **error)
{
	gint64 count = json_object_has_member(f, "array_len")
			       ? json_object_get_int_member(f, "array_len")
			       : 1;
	JsonObject *sub = json_object_has_member(f, "struct")
				  ? json_object_get_object_member(f, "struct")
				  : NULL;
	gint64 size = json_object_has_member(f, "size")
			      ? json_object_get_int_member(f, "size")
			      : 0;

	if (count < 0 || size < 0 || count > (1 << 20) || size > (1 << 30)) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "vmdesc field '%s' has an absurd size",
			    json_object_get_string_member_with_default(
				    f, "name", "?"));
		return false;
	}
	for (gint64 i = 0; i < count; i++) {
		if (sub) {
			if (!walk_vmsd(sub, ch, depth + 1, error))
				return false;
		} else if (!migram_channel_skip(ch, (guint64)size, error)) {
			return false;
		}
	}
	return true;
}

static JsonObject *find_subsection(JsonObject *vmsd, const char *name)
{
	JsonArray *subs;

	if (!json_object_has_member(vmsd, "subsections"))
		return NULL;
	subs = json_object_get_array_member(vmsd, "subsections");
	for (guint i = 0; i < json_array_get_length(subs); i++) {
		JsonObject *s = json_array_get_object_element(subs, i);

		if (g_strcmp0(json_object_get_string_member_with_default(
				      s, "vmsd_name", ""),
			      name) == 0)
			return s;
	}
	return NULL;
}

static bool walk_vmsd(JsonObject *vmsd, MigramChannel *ch, int depth,
		      GError **error)
{
	JsonArray *fields;

	if (depth > MAX_DEPTH) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
			    "vmdesc nested deeper than %d", MAX_DEPTH);
		return false;
	}
	fields = json_object_has_member(vmsd, "fields")
			 ? json_object_get_array_member(vmsd, "fields")
			 : NULL;
	for (guint i = 0; fields && i < json_array_get_length(fields); i++)
		if (!walk_field(json_array_get_object_element(fields, i), ch,
				depth, error))
			return false;
	/*
	 * Only a description that lists subsections owns a following 0x05:
	 * after a nested struct without any, it is the parent's.
	 */
	if (!json_object_has_member(vmsd, "subsections"))
		return true;
	for (;;) {
		char name[256];
		guint32 version;
		JsonObject *sub;
		guint8 t;

		if (!migram_channel_peek_u8(ch, &t, error))
			return false;
		if (t != 0x05)
			return true;
		if (!migram_channel_get_u8(ch, &t, error) ||
		    !migram_channel_get_counted_string(ch, name, error) ||
		    !migram_channel_get_be32(ch, &version, error))
			return false;
		sub = find_subsection(vmsd, name);
		if (!sub) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL,
				    "subsection '%s' is not in the vmdesc",
				    name);
			return false;
		}
		if (!walk_vmsd(sub, ch, depth + 1, error))
			return false;
	}
}

bool vmdesc_skip_device(const VmDesc *d, const char *name, guint32 instance,
			MigramChannel *ch, GError **error)
{
	for (guint i = 0; i < json_array_get_length(d->devices); i++) {
		JsonObject *dev = json_array_get_object_element(d->devices, i);

		if (g_strcmp0(json_object_get_string_member_with_default(
				      dev, "name", ""),
			      name) == 0 &&
		    json_object_get_int_member_with_default(dev, "instance_id",
							    -1) == instance)
			return walk_vmsd(dev, ch, 0, error);
	}
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND,
		    "device '%s' instance %u is not in the vmdesc", name,
		    instance);
	return false;
}
