/* SPDX-License-Identifier: MIT */
/*
 * The KVM dirty-log source.
 *
 * Each added slot keeps a bitmap of its pages, which KVM_GET_DIRTY_LOG
 * fills (KVM requires a buffer of whole 64-bit words), and a scratch
 * buffer for KVM_CLEAR_DIRTY_LOG.
 *
 * Manual-protect mode.  GET returns the pages written since their last
 * clear (or, with KVM_DIRTY_LOG_INITIALLY_SET, all pages the first time)
 * and leaves them marked; CLEAR write-protects the pages given and drops
 * their marks.  KVM's rules for CLEAR: first_page a multiple of 64, and
 * num_pages a multiple of 64 or reaching the end of the slot.  So the
 * range is widened to those bounds, and the bits outside the caller's
 * range are zero: only the mask's pages are re-armed.
 *
 * Several slots per block (migram_kvm_log_add_slot_range(), x86's RAM
 * split around the PCI hole): each covers pages [first, first + npages)
 * of its block, first a multiple of 64, so its bits start on a word of
 * the block's collected bitmap and of the caller's clear mask.  Every
 * operation on a block visits each of its slots.
 *
 * Classic mode.  GET returns the marks and re-arms the pages at once: a
 * write after it is marked again (at the cost of re-arming early).
 *
 * Ring mode.  Each vCPU's ring is an array of {flags, slot, offset}
 * entries that KVM fills in order: it writes slot and offset, then sets
 * DIRTY in flags (after a write barrier).  A harvest walks each ring from
 * where the last one stopped, reads flags with acquire ordering, takes
 * slot and offset of each DIRTY entry into the slot's bitmap (here a
 * "pending" bitmap: pages harvested but not yet handed to a sync), and
 * sets the entry to RESET.  KVM_RESET_DIRTY_RINGS then re-protects those
 * pages and recycles the entries.  A sync harvests, then moves the
 * pending bits into the caller's bitmap.  Why no write is lost: a guest
 * write to a protected page faults, and KVM publishes its entry before
 * the write completes.  So a write that happened before a sync's harvest
 * read the ring is in the ring (or, when KVM's page-modification log
 * buffers it, reaches the ring at the vCPU's next exit, so at the latest
 * for the final sync, which runs with every vCPU out of KVM_RUN).  A write
 * between the harvest and the reset hits a page that is still writable
 * and adds no entry, but that page is in the collected bitmap, and the
 * sender reads it only after this sync returned, so after the write.  A
 * write after the reset faults again and lands in the next harvest.
 */
#include <errno.h>
#include <signal.h>
#include <pthread.h>
#include <inttypes.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/dirty-log-kvm.h"
#include "migram/migram.h"

_Static_assert(sizeof(unsigned long) == sizeof(uint64_t),
	       "KVM dirty bitmaps are arrays of 64-bit words");

#define DEFAULT_RING_ENTRIES 4096u

typedef enum {
	MODE_CLASSIC,
	MODE_MANUAL,
	MODE_RING
} KvmLogMode;

typedef struct {
	MigramRamBlock *block;
	uint64_t first; /* the block's page at the slot's page 0 */
	bool whole;     /* add_slot: the whole used_length */
	uint32_t slot;
	uint64_t gpa;
	uint64_t host;
	uint64_t bytes;
	uint64_t npages;
	unsigned long *bitmap;  /* GET_DIRTY_LOG's buffer; ring: pending */
	unsigned long *scratch; /* CLEAR_DIRTY_LOG's buffer */
	bool logging;
} KvmSlot;

typedef struct {
	struct kvm_dirty_gfn *gfns;
	uint32_t fetch; /* next entry to look at, modulo the ring size */
} KvmRing;

struct MigramKvmLog {
	int vm_fd;
	KvmLogMode mode;
	uint32_t ring_entries;
	pthread_mutex_t lock; /* slots' bitmaps, rings, stats */
	GArray *slots;        /* KvmSlot */
	GArray *rings;        /* KvmRing */
	bool overflowed;      /* a ring was found full since logging started */
	bool reset_short; /* KVM reset fewer entries than were handed back */
	uint64_t unreset; /* entries marked RESET, not yet counted by KVM */
	MigramKvmLogStats stats;
};

