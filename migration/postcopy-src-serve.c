/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the source: sending after the switch.  Requested pages go
 * first (on the preempt channel when there is one), then background pages
 * in batches, so a faulting vCPU waits for one page, not for the queue.
 */
#include <string.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "postcopy-src-internal.h"
#include "migram/bitmap.h"
#include "migram-rcu.h"
#include "stream-internal.h"

/*
 * Send the host page holding target page p if it is still dirty, on w.
 * Every target page of a huge page goes, consecutively (the destination
 * places whole host pages).  Inside a read-side section.
 */
static bool send_host_page(MigramMigration *m, SendBlock *sb, uint64_t p,
			   MigramStreamWriter *w)
{
	uint64_t hp = sb->page_size / MIGRAM_TARGET_PAGE_SIZE;
	uint64_t first = p - p % hp, n = MIN(hp, sb->pages - first);

	if (migram_bitmap_range_empty(sb->bmap, (size_t)first, (size_t)n))
		return false;
	for (uint64_t i = first; i < first + n; i++) {
		const guint8 *data = sb->host + i * MIGRAM_TARGET_PAGE_SIZE;
		uint64_t off = i * MIGRAM_TARGET_PAGE_SIZE;

		if (migram_bitmap_test_and_clear_bit(sb->bmap, (size_t)i))
			m->dirty_pages--;
		if (migram_sender_page_is_zero(m, sb, i)) {
			migram_stream_writer_zero_page(w, sb->idstr, off);
			m->st.duplicate_pages++;
		} else {
			migram_stream_writer_page(w, sb->idstr, off, data);
			m->st.normal_pages++;
			m->st.normal_bytes += MIGRAM_TARGET_PAGE_SIZE;
		}
	}
	return true;
}

static bool pop_request(MigramMigration *m, PageReq *r)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);
	bool got;

	pthread_mutex_lock(&pc->lock);
	m->st.postcopy_requests_overflowed = pc->q_dropped;
	got = pc->q_len > 0;
	if (got) {
		*r = pc->q[pc->q_head];
		pc->q_head = (pc->q_head + 1) % REQ_QUEUE_MAX;
		pc->q_len--;
	}
	pthread_mutex_unlock(&pc->lock);
	return got;
}

/* Requested pages: on the preempt channel (flushed at once) or main. */
static bool serve_request(MigramMigration *m, const PageReq *r, GError **error)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);
	SendBlock *sb = migram_sender_block(m, r->block);
	MigramStreamWriter *w = pc->pw ? pc->pw : m->w;
	bool any = false;

	m->st.postcopy_requests++;
	for (uint64_t p = r->page; p < r->page + r->npages; p++)
		if (send_host_page(m, sb, p, w)) {
			any = true;
			m->st.postcopy_urgent_pages++;
		}
	if (!any) {
		m->st.postcopy_requests_already_sent++;
		return true;
	}
	/* Locality: the background continues after the requested page. */
	m->cur = r->block;
	m->cur_page = r->page + r->npages;
	if (w == m->w)
		return true;
	/* A broken preempt connection pauses, as main would. */
	return migram_channel_flush(m->preempt, error);
}

/* One PART section: requests first, up to a batch of background pages. */
bool migram_postcopy_src_section(MigramMigration *m, GError **error)
{
	guint sent = 0;
	bool ok = true;

	/* model mode: the requests the destination sent by now */
	if (m->env.rp_pump)
		m->env.rp_pump(m->env.opaque, MIGRAM_RP_WAIT_NONE, 0);
	migram_stream_writer_ram_open(m->w, false);
	migram_rcu_read_lock();
	while (ok && sent < BACKGROUND_BATCH && m->dirty_pages) {
		PageReq r;
		guint bi;
		uint64_t p;

		if (pop_request(m, &r)) {
			ok = serve_request(m, &r, error);
			continue;
		}
		if (!migram_sender_find_dirty(m, &bi, &p))
			break;
		send_host_page(m, migram_sender_block(m, bi), p, m->w);
		m->st.postcopy_background_pages++;
		m->cur = bi;
		m->cur_page = p + 1;
		sent++;
	}
	migram_stream_writer_ram_close(m->w);
	ok = migram_channel_flush(m->ch, ok ? error : NULL) && ok;
	migram_rcu_read_unlock();
	m->st.transferred_bytes =
		migram_sender_bytes_sent(m) +
		(m->preempt ? migram_channel_bytes_sent(m->preempt) : 0);
	m->st.remaining_bytes = m->dirty_pages * MIGRAM_TARGET_PAGE_SIZE;
	return ok;
}

bool migram_postcopy_src_lost(MigramMigration *m)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);
	bool down;

	if (migram_channel_error(m->ch) ||
	    (pc->pw && migram_channel_error(m->preempt)))
		return true;
	pthread_mutex_lock(&pc->lock);
	down = pc->rp_down && !pc->shut;
	pthread_mutex_unlock(&pc->lock);
	return down;
}
