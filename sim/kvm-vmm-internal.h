/* SPDX-License-Identifier: MIT */
/*
 * The simulator's KVM VMM, shared by kvm-vmm.c (the VM, vCPU threads,
 * the log) and kvm-vmm-state.c (saved state, checks, progress).
 */
#ifndef SIM_KVM_VMM_INTERNAL_H
#define SIM_KVM_VMM_INTERNAL_H

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/kvm.h>

#include <migram/bitmap.h>
#include <migram/migram.h>

#include "kvm-guest.h"
#include "kvm-image.h"

#define PAGE 4096u
#define CODE_GPA 0x1000u
#define SEQ_GPA 0x2000u
#define SEQ_STRIDE 64u
#define MAX_VCPUS 64u
#define STATE_MAGIC 0x564b474du /* "MGKV" */
#define STATE_VERSION 2u
#define RING_ENTRIES 65536u /* 1 MiB per vCPU: KVM's usual maximum */
#define SERVICE_US 5000     /* reaper and throttle period */
#define THROTTLE_SLICE_US 10000

/* The program: see kvm-guest.h.  Hand-assembled, 32-bit code. */

typedef struct {
	SimKvm *k;
	unsigned int id;
	int fd;
	struct kvm_run *run;
	GThread *thread;
	pthread_t tid;
	int started; /* atomic: tid is valid */
	/* the slice, as the registers give it */
	uint32_t first, n, stride, seq;
	bool halted; /* an image guest executed HLT (this thread only) */
} Vcpu;

struct SimKvm {
	int kvm, vm;
	size_t run_size;
	guint8 *mem;
	uint64_t mem_bytes;
	MigramKvmLog *log;
	Vcpu *vcpus;
	unsigned int nvcpus;
	GThread *service;
	int stop, paused, parked, throttle; /* atomics */
	pthread_mutex_t err_lock;           /* guards error */
	char *error;                        /* the first vCPU failure */
	/* --guest-image: a boot-sector guest (kvm-image.h) on one vCPU; its
	 * working set, known once it printed 'D' (banner, atomic: 0, 'D' or
	 * 'H'), and the '.' marks it printed (atomic) */
	bool image;
	uint64_t ws_start, ws_end;
	int banner, marks;
};

typedef struct {
	const guint8 *p;
	size_t left;
} Cursor;

void vmm_fail(SimKvm *k, char *msg);
bool vmm_io_fail(GError **error, const char *what);
/* KVM, the VM, and a handler for the kick signal. */
SimKvm *vmm_vm_new(GError **error);
bool vmm_map_ram(SimKvm *k, guint8 *mem, uint64_t bytes, GError **error);
bool vmm_vcpu_create(SimKvm *k, unsigned int i, GError **error);
void vmm_start_threads(SimKvm *k);

#endif /* SIM_KVM_VMM_INTERNAL_H */
