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
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/dirty-log.h>
#include <migram/migram.h>
#include <migram/migration.h>
#include <migram/receiver.h>

#include "kvm-sim.h"
#include "workload.h"

#define PAGE 4096u

/* ---- pages and hashes ------------------------------------------------ */

static guint64 page_hash(const guint8 *p)
{
	const guint64 *w = (const guint64 *)p;
	guint64 h = 0x84222325cbf29ce4ULL;

	for (unsigned int i = 0; i < PAGE / 8; i++)
		h = (h ^ w[i]) * 0x100000001b3ULL;
	return h;
}

/*
 * A guest's memory holds data: three pages in four get a pattern, the
 * fourth stays zero (ZERO records).
 */
static void prefill(MigramRamBlock *b)
{
	guint8 *h = migram_ram_block_host(b);
	uint64_t n = migram_ram_block_used_length(b) / PAGE;

	for (uint64_t p = 0; p < n; p++)
		if (p % 4 != 3)
			memset(h + p * PAGE, (int)(p % 251) + 1, PAGE);
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

		MigramRamBlock *b = migram_ram_list_add(list, &c, error);

		if (!b) {
			migram_ram_list_free(list);
			return NULL;
		}
		prefill(b);
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
			   char **detail, GError **error)
{
	char name[256];
	uint64_t blocks = 0, pages = 0;

	for (;;) {
		MigramRamBlock *b;
		uint64_t n, want;

		if (!migram_channel_get_counted_string(ch, name, error))
			return false;
		if (!name[0])
			break;
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
		*detail = g_strdup_printf("%" G_GUINT64_FORMAT
					  " blocks, %" G_GUINT64_FORMAT
					  " pages equal (per-page hashes)",
					  blocks, pages);
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
} Monitor;

static gpointer monitor_main(gpointer p)
{
	Monitor *mon = p;
	uint64_t last_bytes = 0;
	gint64 last_t = mon->t0;

	while (!g_atomic_int_get(&mon->done)) {
		MigramMigrationStats st;
		SimSample s;
		gint64 now;

		g_usleep(100 * 1000);
		migram_migration_get_stats(mon->m, &st);
		now = g_get_monotonic_time();
		s = (SimSample){
			.t = (double)(now - mon->t0) / 1e6,
			.remaining_pages = st.remaining_bytes / PAGE,
			.dirty_rate = st.dirty_bytes_rate,
			.bandwidth =
				(double)(st.transferred_bytes - last_bytes) *
				1e6 / (double)MAX(now - last_t, 1),
			.pages_sent = st.normal_pages + st.duplicate_pages,
			.paused = st.status == MIGRAM_MIGRATION_DEVICE,
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
	rep->setup_time_ms = st->setup_time_ms;
	rep->total_time_ms = st->total_time_ms;
	rep->mbps = st->mbps;
	rep->throttle_percent = st->throttle_percent;
}

/*
 * The source: run the migration on fd with a live workload; the guest is
 * left paused (so memory is final) and its writers stopped.
 */
static int run_source(const SimOptions *opt, MigramRamList *list, int fd,
		      SimReport *rep, GError **error)
{
	g_autoptr(GPtrArray) blocks = g_ptr_array_new();
	MigramSoftLog *log = NULL;
	MigramLogSource src;
	MigramMigrationConfig cfg = { 0 };
	MigramMigrationStats st;
	MigramChannel *ch;
	SimGuest *guest = NULL;
	SimKvmSource *kvm = NULL;
	Monitor mon = { .opt = opt, .rep = rep };
	GThread *mt;
	uint64_t end = 0;
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
		kvm = sim_kvm_source_start(opt, list, &src, rep, error);
		if (!kvm)
			return SIM_EXIT_FAILED;
	} else {
		log = migram_soft_log_new(end, error);
		if (!log)
			return SIM_EXIT_FAILED;
		migram_soft_log_source(log, &src);
		guest = sim_guest_start(opt, (MigramRamBlock **)blocks->pdata,
					blocks->len,
					migram_soft_log_bitmap(log));
	}
	cfg = (MigramMigrationConfig){
		.downtime_limit_ms = opt->downtime_limit_ms,
		.max_bandwidth = opt->max_bandwidth,
		.clear_bmap_shift = opt->clear_bitmap_shift,
		.clear_bmap_shift_set = opt->clear_bitmap_shift_set,
		.clear_at_sync = opt->clear_at_sync,
		.auto_converge = opt->auto_converge,
		.max_time_ms = opt->max_time_ms,
		.pause_guest = sim_guest_pause,
		.resume_guest = sim_guest_resume,
		.throttle_guest = sim_guest_throttle,
		.opaque = guest,
	};
	if (kvm) {
		cfg.pause_guest = sim_kvm_pause;
		cfg.resume_guest = sim_kvm_resume;
		cfg.throttle_guest = sim_kvm_throttle;
		cfg.opaque = sim_kvm_source_guest(kvm);
	}
	mon.m = migram_migration_new(list, &src, &cfg);
	mon.t0 = g_get_monotonic_time();
	mt = g_thread_new("sim-monitor", monitor_main, &mon);
	ch = migram_channel_new(fd, true);
	ok = migram_migration_run(mon.m, ch, error);
	g_atomic_int_set(&mon.done, 1);
	g_thread_join(mt);
	/* Freeze the guest before stopping writers: memory stays final. */
	if (ok && guest)
		sim_guest_pause(guest);
	if (guest)
		rep->workload_writes = sim_guest_stop(guest);
	migram_migration_get_stats(mon.m, &st);
	fill_report(rep, &st);
	if (kvm)
		ok = sim_kvm_source_finish(kvm, ok, ch, rep, error);
	/* A short pause falls between two samples: take it from the stats. */
	if (ok)
		rep->pause_at = (double)(st.total_time_ms - st.downtime_ms) /
				1000.0;
	migram_migration_free(mon.m);
	if (ok && opt->transport != SIM_TRANSPORT_FILE) {
		ok = compare_hashes(list, ch, &rep->verify_detail, error);
		rep->verified = ok && strstr(rep->verify_detail, "equal");
	}
	if (ok && kvm) {
		ok = sim_kvm_source_verdict(kvm, ch, rep, error);
		rep->verified = rep->verified && rep->guest_verified;
	}
	migram_channel_free(ch);
	migram_soft_log_free(log);
	sim_kvm_source_free(kvm);
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

static int run_destination(const SimOptions *opt, MigramRamList *list, int fd,
			   bool reply)
{
	MigramReceiverConfig rc = { .create_blocks = true };
	MigramReceiver *r = migram_receiver_new(list, &rc);
	MigramChannel *ch = migram_channel_new(fd, true);
	GError *error = NULL;
	g_autoptr(GByteArray) kvm_state = NULL;
	bool ok = migram_receiver_load(r, ch, &error);

	if (ok && opt->workload == SIM_WORKLOAD_KVM)
		ok = sim_kvm_dest_receive(ch, &kvm_state, &error);
	if (ok && opt->debug_corrupt_page >= 0)
		corrupt(list, opt->debug_corrupt_page);
	if (ok && reply)
		ok = send_hashes(list, ch, &error);
	if (ok && kvm_state && reply)
		ok = sim_kvm_dest_run(list, kvm_state, opt->verify_bytes, ch,
				      &error);
	if (!ok)
		g_printerr("migram-sim: destination: %s\n", error->message);
	g_clear_error(&error);
	migram_receiver_free(r);
	migram_channel_free(ch);
	return ok ? SIM_EXIT_OK : SIM_EXIT_FAILED;
}

/* ---- transports ------------------------------------------------------ */

static bool parse_hostport(const char *arg, struct sockaddr_in *a,
			   GError **error)
{
	g_autofree char *host = NULL;
	const char *colon = arg ? strrchr(arg, ':') : NULL;
	long port;

	if (!colon || colon == arg) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "transport tcp needs HOST:PORT, got '%s'",
			    arg ? arg : "");
		return false;
	}
	host = g_strndup(arg, (gsize)(colon - arg));
	port = strtol(colon + 1, NULL, 10);
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	if (port < 0 || port > 65535 ||
	    inet_pton(AF_INET, strcmp(host, "localhost") ? host : "127.0.0.1",
		      &a->sin_addr) != 1) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "bad tcp address '%s' (IPv4 HOST:PORT)", arg);
		return false;
	}
	return true;
}

