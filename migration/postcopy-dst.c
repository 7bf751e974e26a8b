/* SPDX-License-Identifier: MIT */
/*
 * Postcopy on the destination: the discard list, userfaultfd in missing
 * mode, the fault thread that turns faults into page requests, atomic
 * placement, blocktime figures, and the return path's writer side.
 *
 * Threads.  The loading thread (the receiver) handles commands and places
 * pages from the main channel; a preempt thread places pages from the
 * preempt channel; the fault thread reads faults and writes requests.  They
 * share:
 *  - the return path, under rp_lock (rp is NULL while paused);
 *  - receivedmap (atomic bit operations) and the `waiting` table of fault
 *    times, both under `lock` where they meet: a fault records its time
 *    only if the page is not received, and a placement sets the bit and
 *    takes the waiting times in one critical section, so no fault is left
 *    waiting for a placement that already happened;
 *  - `requested` bits (atomic test-and-set), so one page is requested
 *    once however many threads fault on it.
 *
 * Placement is UFFDIO_COPY (or UFFDIO_ZEROPAGE) in mode 0: it maps the
 * page atomically and wakes every thread blocked on it.  A page whose
 * receivedmap bit is already set is dropped, and EEXIST (another channel
 * won the race) is not an error.  Every placement goes through one helper,
 * place_page(), with one retry policy (EAGAIN is retried).  A received page can
 * still be missing: a precopy ZERO record leaves unpopulated memory alone.  The
 * fault thread maps the zero page for those; nothing else can arrive for them.
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
#include "postcopy-dst.h"
#include "uffd.h"

typedef struct {
	char idstr[256];
	guint8 *host;
	uint64_t length; /* postcopy_length */
	uint64_t page_size;
	uint64_t pages; /* target pages */
	bool shared;
	unsigned long *receivedmap; /* the block's; atomic */
	unsigned long *requested;   /* ours; atomic */
	bool registered;
	bool zeroable;
} DstBlock;

struct DstPostcopy {
	MigramRamList *list;
	DstState state;
	GArray *blocks; /* DstBlock, from LISTEN (or the first discard) */

	pthread_mutex_t rp_lock;
	MigramChannel *rp; /* under rp_lock; NULL while paused */
	char rp_last[256]; /* block named by the last request on rp */

	int uffd;
	int quit_fd;
	pthread_t fault_thread;
	bool fault_running;
	guint8 *zero; /* a zero buffer of the largest page size */
	uint64_t max_page;

	DstPlaceHook place_hook; /* tests: injected placement errors */
	void *place_hook_opaque;

	pthread_mutex_t lock; /* waiting, st */
	GHashTable *waiting;  /* host page address -> GArray of gint64 */
	MigramPostcopyStats st;
};

/* A userfaultfd with the API handshake done; -1 with *error. */
static int open_uffd(GError **error)
{
	uint64_t ioctls = 0;
	int fd = migram_uffd_open("postcopy", error);

	if (fd < 0)
		return -1;
	if (!migram_uffd_api(fd, 0, NULL, &ioctls, "postcopy",
			     MIGRAM_ERROR_UNSUPPORTED, error)) {
		close(fd);
		return -1;
	}
	if (!(ioctls & (UINT64_C(1) << _UFFDIO_REGISTER))) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			    "postcopy: userfaultfd cannot register ranges");
		close(fd);
		return -1;
	}
	return fd;
}

MIGRAM_EXPORT bool migram_postcopy_available(GError **error)
{
	int fd = open_uffd(error);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

DstPostcopy *migram_postcopy_dst_new(MigramRamList *list)
{
	DstPostcopy *pc = g_new0(DstPostcopy, 1);

	pc->list = list;
	pc->uffd = -1;
	pc->quit_fd = -1;
	pc->blocks = g_array_new(FALSE, TRUE, sizeof(DstBlock));
	pthread_mutex_init(&pc->rp_lock, NULL);
	pthread_mutex_init(&pc->lock, NULL);
	pc->waiting = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL,
					    (GDestroyNotify)g_array_unref);
	return pc;
}

static void stop_fault_thread(DstPostcopy *pc)
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
static void unregister_all(DstPostcopy *pc)
{
	for (guint i = 0; i < pc->blocks->len; i++) {
		DstBlock *b = &g_array_index(pc->blocks, DstBlock, i);
		struct uffdio_range r = { (uintptr_t)b->host, b->length };

		if (b->registered && pc->uffd >= 0)
			ioctl(pc->uffd, UFFDIO_UNREGISTER, &r);
		b->registered = false;
	}
}