static bool io_error(GError **error, const char *what, int err)
{
	return migram_error_errno(error, MIGRAM_ERROR_IO, err, "%s", what);
}

static MigramKvmLog *log_alloc(int vm_fd, KvmLogMode mode)
{
	MigramKvmLog *log = g_new0(MigramKvmLog, 1);

	log->vm_fd = vm_fd;
	log->mode = mode;
	pthread_mutex_init(&log->lock, NULL);
	log->slots = g_array_new(false, true, sizeof(KvmSlot));
	log->rings = g_array_new(false, true, sizeof(KvmRing));
	return log;
}

/* The page size and KVM_CAP_USER_MEMORY; false with error set. */
static bool check_basics(int vm_fd, GError **error)
{
	int r;

	if (sysconf(_SC_PAGESIZE) != MIGRAM_TARGET_PAGE_SIZE) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			    "KVM dirty log: host page size %ld is not 4 KiB",
			    sysconf(_SC_PAGESIZE));
		return false;
	}
	r = ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY);
	if (r < 0)
		return io_error(error, "KVM_CHECK_EXTENSION", errno);
	if (r == 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			    "KVM lacks user memory slots and dirty logging");
		return false;
	}
	return true;
}

static MigramKvmLog *kvm_log_new(int vm_fd, bool try_manual, GError **error)
{
	bool manual = false;
	int r;

	if (!check_basics(vm_fd, error))
		return NULL;
	r = try_manual ? ioctl(vm_fd, KVM_CHECK_EXTENSION,
			       KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)
		       : 0;
	if (r > 0) {
		struct kvm_enable_cap cap = {
			.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
		};

		cap.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
		if ((unsigned int)r & KVM_DIRTY_LOG_INITIALLY_SET)
			cap.args[0] |= KVM_DIRTY_LOG_INITIALLY_SET;
		if (ioctl(vm_fd, KVM_ENABLE_CAP, &cap) < 0) {
			io_error(error,
				 "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)",
				 errno);
			return NULL;
		}
		manual = true;
	}
	return log_alloc(vm_fd, manual ? MODE_MANUAL : MODE_CLASSIC);
}

MIGRAM_EXPORT MigramKvmLog *migram_kvm_log_new(int vm_fd, GError **error)
{
	return kvm_log_new(vm_fd, true, error);
}

MIGRAM_EXPORT MigramKvmLog *migram_kvm_log_new_classic(int vm_fd,
						       GError **error)
{
	return kvm_log_new(vm_fd, false, error);
}

MIGRAM_EXPORT MigramKvmLog *
migram_kvm_log_new_ring(int vm_fd, uint32_t ring_entries, GError **error)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_DIRTY_LOG_RING };
	MigramKvmLog *log;
	uint64_t bytes;
	int max;

	if (!check_basics(vm_fd, error))
		return NULL;
	if (ring_entries & (ring_entries - 1)) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "KVM dirty ring: %u entries is not a power of two",
			    ring_entries);
		return NULL;
	}
	/* KVM_CHECK_EXTENSION answers the largest ring, in bytes. */
	max = ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);
	if (max <= 0) {
		g_set_error(
			error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			"KVM lacks the dirty ring (KVM_CAP_DIRTY_LOG_RING)");
		return NULL;
	}
	bytes = (uint64_t)(ring_entries ? ring_entries : DEFAULT_RING_ENTRIES) *
		sizeof(struct kvm_dirty_gfn);
	bytes = MIN(bytes, (uint64_t)max);
	cap.args[0] = bytes;
	if (ioctl(vm_fd, KVM_ENABLE_CAP, &cap) < 0) {
		io_error(error, "KVM_ENABLE_CAP(DIRTY_LOG_RING)", errno);
		return NULL;
	}
	log = log_alloc(vm_fd, MODE_RING);
	log->ring_entries = (uint32_t)(bytes / sizeof(struct kvm_dirty_gfn));
	return log;
}

