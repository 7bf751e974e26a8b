/* SPDX-License-Identifier: MIT */
/*
 * Sample inputs for the receiver fuzz target, with their expected outcome.
 * The destination they are written for is the fuzz harness's: "pc.ram"
 * 1 MiB, "vram" 64 KiB of 256 KiB, "rom" (not migratable), "shared"
 * 128 KiB.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <migram/migram.h>

#include "fuzz-harness.h"
#include "stream-internal.h"
#include "stream-samples.h"

#define KiB(n) ((uint64_t)(n) << 10)
#define MiB(n) ((uint64_t)(n) << 20)

/* The writer gives "ram" section id 2. */
#define RAM_ID 2u

/* ---- raw pieces, for the hand-made streams ---- */

static void raw_header(SampleCtx *c, uint32_t magic, uint32_t version)
{
	migram_channel_put_be32(c->ch, magic);
	migram_channel_put_be32(c->ch, version);
}

static void raw_config(SampleCtx *c, const char *machine)
{
	migram_channel_put_u8(c->ch, MIGRAM_QEMU_VM_CONFIGURATION);
	migram_channel_put_be32(c->ch, (uint32_t)strlen(machine));
	migram_channel_put_bytes(c->ch, machine, strlen(machine));
}

static void raw_subsection(SampleCtx *c, const char *name)
{
	migram_channel_put_u8(c->ch, MIGRAM_QEMU_VM_SUBSECTION);
	migram_channel_put_counted_string(c->ch, name);
	migram_channel_put_be32(c->ch, 1);
}

static void raw_section(SampleCtx *c, uint8_t type, uint32_t id)
{
	migram_channel_put_u8(c->ch, type);
	migram_channel_put_be32(c->ch, id);
}

static void raw_start(SampleCtx *c, uint8_t type, uint32_t id, const char *name,
		      uint32_t version)
{
	raw_section(c, type, id);
	migram_channel_put_counted_string(c->ch, name);
	migram_channel_put_be32(c->ch, 0);
	migram_channel_put_be32(c->ch, version);
}

static void raw_word(SampleCtx *c, uint64_t word)
{
	migram_channel_put_be64(c->ch, word);
}

/* A page record by hand: word, optional name, payload. */
static void raw_page(SampleCtx *c, uint64_t word, const char *name)
{
	raw_word(c, word);
	if (name)
		migram_channel_put_counted_string(c->ch, name);
	migram_channel_put_bytes(c->ch, c->page[0], MIGRAM_TARGET_PAGE_SIZE);
}

static void raw_eos(SampleCtx *c, uint32_t footer_id)
{
	raw_word(c, MIGRAM_RAM_FLAG_EOS);
	raw_section(c, MIGRAM_QEMU_VM_SECTION_FOOTER, footer_id);
}

/* A FULL device section with a body only its owner could parse. */
static void raw_device(SampleCtx *c)
{
	raw_start(c, MIGRAM_QEMU_VM_SECTION_FULL, 0, "timer", 2);
	migram_channel_put_bytes(c->ch, "\x00\x01\x02\x03\x7e\x00", 6);
}

/* ---- valid streams, from the writer ---- */

static const MigramStreamBlock blocks_pc[] = { { "pc.ram", MiB(1), 0 } };

static const MigramStreamBlock blocks_all[] = {
	{ "pc.ram", MiB(1), 0 },
	{ "vram", KiB(64), 0 },
	{ "shared", KiB(128), 0 },
};

static void begin(SampleCtx *c)
{
	migram_stream_writer_begin(c->w, FUZZ_MACHINE_TYPE);
}

static void start_pc(SampleCtx *c)
{
	begin(c);
	migram_stream_writer_ram_start(c->w, blocks_pc, 1);
}

static void finish(SampleCtx *c)
{
	migram_stream_writer_finish(c->w, NULL);
}

/* PART: two pages and a zero page; END: the last page.  No finish. */
static void pc_sections(SampleCtx *c)
{
	migram_stream_writer_ram_open(c->w, false);
	migram_stream_writer_page(c->w, "pc.ram", 0, c->page[0]);
	migram_stream_writer_page(c->w, "pc.ram", 0x1000, c->page[1]);
	migram_stream_writer_zero_page(c->w, "pc.ram", 0x2000);
	migram_stream_writer_ram_close(c->w);
	migram_stream_writer_ram_open(c->w, true);
	migram_stream_writer_page(c->w, "pc.ram", MiB(1) - 0x1000, c->page[2]);
	migram_stream_writer_ram_close(c->w);
}

static void one_block(SampleCtx *c)
{
	start_pc(c);
	pc_sections(c);
	finish(c);
}

static void machine_mismatch(SampleCtx *c)
{
	migram_stream_writer_begin(c->w, "pc-q35-7.2");
	migram_stream_writer_ram_start(c->w, blocks_pc, 1);
	pc_sections(c);
	finish(c);
}

/* Pages for every block, switching blocks (CONTINUE on and off). */
static void all_blocks_body(SampleCtx *c, bool no_continue)
{
	static const struct {
		const char *block;
		uint64_t offset;
		int page; /* -1: zero page */
	} recs[] = {
		{ "pc.ram", 0, 0 },       { "vram", 0, 1 },
		{ "shared", 0, 2 },       { "shared", 0x1000, 0 },
		{ "shared", 0x2000, -1 }, { "vram", 0xf000, 2 },
		{ "pc.ram", 0x1000, 1 },  { "pc.ram", 0x2000, -1 },
		{ "shared", 0x1f000, 1 }, { "pc.ram", 0xff000, 0 },
	};

	for (size_t i = 0; i < G_N_ELEMENTS(recs); i++) {
		if (i == 6) {
			migram_stream_writer_ram_close(c->w);
			migram_stream_writer_ram_open(c->w, true);
		}
		if (no_continue)
			migram_stream_writer_reset_continue(c->w);
		if (recs[i].page < 0)
			migram_stream_writer_zero_page(c->w, recs[i].block,
						       recs[i].offset);
		else
			migram_stream_writer_page(c->w, recs[i].block,
						  recs[i].offset,
						  c->page[recs[i].page]);
	}
}

static void all_blocks(SampleCtx *c, bool no_continue)
{
	begin(c);
	migram_stream_writer_ram_start(c->w, blocks_all, 3);
	migram_stream_writer_ram_open(c->w, false);
	all_blocks_body(c, no_continue);
	migram_stream_writer_ram_close(c->w);
	finish(c);
}

static void several_blocks(SampleCtx *c)
{
	all_blocks(c, false);
}

static void no_continue(SampleCtx *c)
{
	all_blocks(c, true);
}

/* Three PART sections (the CONTINUE context crosses them) and an END. */
static void parts(SampleCtx *c)
{
	begin(c);
	migram_stream_writer_ram_start(c->w, blocks_all, 3);
	for (uint64_t i = 0; i < 3; i++) {
		migram_stream_writer_ram_open(c->w, false);
		migram_stream_writer_page(c->w, "vram", i * 0x1000, c->page[i]);
		migram_stream_writer_zero_page(c->w, "vram",
					       0x8000 + i * 0x1000);
		migram_stream_writer_ram_close(c->w);
	}
	migram_stream_writer_ram_open(c->w, true);
	migram_stream_writer_ram_close(c->w);
	finish(c);
}

/* Pages, then zero pages over them: the receiver clears them again. */
static void zero_pages(SampleCtx *c)
{
	begin(c);
	migram_stream_writer_ram_start(c->w, blocks_all, 3);
	migram_stream_writer_ram_open(c->w, true);
	for (uint64_t off = 0; off < 0x4000; off += 0x1000) {
		migram_stream_writer_page(c->w, "shared", off, c->page[1]);
		migram_stream_writer_page(c->w, "pc.ram", off, c->page[2]);
	}
	for (uint64_t off = 0; off < 0x8000; off += 0x1000) {
		migram_stream_writer_zero_page(c->w, "shared", off);
		migram_stream_writer_zero_page(c->w, "pc.ram", off);
	}
	migram_stream_writer_ram_close(c->w);
	finish(c);
}