void migram_postcopy_dst_free(DstPostcopy *pc)
{
	if (!pc)
		return;
	stop_fault_thread(pc);
	unregister_all(pc);
	if (pc->uffd >= 0)
		close(pc->uffd);
	if (pc->quit_fd >= 0)
		close(pc->quit_fd);
	for (guint i = 0; i < pc->blocks->len; i++)
		migram_bitmap_free(
			g_array_index(pc->blocks, DstBlock, i).requested);
	g_array_unref(pc->blocks);
	g_hash_table_unref(pc->waiting);
	if (pc->zero)
		munmap(pc->zero, pc->max_page);
	migram_channel_free(pc->rp);
	pthread_mutex_destroy(&pc->rp_lock);
	pthread_mutex_destroy(&pc->lock);
	g_free(pc);
}

DstState migram_postcopy_dst_state(const DstPostcopy *pc)
{
	return pc->state;
}

/* ---- return path (writer side) ---- */

void migram_postcopy_dst_set_rp(DstPostcopy *pc, MigramChannel *rp)
{
	MigramChannel *old;

	pthread_mutex_lock(&pc->rp_lock);
	old = pc->rp;
	pc->rp = rp;
	pc->rp_last[0] = '\0';
	pthread_mutex_unlock(&pc->rp_lock);
	migram_channel_free(old);
}

bool migram_postcopy_dst_has_rp(DstPostcopy *pc)
{
	bool has;

	pthread_mutex_lock(&pc->rp_lock);
	has = pc->rp != NULL;
	pthread_mutex_unlock(&pc->rp_lock);
	return has;
}

bool migram_postcopy_dst_rp_u32(DstPostcopy *pc, uint16_t type, uint32_t value)
{
	bool ok = false;

	pthread_mutex_lock(&pc->rp_lock);
	if (pc->rp) {
		migram_rp_write_u32(pc->rp, type, value);
		ok = migram_channel_flush(pc->rp, NULL);
	}
	pthread_mutex_unlock(&pc->rp_lock);
	return ok;
}

/* Caller holds rp_lock. */
static bool send_request(DstPostcopy *pc, DstBlock *b, uint64_t off)
{
	bool same = strcmp(pc->rp_last, b->idstr) == 0;

	if (!pc->rp)
		return false;
	migram_rp_write_req(pc->rp, same ? NULL : b->idstr, off,
			    (uint32_t)b->page_size);
	if (!migram_channel_flush(pc->rp, NULL))
		return false;
	g_strlcpy(pc->rp_last, b->idstr, sizeof(pc->rp_last));
	return true;
}

/* ---- blocks ---- */

static DstBlock *block_by_name(DstPostcopy *pc, const char *idstr)
{
	for (guint i = 0; i < pc->blocks->len; i++) {
		DstBlock *b = &g_array_index(pc->blocks, DstBlock, i);

		if (strcmp(b->idstr, idstr) == 0)
			return b;
	}
	return NULL;
}

static DstBlock *block_by_host(DstPostcopy *pc, uintptr_t addr)
{
	for (guint i = 0; i < pc->blocks->len; i++) {
		DstBlock *b = &g_array_index(pc->blocks, DstBlock, i);

		if (addr >= (uintptr_t)b->host &&
		    addr - (uintptr_t)b->host < b->length)
			return b;
	}
	return NULL;
}

/* Forget a table that could not be completed (take_blocks failed). */
static void drop_blocks(DstPostcopy *pc)
{
	for (guint i = 0; i < pc->blocks->len; i++)
		migram_bitmap_free(
			g_array_index(pc->blocks, DstBlock, i).requested);
	g_array_set_size(pc->blocks, 0);
	pc->max_page = 0;
}

/*
 * The table of migratable blocks, taken once (at the first discard or at
 * LISTEN, named by `what` in errors).  The embedder must not add, remove or
 * resize blocks during a postcopy load (docs/postcopy.md); host pointers
 * stay valid until then.  A block's postcopy length is bounded by its used
 * length: a block the stream did not list keeps the length of an earlier
 * load, and nothing may be placed past used_length.
 */
