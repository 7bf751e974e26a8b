/* SPDX-License-Identifier: MIT */
/*
 * Real mode: a live migration between two processes, verified.
 *
 * Source: RAM blocks, a software dirty log, writer threads (workload.c),
 * and a MigramMigration on the chosen transport, with a monitor thread
 * sampling the statistics into the timeline and the progress line.
 * Destination: a MigramReceiver that creates the blocks the stream lists.
 *
 * Verification.  After the stream ends the destination sends back one
 * 64-bit hash per page of every block (name, page count, hashes), on the
 * same connection.  The source, whose guest is paused, hashes its own
 * pages and compares: a difference names the block and the first page.
 * With --verify-bytes (fork transports) the destination's blocks live in
 * memory shared with the source, which compares them byte for byte too.
 * The file transport saves, then restores into this very process.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/dirty-log.h>
#include <migram/migram.h>
#include <migram/migration.h>
#include <migram/receiver.h>

#include <migram/bitmap.h>

#include "kvm-sim.h"
#include "link.h"
#include "peer.h"
#include "torture.h"
#include "workload.h"

#define PAGE 4096u

/* ---- pages and hashes ------------------------------------------------ */

/* CPU time (user + system) of this process so far, in µs. */
static uint64_t cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) *
		       G_USEC_PER_SEC +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static guint64 page_hash(const guint8 *p)
{
	const guint64 *w = (const guint64 *)p;
	guint64 h = 0x84222325cbf29ce4ULL;

	for (unsigned int i = 0; i < PAGE / 8; i++)
		h = (h ^ w[i]) * 0x100000001b3ULL;
	return h;
}

static MigramRamList *source_list(const SimOptions *opt, GError **error)
{
	MigramRamList *list = migram_ram_list_new();

	for (guint i = 0; i < opt->blocks->len; i++) {
		SimBlockSpec *s = &g_array_index(opt->blocks, SimBlockSpec, i);
		MigramRamBlockConfig c = {
			.idstr = s->name,
			.used_length = s->bytes,
			.backend = s->hugetlb  ? MIGRAM_RAM_BACKEND_HUGETLB
				   : s->shared ? MIGRAM_RAM_BACKEND_MEMFD
					       : MIGRAM_RAM_BACKEND_ANON,
		};
		MigramRamBlock *b;

		sim_torture_block_config(opt, i, s, &c);
		b = migram_ram_list_add(list, &c, error);

		if (!b) {
			migram_ram_list_free(list);
			return NULL;
		}
		sim_fill_block(b, opt->fill);
	}
	return list;
}

/* Send "name, n, hashes" for every migratable block of list. */
static bool send_hashes(MigramRamList *list, MigramChannel *ch, GError **error)
{
	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next_migratable(list, NULL); b;
	     b = migram_ram_list_next_migratable(list, b)) {
		uint64_t n = migram_ram_block_used_length(b) / PAGE;
		const guint8 *h = migram_ram_block_host(b);

		migram_channel_put_counted_string(ch,
						  migram_ram_block_idstr(b));
		migram_channel_put_be64(ch, n);
		for (uint64_t p = 0; p < n; p++)
			migram_channel_put_be64(ch, page_hash(h + p * PAGE));
	}
	urcu_memb_read_unlock();
	migram_channel_put_counted_string(ch, "");
	return migram_channel_flush(ch, error);
}

/* Compare the peer's hashes with list's pages; a detail string. */
static bool compare_hashes(MigramRamList *list, MigramChannel *ch,
			   char **detail, SimReport *rep,
			   const unsigned long *skip, GError **error)
{
	char name[256];
	uint64_t blocks = 0, pages = 0, skipped = 0;

	for (;;) {
		MigramRamBlock *b;
		uint64_t n, want;

		if (!migram_channel_get_counted_string(ch, name, error))
			return false;
		if (!name[0])
			break;
		if (strcmp(name, "#cpu") == 0) {
			uint64_t us;

			if (!migram_channel_get_be64(ch, &us, error))
				return false;
			if (rep)
				rep->cpu_dst_ms = us / 1000;
			continue;
		}
		if (strcmp(name, "#postcopy") == 0) {
			uint64_t v[6 + 32];

			for (int i = 0; i < 6 + 32; i++)
				if (!migram_channel_get_be64(ch, &v[i], error))
					return false;
			if (rep) {
				rep->dest_figures = true;
				rep->faults = v[0];
				rep->fault_p50_us = v[1];
				rep->fault_p99_us = v[2];
				rep->fault_max_us = v[3];
				rep->blocked_ms = v[4] / 1000;
				rep->dest_touches = v[5];
				memcpy(rep->fault_hist, v + 6,
				       sizeof(rep->fault_hist));
			}
			continue;
		}
		if (!migram_channel_get_be64(ch, &n, error))
			return false;
		urcu_memb_read_lock();
		b = migram_ram_list_find(list, name);
		if (!b || migram_ram_block_used_length(b) / PAGE != n) {
			urcu_memb_read_unlock();
			*detail = g_strdup_printf(
				"block '%s' missing or of another size", name);
			return true;
		}
		for (uint64_t p = 0; p < n; p++) {
			const guint8 *h = migram_ram_block_host(b);

			if (!migram_channel_get_be64(ch, &want, error)) {
				urcu_memb_read_unlock();
				return false;
			}
			if (skip && migram_bitmap_test_bit(skip, (size_t)p)) {
				skipped++;
				continue;
			}
			if (!*detail && want != page_hash(h + p * PAGE))
				*detail = g_strdup_printf(
					"block '%s' page %" G_GUINT64_FORMAT
					" (offset %#" G_GINT64_MODIFIER
					"x) differs",
					name, p, p * PAGE);
		}
		urcu_memb_read_unlock();
		blocks++;
		pages += n;
	}
	if (!*detail) {
		*detail = g_strdup_printf(
			"%" G_GUINT64_FORMAT " blocks, %" G_GUINT64_FORMAT
			" pages equal (per-page hashes)%s",
			blocks, pages - skipped,
			skipped ? "; the guest's working set is vouched for "
				  "by its invariant"
				: "");
		return true;
	}
	return true;
}

