/* SPDX-License-Identifier: MIT */
/*
 * Real mode: the destination side (receiver, device state, postcopy
 * stats, its report).
 */
#include "real-internal.h"

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
	int fd = sim_peer_await(d->opt->peer, d->opt, d->lk, 0, "destination",
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
		  ps.active ? real_mode_name(d->opt->mode) : "precopy",
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
int real_run_destination(const SimOptions *opt, MigramRamList *list,
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
							     : NULL,
				    .io_timeout_ms = opt->io_timeout_ms };

	if (opt->workload == SIM_WORKLOAD_KVM)
		rc.load_device = dst_load_device;
	MigramChannel *preempt = NULL;
	GError *error = NULL;
	uint64_t cpu0 = real_cpu_us();
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
	cpu0 = real_cpu_us() - cpu0;
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
		ok = real_send_hashes(list, d.cur, &error);
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