static bool take_blocks(DstPostcopy *pc, const char *what, uint64_t at,
			GError **error)
{
	if (pc->zero)
		return true;
	migram_rcu_read_lock();
	for (MigramRamBlock *rb =
		     migram_ram_list_next_migratable(pc->list, NULL);
	     rb; rb = migram_ram_list_next_migratable(pc->list, rb)) {
		DstBlock b = {
			.host = migram_ram_block_host(rb),
			.length = MIN(migram_ram_block_postcopy_length(rb),
				      migram_ram_block_used_length(rb)),
			.page_size = migram_ram_block_page_size(rb),
			.shared = (migram_ram_block_flags(rb) &
				   MIGRAM_RAM_SHARED) ||
				  migram_ram_block_fd(rb) >= 0,
			.receivedmap = migram_ram_block_receivedmap(rb),
		};

		g_strlcpy(b.idstr, migram_ram_block_idstr(rb), sizeof(b.idstr));
		b.pages = b.length / MIGRAM_TARGET_PAGE_SIZE;
		b.requested = migram_bitmap_new((size_t)MAX(b.pages, 1));
		pc->max_page = MAX(pc->max_page, b.page_size);
		g_array_append_val(pc->blocks, b);
	}
	migram_rcu_read_unlock();
	for (guint i = 0; i < pc->blocks->len; i++) {
		DstBlock *b = &g_array_index(pc->blocks, DstBlock, i);

		if (!b->requested) {
			migram_stream_fail(error, MIGRAM_ERROR_NO_MEMORY, at,
					   "%s: ramblock '%s': cannot allocate "
					   "the request bitmap for "
					   "%" G_GUINT64_FORMAT " pages",
					   what, b->idstr, b->pages);
			drop_blocks(pc);
			return false;
		}
		if (!b->receivedmap) {
			migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					   "%s before the block list "
					   "(ramblock '%s' has no receivedmap)",
					   what, b->idstr);
			drop_blocks(pc);
			return false;
		}
	}
	pc->zero =
		mmap(NULL, MAX(pc->max_page, MIGRAM_TARGET_PAGE_SIZE),
		     PROT_READ,
		     /* cppcheck-suppress invalidFunctionArg ; anon takes -1 */
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pc->zero == MAP_FAILED) {
		pc->zero = NULL;
		drop_blocks(pc);
		return migram_stream_fail(error, MIGRAM_ERROR_NO_MEMORY, at,
					  "%s: zero page buffer: %s", what,
					  g_strerror(errno));
	}
	pc->max_page = MAX(pc->max_page, MIGRAM_TARGET_PAGE_SIZE);
	return true;
}

/* ---- ADVISE and DISCARD ---- */

bool migram_postcopy_dst_advise(DstPostcopy *pc, const guint8 *data, size_t len,
				uint64_t at, GError **error)
{
	uint64_t summary, tps;
	int fd;

	if (pc->state != DST_NONE)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "POSTCOPY_ADVISE twice");
	if (len != 16)
		return migram_stream_fail(error, MIGRAM_ERROR_UNSUPPORTED, at,
					  "POSTCOPY_ADVISE of %zu bytes: only "
					  "postcopy-ram (16 bytes) is "
					  "supported",
					  len);
	memcpy(&summary, data, 8);
	memcpy(&tps, data + 8, 8);
	summary = GUINT64_FROM_BE(summary);
	tps = GUINT64_FROM_BE(tps);
	if (tps != MIGRAM_TARGET_PAGE_SIZE)
		return migram_stream_fail(error, MIGRAM_ERROR_INVALID, at,
					  "POSTCOPY_ADVISE: target page size "
					  "%" G_GUINT64_FORMAT
					  " (this host uses %u)",
					  tps, MIGRAM_TARGET_PAGE_SIZE);
	if (!(summary & MIGRAM_TARGET_PAGE_SIZE))
		return migram_stream_fail(error, MIGRAM_ERROR_INVALID, at,
					  "POSTCOPY_ADVISE: page size summary "
					  "%#" G_GINT64_MODIFIER
					  "x lacks the target page size",
					  summary);
	fd = open_uffd(error);
	if (fd < 0) {
		g_prefix_error(error,
			       "stream byte %" G_GUINT64_FORMAT
			       ": POSTCOPY_ADVISE: ",
			       at);
		return false;
	}
	pc->uffd = fd;
	pc->state = DST_ADVISE;
	return true;
}

