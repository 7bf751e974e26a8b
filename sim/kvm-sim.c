/* SPDX-License-Identifier: MIT */
/*
 * `migram-sim --workload kvm`: the steps real mode takes for a KVM guest.
 *
 * Source: start the VM (kvm-vmm.c) over the only RAM block, let the guest
 * finish its first pass and measure its write rate, migrate with the
 * VM's KVM dirty log as the source; at the pause check the guest's
 * invariant and send the vCPUs' registers after the RAM.
 *
 * Destination: receive the RAM and the registers, check the invariant on
 * the received memory, answer the per-page hashes (memory as at the
 * pause), then build a VM over the received block, let the guest run,
 * pause it, check the invariant again and that it made progress, and
 * send the verdict back.
 *
 * The registers travel in the stream's device section (a FULL section,
 * idstr SIM_KVM_DEVICE_IDSTR, after the RAM); the verdict comes back on
 * the channel after the per-page hashes.
 */
#include <string.h>
#include <sys/mman.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/migram.h>

#include "kvm-guest.h"
#include "kvm-sim.h"

#define FIRST_PASS_TIMEOUT_US (60 * G_USEC_PER_SEC)
#define RATE_WINDOW_US (300 * 1000)
#define DEST_RUN_MS 300

struct SimKvmSource {
	SimKvm *kvm;
	gint64 t_start;    /* monotonic µs when the migration started */
	uint64_t at_start; /* guest page writes then */
	bool saved;        /* save_device ran: the guest was paused for good */
	bool verified_at_pause;
	char *at_pause; /* the check at the pause, in words */
};

static MigramRamBlock *only_block(MigramRamList *list, GError **error)
{
	MigramRamBlock *b, *next;

	urcu_memb_read_lock();
	b = migram_ram_list_next(list, NULL);
	next = b ? migram_ram_list_next(list, b) : NULL;
	urcu_memb_read_unlock();
	if (!b || next) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "--workload kvm needs exactly one RAM block");
		return NULL;
	}
	return b; /* blocks are not removed while the sim runs */
}

SimKvmSource *sim_kvm_source_start(const SimOptions *opt, MigramRamList *list,
				   MigramLogSource *src, SimReport *rep,
				   GError **error)
{
	MigramRamBlock *b = only_block(list, error);
	SimKvmSource *s;
	SimKvm *k;
	gint64 t0;
	uint64_t w0, want;

	if (!b)
		return NULL;
	k = sim_kvm_source_new(opt, b, error);
	if (!k)
		return NULL;
	s = g_new0(SimKvmSource, 1);
	s->kvm = k;
	rep->kvm = true;
	rep->dirty_log = g_strdup(sim_kvm_log_mode(k));
	sim_kvm_log_source(k, src);
	rep->guest_image = sim_kvm_is_image(k);
	rep->guest_ws_pages = sim_kvm_ws_pages(k);
	/* The first pass: every vCPU's pass number reaches 2 (an image
	 * guest: 4 passes, or at once if it halts). */
	want = rep->guest_image ? (rep->guest_ws_pages ? 4 : 0)
				: 2 * (uint64_t)MAX(opt->threads, 1);
	t0 = g_get_monotonic_time();
	while (sim_kvm_passes(k) < want &&
	       g_get_monotonic_time() - t0 < FIRST_PASS_TIMEOUT_US)
		g_usleep(1000);
	/* The guest's own rate before the migration. */
	w0 = sim_kvm_progress(k);
	t0 = g_get_monotonic_time();
	g_usleep(RATE_WINDOW_US);
	s->at_start = sim_kvm_progress(k);
	s->t_start = g_get_monotonic_time();
	rep->guest_rate_before = (double)(s->at_start - w0) * 1e6 /
				 (double)MAX(s->t_start - t0, 1);
	return s;
}

void *sim_kvm_source_guest(SimKvmSource *s)
{
	return s->kvm;
}

