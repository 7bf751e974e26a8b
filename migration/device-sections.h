/* SPDX-License-Identifier: MIT */
/* migration/ private: named device sections (device-sections.c). */
#ifndef MIGRAM_DEVICE_SECTIONS_INTERNAL_H
#define MIGRAM_DEVICE_SECTIONS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "migram/device-section.h"
#include "migram/stream.h"

/*
 * The first section id of the named sections (RAM is 2, the single
 * save_device blob 3); section i gets MIGRAM_NAMED_SECTION_ID0 + i.
 */
#define MIGRAM_NAMED_SECTION_ID0 4u

/*
 * Save the n sections of s and append each, framed as a FULL section, to
 * out.  Checks the list first (names, duplicates, a save callback each).
 * Migration thread, guest paused.
 */
bool migram_device_sections_encode(const MigramDeviceSection *s, unsigned int n,
				   GByteArray *out, GError **error);

/*
 * The FULL device section rec, whose body is next in r: read the body
 * (at most MIGRAM_DEVICE_SECTION_MAX) and hand it to load.  A refusal is
 * wrapped with the section's name, instance, version and stream offset.
 * The loading thread.
 */
bool migram_device_section_load(MigramStreamReader *r,
				const MigramStreamRecord *rec,
				MigramDeviceLoadFn load, void *opaque,
				GError **error);

#endif /* MIGRAM_DEVICE_SECTIONS_INTERNAL_H */