/* Drop [off, off+len) of b: receivedmap bits, then the memory. */
static bool drop_range(DstPostcopy *pc, DstBlock *b, uint64_t off, uint64_t len,
		       uint64_t at, GError **error)
{
	int advice = b->shared ? MADV_REMOVE : MADV_DONTNEED;

	migram_bitmap_clear_atomic(b->receivedmap,
				   (size_t)(off / MIGRAM_TARGET_PAGE_SIZE),
				   (size_t)(len / MIGRAM_TARGET_PAGE_SIZE));
	if (madvise(b->host + off, len, advice) != 0)
		return migram_stream_fail(
			error, MIGRAM_ERROR_IO, at,
			"discard of ramblock '%s' at %#" G_GINT64_MODIFIER
			"x, %#" G_GINT64_MODIFIER "x bytes: madvise: %s",
			b->idstr, off, len, g_strerror(errno));
	pthread_mutex_lock(&pc->lock);
	pc->st.discarded_pages += len / MIGRAM_TARGET_PAGE_SIZE;
	pthread_mutex_unlock(&pc->lock);
	return true;
}

bool migram_postcopy_dst_discard(DstPostcopy *pc, const guint8 *data,
				 size_t len, uint64_t at, GError **error)
{
	char name[256];
	size_t n, o;
	DstBlock *b;

	if (pc->state != DST_ADVISE && pc->state != DST_DISCARD)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "POSTCOPY_RAM_DISCARD outside the "
					  "advise/discard phase");
	if (len < 3 || data[0] != 0)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "POSTCOPY_RAM_DISCARD: %s",
					  len < 3 ? "too short"
						  : "unknown version");
	n = data[1];
	if (n == 0 || len < 3 + n || data[2 + n] != 0 ||
	    (len - 3 - n) % 16 != 0)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "POSTCOPY_RAM_DISCARD of %zu bytes: "
					  "bad name or range list",
					  len);
	memcpy(name, data + 2, n);
	name[n] = '\0';
	if (strlen(name) != n)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "POSTCOPY_RAM_DISCARD: NUL in the "
					  "block name");
	if (pc->state == DST_ADVISE) {
		if (!take_blocks(pc, "POSTCOPY_RAM_DISCARD", at, error))
			return false;
		/* THP would re-form and keep stale subpages: no THP. */
		for (guint i = 0; i < pc->blocks->len; i++) {
			DstBlock *d = &g_array_index(pc->blocks, DstBlock, i);

			if (d->page_size == MIGRAM_TARGET_PAGE_SIZE)
				madvise(d->host, d->length, MADV_NOHUGEPAGE);
		}
		pc->state = DST_DISCARD;
	}
	b = block_by_name(pc, name);
	if (!b)
		return migram_stream_fail(error, MIGRAM_ERROR_NOT_FOUND, at,
					  "POSTCOPY_RAM_DISCARD for unknown "
					  "ramblock '%s'",
					  name);
	for (o = 3 + n; o < len; o += 16) {
		uint64_t start, l;

		memcpy(&start, data + o, 8);
		memcpy(&l, data + o + 8, 8);
		start = GUINT64_FROM_BE(start);
		l = GUINT64_FROM_BE(l);
		if (start % b->page_size || l % b->page_size || l == 0 ||
		    start >= b->length || b->length - start < l)
			return migram_stream_fail(
				error, MIGRAM_ERROR_PROTOCOL, at,
				"POSTCOPY_RAM_DISCARD of ramblock '%s': range "
				"%#" G_GINT64_MODIFIER "x+%#" G_GINT64_MODIFIER
				"x is misaligned or outside its %#" G_GINT64_MODIFIER
				"x bytes (page size %#" G_GINT64_MODIFIER "x)",
				name, start, l, b->length, b->page_size);
		if (!drop_range(pc, b, start, l, at, error))
			return false;
	}
	return true;
}

/* ---- faults ---- */

void migram_postcopy_dst_set_place_hook(DstPostcopy *pc, DstPlaceHook hook,
					void *opaque)
{
	pc->place_hook = hook;
	pc->place_hook_opaque = opaque;
}

/*
 * Place one host page at b + off, atomically, waking every thread blocked
 * on it: UFFDIO_ZEROPAGE when zero and the range supports it, otherwise
 * UFFDIO_COPY from src (the zero buffer when zero).  The one retry policy
 * of every placement, the stream's and the fault thread's: EAGAIN (the
 * address space is changing under the copy) is retried until the kernel
 * gives an answer.  Returns 0, or the errno; EEXIST means the page is
 * already there (another channel or the fault thread won the race).
 * Any thread; never allocates or locks.
 */