static void put_blob(MigramChannel *ch, const void *p, size_t n)
{
	migram_channel_put_be64(ch, n);
	migram_channel_put_bytes(ch, p, n);
}

static bool get_blob(MigramChannel *ch, GByteArray **out, GError **error)
{
	uint64_t n;

	if (!migram_channel_get_be64(ch, &n, error))
		return false;
	if (n > 1 << 20) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "KVM guest blob of %" G_GUINT64_FORMAT " bytes", n);
		return false;
	}
	*out = g_byte_array_sized_new((guint)n);
	g_byte_array_set_size(*out, (guint)n);
	return migram_channel_get_bytes(ch, (*out)->data, (size_t)n, error);
}

bool sim_kvm_source_save(SimKvmSource *s, GByteArray *out, GError **error)
{
	/* Registers only: the invariant is checked after the migration, on
	 * memory that stays as at the pause, so that the check's scan of
	 * the working set is not part of the measured downtime. */
	s->saved = true;
	return sim_kvm_save_state(s->kvm, out, error);
}

bool sim_kvm_source_finish(SimKvmSource *s, bool ok, SimReport *rep,
			   GError **error)
{
	g_autofree char *vcpu_error = sim_kvm_take_error(s->kvm);
	double run_s;

	sim_kvm_log_stats(s->kvm, &rep->kvm_log);
	/* Completed: the guest is paused and its memory final; it ran until
	 * the pause.  Failed: it still runs. */
	run_s = ok ? (double)(rep->total_time_ms - rep->downtime_ms) / 1000.0
		   : (double)(g_get_monotonic_time() - s->t_start) / 1e6;
	rep->workload_writes = sim_kvm_progress(s->kvm) - s->at_start;
	rep->guest_rate_during = run_s > 0
					 ? (double)rep->workload_writes / run_s
					 : 0;
	rep->guest_passes = sim_kvm_passes(s->kvm);
	if (!ok)
		return false;
	if (s->saved) {
		g_autofree char *detail = NULL;

		/* Paused since save_device, and its memory unchanged: the
		 * source never writes guest memory (postcopy only reads it). */
		s->verified_at_pause = sim_kvm_check(s->kvm, &detail);
		s->at_pause = g_strdup_printf("source at the pause: %s",
					      detail);
	}
	if (vcpu_error) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO, "%s",
			    vcpu_error);
		return false;
	}
	rep->guest_verified = s->verified_at_pause;
	rep->guest_detail = g_strdup(s->at_pause ? s->at_pause
						 : "no device state was saved");
	return true;
}

bool sim_kvm_source_verdict(SimKvmSource *s, MigramChannel *ch, SimReport *rep,
			    GError **error)
{
	g_autoptr(GByteArray) v = NULL;
	char *d;

	(void)s;
	if (!get_blob(ch, &v, error))
		return false;
	if (!v->len)
		return false;
	d = g_strdup_printf("%s; destination: %.*s", rep->guest_detail,
			    (int)v->len - 1, (const char *)v->data + 1);
	g_free(rep->guest_detail);
	rep->guest_detail = d;
	rep->guest_verified = rep->guest_verified && v->data[0] == '1';
	return true;
}

void sim_kvm_source_free(SimKvmSource *s)
{
	if (!s)
		return;
	sim_kvm_free(s->kvm);
	g_free(s->at_pause);
	g_free(s);
}

/*
 * Check, run, check; the verdict as "1..." or "0...".  Frees @k.  @when
 * names the first check ("at the pause", "after postcopy").
 */
