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
 * Classic mode.  GET returns the marks and re-arms the pages at once.
 * A write after the GET is marked again, so nothing is lost; the cost is
 * re-arming pages the sender will not send for a while.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "migram-common.h"
#include "migram/bitmap.h"
#include "migram/dirty-log-kvm.h"
#include "migram/migram.h"

_Static_assert(sizeof(unsigned long) == sizeof(uint64_t),
	       "KVM dirty bitmaps are arrays of 64-bit words");

typedef struct {
	MigramRamBlock *block;
	uint32_t slot;
	uint64_t gpa;
	uint64_t host;
	uint64_t bytes;
	uint64_t npages;
	unsigned long *bitmap;  /* GET_DIRTY_LOG's buffer, npages bits */
	unsigned long *scratch; /* CLEAR_DIRTY_LOG's buffer */
	bool logging;
} KvmSlot;

struct MigramKvmLog {
	int vm_fd;
	bool manual;
	GArray *slots; /* KvmSlot */
};

static bool io_error(GError **error, const char *what, int err)
{
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO, "%s: %s", what,
		    g_strerror(err));
	return false;
}

static MigramKvmLog *kvm_log_new(int vm_fd, bool try_manual, GError **error)
{
	MigramKvmLog *log;
	bool manual = false;
	int r;

	if (sysconf(_SC_PAGESIZE) != MIGRAM_TARGET_PAGE_SIZE) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			    "KVM dirty log: host page size %ld is not 4 KiB",
			    sysconf(_SC_PAGESIZE));
		return NULL;
	}
	r = ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY);
	if (r < 0) {
		io_error(error, "KVM_CHECK_EXTENSION", errno);
		return NULL;
	}
	if (r == 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			    "KVM lacks user memory slots and dirty logging");
		return NULL;
	}
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
	log = g_new0(MigramKvmLog, 1);
	log->vm_fd = vm_fd;
	log->manual = manual;
	log->slots = g_array_new(false, true, sizeof(KvmSlot));
	return log;
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

MIGRAM_EXPORT void migram_kvm_log_free(MigramKvmLog *log)
{
	if (!log)
		return;
	for (guint i = 0; i < log->slots->len; i++) {
		KvmSlot *s = &g_array_index(log->slots, KvmSlot, i);

		migram_bitmap_free(s->bitmap);
		migram_bitmap_free(s->scratch);
	}
	g_array_free(log->slots, true);
	g_free(log);
}

MIGRAM_EXPORT bool migram_kvm_log_manual_protect(const MigramKvmLog *log)
{
	return log->manual;
}

MIGRAM_EXPORT bool migram_kvm_log_add_slot(MigramKvmLog *log,
					   MigramRamBlock *block, uint32_t slot,
					   uint64_t guest_phys_addr,
					   GError **error)
{
	uint64_t host = (uint64_t)(uintptr_t)migram_ram_block_host(block);
	uint64_t bytes = migram_ram_block_used_length(block);
	KvmSlot s = { 0 };

	for (guint i = 0; i < log->slots->len; i++) {
		const KvmSlot *o = &g_array_index(log->slots, KvmSlot, i);

		if (o->block == block || o->slot == slot) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_EXISTS,
				    "KVM dirty log: ramblock '%s' or slot %u "
				    "already added",
				    migram_ram_block_idstr(block), slot);
			return false;
		}
	}
	if (!bytes || bytes % MIGRAM_TARGET_PAGE_SIZE ||
	    host % MIGRAM_TARGET_PAGE_SIZE ||
	    guest_phys_addr % MIGRAM_TARGET_PAGE_SIZE) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "KVM dirty log: ramblock '%s' (length %#" PRIx64
			    ", gpa %#" PRIx64 ") is not page-aligned",
			    migram_ram_block_idstr(block), bytes,
			    guest_phys_addr);
		return false;
	}
	s.block = block;
	s.slot = slot;
	s.gpa = guest_phys_addr;
	s.host = host;
	s.bytes = bytes;
	s.npages = bytes / MIGRAM_TARGET_PAGE_SIZE;
	/* Whole 64-bit words: KVM reads and writes them. */
	s.bitmap = migram_bitmap_new((size_t)s.npages);
	s.scratch = migram_bitmap_new((size_t)s.npages);
	g_array_append_val(log->slots, s);
	return true;
}

static KvmSlot *find_slot(MigramKvmLog *log, const MigramRamBlock *b,
			  GError **error)
{
	for (guint i = 0; i < log->slots->len; i++) {
		KvmSlot *s = &g_array_index(log->slots, KvmSlot, i);

		if (s->block != b)
			continue;
		if (migram_ram_block_used_length(b) != s->bytes) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
				    "KVM dirty log: ramblock '%s' was resized "
				    "since its slot %u was added",
				    migram_ram_block_idstr(b), s->slot);
			return NULL;
		}
		return s;
	}
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND,
		    "KVM dirty log: no memslot added for ramblock '%s'",
		    migram_ram_block_idstr(b));
	return NULL;
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

static bool kvm_start(void *opaque, MigramRamBlock *b, GError **error)
{
	MigramKvmLog *log = opaque;
	KvmSlot *s = find_slot(log, b, error);

	if (!s)
		return false;
	return set_logging(log, s, true, error);
}

static bool kvm_sync(void *opaque, MigramRamBlock *b, unsigned long *collected,
		     uint64_t *newly, GError **error)
{
	MigramKvmLog *log = opaque;
	KvmSlot *s = find_slot(log, b, error);
	struct kvm_dirty_log get = { 0 };

	if (!s)
		return false;
	get.slot = s->slot;
	get.dirty_bitmap = s->bitmap;
	if (ioctl(log->vm_fd, KVM_GET_DIRTY_LOG, &get) < 0)
		return io_error(error, "KVM_GET_DIRTY_LOG", errno);
	*newly = migram_bitmap_or_collect(collected, s->bitmap, 0,
					  (size_t)s->npages);
	return true;
}

/* Bits [lo, hi) of a 64-bit word, 0 <= lo < hi <= 64. */
static unsigned long word_range(uint64_t lo, uint64_t hi)
{
	unsigned long m = ~0UL << lo;

	if (hi < MIGRAM_BITS_PER_LONG)
		m &= ~(~0UL << hi);
	return m;
}

static bool kvm_clear(void *opaque, MigramRamBlock *b, uint64_t first,
		      uint64_t npages, const unsigned long *mask,
		      GError **error)
{
	MigramKvmLog *log = opaque;
	KvmSlot *s;
	struct kvm_clear_dirty_log clr = { 0 };
	uint64_t end, lo, hi, w0, nw;
	bool any = false;

	if (!log->manual)
		return true; /* classic: GET re-armed already */
	s = find_slot(log, b, error);
	if (!s)
		return false;
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
	}
	if (!any)
		return true;
	clr.slot = s->slot;
	clr.first_page = lo;
	clr.num_pages = (uint32_t)(hi - lo);
	clr.dirty_bitmap = s->scratch;
	if (ioctl(log->vm_fd, KVM_CLEAR_DIRTY_LOG, &clr) < 0)
		return io_error(error, "KVM_CLEAR_DIRTY_LOG", errno);
	return true;
}

static void kvm_stop(void *opaque, MigramRamBlock *b)
{
	MigramKvmLog *log = opaque;
	KvmSlot *s = find_slot(log, b, NULL);

	if (s && s->logging)
		(void)set_logging(log, s, false, NULL);
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