static int place_page(DstPostcopy *pc, DstBlock *b, uint64_t off,
		      const void *src, bool zero)
{
	int err;

	do {
		err = pc->place_hook
			      ? pc->place_hook(pc->place_hook_opaque, off, zero)
			      : 0;
		if (err)
			continue;
		if (zero && b->zeroable) {
			struct uffdio_zeropage z = {
				.range = { (uintptr_t)b->host + off,
					   b->page_size },
			};

			err = ioctl(pc->uffd, UFFDIO_ZEROPAGE, &z) < 0 ? errno
								       : 0;
		} else {
			struct uffdio_copy c = {
				.dst = (uintptr_t)b->host + off,
				.src = (uintptr_t)(zero ? pc->zero : src),
				.len = b->page_size,
			};

			err = ioctl(pc->uffd, UFFDIO_COPY, &c) < 0 ? errno : 0;
		}
	} while (err == EAGAIN);
	return err;
}

/* Received but unpopulated (a precopy ZERO record): map the zero page. */
static void zero_fill(DstPostcopy *pc, DstBlock *b, uint64_t off)
{
	int err = place_page(pc, b, off, NULL, true);

	/* Nothing else will arrive for this page: a faulting thread stays
	 * blocked until the load ends and the range is unregistered. */
	if (err && err != EEXIST)
		g_warning("postcopy: zero page for ramblock '%s' at "
			  "%#" G_GINT64_MODIFIER "x: %s",
			  b->idstr, off, g_strerror(err));
}