MIGRAM_EXPORT bool migram_kvm_log_add_vcpu(MigramKvmLog *log, int vcpu_fd,
					   GError **error)
{
	size_t bytes = (size_t)log->ring_entries * sizeof(struct kvm_dirty_gfn);
	KvmRing r = { 0 };
	void *p;

	if (log->mode != MODE_RING) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "KVM dirty log: vCPU rings need ring mode");
		return false;
	}
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd,
		 (off_t)KVM_DIRTY_LOG_PAGE_OFFSET * MIGRAM_TARGET_PAGE_SIZE);
	if (p == MAP_FAILED)
		return io_error(error, "mmap of the vCPU's dirty ring", errno);
	r.gfns = p;
	pthread_mutex_lock(&log->lock);
	g_array_append_val(log->rings, r);
	pthread_mutex_unlock(&log->lock);
	return true;
}

MIGRAM_EXPORT void migram_kvm_log_free(MigramKvmLog *log)
{
	if (!log)
		return;
	for (guint i = 0; i < log->slots->len; i++) {
		KvmSlot *s = &g_array_index(log->slots, KvmSlot, i);

		migram_bitmap_free(s->bitmap);
		migram_bitmap_free(s->scratch);
	}
	for (guint i = 0; i < log->rings->len; i++)
		munmap(g_array_index(log->rings, KvmRing, i).gfns,
		       (size_t)log->ring_entries *
			       sizeof(struct kvm_dirty_gfn));
	g_array_free(log->slots, true);
	g_array_free(log->rings, true);
	pthread_mutex_destroy(&log->lock);
	g_free(log);
}

MIGRAM_EXPORT bool migram_kvm_log_manual_protect(const MigramKvmLog *log)
{
	return log->mode == MODE_MANUAL;
}

MIGRAM_EXPORT bool migram_kvm_log_ring(const MigramKvmLog *log)
{
	return log->mode == MODE_RING;
}

MIGRAM_EXPORT void migram_kvm_log_get_stats(MigramKvmLog *log,
					    MigramKvmLogStats *stats)
{
	pthread_mutex_lock(&log->lock);
	*stats = log->stats;
	pthread_mutex_unlock(&log->lock);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A slot over block pages [first, first + bytes / 4 KiB); checked. */
static bool add_slot(MigramKvmLog *log, MigramRamBlock *block, uint64_t offset,
		     uint64_t bytes, bool whole, uint32_t slot,
		     uint64_t guest_phys_addr, GError **error)
{
	uint64_t host = (uint64_t)(uintptr_t)migram_ram_block_host(block) +
			offset;
	KvmSlot s = { 0 };

	for (guint i = 0; i < log->slots->len; i++) {
		const KvmSlot *o = &g_array_index(log->slots, KvmSlot, i);
		uint64_t o_end = (o->first + o->npages) *
				 MIGRAM_TARGET_PAGE_SIZE;

		if (o->slot == slot ||
		    (o->block == block &&
		     (whole || o->whole ||
		      (offset < o_end &&
		       o->first * MIGRAM_TARGET_PAGE_SIZE < offset + bytes)))) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_EXISTS,
				    "KVM dirty log: slot %u, or ramblock '%s' "
				    "at %#" PRIx64 "+%#" PRIx64
				    ", already added",
				    slot, migram_ram_block_idstr(block), offset,
				    bytes);
			return false;
		}
	}
	if (!bytes || bytes % MIGRAM_TARGET_PAGE_SIZE ||
	    host % MIGRAM_TARGET_PAGE_SIZE ||
	    guest_phys_addr % MIGRAM_TARGET_PAGE_SIZE ||
	    offset % (MIGRAM_TARGET_PAGE_SIZE * MIGRAM_BITS_PER_LONG) ||
	    offset > migram_ram_block_used_length(block) ||
	    bytes > migram_ram_block_used_length(block) - offset) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "KVM dirty log: ramblock '%s' at %#" PRIx64
			    " (length %#" PRIx64 ", gpa %#" PRIx64
			    ") is not page-aligned, its offset not a multiple "
			    "of 256 KiB, or it passes the block",
			    migram_ram_block_idstr(block), offset, bytes,
			    guest_phys_addr);
		return false;
	}
	s.block = block;
	s.first = offset / MIGRAM_TARGET_PAGE_SIZE;
	s.whole = whole;
	s.slot = slot;
	s.gpa = guest_phys_addr;
	s.host = host;
	s.bytes = bytes;
	s.npages = bytes / MIGRAM_TARGET_PAGE_SIZE;
	/* Whole 64-bit words: KVM reads and writes them. */
	s.bitmap = migram_bitmap_new((size_t)s.npages);
	s.scratch = migram_bitmap_new((size_t)s.npages);
	if (!s.bitmap || !s.scratch) {
		migram_bitmap_free(s.bitmap);
		migram_bitmap_free(s.scratch);
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
			    "KVM dirty log: ramblock '%s': cannot allocate "
			    "bitmaps for %" PRIu64 " pages",
			    migram_ram_block_idstr(block), s.npages);
		return false;
	}
	pthread_mutex_lock(&log->lock);
	g_array_append_val(log->slots, s);
	pthread_mutex_unlock(&log->lock);
	return true;
}

