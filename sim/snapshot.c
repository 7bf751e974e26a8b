/* SPDX-License-Identifier: MIT */
/*
 * migram-sim's snapshot mode (--snapshot FILE) and restore mode
 * (--restore FILE[,DIFF...] [--lazy]); docs/snapshots.md.
 *
 * Snapshot: the workload's writers run for --snapshot-after, then each
 * epoch pauses them, collects the software dirty log, copies the dirty
 * pages (epoch 0: every non-zero page) into staging memory, records a
 * hash of every page (verification only, timed on its own), resumes the
 * writers and writes the staging out while they run.  Epoch 0 goes to
 * FILE, epoch e > 0 to FILE.e, a diff of the one before.
 *
 * Restore: a fresh list with the same blocks (the same --ram / --block),
 * the chain restored eagerly (or lazily through userfaultfd), and every
 * page compared with the hashes the last file recorded at its pause.
 */
#include <stdio.h>
#include <string.h>

#include <migram/dirty-log.h>
#include <migram/migram.h>
#include <migram/snapshot.h>
#include <migram/staging.h>

#include "kvm-guest.h"
#include "kvm-sim.h"
#include "sim-snapshot.h"
#include "workload.h"

#define PAGE 4096u

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

MigramRamList *sim_snapshot_make_list(const SimOptions *opt, bool fill,
				      GPtrArray *blocks, GError **error)
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
			/* Lazy restore registers blocks with userfaultfd
			 * at 4 KiB pages; a snapshot's file records it. */
			.flags = MIGRAM_RAM_NO_THP,
		};
		MigramRamBlock *b = migram_ram_list_add(list, &c, error);
		if (!b) {
			migram_ram_list_free(list);
			return NULL;
		}
		if (fill)
			sim_fill_block(b, opt->fill);
		g_ptr_array_add(blocks, b);
	}
	return list;
}

static char *epoch_path(const char *base, unsigned e)
{
	return e ? g_strdup_printf("%s.%u", base, e) : g_strdup(base);
}

void sim_snap_guest_pause(SimSnapGuest *g)
{
	if (g->kvm)
		sim_kvm_pause(sim_kvm_source_guest(g->kvm));
	else
		sim_guest_pause(g->writers);
}

void sim_snap_guest_resume(SimSnapGuest *g)
{
	if (g->kvm)
		sim_kvm_resume(sim_kvm_source_guest(g->kvm));
	else
		sim_guest_resume(g->writers);
}

uint64_t sim_snap_guest_writes(SimSnapGuest *g)
{
	return g->kvm ? sim_kvm_progress(sim_kvm_source_guest(g->kvm))
		      : sim_guest_writes(g->writers);
}

bool sim_snap_guest_free_kvm(SimSnapGuest *g, bool ok, GError **error)
{
	if (!g->kvm)
		return ok;
	g_autofree char *verr =
		sim_kvm_take_error(sim_kvm_source_guest(g->kvm));
	if (verr && ok) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO, "%s", verr);
		ok = false;
	}
	sim_kvm_source_free(g->kvm);
	g->kvm = NULL;
	return ok;
}

typedef struct {
	MigramStaging *st;
	uint64_t *hashes;
	unsigned long *dirty;
	uint64_t npages;
} SnapBlockState;

