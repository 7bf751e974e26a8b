/* SPDX-License-Identifier: MIT */
/*
 * The receiver's data-channel glue: start the channels after the block
 * list (the first RAM EOS), wait for them at every RAM EOS until a
 * postcopy LISTEN, stop them when the load ends, cancel.  The loading
 * thread makes every call but cancel; r->mfd is set and cleared under
 * r->lock so migram_receiver_cancel() can reach the channels.
 */
#include <pthread.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/migram.h"
#include "multifd.h"
#include "receiver-internal.h"

static bool start(MigramReceiver *r, const MigramStreamRecord *rec,
		  GError **error)
{
	g_autoptr(GArray) blocks = g_array_new(FALSE, TRUE,
					       sizeof(MigramMultifdBlock));
	MigramMultifdRecv *mfd;
	GError *err = NULL;

	if (!r->cfg.multifd_fds)
		return fail(error, MIGRAM_ERROR_INVALID, rec,
			    "receiver config: %u data channels but no "
			    "multifd_fds",
			    r->cfg.multifd_channels);
	migram_rcu_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next_migratable(r->list, NULL);
	     b; b = migram_ram_list_next_migratable(r->list, b)) {
		MigramMultifdBlock mb = {
			.name = migram_ram_block_idstr(b),
			.host = migram_ram_block_host(b),
			.used_length = migram_ram_block_used_length(b),
			.receivedmap = migram_ram_block_receivedmap(b),
		};

		g_array_append_val(blocks, mb);
	}
	migram_rcu_read_unlock();
	mfd = migram_multifd_recv_new((MigramMultifdBlock *)blocks->data,
				      blocks->len, r->cfg.multifd_channels,
				      r->cfg.multifd_fds, NULL, &err);
	if (!mfd) {
		fail(error, err->code, rec, "data channels: %s", err->message);
		g_error_free(err);
		return false;
	}
	pthread_mutex_lock(&r->lock);
	r->mfd = mfd;
	if (r->cancelled)
		migram_multifd_recv_cancel(mfd);
	pthread_mutex_unlock(&r->lock);
	return true;
}

bool migram_receiver_multifd_eos(MigramReceiver *r,
				 const MigramStreamRecord *rec, GError **error)
{
	GError *err = NULL;

	if (!r->cfg.multifd_channels || r->mfd_stopped)
		return true;
	/* postcopy: the source's channels stopped at the switch */
	if (r->pc && migram_postcopy_dst_state(r->pc) >= DST_LISTENING) {
		r->mfd_stopped = true;
		return true;
	}
	if (!r->mfd && !start(r, rec, error))
		return false;
	if (migram_multifd_recv_sync(r->mfd, &err))
		return true;
	fail(error, err->code, rec, "at a RAM EOS: %s", err->message);
	g_error_free(err);
	return false;
}

void migram_receiver_multifd_stop(MigramReceiver *r)
{
	MigramMultifdRecv *mfd;
	uint64_t pages, zero;

	pthread_mutex_lock(&r->lock);
	mfd = r->mfd;
	r->mfd = NULL;
	pthread_mutex_unlock(&r->lock);
	r->mfd_stopped = false;
	if (!mfd)
		return;
	migram_multifd_recv_counts(mfd, &pages, &zero);
	r->stats.normal_pages += pages;
	r->stats.zero_pages += zero;
	migram_multifd_recv_free(mfd);
}

void migram_receiver_multifd_cancel_locked(MigramReceiver *r)
{
	if (r->mfd)
		migram_multifd_recv_cancel(r->mfd);
}
