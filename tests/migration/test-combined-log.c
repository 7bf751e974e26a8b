/* SPDX-License-Identifier: MIT */
/*
 * The combined dirty-log source and the shared-log adapter: bad input,
 * that each child is cleared for exactly the pages it reported, the
 * adapter's manual-protect semantics, and a whole migration while three
 * kinds of writers run at once (a KVM vCPU, software marks from device
 * threads, and "back-end" threads marking a shared log through their own
 * mapping of its memfd), compared byte for byte at the end.
 * The KVM writer is left out (with a message) where /dev/kvm is missing.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/kvm.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/dirty-log-combined.h>
#include <migram/dirty-log-kvm.h>
#include <migram/migram.h>
#include <migram/sender.h>
#include <migram/ramblock.h>
#include <migram/shared-log.h>

#include "migram-test-util.h"

#define P 4096u
#define MiB (UINT64_C(1) << 20)

/* --- a recording child ------------------------------------------------- */

/* A manual-protect child over 64 pages that records each clear's mask. */
typedef struct {
	unsigned long marks;   /* pages marked, not yet re-armed */
	unsigned long cleared; /* the last clear's mask, within its range */
	int clears, starts, stops;
	bool fail_start;
} Rec;

static bool rec_start(void *o, MigramRamBlock *b, GError **e)
{
	Rec *r = o;

	(void)b;
	r->starts++;
	if (r->fail_start) {
		g_set_error(e, MIGRAM_ERROR, MIGRAM_ERROR_IO, "rec: no start");
		return false;
	}
	return true;
}

static bool rec_sync(void *o, MigramRamBlock *b, unsigned long *c, uint64_t *n,
		     GError **e)
{
	Rec *r = o;

	(void)b;
	(void)e;
	*n = (uint64_t)__builtin_popcountl(r->marks & ~c[0]);
	c[0] |= r->marks;
	return true;
}

static bool rec_clear(void *o, MigramRamBlock *b, uint64_t first, uint64_t n,
		      const unsigned long *mask, GError **e)
{
	Rec *r = o;
	unsigned long range = (n >= 64 ? ~0UL : ((1UL << n) - 1))
			      << (first % 64);

	(void)b;
	(void)e;
	r->clears++;
	r->cleared = mask[0] & range;
	r->marks &= ~r->cleared;
	return true;
}

static void rec_stop(void *o, MigramRamBlock *b)
{
	(void)b;
	((Rec *)o)->stops++;
}

static const MigramLogSourceOps rec_ops = { "rec", rec_start, rec_sync,
					    rec_clear, rec_stop };

static MigramRamBlock *one_block(MigramRamList **list, uint64_t bytes)
{
	g_autoptr(GError) error = NULL;
	MigramRamBlock *b;

	*list = migram_ram_list_new();
	b = migram_ram_list_add(*list,
				&(MigramRamBlockConfig){ .idstr = "pc.ram",
							 .used_length = bytes },
				&error);
	g_assert_no_error(error);
	return b;
}

/* One list with one block "pc.ram" of @data (a guint) pages; the tear-down
 * frees the list. */
typedef struct {
	MigramRamList *list;
	MigramRamBlock *block;
} Fixture;

static void fx_set_up(Fixture *f, gconstpointer data)
{
	f->block = one_block(&f->list, GPOINTER_TO_UINT(data) * (uint64_t)P);
}

static void fx_tear_down(Fixture *f, gconstpointer data)
{
	(void)data;
	migram_ram_list_free(f->list);
}