/* One epoch: pause, collect, stage, resume, write.  Prints its figures. */
static bool snapshot_epoch(const SimOptions *opt, unsigned e,
			   MigramRamList *list, GPtrArray *blocks,
			   SnapBlockState *bs, MigramLogSource *src,
			   SimSnapGuest *guest, uint64_t *parent_id,
			   GError **error)
{
	MigramStageStats ss = { 0 };
	bool cow_mode = opt->snapshot_mode &&
			strcmp(opt->snapshot_mode, "cow") == 0;
	/* The staging's memory is allocated before the pause, not in it. */
	for (guint i = 0; i < blocks->len && !cow_mode; i++)
		if (!migram_staging_populate(bs[i].st, 0, bs[i].npages, error))
			return false;
	uint64_t t0 = g_get_monotonic_time() * 1000;
	uint64_t w0 = sim_snap_guest_writes(guest);
	sim_snap_guest_pause(guest);
	uint64_t t1 = g_get_monotonic_time() * 1000;
	for (guint i = 0; i < blocks->len; i++) {
		uint64_t newly = 0;
		memset(bs[i].dirty, 0, (bs[i].npages + 63) / 64 * 8);
		if (!src->ops->sync(src->opaque, blocks->pdata[i], bs[i].dirty,
				    &newly, error) ||
		    !src->ops->clear(src->opaque, blocks->pdata[i], 0,
				     bs[i].npages, bs[i].dirty, error))
			return false;
	}
	uint64_t t2 = g_get_monotonic_time() * 1000;
	MigramCowSnapshot *cow = NULL;
	if (cow_mode) {
		/* Hashes first (verification only), then protect. */
		for (guint i = 0; i < blocks->len; i++) {
			const uint8_t *host =
				migram_ram_block_host(blocks->pdata[i]);
			uint64_t np =
				migram_ram_block_used_length(blocks->pdata[i]) /
				PAGE;
			for (uint64_t p = 0; p < np; p++)
				bs[i].hashes[p] = migram_snapshot_page_hash(
					host + p * PAGE);
		}
		ss.hash_ns = g_get_monotonic_time() * 1000 - t2;
		cow = migram_snapshot_cow_start(list, error);
		if (!cow) {
			sim_snap_guest_resume(guest);
			return false;
		}
	} else {
		for (guint i = 0; i < blocks->len; i++)
			if (!migram_snapshot_stage_block(bs[i].st,
							 blocks->pdata[i],
							 e ? bs[i].dirty : NULL,
							 bs[i].hashes, &ss,
							 error))
				return false;
	}
	/* The vCPUs' registers at the pause: the file's device state. */
	g_autoptr(GByteArray) dev = g_byte_array_new();
	uint64_t t_dev = g_get_monotonic_time() * 1000;
	if (guest->kvm && !sim_kvm_source_save(guest->kvm, dev, error)) {
		sim_snap_guest_resume(guest);
		migram_snapshot_cow_finish(cow, NULL);
		return false;
	}
	uint64_t t3 = g_get_monotonic_time() * 1000;
	sim_snap_guest_resume(guest);
	uint64_t pause = t3 - t0;
	if (cow)
		ss.copy_ns = t_dev - t2 - ss.hash_ns; /* protecting */

	/* Write the staging out while the guest runs. */
	g_autofree char *path = epoch_path(opt->snapshot_path, e);
	MigramSnapshotParams p = { .diff = e > 0,
				   .parent_id = *parent_id,
				   .epoch = e };
	g_autoptr(MigramSnapshotWriter) w = migram_snapshot_writer_new(path, &p,
								       error);
	if (!w) {
		migram_snapshot_cow_finish(cow, NULL);
		return false;
	}
	for (guint i = 0; i < blocks->len; i++) {
		MigramRamBlock *b = blocks->pdata[i];
		if (!migram_snapshot_writer_add_block(
			    w, migram_ram_block_idstr(b),
			    migram_ram_block_used_length(b),
			    migram_ram_block_page_size(b), NULL, error))
			return false;
	}
	uint64_t written = 0;
	MigramCowStats cs = { 0 };
	if (cow) {
		const unsigned long **dm = g_new(const unsigned long *,
						 blocks->len);
		for (guint i = 0; i < blocks->len; i++)
			dm[i] = bs[i].dirty;
		bool ok = migram_snapshot_writer_start(w, error) &&
			  migram_snapshot_cow_write(cow, w, e ? dm : NULL,
						    error);
		g_free(dm);
		migram_snapshot_cow_finish(cow, &cs);
		if (!ok)
			return false;
		written = cs.pages_written;
		ss.pages_copied = cs.pages_written;
		ss.zero_skipped = cs.zero_skipped;
	} else if (!migram_snapshot_writer_start(w, error)) {
		return false;
	}
	MigramSnapshotWriteStats ws = { 0 };
	if (!cow) {
		g_autofree MigramStaging **sts = g_new(MigramStaging *,
						       blocks->len);
		for (guint i = 0; i < blocks->len; i++)
			sts[i] = bs[i].st;
		MigramSnapshotWriteOptions wo = {
			.threads = opt->snapshot_writers,
			.bridge_pages = opt->snapshot_bridge_pages,
			.release = true,
		};
		if (!migram_snapshot_writer_put_staging_all(w, sts, blocks->len,
							    &wo, &ws, error))
			return false;
		written = ws.pages_written;
	}
	for (guint i = 0; i < blocks->len; i++)
		if (!migram_snapshot_writer_set_hashes(w, i, bs[i].hashes,
						       error) ||
		    !migram_snapshot_writer_set_hot(w, i, bs[i].dirty, error))
			return false;
	if (dev->len && !migram_snapshot_writer_set_device_state(
				w, dev->data, dev->len, error))
		return false;
	if (!migram_snapshot_writer_finish(w, parent_id, error))
		return false;
	uint64_t t4 = g_get_monotonic_time() * 1000;
	uint64_t w1 = sim_snap_guest_writes(guest);
	double wsec = (double)(t4 - t3) / 1e9;
	if (!opt->quiet) {
		printf("epoch %u -> %s (%s)\n", e, path, e ? "diff" : "full");
		printf("  pause:           %.3f ms (stop %.3f, dirty log %.3f, "
		       "%s %.3f, hash %.3f [verification only])\n",
		       ms(pause), ms(t1 - t0), ms(t2 - t1),
		       cow ? "protect" : "copy", ms(ss.copy_ns),
		       ms(ss.hash_ns));
		if (cow)
			printf("  copy-before-write: %" G_GUINT64_FORMAT
			       " guest writes copied a page first, "
			       "%" G_GUINT64_FORMAT
			       " pages written from copies\n",
			       cs.wp_faults, cs.from_staging);
		if (dev->len)
			printf("  device state:    %u bytes (vCPU registers), "
			       "saved in %.3f ms of the pause\n",
			       dev->len, ms(t3 - t_dev));
		printf("  pause w/o hash:  %.3f ms\n", ms(pause - ss.hash_ns));
		printf("  pages staged:    %" G_GUINT64_FORMAT
		       " (%" G_GUINT64_FORMAT " zero pages left out)\n",
		       ss.pages_copied, ss.zero_skipped);
		printf("  written:         %" G_GUINT64_FORMAT
		       " pages in %.1f ms (%.1f MiB/s), fsync included\n",
		       written, wsec * 1e3,
		       wsec > 0 ? (double)written * PAGE / wsec / 1048576 : 0);
		if (!cow)
			printf("  write-out:       %u thread(s), %" G_GUINT64_FORMAT
			       " writes, %" G_GUINT64_FORMAT
			       " zero pages bridged, %.1f ms before fsync\n",
			       ws.threads, ws.writes, ws.pages_bridged,
			       ms(ws.elapsed_ns));
		printf("  guest writes:    %" G_GUINT64_FORMAT
		       " from the pause to the end of the write-out\n",
		       w1 - w0);
	}
	return true;
}