/* "vram" listed at @p len, then pages at each of @p offsets. */
static void vram_at(SampleCtx *c, uint64_t len, const uint64_t *offsets,
		    size_t n)
{
	MigramStreamBlock b = { "vram", len, 0 };

	begin(c);
	migram_stream_writer_ram_start(c->w, &b, 1);
	migram_stream_writer_ram_open(c->w, true);
	for (size_t i = 0; i < n; i++)
		migram_stream_writer_page(c->w, "vram", offsets[i], c->page[0]);
	migram_stream_writer_ram_close(c->w);
	finish(c);
}

static void vram_grow(SampleCtx *c)
{
	static const uint64_t offs[] = { 0x3f000, 0x10000, 0 };

	vram_at(c, KiB(256), offs, G_N_ELEMENTS(offs));
}

static void vram_shrink(SampleCtx *c)
{
	static const uint64_t offs[] = { 0x3000 };

	vram_at(c, KiB(16), offs, G_N_ELEMENTS(offs));
}

static void vram_shrink_past(SampleCtx *c)
{
	static const uint64_t offs[] = { 0x3000, 0x4000 };

	vram_at(c, KiB(16), offs, G_N_ELEMENTS(offs));
}

static void vram_past_used(SampleCtx *c)
{
	static const uint64_t offs[] = { 0xf000, 0x10000 };

	vram_at(c, KiB(64), offs, G_N_ELEMENTS(offs));
}

static void vram_too_big(SampleCtx *c)
{
	vram_at(c, KiB(512), NULL, 0);
}

static void pc_size_mismatch(SampleCtx *c)
{
	MigramStreamBlock b = { "pc.ram", KiB(512), 0 };

	begin(c);
	migram_stream_writer_ram_start(c->w, &b, 1);
	finish(c);
}

/* "pc.ram" and a block the destination lacks, with pages for both. */
static void extra_block(SampleCtx *c)
{
	static const MigramStreamBlock b[] = {
		{ "pc.ram", MiB(1), 0 },
		{ "extra.block", KiB(64), 0 },
	};

	begin(c);
	migram_stream_writer_ram_start(c->w, b, 2);
	migram_stream_writer_ram_open(c->w, true);
	migram_stream_writer_page(c->w, "extra.block", 0, c->page[0]);
	migram_stream_writer_page(c->w, "extra.block", 0xf000, c->page[1]);
	migram_stream_writer_page(c->w, "pc.ram", 0, c->page[2]);
	migram_stream_writer_zero_page(c->w, "extra.block", 0x1000);
	migram_stream_writer_ram_close(c->w);
	finish(c);
}

/* One block named @p name of @p len bytes, to be created. */
static void create_one(SampleCtx *c, const char *name, uint64_t len)
{
	MigramStreamBlock b = { name, len, 0 };

	begin(c);
	migram_stream_writer_ram_start(c->w, &b, 1);
	migram_stream_writer_ram_open(c->w, true);
	migram_stream_writer_page(c->w, name, 0, c->page[0]);
	migram_stream_writer_ram_close(c->w);
	finish(c);
}

/* Mappable (MAP_NORESERVE), but its bitmaps would take 4 GiB. */
static void create_big(SampleCtx *c)
{
	create_one(c, "big", UINT64_C(1) << 46);
}

static void create_huge(SampleCtx *c)
{
	create_one(c, "huge", UINT64_C(1) << 53);
}

/* RAM complete, then a device section (QEMU's order). */
static void then_device(SampleCtx *c)
{
	start_pc(c);
	pc_sections(c);
	raw_device(c);
}

static void device_before_end(SampleCtx *c)
{
	start_pc(c);
	raw_device(c);
}

static void no_vmdesc(SampleCtx *c)
{
	start_pc(c);
	pc_sections(c);
	migram_channel_put_u8(c->ch, MIGRAM_QEMU_VM_EOF);
}

/* Header and configuration with subsections; page bits @p bits. */
static void config_with(SampleCtx *c, uint32_t bits, const char *extra)
{
	raw_header(c, MIGRAM_QEMU_VM_FILE_MAGIC, MIGRAM_QEMU_VM_FILE_VERSION);
	raw_config(c, FUZZ_MACHINE_TYPE);
	raw_subsection(c, "configuration/target-page-bits");
	migram_channel_put_be32(c->ch, bits);
	raw_subsection(c, "configuration/capabilities");
	migram_channel_put_be32(c->ch, 1);
	migram_channel_put_counted_string(c->ch, "x-ignore-shared");
	raw_subsection(c, "configuration/uuid");
	migram_channel_put_bytes(c->ch, "0123456789abcdef", 16);
	if (extra)
		raw_subsection(c, extra);
	migram_stream_writer_ram_start(c->w, blocks_pc, 1);
	pc_sections(c);
	finish(c);
}

static void config_subsections(SampleCtx *c)
{
	config_with(c, 12, NULL);
}

static void page_bits_16(SampleCtx *c)
{
	config_with(c, 16, NULL);
}

static void page_bits_9(SampleCtx *c)
{
	config_with(c, 9, NULL);
}

static void unknown_subsection(SampleCtx *c)
{
	config_with(c, 12, "configuration/unheard-of");
}

static void bad_magic(SampleCtx *c)
{
	raw_header(c, 0x5145564e, MIGRAM_QEMU_VM_FILE_VERSION);
	raw_config(c, FUZZ_MACHINE_TYPE);
}

static void bad_version(SampleCtx *c)
{
	raw_header(c, MIGRAM_QEMU_VM_FILE_MAGIC, 2);
	raw_config(c, FUZZ_MACHINE_TYPE);
}

static void unknown_section_type(SampleCtx *c)
{
	begin(c);
	raw_section(c, 0x09, RAM_ID);
}

/* START with the list, then a PART holding one record word. */
static void part_with_word(SampleCtx *c, uint64_t word)
{
	start_pc(c);
	migram_stream_writer_ram_open(c->w, false);
	raw_page(c, word, "pc.ram");
	raw_eos(c, RAM_ID);
}

static void xbzrle(SampleCtx *c)
{
	part_with_word(c, 0x1000 | MIGRAM_RAM_FLAG_XBZRLE);
}

static void multifd_flush(SampleCtx *c)
{
	part_with_word(c, MIGRAM_RAM_FLAG_MULTIFD_FLUSH);
}

static void compressed(SampleCtx *c)
{
	part_with_word(c, MIGRAM_RAM_FLAG_COMPRESS_PAGE);
}

static void hook(SampleCtx *c)
{
	part_with_word(c, MIGRAM_RAM_FLAG_HOOK);
}

static void unknown_flags(SampleCtx *c)
{
	part_with_word(c, MIGRAM_RAM_FLAG_PAGE | MIGRAM_RAM_FLAG_MEM_SIZE);
}

static void offset_past_used(SampleCtx *c)
{
	part_with_word(c, MiB(1) | MIGRAM_RAM_FLAG_PAGE);
}

static void offset_huge(SampleCtx *c)
{
	part_with_word(c, UINT64_C(0xfffffffffffff000) | MIGRAM_RAM_FLAG_PAGE);
}

static void continue_first(SampleCtx *c)
{
	start_pc(c);
	migram_stream_writer_ram_open(c->w, false);
	raw_page(c, 0x1000 | MIGRAM_RAM_FLAG_PAGE | MIGRAM_RAM_FLAG_CONTINUE,
		 NULL);
	raw_eos(c, RAM_ID);
}

static void empty_block_name(SampleCtx *c)
{
	start_pc(c);
	migram_stream_writer_ram_open(c->w, false);
	raw_page(c, MIGRAM_RAM_FLAG_PAGE, "");
}

/* START "ram" by hand: MEM_SIZE @p total, then one entry. */
static void raw_list_only(SampleCtx *c, uint64_t total, const char *name,
			  uint64_t len)
{
	raw_start(c, MIGRAM_QEMU_VM_SECTION_START, RAM_ID, "ram",
		  MIGRAM_QEMU_RAM_SECTION_VERSION);
	raw_word(c, total | MIGRAM_RAM_FLAG_MEM_SIZE);
	migram_channel_put_counted_string(c->ch, name);
	migram_channel_put_be64(c->ch, len);
}

