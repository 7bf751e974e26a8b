/* SPDX-License-Identifier: MIT */
/*
 * A stress test of the KVM dirty ring's harvest/reset protocol and of a
 * VMM's pause, checked byte for byte.
 *
 * Many vCPUs loop over their own slice of pages (increment a counter,
 * store the pass number) with a small ring, so rings fill often and the
 * vCPUs push entries while a harvest walks them.  The test plays the
 * sender: it keeps a shadow copy, and each sync's pages are copied into
 * it (bit cleared, then the page read, as send-pages.c does).  Over and
 * over, it pauses the vCPUs (every thread out of KVM_RUN), runs the final
 * sync, copies, compares the whole shadow with the memory, and resumes.
 *
 * The rule checked: a sync either fails, saying the ring overflowed or
 * was reset short, or the shadow equals the memory.  A sync that succeeds
 * with a page missing is a lost write.  After such a failure the log must
 * stay failed: starting it again (a second migration of the same VM) must
 * fail too.  It once started afresh, with its read positions out of step
 * with the kernel's, and lost writes.  (This host's nested KVM overruns
 * small rings, so the failure path is taken often.)
 *
 * Skipped without /dev/kvm or the dirty ring.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/kvm.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/dirty-log-kvm.h>
#include <migram/migram.h>
#include <migram/ramblock.h>

#include "migram-test-util.h"

#define P 4096u
#define MEM_BYTES (4u << 20)
#define NPAGES (MEM_BYTES / P)
#define CODE_GPA 0x1000u
#define SEQ_GPA 0x2000u /* one pass counter per vCPU, 64 bytes apart */
#define WS_PAGE 16u     /* the working set's first page */

typedef struct Fixture Fixture;

typedef struct {
	Fixture *f;
	int fd;
	struct kvm_run *run;
	GThread *thread;
	pthread_t tid;
	int started; /* atomic */
} Vcpu;

struct Fixture {
	int kvm, vm;
	size_t run_size;
	MigramRamList *list;
	MigramRamBlock *block;
	guint8 *mem;
	MigramKvmLog *log;
	MigramLogSource src;
	Vcpu *vcpus;
	unsigned int nvcpus;
	int stop, paused, parked; /* atomics */
	guint64 ring_fulls;       /* atomic */
	guint8 *shadow;
	unsigned long *bmap;
	bool skip;
};

typedef struct {
	unsigned int vcpus;
	uint32_t ring_entries;
	unsigned int pages_per_vcpu;
	unsigned int rounds;
} Params;

static void on_kick(int sig)
{
	(void)sig;
}

/* The pass program made endless: its hlt becomes "jmp to the start". */
static void load_loop(guint8 *mem)
{
	size_t n = migram_test_pm_pass_code_len - 1;

	memcpy(mem + CODE_GPA, migram_test_pm_pass_code, n);
	mem[CODE_GPA + n] = 0xeb; /* jmp rel8 */
	mem[CODE_GPA + n + 1] = (guint8)(-(int)(n + 2));
}

static gpointer vcpu_main(gpointer p)
{
	Vcpu *v = p;
	Fixture *f = v->f;

	v->tid = pthread_self();
	g_atomic_int_set(&v->started, 1);
	while (!g_atomic_int_get(&f->stop)) {
		int r;

		__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
		if (g_atomic_int_get(&f->paused)) {
			g_atomic_int_inc(&f->parked);
			while (g_atomic_int_get(&f->paused) &&
			       !g_atomic_int_get(&f->stop))
				g_usleep(100);
			g_atomic_int_add(&f->parked, -1);
			continue;
		}
		r = ioctl(v->fd, KVM_RUN, 0);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		g_assert_cmpint(r, ==, 0);
		if (v->run->exit_reason == KVM_EXIT_DIRTY_RING_FULL) {
			__atomic_fetch_add(&f->ring_fulls, 1, __ATOMIC_RELAXED);
			/* The sync reports an overflow; here, just go on. */
			(void)migram_kvm_log_harvest(f->log, NULL, NULL);
			continue;
		}
		g_assert_cmpuint(v->run->exit_reason, ==, KVM_EXIT_INTR);
	}
	g_atomic_int_inc(&f->parked);
	return NULL;
}

static void kick_all(Fixture *f)
{
	for (unsigned int i = 0; i < f->nvcpus; i++) {
		Vcpu *v = &f->vcpus[i];

		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		if (g_atomic_int_get(&v->started))
			pthread_kill(v->tid, SIGUSR1);
	}
}

/* Every vCPU thread out of KVM_RUN and parked. */
static void pause_all(Fixture *f)
{
	g_atomic_int_set(&f->paused, 1);
	while (g_atomic_int_get(&f->parked) < (int)f->nvcpus) {
		kick_all(f);
		g_usleep(50);
	}
}