/* ---- the monitor: timeline and progress ------------------------------ */

typedef struct {
	const SimOptions *opt;
	MigramMigration *m;
	SimReport *rep;
	int done;
	gint64 t0;
	int main_fd; /* atomic: the source's current main connection */
} Monitor;

/* --inject-disconnect-after: cut main that long into postcopy, once. */
static void maybe_cut(Monitor *mon, const MigramMigrationStats *st, gint64 now,
		      gint64 *t_active, bool *cut)
{
	if (!mon->opt->inject_disconnect_ms || *cut ||
	    st->status != MIGRAM_MIGRATION_POSTCOPY_ACTIVE)
		return;
	if (!*t_active)
		*t_active = now;
	if ((uint64_t)(now - *t_active) / 1000 < mon->opt->inject_disconnect_ms)
		return;
	shutdown(g_atomic_int_get(&mon->main_fd), SHUT_RDWR);
	*cut = true;
}

/* Two processes (--role): say when postcopy begins; true once said. */
static bool announce_switch(const SimOptions *opt, gint64 at_us)
{
	if (opt->role && !opt->quiet)
		fprintf(stderr,
			"migram-sim: source: switched to postcopy at %.1f s; "
			"the guest runs on the destination\n",
			(double)at_us / 1e6);
	return true;
}

static gpointer monitor_main(gpointer p)
{
	Monitor *mon = p;
	uint64_t last_bytes = 0;
	gint64 last_t = mon->t0, t_active = 0;
	bool cut = false, switched = false;

	while (!g_atomic_int_get(&mon->done)) {
		MigramMigrationStats st;
		SimSample s;
		gint64 now;

		g_usleep(mon->opt->inject_disconnect_ms ? 5 * 1000
							: 100 * 1000);
		migram_migration_get_stats(mon->m, &st);
		now = g_get_monotonic_time();
		maybe_cut(mon, &st, now, &t_active, &cut);
		if (!switched && st.status >= MIGRAM_MIGRATION_POSTCOPY_ACTIVE)
			switched = announce_switch(mon->opt, now - mon->t0);
		if (mon->opt->inject_disconnect_ms && now - last_t < 100000)
			continue;
		s = (SimSample){
			.t = (double)(now - mon->t0) / 1e6,
			.remaining_pages = st.remaining_bytes / PAGE,
			.dirty_rate = st.dirty_bytes_rate,
			.bandwidth =
				(double)(st.transferred_bytes - last_bytes) *
				1e6 / (double)MAX(now - last_t, 1),
			.pages_sent = st.normal_pages + st.duplicate_pages,
			.pass = st.iterations,
			/* measured at the sync that ends a pass */
			.dirty_rate_known = st.iterations > 0,
			.paused = st.status == MIGRAM_MIGRATION_DEVICE,
			.postcopy = switched,
		};
		last_bytes = st.transferred_bytes;
		last_t = now;
		if (s.paused && mon->rep->pause_at < 0)
			mon->rep->pause_at = s.t;
		g_array_append_val(mon->rep->timeline, s);
		sim_progress(mon->opt, migram_migration_status_name(st.status),
			     &s, st.iterations);
	}
	sim_progress_done(mon->opt);
	return NULL;
}

