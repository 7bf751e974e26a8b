/* SPDX-License-Identifier: MIT */
/*
 * The simulator's minimal VMM for the KVM micro-guest (kvm-guest.h).
 *
 * One VM, one memslot (slot 0 at guest physical 0 over the RAM block), no
 * interrupt controller, no devices.  Each vCPU has a thread that loops on
 * KVM_RUN; the guest never exits on its own, so the VMM takes a vCPU out
 * of guest mode with a signal: it sets the vCPU's immediate_exit and sends
 * SIGUSR1 to its thread (a handler that does nothing, without SA_RESTART).
 * KVM_RUN then returns EINTR; immediate_exit covers the signal arriving
 * just before the thread enters KVM_RUN.
 *
 * Pause: set paused, kick every vCPU, wait until each thread says it is
 * parked outside KVM_RUN.  A vCPU thread clears immediate_exit before it
 * reads paused, and the pauser sets paused before immediate_exit, so a
 * kick is never lost.  Throttle (auto-converge): a service thread kicks
 * the vCPUs every 10 ms, and each sleeps 10 ms * p / (100 - p) before it
 * re-enters, as QEMU's throttle does.  In ring mode the same thread reaps
 * the dirty rings every few milliseconds, and a vCPU that exits with
 * KVM_EXIT_DIRTY_RING_FULL harvests before it re-enters.
 */
#include "kvm-vmm-internal.h"

static const guint8 guest_code[] = {
	0x8b, 0x07,       /* again: mov eax, [edi] */
	0x40,             /* inc eax */
	0x89, 0x07,       /* mov [edi], eax */
	0x89, 0xde,       /* mov esi, ebx */
	0x89, 0xcd,       /* mov ebp, ecx */
	0xff, 0x06,       /* page: inc dword [esi] */
	0x89, 0x46, 0x04, /* mov [esi + 4], eax */
	0x01, 0xd6,       /* add esi, edx */
	0x4d,             /* dec ebp */
	0x75, 0xf6,       /* jnz page */
	0xeb, 0xeb,       /* jmp again */
};

static void on_kick(int sig)
{
	(void)sig;
}

void vmm_fail(SimKvm *k, char *msg)
{
	pthread_mutex_lock(&k->err_lock);
	if (!k->error)
		k->error = msg;
	else
		g_free(msg);
	pthread_mutex_unlock(&k->err_lock);
}

bool vmm_io_fail(GError **error, const char *what)
{
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO, "%s: %s", what,
		    g_strerror(errno));
	return false;
}

static void park(SimKvm *k)
{
	g_atomic_int_inc(&k->parked);
	while (g_atomic_int_get(&k->paused) && !g_atomic_int_get(&k->stop))
		g_usleep(200);
	g_atomic_int_add(&k->parked, -1);
}

static void throttle_sleep(SimKvm *k)
{
	int p = g_atomic_int_get(&k->throttle);

	if (p > 0 && p < 100)
		g_usleep((gulong)(THROTTLE_SLICE_US * p / (100 - p)));
}

/*
 * An image guest's port I/O: COM1 output is its progress report; port
 * 0x92 (A20) reads 0 and ignores writes; any other port reads all ones.
 * On 'D' the loop is about to start with esi and edi holding the working
 * set's bounds.
 */
static bool port_io(Vcpu *v)
{
	struct kvm_run *r = v->run;
	guint8 *data = (guint8 *)r + r->io.data_offset;
	size_t n = (size_t)r->io.size * r->io.count;

	if (r->io.direction == KVM_EXIT_IO_IN) {
		memset(data, r->io.port == SIM_IMAGE_PORT_A20 ? 0 : 0xff, n);
		return true;
	}
	if (r->io.port != SIM_IMAGE_COM1)
		return true;
	for (size_t i = 0; i < n; i++) {
		struct kvm_regs regs;

		if (data[i] == '.')
			g_atomic_int_inc(&v->k->marks);
		if (data[i] != 'D' && data[i] != 'H')
			continue;
		if (data[i] == 'D' && ioctl(v->fd, KVM_GET_REGS, &regs) == 0) {
			v->k->ws_start = (uint32_t)regs.rsi;
			v->k->ws_end = (uint32_t)regs.rdi;
		}
		g_atomic_int_set(&v->k->banner, data[i]);
	}
	return true;
}

static void ring_full(Vcpu *v)
{
	GError *error = NULL;

	if (!migram_kvm_log_harvest(v->k->log, NULL, &error)) {
		vmm_fail(v->k,
			 g_strdup_printf("vCPU %u: %s", v->id, error->message));
		g_error_free(error);
	}
}

