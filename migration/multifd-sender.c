/* SPDX-License-Identifier: MIT */
/*
 * The precopy sender's data-channel glue: the few calls sender.c and
 * send-pages.c make (start at setup, sync at every RAM EOS, stop at
 * cleanup) and the byte count the bandwidth estimate uses.  Everything
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
	if (!m->cfg.multifd_fds) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "migration config: %u data channels but no "
			    "multifd_fds",
			    m->cfg.multifd_channels);
		return false;
	}
	for (size_t i = 0; i < sizeof(uuid); i += 4) {
		guint32 r = g_random_int();

		memcpy(uuid + i, &r, 4);
	}
	s = migram_multifd_send_new(m->cfg.multifd_channels, m->cfg.multifd_fds,
				    uuid, m->cfg.io_timeout_ms, error);
	if (!s)
		return false;
	pthread_mutex_lock(&m->cancel_lock);
	m->mfd = s;
	if (g_atomic_int_get(&m->cancelled))
		migram_multifd_send_cancel(s);
	pthread_mutex_unlock(&m->cancel_lock);
	return true;
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
	migram_multifd_send_free(s);
}