static int run_snapshot(const SimOptions *opt, GError **error)
{
	bool kvm = opt->workload == SIM_WORKLOAD_KVM;
	g_autoptr(GPtrArray) blocks = g_ptr_array_new();
	/* A KVM guest starts from zero memory and loads its own program. */
	MigramRamList *list = sim_snapshot_make_list(opt, !kvm, blocks, error);
	if (!list)
		return SIM_EXIT_FAILED;
	uint64_t end = 0;
	SnapBlockState *bs = g_new0(SnapBlockState, blocks->len);
	bool ok = true;
	for (guint i = 0; i < blocks->len && ok; i++) {
		MigramRamBlock *b = blocks->pdata[i];
		end = MAX(end, migram_ram_block_offset(b) +
				       migram_ram_block_max_length(b));
		bs[i].npages = migram_ram_block_max_length(b) / PAGE;
		bs[i].st = migram_staging_new_for_block(b, error);
		bs[i].hashes = g_new0(uint64_t, bs[i].npages);
		bs[i].dirty = g_new0(unsigned long, (bs[i].npages + 63) / 64);
		ok = bs[i].st != NULL;
	}
	MigramSoftLog *log = NULL;
	MigramLogSource src = { 0 };
	SimSnapGuest guest = { 0 };
	SimReport rep;
	sim_report_init(&rep);
	if (ok && kvm) {
		/* The VM's own dirty log (--dirty-log), and its first pass
		 * done before the first snapshot. */
		guest.kvm = sim_kvm_source_start(opt, list, &src, &rep, error);
		ok = guest.kvm != NULL;
	} else if (ok) {
		log = migram_soft_log_new(end, error);
		ok = log != NULL;
		if (ok)
			migram_soft_log_source(log, &src);
	}
	bool started = ok;
	for (guint i = 0; i < blocks->len && ok; i++)
		ok = src.ops->start(src.opaque, blocks->pdata[i], error);
	if (ok && !kvm) {
		guest.writers =
			sim_guest_start(opt, (MigramRamBlock **)blocks->pdata,
					blocks->len,
					migram_soft_log_bitmap(log));
		ok = guest.writers != NULL;
	}
	if (ok && kvm && !opt->quiet)
		printf("KVM guest:         dirty log %s, %" G_GUINT64_FORMAT
		       " pages per pass\n",
		       rep.dirty_log, rep.guest_ws_pages);
	uint64_t parent = 0;
	if (ok) {
		g_usleep(opt->snapshot_after_ms * 1000);
		for (unsigned e = 0; e <= opt->snapshot_epochs && ok; e++) {
			ok = snapshot_epoch(opt, e, list, blocks, bs, &src,
					    &guest, &parent, error);
			if (ok && e < opt->snapshot_epochs)
				g_usleep(opt->snapshot_after_ms * 1000);
		}
		uint64_t writes = guest.kvm ? sim_snap_guest_writes(&guest)
					    : sim_guest_stop(guest.writers);
		if (!opt->quiet)
			printf("guest writes:      %" G_GUINT64_FORMAT
			       " in all\n",
			       writes);
	}
	for (guint i = 0; started && i < blocks->len; i++)
		src.ops->stop(src.opaque, blocks->pdata[i]);
	ok = sim_snap_guest_free_kvm(&guest, ok, error);
	sim_report_clear(&rep);
	for (guint i = 0; i < blocks->len; i++) {
		migram_staging_free(bs[i].st);
		g_free(bs[i].hashes);
		g_free(bs[i].dirty);
	}
	g_free(bs);
	migram_soft_log_free(log);
	migram_ram_list_free(list);
	return ok ? SIM_EXIT_OK : SIM_EXIT_FAILED;
}