static gpointer vcpu_main(gpointer p)
{
	Vcpu *v = p;
	SimKvm *k = v->k;

	v->tid = pthread_self();
	g_atomic_int_set(&v->started, 1);
	while (!g_atomic_int_get(&k->stop)) {
		int r;

		__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
		if (g_atomic_int_get(&k->paused)) {
			park(k);
			continue;
		}
		if (v->halted) { /* interrupts are off: for good */
			g_usleep(1000);
			continue;
		}
		r = ioctl(v->fd, KVM_RUN, 0);
		if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
			throttle_sleep(k);
			continue;
		}
		if (r < 0) {
			vmm_fail(k, g_strdup_printf("vCPU %u: KVM_RUN: %s",
						    v->id, g_strerror(errno)));
			break;
		}
		if (v->run->exit_reason == KVM_EXIT_DIRTY_RING_FULL) {
			ring_full(v);
			continue;
		}
		if (v->run->exit_reason == KVM_EXIT_INTR)
			continue;
		if (k->image && v->run->exit_reason == KVM_EXIT_IO &&
		    port_io(v))
			continue;
		if (k->image && v->run->exit_reason == KVM_EXIT_HLT) {
			v->halted = true;
			continue;
		}
		vmm_fail(k, g_strdup_printf("vCPU %u: unexpected KVM exit %u "
					    "(MMIO address %#llx)",
					    v->id, v->run->exit_reason,
					    (unsigned long long)
						    v->run->mmio.phys_addr));
		break;
	}
	/* A dead vCPU counts as parked for good. */
	g_atomic_int_inc(&k->parked);
	return NULL;
}

static void kick_all(SimKvm *k)
{
	for (unsigned int i = 0; i < k->nvcpus; i++) {
		Vcpu *v = &k->vcpus[i];

		if (!v->run)
			continue; /* never created */
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		if (g_atomic_int_get(&v->started))
			pthread_kill(v->tid, SIGUSR1);
	}
}

static gpointer service_main(gpointer p)
{
	SimKvm *k = p;
	gint64 last_kick = 0;

	while (!g_atomic_int_get(&k->stop)) {
		g_usleep(SERVICE_US);
		if (k->log && migram_kvm_log_ring(k->log))
			(void)migram_kvm_log_harvest(k->log, NULL, NULL);
		if (g_atomic_int_get(&k->throttle) > 0 &&
		    !g_atomic_int_get(&k->paused) &&
		    g_get_monotonic_time() - last_kick >= THROTTLE_SLICE_US) {
			last_kick = g_get_monotonic_time();
			kick_all(k);
		}
	}
	return NULL;
}

void sim_kvm_pause(void *opaque)
{
	SimKvm *k = opaque;
	gint64 last = 0;

	g_atomic_int_set(&k->paused, 1);
	while (g_atomic_int_get(&k->parked) < (int)k->nvcpus) {
		/* Kick again now and then: a vCPU thread may not have had
		 * its tid published at the first kick. */
		if (g_get_monotonic_time() - last > 1000) {
			kick_all(k);
			last = g_get_monotonic_time();
		}
		g_usleep(50);
	}
}

void sim_kvm_resume(void *opaque)
{
	g_atomic_int_set(&((SimKvm *)opaque)->paused, 0);
}

void sim_kvm_throttle(void *opaque, unsigned int percent)
{
	g_atomic_int_set(&((SimKvm *)opaque)->throttle, (int)percent);
}

/* KVM, the VM, and a handler for the kick signal. */
SimKvm *vmm_vm_new(GError **error)
{
	struct sigaction sa = { .sa_handler = on_kick };
	SimKvm *k = g_new0(SimKvm, 1);
	int sz;

	pthread_mutex_init(&k->err_lock, NULL);
	k->kvm = k->vm = -1;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL); /* no SA_RESTART: KVM_RUN returns */
	k->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (k->kvm < 0) {
		vmm_io_fail(error, "/dev/kvm");
		sim_kvm_free(k);
		return NULL;
	}
	k->vm = ioctl(k->kvm, KVM_CREATE_VM, 0);
	sz = ioctl(k->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (k->vm < 0 || sz <= 0) {
		vmm_io_fail(error, "KVM_CREATE_VM");
		sim_kvm_free(k);
		return NULL;
	}
	k->run_size = (size_t)sz;
	return k;
}