static void fill_report(SimReport *rep, const MigramMigrationStats *st)
{
	g_strlcpy(rep->status, migram_migration_status_name(st->status),
		  sizeof(rep->status));
	rep->total_bytes = st->total_bytes;
	rep->transferred_bytes = st->transferred_bytes;
	rep->normal_pages = st->normal_pages;
	rep->duplicate_pages = st->duplicate_pages;
	rep->dirty_sync_count = st->dirty_sync_count;
	rep->iterations = st->iterations;
	rep->log_clear_calls = st->log_clear_calls;
	rep->downtime_ms = st->downtime_ms;
	rep->downtime_parts_us[0] = st->downtime_pause_us;
	rep->downtime_parts_us[1] = st->downtime_sync_us;
	rep->downtime_parts_us[2] = st->downtime_pages_us;
	rep->downtime_parts_us[3] = st->downtime_device_us;
	rep->log_sync_us = st->log_sync_us;
	rep->log_clear_us = st->log_clear_us;
	rep->setup_time_ms = st->setup_time_ms;
	rep->total_time_ms = st->total_time_ms;
	rep->mbps = st->mbps;
	rep->throttle_percent = st->throttle_percent;
	rep->postcopy_time_ms = st->postcopy_time_ms;
	rep->postcopy_requests = st->postcopy_requests;
	rep->postcopy_urgent_pages = st->postcopy_urgent_pages;
	rep->postcopy_recoveries = st->postcopy_recoveries;
	rep->discard_pages = st->postcopy_discard_pages;
}

/* The source's callbacks: the guest's, plus reconnecting in postcopy. */
typedef struct {
	const SimOptions *opt;
	SimGuest *guest;
	SimKvmSource *kvm; /* --workload kvm instead of guest */
	SimLink *lk;
	Monitor *mon;
	MigramChannel *cur;  /* the current main channel */
	GPtrArray *channels; /* every channel made, freed at the end */
} SrcCtx;

static void src_pause(void *o)
{
	SrcCtx *c = o;

	if (c->kvm)
		sim_kvm_pause(sim_kvm_source_guest(c->kvm));
	else
		sim_guest_pause(c->guest);
}

static void src_resume(void *o)
{
	SrcCtx *c = o;

	if (c->kvm)
		sim_kvm_resume(sim_kvm_source_guest(c->kvm));
	else
		sim_guest_resume(c->guest);
}

static void src_throttle(void *o, unsigned int percent)
{
	SrcCtx *c = o;

	if (c->kvm)
		sim_kvm_throttle(sim_kvm_source_guest(c->kvm), percent);
	else
		sim_guest_throttle(c->guest, percent);
}

/* --workload kvm: the vCPUs' state, as the stream's device section. */
static bool src_save_device(void *o, GByteArray *out, GError **error)
{
	return sim_kvm_source_save(((SrcCtx *)o)->kvm, out, error);
}

/* SIGINT, SIGTERM (peer.c): stop the migration; the report follows. */
static void cancel_migration(void *m)
{
	migram_migration_cancel(m);
}

/* Postcopy paused: a new connection, then recover (or give up). */
static void src_paused(void *o)
{
	SrcCtx *c = o;
	int fd = sim_peer_await(c->opt->peer, c->opt, c->lk, "source", c->cur);
	g_autoptr(GError) e = NULL;

	if (fd < 0) {
		migram_migration_cancel(c->mon->m);
		return;
	}
	c->cur = migram_channel_new(fd, true);
	g_ptr_array_add(c->channels, c->cur);
	g_atomic_int_set(&c->mon->main_fd, fd);
	if (!migram_migration_recover(c->mon->m, c->cur, &e))
		g_printerr("migram-sim: source: %s\n", e->message);
}

static const char *mode_name(SimMode m)
{
	return m == SIM_MODE_POSTCOPY ? "postcopy"
	       : m == SIM_MODE_HYBRID ? "hybrid"
				      : "precopy";
}

/*
 * The source: run the migration on lk's connection with a live workload;
 * the guest is left paused (so memory is final) and its writers stopped.
 */
