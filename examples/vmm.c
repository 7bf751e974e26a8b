/* SPDX-License-Identifier: MIT */
/*
 * A small, complete VMM that live-migrates a KVM guest with migram
 * (docs/embedding.md walks through it).  Built only with
 * `pkg-config --cflags --libs migram`; run without arguments it forks:
 * the child is the destination, the parent the source, over TCP on
 * 127.0.0.1.
 *
 * The guest: 4.25 GiB of RAM in one block ("pc.ram"), split around the
 * PCI hole into two KVM slots: guest-physical [0, 3 GiB) is block bytes
 * [0, 3 GiB), [4 GiB, 5.25 GiB) is block bytes [3 GiB, 4.25 GiB).  The
 * memory is MAP_NORESERVE: only what is written is ever allocated.  One
 * vCPU in flat 32-bit protected mode runs a loop: each pass increments a
 * counter, then writes it into every page of an 8 MiB working set.  A
 * flat 32-bit guest reaches the low slot only: this host's nested KVM
 * (kvm_pvm) triple-faults when paging is turned on, whether through
 * KVM_SET_SREGS or by the guest's own CR0.PG write (docs/embedding.md);
 * the device writes both slots.
 * One emulated device, a "DMA engine" thread, writes records into pages
 * of both slots, marking each write by guest-physical address through a
 * MigramGuestLayout (the software dirty log); KVM's log covers the vCPU.
 * The migration merges both (MigramCombinedLog).
 *
 * The migration: the handshake on the connection (block list, caps), a
 * live precopy, the vCPU registers and the device's state as two named,
 * versioned device sections, then the per-page verification.  The
 * destination then runs the guest further and checks its invariant: every
 * working-set page holds the pass count, and the device's pages hold what
 * its migrated state says it wrote, in both slots.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include <urcu/urcu-memb.h>

#include <migram/dirty-log-combined.h>
#include <migram/dirty-log-kvm.h>
#include <migram/dirty-log.h>
#include <migram/guest-layout.h>
#include <migram/handshake.h>
#include <migram/migram.h>
#include <migram/migration.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>
#include <migram/verify.h>

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define LOW_SIZE (3 * GiB)          /* slot 0: gpa 0 */
#define HIGH_GPA (4 * GiB)          /* slot 1, above the hole */
#define HIGH_SIZE (GiB + 256 * MiB) /* 4.25 GiB in all */
#define RAM_SIZE (LOW_SIZE + HIGH_SIZE)
#define PAGE 4096u
#define CODE 0x1000u    /* the guest's loop */
#define COUNTER 0x2000u /* its pass counter */
#define WS_GPA 0x100000u
#define WS_PAGES 2048u                  /* 8 MiB working set */
#define DEV_LOW (256 * MiB)             /* the device's pages, low slot */
#define DEV_HIGH (HIGH_GPA + 512 * MiB) /* and high slot */
#define DEV_PAGES 256u

#define die(...)                                                               \
	do {                                                                   \
		fprintf(stderr, "vmm: " __VA_ARGS__);                          \
		fputc('\n', stderr);                                           \
		exit(1);                                                       \
	} while (0)

typedef struct {
	int kvm, vm, vcpu;
	struct kvm_run *run;
	MigramRamList *list;
	MigramRamBlock *block;
	guint8 *mem;
	MigramGuestLayout *layout;
	MigramSoftLog *soft;
	MigramKvmLog *klog;
	/* pausing: the migration thread asks, vCPU and device acknowledge */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool pause, stop;
	int quiet;           /* threads parked */
	uint64_t dev_writes; /* the device's state: writes done */
} Vm;

/* ---- the guest --------------------------------------------------------- */

/* Host address of guest-physical gpa (both slots are one block). */
static guint8 *gpa_host(Vm *v, uint64_t gpa)
{
	return v->mem + (gpa < LOW_SIZE ? gpa : gpa - HIGH_GPA + LOW_SIZE);
}

