/* SPDX-License-Identifier: MIT */
/*
 * Loading a migration stream into destination RAM blocks.
 *
 * The reader (stream-reader.c) turns bytes into records and checks their
 * syntax; this file checks what they mean against the destination:
 *
 *  - block list entries must name migratable blocks whose length matches
 *    (a resizeable block is resized; with create_blocks a missing block is
 *    created); every page record must come after the list;
 *  - a page's block must exist, and [offset, offset + page) must lie inside
 *    the block's used_length before a single byte is written; the payload
 *    is then read straight into the block's memory, so a truncated stream
 *    can only leave that one page partly written;
 *  - a zero page must have fill byte 0 (as current QEMU insists) and is
 *    written only where the page is not already zero;
 *  - with create_blocks, the blocks one load creates may not add up to
 *    more than the host's physical memory.  Their memory is mapped lazily,
 *    but their migration bitmaps are not: without the bound, a 20-byte
 *    block list entry of 2^46 bytes made the receiver allocate (and half
 *    fill) 4 GiB of bitmaps.
 *
 * Each record is handled inside one RCU read-side section.  The block found
 * for one record is reused for the next while the list's version is
 * unchanged: a removal bumps the version before it waits for readers, so a
 * block seen at an unchanged version cannot be freed during the section
 * that checked the version.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "migram/receiver.h"
#include "migram/stream.h"
#include "buffer.h"
#include "stream-internal.h"
#include "device-sections.h"
#include "receiver-internal.h"

MIGRAM_EXPORT MigramReceiver *
migram_receiver_new(MigramRamList *list, const MigramReceiverConfig *config)
{
	MigramReceiver *r = g_new0(MigramReceiver, 1);

	r->list = list;
	if (config)
		r->cfg = *config;
	r->machine_type = g_strdup(r->cfg.machine_type);
	r->cfg.machine_type = r->machine_type;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	return r;
}

MIGRAM_EXPORT void migram_receiver_free(MigramReceiver *r)
{
	if (!r)
		return;
	g_free(r->machine_type);
	if (r->created)
		g_hash_table_destroy(r->created);
	migram_postcopy_dst_free(r->pc);
	g_clear_error(&r->preempt_error);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	g_free(r);
}

MIGRAM_EXPORT void migram_receiver_get_stats(const MigramReceiver *r,
					     MigramReceiverStats *stats)
{
	*stats = r->stats;
}

/* Inside a read-side section. */
static MigramRamBlock *resolve(MigramReceiver *r, const char *name)
{
	uint64_t v = migram_ram_list_version(r->list);

	if (r->last && v == r->last_version && strcmp(name, r->last_name) == 0)
		return r->last;
	r->last = migram_ram_list_find(r->list, name);
	r->last_version = v;
	r->last_fresh = r->created && g_hash_table_contains(r->created, name);
	g_strlcpy(r->last_name, name, sizeof(r->last_name));
	return r->last;
}

/* The host's physical memory: the most one load may create. */
static uint64_t create_limit(void)
{
	long pages = sysconf(_SC_PHYS_PAGES);
	long page = sysconf(_SC_PAGESIZE);

	if (pages <= 0 || page <= 0)
		return UINT64_C(1) << 30;
	return (uint64_t)pages * (uint64_t)page;
}

/*
 * The load is complete: the blocks it created may use transparent huge
 * pages from now on, for the guest's sake (khugepaged collapses them in
 * the background).  They were placed with 4 KiB pages: on a host that
 * hands out huge pages slowly (docs/performance.md measured a VM with
 * free page reporting, where a fresh 2 MiB page costs more than its 512
 * small ones), placement is the migration's critical path.  Advice only.
 */
static void advise_created(MigramReceiver *r)
{
	GHashTableIter it;
	gpointer name;

	if (!r->created)
		return;
	migram_rcu_read_lock();
	g_hash_table_iter_init(&it, r->created);
	while (g_hash_table_iter_next(&it, &name, NULL)) {
		MigramRamBlock *b = migram_ram_list_find(r->list, name);

		if (b && !r->pc)
			(void)madvise(migram_ram_block_host(b),
				      migram_ram_block_used_length(b),
				      MADV_HUGEPAGE);
	}
	migram_rcu_read_unlock();
}