bool vmm_map_ram(SimKvm *k, guint8 *mem, uint64_t bytes, GError **error)
{
	struct kvm_userspace_memory_region r = { 0 };

	k->mem = mem;
	k->mem_bytes = bytes;
	if (k->mem_bytes > SIM_KVM_MAX_RAM ||
	    k->mem_bytes < SIM_KVM_WS_START + PAGE) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "the KVM guest's RAM must be 1 MiB + 4 KiB to "
			    "4 GiB");
		return false;
	}
	r.slot = 0;
	r.guest_phys_addr = 0;
	r.memory_size = k->mem_bytes;
	r.userspace_addr = (uint64_t)(uintptr_t)k->mem;
	if (ioctl(k->vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return vmm_io_fail(error, "KVM_SET_USER_MEMORY_REGION");
	return true;
}

bool vmm_vcpu_create(SimKvm *k, unsigned int i, GError **error)
{
	Vcpu *v = &k->vcpus[i];

	v->k = k;
	v->id = i;
	v->fd = ioctl(k->vm, KVM_CREATE_VCPU, i);
	if (v->fd < 0)
		return vmm_io_fail(error, "KVM_CREATE_VCPU");
	v->run = mmap(NULL, k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      v->fd, 0);
	if (v->run == MAP_FAILED) {
		v->run = NULL;
		return vmm_io_fail(error, "mmap of kvm_run");
	}
	if (k->log && migram_kvm_log_ring(k->log) &&
	    !migram_kvm_log_add_vcpu(k->log, v->fd, error))
		return false;
	return true;
}

void vmm_start_threads(SimKvm *k)
{
	for (unsigned int i = 0; i < k->nvcpus; i++)
		k->vcpus[i].thread = g_thread_new("sim-vcpu", vcpu_main,
						  &k->vcpus[i]);
	k->service = g_thread_new("sim-vcpu-service", service_main, k);
}

/* 32-bit protected mode, flat 4 GiB code and data segments. */
static bool set_flat_pm(Vcpu *v, GError **error)
{
	struct kvm_segment cs = { .limit = 0xffffffff,
				  .selector = 8,
				  .type = 11,
				  .present = 1,
				  .db = 1,
				  .s = 1,
				  .g = 1 };
	struct kvm_segment ds = cs;
	struct kvm_sregs s;

	if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		return vmm_io_fail(error, "KVM_GET_SREGS");
	ds.type = 3;
	ds.selector = 16;
	s.cs = cs;
	s.ds = s.es = s.fs = s.gs = s.ss = ds;
	s.cr0 |= 1; /* PE; no paging */
	if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0)
		return vmm_io_fail(error, "KVM_SET_SREGS");
	return true;
}

/* Slices: the working set split in nvcpus runs of pages at the stride. */
static void plan(SimKvm *k, uint64_t ws, uint64_t stride)
{
	uint64_t room = MIN(k->mem_bytes, SIM_KVM_WS_END) - SIM_KVM_WS_START;
	uint64_t per, n;

	ws = ws ? MIN(ws, room) : room;
	per = ws / k->nvcpus;
	n = MAX(per / stride, 1);
	for (unsigned int i = 0; i < k->nvcpus; i++) {
		Vcpu *v = &k->vcpus[i];

		v->first = (uint32_t)(SIM_KVM_WS_START + i * n * stride);
		v->n = (uint32_t)n;
		v->stride = (uint32_t)stride;
		v->seq = SEQ_GPA + i * SEQ_STRIDE;
	}
}

/* Real mode at 0000:7c00, as a BIOS leaves a boot sector. */
static bool set_boot_sector(Vcpu *v, GError **error)
{
	struct kvm_regs regs = { .rip = SIM_IMAGE_LOAD_GPA, .rflags = 0x2 };
	struct kvm_sregs s;

	if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		return vmm_io_fail(error, "KVM_GET_SREGS");
	s.cs.base = 0;
	s.cs.selector = 0;
	if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0)
		return vmm_io_fail(error, "KVM_SET_SREGS");
	if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
		return vmm_io_fail(error, "KVM_SET_REGS");
	return true;
}

/*
 * --guest-image: copy the image to 0x7c00 of otherwise untouched (zero)
 * memory and start one vCPU there; wait until it printed its banner.
 */
static bool start_image(SimKvm *k, const char *path, GError **error)
{
	g_autoptr(GBytes) img = NULL;
	gint64 t0;

	if (!sim_image_load(path, &img, error))
		return false;
	k->image = true;
	memcpy(k->mem + SIM_IMAGE_LOAD_GPA, g_bytes_get_data(img, NULL),
	       g_bytes_get_size(img));
	if (!vmm_vcpu_create(k, 0, error) ||
	    !set_boot_sector(&k->vcpus[0], error))
		return false;
	vmm_start_threads(k);
	t0 = g_get_monotonic_time();
	while (!g_atomic_int_get(&k->banner)) {
		g_autofree char *e = sim_kvm_take_error(k);

		if (e || g_get_monotonic_time() - t0 > 10 * G_USEC_PER_SEC) {
			g_set_error(
				error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				"%s: the guest never printed its banner%s%s",
				path, e ? ": " : "", e ? e : "");
			return false;
		}
		g_usleep(1000);
	}
	return true;
}

