/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the source: the switch.  The guest pauses for good, the
 * last sync runs, huge pages are made whole, every page still dirty goes
 * to the destination as a discard range, then the package (LISTEN, device
 * state, RUN) in one PACKAGED command.
 */
#include <string.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/migram.h"
#include "postcopy-src-internal.h"
#include "migram/bitmap.h"
#include "stream-internal.h"

/* Huge page blocks: a partly dirty host page becomes wholly dirty. */
static void canonicalize(MigramMigration *m, SendBlock *sb)
{
	uint64_t hp = sb->page_size / MIGRAM_TARGET_PAGE_SIZE;

	if (hp <= 1)
		return;
	for (uint64_t p = 0; p < sb->pages; p += hp) {
		uint64_t n = MIN(hp, sb->pages - p);
		size_t set;

		if (migram_bitmap_range_empty(sb->bmap, (size_t)p, (size_t)n))
			continue;
		set = migram_bitmap_count(sb->bmap, (size_t)p, (size_t)n);
		migram_bitmap_set(sb->bmap, (size_t)p, (size_t)n);
		m->dirty_pages += n - set;
	}
}

/* One POSTCOPY_RAM_DISCARD command with up to 12 ranges. */
static void send_discards(MigramMigration *m, SendBlock *sb,
			  const uint64_t *ranges, size_t n)
{
	guint8 buf[3 + 255 + 16 * MIGRAM_DISCARDS_PER_COMMAND];
	size_t len = strlen(sb->idstr), o = 0;

	buf[o++] = 0; /* version */
	buf[o++] = (guint8)len;
	memcpy(buf + o, sb->idstr, len);
	o += len;
	buf[o++] = 0;
	for (size_t i = 0; i < 2 * n; i++) {
		uint64_t be = GUINT64_TO_BE(ranges[i]);

		memcpy(buf + o, &be, 8);
		o += 8;
	}
	migram_stream_writer_command(m->w, MIGRAM_CMD_POSTCOPY_RAM_DISCARD, buf,
				     (uint16_t)o);
}

/* Every run of set bits in bmap becomes a discard range. */
static void discard_block(MigramMigration *m, SendBlock *sb)
{
	uint64_t ranges[2 * MIGRAM_DISCARDS_PER_COMMAND];
	size_t n = 0;
	size_t p = 0, end = (size_t)sb->pages;

	for (;;) {
		size_t s = migram_bitmap_find_next_set(sb->bmap, end, p), e;

		if (s >= end)
			break;
		e = migram_bitmap_find_next_zero(sb->bmap, end, s);
		ranges[2 * n] = (uint64_t)s * MIGRAM_TARGET_PAGE_SIZE;
		ranges[2 * n + 1] = (uint64_t)(e - s) * MIGRAM_TARGET_PAGE_SIZE;
		m->st.postcopy_discard_ranges++;
		m->st.postcopy_discard_pages += e - s;
		if (++n == MIGRAM_DISCARDS_PER_COMMAND) {
			send_discards(m, sb, ranges, n);
			n = 0;
		}
		p = e;
	}
	if (n)
		send_discards(m, sb, ranges, n);
}

static void ping(GByteArray *pkg, MigramMigration *m, uint32_t v)
{
	uint32_t be = GUINT32_TO_BE(v);

	if (pkg)
		migram_stream_encode_command(pkg, MIGRAM_CMD_PING, &be, 4);
	else
		migram_stream_writer_command(m->w, MIGRAM_CMD_PING, &be, 4);
}

/*
 * The switch: pause, final sync, discards, PING(2), the package (LISTEN,
 * device state, PING(3), RUN), PING(4).  Once the package is flushed the
 * destination may be running: from there on the source never resumes.
 */