static bool create_block(MigramReceiver *r, const MigramStreamRecord *rec,
			 GError **error)
{
	/* 4 KiB pages while loading, huge pages after (advise_created) */
	MigramRamBlockConfig c = { .idstr = rec->name,
				   .backend = MIGRAM_RAM_BACKEND_ANON,
				   .used_length = rec->length,
				   .flags = MIGRAM_RAM_NO_THP };
	uint64_t limit = create_limit();
	GError *err = NULL;

	/*
	 * After an ADVISE with huge pages, an entry carries a page size only
	 * if the source's block has huge pages, which only an existing block
	 * here can tell: a block created from the entry would leave the rest
	 * of the list misread (found by the torture campaign).
	 */
	if (r->advise_huge)
		return fail(
			error, MIGRAM_ERROR_UNSUPPORTED, rec,
			"cannot create block '%s' in a postcopy stream with "
			"huge pages: whether its entry carries a page size "
			"depends on a block this side does not have",
			rec->name);
	if (rec->length > limit || r->created_bytes > limit - rec->length)
		return fail(error, MIGRAM_ERROR_INVALID, rec,
			    "cannot create block '%s' of %#" G_GINT64_MODIFIER
			    "x bytes: blocks created by this stream would "
			    "exceed the host's %#" G_GINT64_MODIFIER
			    "x bytes of memory",
			    rec->name, rec->length, limit);
	if (migram_ram_list_add(r->list, &c, &err)) {
		r->created_bytes += rec->length;
		if (!r->created)
			r->created = g_hash_table_new_full(g_str_hash,
							   g_str_equal, g_free,
							   NULL);
		g_hash_table_add(r->created, g_strdup(rec->name));
		return true;
	}
	fail(error, err->code, rec, "cannot create block '%s': %s", rec->name,
	     err->message);
	g_error_free(err);
	return false;
}

static bool handle_block(MigramReceiver *r, const MigramStreamRecord *rec,
			 GError **error)
{
	MigramRamBlock *b;
	uint64_t used, max, page;
	uint32_t flags;

	migram_rcu_read_lock();
	b = migram_ram_list_find(r->list, rec->name);
	if (b) {
		used = migram_ram_block_used_length(b);
		max = migram_ram_block_max_length(b);
		page = migram_ram_block_page_size(b);
		flags = migram_ram_block_flags(b);
	}
	migram_rcu_read_unlock();

	if (!b) {
		if (r->cfg.create_blocks)
			return create_block(r, rec, error);
		return fail(error, MIGRAM_ERROR_NOT_FOUND, rec,
			    "unknown ramblock '%s' in the block list",
			    rec->name);
	}
	if (!(flags & MIGRAM_RAM_MIGRATABLE))
		return fail(error, MIGRAM_ERROR_INVALID, rec,
			    "ramblock '%s' is not migratable", rec->name);
	/* After ADVISE, a huge-page block's entry carries its page size. */
	if (r->pc && migram_postcopy_dst_state(r->pc) >= DST_ADVISE &&
	    page != MIGRAM_TARGET_PAGE_SIZE) {
		uint64_t ps;

		if (!migram_stream_reader_read_block_page_size(r->reader, &ps,
							       error))
			return false;
		if (ps != page)
			return fail(
				error, MIGRAM_ERROR_INVALID, rec,
				"ramblock '%s': page size %#" G_GINT64_MODIFIER
				"x in the stream, %#" G_GINT64_MODIFIER
				"x here",
				rec->name, ps, page);
	}
	if (rec->page_size && rec->page_size != page)
		return fail(error, MIGRAM_ERROR_INVALID, rec,
			    "ramblock '%s': page size %#" G_GINT64_MODIFIER
			    "x in the stream, %#" G_GINT64_MODIFIER "x here",
			    rec->name, rec->page_size, page);
	if (rec->length != used) {
		GError *err = NULL;

		if (!(flags & MIGRAM_RAM_RESIZEABLE) || rec->length > max)
			return fail(
				error, MIGRAM_ERROR_INVALID, rec,
				"size mismatch: ramblock '%s' is %#" G_GINT64_MODIFIER
				"x in the stream, %#" G_GINT64_MODIFIER
				"x here (max %#" G_GINT64_MODIFIER "x)",
				rec->name, rec->length, used, max);
		if (!migram_ram_list_resize(r->list, rec->name, rec->length,
					    &err)) {
			fail(error, err->code, rec, "%s", err->message);
			g_error_free(err);
			return false;
		}
	}
	migram_rcu_read_lock();
	b = migram_ram_list_find(r->list, rec->name);
	if (b)
		migram_ram_block_set_postcopy_length(b, rec->length);
	migram_rcu_read_unlock();
	return true;
}

