/* SPDX-License-Identifier: MIT */
/*
 * The simulator's KVM VMM: the guest's state (vCPU registers and the
 * pass program's sequence words) saved on the source and loaded on the
 * destination, the checks of a migrated guest, and the progress figures.
 */
#include "kvm-vmm-internal.h"

/* ---- state: the vCPUs' registers ------------------------------------- */

static void put32(GByteArray *out, uint32_t v)
{
	guint8 b[4] = { (guint8)v, (guint8)(v >> 8), (guint8)(v >> 16),
			(guint8)(v >> 24) };

	g_byte_array_append(out, b, 4);
}

bool sim_kvm_save_state(SimKvm *k, GByteArray *out, GError **error)
{
	put32(out, STATE_MAGIC);
	put32(out, STATE_VERSION);
	put32(out, k->nvcpus);
	put32(out, k->image);
	put32(out, (uint32_t)k->ws_start);
	put32(out, (uint32_t)k->ws_end);
	for (unsigned int i = 0; i < k->nvcpus; i++) {
		struct kvm_regs regs;
		struct kvm_sregs sregs;

		if (ioctl(k->vcpus[i].fd, KVM_GET_REGS, &regs) < 0)
			return vmm_io_fail(error, "KVM_GET_REGS");
		if (ioctl(k->vcpus[i].fd, KVM_GET_SREGS, &sregs) < 0)
			return vmm_io_fail(error, "KVM_GET_SREGS");
		put32(out, sizeof(regs));
		g_byte_array_append(out, (const guint8 *)&regs, sizeof(regs));
		put32(out, sizeof(sregs));
		g_byte_array_append(out, (const guint8 *)&sregs, sizeof(sregs));
	}
	return true;
}

static bool take(Cursor *c, void *dst, size_t n)
{
	if (c->left < n)
		return false;
	memcpy(dst, c->p, n);
	c->p += n;
	c->left -= n;
	return true;
}

static bool take32(Cursor *c, uint32_t *v)
{
	guint8 b[4];

	if (!take(c, b, 4))
		return false;
	*v = b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
	     (uint32_t)b[3] << 24;
	return true;
}

static bool bad_state(GError **error, const char *why)
{
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
		    "KVM guest state: %s", why);
	return false;
}

/* Load one vCPU's registers; the slice comes from them. */
static bool load_vcpu(Vcpu *v, Cursor *c, GError **error)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	uint32_t n;

	if (!take32(c, &n) || n != sizeof(regs) || !take(c, &regs, n) ||
	    !take32(c, &n) || n != sizeof(sregs) || !take(c, &sregs, n))
		return bad_state(error, "truncated or of another layout");
	if (v->k->image) {
		if (v->k->ws_start > v->k->ws_end ||
		    v->k->ws_end > v->k->mem_bytes)
			return bad_state(error,
					 "the working set is outside the RAM");
		goto set;
	}
	v->first = (uint32_t)regs.rbx;
	v->n = (uint32_t)regs.rcx;
	v->stride = (uint32_t)regs.rdx;
	v->seq = (uint32_t)regs.rdi;
	if (!v->n || v->stride < 8 ||
	    (uint64_t)v->first + (uint64_t)v->n * v->stride > v->k->mem_bytes ||
	    (uint64_t)v->seq + 4 > v->k->mem_bytes)
		return bad_state(error, "the working set is outside the RAM");
set:
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0)
		return vmm_io_fail(error, "KVM_SET_SREGS");
	if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
		return vmm_io_fail(error, "KVM_SET_REGS");
	return true;
}

SimKvm *sim_kvm_dest_new(guint8 *mem, uint64_t bytes, const guint8 *state,
			 size_t len, GError **error)
{
	Cursor c = { state, len };
	uint32_t magic, version, n, image, ws_start, ws_end;
	SimKvm *k;

	if (!take32(&c, &magic) || magic != STATE_MAGIC ||
	    !take32(&c, &version) || version != STATE_VERSION ||
	    !take32(&c, &n) || !n || n > MAX_VCPUS || !take32(&c, &image) ||
	    image > 1 || (image && n != 1) || !take32(&c, &ws_start) ||
	    !take32(&c, &ws_end)) {
		bad_state(error, "bad header");
		return NULL;
	}
	k = vmm_vm_new(error);
	if (!k)
		return NULL;
	k->nvcpus = n;
	k->vcpus = g_new0(Vcpu, n);
	k->image = image;
	k->ws_start = ws_start;
	k->ws_end = ws_end;
	g_atomic_int_set(&k->banner, image ? 'D' : 0);
	if (!vmm_map_ram(k, mem, bytes, error))
		goto vmm_fail;
	for (unsigned int i = 0; i < n; i++)
		if (!vmm_vcpu_create(k, i, error) ||
		    !load_vcpu(&k->vcpus[i], &c, error))
			goto vmm_fail;
	/* Created paused: sim_kvm_run_for() lets it go. */
	g_atomic_int_set(&k->paused, 1);
	vmm_start_threads(k);
	sim_kvm_pause(k);
	return k;
vmm_fail:
	sim_kvm_free(k);
	return NULL;
}

