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
#include "real-internal.h"

static int run_file(const SimOptions *opt, SimReport *rep, GError **error)
{
	MigramRamList *src = real_source_list(opt, error), *dst;
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
	rc = real_run_source(
		opt, src,
		&(SimLink){ .fd = dup(fd), .preempt_fd = -1, .listen_fd = -1 },
		rep, error);
	if (rc == SIM_EXIT_OK) {
		/* Restore the saved stream into fresh blocks, then compare. */
		lseek(fd, 0, SEEK_SET);
		dst = migram_ram_list_new();
		rc = real_run_destination(opt, dst,
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
				real_send_hashes(dst, w, NULL);
				_exit(0);
			}
			migram_channel_free(w);
			real_compare_hashes(src, r, &rep->verify_detail, NULL,
					    NULL, error);
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

static int run_pair(const SimOptions *opt, SimReport *rep, GError **error)
{
	g_autoptr(GPtrArray) maps = g_ptr_array_new();
	MigramRamList *src = real_source_list(opt, error), *dst = NULL;
	SimLink sl, dl;
	int lfd = -1, status, rc;
	pid_t pid, parent;

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
	parent = getpid();
	pid = fork();
	if (pid == 0) {
		/* The destination process.  No signal thread here: signals
		 * act as by default. */
		SimOptions child = *opt;

		child.peer = NULL;
		sim_peer_child();
		/* Die with the source: a source killed before it reaped us
		 * once left this child in accept() for good. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 ||
		    getppid() != parent)
			_exit(SIM_EXIT_FAILED);
		if (lfd >= 0) {
			GError *err = NULL;

			if (!sim_link_tcp_accept(opt, lfd, &dl, &err)) {
				g_printerr("migram-sim: destination: %s\n",
					   err ? err->message
					       : "accept failed");
				_exit(SIM_EXIT_FAILED);
			}
		} else {
			sim_link_close_all(&sl);
		}
		_exit(real_run_destination(&child,
					   dst ? dst : migram_ram_list_new(),
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
	rc = real_run_source(opt, src, &sl, rep, error);
	waitpid(pid, &status, 0);
	if (rc == SIM_EXIT_OK && !(WIFEXITED(status) && !WEXITSTATUS(status)))
		rc = SIM_EXIT_FAILED;
	if (rc == SIM_EXIT_OK && dst)
		real_compare_bytes(opt, src, maps, rep);
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

		rc = lfd < 0 || !sim_link_tcp_accept(opt, lfd, &dl, &error)
			     ? SIM_EXIT_FAILED
			     : real_run_destination(opt, dst, &dl, true, rep);
		migram_ram_list_free(dst);
		if (lfd >= 0)
			close(lfd);
		rep->destination = true;
		if (rc)
			g_strlcpy(rep->status, "failed", sizeof(rep->status));
	} else if (opt->role && strcmp(opt->role, "source") == 0) {
		MigramRamList *src = real_source_list(opt, &error);
		SimLink sl;

		rc = !src || !sim_link_tcp_connect(opt, &sl, &error)
			     ? SIM_EXIT_FAILED
			     : real_run_source(opt, src, &sl, rep, &error);
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