/* The same after the header and configuration. */
static void raw_list(SampleCtx *c, uint64_t total, const char *name,
		     uint64_t len)
{
	begin(c);
	raw_list_only(c, total, name, len);
}

/* (The writer cannot say this: the total's low bits would be flags.) */
static void vram_unaligned(SampleCtx *c)
{
	raw_list(c, KiB(68), "vram", KiB(64) + 512);
}

static void create_odd(SampleCtx *c)
{
	raw_list(c, 0x2000, "odd", 0x1800);
}

static void total_too_small(SampleCtx *c)
{
	raw_list(c, 0x1000, "pc.ram", MiB(1));
	raw_eos(c, RAM_ID);
}

static void empty_list(SampleCtx *c)
{
	begin(c);
	raw_start(c, MIGRAM_QEMU_VM_SECTION_START, RAM_ID, "ram",
		  MIGRAM_QEMU_RAM_SECTION_VERSION);
	raw_word(c, MIGRAM_RAM_FLAG_MEM_SIZE);
	raw_eos(c, RAM_ID);
}

static void page_before_list_end(SampleCtx *c)
{
	raw_list(c, MiB(1), "pc.ram", MiB(1));
	raw_page(c, MIGRAM_RAM_FLAG_PAGE, "pc.ram");
	raw_eos(c, RAM_ID);
}

static void list_in_part(SampleCtx *c)
{
	start_pc(c);
	migram_stream_writer_ram_open(c->w, false);
	raw_word(c, MiB(1) | MIGRAM_RAM_FLAG_MEM_SIZE);
	migram_channel_put_counted_string(c->ch, "pc.ram");
	migram_channel_put_be64(c->ch, MiB(1));
}

static void second_start(SampleCtx *c)
{
	start_pc(c);
	migram_stream_writer_ram_start(c->w, blocks_pc, 1);
}

static void ram_version_3(SampleCtx *c)
{
	begin(c);
	raw_start(c, MIGRAM_QEMU_VM_SECTION_START, RAM_ID, "ram", 3);
}

static void part_unknown_id(SampleCtx *c)
{
	start_pc(c);
	raw_section(c, MIGRAM_QEMU_VM_SECTION_PART, 9);
}

static void rom_in_list(SampleCtx *c)
{
	MigramStreamBlock b = { "rom", KiB(64), 0 };

	begin(c);
	migram_stream_writer_ram_start(c->w, &b, 1);
	finish(c);
}

static void rom_page(SampleCtx *c)
{
	start_pc(c);
	migram_stream_writer_ram_open(c->w, true);
	migram_stream_writer_page(c->w, "rom", 0, c->page[0]);
	migram_stream_writer_ram_close(c->w);
	finish(c);
}

static void unknown_page_block(SampleCtx *c)
{
	start_pc(c);
	migram_stream_writer_ram_open(c->w, true);
	migram_stream_writer_page(c->w, "nope", 0, c->page[0]);
	migram_stream_writer_ram_close(c->w);
	finish(c);
}

static void fill_0x55(SampleCtx *c)
{
	start_pc(c);
	migram_stream_writer_ram_open(c->w, false);
	raw_word(c, 0x2000 | MIGRAM_RAM_FLAG_ZERO);
	migram_channel_put_counted_string(c->ch, "pc.ram");
	migram_channel_put_u8(c->ch, 0x55);
	raw_eos(c, RAM_ID);
}

static void truncated_page(SampleCtx *c)
{
	start_pc(c);
	migram_stream_writer_ram_open(c->w, false);
	raw_word(c, 0x3000 | MIGRAM_RAM_FLAG_PAGE);
	migram_channel_put_counted_string(c->ch, "pc.ram");
	migram_channel_put_bytes(c->ch, c->page[1], 2048);
}

static void command(SampleCtx *c)
{
	begin(c);
	migram_channel_put_u8(c->ch, MIGRAM_QEMU_VM_COMMAND);
	migram_channel_put_be16(c->ch, 8); /* ENABLE_COLO */
	migram_channel_put_be16(c->ch, 0);
}

static void footer_mismatch(SampleCtx *c)
{
	start_pc(c);
	migram_stream_writer_ram_open(c->w, false);
	raw_eos(c, 7);
}

static void data_after_vmdesc(SampleCtx *c)
{
	one_block(c);
	migram_channel_put_u8(c->ch, 0);
}

static void byte_after_eof(SampleCtx *c)
{
	no_vmdesc(c);
	migram_channel_put_u8(c->ch, MIGRAM_QEMU_VM_SECTION_START);
}

static void vmdesc_too_big(SampleCtx *c)
{
	no_vmdesc(c);
	migram_channel_put_u8(c->ch, MIGRAM_QEMU_VM_VMDESCRIPTION);
	migram_channel_put_be32(c->ch, UINT32_MAX);
}

static void config_late(SampleCtx *c)
{
	start_pc(c);
	raw_config(c, FUZZ_MACHINE_TYPE);
}

static void machine_too_long(SampleCtx *c)
{
	raw_header(c, MIGRAM_QEMU_VM_FILE_MAGIC, MIGRAM_QEMU_VM_FILE_VERSION);
	migram_channel_put_u8(c->ch, MIGRAM_QEMU_VM_CONFIGURATION);
	migram_channel_put_be32(c->ch, 256);
}

static void empty(SampleCtx *c)
{
	(void)c;
}

/* ---- for the reader-only mode ---- */

/* Device sections with empty bodies and footers, between RAM sections. */
static void devices(SampleCtx *c)
{
	start_pc(c);
	raw_start(c, MIGRAM_QEMU_VM_SECTION_START, 5, "dev", 1);
	raw_section(c, MIGRAM_QEMU_VM_SECTION_FOOTER, 5);
	pc_sections(c);
	raw_section(c, MIGRAM_QEMU_VM_SECTION_PART, 5);
	raw_section(c, MIGRAM_QEMU_VM_SECTION_FOOTER, 5);
	raw_section(c, MIGRAM_QEMU_VM_SECTION_END, 5);
	raw_start(c, MIGRAM_QEMU_VM_SECTION_FULL, 0, "timer", 2);
	raw_section(c, MIGRAM_QEMU_VM_SECTION_FOOTER, 0);
	finish(c);
}

static void device_id_reuse(SampleCtx *c)
{
	start_pc(c);
	raw_start(c, MIGRAM_QEMU_VM_SECTION_START, 5, "dev", 1);
	raw_start(c, MIGRAM_QEMU_VM_SECTION_START, 5, "dev2", 1);
}

static void device_takes_ram_id(SampleCtx *c)
{
	start_pc(c);
	raw_start(c, MIGRAM_QEMU_VM_SECTION_FULL, RAM_ID, "timer", 2);
}

static void device_footer_mismatch(SampleCtx *c)
{
	start_pc(c);
	raw_start(c, MIGRAM_QEMU_VM_SECTION_FULL, 0, "timer", 2);
	raw_section(c, MIGRAM_QEMU_VM_SECTION_FOOTER, 9);
}

/* 64 KiB target pages: two PAGE records of 64 KiB. */
static void pages_64k(SampleCtx *c)
{
	raw_header(c, MIGRAM_QEMU_VM_FILE_MAGIC, MIGRAM_QEMU_VM_FILE_VERSION);
	raw_config(c, "virt-7.2");
	raw_subsection(c, "configuration/target-page-bits");
	migram_channel_put_be32(c->ch, 16);
	raw_list_only(c, KiB(128), "ram", KiB(128));
	raw_eos(c, RAM_ID);
	raw_section(c, MIGRAM_QEMU_VM_SECTION_END, RAM_ID);
	for (int p = 0; p < 2; p++) {
		raw_word(c, (uint64_t)p * KiB(64) | MIGRAM_RAM_FLAG_PAGE |
				    (p ? MIGRAM_RAM_FLAG_CONTINUE : 0));
		if (!p)
			migram_channel_put_counted_string(c->ch, "ram");
		for (int i = 0; i < 16; i++)
			migram_channel_put_bytes(c->ch, c->page[p],
						 MIGRAM_TARGET_PAGE_SIZE);
	}
	raw_eos(c, RAM_ID);
	migram_channel_put_u8(c->ch, MIGRAM_QEMU_VM_EOF);
}