/* After the block list: make sure every migratable block has bitmaps. */
static bool finish_block_list(MigramReceiver *r, const MigramStreamRecord *rec,
			      GError **error)
{
	GError *err = NULL;
	bool missing = false;

	migram_rcu_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next_migratable(r->list, NULL);
	     b; b = migram_ram_list_next_migratable(r->list, b))
		missing |= migram_ram_block_receivedmap(b) == NULL;
	migram_rcu_read_unlock();
	if (missing &&
	    !migram_ram_list_bitmaps_init(
		    r->list, MIGRAM_CLEAR_BMAP_SHIFT_DEFAULT, &err)) {
		/* Say where in the stream, as every other failure does. */
		fail(error, err->code, rec,
		     "cannot set up the migration bitmaps after the block "
		     "list: %s",
		     err->message);
		g_error_free(err);
		return false;
	}
	r->list_done = true;
	return true;
}

/*
 * Find the page's block and check the page lies inside it.  Inside a
 * read-side section; returns the page's host address or NULL.
 */
static guint8 *target_page(MigramReceiver *r, const MigramStreamRecord *rec,
			   MigramRamBlock **block, GError **error)
{
	MigramRamBlock *b;
	uint64_t used;

	if (!r->list_done) {
		fail(error, MIGRAM_ERROR_PROTOCOL, rec,
		     "page record before the block list");
		return NULL;
	}
	b = resolve(r, rec->name);
	if (!b) {
		fail(error, MIGRAM_ERROR_NOT_FOUND, rec,
		     "page for unknown ramblock '%s'", rec->name);
		return NULL;
	}
	if (!migram_ram_block_receivedmap(b)) {
		fail(error, MIGRAM_ERROR_INVALID, rec,
		     "page for ramblock '%s', which is not migratable",
		     rec->name);
		return NULL;
	}
	used = migram_ram_block_used_length(b);
	if (rec->offset >= used || used - rec->offset < r->page_size) {
		fail(error, MIGRAM_ERROR_PROTOCOL, rec,
		     "page at offset %#" G_GINT64_MODIFIER
		     "x is outside ramblock '%s' (used length %#" G_GINT64_MODIFIER
		     "x)",
		     rec->offset, rec->name, used);
		return NULL;
	}
	*block = b;
	return (guint8 *)migram_ram_block_host(b) + rec->offset;
}

static void mark_received(MigramReceiver *r, MigramRamBlock *b, uint64_t offset)
{
	migram_bitmap_set_atomic(migram_ram_block_receivedmap(b),
				 (size_t)(offset >> MIGRAM_TARGET_PAGE_BITS),
				 (size_t)(r->page_size >>
					  MIGRAM_TARGET_PAGE_BITS));
}

bool migram_receiver_postcopy_placing(const MigramReceiver *r)
{
	return r->pc && migram_postcopy_dst_state(r->pc) >= DST_LISTENING;
}

/* Postcopy: read into the placer, then one atomic placement. */
static bool postcopy_page(MigramReceiver *r, const MigramStreamRecord *rec,
			  bool zero, GError **error)
{
	if (zero) {
		if (rec->fill != 0)
			return fail(error, MIGRAM_ERROR_PROTOCOL, rec,
				    "zero page record with fill byte 0x%02x",
				    rec->fill);
	} else {
		void *buf = migram_postcopy_placer_buffer(r->pc, &r->placer,
							  rec->name,
							  rec->offset);
		if (!buf)
			return fail(error, MIGRAM_ERROR_NO_MEMORY, rec,
				    "no memory for the postcopy page buffer");
		if (!migram_stream_reader_read_page(r->reader, buf, error))
			return false;
	}
	if (!migram_postcopy_place(r->pc, &r->placer, rec->name, rec->offset,
				   zero, rec->stream_offset, error))
		return false;
	if (zero)
		r->stats.zero_pages++;
	else
		r->stats.normal_pages++;
	return true;
}

static bool place_page(MigramReceiver *r, const MigramStreamRecord *rec,
		       GError **error)
{
	MigramRamBlock *b = NULL;
	guint8 *dst;
	bool ok = false;

	if (migram_receiver_postcopy_placing(r))
		return postcopy_page(r, rec, false, error);
	migram_rcu_read_lock();
	dst = target_page(r, rec, &b, error);
	if (dst && migram_stream_reader_read_page(r->reader, dst, error)) {
		mark_received(r, b, rec->offset);
		r->stats.normal_pages++;
		ok = true;
	}
	migram_rcu_read_unlock();
	return ok;
}

