/* SPDX-License-Identifier: MIT */
/*
 * migram-sim's continuous checkpoints (docs/snapshots.md, "Checkpoints").
 *
 * Primary (--checkpoint-every TIME --standby tcp:HOST:PORT): the writer
 * workload (or a KVM guest: its dirty log, and its vCPU registers as each
 * epoch's device state) runs; every TIME the writers pause, the dirty log is
 * collected, the dirty pages (epoch 0: every non-zero page) are staged,
 * every page is hashed (verification only, timed on its own), the writers
 * resume and the epoch is shipped and acknowledged.  With
 * --checkpoint-hashes DIR each epoch's hashes go to DIR/epoch-E.hashes
 * (before the epoch is shipped).
 *
 * Standby (--role standby --standby tcp:HOST:PORT): zeroed blocks of the
 * same layout; applies epochs until the primary goes away, then writes
 * the hashes of its memory to DIR/standby.hashes and the last applied
 * epoch to DIR/standby.epoch.  With --workload kvm it then fails over:
 * resumes the guest from that epoch's memory and registers, checks its
 * invariant, runs it, checks again.
 */
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <migram/checkpoint.h>
#include <migram/dirty-log.h>
#include <migram/migram.h>

#include "kvm-guest.h"
#include "kvm-sim.h"
#include "sim-snapshot.h"
#include "workload.h"

#define PAGE 4096u

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static uint64_t now_ns(void)
{
	return (uint64_t)g_get_monotonic_time() * 1000;
}

/* "tcp:HOST:PORT" -> a listening or connected socket. */
static int tcp_socket(const char *addr, bool listen_on, GError **error)
{
	const char *hp = addr + 4, *colon = strrchr(hp, ':');
	if (!colon) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "--standby '%s': tcp:HOST:PORT", addr);
		return -1;
	}
	g_autofree char *host = g_strndup(hp, (gsize)(colon - hp));
	struct addrinfo hints = { .ai_family = AF_INET,
				  .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai = NULL;
	int rc = getaddrinfo(host, colon + 1, &hints, &ai);
	if (rc) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "--standby '%s': %s", addr, gai_strerror(rc));
		return -1;
	}
	int fd = -1;
	gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
	for (;;) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			break;
		int one = 1;
		if (listen_on) {
			(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
					 sizeof(one));
			if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
			    listen(fd, 1) == 0)
				break;
		} else if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			break;
		}
		close(fd);
		fd = -1;
		if (listen_on || g_get_monotonic_time() > deadline)
			break;
		g_usleep(50000);
	}
	if (fd < 0)
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO, "%s %s: %s",
			    listen_on ? "listen on" : "connect to", addr,
			    g_strerror(errno));
	freeaddrinfo(ai);
	return fd;
}

/* Hashes of every page of every block, blocks in order. */
static void hash_all(GPtrArray *blocks, uint64_t *out)
{
	for (guint i = 0; i < blocks->len; i++) {
		const uint8_t *h = migram_ram_block_host(blocks->pdata[i]);
		uint64_t np = migram_ram_block_used_length(blocks->pdata[i]) /
			      PAGE;
		for (uint64_t p = 0; p < np; p++)
			*out++ = migram_snapshot_page_hash(h + p * PAGE);
	}
}

static uint64_t total_pages(GPtrArray *blocks)
{
	uint64_t n = 0;
	for (guint i = 0; i < blocks->len; i++)
		n += migram_ram_block_used_length(blocks->pdata[i]) / PAGE;
	return n;
}

static bool save_hashes(const char *dir, const char *name, const uint64_t *h,
			uint64_t n, GError **error)
{
	g_autofree char *path = g_build_filename(dir, name, NULL);
	return g_file_set_contents(path, (const char *)h, (gssize)(n * 8),
				   error);
}

typedef struct {
	uint64_t epoch, pages;
} KillAt;

static void kill_hook(uint64_t epoch, uint64_t pages_sent, void *opaque)
{
	const KillAt *k = opaque;
	if (epoch == k->epoch && pages_sent >= k->pages) {
		printf("killing the primary: epoch %" G_GUINT64_FORMAT
		       " after %" G_GUINT64_FORMAT " pages sent\n",
		       epoch, pages_sent);
		fflush(stdout);
		raise(SIGKILL);
	}
}

