/* SPDX-License-Identifier: MIT */
/*
 * The precopy sender's data-channel glue: the few calls sender.c and
 * send-pages.c make (start at setup, sync at every RAM EOS, stop at
 * cleanup), the byte count the bandwidth estimate uses, and the rate
 * limit's accounting: every batch queued, the bytes the channels wrote
 * since the last charge go to the main channel's slices (one atomic load
 * per channel per batch, no lock), so the channels and the main stream
 * share one max_bandwidth budget.  The channels run ahead of the charge
 * by at most the batches in flight (n + 1 of 512 KiB), which the next
 * slices absorb: the long-run rate is the limit.  Everything
 * runs on the migration thread; m->mfd is set and cleared under
 * cancel_lock so migram_migration_cancel() can reach the channels.
 */
#include <pthread.h>
#include <string.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "sender-internal.h"
#include "stream-internal.h"
#include "multifd.h"

uint64_t migram_sender_bytes_sent(MigramMigration *m)
{
	uint64_t pages, zero, bytes = 0;

	if (m->mfd)
		migram_multifd_send_counts(m->mfd, &pages, &zero, &bytes);
	return migram_channel_bytes_sent(m->ch) + m->mfd_seen_bytes + bytes;
}

bool migram_sender_multifd_start(MigramMigration *m, GError **error)
{
	MigramMultifdSend *s;
	uint8_t uuid[16];

	if (!m->cfg.multifd_channels)
		return true;
	if (m->cfg.multifd_compression != MIGRAM_MULTIFD_COMPRESSION_NONE &&
	    m->cfg.multifd_compression != MIGRAM_MULTIFD_COMPRESSION_ZSTD) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "migration config: multifd_compression %u "
			    "(0: none, 2: zstd)",
			    m->cfg.multifd_compression);
		return false;
	}
	if (m->cfg.multifd_zero_pages != MIGRAM_MULTIFD_ZERO_LISTED &&
	    m->cfg.multifd_zero_pages != MIGRAM_MULTIFD_ZERO_MAIN) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "migration config: multifd_zero_pages %u "
			    "(0: listed, 1: main stream)",
			    m->cfg.multifd_zero_pages);
		return false;
	}
	if (m->cfg.multifd_zstd_level < 0 || m->cfg.multifd_zstd_level > 19) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "migration config: multifd_zstd_level %d (0..19)",
			    m->cfg.multifd_zstd_level);
		return false;
	}
	if (!m->cfg.multifd_fds) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "migration config: %u data channels but no "
			    "multifd_fds",
			    m->cfg.multifd_channels);
		return false;
	}
	/* the VM's UUID, which a QEMU 7.2 destination compares with its
	 * own (-uuid; all zero by default) */
	if (m->cfg.multifd_uuid)
		memcpy(uuid, m->cfg.multifd_uuid, sizeof(uuid));
	else
		memset(uuid, 0, sizeof(uuid));
	s = migram_multifd_send_new(m->cfg.multifd_channels, m->cfg.multifd_fds,
				    uuid, m->cfg.io_timeout_ms, error);
	if (!s)
		return false;
	if (m->cfg.multifd_compression == MIGRAM_MULTIFD_COMPRESSION_ZSTD &&
	    !migram_multifd_send_set_zstd(
		    s,
		    m->cfg.multifd_zstd_level ? m->cfg.multifd_zstd_level : 1,
		    error)) {
		migram_multifd_send_cancel(s);
		migram_multifd_send_free(s);
		return false;
	}
	if (m->cfg.multifd_zero_pages == MIGRAM_MULTIFD_ZERO_MAIN)
		migram_multifd_send_whole_pages(s);
	pthread_mutex_lock(&m->cancel_lock);
	m->mfd = s;
	if (g_atomic_int_get(&m->cancelled))
		migram_multifd_send_cancel(s);
	pthread_mutex_unlock(&m->cancel_lock);
	return true;
}

void migram_sender_multifd_charge(MigramMigration *m)
{
	uint64_t pages, zero, bytes;

	if (!m->mfd)
		return;
	migram_multifd_send_counts(m->mfd, &pages, &zero, &bytes);
	if (bytes > m->mfd_charged)
		migram_channel_charge(m->ch, bytes - m->mfd_charged);
	m->mfd_charged = bytes;
}

/* Fold the channels' counts into the statistics. */
static void account(MigramMigration *m)
{
	uint64_t pages, zero, bytes;

	migram_multifd_send_counts(m->mfd, &pages, &zero, &bytes);
	m->st.normal_pages += pages - m->mfd_seen_pages;
	m->st.normal_bytes += (pages - m->mfd_seen_pages) *
			      MIGRAM_TARGET_PAGE_SIZE;
	m->st.duplicate_pages += zero - m->mfd_seen_zero;
	m->mfd_seen_pages = pages;
	m->mfd_seen_zero = zero;
}

bool migram_sender_multifd_sync(MigramMigration *m, GError **error)
{
	bool ok;

	if (!m->mfd)
		return true;
	ok = migram_multifd_send_sync(m->mfd, error);
	account(m);
	migram_sender_multifd_charge(m);
	return ok;
}

void migram_sender_multifd_stop(MigramMigration *m)
{
	MigramMultifdSend *s = m->mfd;
	uint64_t pages, zero, bytes;

	if (!s)
		return;
	account(m);
	migram_multifd_send_counts(s, &pages, &zero, &bytes);
	/* after the last sync every byte is written: shutting the sockets
	 * down only ends the streams (and unblocks a failed run) */
	migram_multifd_send_cancel(s);
	pthread_mutex_lock(&m->cancel_lock);
	m->mfd = NULL;
	pthread_mutex_unlock(&m->cancel_lock);
	m->mfd_seen_bytes += bytes;
	m->mfd_seen_pages = m->mfd_seen_zero = 0;
	m->mfd_charged = 0;
	migram_multifd_send_free(s);
}
