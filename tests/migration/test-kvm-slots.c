/* SPDX-License-Identifier: MIT */
/*
 * One RAM block spread over two KVM memslots, as x86 splits RAM around the
 * PCI hole: the block's first 1 MiB at guest-physical 0, its second 1 MiB
 * above a hole, at 3 GiB.  (x86 puts it at 4 GiB; a guest reaches that
 * only with paging, which this host's KVM (kvm_pvm) does not take from
 * KVM_SET_SREGS: a flat 32-bit guest reaches 3 GiB, and the memslot code
 * does not care where the slot is.)  A vCPU writes pages in both halves;
 * the source reports them at the right pages of the block, and a clear
 * re-arms each slot for its part of the mask.  Plus bad input for
 * add_slot_range.  Skipped when /dev/kvm cannot be opened.
 */
#include <errno.h>
#include <fcntl.h>
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
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define HALF MiB           /* block bytes per slot */
#define HIGH_GPA (3 * GiB) /* the upper slot, above a hole */
#define NPAGES (2 * HALF / P)
#define CODE 0x1000u
#define COUNTER 0x2000u
#define HIGH_LINEAR ((uint32_t)HIGH_GPA) /* flat segments */

typedef struct {
	int kvm, vm, vcpu;
	struct kvm_run *run;
	size_t run_size;
	MigramRamList *list;
	MigramRamBlock *block;
	guint8 *mem;
	MigramKvmLog *log;
} Vm;

static void set_region(Vm *v, uint32_t slot, uint64_t gpa, uint64_t off)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot,
		.guest_phys_addr = gpa,
		.memory_size = HALF,
		.userspace_addr = (uint64_t)(uintptr_t)(v->mem + off),
	};

	g_assert_cmpint(migram_test_xioctl(v->vm, KVM_SET_USER_MEMORY_REGION,
					   &r),
			==, 0);
}

static bool vm_open(Vm *v)
{
	g_autoptr(GError) error = NULL;

	memset(v, 0, sizeof(*v));
	v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (v->kvm < 0) {
		g_test_skip("no /dev/kvm");
		return false;
	}
	v->vm = ioctl(v->kvm, KVM_CREATE_VM, 0);
	if (v->vm < 0) {
		g_test_skip("KVM_CREATE_VM failed");
		close(v->kvm);
		return false;
	}
	(void)ioctl(v->vm, KVM_SET_TSS_ADDR, 0xfffbd000UL);
	v->log = migram_kvm_log_new(v->vm, &error);
	g_assert_no_error(error);
	v->list = migram_ram_list_new();
	v->block = migram_ram_list_add(v->list,
				       &(MigramRamBlockConfig){
					       .idstr = "pc.ram",
					       .used_length = 2 * HALF },
				       &error);
	g_assert_no_error(error);
	v->mem = migram_ram_block_host(v->block);
	return true;
}

static void vm_close(Vm *v)
{
	if (v->run)
		munmap(v->run, v->run_size);
	if (v->vcpu > 0)
		close(v->vcpu);
	migram_kvm_log_free(v->log);
	close(v->vm);
	close(v->kvm);
	migram_ram_list_free(v->list);
}

/* The two slots, the vCPU in flat 32-bit protected mode. */
static void vm_setup(Vm *v)
{
	g_autoptr(GError) error = NULL;
	int sz;

	set_region(v, 0, 0, 0);
	set_region(v, 1, HIGH_GPA, HALF);
	g_assert_true(migram_kvm_log_add_slot_range(v->log, v->block, 0, HALF,
						    0, 0, &error));
	g_assert_true(migram_kvm_log_add_slot_range(v->log, v->block, HALF,
						    HALF, 1, HIGH_GPA, &error));
	g_assert_no_error(error);

	memcpy(v->mem + CODE, migram_test_pm_pass_code,
	       migram_test_pm_pass_code_len);

	v->vcpu = ioctl(v->vm, KVM_CREATE_VCPU, 0);
	g_assert_cmpint(v->vcpu, >=, 0);
	sz = ioctl(v->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	g_assert_cmpint(sz, >, 0);
	v->run_size = (size_t)sz;
	v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      v->vcpu, 0);
	g_assert_true(v->run != MAP_FAILED);
	migram_test_flat_pm(v->vcpu);
}

/* One pass over @p n pages from linear @p first at 4 KiB stride. */
static void run_pass(Vm *v, uint32_t first, uint32_t n)
{
	struct kvm_regs regs = { .rip = CODE,
				 .rflags = 0x2,
				 .rbx = first,
				 .rcx = n,
				 .rdx = P,
				 .rdi = COUNTER };

	g_assert_cmpint(migram_test_xioctl(v->vcpu, KVM_SET_REGS, &regs), ==,
			0);
	do
		g_assert_cmpint(migram_test_xioctl(v->vcpu, KVM_RUN, NULL), ==,
				0);
	while (v->run->exit_reason == KVM_EXIT_INTR);
	if (v->run->exit_reason != KVM_EXIT_HLT) {
		struct kvm_sregs sr;

		g_assert_cmpint(migram_test_xioctl(v->vcpu, KVM_GET_REGS,
						   &regs),
				==, 0);
		g_assert_cmpint(migram_test_xioctl(v->vcpu, KVM_GET_SREGS, &sr),
				==, 0);
		g_error("vCPU exit %u (not hlt) at rip %#llx, esi %#llx, cr0 "
			"%#llx cr3 %#llx cr4 %#llx",
			v->run->exit_reason, (unsigned long long)regs.rip,
			(unsigned long long)regs.rsi,
			(unsigned long long)sr.cr0, (unsigned long long)sr.cr3,
			(unsigned long long)sr.cr4);
	}
}

