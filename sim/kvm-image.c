/* SPDX-License-Identifier: MIT */
/*
 * `migram-sim --workload kvm --guest-image FILE`: the boot-sector guest of
 * the QEMU peer harness (../shared/peers/qemu/guest/dirty-boot.s), read
 * from its memory.  kvm-vmm.c runs it; this file knows its memory layout.
 *
 * The guest, once in its loop, increments the first byte of every page of
 * [ws_start, ws_end) in order, for ever; after every 2^MARK_LOG2 complete
 * passes it stores the pass count at guest-physical 0x500 and writes '.'
 * to COM1.  So at any instant the vCPU is out of the guest, with c the
 * passes completed and k the pages done of the current one, the pages'
 * first bytes read (c + 1) mod 256 on [0, k) and c mod 256 on [k, n),
 * and every other byte of a working-set page is zero.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <migram/migram.h>

#include "kvm-image.h"

#define PAGE 4096u

bool sim_image_load(const char *path, GBytes **out, GError **error)
{
	g_autofree char *data = NULL;
	gsize len = 0;

	if (!g_file_get_contents(path, &data, &len, error))
		return false;
	if (len < 512 || len > SIM_IMAGE_MAX) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%s: a boot-sector image is 512 bytes to %u KiB, "
			    "this one has %" G_GSIZE_FORMAT,
			    path, SIM_IMAGE_MAX / 1024, len);
		return false;
	}
	if ((guint8)data[510] != 0x55 || (guint8)data[511] != 0xaa) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%s: no boot signature (55 aa) at byte 510", path);
		return false;
	}
	*out = g_bytes_new_take(g_steal_pointer(&data), len);
	return true;
}

static guint8 first(const guint8 *mem, uint64_t ws_start, uint64_t i)
{
	return __atomic_load_n(mem + ws_start + i * PAGE, __ATOMIC_RELAXED);
}

/* Pages of the current pass done: first bytes == @v form a prefix. */
static uint64_t done_prefix(const guint8 *mem, uint64_t ws_start, uint64_t n,
			    guint8 v)
{
	uint64_t lo = 0, hi = n;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (first(mem, ws_start, mid) == v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

uint64_t sim_image_passes(const guint8 *mem, uint64_t ws_start, uint64_t ws_end,
			  uint64_t *pages_done)
{
	uint64_t n = (ws_end - ws_start) / PAGE;
	uint32_t stored;
	uint64_t c;

	if (pages_done)
		*pages_done = 0;
	if (!n)
		return 0;
	stored = __atomic_load_n((const uint32_t *)(mem + SIM_IMAGE_PASS_GPA),
				 __ATOMIC_RELAXED);
	/* The last page holds c mod 256 and c - stored < 2^MARK_LOG2. */
	c = stored + (guint8)(first(mem, ws_start, n - 1) - (guint8)stored);
	if (pages_done)
		*pages_done = done_prefix(mem, ws_start, n, (guint8)(c + 1));
	return c;
}

uint64_t sim_image_progress(const guint8 *mem, uint64_t ws_start,
			    uint64_t ws_end)
{
	uint64_t k, c = sim_image_passes(mem, ws_start, ws_end, &k);

	return c * ((ws_end - ws_start) / PAGE) + k;
}

static bool page_rest_zero(const guint8 *p)
{
	static const guint8 zero[PAGE];

	return memcmp(p + 1, zero, PAGE - 1) == 0;
}

bool sim_image_check(const guint8 *mem, uint64_t ws_start, uint64_t ws_end,
		     GString *d)
{
	uint64_t n = (ws_end - ws_start) / PAGE, changes = 0, at = 0;

	if (!n) {
		g_string_append(d, "the guest halts (no working set)");
		return true;
	}
	for (uint64_t i = 0; i < n; i++) {
		if (!page_rest_zero(mem + ws_start + i * PAGE)) {
			g_string_append_printf(
				d,
				"working-set page %" G_GUINT64_FORMAT
				" (guest-physical %#" G_GINT64_MODIFIER
				"x) has non-zero bytes past its counter",
				i, ws_start + i * PAGE);
			return false;
		}
		if (i &&
		    first(mem, ws_start, i) != first(mem, ws_start, i - 1)) {
			if (changes++ ||
			    first(mem, ws_start, i) !=
				    (guint8)(first(mem, ws_start, i - 1) - 1)) {
				g_string_append_printf(
					d,
					"working-set page %" G_GUINT64_FORMAT
					" has counter %u after %u: not one "
					"pass of the loop",
					i, first(mem, ws_start, i),
					first(mem, ws_start, i - 1));
				return false;
			}
			at = i;
		}
	}
	g_string_append_printf(d,
			       "boot-sector guest: %" G_GUINT64_FORMAT
			       " working-set pages form one pass "
			       "(%" G_GUINT64_FORMAT
			       " done), %" G_GUINT64_FORMAT " passes",
			       n, at,
			       sim_image_passes(mem, ws_start, ws_end, NULL));
	return true;
}

void sim_image_written_pages(uint64_t ws_start, uint64_t ws_end,
			     unsigned long *map, uint64_t npages)
{
	/* the pass count, the stack below 0x7c00, the working set */
	const uint64_t fixed[] = { SIM_IMAGE_PASS_GPA / PAGE,
				   (SIM_IMAGE_LOAD_GPA - 4) / PAGE };

	for (size_t i = 0; i < G_N_ELEMENTS(fixed); i++)
		if (fixed[i] < npages)
			migram_bitmap_set_bit(map, (size_t)fixed[i]);
	for (uint64_t a = ws_start; a < ws_end && a / PAGE < npages; a += PAGE)
		migram_bitmap_set_bit(map, (size_t)(a / PAGE));
}