typedef struct {
	GPtrArray *blocks;
	unsigned long **dirty;
	uint64_t *hashes;
	MigramLogSource src;
	SimSnapGuest g; /* a KVM guest's registers ride each epoch */
	MigramCheckpointSender *s;
} Primary;

/* One epoch: pause, collect, stage, hash, resume, save hashes, ship. */
static bool primary_epoch(const SimOptions *opt, Primary *p, uint64_t e,
			  uint64_t *pause_sum, GError **error)
{
	if (!migram_checkpoint_sender_populate(p->s, error))
		return false;
	MigramStageStats ss = { 0 };
	uint64_t t0 = now_ns();
	sim_snap_guest_pause(&p->g);
	uint64_t t1 = now_ns();
	for (guint i = 0; i < p->blocks->len; i++) {
		uint64_t np =
			migram_ram_block_used_length(p->blocks->pdata[i]) /
			PAGE;
		uint64_t newly = 0;
		memset(p->dirty[i], 0, (np + 63) / 64 * 8);
		if (!p->src.ops->sync(p->src.opaque, p->blocks->pdata[i],
				      p->dirty[i], &newly, error) ||
		    !p->src.ops->clear(p->src.opaque, p->blocks->pdata[i], 0,
				       np, p->dirty[i], error)) {
			sim_snap_guest_resume(&p->g);
			return false;
		}
	}
	uint64_t t2 = now_ns();
	bool ok = migram_checkpoint_sender_stage(
		p->s, (const unsigned long *const *)p->dirty, &ss, error);
	if (ok && p->g.kvm) {
		/* The vCPU registers at this pause go with the epoch. */
		g_autoptr(GByteArray) dev = g_byte_array_new();
		ok = sim_kvm_source_save(p->g.kvm, dev, error) &&
		     migram_checkpoint_sender_set_device_state(p->s, dev->data,
							       dev->len, error);
	}
	uint64_t t3 = now_ns();
	hash_all(p->blocks, p->hashes);
	uint64_t t4 = now_ns();
	sim_snap_guest_resume(&p->g);
	if (!ok)
		return false;
	uint64_t pause = (t4 - t0) - (t4 - t3);
	*pause_sum += pause;
	g_autofree char *name =
		g_strdup_printf("epoch-%" G_GUINT64_FORMAT ".hashes", e);
	if (opt->checkpoint_hashes &&
	    !save_hashes(opt->checkpoint_hashes, name, p->hashes,
			 total_pages(p->blocks), error))
		return false;
	MigramCheckpointStats cs;
	if (!migram_checkpoint_sender_ship(p->s, &cs, error))
		return false;
	if (!opt->quiet) {
		printf("epoch %" G_GUINT64_FORMAT
		       " acked: pause %.3f ms w/o hash (stop %.3f, dirty log "
		       "%.3f, copy %.3f; hash %.3f [verification only]), "
		       "%" G_GUINT64_FORMAT " pages, %" G_GUINT64_FORMAT
		       " bytes, send %.3f ms, ack %.3f ms\n",
		       e, ms(pause), ms(t1 - t0), ms(t2 - t1), ms(t3 - t2),
		       ms(t4 - t3), cs.pages, cs.bytes, ms(cs.send_ns),
		       ms(cs.ack_ns));
		fflush(stdout);
	}
	return true;
}

static bool primary_loop(const SimOptions *opt, Primary *p, GError **error)
{
	/* The guest's progress without checkpoints, for the overhead. */
	uint64_t base_ms = MAX(opt->checkpoint_every_ms, 200);
	uint64_t w0 = sim_snap_guest_writes(&p->g), t0 = now_ns();
	g_usleep(base_ms * 1000);
	uint64_t w1 = sim_snap_guest_writes(&p->g), t1 = now_ns();
	double base_rate = (double)(w1 - w0) / ((double)(t1 - t0) / 1e9);
	uint64_t pause_sum = 0, next = t1;
	for (uint64_t e = 0; e < opt->checkpoint_epochs; e++) {
		if (!primary_epoch(opt, p, e, &pause_sum, error))
			return false;
		next += opt->checkpoint_every_ms * 1000000;
		uint64_t now = now_ns();
		if (next > now)
			g_usleep((next - now) / 1000);
		else
			next = now;
	}
	uint64_t w2 = sim_snap_guest_writes(&p->g), t2 = now_ns();
	double rate = (double)(w2 - w1) / ((double)(t2 - t1) / 1e9);
	if (!opt->quiet)
		printf("checkpoints:       %u every %" G_GUINT64_FORMAT
		       " ms, mean pause %.3f ms w/o hash\n"
		       "guest progress:    %.0f writes/s without checkpoints, "
		       "%.0f with (overhead %.1f%%)\n",
		       opt->checkpoint_epochs, opt->checkpoint_every_ms,
		       ms(pause_sum / MAX(opt->checkpoint_epochs, 1)),
		       base_rate, rate,
		       base_rate > 0 ? 100.0 * (1 - rate / base_rate) : 0);
	return true;
}