bool sim_kvm_run_for(SimKvm *k, unsigned int ms, GError **error)
{
	g_autofree char *e = NULL;

	sim_kvm_resume(k);
	g_usleep((gulong)ms * 1000);
	sim_kvm_pause(k);
	e = sim_kvm_take_error(k);
	if (e) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO, "%s", e);
		return false;
	}
	return true;
}

/* ---- the guest's invariant ------------------------------------------- */

static uint32_t word(const SimKvm *k, uint64_t gpa)
{
	return __atomic_load_n((const uint32_t *)(k->mem + gpa),
			       __ATOMIC_RELAXED);
}

/* Pages of the current pass done: counters == S form a prefix. */
static uint64_t prefix(const SimKvm *k, const Vcpu *v, uint32_t s)
{
	uint64_t lo = 0, hi = v->n;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (word(k, v->first + mid * v->stride) == s)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool check_vcpu(const SimKvm *k, const Vcpu *v, GString *d)
{
	uint32_t s = word(k, v->seq);
	uint64_t kk = s ? prefix(k, v, s) : 0;

	for (uint64_t i = 0; i < v->n; i++) {
		uint64_t at = v->first + i * v->stride;
		uint32_t cnt = word(k, at), last = word(k, at + 4);
		uint32_t want = i < kk ? s : (s ? s - 1 : 0);
		bool torn = i + 1 == kk && last == s - 1;

		if (cnt != want || (last != cnt && !torn)) {
			g_string_append_printf(
				d,
				"vCPU %u: page %" G_GUINT64_FORMAT
				" has count %u, last %u; pass %u, %" G_GUINT64_FORMAT
				" pages done",
				v->id, i, cnt, last, s, kk);
			return false;
		}
	}
	return true;
}

bool sim_kvm_check(SimKvm *k, char **detail)
{
	GString *d = g_string_new(NULL);
	uint64_t pages = 0;
	bool ok = true;

	if (k->image) {
		ok = sim_image_check(k->mem, k->ws_start, k->ws_end, d);
		*detail = g_string_free(d, FALSE);
		return ok;
	}
	for (unsigned int i = 0; i < k->nvcpus && ok; i++) {
		ok = check_vcpu(k, &k->vcpus[i], d);
		pages += k->vcpus[i].n;
	}
	if (ok)
		g_string_printf(
			d,
			"%u vCPUs, %" G_GUINT64_FORMAT
			" pages consistent with passes (sum %" G_GUINT64_FORMAT
			")",
			k->nvcpus, pages, sim_kvm_passes(k));
	*detail = g_string_free(d, FALSE);
	return ok;
}

uint64_t sim_kvm_progress(SimKvm *k)
{
	uint64_t total = 0;

	if (k->image)
		return g_atomic_int_get(&k->banner) == 'D'
			       ? sim_image_progress(k->mem, k->ws_start,
						    k->ws_end)
			       : 0;
	for (unsigned int i = 0; i < k->nvcpus; i++) {
		const Vcpu *v = &k->vcpus[i];
		uint32_t s = word(k, v->seq);

		if (s)
			total += (uint64_t)(s - 1) * v->n + prefix(k, v, s);
	}
	return total;
}

void sim_kvm_written_pages(const SimKvm *k, unsigned long *map, uint64_t npages)
{
	if (k->image) {
		sim_image_written_pages(k->ws_start, k->ws_end, map, npages);
		return;
	}
	for (unsigned int i = 0; i < k->nvcpus; i++) {
		const Vcpu *v = &k->vcpus[i];

		if (v->seq / PAGE < npages)
			migram_bitmap_set_bit(map, v->seq / PAGE);
		for (uint64_t p = 0; p < v->n; p++) {
			uint64_t pfn = (v->first + p * v->stride) / PAGE;

			if (pfn < npages)
				migram_bitmap_set_bit(map, (size_t)pfn);
		}
	}
}

uint64_t sim_kvm_passes(SimKvm *k)
{
	uint64_t total = 0;

	if (k->image)
		return g_atomic_int_get(&k->banner) == 'D'
			       ? sim_image_passes(k->mem, k->ws_start,
						  k->ws_end, NULL)
			       : 0;
	for (unsigned int i = 0; i < k->nvcpus; i++)
		total += word(k, k->vcpus[i].seq);
	return total;
}

uint64_t sim_kvm_ws_pages(const SimKvm *k)
{
	uint64_t n = 0;

	if (k->image)
		return (k->ws_end - k->ws_start) / PAGE;
	for (unsigned int i = 0; i < k->nvcpus; i++)
		n += k->vcpus[i].n;
	return n;
}

bool sim_kvm_is_image(const SimKvm *k)
{
	return k->image;
}

unsigned int sim_kvm_serial_marks(SimKvm *k)
{
	return (unsigned int)g_atomic_int_get(&k->marks);
}

char *sim_kvm_take_error(SimKvm *k)
{
	char *e;

	pthread_mutex_lock(&k->err_lock);
	e = k->error;
	k->error = NULL;
	pthread_mutex_unlock(&k->err_lock);
	return e;
}