static void xioctl(int fd, unsigned long req, void *arg, const char *what)
{
	while (ioctl(fd, req, arg) < 0)
		if (errno != EINTR)
			die("%s: %s", what, strerror(errno));
}

/* One pass: [COUNTER]++, then each working-set page gets the count. */
static const guint8 pass_code[] = {
	0x8b, 0x07, 0x40, 0x89, 0x07,       /* mov eax,[edi]; inc; store */
	0x89, 0xde, 0x89, 0xcd,             /* esi = ebx; ebp = ecx */
	0xff, 0x06, 0x89, 0x46, 0x04,       /* 1: inc [esi]; [esi+4] = eax */
	0x01, 0xd6, 0x4d, 0x75, 0xf6, 0xf4, /* esi += edx; dec ebp; jnz; hlt */
};

static void slot(Vm *v, uint32_t n, uint64_t gpa, uint64_t off, uint64_t size)
{
	g_autoptr(GError) error = NULL;
	struct kvm_userspace_memory_region r = {
		.slot = n,
		.guest_phys_addr = gpa,
		.memory_size = size,
		.userspace_addr = (uint64_t)(uintptr_t)(v->mem + off),
	};

	xioctl(v->vm, KVM_SET_USER_MEMORY_REGION, &r, "set memory region");
	if (v->klog && !migram_kvm_log_add_slot_range(v->klog, v->block, off,
						      size, n, gpa, &error))
		die("slot %u, KVM log: %s", n, error->message);
	if (!migram_guest_layout_map(v->layout, gpa, size, v->block, off,
				     &error))
		die("slot %u, layout: %s", n, error->message);
}

/* A VM with its RAM in two slots; the KVM log on the source only. */
static void vm_open(Vm *v, bool source)
{
	g_autoptr(GError) error = NULL;
	struct kvm_sregs sr;
	struct kvm_segment seg = { .limit = 0xffffffff,
				   .selector = 8,
				   .type = 11,
				   .present = 1,
				   .db = 1,
				   .s = 1,
				   .g = 1 };

	memset(v, 0, sizeof(*v));
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->cond, NULL);
	if ((v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC)) < 0)
		die("/dev/kvm: %s", strerror(errno));
	if ((v->vm = ioctl(v->kvm, KVM_CREATE_VM, 0)) < 0)
		die("KVM_CREATE_VM: %s", strerror(errno));
	(void)ioctl(v->vm, KVM_SET_TSS_ADDR, 0xfffbd000UL);
	v->list = migram_ram_list_new();
	v->block = migram_ram_list_add(v->list,
				       &(MigramRamBlockConfig){
					       .idstr = "pc.ram",
					       .used_length = RAM_SIZE },
				       &error);
	if (!v->block)
		die("RAM: %s", error->message);
	v->mem = migram_ram_block_host(v->block);
	v->soft = migram_soft_log_new(migram_ram_list_ram_space(v->list),
				      &error);
	if (!v->soft)
		die("soft log: %s", error->message);
	v->layout = migram_guest_layout_new(v->soft);
	if (source && !(v->klog = migram_kvm_log_new(v->vm, &error)))
		die("KVM log: %s", error->message);
	slot(v, 0, 0, 0, LOW_SIZE);
	slot(v, 1, HIGH_GPA, LOW_SIZE, HIGH_SIZE);
	memcpy(v->mem + CODE, pass_code, sizeof(pass_code));

	if ((v->vcpu = ioctl(v->vm, KVM_CREATE_VCPU, 0)) < 0)
		die("KVM_CREATE_VCPU: %s", strerror(errno));
	v->run = mmap(NULL, (size_t)ioctl(v->kvm, KVM_GET_VCPU_MMAP_SIZE, 0),
		      PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
	if (v->run == MAP_FAILED)
		die("vcpu mmap: %s", strerror(errno));
	xioctl(v->vcpu, KVM_GET_SREGS, &sr, "KVM_GET_SREGS");
	sr.cs = seg; /* flat 32-bit protected mode, no paging */
	seg.type = 3;
	seg.selector = 16;
	sr.ds = sr.es = sr.ss = sr.fs = sr.gs = seg;
	sr.cr0 |= 1;
	xioctl(v->vcpu, KVM_SET_SREGS, &sr, "KVM_SET_SREGS");
}