bool migram_postcopy_src_switch(MigramMigration *m, GError **error)
{
	SrcPostcopy *pc = migram_postcopy_src_of(m);

	g_autoptr(GByteArray) pkg = g_byte_array_new();
	uint32_t be;
	bool ok = true, lost = false;

	gint64 t[4];

	m->st.status = MIGRAM_MIGRATION_DEVICE;
	migram_sender_publish(m);
	/* the downtime starts with the request to stop, as QEMU's */
	m->t_pause = t[0] = migram_sender_now(m);
	m->cfg.pause_guest(m->cfg.opaque);
	t[1] = migram_sender_now(m);
	m->last_stage = true; /* the guest stays paused: no more clears */
	/*
	 * From here the block set is fixed until the migration ends: the
	 * guest will run on the destination with these blocks, and a block
	 * added or resized here later could never reach it (torture seed
	 * 20275405: a hot-add after the switch, then the verification found
	 * a block the destination lacked).  A change that came before the
	 * hold fails the switch while the source still has the guest.
	 */
	if (migram_ram_list_hold(m->list,
				 "a migration is switching to "
				 "postcopy: the guest runs on the "
				 "destination with the blocks it has") !=
	    m->version)
		g_atomic_int_set(&m->changed, 1);
	m->list_held = true;
	if (!migram_sender_check_unchanged(m, error))
		return false;
	migram_channel_set_rate_limit(m->ch, 0);
	if (!migram_sender_sync(m, error))
		return false;
	t[2] = migram_sender_now(m);
	migram_rcu_read_lock();
	for (guint i = 0; i < m->blocks->len; i++) {
		canonicalize(m, migram_sender_block(m, i));
		discard_block(m, migram_sender_block(m, i));
	}
	migram_rcu_read_unlock();
	ping(NULL, m, 2);
	/*
	 * The PONG of PING(2) says the discards arrived and nothing of the
	 * package has: a connection lost before it leaves the guest only
	 * here, so the source may resume it.  One round trip of downtime
	 * buys that certainty.
	 */
	if (!migram_channel_flush(m->ch, error))
		return false;
	if (!migram_postcopy_src_wait(m, SRC_WAIT_PONG2, &lost, error)) {
		if (lost && !(error && *error))
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "connection lost while switching to "
				    "postcopy, before the destination could "
				    "run: the source keeps the guest");
		return false;
	}
	t[3] = migram_sender_now(m);
	migram_stream_encode_command(pkg, MIGRAM_CMD_POSTCOPY_LISTEN, NULL, 0);
	ok = migram_sender_encode_device(m, pkg, error);
	if (!ok)
		return false;
	ping(pkg, m, 3);
	migram_stream_encode_command(pkg, MIGRAM_CMD_POSTCOPY_RUN, NULL, 0);
	be = GUINT32_TO_BE(pkg->len);
	migram_stream_writer_command(m->w, MIGRAM_CMD_PACKAGED, &be, 4);
	migram_stream_writer_put_raw(m->w, pkg->data, pkg->len);
	ping(NULL, m, 4);
	if (!migram_channel_flush(m->ch, error))
		return false;
	m->postcopy_committed = true;
	pc->t_switch = migram_sender_now(m);
	m->st.downtime_ms = (uint64_t)(pc->t_switch - m->t_pause) / 1000;
	/* postcopy's parts: the discards and PONG(2) count as "pages", the
	 * package as "device" */
	m->st.downtime_pause_us = (uint64_t)(t[1] - t[0]);
	m->st.downtime_sync_us = (uint64_t)(t[2] - t[1]);
	m->st.downtime_pages_us = (uint64_t)(t[3] - t[2]);
	m->st.downtime_device_us = (uint64_t)(pc->t_switch - t[3]);
	m->st.status = MIGRAM_MIGRATION_POSTCOPY_ACTIVE;
	m->st.postcopy_preempt = pc->pw != NULL;
	m->st.remaining_bytes = m->dirty_pages * MIGRAM_TARGET_PAGE_SIZE;
	m->cur = 0;
	m->cur_page = 0;
	migram_sender_publish(m);
	return true;
}