MIGRAM_EXPORT bool migram_kvm_log_add_slot(MigramKvmLog *log,
					   MigramRamBlock *block, uint32_t slot,
					   uint64_t guest_phys_addr,
					   GError **error)
{
	return add_slot(log, block, 0, migram_ram_block_used_length(block),
			true, slot, guest_phys_addr, error);
}

MIGRAM_EXPORT bool
migram_kvm_log_add_slot_range(MigramKvmLog *log, MigramRamBlock *block,
			      uint64_t offset, uint64_t size, uint32_t slot,
			      uint64_t guest_phys_addr, GError **error)
{
	if (!log || !block) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "KVM dirty log: NULL %s", log ? "block" : "log");
		return false;
	}
	return add_slot(log, block, offset, size, false, slot, guest_phys_addr,
			error);
}

/* The next slot of @p b at or after index *i (advanced past it), or NULL. */
static KvmSlot *next_slot(MigramKvmLog *log, const MigramRamBlock *b, guint *i)
{
	while (*i < log->slots->len) {
		KvmSlot *s = &g_array_index(log->slots, KvmSlot, (*i)++);

		if (s->block == b)
			return s;
	}
	return NULL;
}

/* Every slot of @p b still fits it; false (error set) when none or not. */
static bool check_slots(MigramKvmLog *log, const MigramRamBlock *b,
			GError **error)
{
	uint64_t used = migram_ram_block_used_length(b);
	guint i = 0, n = 0;

	for (KvmSlot *s; (s = next_slot(log, b, &i)) != NULL; n++) {
		if (s->whole
			    ? used != s->bytes
			    : (s->first + s->npages) * MIGRAM_TARGET_PAGE_SIZE >
				      used) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
				    "KVM dirty log: ramblock '%s' was resized "
				    "since its slot %u was added",
				    migram_ram_block_idstr(b), s->slot);
			return false;
		}
	}
	if (!n)
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND,
			    "KVM dirty log: no memslot added for ramblock '%s'",
			    migram_ram_block_idstr(b));
	return n != 0;
}

