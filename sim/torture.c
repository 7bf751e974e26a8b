/* SPDX-License-Identifier: MIT */
/*
 * migram-sim's test hooks for the torture campaign: a userfaultfd dirty
 * log for the writer workloads, caller-owned blocks, a block hot-added or
 * resized mid-migration, and the source's self-check after a failure.
 * See torture.h and docs/reliability.md.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <urcu/urcu-memb.h>

#include <migram/migram.h>

#include "torture.h"

#define PAGE 4096u

struct SimTorture {
	MigramRamList *list;
	bool add;       /* add a block, else resize the last one */
	uint64_t at_us; /* when, after the start */
	GThread *thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	bool added; /* the hot-add went through (the thread's; read after join)
		     */
};

bool sim_torture_log(const SimOptions *opt, MigramLogSource *src,
		     MigramUffdLog **log, GError **error)
{
	MigramUffdMode mode;

	*log = NULL;
	if (!opt->debug_uffd_log)
		return true;
	mode = strcmp(opt->debug_uffd_log, "async") == 0
		       ? MIGRAM_UFFD_MODE_ASYNC
		       : MIGRAM_UFFD_MODE_FAULT;
	*log = migram_uffd_log_new_mode(mode, error);
	if (!*log)
		return false;
	migram_uffd_log_source(*log, src);
	return true;
}

void sim_torture_block_config(const SimOptions *opt, guint i,
			      const SimBlockSpec *s, MigramRamBlockConfig *c)
{
	bool resize = opt->debug_hotplug &&
		      g_str_has_prefix(opt->debug_hotplug, "resize") &&
		      i + 1 == opt->blocks->len && !s->hugetlb;

	if (resize)
		c->max_length = c->used_length + (1u << 20);
	if (s->caller && !s->hugetlb) {
		uint64_t len = c->max_length ? c->max_length : c->used_length;
		void *h = mmap(NULL, len, PROT_READ | PROT_WRITE,
			       (s->shared ? MAP_SHARED : MAP_PRIVATE) |
				       MAP_ANONYMOUS | MAP_NORESERVE,
			       -1, 0);

		/* A failed mmap leaves the backend as it was. */
		if (h == MAP_FAILED)
			return;
		c->backend = MIGRAM_RAM_BACKEND_CALLER;
		c->host = h;
		c->flags |= s->shared ? MIGRAM_RAM_SHARED : 0;
	}
}

static bool wait_stop(SimTorture *t, gint64 until)
{
	struct timespec ts = { .tv_sec = until / G_USEC_PER_SEC,
			       .tv_nsec = (until % G_USEC_PER_SEC) * 1000 };
	bool stop;

	/* g_get_monotonic_time() is CLOCK_MONOTONIC in µs, the cond's
	 * clock. */
	pthread_mutex_lock(&t->lock);
	while (!t->stop &&
	       pthread_cond_timedwait(&t->cond, &t->lock, &ts) != ETIMEDOUT)
		;
	stop = t->stop;
	pthread_mutex_unlock(&t->lock);
	return stop;
}

static gpointer hotplug_main(gpointer p)
{
	SimTorture *t = p;
	g_autoptr(GError) e = NULL;
	MigramRamBlock *last = NULL;
	char name[MIGRAM_RAM_IDSTR_MAX + 1] = "";
	uint64_t len = 0;

	urcu_memb_register_thread();
	if (wait_stop(t, g_get_monotonic_time() + (gint64)t->at_us))
		goto out;
	if (t->add) {
		MigramRamBlockConfig c = { .idstr = "hot0",
					   .used_length = 1u << 20 };

		if (migram_ram_list_add(t->list, &c, &e)) {
			t->added = true;
			fprintf(stderr, "migram-sim: torture: hot-added block "
					"'hot0' (1 MiB)\n");
		}
		goto out;
	}
	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next(t->list, NULL); b;
	     b = migram_ram_list_next(t->list, b))
		last = b;
	if (last) {
		g_strlcpy(name, migram_ram_block_idstr(last), sizeof(name));
		len = migram_ram_block_used_length(last);
	}
	urcu_memb_read_unlock();
	if (len && migram_ram_list_resize(t->list, name, len + PAGE, &e) &&
	    migram_ram_list_resize(t->list, name, len, &e))
		fprintf(stderr,
			"migram-sim: torture: resized block '%s' by a page "
			"and back\n",
			name);
out:
	if (e)
		fprintf(stderr, "migram-sim: torture: hotplug: %s\n",
			e->message);
	urcu_memb_unregister_thread();
	return NULL;
}

SimTorture *sim_torture_start(const SimOptions *opt, MigramRamList *list)
{
	SimTorture *t;
	const char *colon;
	uint64_t us = 0;

	if (!opt->debug_hotplug)
		return NULL;
	colon = strchr(opt->debug_hotplug, ':');
	if (colon)
		us = g_ascii_strtoull(colon + 1, NULL, 10) * 1000;
	t = g_new0(SimTorture, 1);
	t->list = list;
	t->add = g_str_has_prefix(opt->debug_hotplug, "add");
	t->at_us = us;
	pthread_mutex_init(&t->lock, NULL);
	{
		pthread_condattr_t ca;

		/* Timed waits against the monotonic clock (wait_stop). */
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&t->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	t->thread = g_thread_new("sim-hotplug", hotplug_main, t);
	return t;
}

bool sim_torture_stop(SimTorture *t)
{
	bool added;

	if (!t)
		return false;
	pthread_mutex_lock(&t->lock);
	t->stop = true;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
	g_thread_join(t->thread);
	added = t->added;
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->cond);
	g_free(t);
	return added;
}

void sim_torture_check_source(const SimOptions *opt, SimGuest *guest)
{
	uint64_t before = sim_guest_writes(guest), after;
	bool running, writers = opt->workload != SIM_WORKLOAD_IDLE;
	g_autofree char *detail = NULL;
	bool intact;

	/* Running: its writers make progress (an idle guest has none). */
	for (int i = 0; i < 30; i++) {
		g_usleep(10 * 1000);
		if (sim_guest_writes(guest) > before)
			break;
	}
	after = sim_guest_writes(guest);
	running = !writers || after > before;
	sim_guest_pause(guest);
	intact = sim_guest_check(guest, opt->fill, &detail);
	fprintf(stderr,
		"migram-sim: torture: source check: guest %s (%" G_GUINT64_FORMAT
		" writes in the check), memory %s: %s\n",
		running ? "running" : "NOT RUNNING", after - before,
		intact ? "intact" : "CORRUPT", detail);
}