/* POSTCOPY_ADVISE with 2 MiB pages in the summary, then the list. */
static void postcopy_huge(SampleCtx *c)
{
	begin(c);
	migram_channel_put_u8(c->ch, MIGRAM_QEMU_VM_COMMAND);
	migram_channel_put_be16(c->ch, 3);
	migram_channel_put_be16(c->ch, 16);
	migram_channel_put_be64(c->ch, MiB(2) | 0x1000);
	migram_channel_put_be64(c->ch, 0x1000);
	migram_stream_writer_ram_start(c->w, blocks_pc, 1);
}

/* ---- postcopy ----
 *
 * The harness's stream is a memfd, so there is no return path: these
 * streams never OPEN_RETURN_PATH (that fails, see open_return_path) and
 * never PING.  ADVISE opens a userfaultfd and LISTEN registers the
 * blocks with it, so where userfaultfd is unavailable the samples that get
 * past ADVISE fail there instead (tests skip them).  Where a sample has one
 * hostile part, the builder marks where it starts (mark()), so a test can load
 * the prefix and compare the destination memory.
 */

/* Flush and note the stream position: the hostile part starts here. */
static void mark(SampleCtx *c)
{
	off_t pos;

	g_assert(migram_channel_flush(c->ch, NULL));
	pos = lseek(migram_channel_fd(c->ch), 0, SEEK_CUR);
	g_assert(pos >= 0);
	c->mark = (size_t)pos;
}

static void cmd(SampleCtx *c, uint16_t command, const void *data, uint16_t len)
{
	migram_stream_writer_command(c->w, command, data, len);
}

static void advise_with(SampleCtx *c, uint64_t summary, uint64_t tps)
{
	uint64_t be[2] = { GUINT64_TO_BE(summary), GUINT64_TO_BE(tps) };

	cmd(c, MIGRAM_CMD_POSTCOPY_ADVISE, be, 16);
}

static void advise(SampleCtx *c)
{
	advise_with(c, 0x1000, 0x1000);
}

/*
 * The precopy part after the list: pc.ram pages 0..7 with contents, every
 * other page of the three blocks zero, so all 304 pages are received.
 */
static void pc_precopy_pages(SampleCtx *c)
{
	migram_stream_writer_ram_open(c->w, false);
	for (size_t i = 0; i < G_N_ELEMENTS(blocks_all); i++) {
		const MigramStreamBlock *b = &blocks_all[i];

		for (uint64_t off = 0; off < b->used_length; off += 0x1000) {
			if (i == 0 && off < 0x8000)
				migram_stream_writer_page(
					c->w, b->idstr, off,
					c->page[off / 0x1000 % 3]);
			else
				migram_stream_writer_zero_page(c->w, b->idstr,
							       off);
		}
	}
	migram_stream_writer_ram_close(c->w);
}

/* Header, ADVISE, the list of the three blocks, the precopy pages. */
static void pc_precopy(SampleCtx *c)
{
	begin(c);
	advise(c);
	migram_stream_writer_ram_start(c->w, blocks_all, 3);
	pc_precopy_pages(c);
}

/* A DISCARD command as QEMU writes it: version 0, name, NUL, ranges. */
static void discard(SampleCtx *c, const char *name, const uint64_t *ranges,
		    size_t n)
{
	g_autoptr(GByteArray) d = g_byte_array_new();
	guint8 h[2] = { 0, (guint8)strlen(name) };

	g_byte_array_append(d, h, 2);
	g_byte_array_append(d, (const guint8 *)name, (guint)strlen(name));
	g_byte_array_append(d, (const guint8 *)"", 1);
	for (size_t i = 0; i < 2 * n; i++) {
		uint64_t be = GUINT64_TO_BE(ranges[i]);

		g_byte_array_append(d, (const guint8 *)&be, 8);
	}
	cmd(c, MIGRAM_CMD_POSTCOPY_RAM_DISCARD, d->data, (uint16_t)d->len);
}

/* The valid discards: pc.ram pages 0 and 1, shared page 1. */
static void pc_discards(SampleCtx *c)
{
	static const uint64_t pc[] = { 0, 0x2000 };
	static const uint64_t shared[] = { 0x1000, 0x1000 };

	discard(c, "pc.ram", pc, 1);
	discard(c, "shared", shared, 1);
}

/* PACKAGED: be32 length, then the bytes. */
static void package(SampleCtx *c, const GByteArray *pkg)
{
	uint32_t be = GUINT32_TO_BE(pkg->len);

	cmd(c, MIGRAM_CMD_PACKAGED, &be, 4);
	migram_stream_writer_put_raw(c->w, pkg->data, pkg->len);
}

/* The package with LISTEN and RUN only (no PING: no return path). */
static void listen_run(SampleCtx *c)
{
	g_autoptr(GByteArray) pkg = g_byte_array_new();

	migram_stream_encode_command(pkg, MIGRAM_CMD_POSTCOPY_LISTEN, NULL, 0);
	migram_stream_encode_command(pkg, MIGRAM_CMD_POSTCOPY_RUN, NULL, 0);
	package(c, pkg);
}

/* After the switch: the discarded pages, then END and EOF. */
static void pc_postcopy_pages(SampleCtx *c)
{
	migram_stream_writer_ram_open(c->w, false);
	migram_stream_writer_page(c->w, "pc.ram", 0x1000, c->page[2]);
	migram_stream_writer_zero_page(c->w, "shared", 0x1000);
	migram_stream_writer_page(c->w, "pc.ram", 0, c->page[1]);
	migram_stream_writer_ram_close(c->w);
	migram_stream_writer_ram_open(c->w, true);
	migram_stream_writer_ram_close(c->w);
	g_assert(migram_stream_writer_finish_postcopy(c->w, NULL));
}

static void postcopy(SampleCtx *c)
{
	pc_precopy(c);
	pc_discards(c);
	listen_run(c);
	pc_postcopy_pages(c);
}

/* ADVISE, then precopy to its end: the usual end, uffd unused. */
static void postcopy_never_switched(SampleCtx *c)
{
	pc_precopy(c);
	migram_stream_writer_ram_open(c->w, true);
	migram_stream_writer_ram_close(c->w);
	finish(c);
}

/* The switch, then EOF with the discarded pages never sent. */
static void pc_pages_missing(SampleCtx *c)
{
	pc_precopy(c);
	pc_discards(c);
	listen_run(c);
	mark(c);
	migram_stream_writer_ram_open(c->w, true);
	migram_stream_writer_ram_close(c->w);
	g_assert(migram_stream_writer_finish_postcopy(c->w, NULL));
}

/* The switch, then the stream ends: nobody can recover a memfd. */
static void pc_cut_after_listen(SampleCtx *c)
{
	pc_precopy(c);
	pc_discards(c);
	listen_run(c);
	mark(c);
	migram_stream_writer_ram_open(c->w, false);
	migram_stream_writer_page(c->w, "pc.ram", 0x1000, c->page[2]);
}

/* A postcopy page past the block's end, after the switch. */
static void pc_page_past_end(SampleCtx *c)
{
	pc_precopy(c);
	pc_discards(c);
	listen_run(c);
	mark(c);
	migram_stream_writer_ram_open(c->w, false);
	raw_page(c, MiB(1) | MIGRAM_RAM_FLAG_PAGE, "pc.ram");
	raw_eos(c, RAM_ID);
}

/*
 * Only pc.ram listed, then after the switch a page of "vram" past its used
 * length (64 KiB) but inside its max (256 KiB).  The harness's vram is
 * read-only there.  A vram grown by an earlier load kept that load's
 * postcopy length, and the page was placed (test-postcopy-hostile.c).
 */