static int tcp_listen(const SimOptions *opt, GError **error)
{
	struct sockaddr_in a;
	int one = 1, fd;

	if (!parse_hostport(opt->transport_arg, &a, error))
		return -1;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(fd, 1) < 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "listen on %s: %s", opt->transport_arg,
			    g_strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Connect, retrying for up to 10 s (the destination may start later). */
static int tcp_connect(const SimOptions *opt, GError **error)
{
	struct sockaddr_in a;

	if (!parse_hostport(opt->transport_arg, &a, error))
		return -1;
	for (int i = 0; i < 200; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			return fd;
		close(fd);
		g_usleep(50 * 1000);
	}
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO, "connect to %s: %s",
		    opt->transport_arg, g_strerror(errno));
	return -1;
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
	rc = run_source(opt, src, dup(fd), rep, error);
	if (rc == SIM_EXIT_OK) {
		/* Restore the saved stream into fresh blocks, then compare. */
		lseek(fd, 0, SEEK_SET);
		dst = migram_ram_list_new();
		rc = run_destination(opt, dst, fd, false);
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
			compare_hashes(src, r, &rep->verify_detail, error);
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
	int fds[2], lfd = -1, status, rc;
	pid_t pid;

	if (!src)
		return SIM_EXIT_FAILED;
	if (opt->verify_bytes)
		dst = shared_destination(opt, maps);
	if (opt->transport == SIM_TRANSPORT_TCP) {
		lfd = tcp_listen(opt, error);
		if (lfd < 0)
			return SIM_EXIT_FAILED;
	} else if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds)) {
		return SIM_EXIT_FAILED;
	}
	pid = fork();
	if (pid == 0) {
		/* The destination process. */
		int fd = lfd >= 0 ? accept(lfd, NULL, NULL) : fds[1];

		if (lfd < 0)
			close(fds[0]);
		_exit(run_destination(opt, dst ? dst : migram_ram_list_new(),
				      fd, true));
	}
	if (lfd >= 0) {
		close(lfd);
		fds[0] = tcp_connect(opt, error);
		if (fds[0] < 0) {
			kill(pid, SIGTERM);
			waitpid(pid, NULL, 0);
			return SIM_EXIT_FAILED;
		}
	} else {
		close(fds[1]);
	}
	rc = run_source(opt, src, fds[0], rep, error);
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
		int lfd = tcp_listen(opt, &error);
		MigramRamList *dst = migram_ram_list_new();

		rc = lfd < 0 ? SIM_EXIT_FAILED
			     : run_destination(opt, dst,
					       accept(lfd, NULL, NULL), true);
		migram_ram_list_free(dst);
		if (lfd >= 0)
			close(lfd);
		g_strlcpy(rep->status, rc ? "failed" : "completed",
			  sizeof(rep->status));
	} else if (opt->role && strcmp(opt->role, "source") == 0) {
		MigramRamList *src = source_list(opt, &error);
		int fd = src ? tcp_connect(opt, &error) : -1;

		rc = fd < 0 ? SIM_EXIT_FAILED
			    : run_source(opt, src, fd, rep, &error);
		migram_ram_list_free(src);
	} else if (opt->transport == SIM_TRANSPORT_FILE) {
		rc = run_file(opt, rep, &error);
	} else {
		rc = run_pair(opt, rep, &error);
	}
	if (error) {
		rep->error = g_strdup(error->message);
		g_error_free(error);
	}
	return rc;
}