static const char *mode_name(const SimOptions *opt)
{
	return opt->dirty_log ? opt->dirty_log : "manual";
}

SimKvm *sim_kvm_source_new(const SimOptions *opt, MigramRamBlock *block,
			   GError **error)
{
	const char *mode = mode_name(opt);
	uint64_t stride = opt->stride ? opt->stride : PAGE;
	SimKvm *k = vmm_vm_new(error);

	if (!k)
		return NULL;
	k->nvcpus = opt->guest_image ? 1 : MIN(MAX(opt->threads, 1), MAX_VCPUS);
	k->vcpus = g_new0(Vcpu, k->nvcpus);
	/* The ring must be enabled before the first vCPU exists. */
	if (strcmp(mode, "ring") == 0)
		k->log = migram_kvm_log_new_ring(k->vm, RING_ENTRIES, error);
	else if (strcmp(mode, "classic") == 0)
		k->log = migram_kvm_log_new_classic(k->vm, error);
	else
		k->log = migram_kvm_log_new(k->vm, error);
	if (!k->log ||
	    !vmm_map_ram(k, migram_ram_block_host(block),
			 migram_ram_block_used_length(block), error) ||
	    !migram_kvm_log_add_slot(k->log, block, 0, 0, error))
		goto vmm_fail;
	if (opt->guest_image) {
		if (!start_image(k, opt->guest_image, error))
			goto vmm_fail;
		return k;
	}
	plan(k, opt->working_set, stride);
	/* The program, zero counters and pass numbers; written before the
	 * migration starts, so the log need not see these writes. */
	memset(k->mem, 0, SIM_KVM_WS_START);
	memcpy(k->mem + CODE_GPA, guest_code, sizeof(guest_code));
	for (unsigned int i = 0; i < k->nvcpus; i++) {
		Vcpu *v = &k->vcpus[i];
		struct kvm_regs regs = { .rip = CODE_GPA, .rflags = 0x2 };

		for (uint64_t p = 0; p < v->n; p++)
			memset(k->mem + v->first + p * v->stride, 0, 8);
		if (!vmm_vcpu_create(k, i, error) || !set_flat_pm(v, error))
			goto vmm_fail;
		regs.rbx = v->first;
		regs.rcx = v->n;
		regs.rdx = v->stride;
		regs.rdi = v->seq;
		if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0) {
			vmm_io_fail(error, "KVM_SET_REGS");
			goto vmm_fail;
		}
	}
	vmm_start_threads(k);
	return k;
vmm_fail:
	sim_kvm_free(k);
	return NULL;
}

void sim_kvm_log_source(SimKvm *k, MigramLogSource *src)
{
	migram_kvm_log_source(k->log, src);
}

const char *sim_kvm_log_mode(SimKvm *k)
{
	if (!k->log)
		return NULL;
	if (migram_kvm_log_ring(k->log))
		return "ring";
	return migram_kvm_log_manual_protect(k->log) ? "manual-protect"
						     : "classic";
}

void sim_kvm_log_stats(SimKvm *k, MigramKvmLogStats *st)
{
	if (k->log)
		migram_kvm_log_get_stats(k->log, st);
	else
		memset(st, 0, sizeof(*st));
}

void sim_kvm_free(SimKvm *k)
{
	if (!k)
		return;
	g_atomic_int_set(&k->stop, 1);
	if (k->vcpus)
		kick_all(k);
	for (unsigned int i = 0; k->vcpus && i < k->nvcpus; i++)
		if (k->vcpus[i].thread)
			g_thread_join(k->vcpus[i].thread);
	if (k->service)
		g_thread_join(k->service);
	for (unsigned int i = 0; k->vcpus && i < k->nvcpus; i++) {
		if (k->vcpus[i].run)
			munmap(k->vcpus[i].run, k->run_size);
		if (k->vcpus[i].fd > 0)
			close(k->vcpus[i].fd);
	}
	migram_kvm_log_free(k->log);
	if (k->vm >= 0)
		close(k->vm);
	if (k->kvm >= 0)
		close(k->kvm);
	g_free(k->vcpus);
	g_free(k->error);
	pthread_mutex_destroy(&k->err_lock);
	g_free(k);
}