static void pc_vram_past_used(SampleCtx *c)
{
	begin(c);
	advise(c);
	migram_stream_writer_ram_start(c->w, blocks_pc, 1);
	migram_stream_writer_ram_open(c->w, false);
	for (uint64_t off = 0; off < MiB(1); off += 0x1000)
		migram_stream_writer_zero_page(c->w, "pc.ram", off);
	migram_stream_writer_ram_close(c->w);
	listen_run(c);
	mark(c);
	migram_stream_writer_ram_open(c->w, false);
	migram_stream_writer_page(c->w, "vram", 0x20000, c->page[0]);
	migram_stream_writer_ram_close(c->w);
}

static void pc_open_return_path(SampleCtx *c)
{
	begin(c);
	mark(c);
	cmd(c, MIGRAM_CMD_OPEN_RETURN_PATH, NULL, 0);
}

static void pc_ping_in_package(SampleCtx *c)
{
	g_autoptr(GByteArray) pkg = g_byte_array_new();
	uint32_t three = GUINT32_TO_BE(3);

	pc_precopy(c);
	pc_discards(c);
	mark(c);
	migram_stream_encode_command(pkg, MIGRAM_CMD_POSTCOPY_LISTEN, NULL, 0);
	migram_stream_encode_command(pkg, MIGRAM_CMD_PING, &three, 4);
	migram_stream_encode_command(pkg, MIGRAM_CMD_POSTCOPY_RUN, NULL, 0);
	package(c, pkg);
}

/* Precopy without ADVISE, then one postcopy command. */
static void pc_no_advise(SampleCtx *c, uint16_t command, const void *data,
			 uint16_t len)
{
	begin(c);
	migram_stream_writer_ram_start(c->w, blocks_all, 3);
	pc_precopy_pages(c);
	mark(c);
	cmd(c, command, data, len);
}

static void pc_discard_before_advise(SampleCtx *c)
{
	static const guint8 d[] = { 0, 6, 'p', 'c', '.', 'r',  'a', 'm', 0,
				    0, 0, 0,   0,   0,   0,    0,   0,   0,
				    0, 0, 0,   0,   0,   0x10, 0 };

	pc_no_advise(c, MIGRAM_CMD_POSTCOPY_RAM_DISCARD, d, sizeof(d));
}

static void pc_listen_without_advise(SampleCtx *c)
{
	pc_no_advise(c, MIGRAM_CMD_POSTCOPY_LISTEN, NULL, 0);
}

static void pc_run_without_listen(SampleCtx *c)
{
	pc_precopy(c);
	mark(c);
	cmd(c, MIGRAM_CMD_POSTCOPY_RUN, NULL, 0);
}

static void pc_resume_outside_recovery(SampleCtx *c)
{
	pc_precopy(c);
	mark(c);
	cmd(c, MIGRAM_CMD_POSTCOPY_RESUME, NULL, 0);
}

static void pc_packaged_without_advise(SampleCtx *c)
{
	g_autoptr(GByteArray) pkg = g_byte_array_new();

	begin(c);
	mark(c);
	migram_stream_encode_command(pkg, MIGRAM_CMD_POSTCOPY_LISTEN, NULL, 0);
	package(c, pkg);
}

/* RECV_BITMAP (u8 n, name) after the switch. */
static void pc_recv_bitmap(SampleCtx *c, const char *name)
{
	guint8 d[256];
	size_t n = strlen(name);

	pc_precopy(c);
	pc_discards(c);
	listen_run(c);
	mark(c);
	d[0] = (guint8)n;
	memcpy(d + 1, name, n);
	cmd(c, MIGRAM_CMD_RECV_BITMAP, d, (uint16_t)(n + 1));
}

static void pc_recv_bitmap_unknown(SampleCtx *c)
{
	pc_recv_bitmap(c, "nope");
}

static void pc_recv_bitmap_no_rp(SampleCtx *c)
{
	pc_recv_bitmap(c, "pc.ram");
}

static void pc_advise_page_size(SampleCtx *c)
{
	begin(c);
	mark(c);
	advise_with(c, 0x10000, 0x10000);
}

/*
 * Create mode, ADVISE with 2 MiB pages, then a block list whose entry
 * carries a page size: the receiver cannot tell, so it must refuse
 * rather than misread the list (the torture campaign's postcopy with a
 * hugetlb block, migram-sim's destination creating it).
 */
static void pc_create_huge(SampleCtx *c)
{
	static const MigramStreamBlock huge[] = { { "h", MiB(4), MiB(2) } };

	begin(c);
	advise_with(c, MiB(2) | 0x1000, 0x1000);
	mark(c);
	migram_stream_writer_ram_start(c->w, huge, 1);
	finish(c);
}

static void pc_advise_twice(SampleCtx *c)
{
	begin(c);
	advise(c);
	mark(c);
	advise(c);
}

static void pc_advise_after_list(SampleCtx *c)
{
	begin(c);
	migram_stream_writer_ram_start(c->w, blocks_all, 3);
	mark(c);
	advise(c);
}

static void pc_advise_short(SampleCtx *c)
{
	begin(c);
	mark(c);
	cmd(c, MIGRAM_CMD_POSTCOPY_ADVISE, NULL, 0);
}

/* ADVISE, then a discard or LISTEN before the block list. */
static void pc_discard_before_list(SampleCtx *c)
{
	static const uint64_t r[] = { 0, 0x1000 };

	begin(c);
	advise(c);
	mark(c);
	discard(c, "pc.ram", r, 1);
}

static void pc_listen_before_list(SampleCtx *c)
{
	begin(c);
	advise(c);
	mark(c);
	listen_run(c);
}

/* After the precopy: one discard command with these payload bytes. */
static void pc_discard_bytes(SampleCtx *c, const guint8 *d, size_t len)
{
	pc_precopy(c);
	mark(c);
	cmd(c, MIGRAM_CMD_POSTCOPY_RAM_DISCARD, d, (uint16_t)len);
}

/* ... or this one range of "pc.ram" (or @p name). */
static void pc_discard_range(SampleCtx *c, const char *name, uint64_t start,
			     uint64_t len)
{
	const uint64_t r[] = { start, len };

	pc_precopy(c);
	mark(c);
	discard(c, name, r, 1);
}

static void pc_discard_unknown(SampleCtx *c)
{
	pc_discard_range(c, "nope", 0, 0x1000);
}

static void pc_discard_rom(SampleCtx *c)
{
	pc_discard_range(c, "rom", 0, 0x1000);
}

static void pc_discard_misaligned(SampleCtx *c)
{
	pc_discard_range(c, "pc.ram", 0x800, 0x1000);
}

static void pc_discard_odd_length(SampleCtx *c)
{
	pc_discard_range(c, "pc.ram", 0x1000, 0x1800);
}

static void pc_discard_past_end(SampleCtx *c)
{
	pc_discard_range(c, "pc.ram", 0xff000, 0x2000);
}

static void pc_discard_wraps(SampleCtx *c)
{
	pc_discard_range(c, "pc.ram", 0x1000, UINT64_C(0xfffffffffffff000));
}

static void pc_discard_zero_length(SampleCtx *c)
{
	pc_discard_range(c, "pc.ram", 0x1000, 0);
}

/* version 1, "pc.ram", NUL, one range */
static const guint8 discard_v1[] = { 1, 6, 'p', 'c', '.', 'r',  'a', 'm', 0,
				     0, 0, 0,   0,   0,   0,    0,   0,   0,
				     0, 0, 0,   0,   0,   0x10, 0 };

static void pc_discard_bad_version(SampleCtx *c)
{
	pc_discard_bytes(c, discard_v1, sizeof(discard_v1));
}

/* The name runs into the range: no NUL after its 6 bytes. */
static void pc_discard_no_terminator(SampleCtx *c)
{
	guint8 d[sizeof(discard_v1)];

	memcpy(d, discard_v1, sizeof(d));
	d[0] = 0;
	d[8] = 'x';
	pc_discard_bytes(c, d, sizeof(d));
}

/* 3 + n + 16k + 5 bytes */
static void pc_discard_bad_length(SampleCtx *c)
{
	guint8 d[sizeof(discard_v1) + 5] = { 0 };

	memcpy(d, discard_v1, sizeof(discard_v1));
	d[0] = 0;
	pc_discard_bytes(c, d, sizeof(d));
}