bool sim_snapshot_lazy(const SimOptions *opt, MigramSnapshotFile **chain,
		       guint n, MigramRamList *list, GPtrArray *blocks,
		       GBytes *kvm_state, SimKvm **kvm_out, uint64_t *first_us,
		       uint64_t *faults, MigramRestoreStats *rs, GError **error)
{
	SimKvm *kvm = NULL;
	uint64_t t0 = g_get_monotonic_time();
	MigramLazyRestore *lr = migram_snapshot_lazy_start(chain, n, list,
							   error);
	if (!lr)
		return false;
	if (kvm_state) {
		/* Built only now: the VM must not touch memory before the
		 * blocks are registered for missing faults.  It runs at once
		 * and its vCPUs fault pages in.  Its first progress: its
		 * first page write after the restore. */
		gsize len;
		const guint8 *st = g_bytes_get_data(kvm_state, &len);
		kvm = sim_kvm_restore_new(list, st, len, error);
		if (!kvm) {
			migram_snapshot_lazy_finish(lr, NULL, NULL);
			return false;
		}
		*kvm_out = kvm;
		uint64_t p0 = sim_kvm_progress(kvm);
		sim_kvm_resume(kvm);
		while (sim_kvm_progress(kvm) == p0 &&
		       g_get_monotonic_time() - (gint64)t0 <
			       10 * G_USEC_PER_SEC)
			g_usleep(20);
		*first_us = (uint64_t)g_get_monotonic_time() - t0;
	} else {
		/* The guest's first instruction: a read of its first page. */
		volatile const uint8_t *h0 =
			migram_ram_block_host(blocks->pdata[0]);
		(void)h0[0];
		*first_us = (uint64_t)g_get_monotonic_time() - t0;
	}
	/* Then it touches every page, in a scattered order (a KVM guest
	 * runs meanwhile). */
	for (guint i = 0; i < blocks->len; i++) {
		MigramRamBlock *b = blocks->pdata[i];
		volatile const uint8_t *h = migram_ram_block_host(b);
		uint64_t np = migram_ram_block_used_length(b) / PAGE;
		for (uint64_t k = 0; k < np; k++)
			(void)h[((k * 7919) % np) * PAGE];
	}
	MigramLazyStats ls;
	bool done = migram_snapshot_lazy_finish(lr, &ls, error);
	if (kvm)
		sim_kvm_pause(kvm);
	if (!done)
		return false;
	*faults = ls.faults;
	if (!opt->quiet)
		printf("lazy prefetch:     %" G_GUINT64_FORMAT
		       " pages, the %" G_GUINT64_FORMAT
		       " hot ones (written last before the snapshot) first\n",
		       ls.prefetched, ls.prefetched_hot);
	*rs = (MigramRestoreStats){
		.pages_read = ls.faults + ls.prefetched,
		.pages_zeroed = ls.zero_faults,
		.bytes_read = (ls.faults + ls.prefetched) * PAGE,
		.elapsed_ns = ls.elapsed_ns,
		.threads = 2,
	};
	return true;
}