static void test_bad_input(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramLogSource kids[33], src;
	Rec r = { 0 };
	MigramRamBlock *b = f->block;
	g_autoptr(MigramCombinedLog) log = NULL;
	unsigned long c[1] = { 0 }, mask[1] = { ~0UL };
	uint64_t n;

	(void)data;
	for (int i = 0; i < 33; i++)
		kids[i] = (MigramLogSource){ &rec_ops, &r };
	g_assert_null(migram_combined_log_new(NULL, 1, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	g_assert_null(migram_combined_log_new(kids, 0, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	g_assert_null(migram_combined_log_new(kids, 33, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	kids[1].ops = NULL;
	g_assert_null(migram_combined_log_new(kids, 2, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	kids[1].ops = &rec_ops;
	migram_combined_log_free(NULL);
	migram_shared_log_adapter_free(NULL);

	log = migram_combined_log_new(kids, 2, &error);
	g_assert_no_error(error);
	migram_combined_log_source(log, &src);
	g_assert_cmpstr(src.ops->name, ==, "combined");
	/* sync and clear of a block never started */
	g_assert_false(src.ops->sync(src.opaque, b, c, &n, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND);
	g_clear_error(&error);
	g_assert_false(src.ops->clear(src.opaque, b, 0, 64, mask, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_FOUND);
	g_clear_error(&error);
	/* a clear past the block */
	g_assert_true(src.ops->start(src.opaque, b, &error));
	g_assert_false(src.ops->clear(src.opaque, b, 60, 5, mask, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	src.ops->stop(src.opaque, b);

	/* the adapter */
	g_assert_null(migram_shared_log_adapter_new(NULL, 64 * P, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	{
		g_autoptr(MigramSharedLog) sl = migram_shared_log_new(NULL);
		g_autoptr(MigramSharedLogAdapter) a = NULL;

		g_assert_null(migram_shared_log_adapter_new(sl, 0, &error));
		g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
		g_clear_error(&error);
		/* too small for the block */
		a = migram_shared_log_adapter_new(sl, 32 * P, &error);
		g_assert_no_error(error);
		migram_shared_log_adapter_source(a, &src);
		g_assert_false(src.ops->start(src.opaque, b, &error));
		g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
		g_clear_error(&error);
		g_assert_false(src.ops->sync(src.opaque, b, c, &n, &error));
		g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	}
}

static void test_clear_per_child(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	Rec a = { 0 }, b = { 0 }, fails = { .fail_start = true };
	MigramLogSource kids[3] = { { &rec_ops, &a },
				    { &rec_ops, &b },
				    { &rec_ops, &fails } };
	MigramLogSource src;
	MigramRamBlock *blk = f->block;
	MigramCombinedLog *log = migram_combined_log_new(kids, 2, &error);
	unsigned long c[1] = { 0 }, mask[1];
	uint64_t n = 0;

	(void)data;
	migram_combined_log_source(log, &src);
	g_assert_true(src.ops->start(src.opaque, blk, &error));
	a.marks = 0x6; /* pages 1, 2 */
	b.marks = 0xc; /* pages 2, 3 */
	g_assert_true(src.ops->sync(src.opaque, blk, c, &n, &error));
	g_assert_cmphex(c[0], ==, 0xe);
	g_assert_cmpuint(n, ==, 3);
	/* sync only reads */
	g_assert_cmphex(a.marks, ==, 0x6);
	/* b is written again at 1 and 5 after the sync: not reported yet */
	b.marks |= 0x22;
	/* the caller clears what it collected */
	mask[0] = c[0];
	g_assert_true(src.ops->clear(src.opaque, blk, 0, 64, mask, &error));
	g_assert_cmphex(a.cleared, ==, 0x6);
	/* b re-armed for 2 and 3 only: its mark at 1 survives */
	g_assert_cmphex(b.cleared, ==, 0xc);
	g_assert_cmphex(b.marks, ==, 0x22);
	/* next sync: b's late marks; a has nothing, so it is not cleared */
	c[0] = 0;
	g_assert_true(src.ops->sync(src.opaque, blk, c, &n, &error));
	g_assert_cmphex(c[0], ==, 0x22);
	g_assert_cmpuint(n, ==, 2);
	a.clears = b.clears = 0;
	/* a clear of a sub-range: page 5 only */
	mask[0] = c[0];
	g_assert_true(src.ops->clear(src.opaque, blk, 4, 4, mask, &error));
	g_assert_cmpint(a.clears, ==, 0);
	g_assert_cmpint(b.clears, ==, 1);
	g_assert_cmphex(b.cleared, ==, 0x20);
	g_assert_cmphex(b.marks, ==, 0x2);
	/* page 1 is still reported by b: a later clear re-arms it */
	g_assert_true(src.ops->clear(src.opaque, blk, 0, 64, mask, &error));
	g_assert_cmphex(b.cleared, ==, 0x2);
	g_assert_cmphex(b.marks, ==, 0);
	src.ops->stop(src.opaque, blk);
	g_assert_cmpint(a.stops, ==, 1);
	g_assert_cmpint(b.stops, ==, 1);
	migram_combined_log_free(log);

	/* a child failing start: the ones started are stopped again */
	log = migram_combined_log_new(kids, 3, &error);
	migram_combined_log_source(log, &src);
	g_assert_false(src.ops->start(src.opaque, blk, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_cmpint(a.stops, ==, 2);
	g_assert_cmpint(b.stops, ==, 2);
	g_assert_cmpint(fails.stops, ==, 0);
	migram_combined_log_free(log);
}

static void test_shared_adapter(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramRamBlock *blk = f->block;
	MigramLogRegion *r = migram_log_region_new(128 * P, &error);
	g_autoptr(MigramSharedLog) sl = migram_shared_log_new(r);
	g_autoptr(MigramSharedLogAdapter) a =
		migram_shared_log_adapter_new(sl, 128 * P, &error);
	MigramLogRegion *backend;
	MigramLogSource src;
	unsigned long *c = migram_bitmap_new(128);
	unsigned long *mask = migram_bitmap_new(128);
	uint64_t n = 0;

	(void)data;
	g_assert_no_error(error);
	migram_shared_log_adapter_source(a, &src);
	g_assert_cmpstr(src.ops->name, ==, "shared");
	g_assert_true(src.ops->start(src.opaque, blk, &error));
	/* the back-end marks through its own mapping of the memfd */
	backend = migram_log_region_open(migram_log_region_fd(r), 128 * P,
					 &error);
	g_assert_no_error(error);
	migram_log_region_mark(backend, 3 * P, 1);
	migram_log_region_mark(backend, 70 * P, 2 * P);
	g_assert_true(src.ops->sync(src.opaque, blk, c, &n, &error));
	migram_test_assert_ranges(c, 128, "3,70-71");
	g_assert_cmpuint(n, ==, 3);
	/* still dirty in the source: a second sync reports them again */
	migram_bitmap_clear(c, 0, 128);
	g_assert_true(src.ops->sync(src.opaque, blk, c, &n, &error));
	migram_test_assert_ranges(c, 128, "3,70-71");
	/* a mark after the sync survives a clear of the collected pages */
	migram_log_region_mark(backend, 3 * P, 1);
	migram_bitmap_copy(mask, c, 128);
	g_assert_true(src.ops->clear(src.opaque, blk, 0, 128, mask, &error));
	migram_bitmap_clear(c, 0, 128);
	g_assert_true(src.ops->sync(src.opaque, blk, c, &n, &error));
	migram_test_assert_ranges(c, 128, "3");
	/* a partial clear leaves the rest */
	migram_log_region_mark(backend, 100 * P, 1);
	migram_bitmap_clear(c, 0, 128);
	g_assert_true(src.ops->sync(src.opaque, blk, c, &n, &error));
	migram_test_assert_ranges(c, 128, "3,100");
	migram_bitmap_copy(mask, c, 128);
	g_assert_true(src.ops->clear(src.opaque, blk, 64, 64, mask, &error));
	migram_bitmap_clear(c, 0, 128);
	g_assert_true(src.ops->sync(src.opaque, blk, c, &n, &error));
	migram_test_assert_ranges(c, 128, "3");
	src.ops->stop(src.opaque, blk);
	/* collect_range clamps at the region's end */
	migram_log_region_mark(backend, 127 * P, 1);
	migram_bitmap_clear(c, 0, 128);
	g_assert_cmpuint(migram_shared_log_collect_range(sl, c, 120, 1000), ==,
			 1);
	g_assert_cmpuint(migram_shared_log_collect_range(sl, c, 128, 1), ==, 0);
	migram_test_assert_ranges(c, 128, "127");
	migram_log_region_free(backend);
	migram_bitmap_free(c);
	migram_bitmap_free(mask);
}

/* --- three kinds of writers, one migration ----------------------------- */

#define NPAGES 510u /* 2 MiB - 2 pages: not a multiple of 64 */
#define CODE_PAGE 1u
/*
 * Software writers mark pages [150, 280), shared ones [250, 380): each
 * kind has pages only it writes (and KVM's are 2, 5, ..., 191), so a
 * child whose marks were dropped leaves pages that differ; [250, 280) and
 * [150, 191] are written by two kinds, so clears of one child must not
 * lose the other's marks.
 */
#define SOFT_FIRST 150u
#define SHARED_FIRST 250u
#define HOT_N 130u

typedef struct {
	MigramRamBlock *block;
	guint8 *mem;
	uint64_t ram_offset;
	MigramDirtyBitmap *soft; /* the device threads' log */
	int shared_fd;           /* the back-ends' log, by fd */
	/* KVM, when there is one */
	int kvm, vm, vcpu;
	struct kvm_run *run;
	size_t run_size;
	MigramKvmLog *kvm_log;
	/* writers */
	GThread *threads[5];
	int nthreads;
	int stop, paused, quiet; /* atomics */
	guint64 writes[3];       /* atomics: kvm runs, soft, shared */
} Three;

typedef struct {
	Three *t;
	int id;
	bool shared;
} WArgs;

/* Wait here while paused; false when the writer must exit. */
static bool writer_gate(Three *t)
{
	if (!g_atomic_int_get(&t->paused))
		return !g_atomic_int_get(&t->stop);
	g_atomic_int_inc(&t->quiet);
	while (g_atomic_int_get(&t->paused) && !g_atomic_int_get(&t->stop))
		g_usleep(200);
	g_atomic_int_add(&t->quiet, -1);
	return !g_atomic_int_get(&t->stop);
}

/* A device thread (software log) or a back-end (its own region mapping). */
static gpointer host_writer(gpointer p)
{
	WArgs *a = p;
	Three *t = a->t;
	GRand *r = g_rand_new_with_seed((guint32)a->id * 7919u + 3);
	MigramLogRegion *mine = NULL;
	guint64 seq = 0;

	if (a->shared) {
		g_autoptr(GError) error = NULL;

		mine = migram_log_region_open(t->shared_fd,
					      t->ram_offset + NPAGES * P,
					      &error);
		g_assert_no_error(error);
	}
	while (writer_gate(t)) {
		uint64_t pfn = (a->shared ? SHARED_FIRST : SOFT_FIRST) +
			       (uint64_t)g_rand_int_range(r, 0, HOT_N);
		guint64 *slot = (guint64 *)(t->mem + pfn * P + 0x100) +
				a->id * 2;
		uint64_t ram = t->ram_offset + pfn * P;

		/* Write, then mark. */
		__atomic_store_n(&slot[0], ++seq, __ATOMIC_RELAXED);
		__atomic_store_n(&slot[1], pfn ^ seq, __ATOMIC_RELAXED);
		if (mine)
			migram_log_region_mark(mine, ram + 0x100, 16);
		else
			migram_dirty_bitmap_mark(t->soft, ram);
		__atomic_fetch_add(&t->writes[a->shared ? 2 : 1], 1,
				   __ATOMIC_RELAXED);
		g_usleep(500);
	}
	migram_log_region_free(mine);
	g_rand_free(r);
	g_free(a);
	return NULL;
}

/* Real mode: increment byte 0x10 of each page in @p pages, then hlt. */
static void load_program(Three *t, const unsigned int *pages, size_t n)
{
	guint8 *c = t->mem + CODE_PAGE * P;

	for (size_t i = 0; i < n; i++) {
		uint32_t addr = pages[i] * P + 0x10;
		uint16_t seg = (uint16_t)((addr >> 4) & 0xf000);
		uint16_t off = (uint16_t)(addr - ((uint32_t)seg << 4));

		*c++ = 0xb8; /* mov ax, seg */
		*c++ = (guint8)seg;
		*c++ = (guint8)(seg >> 8);
		*c++ = 0x8e; /* mov ds, ax */
		*c++ = 0xd8;
		*c++ = 0xfe; /* inc byte [off] */
		*c++ = 0x06;
		*c++ = (guint8)off;
		*c++ = (guint8)(off >> 8);
	}
	*c = 0xf4; /* hlt */
}

static gpointer vcpu_writer(gpointer p)
{
	Three *t = p;

	while (writer_gate(t)) {
		struct kvm_regs regs = { .rip = CODE_PAGE * P, .rflags = 0x2 };

		g_assert_cmpint(migram_test_xioctl(t->vcpu, KVM_SET_REGS,
						   &regs),
				==, 0);
		do
			g_assert_cmpint(migram_test_xioctl(t->vcpu, KVM_RUN,
							   NULL),
					==, 0);
		while (t->run->exit_reason == KVM_EXIT_INTR);
		g_assert_cmpint(t->run->exit_reason, ==, KVM_EXIT_HLT);
		__atomic_fetch_add(&t->writes[0], 1, __ATOMIC_RELAXED);
		g_usleep(200);
	}
	return NULL;
}

/* The VM, its slot over the block and a vCPU; false (why) without KVM. */
static bool kvm_open(Three *t, const char **why)
{
	g_autoptr(GError) error = NULL;
	struct kvm_userspace_memory_region region = { 0 };
	struct kvm_sregs sregs;
	unsigned int pages[64];
	int sz;

	t->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (t->kvm < 0) {
		*why = "no /dev/kvm";
		return false;
	}
	t->vm = ioctl(t->kvm, KVM_CREATE_VM, 0);
	if (t->vm < 0) {
		*why = "KVM_CREATE_VM failed";
		close(t->kvm);
		return false;
	}
	(void)ioctl(t->vm, KVM_SET_TSS_ADDR, 0xfffbd000UL);
	t->kvm_log = migram_kvm_log_new(t->vm, &error);
	g_assert_no_error(error);
	region.memory_size = NPAGES * P;
	region.userspace_addr = (uint64_t)(uintptr_t)t->mem;
	g_assert_cmpint(migram_test_xioctl(t->vm, KVM_SET_USER_MEMORY_REGION,
					   &region),
			==, 0);
	g_assert_true(
		migram_kvm_log_add_slot(t->kvm_log, t->block, 0, 0, &error));
	t->vcpu = ioctl(t->vm, KVM_CREATE_VCPU, 0);
	g_assert_cmpint(t->vcpu, >=, 0);
	sz = ioctl(t->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	g_assert_cmpint(sz, >, 0);
	t->run_size = (size_t)sz;
	t->run = mmap(NULL, t->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      t->vcpu, 0);
	g_assert_true(t->run != MAP_FAILED);
	g_assert_cmpint(migram_test_xioctl(t->vcpu, KVM_GET_SREGS, &sregs), ==,
			0);
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	g_assert_cmpint(migram_test_xioctl(t->vcpu, KVM_SET_SREGS, &sregs), ==,
			0);
	/* pages 2, 5, ..., 191: some shared with the host writers' set */
	for (unsigned int i = 0; i < G_N_ELEMENTS(pages); i++)
		pages[i] = 2 + i * 3;
	load_program(t, pages, G_N_ELEMENTS(pages));
	return true;
}

static void three_pause(void *opaque)
{
	Three *t = opaque;

	g_atomic_int_set(&t->paused, 1);
	while (g_atomic_int_get(&t->quiet) < t->nthreads)
		g_usleep(100);
}

static void three_resume(void *opaque)
{
	g_atomic_int_set(&((Three *)opaque)->paused, 0);
}

static void test_three_writers(void)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(GError) rx_error = NULL;
	/*
	 * 4 MB/s: a pass over 2 MiB takes half a second of writes.  The
	 * writers keep about 320 pages dirty; 500 ms at 4 MB/s is 480
	 * pages, so it converges after a pass or two even when slowed
	 * down (ThreadSanitizer) rather than stalling.
	 */
	MigramMigrationConfig cfg = { .downtime_limit_ms = 500,
				      .max_bandwidth = 4 * 1000 * 1000,
				      .clear_bmap_shift = 2,
				      .clear_bmap_shift_set = true,
				      .pause_guest = three_pause,
				      .resume_guest = three_resume };
	Three t = { .vcpu = -1 };
	MigramRamList *list, *dst;
	MigramSoftLog *soft;
	MigramLogRegion *region;
	MigramSharedLog *shared;
	MigramSharedLogAdapter *adapter;
	MigramCombinedLog *combined;
	MigramLogSource kids[3], src;
	MigramTestReceiver *rx;
	MigramMigrationStats st;
	MigramMigration *m;
	MigramChannel *ch;
	const char *why = NULL;
	unsigned int nkids = 0;
	uint64_t space;
	int fds[2];
	bool ok, have_kvm;

	t.block = one_block(&list, NPAGES * P);
	t.mem = migram_ram_block_host(t.block);
	t.ram_offset = migram_ram_block_offset(t.block);
	space = t.ram_offset + migram_ram_block_max_length(t.block);
	for (uint64_t i = 0; i < NPAGES; i++)
		if (i != CODE_PAGE)
			memset(t.mem + i * P, (int)(i * 7 + 1), P / 2);
	soft = migram_soft_log_new(space, &error);
	g_assert_no_error(error);
	t.soft = migram_soft_log_bitmap(soft);
	region = migram_log_region_new(space, &error);
	g_assert_no_error(error);
	t.shared_fd = migram_log_region_fd(region);
	shared = migram_shared_log_new(region);
	adapter = migram_shared_log_adapter_new(shared, space, &error);
	g_assert_no_error(error);

	have_kvm = kvm_open(&t, &why);
	if (have_kvm)
		migram_kvm_log_source(t.kvm_log, &kids[nkids++]);
	else
		g_test_message("KVM writer left out: %s; software and shared "
			       "writers only",
			       why);
	migram_soft_log_source(soft, &kids[nkids++]);
	migram_shared_log_adapter_source(adapter, &kids[nkids++]);
	combined = migram_combined_log_new(kids, nkids, &error);
	g_assert_no_error(error);
	migram_combined_log_source(combined, &src);

	/* One mark outside the software log: counted through the children. */
	g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL,
			      "*outside it*");
	g_assert_cmpint(migram_dirty_bitmap_mark(t.soft, space + P), ==,
			MIGRAM_MARK_OUT_OF_RANGE);
	g_test_assert_expected_messages();

	if (have_kvm)
		t.threads[t.nthreads++] = g_thread_new("vcpu", vcpu_writer, &t);
	for (int i = 0; i < 4; i++) {
		WArgs *a = g_new0(WArgs, 1);

		*a = (WArgs){ &t, i, i >= 2 };
		t.threads[t.nthreads++] = g_thread_new("writer", host_writer,
						       a);
	}
	while (__atomic_load_n(&t.writes[1], __ATOMIC_RELAXED) < 10 ||
	       __atomic_load_n(&t.writes[2], __ATOMIC_RELAXED) < 10 ||
	       (have_kvm &&
		__atomic_load_n(&t.writes[0], __ATOMIC_RELAXED) < 10))
		g_usleep(500);

	dst = migram_ram_list_new();
	migram_ram_list_add(dst,
			    &(MigramRamBlockConfig){ .idstr = "pc.ram",
						     .used_length = NPAGES *
								    P },
			    &error);
	g_assert_no_error(error);
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
	rx = migram_test_receiver_start(dst, fds[1], FALSE);
	cfg.opaque = &t;
	m = migram_migration_new(list, &src, &cfg);
	ch = migram_channel_new(fds[0], true);
	ok = migram_migration_run(m, ch, &error);
	migram_channel_free(ch);
	g_assert_no_error(error);
	g_assert_true(migram_test_receiver_join(rx, &rx_error));
	migram_migration_get_stats(m, &st);
	migram_migration_free(m);
	g_assert_no_error(error);
	g_assert_true(ok);
	g_assert_no_error(rx_error);
	g_test_message("%s: %" G_GUINT64_FORMAT
		       " guest runs, %" G_GUINT64_FORMAT
		       " soft and %" G_GUINT64_FORMAT
		       " shared writes, %" G_GUINT64_FORMAT
		       " syncs, %" G_GUINT64_FORMAT " clears",
		       have_kvm ? "kvm+soft+shared" : "soft+shared",
		       (guint64)t.writes[0], (guint64)t.writes[1],
		       (guint64)t.writes[2], st.dirty_sync_count,
		       st.log_clear_calls);
	g_assert_cmpint(st.status, ==, MIGRAM_MIGRATION_COMPLETED);
	g_assert_cmpuint(st.dirty_sync_count, >=, 2);
	g_assert_cmpuint(st.log_clear_calls, >, 0);
	g_assert_cmpuint(st.out_of_range_marks, ==, 1);

	/* Every writer is paused: memory is final on both sides. */
	urcu_memb_read_lock();
	{
		const guint8 *d = migram_ram_block_host(
			migram_ram_list_find(dst, "pc.ram"));

		for (uint64_t off = 0; off < NPAGES * P; off += P)
			if (memcmp(t.mem + off, d + off, P) != 0)
				g_error("page %" G_GUINT64_FORMAT " differs",
					off / P);
	}
	urcu_memb_read_unlock();
	g_atomic_int_set(&t.stop, 1);
	for (int i = 0; i < t.nthreads; i++)
		g_thread_join(t.threads[i]);
	migram_ram_list_free(dst);
	migram_combined_log_free(combined);
	migram_shared_log_adapter_free(adapter);
	migram_shared_log_free(shared);
	migram_soft_log_free(soft);
	if (have_kvm) {
		munmap(t.run, t.run_size);
		close(t.vcpu);
		migram_kvm_log_free(t.kvm_log);
		close(t.vm);
		close(t.kvm);
	}
	migram_ram_list_free(list);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	g_test_add("/migration/combined-log/bad-input", Fixture,
		   GUINT_TO_POINTER(64), fx_set_up, test_bad_input,
		   fx_tear_down);
	g_test_add("/migration/combined-log/clear-per-child", Fixture,
		   GUINT_TO_POINTER(64), fx_set_up, test_clear_per_child,
		   fx_tear_down);
	g_test_add("/migration/combined-log/shared-adapter", Fixture,
		   GUINT_TO_POINTER(128), fx_set_up, test_shared_adapter,
		   fx_tear_down);
	g_test_add_func("/migration/combined-log/three-writers",
			test_three_writers);
	return g_test_run();
}