static void pc_discard_short(SampleCtx *c)
{
	pc_discard_bytes(c, (const guint8 *)"\0\0", 2);
}

static void pc_discard_nul_in_name(SampleCtx *c)
{
	guint8 d[sizeof(discard_v1)];

	memcpy(d, discard_v1, sizeof(d));
	d[0] = 0;
	d[4] = 0;
	pc_discard_bytes(c, d, sizeof(d));
}

/* A good range, then a bad one: the first is dropped, nothing else. */
static void pc_discard_second_bad(SampleCtx *c)
{
	static const uint64_t r[] = { 0x3000, 0x1000, 0x4000, 0x100000 };

	pc_precopy(c);
	mark(c);
	discard(c, "pc.ram", r, 2);
}

static void pc_package_too_big(SampleCtx *c)
{
	uint32_t be = GUINT32_TO_BE(UINT32_MAX);

	pc_precopy(c);
	pc_discards(c);
	mark(c);
	cmd(c, MIGRAM_CMD_PACKAGED, &be, 4);
}

static void pc_package_truncated(SampleCtx *c)
{
	uint32_t be = GUINT32_TO_BE(100);

	pc_precopy(c);
	pc_discards(c);
	mark(c);
	cmd(c, MIGRAM_CMD_PACKAGED, &be, 4);
	migram_stream_writer_put_raw(c->w, "\x08\x00\x04\x00\x00", 5);
}

static void pc_package_short_len(SampleCtx *c)
{
	pc_precopy(c);
	pc_discards(c);
	mark(c);
	cmd(c, MIGRAM_CMD_PACKAGED, "\0\0\0", 3);
}

/* A RAM PART section (one page) inside the package. */
static void pc_package_ram(SampleCtx *c)
{
	g_autoptr(GByteArray) pkg = g_byte_array_new();
	guint8 part[5] = { MIGRAM_QEMU_VM_SECTION_PART, 0, 0, 0, RAM_ID };
	uint64_t word = GUINT64_TO_BE(MIGRAM_RAM_FLAG_ZERO);

	pc_precopy(c);
	pc_discards(c);
	mark(c);
	migram_stream_encode_command(pkg, MIGRAM_CMD_POSTCOPY_LISTEN, NULL, 0);
	g_byte_array_append(pkg, part, sizeof(part));
	g_byte_array_append(pkg, (const guint8 *)&word, 8);
	g_byte_array_append(pkg, (const guint8 *)"\x06pc.ram\x00", 8);
	package(c, pkg);
}

static void pc_package_nested(SampleCtx *c)
{
	g_autoptr(GByteArray) inner = g_byte_array_new();
	g_autoptr(GByteArray) pkg = g_byte_array_new();
	uint32_t be;

	pc_precopy(c);
	pc_discards(c);
	mark(c);
	migram_stream_encode_command(inner, MIGRAM_CMD_POSTCOPY_RUN, NULL, 0);
	be = GUINT32_TO_BE(inner->len);
	migram_stream_encode_command(pkg, MIGRAM_CMD_PACKAGED, &be, 4);
	g_byte_array_append(pkg, inner->data, inner->len);
	package(c, pkg);
}

/* The package's last record is EOF: it would end the stream. */
static void pc_package_eof(SampleCtx *c)
{
	g_autoptr(GByteArray) pkg = g_byte_array_new();

	pc_precopy(c);
	pc_discards(c);
	mark(c);
	migram_stream_encode_command(pkg, MIGRAM_CMD_POSTCOPY_LISTEN, NULL, 0);
	g_byte_array_append(pkg, (const guint8 *)"", 1);
	package(c, pkg);
}

static void pc_listen_twice(SampleCtx *c)
{
	pc_precopy(c);
	pc_discards(c);
	listen_run(c);
	mark(c);
	cmd(c, MIGRAM_CMD_POSTCOPY_LISTEN, NULL, 0);
}

static void pc_discard_after_listen(SampleCtx *c)
{
	static const uint64_t r[] = { 0x3000, 0x1000 };

	pc_precopy(c);
	pc_discards(c);
	listen_run(c);
	mark(c);
	discard(c, "pc.ram", r, 1);
}

#define OK 0
#define M_CREATE FUZZ_MODE_CREATE_BLOCKS
#define M_STOP FUZZ_MODE_STOP_AT_DEVICES
#define M_MACHINE FUZZ_MODE_MACHINE_TYPE
#define M_READER FUZZ_MODE_READER_ONLY