static int run_source(const SimOptions *opt, MigramRamList *list, SimLink *lk,
		      SimReport *rep, GError **error)
{
	g_autoptr(GPtrArray) blocks = g_ptr_array_new();
	g_autoptr(GPtrArray) channels = g_ptr_array_new_with_free_func(
		(GDestroyNotify)migram_channel_free);
	MigramSoftLog *log = NULL;
	MigramUffdLog *uffd = NULL;
	SimTorture *torture;
	MigramLogSource src;
	MigramMigrationConfig cfg = { 0 };
	MigramMigrationStats st;
	MigramChannel *preempt = NULL;
	SimGuest *guest = NULL;
	Monitor mon = { .opt = opt, .rep = rep, .main_fd = lk->fd };
	SrcCtx ctx = {
		.opt = opt, .lk = lk, .mon = &mon, .channels = channels
	};
	GThread *mt;
	uint64_t end = 0, cpu0;
	bool ok;

	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next(list, NULL); b;
	     b = migram_ram_list_next(list, b)) {
		g_ptr_array_add(blocks, b);
		end = MAX(end, migram_ram_block_offset(b) +
				       migram_ram_block_max_length(b));
	}
	urcu_memb_read_unlock();
	if (opt->workload == SIM_WORKLOAD_KVM) {
		ctx.kvm = sim_kvm_source_start(opt, list, &src, rep, error);
		if (!ctx.kvm)
			return SIM_EXIT_FAILED;
	} else {
		log = migram_soft_log_new(end, error);
		if (!log)
			return SIM_EXIT_FAILED;
		migram_soft_log_source(log, &src);
		if (!sim_torture_log(opt, &src, &uffd, error)) {
			migram_soft_log_free(log);
			return SIM_EXIT_FAILED;
		}
		guest = sim_guest_start(opt, (MigramRamBlock **)blocks->pdata,
					blocks->len,
					migram_soft_log_bitmap(log));
	}
	ctx.guest = guest;
	cfg = (MigramMigrationConfig){
		.downtime_limit_ms = opt->downtime_limit_ms,
		.max_bandwidth = opt->max_bandwidth,
		.switchover_bandwidth = opt->switchover_bandwidth,
		.clear_bmap_shift = opt->clear_bitmap_shift,
		.clear_bmap_shift_set = opt->clear_bitmap_shift_set,
		.clear_at_sync = opt->clear_at_sync,
		.auto_converge = opt->auto_converge,
		.max_time_ms = opt->max_time_ms,
		.postcopy = opt->mode != SIM_MODE_PRECOPY,
		.postcopy_after_passes = opt->mode == SIM_MODE_HYBRID ? 1 : 0,
		.pause_guest = src_pause,
		.resume_guest = src_resume,
		.throttle_guest = src_throttle,
		.postcopy_paused = src_paused,
		.save_device = ctx.kvm ? src_save_device : NULL,
		.device_idstr = ctx.kvm ? SIM_KVM_DEVICE_IDSTR : NULL,
		.opaque = &ctx,
		.multifd_channels = lk->ndata,
		.multifd_fds = lk->ndata ? lk->data_fd : NULL,
	};
	g_strlcpy(rep->mode_name, mode_name(opt->mode), sizeof(rep->mode_name));
	mon.m = migram_migration_new(list, &src, &cfg);
	if (opt->mode == SIM_MODE_POSTCOPY)
		migram_migration_start_postcopy(mon.m);
	if (lk->preempt_fd >= 0) {
		preempt = migram_channel_new(lk->preempt_fd, true);
		lk->preempt_fd = -1;
		g_ptr_array_add(channels, preempt);
		migram_migration_set_preempt(mon.m, preempt);
	}
	mon.t0 = g_get_monotonic_time();
	mt = g_thread_new("sim-monitor", monitor_main, &mon);
	ctx.cur = migram_channel_new(lk->fd, true);
	g_ptr_array_add(channels, ctx.cur);
	sim_peer_set_cancel(opt->peer, cancel_migration, mon.m);
	cpu0 = cpu_us();
	torture = sim_torture_start(opt, list);
	ok = migram_migration_run(mon.m, ctx.cur, error);
	rep->cpu_src_ms = (cpu_us() - cpu0) / 1000;
	sim_torture_stop(torture);
	if (!ok && guest && opt->debug_check_source)
		sim_torture_check_source(opt, guest);
	sim_peer_set_cancel(opt->peer, NULL, NULL);
	g_atomic_int_set(&mon.done, 1);
	g_thread_join(mt);
	/* Freeze the guest before stopping writers: memory stays final. */
	if (ok && guest)
		sim_guest_pause(guest);
	if (guest)
		rep->workload_writes = sim_guest_stop(guest);
	migram_migration_get_stats(mon.m, &st);
	fill_report(rep, &st);
	if (ctx.kvm)
		ok = sim_kvm_source_finish(ctx.kvm, ok, rep, error);
	/* A short pause falls between two samples: take it from the stats. */
	if (ok)
		rep->pause_at = (double)(st.total_time_ms - st.downtime_ms -
					 st.postcopy_time_ms) /
				1000.0;
	migram_migration_free(mon.m);
	if (ok && opt->transport != SIM_TRANSPORT_FILE) {
		unsigned long *skip = NULL;

		/* Postcopy KVM: the destination's guest went on writing its
		 * working set; its invariant vouches for those pages. */
		if (ctx.kvm && opt->mode != SIM_MODE_PRECOPY)
			skip = sim_kvm_source_written(ctx.kvm,
						      st.total_bytes / PAGE);
		ok = compare_hashes(list, ctx.cur, &rep->verify_detail, rep,
				    skip, error);
		migram_bitmap_free(skip);
		rep->verified = ok && strstr(rep->verify_detail, "equal");
	}
	if (ok && ctx.kvm) {
		ok = sim_kvm_source_verdict(ctx.kvm, ctx.cur, rep, error);
		rep->verified = rep->verified && rep->guest_verified;
	}
	sim_link_close(lk);
	g_clear_pointer(&channels, g_ptr_array_unref);
	migram_soft_log_free(log);
	migram_uffd_log_free(uffd);
	sim_kvm_source_free(ctx.kvm);
	if (!ok)
		return g_error_matches(*error, MIGRAM_ERROR,
				       MIGRAM_ERROR_NOT_CONVERGED)
			       ? SIM_EXIT_NOT_CONVERGED
			       : SIM_EXIT_FAILED;
	return rep->verified || opt->transport == SIM_TRANSPORT_FILE
		       ? SIM_EXIT_OK
		       : SIM_EXIT_FAILED;
}