static void handle_fault(DstPostcopy *pc, uintptr_t addr, gint64 now)
{
	DstBlock *b = block_by_host(pc, addr);
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
	if (send_request(pc, b, off)) {
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
	if (!take_blocks(pc, "POSTCOPY_LISTEN", at, error))
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

void migram_postcopy_dst_run(DstPostcopy *pc)
{
	pc->state = DST_RUNNING;
	pthread_mutex_lock(&pc->lock);
	pc->st.running = true;
	pthread_mutex_unlock(&pc->lock);
}

/* ---- placing pages ---- */

void migram_postcopy_placer_init(DstPlacer *pl, bool preempt)
{
	memset(pl, 0, sizeof(*pl));
	pl->preempt = preempt;
}

void migram_postcopy_placer_clear(DstPlacer *pl)
{
	if (pl->buf)
		munmap(pl->buf, pl->cap);
	memset(pl, 0, sizeof(*pl));
}

/* Bucket i holds latencies in [2^i, 2^(i+1)) us; 0 us counts in bucket 0. */
static unsigned int latency_bucket(uint64_t us)
{
	return us ? MIN(g_bit_storage(us) - 1, MIGRAM_LATENCY_BUCKETS - 1) : 0;
}

/* After a successful placement: receivedmap, latencies, counters. */
static void placed(DstPostcopy *pc, DstPlacer *pl, DstBlock *b, uint64_t off)
{
	gint64 now = g_get_monotonic_time();
	GArray *times;

	pthread_mutex_lock(&pc->lock);
	migram_bitmap_set_atomic(
		b->receivedmap, (size_t)(off / MIGRAM_TARGET_PAGE_SIZE),
		(size_t)(b->page_size / MIGRAM_TARGET_PAGE_SIZE));
	pc->st.placed_pages++;
	if (pl->preempt)
		pc->st.preempt_pages++;
	times = g_hash_table_size(pc->waiting)
			? g_hash_table_lookup(pc->waiting, b->host + off)
			: NULL;
	if (!times) {
		pc->st.pushed_pages++;
	} else {
		for (guint i = 0; i < times->len; i++) {
			uint64_t us =
				(uint64_t)(now -
					   g_array_index(times, gint64, i));

			pc->st.blocked_us += us;
			pc->st.latency_hist[latency_bucket(us)]++;
			pc->st.latency_max_us = MAX(pc->st.latency_max_us, us);
		}
		g_hash_table_remove(pc->waiting, b->host + off);
	}
	pthread_mutex_unlock(&pc->lock);
}

static bool place_host_page(DstPostcopy *pc, DstPlacer *pl, DstBlock *b,
			    uint64_t off, const void *src, bool zero,
			    uint64_t at, GError **error)
{
	int rc;

	if (migram_bitmap_test_bit_atomic(
		    b->receivedmap, (size_t)(off / MIGRAM_TARGET_PAGE_SIZE))) {
		pthread_mutex_lock(&pc->lock);
		pc->st.duplicate_pages++;
		pthread_mutex_unlock(&pc->lock);
		return true;
	}
	rc = place_page(pc, b, off, src, zero);
	if (rc == EEXIST) {
		pthread_mutex_lock(&pc->lock);
		pc->st.duplicate_pages++;
		pthread_mutex_unlock(&pc->lock);
		return true;
	}
	if (rc)
		return migram_stream_fail(
			error, MIGRAM_ERROR_IO, at,
			"placing ramblock '%s' page %#" G_GINT64_MODIFIER
			"x: %s: %s",
			b->idstr, off,
			zero && b->zeroable ? "UFFDIO_ZEROPAGE" : "UFFDIO_COPY",
			g_strerror(rc));
	placed(pc, pl, b, off);
	return true;
}

void *migram_postcopy_placer_buffer(DstPostcopy *pc, DstPlacer *pl,
				    const char *idstr, uint64_t offset)
{
	DstBlock *b = block_by_name(pc, idstr);

	if (!pl->buf) {
		pl->cap = pc->max_page;
		pl->buf = mmap(NULL, pl->cap, PROT_READ | PROT_WRITE,
			       /* cppcheck-suppress invalidFunctionArg ; -1 */
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (pl->buf == MAP_FAILED) {
			pl->buf = NULL;
			return NULL;
		}
	}
	if (!b || b->page_size == MIGRAM_TARGET_PAGE_SIZE)
		return pl->buf;
	return pl->buf + offset % b->page_size;
}

bool migram_postcopy_place(DstPostcopy *pc, DstPlacer *pl, const char *idstr,
			   uint64_t offset, bool zero, uint64_t at,
			   GError **error)
{
	DstBlock *b = block_by_name(pc, idstr);
	uint64_t hp, base;

	if (!b)
		return migram_stream_fail(error, MIGRAM_ERROR_NOT_FOUND, at,
					  "postcopy page for unknown ramblock "
					  "'%s'",
					  idstr);
	if (offset % MIGRAM_TARGET_PAGE_SIZE || offset >= b->length ||
	    b->length - offset < MIGRAM_TARGET_PAGE_SIZE)
		return migram_stream_fail(
			error, MIGRAM_ERROR_PROTOCOL, at,
			"postcopy page at offset %#" G_GINT64_MODIFIER
			"x is outside ramblock '%s' (postcopy length "
			"%#" G_GINT64_MODIFIER "x)",
			offset, idstr, b->length);
	if (b->page_size == MIGRAM_TARGET_PAGE_SIZE)
		return place_host_page(pc, pl, b, offset, pl->buf, zero, at,
				       error);
	/* Huge page: target pages arrive in order; place when complete. */
	hp = b->page_size / MIGRAM_TARGET_PAGE_SIZE;
	base = offset - offset % b->page_size;
	if (offset % b->page_size == 0) {
		pl->block = b;
		pl->base = base;
		pl->count = 0;
		pl->all_zero = true;
	} else if (pl->block != b || pl->base != base ||
		   pl->count != (offset - base) / MIGRAM_TARGET_PAGE_SIZE) {
		return migram_stream_fail(
			error, MIGRAM_ERROR_PROTOCOL, at,
			"postcopy page %#" G_GINT64_MODIFIER
			"x of ramblock '%s' is not the next one of its huge "
			"page",
			offset, idstr);
	}
	if (zero)
		memset(pl->buf + offset % b->page_size, 0,
		       MIGRAM_TARGET_PAGE_SIZE);
	pl->all_zero &= zero;
	if (++pl->count < hp)
		return true;
	pl->block = NULL;
	return place_host_page(pc, pl, b, base, pl->buf, pl->all_zero, at,
			       error);
}

/* ---- the end, recovery, stats ---- */

bool migram_postcopy_dst_complete(DstPostcopy *pc, uint64_t at, GError **error)
{
	uint64_t missing = 0;
	const char *first = NULL;

	for (guint i = 0; i < pc->blocks->len; i++) {
		DstBlock *b = &g_array_index(pc->blocks, DstBlock, i);
		size_t got = migram_bitmap_count(b->receivedmap, 0,
						 (size_t)b->pages);

		if (got < b->pages && !first)
			first = b->idstr;
		missing += b->pages - got;
	}
	if (missing)
		return migram_stream_fail(
			error, MIGRAM_ERROR_PROTOCOL, at,
			"postcopy ended with %" G_GUINT64_FORMAT
			" pages never received (first in "
			"ramblock '%s')",
			missing, first);
	stop_fault_thread(pc);
	unregister_all(pc);
	pc->state = DST_END;
	return true;
}

bool migram_postcopy_dst_send_bitmap(DstPostcopy *pc, const guint8 *data,
				     size_t len, uint64_t at, GError **error)
{
	char name[256];
	DstBlock *b;
	bool ok = false;

	if (len < 2 || data[0] != len - 1)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "RECV_BITMAP of %zu bytes: bad block "
					  "name",
					  len);
	memcpy(name, data + 1, len - 1);
	name[len - 1] = '\0';
	if (strlen(name) != len - 1)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "RECV_BITMAP: NUL in the block name");
	b = block_by_name(pc, name);
	if (!b || pc->state < DST_LISTENING)
		return migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
					  "RECV_BITMAP for %s ramblock '%s'",
					  b ? "a not yet listening" : "unknown",
					  name);
	pthread_mutex_lock(&pc->rp_lock);
	if (!pc->rp) {
		migram_stream_fail(error, MIGRAM_ERROR_PROTOCOL, at,
				   "RECV_BITMAP for ramblock '%s' without a "
				   "return path",
				   name);
	} else {
		migram_rp_write_bitmap(pc->rp, b->idstr, b->receivedmap,
				       b->pages);
		ok = migram_channel_flush(pc->rp, error);
		if (!ok)
			g_prefix_error(error,
				       "stream byte %" G_GUINT64_FORMAT
				       ": RECV_BITMAP for ramblock '%s': "
				       "return path: ",
				       at, name);
	}
	pthread_mutex_unlock(&pc->rp_lock);
	return ok;
}