static const StreamSample samples[] = {
	/* Valid streams. */
	{ "one-block", 0, one_block, OK, NULL },
	{ "one-block-machine", M_MACHINE, one_block, OK, NULL },
	{ "several-blocks", 0, several_blocks, OK, NULL },
	{ "no-continue", 0, no_continue, OK, NULL },
	{ "parts", 0, parts, OK, NULL },
	{ "zero-pages", 0, zero_pages, OK, NULL },
	{ "vram-grow", 0, vram_grow, OK, NULL },
	{ "vram-shrink", 0, vram_shrink, OK, NULL },
	{ "create-block", M_CREATE, extra_block, OK, NULL },
	{ "stop-at-devices", M_STOP, then_device, OK, NULL },
	{ "stop-at-devices-create", M_STOP | M_CREATE, then_device, OK, NULL },
	{ "no-vmdesc", 0, no_vmdesc, OK, NULL },
	{ "config-subsections", 0, config_subsections, OK, NULL },

	/* Hostile or unsupported streams. */
	{ "machine-mismatch", M_MACHINE, machine_mismatch, MIGRAM_ERROR_INVALID,
	  "machine type received is 'pc-q35-7.2', local is 'pc-i440fx-7.2'" },
	{ "vram-shrink-past", 0, vram_shrink_past, MIGRAM_ERROR_PROTOCOL,
	  "page at offset 0x4000 is outside ramblock 'vram' (used length "
	  "0x4000)" },
	{ "vram-past-used", 0, vram_past_used, MIGRAM_ERROR_PROTOCOL,
	  "page at offset 0x10000 is outside ramblock 'vram' (used length "
	  "0x10000)" },
	{ "vram-too-big", 0, vram_too_big, MIGRAM_ERROR_INVALID,
	  "size mismatch: ramblock 'vram' is 0x80000 in the stream, 0x10000 "
	  "here (max 0x40000)" },
	{ "vram-unaligned", 0, vram_unaligned, MIGRAM_ERROR_INVALID, "vram" },
	{ "pc-size-mismatch", 0, pc_size_mismatch, MIGRAM_ERROR_INVALID,
	  "size mismatch: ramblock 'pc.ram' is 0x80000 in the stream" },
	{ "unknown-block", 0, extra_block, MIGRAM_ERROR_NOT_FOUND,
	  "unknown ramblock 'extra.block' in the block list" },
	{ "create-huge", M_CREATE, create_huge, MIGRAM_ERROR_INVALID,
	  "cannot create block 'huge'" },
	{ "create-big", M_CREATE, create_big, MIGRAM_ERROR_INVALID,
	  "cannot create block 'big' of 0x400000000000 bytes: blocks created "
	  "by this stream would exceed the host's" },
	{ "create-odd", M_CREATE, create_odd, MIGRAM_ERROR_INVALID,
	  "cannot create block 'odd'" },
	{ "device-section", 0, then_device, MIGRAM_ERROR_UNSUPPORTED,
	  "device section 'timer' (id 0): migram loads RAM only" },
	{ "device-before-end", M_STOP, device_before_end,
	  MIGRAM_ERROR_UNSUPPORTED, "device section 'timer'" },
	{ "page-bits-16", 0, page_bits_16, MIGRAM_ERROR_UNSUPPORTED,
	  "target page size 65536: only 4096 is supported" },
	{ "page-bits-9", 0, page_bits_9, MIGRAM_ERROR_PROTOCOL,
	  "target page bits 9 out of 10..16" },
	{ "unknown-subsection", 0, unknown_subsection, MIGRAM_ERROR_PROTOCOL,
	  "unknown configuration subsection 'configuration/unheard-of'" },
	{ "bad-magic", 0, bad_magic, MIGRAM_ERROR_PROTOCOL,
	  "stream byte 0: bad magic 0x5145564e" },
	{ "bad-version", 0, bad_version, MIGRAM_ERROR_PROTOCOL,
	  "stream byte 4: stream version 2" },
	{ "unknown-section-type", 0, unknown_section_type,
	  MIGRAM_ERROR_PROTOCOL, "unknown section type 0x09" },
	{ "xbzrle", 0, xbzrle, MIGRAM_ERROR_UNSUPPORTED,
	  "XBZRLE page record (flags 0x40): not supported yet" },
	{ "multifd-flush", 0, multifd_flush, MIGRAM_ERROR_UNSUPPORTED,
	  "multifd flush" },
	{ "compressed", 0, compressed, MIGRAM_ERROR_UNSUPPORTED,
	  "compressed page" },
	{ "hook", 0, hook, MIGRAM_ERROR_UNSUPPORTED, "RDMA hook" },
	{ "unknown-flags", 0, unknown_flags, MIGRAM_ERROR_PROTOCOL,
	  "unknown RAM record flags 0xc" },
	{ "offset-past-used", 0, offset_past_used, MIGRAM_ERROR_PROTOCOL,
	  "page at offset 0x100000 is outside ramblock 'pc.ram' (used length "
	  "0x100000)" },
	{ "offset-huge", 0, offset_huge, MIGRAM_ERROR_PROTOCOL,
	  "page at offset 0xfffffffffffff000 is outside ramblock 'pc.ram'" },
	{ "continue-first", 0, continue_first, MIGRAM_ERROR_PROTOCOL,
	  "page record with CONTINUE but no block named before" },
	{ "empty-block-name", 0, empty_block_name, MIGRAM_ERROR_PROTOCOL,
	  "empty block name" },
	{ "total-too-small", 0, total_too_small, MIGRAM_ERROR_PROTOCOL,
	  "block 'pc.ram' of 0x100000 bytes does not fit the 0x1000 bytes "
	  "left of the block list total" },
	{ "empty-list", 0, empty_list, MIGRAM_ERROR_PROTOCOL,
	  "empty block list" },
	{ "page-before-list-end", 0, page_before_list_end,
	  MIGRAM_ERROR_PROTOCOL, "page record before the block list" },
	{ "list-in-part", 0, list_in_part, MIGRAM_ERROR_PROTOCOL,
	  "block list outside the START section" },
	{ "second-start", 0, second_start, MIGRAM_ERROR_PROTOCOL,
	  "unexpected second START of section 'ram'" },
	{ "ram-version-3", 0, ram_version_3, MIGRAM_ERROR_PROTOCOL,
	  "ram section version 3" },
	{ "part-unknown-id", 0, part_unknown_id, MIGRAM_ERROR_PROTOCOL,
	  "section id 9 was never started" },
	{ "rom-in-list", 0, rom_in_list, MIGRAM_ERROR_INVALID,
	  "ramblock 'rom' is not migratable" },
	{ "rom-page", 0, rom_page, MIGRAM_ERROR_INVALID,
	  "page for ramblock 'rom', which is not migratable" },
	{ "unknown-page-block", 0, unknown_page_block, MIGRAM_ERROR_NOT_FOUND,
	  "page for unknown ramblock 'nope'" },
	{ "fill-0x55", 0, fill_0x55, MIGRAM_ERROR_PROTOCOL,
	  "zero page record with fill byte 0x55" },
	{ "truncated-page", 0, truncated_page, MIGRAM_ERROR_PROTOCOL,
	  "unexpected end of stream at byte" },
	{ "command", 0, command, MIGRAM_ERROR_UNSUPPORTED,
	  "command 8: not supported" },
	{ "footer-mismatch", 0, footer_mismatch, MIGRAM_ERROR_PROTOCOL,
	  "footer of section 7 inside section 2" },
	{ "data-after-vmdesc", 0, data_after_vmdesc, MIGRAM_ERROR_PROTOCOL,
	  "data after the end of the stream" },
	{ "byte-after-eof", 0, byte_after_eof, MIGRAM_ERROR_PROTOCOL,
	  "byte 0x01 after EOF" },
	{ "vmdesc-too-big", 0, vmdesc_too_big, MIGRAM_ERROR_PROTOCOL,
	  "vmdesc of 4294967295 bytes" },
	{ "config-late", 0, config_late, MIGRAM_ERROR_PROTOCOL,
	  "configuration section not right after the header" },
	{ "machine-too-long", 0, machine_too_long, MIGRAM_ERROR_PROTOCOL,
	  "machine type of 256 bytes" },
	{ "empty", 0, empty, MIGRAM_ERROR_PROTOCOL,
	  "unexpected end of stream at byte 0" },

	/* The reader alone, as a stream tool drives it. */
	{ "reader-one-block", M_READER, one_block, OK, NULL },
	{ "reader-several-blocks", M_READER, several_blocks, OK, NULL },
	{ "reader-devices", M_READER, devices, OK, NULL },
	{ "reader-pages-64k", M_READER, pages_64k, OK, NULL },
	{ "reader-device-id-reuse", M_READER, device_id_reuse,
	  MIGRAM_ERROR_PROTOCOL, "section id 5 is already in use" },
	{ "reader-device-takes-ram-id", M_READER, device_takes_ram_id,
	  MIGRAM_ERROR_PROTOCOL, "section id 2 is already in use" },
	{ "reader-device-footer-mismatch", M_READER, device_footer_mismatch,
	  MIGRAM_ERROR_PROTOCOL, "footer of section 9 inside section 0" },
	{ "reader-postcopy-huge", M_READER, postcopy_huge,
	  MIGRAM_ERROR_UNSUPPORTED,
	  "postcopy block list with huge page blocks: not supported yet" },
	{ "reader-truncated-page", M_READER, truncated_page,
	  MIGRAM_ERROR_PROTOCOL, "unexpected end of stream at byte" },
	{ "reader-xbzrle", M_READER, xbzrle, MIGRAM_ERROR_UNSUPPORTED,
	  "XBZRLE page" },

	/* Postcopy, without a return path (the stream is a memfd). */
	{ "pc-valid", 0, postcopy, OK, NULL },
	{ "pc-create-huge", M_CREATE, pc_create_huge, MIGRAM_ERROR_UNSUPPORTED,
	  "cannot create block 'h' in a postcopy stream with huge pages" },
	{ "pc-never-switched", 0, postcopy_never_switched, OK, NULL },
	{ "pc-pages-missing", 0, pc_pages_missing, MIGRAM_ERROR_PROTOCOL,
	  "postcopy ended with 3 pages never received (first in ramblock "
	  "'pc.ram')" },
	{ "pc-cut-after-listen", 0, pc_cut_after_listen, MIGRAM_ERROR_PROTOCOL,
	  "unexpected end of stream at byte" },
	{ "pc-page-past-end", 0, pc_page_past_end, MIGRAM_ERROR_PROTOCOL,
	  "postcopy page at offset 0x100000 is outside ramblock 'pc.ram'" },
	{ "pc-vram-past-used", 0, pc_vram_past_used, MIGRAM_ERROR_PROTOCOL,
	  "postcopy page at offset 0x20000 is outside ramblock 'vram' "
	  "(postcopy length 0x10000)" },
	{ "pc-open-return-path", 0, pc_open_return_path,
	  MIGRAM_ERROR_UNSUPPORTED,
	  "OPEN_RETURN_PATH: the stream is not on a socket" },
	{ "pc-ping-in-package", 0, pc_ping_in_package, MIGRAM_ERROR_PROTOCOL,
	  "PING without a return path" },
	{ "pc-discard-before-advise", 0, pc_discard_before_advise,
	  MIGRAM_ERROR_PROTOCOL, "postcopy command 6 without POSTCOPY_ADVISE" },
	{ "pc-listen-without-advise", 0, pc_listen_without_advise,
	  MIGRAM_ERROR_PROTOCOL, "postcopy command 4 without POSTCOPY_ADVISE" },
	{ "pc-run-without-listen", 0, pc_run_without_listen,
	  MIGRAM_ERROR_PROTOCOL, "POSTCOPY_RUN before POSTCOPY_LISTEN" },
	{ "pc-resume-outside-recovery", 0, pc_resume_outside_recovery,
	  MIGRAM_ERROR_PROTOCOL, "POSTCOPY_RESUME outside a recovery" },
	{ "pc-packaged-without-advise", 0, pc_packaged_without_advise,
	  MIGRAM_ERROR_PROTOCOL, "postcopy command 7 without POSTCOPY_ADVISE" },
	{ "pc-recv-bitmap-unknown", 0, pc_recv_bitmap_unknown,
	  MIGRAM_ERROR_PROTOCOL, "RECV_BITMAP for unknown ramblock 'nope'" },
	{ "pc-recv-bitmap-no-rp", 0, pc_recv_bitmap_no_rp,
	  MIGRAM_ERROR_PROTOCOL,
	  "RECV_BITMAP for ramblock 'pc.ram' without a return path" },
	{ "pc-advise-page-size", 0, pc_advise_page_size, MIGRAM_ERROR_INVALID,
	  "POSTCOPY_ADVISE: target page size 65536 (this host uses 4096)" },
	{ "pc-advise-twice", 0, pc_advise_twice, MIGRAM_ERROR_PROTOCOL,
	  "POSTCOPY_ADVISE twice" },
	{ "pc-advise-after-list", 0, pc_advise_after_list,
	  MIGRAM_ERROR_PROTOCOL, "POSTCOPY_ADVISE after the block list" },
	{ "pc-advise-short", 0, pc_advise_short, MIGRAM_ERROR_UNSUPPORTED,
	  "POSTCOPY_ADVISE of 0 bytes: only postcopy-ram (16 bytes)" },
	{ "pc-discard-before-list", 0, pc_discard_before_list,
	  MIGRAM_ERROR_PROTOCOL, "POSTCOPY_RAM_DISCARD before the block list" },
	{ "pc-listen-before-list", 0, pc_listen_before_list,
	  MIGRAM_ERROR_PROTOCOL, "POSTCOPY_LISTEN before the block list" },
	{ "pc-discard-unknown", 0, pc_discard_unknown, MIGRAM_ERROR_NOT_FOUND,
	  "POSTCOPY_RAM_DISCARD for unknown ramblock 'nope'" },
	{ "pc-discard-rom", 0, pc_discard_rom, MIGRAM_ERROR_NOT_FOUND,
	  "POSTCOPY_RAM_DISCARD for unknown ramblock 'rom'" },
	{ "pc-discard-misaligned", 0, pc_discard_misaligned,
	  MIGRAM_ERROR_PROTOCOL,
	  "POSTCOPY_RAM_DISCARD of ramblock 'pc.ram': range 0x800+0x1000 is "
	  "misaligned or outside its 0x100000 bytes" },
	{ "pc-discard-odd-length", 0, pc_discard_odd_length,
	  MIGRAM_ERROR_PROTOCOL, "range 0x1000+0x1800 is misaligned" },
	{ "pc-discard-past-end", 0, pc_discard_past_end, MIGRAM_ERROR_PROTOCOL,
	  "range 0xff000+0x2000 is misaligned or outside" },
	{ "pc-discard-wraps", 0, pc_discard_wraps, MIGRAM_ERROR_PROTOCOL,
	  "range 0x1000+0xfffffffffffff000 is misaligned or outside" },
	{ "pc-discard-zero-length", 0, pc_discard_zero_length,
	  MIGRAM_ERROR_PROTOCOL, "range 0x1000+0 is misaligned or outside" },
	{ "pc-discard-bad-version", 0, pc_discard_bad_version,
	  MIGRAM_ERROR_PROTOCOL, "POSTCOPY_RAM_DISCARD: unknown version" },
	{ "pc-discard-no-terminator", 0, pc_discard_no_terminator,
	  MIGRAM_ERROR_PROTOCOL,
	  "POSTCOPY_RAM_DISCARD of 25 bytes: bad name or range list" },
	{ "pc-discard-bad-length", 0, pc_discard_bad_length,
	  MIGRAM_ERROR_PROTOCOL,
	  "POSTCOPY_RAM_DISCARD of 30 bytes: bad name or range list" },
	{ "pc-discard-short", 0, pc_discard_short, MIGRAM_ERROR_PROTOCOL,
	  "POSTCOPY_RAM_DISCARD: too short" },
	{ "pc-discard-nul-in-name", 0, pc_discard_nul_in_name,
	  MIGRAM_ERROR_PROTOCOL,
	  "POSTCOPY_RAM_DISCARD: NUL in the block name" },
	{ "pc-discard-second-bad", 0, pc_discard_second_bad,
	  MIGRAM_ERROR_PROTOCOL, "range 0x4000+0x100000 is misaligned" },
	{ "pc-discard-after-listen", 0, pc_discard_after_listen,
	  MIGRAM_ERROR_PROTOCOL,
	  "POSTCOPY_RAM_DISCARD outside the advise/discard phase" },
	{ "pc-listen-twice", 0, pc_listen_twice, MIGRAM_ERROR_PROTOCOL,
	  "POSTCOPY_LISTEN twice" },
	{ "pc-package-too-big", 0, pc_package_too_big, MIGRAM_ERROR_PROTOCOL,
	  "package of 4294967295 bytes (at most 269484032)" },
	{ "pc-package-truncated", 0, pc_package_truncated,
	  MIGRAM_ERROR_PROTOCOL,
	  "PACKAGED of 100 bytes: unexpected end of stream at byte" },
	{ "pc-package-short-len", 0, pc_package_short_len,
	  MIGRAM_ERROR_PROTOCOL, "PACKAGED of 3 bytes (expected 4)" },
	{ "pc-package-ram", 0, pc_package_ram, MIGRAM_ERROR_PROTOCOL,
	  "package holds a record of type" },
	{ "pc-package-nested", 0, pc_package_nested, MIGRAM_ERROR_PROTOCOL,
	  "package inside a package" },
	{ "pc-package-eof", 0, pc_package_eof, MIGRAM_ERROR_PROTOCOL,
	  "package holds a record of type" },
};

