/* SPDX-License-Identifier: MIT */
/*
 * The sender's page path: dirty-log sync, page search, the postponed chunk
 * clear and sending one page.
 *
 * Invariant (no write is lost).  For every block and target page p, at any
 * moment one of these holds: p's bit is set in bmap (it will be sent), or
 * the dirty log still holds a mark for p (a later sync will set bmap), or p
 * was sent after the last write to it.  The steps keep it:
 *
 *  - sync ORs the log's marks into `synced` and then into bmap, and leaves
 *    the log untouched (manual protect), so no mark disappears;
 *  - it marks every chunk "clear owed" (clear_bmap) instead of re-arming;
 *  - before the first page of an owed chunk is read, the chunk's log is
 *    cleared with the mask `synced` (only pages a sync already put into
 *    bmap); a page written after its collection but before the clear is
 *    read after the clear, so the write is in what is sent; a page first
 *    written after the sync is not in the mask and keeps its mark;
 *  - a page's bmap bit is cleared just before its contents are read: a
 *    later write marks the log again.
 *
 * In the last stage (guest paused) no clear is made: nothing writes any
 * more, and re-arming would be wasted work.
 */
#include <string.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "buffer.h"
#include "sender-internal.h"
#include "multifd.h"

#define SECTION_MAX_US ((gint64)50 * 1000) /* QEMU's MAX_WAIT for one pass */
#define CHECK_EVERY 64 /* pages between cancel/rate checks */

bool migram_sender_check_unchanged(MigramMigration *m, GError **error)
{
	if (!g_atomic_int_get(&m->changed))
		return true;
	/* (none after a postcopy switch: the list is held from before the
	 * package leaves, postcopy-src-switch.c) */
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
		    "ramblock '%s' changed during migration", m->changed_block);
	return false;
}

/* Cancel, list changes, time limit.  Any thread may set the flags. */
bool migram_sender_check(MigramMigration *m, GError **error)
{
	if (g_atomic_int_get(&m->cancelled)) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_CANCELLED,
			    "migration cancelled");
		return false;
	}
	if (!migram_sender_check_unchanged(m, error))
		return false;
	return migram_sender_hooks_check(m, error);
}

/* Inside a read-side section: are our block pointers still valid? */
static bool list_unchanged(MigramMigration *m, GError **error)
{
	if (migram_ram_list_version(m->list) == m->version)
		return true;
	g_atomic_int_set(&m->changed, 1);
	return migram_sender_check(m, error);
}

static bool sync_block(MigramMigration *m, SendBlock *sb, GError **error)
{
	uint64_t newly = 0, fresh;

	gint64 t0 = migram_sender_now(m);

	if (!m->source.ops->sync(m->source.opaque, sb->block, sb->synced,
				 &newly, error))
		return false;
	if (!m->last_stage)
		m->st.log_sync_us += (uint64_t)(migram_sender_now(m) - t0);
	fresh = migram_bitmap_or_collect(sb->bmap, sb->synced, 0,
					 (size_t)sb->pages);
	m->dirty_pages += fresh;
	m->dirtied_in_period += fresh;
	if (m->last_stage)
		return true;
	if (m->cfg.clear_at_sync) {
		m->st.log_clear_calls++;
		m->st.log_clear_pages += sb->pages;
		t0 = migram_sender_now(m);
		if (!m->source.ops->clear(m->source.opaque, sb->block, 0,
					  sb->pages, sb->synced, error))
			return false;
		m->st.log_clear_us += (uint64_t)(migram_sender_now(m) - t0);
		migram_bitmap_clear(sb->synced, 0, (size_t)sb->pages);
	} else if (sb->pages) {
		migram_bitmap_set(sb->clear_bmap, 0,
				  (size_t)(((sb->pages - 1) >> m->shift) + 1));
	}
	return true;
}

bool migram_sender_sync(MigramMigration *m, GError **error)
{
	bool ok = true;

	migram_rcu_read_lock();
	ok = list_unchanged(m, error);
	for (guint i = 0; ok && i < m->blocks->len; i++)
		ok = sync_block(m, migram_sender_block(m, i), error);
	migram_rcu_read_unlock();
	m->st.dirty_sync_count++;
	return ok;
}

/*
 * The next dirty page at or after the search position, round robin over
 * the blocks; false when a whole pass found nothing.
 */
bool migram_sender_find_dirty(MigramMigration *m, guint *bi, uint64_t *page)
{
	guint n = m->blocks->len;

	for (guint k = 0; k <= n; k++) {
		guint i = (m->cur + k) % n;
		SendBlock *sb = migram_sender_block(m, i);
		uint64_t from = k == 0 ? m->cur_page : 0;
		uint64_t to = k == n ? MIN(m->cur_page, sb->pages) : sb->pages;
		size_t p;

		if (from >= to)
			continue;
		p = migram_bitmap_find_next_set(sb->bmap, (size_t)to,
						(size_t)from);
		if (p < to) {
			*bi = i;
			*page = p;
			return true;
		}
	}
	return false;
}

