/* SPDX-License-Identifier: MIT */
/*
 * Walking a QEMU device section's body with the help of the stream's own
 * vmdesc JSON (the description QEMU appends to a precopy stream).
 *
 * Device state has no length prefix on the wire; only its description says
 * how many bytes each field takes.  This is what QEMU's analysis script
 * does, written for migram-stream so that it can list the device sections
 * after the RAM of a real QEMU stream and skip over them.
 */
#ifndef MIGRAM_TOOLS_VMSTATE_WALK_H
#define MIGRAM_TOOLS_VMSTATE_WALK_H

#include <stdbool.h>

#include <glib.h>

#include <migram/channel.h>

typedef struct VmDesc VmDesc;

/*
 * Find and parse the vmdesc at the end of a seekable stream file (it must
 * lie in the last 10 MiB, after the last NUL byte, as QEMU's script
 * assumes).  NULL with a message when there is none or it does not parse.
 */
VmDesc *vmdesc_load_from_file(const char *path, GError **error);

void vmdesc_free(VmDesc *d);

/*
 * Consume the body of device section (name, instance) from ch, fields and
 * subsections, as the description says.  False when the device is not
 * described or the bytes do not follow its description.
 */
bool vmdesc_skip_device(const VmDesc *d, const char *name, guint32 instance,
			MigramChannel *ch, GError **error);

#endif