/* ---- the destination ------------------------------------------------- */

static void corrupt(MigramRamList *list, int64_t page)
{
	MigramRamBlock *b;

	urcu_memb_read_lock();
	b = migram_ram_list_next_migratable(list, NULL);
	if (b && page >= 0 &&
	    (uint64_t)page < migram_ram_block_used_length(b) / PAGE)
		((guint8 *)migram_ram_block_host(b))[page * PAGE + 1] ^= 0x5a;
	urcu_memb_read_unlock();
}

#define MAX_READERS 16

/*
 * The destination's side of postcopy: after RUN, reader threads touch
 * pages in the workload's pattern (most still missing, so they fault);
 * a cut connection is replaced by a spare or a new accept.
 */
typedef struct {
	const SimOptions *opt;
	SimLink *lk;
	MigramReceiver *r;
	MigramRamList *list;
	MigramChannel *cur;
	GPtrArray *channels;
	GPtrArray *hosts; /* guint8 * per migratable block */
	GArray *lens;     /* uint64_t */
	GThread *readers[MAX_READERS];
	unsigned int nreaders;
	int stop;              /* atomic */
	guint64 touches;       /* atomic */
	GByteArray *kvm_state; /* --workload kvm: the device section */
	SimKvm *kvm;           /* --workload kvm in postcopy: from RUN on */
} DstCtx;

/* --workload kvm: keep the vCPUs' state for after the load. */
static bool dst_load_device(void *o, const char *idstr, const guint8 *data,
			    size_t len, GError **error)
{
	DstCtx *d = o;

	if (strcmp(idstr, SIM_KVM_DEVICE_IDSTR) != 0 || d->kvm_state) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "unexpected device section '%s'", idstr);
		return false;
	}
	d->kvm_state = g_byte_array_sized_new((guint)len);
	g_byte_array_append(d->kvm_state, data, (guint)len);
	return true;
}

static gpointer dst_reader(gpointer p)
{
	DstCtx *d = ((void **)p)[0];
	GRand *r = g_rand_new_with_seed(
		(guint32)GPOINTER_TO_UINT(((void **)p)[1]) * 31u + 5u);
	volatile guint8 sink = 0;

	g_free(p);
	while (!g_atomic_int_get(&d->stop)) {
		guint bi = (guint)g_rand_int_range(r, 0, (gint32)d->hosts->len);
		uint64_t pages = g_array_index(d->lens, uint64_t, bi) / PAGE;
		uint64_t hot = MAX((uint64_t)((double)pages *
					      MAX(d->opt->hot_fraction, 0.001)),
				   1);
		uint64_t pfn =
			g_rand_double(r) < d->opt->hot_weight
				? (uint64_t)g_rand_double_range(r, 0,
								(double)hot)
				: (uint64_t)g_rand_double_range(r, 0,
								(double)pages);

		sink ^= ((const guint8 *)d->hosts->pdata[bi])[pfn * PAGE];
		__atomic_fetch_add(&d->touches, 1, __ATOMIC_RELAXED);
		g_usleep(20);
	}
	(void)sink;
	g_rand_free(r);
	return NULL;
}

static void dst_run(void *o)
{
	DstCtx *d = o;

	if (d->opt->role && !d->opt->quiet)
		fprintf(stderr, "migram-sim: destination: postcopy running: "
				"the guest runs here now\n");

	if (d->opt->workload == SIM_WORKLOAD_KVM) {
		g_autoptr(GError) e = NULL;

		/* The guest itself runs here now, faulting on what is
		 * missing. */
		d->kvm = sim_kvm_dest_start(d->list, d->kvm_state, &e);
		if (!d->kvm)
			g_printerr("migram-sim: destination: KVM guest: %s\n",
				   e->message);
		return;
	}
	if (d->opt->workload == SIM_WORKLOAD_IDLE || d->nreaders)
		return;
	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next_migratable(d->list, NULL);
	     b; b = migram_ram_list_next_migratable(d->list, b)) {
		uint64_t len = migram_ram_block_used_length(b);

		g_ptr_array_add(d->hosts, migram_ram_block_host(b));
		g_array_append_val(d->lens, len);
	}
	urcu_memb_read_unlock();
	if (!d->hosts->len)
		return;
	d->nreaders = MIN(d->opt->threads, MAX_READERS);
	for (unsigned int i = 0; i < d->nreaders; i++) {
		void **a = g_new(void *, 2);

		a[0] = d;
		a[1] = GUINT_TO_POINTER(i);
		d->readers[i] = g_thread_new("sim-dst-reader", dst_reader, a);
	}
}