void migram_postcopy_dst_rerequest(DstPostcopy *pc)
{
	pthread_mutex_lock(&pc->rp_lock);
	for (guint i = 0; i < pc->blocks->len; i++) {
		DstBlock *b = &g_array_index(pc->blocks, DstBlock, i);
		uint64_t hp = b->page_size / MIGRAM_TARGET_PAGE_SIZE;

		for (size_t p =
			     migram_bitmap_find_next_set(b->requested,
							 (size_t)b->pages, 0);
		     p < b->pages;
		     p = migram_bitmap_find_next_set(b->requested,
						     (size_t)b->pages, p + hp))
			if (!migram_bitmap_test_bit_atomic(b->receivedmap, p))
				send_request(pc, b,
					     (uint64_t)p *
						     MIGRAM_TARGET_PAGE_SIZE);
	}
	pthread_mutex_unlock(&pc->rp_lock);
}

void migram_postcopy_dst_set_paused(DstPostcopy *pc, bool paused, bool done)
{
	pthread_mutex_lock(&pc->lock);
	pc->st.paused = paused;
	if (done)
		pc->st.recoveries++;
	pthread_mutex_unlock(&pc->lock);
}

uint64_t migram_postcopy_latency_quantile(const uint64_t *hist, uint64_t max_us,
					  unsigned int permille)
{
	uint64_t n = 0, rank, seen = 0;

	for (unsigned int i = 0; i < MIGRAM_LATENCY_BUCKETS; i++)
		n += hist[i];
	if (!n)
		return 0;
	rank = n * permille / 1000; /* 0-based, as in a sorted array */
	for (unsigned int i = 0; i < MIGRAM_LATENCY_BUCKETS; i++) {
		seen += hist[i];
		if (seen > rank)
			return i + 1 < MIGRAM_LATENCY_BUCKETS
				       ? MIN((UINT64_C(1) << (i + 1)) - 1,
					     max_us)
				       : max_us; /* the last is open-ended */
	}
	return max_us;
}

/* A copy under the lock; the quantiles from the copy, outside it. */
void migram_postcopy_dst_stats(DstPostcopy *pc, MigramPostcopyStats *out)
{
	pthread_mutex_lock(&pc->lock);
	*out = pc->st;
	pthread_mutex_unlock(&pc->lock);
	out->latency_p50_us = migram_postcopy_latency_quantile(
		out->latency_hist, out->latency_max_us, 500);
	out->latency_p99_us = migram_postcopy_latency_quantile(
		out->latency_hist, out->latency_max_us, 990);
}
