/* SPDX-License-Identifier: MIT */
/**
 * @file device-section.h
 * Device state as named, versioned sections in QEMU's section framing.
 *
 * A VMM has many devices, each with its own state and format version.  The
 * source lists them in MigramMigrationConfig.device_sections; each is saved
 * with the guest paused and travels as one FULL section (QEMU's framing:
 * section id, counted idstr, instance id, version id, then migram's body: a
 * be32 length and that many bytes, then the footer; docs/wire-format.md,
 * "Device sections") after the RAM in precopy, or inside the postcopy
 * package.  The destination's MigramReceiverConfig.load_section gets every
 * device section with its name, instance and version, and may refuse one
 * it does not know; the load then fails with its reason, the section's
 * name, instance, version and stream offset.
 *
 * The older single blob (MigramMigrationConfig.save_device and
 * device_idstr, MigramReceiverConfig.load_device) still works: it is one
 * such section, instance 0, version 1, sent before the named ones.  A
 * receiver with load_section gets it there too; one with only load_device
 * gets every version-1 section and refuses others as before.
 */
#ifndef MIGRAM_DEVICE_SECTION_H
#define MIGRAM_DEVICE_SECTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

/** Largest body of one device section, in bytes (256 MiB). */
#define MIGRAM_DEVICE_SECTION_MAX (256u << 20)

/** One device's state, as the source saves it. */
typedef struct {
	/** Its name: 1..255 bytes, not "ram" with instance 0. */
	const char *idstr;
	/** Tells apart several devices of one kind (QEMU's instance id). */
	uint32_t instance_id;
	/** The format version of the saved state. */
	uint32_t version_id;
	/**
	 * Append the device's state to @p out.  Called once, on the migration
	 * thread, with the guest paused; returning false (with @p error set)
	 * fails the migration.
	 */
	bool (*save)(void *opaque, GByteArray *out, GError **error);
	/** Passed to save. */
	void *opaque;
} MigramDeviceSection;

/** What the destination knows about a device section it loads. */
typedef struct {
	const char *idstr;      /**< its name (valid during the call) */
	uint32_t instance_id;   /**< its instance id */
	uint32_t version_id;    /**< its format version */
	uint32_t section_id;    /**< the stream's section id */
	uint64_t stream_offset; /**< where its header starts in the stream */
} MigramDeviceSectionInfo;

/**
 * The destination's loader: restore one device from @p data.  Refuse an
 * unknown name or version by returning false with @p error set (its message
 * is kept); the load fails.
 *
 * @param opaque MigramReceiverConfig.opaque.
 * @param info which section this is.
 * @param data its body; valid during the call.
 * @param len its length.
 * @param error set when refusing.
 * @return true when the device was restored.
 *
 * Context: the receiver's loading thread; must not call back into the
 * receiver.
 */
typedef bool (*MigramDeviceLoadFn)(void *opaque,
				   const MigramDeviceSectionInfo *info,
				   const guint8 *data, size_t len,
				   GError **error);

G_END_DECLS

#endif /* MIGRAM_DEVICE_SECTION_H */