static void run_pass(Vm *v)
{
	struct kvm_regs r = { .rip = CODE,
			      .rflags = 2,
			      .rbx = WS_GPA,
			      .rcx = WS_PAGES,
			      .rdx = PAGE,
			      .rdi = COUNTER };

	xioctl(v->vcpu, KVM_SET_REGS, &r, "KVM_SET_REGS");
	xioctl(v->vcpu, KVM_RUN, NULL, "KVM_RUN");
	if (v->run->exit_reason != KVM_EXIT_HLT)
		die("guest exit %u at pass %u", v->run->exit_reason,
		    *(uint32_t *)gpa_host(v, COUNTER));
}

/* Park while the migration has the guest paused; false to stop. */
static bool checkpoint(Vm *v)
{
	pthread_mutex_lock(&v->lock);
	if (v->pause) {
		v->quiet++;
		pthread_cond_broadcast(&v->cond);
		while (v->pause && !v->stop)
			pthread_cond_wait(&v->cond, &v->lock);
		v->quiet--;
	}
	bool go = !v->stop;
	pthread_mutex_unlock(&v->lock);
	return go;
}

static void *vcpu_main(void *p)
{
	Vm *v = p;

	while (checkpoint(v))
		run_pass(v);
	return NULL;
}

/*
 * The device: write n goes to page n % DEV_PAGES of both slots (the value
 * n + 1, 8 bytes), and is marked by guest-physical address: the vCPU's
 * writes reach KVM's log by themselves, the device's only through this.
 */
static void dev_write(Vm *v)
{
	uint64_t n = v->dev_writes, val = n + 1;
	uint64_t gpa[2] = { DEV_LOW + n % DEV_PAGES * PAGE,
			    DEV_HIGH + n % DEV_PAGES * PAGE };

	for (int i = 0; i < 2; i++) {
		memcpy(gpa_host(v, gpa[i]), &val, 8);
		if (migram_guest_layout_mark(v->layout, gpa[i], 8) ==
		    MIGRAM_MARK_OUT_OF_RANGE)
			die("device write at %#" PRIx64 " is in no slot",
			    gpa[i]);
	}
	v->dev_writes = n + 1;
}

