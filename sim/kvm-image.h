/* SPDX-License-Identifier: MIT */
/*
 * The boot-sector guest of `--guest-image` (kvm-image.c): loading the
 * image and reading the guest's progress and invariant from its memory.
 * Pure functions over guest memory; any thread.
 */
#ifndef MIGRAM_SIM_KVM_IMAGE_H
#define MIGRAM_SIM_KVM_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/bitmap.h>

/* Where a PC BIOS loads a boot sector, and where the guest starts. */
#define SIM_IMAGE_LOAD_GPA 0x7c00u
/* Largest image (it must fit below 0xa0000 from 0x7c00). */
#define SIM_IMAGE_MAX (64u * 1024)
/* Where the guest stores its pass count every 2^MARK_LOG2 passes. */
#define SIM_IMAGE_PASS_GPA 0x500u
/* Its serial port (COM1) and the "fast A20" port. */
#define SIM_IMAGE_COM1 0x3f8u
#define SIM_IMAGE_PORT_A20 0x92u

/* Read @path: 512 bytes to SIM_IMAGE_MAX, boot signature at 510. */
bool sim_image_load(const char *path, GBytes **out, GError **error);

/*
 * Passes the guest completed, from the pass count it stores and the
 * working set's counters; @pages_done (may be NULL) gets the pages done
 * of the pass under way.
 */
uint64_t sim_image_passes(const guint8 *mem, uint64_t ws_start, uint64_t ws_end,
			  uint64_t *pages_done);
/* Page writes so far: passes * pages + pages done. */
uint64_t sim_image_progress(const guint8 *mem, uint64_t ws_start,
			    uint64_t ws_end);
/*
 * The invariant on a paused guest's memory: counters form one pass of the
 * loop, the rest of every working-set page is zero.  Appends what was
 * checked, or the first violation, to @d.
 */
bool sim_image_check(const guint8 *mem, uint64_t ws_start, uint64_t ws_end,
		     GString *d);
/* Mark every page the guest writes in @map (@npages pages). */
void sim_image_written_pages(uint64_t ws_start, uint64_t ws_end,
			     unsigned long *map, uint64_t npages);

#endif