/* Compare every page with the last file's hashes, except those in @skip
 * (pages a restored KVM guest wrote since, in its only block); without
 * @skip it is migram_snapshot_verify(). */
static bool verify_skipping(MigramSnapshotFile *f, MigramRamList *list,
			    GPtrArray *blocks, const unsigned long *skip,
			    uint64_t *bad, uint64_t *skipped, GError **error)
{
	*bad = *skipped = 0;
	if (!skip)
		return migram_snapshot_verify(f, list, bad, error);
	for (guint i = 0; i < blocks->len; i++) {
		MigramRamBlock *b = blocks->pdata[i];
		guint fi;
		if (!migram_snapshot_find_block(f, migram_ram_block_idstr(b),
						&fi)) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
				    "block '%s' is not in the snapshot",
				    migram_ram_block_idstr(b));
			return false;
		}
		g_autofree uint64_t *h = migram_snapshot_read_hashes(f, fi,
								     error);
		if (!h)
			return false;
		const uint8_t *host = migram_ram_block_host(b);
		uint64_t np = migram_ram_block_used_length(b) / PAGE;
		for (uint64_t p = 0; p < np; p++) {
			if (skip && i == 0 && (skip[p / 64] >> (p % 64)) & 1) {
				(*skipped)++;
				continue;
			}
			if (migram_snapshot_page_hash(host + p * PAGE) != h[p])
				(*bad)++;
		}
	}
	return true;
}