static void fixture_set_up(Fixture *f, gconstpointer data)
{
	const Params *prm = data;
	g_autoptr(GError) error = NULL;
	struct sigaction sa = { .sa_handler = on_kick };
	struct kvm_userspace_memory_region region = { 0 };
	uint32_t entries = prm->ring_entries;
	int sz;

	memset(f, 0, sizeof(*f));
	f->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (f->kvm < 0) {
		f->skip = true;
		g_test_skip("no /dev/kvm");
		return;
	}
	f->vm = ioctl(f->kvm, KVM_CREATE_VM, 0);
	g_assert_cmpint(f->vm, >=, 0);
	(void)ioctl(f->vm, KVM_SET_TSS_ADDR, 0xfffbd000UL);
	/* The smallest ring KVM takes (it keeps entries in reserve). */
	for (; entries <= 65536; entries *= 2) {
		f->log = migram_kvm_log_new_ring(f->vm, entries, &error);
		if (f->log ||
		    !g_error_matches(error, MIGRAM_ERROR, MIGRAM_ERROR_IO))
			break;
		g_clear_error(&error);
	}
	if (!f->log) {
		f->skip = true;
		g_test_skip(error ? error->message : "no dirty ring");
		close(f->vm);
		close(f->kvm);
		return;
	}
	g_test_message("%u vCPUs, rings of %u entries, %u pages each",
		       prm->vcpus, entries, prm->pages_per_vcpu);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL); /* no SA_RESTART */

	f->list = migram_ram_list_new();
	f->block = migram_ram_list_add(f->list,
				       &(MigramRamBlockConfig){
					       .idstr = "pc.ram",
					       .used_length = MEM_BYTES },
				       &error);
	g_assert_no_error(error);
	f->mem = migram_ram_block_host(f->block);
	load_loop(f->mem);
	region.memory_size = MEM_BYTES;
	region.userspace_addr = (uint64_t)(uintptr_t)f->mem;
	g_assert_cmpint(migram_test_xioctl(f->vm, KVM_SET_USER_MEMORY_REGION,
					   &region),
			==, 0);
	g_assert_true(migram_kvm_log_add_slot(f->log, f->block, 0, 0, &error));
	g_assert_no_error(error);
	migram_kvm_log_source(f->log, &f->src);

	sz = ioctl(f->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	g_assert_cmpint(sz, >, 0);
	f->run_size = (size_t)sz;
	f->nvcpus = prm->vcpus;
	f->vcpus = g_new0(Vcpu, f->nvcpus);
	g_assert_cmpuint(WS_PAGE + f->nvcpus * prm->pages_per_vcpu, <=, NPAGES);
	for (unsigned int i = 0; i < f->nvcpus; i++) {
		Vcpu *v = &f->vcpus[i];
		struct kvm_regs regs = { .rip = CODE_GPA, .rflags = 0x2 };

		v->f = f;
		v->fd = ioctl(f->vm, KVM_CREATE_VCPU, i);
		g_assert_cmpint(v->fd, >=, 0);
		v->run = mmap(NULL, f->run_size, PROT_READ | PROT_WRITE,
			      MAP_SHARED, v->fd, 0);
		g_assert_true(v->run != MAP_FAILED);
		g_assert_true(migram_kvm_log_add_vcpu(f->log, v->fd, &error));
		g_assert_no_error(error);
		migram_test_flat_pm(v->fd);
		regs.rbx = (WS_PAGE + i * prm->pages_per_vcpu) * P;
		regs.rcx = prm->pages_per_vcpu;
		regs.rdx = P;
		regs.rdi = SEQ_GPA + i * 64;
		g_assert_cmpint(migram_test_xioctl(v->fd, KVM_SET_REGS, &regs),
				==, 0);
	}
	f->shadow = g_malloc0(MEM_BYTES);
	f->bmap = migram_bitmap_new(NPAGES);
	/* Created paused: the test lets them go. */
	g_atomic_int_set(&f->paused, 1);
	for (unsigned int i = 0; i < f->nvcpus; i++)
		f->vcpus[i].thread = g_thread_new("vcpu", vcpu_main,
						  &f->vcpus[i]);
	pause_all(f);
}

static void fixture_tear_down(Fixture *f, gconstpointer data)
{
	(void)data;
	if (f->skip)
		return;
	g_atomic_int_set(&f->stop, 1);
	kick_all(f);
	for (unsigned int i = 0; i < f->nvcpus; i++)
		g_thread_join(f->vcpus[i].thread);
	f->src.ops->stop(f->src.opaque, f->block);
	for (unsigned int i = 0; i < f->nvcpus; i++) {
		munmap(f->vcpus[i].run, f->run_size);
		close(f->vcpus[i].fd);
	}
	g_free(f->vcpus);
	migram_kvm_log_free(f->log);
	migram_ram_list_free(f->list);
	close(f->vm);
	close(f->kvm);
	g_free(f->shadow);
	migram_bitmap_free(f->bmap);
}