static void dst_paused(void *o)
{
	DstCtx *d = o;
	int fd = sim_peer_await(d->opt->peer, d->opt, d->lk, "destination",
				d->cur);
	g_autoptr(GError) e = NULL;

	if (fd < 0) {
		migram_receiver_cancel(d->r);
		return;
	}
	d->cur = migram_channel_new(fd, true);
	g_ptr_array_add(d->channels, d->cur);
	if (!migram_receiver_recover(d->r, d->cur, &e))
		g_printerr("migram-sim: destination: %s\n", e->message);
}

/* The destination's postcopy figures, ahead of the hashes. */
static void send_postcopy_stats(DstCtx *d, MigramChannel *ch)
{
	MigramPostcopyStats ps;

	migram_receiver_get_postcopy_stats(d->r, &ps);
	migram_channel_put_counted_string(ch, "#postcopy");
	migram_channel_put_be64(ch, ps.faults);
	migram_channel_put_be64(ch, ps.latency_p50_us);
	migram_channel_put_be64(ch, ps.latency_p99_us);
	migram_channel_put_be64(ch, ps.latency_max_us);
	migram_channel_put_be64(ch, ps.blocked_us);
	migram_channel_put_be64(ch, d->touches);
	for (int i = 0; i < 32; i++)
		migram_channel_put_be64(ch, ps.latency_hist[i]);
}

/* SIGINT, SIGTERM (peer.c): stop the load; the report follows. */
static void cancel_load(void *r)
{
	migram_receiver_cancel(r);
}

/* The destination's own report (--role destination prints it). */
static void dest_report(DstCtx *d, SimReport *rep, gint64 t0,
			const GError *error)
{
	MigramReceiverStats rs;
	MigramPostcopyStats ps;

	if (!rep)
		return;
	migram_receiver_get_stats(d->r, &rs);
	migram_receiver_get_postcopy_stats(d->r, &ps);
	rep->destination = true;
	g_strlcpy(rep->status, error ? "failed" : "completed",
		  sizeof(rep->status));
	g_strlcpy(rep->mode_name,
		  ps.active ? mode_name(d->opt->mode) : "precopy",
		  sizeof(rep->mode_name));
	rep->total_time_ms = (uint64_t)(g_get_monotonic_time() - t0) / 1000;
	rep->transferred_bytes = rs.bytes;
	rep->normal_pages = rs.normal_pages;
	rep->duplicate_pages = rs.zero_pages;
	rep->placed_pages = ps.placed_pages;
	rep->faults = ps.faults;
	rep->fault_p50_us = ps.latency_p50_us;
	rep->fault_p99_us = ps.latency_p99_us;
	rep->fault_max_us = ps.latency_max_us;
	rep->blocked_ms = ps.blocked_us / 1000;
	rep->postcopy_requests = ps.requests;
	rep->postcopy_recoveries = ps.recoveries;
	rep->dest_touches = __atomic_load_n(&d->touches, __ATOMIC_RELAXED);
	g_free(rep->error);
	rep->error = error ? g_strdup(error->message) : NULL;
}

/*
 * The destination: load from lk's connection (and answer with the hashes
 * when reply).  rep, if not NULL, gets the destination's own figures.
 */
