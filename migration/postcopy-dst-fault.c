/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the destination: LISTEN registers every block with
 * userfaultfd in missing mode and starts the fault thread, which turns
 * faults into page requests on the return path (once per page) and maps
 * the zero page for received-but-missing pages.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/bitmap.h"
#include "migram/migram.h"
#include "migram/ramblock.h"
#include "return-path.h"
#include "stream-error.h"
#include "postcopy-dst-internal.h"
#include "migram-uffd.h"

void migram_postcopy_dst_stop_fault_thread(DstPostcopy *pc)
{
	if (pc->fault_running) {
		uint64_t one = 1;

		if (write(pc->quit_fd, &one, sizeof(one)) != sizeof(one))
			g_warning("postcopy: cannot wake the fault thread");
		pthread_join(pc->fault_thread, NULL);
		pc->fault_running = false;
	}
}

/* Unregister the ranges; faulting threads then see ordinary memory. */
void migram_postcopy_dst_unregister_all(DstPostcopy *pc)
{
	for (guint i = 0; i < pc->blocks->len; i++) {
		DstBlock *b = &g_array_index(pc->blocks, DstBlock, i);
		struct uffdio_range r = { (uintptr_t)b->host, b->length };

		if (b->registered && pc->uffd >= 0)
			ioctl(pc->uffd, UFFDIO_UNREGISTER, &r);
		b->registered = false;
	}
}

/* Received but unpopulated (a precopy ZERO record): map the zero page. */
static void zero_fill(DstPostcopy *pc, DstBlock *b, uint64_t off)
{
	int err = migram_postcopy_dst_place_page(pc, b, off, NULL, true);

	/* Nothing else will arrive for this page: a faulting thread stays
	 * blocked until the load ends and the range is unregistered. */
	if (err && err != EEXIST)
		g_warning("postcopy: zero page for ramblock '%s' at "
			  "%#" G_GINT64_MODIFIER "x: %s",
			  b->idstr, off, g_strerror(err));
}

static void handle_fault(DstPostcopy *pc, uintptr_t addr, gint64 now)
{
	DstBlock *b = migram_postcopy_dst_block_by_host(pc, addr);
	uint64_t off, page;
	bool received;

	if (!b)
		return;
	off = (addr - (uintptr_t)b->host) & ~(b->page_size - 1);
	page = off / MIGRAM_TARGET_PAGE_SIZE;
	pthread_mutex_lock(&pc->lock);
	pc->st.faults++;
	received = migram_bitmap_test_bit_atomic(b->receivedmap, (size_t)page);
	if (!received) {
		gpointer key = b->host + off;
		GArray *times = g_hash_table_lookup(pc->waiting, key);

		if (!times) {
			times = g_array_new(FALSE, FALSE, sizeof(gint64));
			g_hash_table_insert(pc->waiting, key, times);
		}
		g_array_append_val(times, now);
	}
	pthread_mutex_unlock(&pc->lock);
	if (received) {
		/* Received but unpopulated: a precopy zero page. */
		zero_fill(pc, b, off);
		return;
	}
	if (migram_bitmap_test_and_set_bit_atomic(b->requested, (size_t)page))
		return; /* already asked for */
	pthread_mutex_lock(&pc->rp_lock);
	if (migram_postcopy_dst_send_request(pc, b, off)) {
		pthread_mutex_lock(&pc->lock);
		pc->st.requests++;
		pthread_mutex_unlock(&pc->lock);
	}
	/* A failed send is repeated after recovery (requested, not
	 * received). */
	pthread_mutex_unlock(&pc->rp_lock);
}

static void *fault_thread(void *opaque)
{
	DstPostcopy *pc = opaque;
	struct uffd_msg msgs[16];

	for (;;) {
		struct pollfd p[2] = { { pc->uffd, POLLIN, 0 },
				       { pc->quit_fd, POLLIN, 0 } };
		ssize_t n;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		n = read(pc->uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			break;
		}
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			handle_fault(pc,
				     (uintptr_t)msgs[i].arg.pagefault.address,
				     g_get_monotonic_time());
		}
	}
	return NULL;
}

bool migram_postcopy_dst_listen(DstPostcopy *pc, uint64_t at, GError **error)
{
	if (pc->state != DST_ADVISE && pc->state != DST_DISCARD)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "POSTCOPY_LISTEN %s",
					  pc->state >= DST_LISTENING
						  ? "twice"
						  : "without POSTCOPY_ADVISE");
	if (!migram_postcopy_dst_take_blocks(pc, "POSTCOPY_LISTEN", at, error))
		return false;
	for (guint i = 0; i < pc->blocks->len; i++) {
		DstBlock *b = &g_array_index(pc->blocks, DstBlock, i);
		struct uffdio_register reg = {
			.range = { (uintptr_t)b->host, b->length },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};

		if (!b->length)
			continue;
		if (ioctl(pc->uffd, UFFDIO_REGISTER, &reg) < 0)
			return migram_stream_fail(
				error, MIGRAM_ERROR_UNSUPPORTED, at,
				"POSTCOPY_LISTEN: userfaultfd registration of "
				"ramblock '%s' failed: %s",
				b->idstr, g_strerror(errno));
		b->registered = true;
		if (!(reg.ioctls & (UINT64_C(1) << _UFFDIO_COPY)))
			return migram_stream_fail(
				error, MIGRAM_ERROR_UNSUPPORTED, at,
				"POSTCOPY_LISTEN: ramblock '%s' cannot take "
				"UFFDIO_COPY",
				b->idstr);
		b->zeroable = reg.ioctls & (UINT64_C(1) << _UFFDIO_ZEROPAGE);
	}
	pc->quit_fd = eventfd(0, EFD_CLOEXEC);
	if (pc->quit_fd < 0)
		return migram_stream_fail(error, MIGRAM_ERROR_IO, at,
					  "POSTCOPY_LISTEN: eventfd: %s",
					  g_strerror(errno));
	if (pthread_create(&pc->fault_thread, NULL, fault_thread, pc) != 0)
		return migram_stream_fail(error, MIGRAM_ERROR_NO_MEMORY, at,
					  "POSTCOPY_LISTEN: cannot start the "
					  "fault thread");
	pc->fault_running = true;
	pc->state = DST_LISTENING;
	pthread_mutex_lock(&pc->lock);
	pc->st.active = true;
	pthread_mutex_unlock(&pc->lock);
	return true;
}