static void sync_expect(Vm *v, const MigramLogSource *src,
			unsigned long *collected, const char *expected)
{
	g_autoptr(GError) error = NULL;
	uint64_t newly = 0;

	migram_bitmap_clear(collected, 0, NPAGES);
	g_assert_true(src->ops->sync(src->opaque, v->block, collected, &newly,
				     &error));
	g_assert_no_error(error);
	migram_test_assert_ranges(collected, NPAGES, expected);
	g_assert_cmpuint(newly, ==, migram_bitmap_count(collected, 0, NPAGES));
}

static void test_two_slots(void)
{
	g_autoptr(GError) error = NULL;
	unsigned long *c = migram_bitmap_new(NPAGES);
	unsigned long *mask = migram_bitmap_new(NPAGES);
	MigramLogSource src;
	Vm v;

	if (!vm_open(&v)) {
		migram_bitmap_free(c);
		migram_bitmap_free(mask);
		return;
	}
	vm_setup(&v);
	migram_kvm_log_source(v.log, &src);
	g_assert_true(src.ops->start(src.opaque, v.block, &error));
	g_assert_no_error(error);
	/* Initially-set logs report every page once: take and clear them. */
	sync_expect(&v, &src, c,
		    migram_kvm_log_manual_protect(v.log)
			    ? c[0] ? "0-511" : "0-511"
			    : "0-511");
	migram_bitmap_set(mask, 0, NPAGES);
	g_assert_true(
		src.ops->clear(src.opaque, v.block, 0, NPAGES, mask, &error));
	migram_bitmap_clear(c, 0, NPAGES);
	g_assert_true(src.ops->sync(src.opaque, v.block, c, &(uint64_t){ 0 },
				    &error));
	migram_test_assert_ranges(c, NPAGES, "");

	/* low pages 8..23 (slot 0), high pages 0..15 of slot 1 = block
	 * pages 256..271 */
	run_pass(&v, 8 * P, 16);
	run_pass(&v, HIGH_LINEAR, 16);
	g_assert_cmpuint(*(uint32_t *)(v.mem + HALF), ==, 1);
	g_assert_cmpuint(*(uint32_t *)(v.mem + HALF + 4), ==, 2);
	sync_expect(&v, &src, c, "2,8-23,256-271");
	/* a clear over both slots' parts, cut at the boundary: 20..259 */
	migram_bitmap_copy(mask, c, NPAGES);
	g_assert_true(
		src.ops->clear(src.opaque, v.block, 20, 240, mask, &error));
	g_assert_no_error(error);
	sync_expect(&v, &src, c, "2,8-19,260-271");
	/* the rest, then only the high slot is written */
	migram_bitmap_copy(mask, c, NPAGES);
	g_assert_true(
		src.ops->clear(src.opaque, v.block, 0, NPAGES, mask, &error));
	sync_expect(&v, &src, c, "");
	run_pass(&v, HIGH_LINEAR + 100 * P, 3);
	sync_expect(&v, &src, c, "2,356-358");
	src.ops->stop(src.opaque, v.block);
	migram_bitmap_free(c);
	migram_bitmap_free(mask);
	vm_close(&v);
}

static void test_bad_input(void)
{
	g_autoptr(GError) error = NULL;
	MigramLogSource src;
	unsigned long c[1];
	uint64_t n;
	Vm v;

	if (!vm_open(&v))
		return;
	g_assert_false(migram_kvm_log_add_slot_range(NULL, v.block, 0, HALF, 0,
						     0, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	g_assert_false(migram_kvm_log_add_slot_range(v.log, NULL, 0, HALF, 0, 0,
						     &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	/* empty, misaligned size, offset not on 256 KiB, past the block */
	g_assert_false(migram_kvm_log_add_slot_range(v.log, v.block, 0, 0, 0, 0,
						     &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	g_assert_false(migram_kvm_log_add_slot_range(v.log, v.block, 0, P + 1,
						     0, 0, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	g_assert_false(migram_kvm_log_add_slot_range(v.log, v.block, P, P, 0, 0,
						     &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	g_assert_false(migram_kvm_log_add_slot_range(v.log, v.block, HALF,
						     2 * HALF, 0, 0, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	/* overlaps: the same slot number, an overlapping range, whole */
	g_assert_true(migram_kvm_log_add_slot_range(v.log, v.block, 0, HALF, 0,
						    0, &error));
	g_assert_false(migram_kvm_log_add_slot_range(v.log, v.block, HALF, HALF,
						     0, HIGH_GPA, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_EXISTS);
	g_clear_error(&error);
	g_assert_false(migram_kvm_log_add_slot_range(
		v.log, v.block, HALF - 256 * 1024, HALF, 1, HIGH_GPA, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_EXISTS);
	g_clear_error(&error);
	g_assert_false(migram_kvm_log_add_slot(v.log, v.block, 1, 0, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_EXISTS);
	g_clear_error(&error);
	/* a slot KVM does not know fails at sync, naming the ioctl */
	g_assert_true(migram_kvm_log_add_slot_range(v.log, v.block, HALF, HALF,
						    9, HIGH_GPA, &error));
	migram_kvm_log_source(v.log, &src);
	g_assert_false(src.ops->sync(src.opaque, v.block, c, &n, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	vm_close(&v);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	g_test_add_func("/migration/kvm-slots/two-slots", test_two_slots);
	g_test_add_func("/migration/kvm-slots/bad-input", test_bad_input);
	return g_test_run();
}