static bool place_zero(MigramReceiver *r, const MigramStreamRecord *rec,
		       GError **error)
{
	MigramRamBlock *b = NULL;
	guint8 *dst;

	if (migram_receiver_postcopy_placing(r))
		return postcopy_page(r, rec, true, error);
	if (rec->fill != 0)
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec,
			    "zero page record with fill byte 0x%02x",
			    rec->fill);
	migram_rcu_read_lock();
	dst = target_page(r, rec, &b, error);
	if (dst) {
		/* A page of a block this load created that no record placed
		 * yet is still the zero page the kernel gave it. */
		bool pristine = r->last_fresh &&
				!migram_bitmap_test_bit_atomic(
					migram_ram_block_receivedmap(b),
					(size_t)(rec->offset >>
						 MIGRAM_TARGET_PAGE_BITS));

		if (!pristine && !migram_buffer_is_zero(dst, r->page_size)) {
			memset(dst, 0, r->page_size);
			r->stats.zero_pages_written++;
		}
		mark_received(r, b, rec->offset);
		r->stats.zero_pages++;
	}
	migram_rcu_read_unlock();
	return dst != NULL;
}

/* A FULL section in migram's device-blob form, to the embedder. */
static bool load_device(MigramReceiver *r, const MigramStreamRecord *rec,
			GError **error)
{
	g_autoptr(GByteArray) blob = g_byte_array_new();
	GError *err = NULL;

	if (r->cfg.load_section) /* named, versioned: the embedder judges */
		return migram_device_section_load(r->reader, rec,
						  r->cfg.load_section,
						  r->cfg.opaque, error);
	if (rec->version_id != MIGRAM_DEVICE_BLOB_VERSION)
		return fail(error, MIGRAM_ERROR_UNSUPPORTED, rec,
			    "device section '%s' version %u: only migram "
			    "device blobs (version %u) can be loaded",
			    rec->name, rec->version_id,
			    MIGRAM_DEVICE_BLOB_VERSION);
	if (!migram_stream_reader_read_device_blob(
		    r->reader, MIGRAM_DEVICE_BLOB_MAX, blob, error))
		return false;
	if (r->cfg.load_device(r->cfg.opaque, rec->name, blob->data, blob->len,
			       &err))
		return true;
	fail(error, err ? err->code : MIGRAM_ERROR_INVALID, rec,
	     "device section '%s' (%u bytes) refused: %s", rec->name, blob->len,
	     err ? err->message : "no reason given");
	g_clear_error(&err);
	return false;
}

/* A section header; false with *done when loading should stop. */
static bool handle_section(MigramReceiver *r, const MigramStreamRecord *rec,
			   bool *done, GError **error)
{
	if (rec->is_ram) {
		r->in_end = rec->type == MIGRAM_STREAM_REC_SECTION_END;
		return true;
	}
	if ((r->cfg.load_device || r->cfg.load_section) &&
	    rec->type == MIGRAM_STREAM_REC_SECTION_FULL)
		return load_device(r, rec, error);
	if (r->cfg.stop_at_devices && r->ram_done) {
		r->stats.stopped_at_device = true;
		g_strlcpy(r->stats.device,
			  rec->name[0] ? rec->name : "(continued section)",
			  sizeof(r->stats.device));
		*done = true;
		return true;
	}
	return fail(error, MIGRAM_ERROR_UNSUPPORTED, rec,
		    "device section '%s' (id %u): migram loads RAM only",
		    rec->name, rec->section_id);
}