char *sim_kvm_verdict(SimKvm *k, const char *when)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *at_pause = NULL, *after = NULL;
	uint64_t w0, w1;
	bool ok, halts;

	if (!sim_kvm_check(k, &at_pause)) {
		sim_kvm_free(k);
		return g_strdup_printf("0%s: %s", when, at_pause);
	}
	w0 = sim_kvm_progress(k);
	if (!sim_kvm_run_for(k, DEST_RUN_MS, &error)) {
		sim_kvm_free(k);
		return g_strdup_printf("0%s: %s; then %s", when, at_pause,
				       error->message);
	}
	w1 = sim_kvm_progress(k);
	ok = sim_kvm_check(k, &after);
	halts = sim_kvm_ws_pages(k) == 0;
	sim_kvm_free(k);
	if (ok && w1 <= w0 && !halts)
		return g_strdup_printf("0the guest made no progress in %d ms",
				       DEST_RUN_MS);
	return g_strdup_printf("%c%s: %s; resumed for %d ms: "
			       "%" G_GUINT64_FORMAT " page writes, %s",
			       ok ? '1' : '0', when, at_pause, DEST_RUN_MS,
			       w1 - w0, after);
}

/* Build over @mem, then check, run, check. */
static char *dest_verdict(guint8 *mem, uint64_t bytes, GByteArray *state)
{
	g_autoptr(GError) error = NULL;
	SimKvm *k = sim_kvm_dest_new(mem, bytes, state->data, state->len,
				     &error);

	if (!k)
		return g_strdup_printf("0%s", error->message);
	return sim_kvm_verdict(k, "at the pause");
}

unsigned long *sim_kvm_source_written(SimKvmSource *s, uint64_t npages)
{
	unsigned long *map = migram_bitmap_new((size_t)MAX(npages, 1));

	sim_kvm_written_pages(s->kvm, map, npages);
	return map;
}

SimKvm *sim_kvm_dest_start(MigramRamList *list, GByteArray *state,
			   GError **error)
{
	MigramRamBlock *b = only_block(list, error);
	SimKvm *k;

	if (!b)
		return NULL;
	if (!state) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "RUN came without the vCPU state");
		return NULL;
	}
	k = sim_kvm_dest_new(migram_ram_block_host(b),
			     migram_ram_block_used_length(b), state->data,
			     state->len, error);
	if (k)
		sim_kvm_resume(k);
	return k;
}

SimKvm *sim_kvm_restore_new(MigramRamList *list, const guint8 *state,
			    size_t len, GError **error)
{
	MigramRamBlock *b = only_block(list, error);

	if (!b)
		return NULL;
	return sim_kvm_dest_new(migram_ram_block_host(b),
				migram_ram_block_used_length(b), state, len,
				error);
}

void sim_kvm_dest_pause(SimKvm *k)
{
	sim_kvm_pause(k);
}

bool sim_kvm_dest_verdict_postcopy(SimKvm *k, MigramChannel *ch, GError **error)
{
	g_autofree char *e = sim_kvm_take_error(k);
	g_autofree char *v = e ? g_strdup_printf("0during postcopy: %s", e)
			       : sim_kvm_verdict(k, "after postcopy");

	if (e)
		sim_kvm_free(k);
	put_blob(ch, v, strlen(v));
	return migram_channel_flush(ch, error);
}

bool sim_kvm_dest_run(MigramRamList *list, GByteArray *state, bool copy,
		      MigramChannel *ch, GError **error)
{
	g_autoptr(GError) local = NULL;
	MigramRamBlock *b = only_block(list, &local);
	g_autofree char *v = NULL;
	guint8 *mem, *run_in;
	uint64_t bytes;

	if (!state) {
		v = g_strdup("0the stream had no vCPU state");
	} else if (!b) {
		v = g_strdup_printf("0%s", local->message);
	} else {
		mem = migram_ram_block_host(b);
		bytes = migram_ram_block_used_length(b);
		run_in = mem;
		if (copy) {
			run_in = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
				      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (run_in == MAP_FAILED)
				run_in = NULL;
			else
				memcpy(run_in, mem, bytes);
		}
		v = run_in ? dest_verdict(run_in, bytes, state)
			   : g_strdup("0no memory for the guest's copy");
		if (copy && run_in)
			munmap(run_in, bytes);
	}
	put_blob(ch, v, strlen(v));
	return migram_channel_flush(ch, error);
}