static int run_destination(const SimOptions *opt, MigramRamList *list,
			   SimLink *lk, bool reply, SimReport *rep)
{
	g_autoptr(GPtrArray) channels = g_ptr_array_new_with_free_func(
		(GDestroyNotify)migram_channel_free);
	DstCtx d = { .opt = opt, .lk = lk, .list = list, .channels = channels };
	MigramReceiverConfig rc = { .create_blocks = true,
				    .postcopy_run = dst_run,
				    .postcopy_paused = dst_paused,
				    .opaque = &d,
				    .multifd_channels = lk->ndata,
				    .multifd_fds = lk->ndata ? lk->data_fd
							     : NULL };

	if (opt->workload == SIM_WORKLOAD_KVM)
		rc.load_device = dst_load_device;
	MigramChannel *preempt = NULL;
	GError *error = NULL;
	uint64_t cpu0 = cpu_us();
	gint64 t0;
	bool ok;

	d.hosts = g_ptr_array_new();
	d.lens = g_array_new(FALSE, FALSE, sizeof(uint64_t));
	d.r = migram_receiver_new(list, &rc);
	d.cur = migram_channel_new(lk->fd, true);
	g_ptr_array_add(channels, d.cur);
	if (lk->preempt_fd >= 0) {
		preempt = migram_channel_new(lk->preempt_fd, true);
		lk->preempt_fd = -1;
		g_ptr_array_add(channels, preempt);
		migram_receiver_set_preempt(d.r, preempt);
	}
	t0 = g_get_monotonic_time();
	sim_peer_set_cancel(opt->peer, cancel_load, d.r);
	ok = migram_receiver_load(d.r, d.cur, &error);
	cpu0 = cpu_us() - cpu0;
	sim_peer_set_cancel(opt->peer, NULL, NULL);
	dest_report(&d, rep, t0, error);
	if (!ok) /* unregisters userfaultfd: blocked readers and vCPUs go on */
		g_clear_pointer(&d.r, migram_receiver_free);
	g_atomic_int_set(&d.stop, 1);
	for (unsigned int i = 0; i < d.nreaders; i++)
		g_thread_join(d.readers[i]);
	if (d.kvm) /* memory is complete: hash it with the guest still */
		sim_kvm_dest_pause(d.kvm);
	if (ok && opt->debug_corrupt_page >= 0)
		corrupt(list, opt->debug_corrupt_page);
	if (ok && reply) {
		/* the load's CPU time, from the connection to the end */
		migram_channel_put_counted_string(d.cur, "#cpu");
		migram_channel_put_be64(d.cur, cpu0);
		if (opt->mode != SIM_MODE_PRECOPY)
			send_postcopy_stats(&d, d.cur);
		ok = send_hashes(list, d.cur, &error);
	}
	if (ok && reply && d.kvm) {
		ok = sim_kvm_dest_verdict_postcopy(d.kvm, d.cur, &error);
		d.kvm = NULL;
	} else if (ok && reply && opt->workload == SIM_WORKLOAD_KVM) {
		ok = sim_kvm_dest_run(list, d.kvm_state, opt->verify_bytes,
				      d.cur, &error);
	}
	sim_kvm_free(d.kvm);
	if (d.kvm_state)
		g_byte_array_unref(d.kvm_state);
	if (!ok)
		g_printerr("migram-sim: destination: %s\n", error->message);
	if (!ok && rep) {
		g_strlcpy(rep->status, "failed", sizeof(rep->status));
		if (!rep->error)
			rep->error = g_strdup(error->message);
	}
	g_clear_error(&error);
	migram_receiver_free(d.r);
	sim_link_close(lk);
	g_ptr_array_unref(d.hosts);
	g_array_unref(d.lens);
	return ok ? SIM_EXIT_OK : SIM_EXIT_FAILED;
}

static int run_file(const SimOptions *opt, SimReport *rep, GError **error)
{
	MigramRamList *src = source_list(opt, error), *dst;
	int fd, rc;

	if (!src)
		return SIM_EXIT_FAILED;
	fd = open(opt->transport_arg, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
		  0644);
	if (fd < 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO, "%s: %s",
			    opt->transport_arg, g_strerror(errno));
		migram_ram_list_free(src);
		return SIM_EXIT_FAILED;
	}
	rc = run_source(
		opt, src,
		&(SimLink){ .fd = dup(fd), .preempt_fd = -1, .listen_fd = -1 },
		rep, error);
	if (rc == SIM_EXIT_OK) {
		/* Restore the saved stream into fresh blocks, then compare. */
		lseek(fd, 0, SEEK_SET);
		dst = migram_ram_list_new();
		rc = run_destination(opt, dst,
				     &(SimLink){ .fd = fd,
						 .preempt_fd = -1,
						 .listen_fd = -1 },
				     false, NULL);
		fd = -1;
		if (rc == SIM_EXIT_OK) {
			int sp[2];
			MigramChannel *w, *r;

			/* Reuse the hash exchange over a socketpair. */
			socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
			w = migram_channel_new(sp[0], true);
			r = migram_channel_new(sp[1], true);
			if (fork() == 0) {
				send_hashes(dst, w, NULL);
				_exit(0);
			}
			migram_channel_free(w);
			compare_hashes(src, r, &rep->verify_detail, NULL, NULL,
				       error);
			wait(NULL);
			migram_channel_free(r);
			rep->verified = rep->verify_detail &&
					strstr(rep->verify_detail, "equal");
			rc = rep->verified ? SIM_EXIT_OK : SIM_EXIT_FAILED;
		}
		migram_ram_list_free(dst);
	}
	if (fd >= 0)
		close(fd);
	migram_ram_list_free(src);
	return rc;
}