const StreamSample *stream_samples(size_t *n)
{
	*n = G_N_ELEMENTS(samples);
	return samples;
}

GBytes *stream_sample_bytes(const StreamSample *s)
{
	return stream_sample_bytes_at(s, NULL);
}

GBytes *stream_sample_bytes_at(const StreamSample *s, size_t *mark)
{
	guint8 *pages = g_malloc(3 * MIGRAM_TARGET_PAGE_SIZE);
	SampleCtx c = { 0 };
	GByteArray *out = g_byte_array_new();
	guint8 buf[65536];
	ssize_t n;
	int fd = memfd_create("sample", MFD_CLOEXEC);

	g_assert(fd >= 0);
	for (int i = 0; i < 3; i++) {
		memset(pages + i * MIGRAM_TARGET_PAGE_SIZE, 0x11 * (i + 1),
		       MIGRAM_TARGET_PAGE_SIZE);
		c.page[i] = pages + i * MIGRAM_TARGET_PAGE_SIZE;
	}
	c.ch = migram_channel_new(fd, false);
	c.w = migram_stream_writer_new(c.ch);
	s->build(&c);
	g_assert(migram_channel_flush(c.ch, NULL));
	migram_stream_writer_free(c.w);
	migram_channel_free(c.ch);
	g_free(pages);

	if (mark)
		*mark = c.mark ? c.mark + 1 : 0;
	g_byte_array_append(out, &s->mode, 1);
	g_assert(lseek(fd, 0, SEEK_SET) == 0);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		g_byte_array_append(out, buf, (guint)n);
	g_assert(n == 0);
	close(fd);
	return g_byte_array_free_to_bytes(out);
}

GBytes *stream_sample_named(const char *name)
{
	const StreamSample *s;
	size_t n;

	s = stream_samples(&n);
	for (size_t i = 0; i < n; i++)
		if (strcmp(s[i].name, name) == 0)
			return stream_sample_bytes(&s[i]);
	g_error("no sample '%s'", name);
}