static int run_primary(const SimOptions *opt, GError **error)
{
	bool kvm = opt->workload == SIM_WORKLOAD_KVM;
	g_autoptr(GPtrArray) blocks = g_ptr_array_new();
	MigramRamList *list = sim_snapshot_make_list(opt, !kvm, blocks, error);
	if (!list)
		return SIM_EXIT_FAILED;
	Primary p = { .blocks = blocks };
	uint64_t end = 0;
	p.dirty = g_new0(unsigned long *, blocks->len);
	for (guint i = 0; i < blocks->len; i++) {
		MigramRamBlock *b = blocks->pdata[i];
		end = MAX(end, migram_ram_block_offset(b) +
				       migram_ram_block_max_length(b));
		p.dirty[i] = g_new0(unsigned long,
				    (migram_ram_block_max_length(b) / PAGE +
				     63) / 64);
	}
	p.hashes = g_new(uint64_t, total_pages(blocks));
	KillAt kill = { 0 };
	if (opt->checkpoint_kill_at &&
	    sscanf(opt->checkpoint_kill_at,
		   "%" G_GUINT64_FORMAT ":%" G_GUINT64_FORMAT, &kill.epoch,
		   &kill.pages) != 2)
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "--checkpoint-kill-at '%s': E:PAGES",
			    opt->checkpoint_kill_at);
	int fd = *error ? -1 : tcp_socket(opt->standby, false, error);
	p.s = fd >= 0 ? migram_checkpoint_sender_new(list, fd, error) : NULL;
	if (p.s && opt->checkpoint_kill_at)
		migram_checkpoint_sender_set_run_hook(p.s, kill_hook, &kill);
	MigramSoftLog *log = NULL;
	SimReport rep;
	sim_report_init(&rep);
	if (p.s && kvm) {
		p.g.kvm = sim_kvm_source_start(opt, list, &p.src, &rep, error);
	} else if (p.s) {
		log = migram_soft_log_new(end, error);
		if (log)
			migram_soft_log_source(log, &p.src);
	}
	bool started = log || p.g.kvm, ok = started;
	for (guint i = 0; i < blocks->len && ok; i++)
		ok = p.src.ops->start(p.src.opaque, blocks->pdata[i], error);
	if (ok && !kvm) {
		p.g.writers = sim_guest_start(opt,
					      (MigramRamBlock **)blocks->pdata,
					      blocks->len,
					      migram_soft_log_bitmap(log));
		ok = p.g.writers != NULL;
	}
	ok = ok && primary_loop(opt, &p, error);
	if (p.g.writers)
		sim_guest_stop(p.g.writers);
	for (guint i = 0; started && i < blocks->len; i++)
		p.src.ops->stop(p.src.opaque, blocks->pdata[i]);
	ok = sim_snap_guest_free_kvm(&p.g, ok, error);
	sim_report_clear(&rep);
	migram_checkpoint_sender_free(p.s);
	if (fd >= 0)
		close(fd);
	migram_soft_log_free(log);
	for (guint i = 0; i < blocks->len; i++)
		g_free(p.dirty[i]);
	g_free(p.dirty);
	g_free(p.hashes);
	migram_ram_list_free(list);
	return ok ? SIM_EXIT_OK : SIM_EXIT_FAILED;
}

static bool failover(MigramRamList *list, MigramCheckpointReceiver *r,
		     bool have, uint64_t e, GError **error)
{
	g_autoptr(GBytes) dev = migram_checkpoint_receiver_device_state(r);
	if (!have || !dev) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "standby: cannot resume the KVM guest: %s",
			    have ? "no epoch carried its vCPU state"
				 : "no complete epoch");
		return false;
	}
	gsize len;
	const guint8 *st = g_bytes_get_data(dev, &len);
	SimKvm *k = sim_kvm_restore_new(list, st, len, error);
	if (!k)
		return false;
	g_autofree char *v = sim_kvm_verdict(k, "at the epoch");
	printf("standby: resumed the guest from epoch %" G_GUINT64_FORMAT
	       ": %s\n",
	       e, v + 1);
	if (v[0] != '1') {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "standby: the resumed KVM guest failed: %s", v + 1);
		return false;
	}
	return true;
}