/*
 * Sync, then copy every page found into the shadow (its bit cleared
 * before it is read).  False when the sync failed: it must say the ring
 * overflowed.
 */
static bool sync_and_copy(Fixture *f, uint64_t *copied)
{
	g_autoptr(GError) error = NULL;
	uint64_t newly = 0;

	if (!f->src.ops->sync(f->src.opaque, f->block, f->bmap, &newly,
			      &error)) {
		g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
		g_assert_true(strstr(error->message, "overflowed") ||
			      strstr(error->message, "fewer entries"));
		return false;
	}
	for (size_t p = migram_bitmap_find_next_set(f->bmap, NPAGES, 0);
	     p < NPAGES; p = migram_bitmap_find_next_set(f->bmap, NPAGES, p)) {
		migram_bitmap_clear_bit(f->bmap, p);
		memcpy(f->shadow + p * P, f->mem + p * P, P);
		(*copied)++;
	}
	return true;
}

/* A fresh log and a full copy, as a new migration starts (paused). */
static void restart(Fixture *f)
{
	g_autoptr(GError) error = NULL;

	f->src.ops->stop(f->src.opaque, f->block);
	g_assert_true(f->src.ops->start(f->src.opaque, f->block, &error));
	g_assert_no_error(error);
	migram_bitmap_set(f->bmap, 0, NPAGES);
}

/* After a reported overflow: starting the log again fails, and says so. */
static void restart_fails(Fixture *f)
{
	g_autoptr(GError) error = NULL;
	uint64_t newly;

	f->src.ops->stop(f->src.opaque, f->block);
	g_assert_false(f->src.ops->start(f->src.opaque, f->block, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_nonnull(strstr(error->message, "cannot start logging"));
	g_clear_error(&error);
	g_assert_false(f->src.ops->sync(f->src.opaque, f->block, f->bmap,
					&newly, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
}

static void test_stress(Fixture *f, gconstpointer data)
{
	const Params *prm = data;
	uint64_t copied = 0, compared = 0, overflows = 0, rounds = 0;
	gint64 deadline = g_get_monotonic_time() + 8 * G_USEC_PER_SEC;

	if (f->skip)
		return;
	restart(f);
	for (unsigned int r = 0;
	     r < prm->rounds && g_get_monotonic_time() < deadline; r++) {
		bool ok = true;

		g_atomic_int_set(&f->paused, 0);
		/* A few precopy syncs while the vCPUs write; a tiny pause
		 * between them so the rings fill (r decides how long). */
		for (unsigned int s = 0; ok && s < 1 + r % 4; s++) {
			if (r % 3)
				g_usleep(200 * (r % 5));
			ok = sync_and_copy(f, &copied);
		}
		pause_all(f);
		/* The final sync; then a second one must find nothing new. */
		ok = ok && sync_and_copy(f, &copied);
		if (ok) {
			uint64_t again = 0;

			g_assert_true(sync_and_copy(f, &again));
			g_assert_cmpuint(again, ==, 0);
			for (uint64_t p = 0; p < NPAGES; p++)
				if (memcmp(f->shadow + p * P, f->mem + p * P,
					   P) != 0)
					g_error("round %u: page %" G_GUINT64_FORMAT
						" (offset %#" G_GINT64_MODIFIER
						"x) lost a write: %u in the "
						"copy, %u in memory",
						r, p, p * P,
						*(uint32_t *)(f->shadow +
							      p * P),
						*(uint32_t *)(f->mem + p * P));
			compared++;
		} else {
			/* The log stays failed: a second migration on the
			 * same vCPUs must not start (once it did, and lost
			 * writes). */
			overflows++;
			rounds++;
			break;
		}
		rounds++;
	}
	if (overflows)
		restart_fails(f);
	pause_all(f);
	g_test_message("%" G_GUINT64_FORMAT " rounds: %" G_GUINT64_FORMAT
		       " compared byte for byte, %" G_GUINT64_FORMAT
		       " ended in a reported ring failure; %" G_GUINT64_FORMAT
		       " pages copied, %" G_GUINT64_FORMAT " ring-full exits",
		       rounds, compared, overflows, copied,
		       (guint64)__atomic_load_n(&f->ring_fulls,
						__ATOMIC_RELAXED));
	g_assert_cmpuint(rounds, >, 0);
}

static const Params many_small = { .vcpus = 8,
				   .ring_entries = 256,
				   .pages_per_vcpu = 48,
				   .rounds = 400 };
static const Params few_large = { .vcpus = 2,
				  .ring_entries = 4096,
				  .pages_per_vcpu = 400,
				  .rounds = 200 };

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	g_test_add("/migration/kvm-ring-stress/many-vcpus-small-ring", Fixture,
		   &many_small, fixture_set_up, test_stress, fixture_tear_down);
	g_test_add("/migration/kvm-ring-stress/few-vcpus-large-ring", Fixture,
		   &few_large, fixture_set_up, test_stress, fixture_tear_down);
	return g_test_run();
}
