/* SPDX-License-Identifier: MIT */
/*
 * Bitmap allocations that fail are reported, never used.  A caller-owned
 * block of 1 TiB (never touched: only its bitmaps are allocated) needs
 * 32 MiB per bitmap; the address-space limit is lowered to what the
 * process already uses plus 8 MiB around the call under test, so that
 * allocation, and only a large one, fails.
 *
 * Skipped under sanitizers, whose allocators abort instead of returning
 * NULL.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <linux/kvm.h>

#include <urcu/urcu-memb.h>

#include <migram/dirty-log-kvm.h>
#include <migram/migram.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>

#include "migram-test-util.h"
#include "postcopy-dst.h"

#define TiB (UINT64_C(1) << 40)

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif

static bool skip_under_sanitizer(void)
{
#ifdef UNDER_SANITIZER
	g_test_skip("sanitizer allocators abort on failure");
	return true;
#else
	return false;
#endif
}

/* The process's address space in bytes (VmSize). */
static uint64_t vm_size(void)
{
	g_autofree char *status = NULL;
	const char *p;

	g_assert_true(
		g_file_get_contents("/proc/self/status", &status, NULL, NULL));
	p = strstr(status, "VmSize:");
	g_assert_nonnull(p);
	return g_ascii_strtoull(p + 7, NULL, 10) * 1024;
}

typedef struct {
	struct rlimit saved;
} AsLimit;

static void as_limit_begin(AsLimit *l)
{
	struct rlimit r;

	g_assert_cmpint(getrlimit(RLIMIT_AS, &l->saved), ==, 0);
	r = l->saved;
	r.rlim_cur = vm_size() + 8 * 1024 * 1024;
	g_assert_cmpint(setrlimit(RLIMIT_AS, &r), ==, 0);
}

static void as_limit_end(AsLimit *l)
{
	g_assert_cmpint(setrlimit(RLIMIT_AS, &l->saved), ==, 0);
}

/* A 1 TiB caller block at an address nothing maps (never touched). */
static MigramRamBlock *huge_block(MigramRamList *l)
{
	g_autoptr(GError) error = NULL;
	MigramRamBlock *b = migram_ram_list_add(
		l,
		&(MigramRamBlockConfig){ .idstr = "huge.ram",
					 .backend = MIGRAM_RAM_BACKEND_CALLER,
					 .host = (void *)(uintptr_t)(64 * TiB),
					 .page_size = 4096,
					 .used_length = TiB },
		&error);

	g_assert_no_error(error);
	return b;
}

static void test_kvm_slot_bitmap(void)
{
	g_autoptr(GError) error = NULL;
	MigramRamList *l;
	MigramKvmLog *log;
	AsLimit lim;
	int kvm, vm;
	bool ok;

	if (skip_under_sanitizer())
		return;
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		g_test_skip("no /dev/kvm");
		return;
	}
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) {
		g_test_skip("KVM_CREATE_VM failed");
		close(kvm);
		return;
	}
	log = migram_kvm_log_new_classic(vm, &error);
	g_assert_no_error(error);
	l = migram_ram_list_new();
	as_limit_begin(&lim);
	ok = migram_kvm_log_add_slot(log, huge_block(l), 0, 0, &error);
	as_limit_end(&lim);
	g_assert_false(ok);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY);
	g_assert_nonnull(strstr(error->message, "huge.ram"));
	migram_kvm_log_free(log);
	migram_ram_list_free(l);
	close(vm);
	close(kvm);
}

/* POSTCOPY_RAM_DISCARD takes the blocks and their `requested` bitmaps. */
static void test_postcopy_requested_bitmap(void)
{
	static const guint8 advise[16] = { 0, 0, 0, 0, 0, 0, 0x10, 0,
					   0, 0, 0, 0, 0, 0, 0x10, 0 };
	static const guint8 discard[3 + 8 + 16] = {
		0, 8, 'h', 'u', 'g', 'e', '.',  'r', 'a', 'm',
		0, 0, 0,   0,   0,   0,   0,    0,   0, /* start 0 */
		0, 0, 0,   0,   0,   0,   0x10, 0       /* 4 KiB */
	};
	g_autoptr(GError) error = NULL;
	MigramRamList *l;
	DstPostcopy *pc;
	AsLimit lim;
	bool ok;

	if (skip_under_sanitizer())
		return;
	if (!migram_postcopy_available(NULL)) {
		g_test_skip("no userfaultfd");
		return;
	}
	l = migram_ram_list_new();
	huge_block(l);
	g_assert_true(migram_ram_list_bitmaps_init(l, 18, &error));
	pc = migram_postcopy_dst_new(l);
	g_assert_true(migram_postcopy_dst_advise(pc, advise, sizeof(advise), 0,
						 &error));
	g_assert_no_error(error);
	as_limit_begin(&lim);
	ok = migram_postcopy_dst_discard(pc, discard, sizeof(discard), 42,
					 &error);
	as_limit_end(&lim);
	g_assert_false(ok);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY);
	g_assert_nonnull(strstr(error->message, "huge.ram"));
	migram_postcopy_dst_free(pc);
	migram_ram_list_bitmaps_free(l);
	migram_ram_list_free(l);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	g_test_add_func("/migration/alloc-failures/kvm-slot-bitmap",
			test_kvm_slot_bitmap);
	g_test_add_func("/migration/alloc-failures/postcopy-requested-bitmap",
			test_postcopy_requested_bitmap);
	return g_test_run();
}