/* Byte-for-byte: the child's blocks live in memory shared with us. */
static MigramRamList *shared_destination(const SimOptions *opt, GPtrArray *maps)
{
	MigramRamList *list = migram_ram_list_new();

	for (guint i = 0; i < opt->blocks->len; i++) {
		SimBlockSpec *s = &g_array_index(opt->blocks, SimBlockSpec, i);
		void *p = mmap(NULL, s->bytes, PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

		g_ptr_array_add(maps, p);
		migram_ram_list_add(list,
				    &(MigramRamBlockConfig){
					    .idstr = s->name,
					    .backend =
						    MIGRAM_RAM_BACKEND_CALLER,
					    .host = p,
					    .used_length = s->bytes },
				    NULL);
	}
	return list;
}

static void compare_bytes(const SimOptions *opt, MigramRamList *src,
			  GPtrArray *maps, SimReport *rep)
{
	for (guint i = 0; i < opt->blocks->len && rep->verified; i++) {
		SimBlockSpec *s = &g_array_index(opt->blocks, SimBlockSpec, i);
		MigramRamBlock *b;
		const guint8 *a, *d = maps->pdata[i];

		urcu_memb_read_lock();
		b = migram_ram_list_find(src, s->name);
		a = migram_ram_block_host(b);
		for (uint64_t off = 0; off < s->bytes; off += PAGE) {
			if (memcmp(a + off, d + off, PAGE) != 0) {
				g_free(rep->verify_detail);
				rep->verify_detail = g_strdup_printf(
					"block '%s' page %" G_GUINT64_FORMAT
					" differs byte for byte",
					s->name, off / PAGE);
				rep->verified = false;
				break;
			}
		}
		urcu_memb_read_unlock();
	}
	if (rep->verified) {
		char *d = g_strconcat(rep->verify_detail, "; byte for byte too",
				      NULL);

		g_free(rep->verify_detail);
		rep->verify_detail = d;
	}
}

static int run_pair(const SimOptions *opt, SimReport *rep, GError **error)
{
	g_autoptr(GPtrArray) maps = g_ptr_array_new();
	MigramRamList *src = source_list(opt, error), *dst = NULL;
	SimLink sl, dl;
	int lfd = -1, status, rc;
	pid_t pid;

	if (!src)
		return SIM_EXIT_FAILED;
	if (opt->verify_bytes)
		dst = shared_destination(opt, maps);
	if (opt->transport == SIM_TRANSPORT_TCP) {
		lfd = sim_link_tcp_listen(opt, error);
		if (lfd < 0)
			return SIM_EXIT_FAILED;
	} else if (!sim_link_pairs(opt, &sl, &dl)) {
		return SIM_EXIT_FAILED;
	}
	pid = fork();
	if (pid == 0) {
		/* The destination process.  No signal thread here: signals
		 * act as by default. */
		SimOptions child = *opt;

		child.peer = NULL;
		sim_peer_child();
		if (lfd >= 0) {
			if (!sim_link_tcp_accept(opt, lfd, &dl))
				_exit(SIM_EXIT_FAILED);
		} else {
			sim_link_close_all(&sl);
		}
		_exit(run_destination(&child, dst ? dst : migram_ram_list_new(),
				      &dl, true, NULL));
	}
	if (lfd >= 0) {
		close(lfd);
		if (!sim_link_tcp_connect(opt, &sl, error)) {
			kill(pid, SIGTERM);
			waitpid(pid, NULL, 0);
			return SIM_EXIT_FAILED;
		}
	} else {
		sim_link_close_all(&dl);
	}
	rc = run_source(opt, src, &sl, rep, error);
	waitpid(pid, &status, 0);
	if (rc == SIM_EXIT_OK && !(WIFEXITED(status) && !WEXITSTATUS(status)))
		rc = SIM_EXIT_FAILED;
	if (rc == SIM_EXIT_OK && dst)
		compare_bytes(opt, src, maps, rep);
	if (rc == SIM_EXIT_OK && !rep->verified)
		rc = SIM_EXIT_FAILED;
	migram_ram_list_free(src);
	if (dst) {
		migram_ram_list_free(dst);
		for (guint i = 0; i < maps->len; i++)
			munmap(maps->pdata[i],
			       g_array_index(opt->blocks, SimBlockSpec, i)
				       .bytes);
	}
	return rc;
}

int sim_real_run(const SimOptions *opt, SimReport *rep)
{
	GError *error = NULL;
	int rc;

	signal(SIGPIPE, SIG_IGN);
	if (opt->role && strcmp(opt->role, "destination") == 0) {
		int lfd = sim_link_tcp_listen(opt, &error);
		MigramRamList *dst = migram_ram_list_new();
		SimLink dl;

		rc = lfd < 0 || !sim_link_tcp_accept(opt, lfd, &dl)
			     ? SIM_EXIT_FAILED
			     : run_destination(opt, dst, &dl, true, rep);
		migram_ram_list_free(dst);
		if (lfd >= 0)
			close(lfd);
		rep->destination = true;
		if (rc)
			g_strlcpy(rep->status, "failed", sizeof(rep->status));
	} else if (opt->role && strcmp(opt->role, "source") == 0) {
		MigramRamList *src = source_list(opt, &error);
		SimLink sl;

		rc = !src || !sim_link_tcp_connect(opt, &sl, &error)
			     ? SIM_EXIT_FAILED
			     : run_source(opt, src, &sl, rep, &error);
		migram_ram_list_free(src);
	} else if (opt->transport == SIM_TRANSPORT_FILE) {
		rc = run_file(opt, rep, &error);
	} else {
		rc = run_pair(opt, rep, &error);
	}
	if (error) {
		g_free(rep->error);
		rep->error = g_strdup(error->message);
		g_error_free(error);
	}
	return rc;
}