static bool set_logging(MigramKvmLog *log, KvmSlot *s, bool on, GError **error)
{
	struct kvm_userspace_memory_region region = {
		.slot = s->slot,
		.flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0,
		.guest_phys_addr = s->gpa,
		.memory_size = s->bytes,
		.userspace_addr = s->host,
	};

	if (ioctl(log->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return io_error(error, "KVM_SET_USER_MEMORY_REGION", errno);
	s->logging = on;
	return true;
}

/* The slot numbered @p slot (as KVM reports it), or NULL. */
static KvmSlot *slot_by_number(MigramKvmLog *log, uint32_t slot)
{
	for (guint i = 0; i < log->slots->len; i++) {
		KvmSlot *s = &g_array_index(log->slots, KvmSlot, i);

		if (s->slot == slot)
			return s;
	}
	return NULL;
}

/*
 * Hand the harvested entries back: KVM_RESET_DIRTY_RINGS re-protects their
 * pages.  Lock held.
 *
 * Signals are blocked around the ioctl.  A kernel that stops its reset
 * walk when a signal is pending (Linux 6.16 on: "return -EINTR" inside
 * kvm_dirty_ring_reset()) has already marked the entries of the batch it
 * was gathering as reset (flags 0, reset index past them) without
 * re-protecting their pages: those pages stay writable with no entry in
 * any ring, and a write to one after the sender read it is lost.  A
 * blocked signal does not make signal_pending() true, so the walk runs to
 * its end.  The vCPU threads that harvest on KVM_EXIT_DIRTY_RING_FULL are
 * the ones a VMM kicks with signals.
 *
 * The ioctl answers how many entries it reset.  Fewer than were handed
 * back (the walk found an entry not marked reset, or stopped for a signal
 * that cannot be blocked) leaves pages whose protection is unknown: the
 * log is poisoned, as for an overflow, and every later sync fails.
 */
static bool reset_locked(MigramKvmLog *log, GError **error)
{
	sigset_t all, old;
	bool interrupted = false;
	int err = 0;

	if (!log->unreset)
		return true;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	while (log->unreset) {
		int r = ioctl(log->vm_fd, KVM_RESET_DIRTY_RINGS, 0);

		/* Only SIGKILL or SIGSTOP get here: a batch may be lost. */
		if (r < 0 && errno == EINTR) {
			interrupted = true;
			continue;
		}
		if (r <= 0) {
			err = r < 0 ? errno : 0;
			break;
		}
		log->unreset -= MIN((uint64_t)r, log->unreset);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		return io_error(error, "KVM_RESET_DIRTY_RINGS", err);
	if (log->unreset || interrupted) {
		log->reset_short = true;
		log->unreset = 0;
	}
	return true;
}

/* Harvest every ring into the slots' pending bitmaps; lock held. */
static bool harvest_locked(MigramKvmLog *log, uint64_t *harvested,
			   GError **error)
{
	const uint32_t mask = log->ring_entries - 1;
	uint64_t t0 = now_ns(), n = 0;
	KvmSlot *cached = NULL;

	bool overflow = false;

	for (guint i = 0; i < log->rings->len; i++) {
		KvmRing *r = &g_array_index(log->rings, KvmRing, i);
		uint32_t from = r->fetch;

		for (;;) {
			struct kvm_dirty_gfn *e = &r->gfns[r->fetch & mask];
			uint32_t flags;

			/*
			 * As many entries as the ring holds since the last
			 * reset: the ring was full, so the kernel may have
			 * written over entries not yet read (see below).
			 * Stop here: the vCPU may still be pushing, and an
			 * entry past this one is the same slot again.
			 */
			if (r->fetch - from == log->ring_entries) {
				overflow = true;
				break;
			}
			flags = __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);
			if (!(flags & KVM_DIRTY_GFN_F_DIRTY))
				break;
			if (!cached || cached->slot != e->slot)
				cached = slot_by_number(log, e->slot);
			if (cached && e->offset < cached->npages)
				migram_bitmap_set_bit(cached->bitmap,
						      (size_t)e->offset);
			else
				log->stats.dropped_entries++;
			/* The entry's fields are read: hand it back. */
			__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET,
					 __ATOMIC_RELEASE);
			r->fetch++;
			n++;
		}
		/*
		 * Every entry was DIRTY: the ring was full.  KVM stops a vCPU
		 * at a soft limit that keeps entries in reserve, so a full
		 * ring means the kernel went past it, and a push into a full
		 * ring overwrites an entry not yet harvested.  The test was
		 * once "exactly ring_entries" after the walk: a vCPU that
		 * kept pushing while the walk went on made it read more than
		 * that, and a ring that had lost entries passed as sound.
		 */
	}
	log->unreset += n;
	if (!reset_locked(log, error))
		return false;
	log->stats.harvests++;
	log->stats.harvested += n;
	log->stats.harvest_ns += now_ns() - t0;
	if (harvested)
		*harvested = n;
	if (overflow) {
		log->stats.ring_overflows++;
		log->overflowed = true;
	}
	if (log->overflowed) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "KVM dirty ring overflowed (a ring was found "
			    "full): the kernel ran a vCPU past the soft "
			    "limit, and writes may have been lost");
		return false;
	}
	if (log->reset_short) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "KVM dirty ring: KVM_RESET_DIRTY_RINGS reset fewer "
			    "entries than were harvested, so some pages may "
			    "be writable without a ring entry, and writes may "
			    "have been lost");
		return false;
	}
	return true;
}