static int run_standby(const SimOptions *opt, GError **error)
{
	g_autoptr(GPtrArray) blocks = g_ptr_array_new();
	MigramRamList *list = sim_snapshot_make_list(opt, false, blocks, error);
	if (!list)
		return SIM_EXIT_FAILED;
	int lfd = tcp_socket(opt->standby, true, error), fd = -1;
	struct sockaddr_storage sa;
	socklen_t sl = sizeof(sa);
	if (lfd >= 0 && getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0) {
		char port[16];
		getnameinfo((struct sockaddr *)&sa, sl, NULL, 0, port,
			    sizeof(port), NI_NUMERICSERV);
		printf("standby listening on port %s\n", port);
		fflush(stdout);
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
				    "accept on %s: %s", opt->standby,
				    g_strerror(errno));
	}
	MigramCheckpointReceiver *r =
		fd >= 0 ? migram_checkpoint_receiver_new(list, fd, fd, error)
			: NULL;
	int rc = r ? SIM_EXIT_OK : SIM_EXIT_FAILED;
	bool closed = false;
	g_autoptr(GError) lost = NULL;
	while (r && !closed) {
		MigramCheckpointStats cs;
		if (!migram_checkpoint_receiver_next(r, &cs, &closed, &lost))
			break;
		if (!closed && !opt->quiet) {
			printf("standby epoch %" G_GUINT64_FORMAT
			       " applied: %" G_GUINT64_FORMAT
			       " pages, %" G_GUINT64_FORMAT
			       " bytes, received in %.3f ms, applied in "
			       "%.3f ms\n",
			       cs.epoch, cs.pages, cs.bytes, ms(cs.send_ns),
			       ms(cs.ack_ns));
			fflush(stdout);
		}
	}
	uint64_t e = 0;
	bool have = r && migram_checkpoint_receiver_epoch(r, &e);
	if (r) {
		if (lost)
			printf("standby: primary lost: %s\n", lost->message);
		if (have)
			printf("standby: holds epoch %" G_GUINT64_FORMAT
			       " (the last complete one)\n",
			       e);
		else
			printf("standby: holds no epoch\n");
		/* A protocol error is a bug or an attack, not a failover. */
		if (lost &&
		    g_error_matches(lost, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL))
			rc = SIM_EXIT_FAILED;
	}
	if (r && opt->checkpoint_hashes) {
		uint64_t n = total_pages(blocks);
		g_autofree uint64_t *h = g_new(uint64_t, n);
		hash_all(blocks, h);
		g_autofree char *es =
			have ? g_strdup_printf("%" G_GUINT64_FORMAT "\n", e)
			     : g_strdup("none\n");
		g_autofree char *ep = g_build_filename(opt->checkpoint_hashes,
						       "standby.epoch", NULL);
		if (!save_hashes(opt->checkpoint_hashes, "standby.hashes", h, n,
				 error) ||
		    !g_file_set_contents(ep, es, -1, error))
			rc = SIM_EXIT_FAILED;
	}
	/* Failover: a KVM guest resumes from the last complete epoch, its
	 * memory and the vCPU registers that came with it. */
	if (r && opt->workload == SIM_WORKLOAD_KVM && rc == SIM_EXIT_OK &&
	    !failover(list, r, have, e, error))
		rc = SIM_EXIT_FAILED;
	migram_checkpoint_receiver_free(r);
	if (fd >= 0)
		close(fd);
	if (lfd >= 0)
		close(lfd);
	migram_ram_list_free(list);
	return rc;
}

int sim_checkpoint_run(const SimOptions *opt)
{
	g_autoptr(GError) error = NULL;
	bool standby = opt->role && strcmp(opt->role, "standby") == 0;
	int rc = standby ? run_standby(opt, &error) : run_primary(opt, &error);
	if (rc != SIM_EXIT_OK)
		fprintf(stderr, "migram-sim: %s\n",
			error ? error->message : "checkpoints failed");
	return rc;
}