/* Clear the log of p's chunk if a clear is owed (before reading p). */
static bool clear_owed_chunk(MigramMigration *m, SendBlock *sb, uint64_t p,
			     GError **error)
{
	uint64_t chunk = p >> m->shift, first, n;
	gint64 t0;

	if (m->last_stage || m->cfg.clear_at_sync ||
	    !migram_bitmap_test_and_clear_bit(sb->clear_bmap, (size_t)chunk))
		return true;
	first = chunk << m->shift;
	n = MIN((uint64_t)1 << m->shift, sb->pages - first);
	m->st.log_clear_calls++;
	m->st.log_clear_pages += n;
	t0 = migram_sender_now(m);
	if (!m->source.ops->clear(m->source.opaque, sb->block, first, n,
				  sb->synced, error))
		return false;
	m->st.log_clear_us += (uint64_t)(migram_sender_now(m) - t0);
	migram_bitmap_clear(sb->synced, (size_t)first, (size_t)n);
	return true;
}

/* Model mode answers without reading the page (sender-env.h). */
bool migram_sender_page_is_zero(MigramMigration *m, SendBlock *sb, uint64_t p)
{
	if (m->env.page_is_zero)
		return m->env.page_is_zero(m->env.opaque, sb->block, p);
	return migram_buffer_is_zero(sb->host + p * MIGRAM_TARGET_PAGE_SIZE,
				     MIGRAM_TARGET_PAGE_SIZE);
}

static bool send_page(MigramMigration *m, SendBlock *sb, uint64_t p,
		      GError **error)
{
	const guint8 *data = sb->host + p * MIGRAM_TARGET_PAGE_SIZE;
	uint64_t off = p * MIGRAM_TARGET_PAGE_SIZE;

	if (!clear_owed_chunk(m, sb, p, error))
		return false;
	migram_bitmap_clear_bit(sb->bmap, (size_t)p);
	m->dirty_pages--;
	if (m->mfd && !(m->cfg.multifd_zero_pages == MIGRAM_MULTIFD_ZERO_MAIN &&
			migram_sender_page_is_zero(m, sb, p))) {
		/* multifd: a channel thread reads and sends it (QEMU 7.2's
		 * form: zero pages stay on the main stream, below) */
		if (++m->mfd_queued % MIGRAM_MULTIFD_PAGES_MAX == 0)
			migram_sender_multifd_charge(m); /* shared budget */
		return migram_multifd_send_queue(m->mfd, sb->idstr, sb->host,
						 off, error);
	}
	if (migram_sender_page_is_zero(m, sb, p)) {
		migram_stream_writer_zero_page(m->w, sb->idstr, off);
		m->st.duplicate_pages++;
	} else {
		migram_stream_writer_page(m->w, sb->idstr, off, data);
		m->st.normal_pages++;
		m->st.normal_bytes += MIGRAM_TARGET_PAGE_SIZE;
	}
	return true;
}

/*
 * One section of pages.  PART: until the rate limit's budget is spent, the
 * pass ends (nothing dirty is left, or the search wrapped), 50 ms went by,
 * or a cancel; END (last): until nothing is left.
 * The read-side section spans the flush, because queued pages are
 * referenced in place.
 */
bool migram_sender_section(MigramMigration *m, bool last, bool *pass_done,
			   GError **error)
{
	gint64 t0 = migram_sender_now(m);
	uint64_t sent = 0;
	bool ok;

	*pass_done = false;
	migram_stream_writer_ram_open(m->w, last);
	migram_rcu_read_lock();
	ok = list_unchanged(m, error);
	while (ok) {
		guint bi;
		uint64_t p;

		/* A pass ends when nothing is dirty or the search wrapped
		 * past the last block: a pass is one sweep from the first
		 * page to the last (QEMU's round), so a mid-pass sync, which
		 * may set bits behind the position, never keeps it from
		 * ending.  The next pass starts at the first page. */
		if (!migram_sender_find_dirty(m, &bi, &p) ||
		    (!last &&
		     (bi < m->cur || (bi == m->cur && p < m->cur_page)))) {
			m->cur = 0;
			m->cur_page = 0;
			*pass_done = true;
			break;
		}
		ok = send_page(m, migram_sender_block(m, bi), p, error);
		m->cur = bi;
		m->cur_page = p + 1;
		if (++sent % CHECK_EVERY)
			continue;
		ok = ok && migram_sender_check(m, error);
		if (!last && (migram_channel_rate_exceeded(m->ch) ||
			      migram_sender_now(m) - t0 > SECTION_MAX_US))
			break;
	}
	/* multifd: every page queued is written before the EOS */
	ok = ok && migram_sender_multifd_sync(m, error);
	if (ok)
		migram_stream_writer_ram_close(m->w);
	ok = migram_channel_flush(m->ch, ok ? error : NULL) && ok;
	migram_rcu_read_unlock();
	m->st.transferred_bytes = migram_sender_bytes_sent(m);
	m->st.remaining_bytes = m->dirty_pages * MIGRAM_TARGET_PAGE_SIZE;
	return ok;
}