MIGRAM_EXPORT bool migram_kvm_log_harvest(MigramKvmLog *log,
					  uint64_t *harvested, GError **error)
{
	bool ok = true;

	if (harvested)
		*harvested = 0;
	if (log->mode != MODE_RING)
		return true;
	pthread_mutex_lock(&log->lock);
	ok = harvest_locked(log, harvested, error);
	pthread_mutex_unlock(&log->lock);
	return ok;
}

/* Sync with the lock held: s->bitmap holds the pages to collect. */
static bool sync_locked(MigramKvmLog *log, KvmSlot *s, GError **error)
{
	struct kvm_dirty_log get = { 0 };

	if (log->mode == MODE_RING)
		return harvest_locked(log, NULL, error);
	get.slot = s->slot;
	get.dirty_bitmap = s->bitmap;
	if (ioctl(log->vm_fd, KVM_GET_DIRTY_LOG, &get) < 0)
		return io_error(error, "KVM_GET_DIRTY_LOG", errno);
	return true;
}

static bool kvm_start(void *opaque, MigramRamBlock *b, GError **error)
{
	MigramKvmLog *log = opaque;
	KvmSlot *s;
	bool ok;

	guint i = 0;

	pthread_mutex_lock(&log->lock);
	ok = check_slots(log, b, error);
	while (ok && (s = next_slot(log, b, &i)) != NULL)
		ok = set_logging(log, s, true, error);
	if (ok && log->mode == MODE_RING) {
		/*
		 * Entries from before: not this migration's; drop them.  A
		 * log whose rings overflowed or were reset short stays
		 * failed: its read positions no longer match the kernel's,
		 * and a later harvest would miss entries.  (Clearing the
		 * flag here once let a second migration on the same VM lose
		 * writes.)  Only new vCPUs, so a new log, start afresh.
		 */
		ok = harvest_locked(log, NULL, error);
		if (!ok)
			g_prefix_error(error,
				       "ramblock '%s': cannot start "
				       "logging: ",
				       migram_ram_block_idstr(b));
		for (i = 0; (s = next_slot(log, b, &i)) != NULL;)
			migram_bitmap_clear(s->bitmap, 0, (size_t)s->npages);
	}
	pthread_mutex_unlock(&log->lock);
	return ok;
}

static bool kvm_sync(void *opaque, MigramRamBlock *b, unsigned long *collected,
		     uint64_t *newly, GError **error)
{
	MigramKvmLog *log = opaque;
	KvmSlot *s;
	uint64_t t0 = now_ns(), dt;
	bool ok;

	guint i = 0;

	*newly = 0;
	pthread_mutex_lock(&log->lock);
	ok = check_slots(log, b, error);
	/* Ring mode: one harvest fills every slot's pending bitmap. */
	if (ok && log->mode == MODE_RING)
		ok = harvest_locked(log, NULL, error);
	while (ok && (s = next_slot(log, b, &i)) != NULL) {
		if (log->mode != MODE_RING)
			ok = sync_locked(log, s, error);
		if (!ok)
			break;
		*newly += migram_bitmap_or_collect(
			collected + s->first / MIGRAM_BITS_PER_LONG, s->bitmap,
			0, (size_t)s->npages);
		/* Ring mode: the pending pages are handed over. */
		if (log->mode == MODE_RING)
			migram_bitmap_clear(s->bitmap, 0, (size_t)s->npages);
	}
	dt = now_ns() - t0;
	log->stats.syncs++;
	log->stats.sync_ns += dt;
	log->stats.sync_ns_max = MAX(log->stats.sync_ns_max, dt);
	pthread_mutex_unlock(&log->lock);
	return ok;
}

/* Bits [lo, hi) of a 64-bit word, 0 <= lo < hi <= 64. */
static unsigned long word_range(uint64_t lo, uint64_t hi)
{
	unsigned long m = ~0UL << lo;

	if (hi < MIGRAM_BITS_PER_LONG)
		m &= ~(~0UL << hi);
	return m;
}