static void *device_main(void *p)
{
	Vm *v = p;

	urcu_memb_register_thread(); /* marks take the RCU read lock */
	while (checkpoint(v)) {
		dev_write(v);
		g_usleep(100);
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* The invariant: pages hold the pass count; device pages its writes. */
static bool check_guest(Vm *v, const char *where)
{
	uint32_t passes = *(uint32_t *)gpa_host(v, COUNTER);
	uint64_t n = v->dev_writes;

	for (uint32_t i = 0; i < WS_PAGES; i++) {
		uint32_t *w = (uint32_t *)gpa_host(v, WS_GPA + i * PAGE);

		if (w[0] != passes || w[1] != passes) {
			fprintf(stderr,
				"vmm: %s: page %u holds %u/%u, pass %u\n",
				where, i, w[0], w[1], passes);
			return false;
		}
	}
	for (uint64_t k = 0; k < DEV_PAGES; k++) {
		/* the last write to page k, or 0 when none reached it */
		uint64_t want = n > k ? n - (n - 1 - k) % DEV_PAGES : 0, lo, hi;

		memcpy(&lo, gpa_host(v, DEV_LOW + k * PAGE), 8);
		memcpy(&hi, gpa_host(v, DEV_HIGH + k * PAGE), 8);
		if (lo != want || hi != want) {
			fprintf(stderr,
				"vmm: %s: device page %" PRIu64
				" holds %" PRIu64 "/%" PRIu64 ", want %" PRIu64
				"\n",
				where, k, lo, hi, want);
			return false;
		}
	}
	printf("vmm: %s: guest invariant holds (%u passes, %" PRIu64
	       " device writes)\n",
	       where, passes, n);
	return true;
}

/* ---- the migration's callbacks ----------------------------------------- */

static void pause_guest(void *o)
{
	Vm *v = o;

	pthread_mutex_lock(&v->lock);
	v->pause = true;
	while (v->quiet < 2) /* the vCPU and the device are parked */
		pthread_cond_wait(&v->cond, &v->lock);
	pthread_mutex_unlock(&v->lock);
}

static void resume_guest(void *o)
{
	Vm *v = o;

	pthread_mutex_lock(&v->lock);
	v->pause = false;
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
}

static bool save_cpu(void *o, GByteArray *out, GError **error)
{
	Vm *v = o;
	struct kvm_regs r;

	if (ioctl(v->vcpu, KVM_GET_REGS, &r) < 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "KVM_GET_REGS: %s", g_strerror(errno));
		return false;
	}
	g_byte_array_append(out, (const guint8 *)&r, sizeof(r));
	return true;
}

static bool save_dev(void *o, GByteArray *out, GError **error)
{
	Vm *v = o;

	(void)error;
	g_byte_array_append(out, (const guint8 *)&v->dev_writes, 8);
	return true;
}

/* The destination's loader: known names and versions only. */
static bool load_section(void *o, const MigramDeviceSectionInfo *s,
			 const guint8 *data, size_t len, GError **error)
{
	Vm *v = o;

	if (strcmp(s->idstr, "cpu") == 0 && s->version_id == 1 &&
	    len == sizeof(struct kvm_regs))
		return ioctl(v->vcpu, KVM_SET_REGS, data) == 0;
	if (strcmp(s->idstr, "dma-engine") == 0 && s->version_id == 1 &&
	    len == 8) {
		memcpy(&v->dev_writes, data, 8);
		return true;
	}
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
		    "unknown device '%s' version %u (%zu bytes)", s->idstr,
		    s->version_id, len);
	return false;
}

static void hello(Vm *v, MigramHandshake *hs)
{
	migram_handshake_init(hs);
	hs->list = v->list; /* both sides must have the same blocks */
}

/* ---- the two processes -------------------------------------------------- */