bool migram_receiver_handle(MigramReceiver *r, const MigramStreamRecord *rec,
			    bool *done, GError **error)
{
	if (r->in_package && rec->type != MIGRAM_STREAM_REC_COMMAND &&
	    rec->type != MIGRAM_STREAM_REC_SECTION_FULL)
		return fail(error, MIGRAM_ERROR_PROTOCOL, rec,
			    "package holds a record of type %d (only "
			    "commands and device sections belong there)",
			    (int)rec->type);
	switch (rec->type) {
	case MIGRAM_STREAM_REC_CONFIGURATION:
		if (r->cfg.machine_type &&
		    strcmp(rec->name, r->cfg.machine_type) != 0)
			return fail(error, MIGRAM_ERROR_INVALID, rec,
				    "machine type received is '%s', local is "
				    "'%s'",
				    rec->name, r->cfg.machine_type);
		return true;
	case MIGRAM_STREAM_REC_SECTION_START:
	case MIGRAM_STREAM_REC_SECTION_PART:
	case MIGRAM_STREAM_REC_SECTION_END:
	case MIGRAM_STREAM_REC_SECTION_FULL:
		return handle_section(r, rec, done, error);
	case MIGRAM_STREAM_REC_BLOCK:
		return handle_block(r, rec, error);
	case MIGRAM_STREAM_REC_PAGE:
		return place_page(r, rec, error);
	case MIGRAM_STREAM_REC_ZERO_PAGE:
		return place_zero(r, rec, error);
	case MIGRAM_STREAM_REC_SECTION_DONE:
		r->stats.sections++;
		if (!r->list_done && !finish_block_list(r, rec, error))
			return false;
		if (!migram_receiver_multifd_eos(r, rec, error)) /* multifd */
			return false;
		r->ram_done |= r->in_end;
		return true;
	case MIGRAM_STREAM_REC_COMMAND:
		return migram_receiver_command(r, rec, error);
	case MIGRAM_STREAM_REC_EOF:
		if (migram_receiver_postcopy_placing(r)) {
			*done = true;
			return migram_receiver_postcopy_finish(r, rec, error);
		}
		return true;
	case MIGRAM_STREAM_REC_VMDESC:
		/*
		 * The vmdesc is the last thing a stream holds.  A file or pipe
		 * is read to its end, so trailing bytes are an error; a socket
		 * stops here, since its peer may keep the connection open for
		 * a reply and waiting for the close would hang.
		 */
		*done = r->on_socket;
		return true;
	case MIGRAM_STREAM_REC_END:
		*done = true;
		return true;
	}
	return fail(error, MIGRAM_ERROR_PROTOCOL, rec, "unexpected record %d",
		    (int)rec->type);
}

MIGRAM_EXPORT bool migram_receiver_load(MigramReceiver *r, MigramChannel *ch,
					GError **error)
{
	MigramStreamRecord rec;
	bool done = false, ok = true;
	struct stat st;

	memset(&r->stats, 0, sizeof(r->stats));
	r->on_socket = fstat(migram_channel_fd(ch), &st) == 0 &&
		       S_ISSOCK(st.st_mode);
	r->list_done = r->in_end = r->ram_done = false;
	r->created_bytes = 0;
	/* blocks an earlier load created hold its pages now */
	if (r->created)
		g_hash_table_remove_all(r->created);
	r->last = NULL;
	r->recovering = r->in_package = false;
	g_clear_error(&r->preempt_error);
	pthread_mutex_lock(&r->lock);
	migram_postcopy_dst_free(r->pc);
	r->pc = NULL;
	r->ch = ch;
	r->cancelled = false;
	pthread_mutex_unlock(&r->lock);
	if (r->cfg.io_timeout_ms && r->on_socket)
		migram_channel_set_io_timeout(ch, r->cfg.io_timeout_ms);
	migram_postcopy_placer_init(&r->placer, false);
	r->reader = migram_stream_reader_new(ch);
	r->page_size = migram_stream_reader_page_size(r->reader);
	while (!done) {
		GError *err = NULL;

		ok = migram_stream_reader_next(r->reader, &rec, &err);
		r->page_size = migram_stream_reader_page_size(r->reader);
		if (ok && r->page_size != MIGRAM_TARGET_PAGE_SIZE)
			ok = fail(&err, MIGRAM_ERROR_UNSUPPORTED, &rec,
				  "target page size %" G_GUINT64_FORMAT
				  ": only %u is supported",
				  r->page_size, MIGRAM_TARGET_PAGE_SIZE);
		if (ok)
			ok = migram_receiver_handle(r, &rec, &done, &err);
		if (ok)
			continue;
		/* Postcopy: a broken connection pauses until recovery. */
		if (migram_receiver_pause(r, &err))
			continue;
		if (r->preempt_error) {
			g_clear_error(&err);
			err = g_steal_pointer(&r->preempt_error);
		}
		g_propagate_error(error, err);
		break;
	}
	migram_receiver_multifd_stop(r); /* multifd */
	r->stats.bytes = migram_channel_read_offset(
		migram_stream_reader_channel(r->reader));
	migram_receiver_load_end(r, ok);
	if (ok)
		advise_created(r);
	migram_postcopy_placer_clear(&r->placer);
	migram_stream_reader_free(r->reader);
	r->reader = NULL;
	r->last = NULL;
	return ok;
}