static bool clear_locked(MigramKvmLog *log, KvmSlot *s, uint64_t first,
			 uint64_t npages, const unsigned long *mask,
			 GError **error)
{
	struct kvm_clear_dirty_log clr = { 0 };
	uint64_t end, lo, hi, w0, nw, t0, pages = 0;
	bool any = false;

	end = MIN(first + npages, s->npages);
	if (first >= end)
		return true;
	/* KVM: first_page % 64 == 0; num_pages % 64 == 0 or to the end. */
	lo = first & ~(uint64_t)(MIGRAM_BITS_PER_LONG - 1);
	hi = MIN((end + MIGRAM_BITS_PER_LONG - 1) &
			 ~(uint64_t)(MIGRAM_BITS_PER_LONG - 1),
		 s->npages);
	w0 = lo / MIGRAM_BITS_PER_LONG;
	nw = (hi - lo + MIGRAM_BITS_PER_LONG - 1) / MIGRAM_BITS_PER_LONG;
	for (uint64_t i = 0; i < nw; i++) {
		uint64_t base = (w0 + i) * MIGRAM_BITS_PER_LONG;
		uint64_t a = MAX(first, base) - base;
		uint64_t z = MIN(end, base + MIGRAM_BITS_PER_LONG) - base;

		s->scratch[i] = mask[w0 + i] & word_range(a, z);
		any |= s->scratch[i] != 0;
		pages += (uint64_t)__builtin_popcountl(s->scratch[i]);
	}
	if (!any)
		return true;
	clr.slot = s->slot;
	clr.first_page = lo;
	clr.num_pages = (uint32_t)(hi - lo);
	clr.dirty_bitmap = s->scratch;
	t0 = now_ns();
	if (ioctl(log->vm_fd, KVM_CLEAR_DIRTY_LOG, &clr) < 0)
		return io_error(error, "KVM_CLEAR_DIRTY_LOG", errno);
	log->stats.clear_ioctls++;
	log->stats.clear_ns += now_ns() - t0;
	log->stats.clear_pages += pages;
	return true;
}

static bool kvm_clear(void *opaque, MigramRamBlock *b, uint64_t first,
		      uint64_t npages, const unsigned long *mask,
		      GError **error)
{
	MigramKvmLog *log = opaque;
	KvmSlot *s;
	bool ok;

	if (log->mode != MODE_MANUAL)
		return true; /* classic: GET re-armed; ring: the reset did */
	guint i = 0;

	pthread_mutex_lock(&log->lock);
	ok = check_slots(log, b, error);
	while (ok && (s = next_slot(log, b, &i)) != NULL) {
		/* The part of [first, first + npages) in this slot. */
		uint64_t lo = MAX(first, s->first);
		uint64_t hi = MIN(first + npages, s->first + s->npages);

		if (lo < hi)
			ok = clear_locked(log, s, lo - s->first, hi - lo,
					  mask + s->first /
							  MIGRAM_BITS_PER_LONG,
					  error);
	}
	pthread_mutex_unlock(&log->lock);
	return ok;
}

static void kvm_stop(void *opaque, MigramRamBlock *b)
{
	MigramKvmLog *log = opaque;
	KvmSlot *s;

	guint i = 0;

	pthread_mutex_lock(&log->lock);
	while ((s = next_slot(log, b, &i)) != NULL) {
		if (!s->logging)
			continue;
		(void)set_logging(log, s, false, NULL);
		/* Ring mode: what is still pending belongs to no migration. */
		if (log->mode == MODE_RING) {
			(void)harvest_locked(log, NULL, NULL);
			migram_bitmap_clear(s->bitmap, 0, (size_t)s->npages);
		}
	}
	pthread_mutex_unlock(&log->lock);
}

static const MigramLogSourceOps kvm_ops = {
	.name = "kvm",
	.start = kvm_start,
	.sync = kvm_sync,
	.clear = kvm_clear,
	.stop = kvm_stop,
};

MIGRAM_EXPORT void migram_kvm_log_source(MigramKvmLog *log,
					 MigramLogSource *out)
{
	out->ops = &kvm_ops;
	out->opaque = log;
}