static int source(int port)
{
	g_autoptr(GError) error = NULL;
	static const char *const names[] = { "cpu", "dma-engine" };
	MigramDeviceSection devs[2];
	MigramLogSource kids[2], src;
	MigramCombinedLog *log;
	MigramVerifyResult res;
	MigramHandshake hs;
	MigramMigration *m;
	MigramChannel *ch;
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	pthread_t th[2];
	Vm v;
	int fd;
	bool ok;

	vm_open(&v, true);
	pthread_create(&th[0], NULL, vcpu_main, &v);
	pthread_create(&th[1], NULL, device_main, &v);
	g_usleep(200 * 1000); /* let the guest run a little */

	/* vCPU writes: KVM's log; device writes: the software log. */
	migram_kvm_log_source(v.klog, &kids[0]);
	migram_soft_log_source(v.soft, &kids[1]);
	if (!(log = migram_combined_log_new(kids, 2, &error)))
		die("combined log: %s", error->message);
	migram_combined_log_source(log, &src);

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect: %s", strerror(errno));
	ch = migram_channel_new(fd, true);
	hello(&v, &hs);
	if (!migram_handshake_connect(ch, &hs, NULL, &error))
		die("source: %s", error->message);

	for (int i = 0; i < 2; i++)
		devs[i] = (MigramDeviceSection){ names[i], 0, 1,
						 i ? save_dev : save_cpu, &v };
	m = migram_migration_new(v.list, &src,
				 &(MigramMigrationConfig){
					 .pause_guest = pause_guest,
					 .resume_guest = resume_guest,
					 .opaque = &v,
					 .device_sections = devs,
					 .n_device_sections = 2 });
	ok = migram_migration_run(m, ch, &error);
	if (ok) {
		MigramMigrationStats st;

		migram_migration_get_stats(m, &st);
		printf("vmm: source: migrated %.2f GiB in %" PRIu64
		       " ms (downtime %" PRIu64 " ms, %" PRIu64
		       " passes, %" PRIu64 " zero pages)\n",
		       (double)st.total_bytes / GiB, st.total_time_ms,
		       st.downtime_ms, st.iterations, st.duplicate_pages);
		/* The guest stays paused: compare with the destination. */
		ok = migram_verify_compare(v.list, ch, NULL, NULL, &res,
					   &error);
	}
	if (!ok)
		die("source: %s", error->message);
	g_autofree char *d = migram_verify_result_describe(&res);
	printf("vmm: source: verification: %s\n", d);
	pthread_mutex_lock(&v.lock);
	v.stop = true;
	pthread_cond_broadcast(&v.cond);
	pthread_mutex_unlock(&v.lock);
	pthread_join(th[0], NULL);
	pthread_join(th[1], NULL);
	migram_migration_free(m);
	migram_channel_free(ch);
	migram_combined_log_free(log);
	return res.diff == MIGRAM_VERIFY_EQUAL ? 0 : 1;
}

static int destination(int lfd)
{
	g_autoptr(GError) error = NULL;
	MigramHandshake hs, peer;
	MigramReceiver *r;
	MigramChannel *ch;
	Vm v;
	int fd;
	bool ok;

	struct sockaddr_in from;
	socklen_t flen = sizeof(from);

	vm_open(&v, false);
	if ((fd = accept4(lfd, (struct sockaddr *)&from, &flen, SOCK_CLOEXEC)) <
	    0)
		die("accept: %s", strerror(errno));
	ch = migram_channel_new(fd, true);
	hello(&v, &hs);
	memset(hs.migration_id, 0, sizeof(hs.migration_id)); /* adopt */
	if (!migram_handshake_accept(ch, &hs, &peer, &error))
		die("destination: %s", error->message);
	if (peer.role != MIGRAM_HANDSHAKE_MAIN)
		die("destination: expected the main connection");

	r = migram_receiver_new(v.list, &(MigramReceiverConfig){
						.load_section = load_section,
						.opaque = &v });
	ok = migram_receiver_load(r, ch, &error) &&
	     migram_verify_send(v.list, ch, &error);
	migram_receiver_free(r);
	migram_channel_free(ch);
	if (!ok)
		die("destination: %s", error->message);
	/* Resume: the invariant on arrival, then after more passes. */
	if (!check_guest(&v, "destination, on arrival"))
		return 1;
	for (int i = 0; i < 3; i++)
		run_pass(&v);
	for (int i = 0; i < 100; i++)
		dev_write(&v);
	return check_guest(&v, "destination, after 3 more passes") ? 0 : 1;
}

int main(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int lfd, status, rc;
	pid_t child;

	if (access("/dev/kvm", R_OK | W_OK) != 0) {
		printf("vmm: no usable /dev/kvm: skipped\n");
		return 77; /* meson's "skipped" */
	}
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &len) < 0)
		die("listen on 127.0.0.1: %s", strerror(errno));
	child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	/* Each process registers its main thread with RCU (migram.h). */
	urcu_memb_register_thread();
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* no orphan if the source
						     dies */
		if (getppid() == 1)
			_exit(1);
		rc = destination(lfd);
		fflush(stdout);
		_exit(rc);
	}
	close(lfd);
	rc = source(ntohs(a.sin_port));
	if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0)
		rc = 1;
	printf("vmm: %s\n", rc ? "FAILED" : "migrated, verified, resumed");
	return rc;
}