static int run_restore(const SimOptions *opt, GError **error)
{
	g_auto(GStrv) paths = g_strsplit(opt->restore_path, ",", -1);
	guint n = g_strv_length(paths);
	g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(
		(GDestroyNotify)migram_snapshot_close);
	bool kvm = opt->workload == SIM_WORKLOAD_KVM;
	for (guint i = 0; i < n; i++) {
		MigramSnapshotFile *f = migram_snapshot_open(paths[i], error);
		if (!f)
			return SIM_EXIT_FAILED;
		g_ptr_array_add(files, f);
	}
	MigramSnapshotFile **chain = (MigramSnapshotFile **)files->pdata;
	/* --workload kvm: the last file's vCPU registers resume the guest. */
	g_autoptr(GBytes) state = NULL;
	if (kvm) {
		state = migram_snapshot_read_device_state(chain[n - 1], error);
		if (!state)
			return SIM_EXIT_FAILED;
	}
	g_autoptr(GPtrArray) blocks = g_ptr_array_new();
	uint64_t t0 = g_get_monotonic_time();
	MigramRamList *list = sim_snapshot_make_list(opt, false, blocks, error);
	if (!list)
		return SIM_EXIT_FAILED;
	uint64_t first_us = 0, faults = 0;
	bool ok;
	MigramRestoreStats rs = { 0 };
	SimKvm *vm = NULL;
	if (opt->lazy) {
		ok = sim_snapshot_lazy(opt, chain, n, list, blocks, state, &vm,
				       &first_us, &faults, &rs, error);
	} else {
		ok = migram_snapshot_restore(chain, n, list, 0, &rs, error);
		first_us = (uint64_t)(g_get_monotonic_time()) - t0;
	}
	/* A lazily restored guest has run: the pages it writes are its
	 * own by now (its invariant vouches for them), the rest must
	 * match the hashes of the pause. */
	g_autofree unsigned long *skip = NULL;
	if (ok && vm) {
		uint64_t np = migram_ram_block_used_length(blocks->pdata[0]) /
			      PAGE;
		skip = g_new0(unsigned long, (np + 63) / 64);
		sim_kvm_written_pages(vm, skip, np);
	}
	uint64_t bad = 0, skipped = 0;
	if (ok)
		ok = verify_skipping(chain[n - 1], list, blocks, skip, &bad,
				     &skipped, error);
	if (ok && !opt->quiet) {
		double sec = (double)rs.elapsed_ns / 1e9;
		printf("restore:           %s, %u file(s)\n",
		       opt->lazy ? "lazy (userfaultfd)" : "eager", n);
		printf("  first guest access: %.3f ms after start%s\n",
		       (double)first_us / 1e3,
		       vm ? " (the KVM guest's first page write)" : "");
		if (opt->lazy)
			printf("  faults served:   %" G_GUINT64_FORMAT "\n",
			       faults);
		printf("  pages read:      %" G_GUINT64_FORMAT
		       ", zeroed %" G_GUINT64_FORMAT
		       ", %u thread(s), %.1f ms (%.1f MiB/s)\n",
		       rs.pages_read, rs.pages_zeroed, rs.threads, sec * 1e3,
		       sec > 0 ? (double)rs.bytes_read / sec / 1048576 : 0);
		printf("  verify:          %" G_GUINT64_FORMAT
		       " page(s) differ from the hashes recorded at the "
		       "pause",
		       bad);
		if (skipped)
			printf(" (%" G_GUINT64_FORMAT
			       " pages the running guest writes not compared)",
			       skipped);
		printf("\n");
	}
	if (ok && bad) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "%" G_GUINT64_FORMAT
			    " restored pages differ from the snapshot",
			    bad);
		ok = false;
	}
	if (ok && kvm) {
		/* Eager: build the VM now, over the complete memory. */
		gsize len;
		const guint8 *st = g_bytes_get_data(state, &len);
		if (!vm)
			vm = sim_kvm_restore_new(list, st, len, error);
		g_autofree char *v =
			vm ? sim_kvm_verdict(vm, opt->lazy ? "after the restore"
							   : "restored")
			   : NULL;
		vm = NULL; /* freed by the verdict */
		if (v && !opt->quiet)
			printf("  KVM guest:       %s\n", v + 1);
		if (v && v[0] != '1')
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
				    "the restored KVM guest failed: %s", v + 1);
		ok = v && v[0] == '1';
	}
	if (vm)
		sim_kvm_free(vm);
	migram_ram_list_free(list);
	return ok ? SIM_EXIT_OK : SIM_EXIT_FAILED;
}

int sim_snapshot_run(const SimOptions *opt)
{
	g_autoptr(GError) error = NULL;
	int rc = opt->restore_path ? run_restore(opt, &error)
				   : run_snapshot(opt, &error);
	if (rc != SIM_EXIT_OK)
		fprintf(stderr, "migram-sim: %s\n",
			error ? error->message : "snapshot failed");
	return rc;
}
