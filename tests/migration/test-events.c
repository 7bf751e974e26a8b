/* SPDX-License-Identifier: MIT */
/*
 * Status-change events: an event-loop embedder (a GMainLoop with a GSource
 * on the migration's event fd, no timers, no get_stats polling) sees
 * setup, active, device, completed in order; other runs end failed and
 * cancelled; the callback sees the same changes on the migration thread.
 * Plus bad input and the queue's overflow rule.
 */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib-unix.h>
#include <urcu/urcu-memb.h>

#include <migram/dirty-log.h>
#include <migram/migram.h>
#include <migram/sender.h>
#include <migram/ramblock.h>

#include "migram-test-util.h"

#define MiB (UINT64_C(1) << 20)

typedef enum {
	END_COMPLETE,
	END_FAIL,   /* the destination closes at once */
	END_CANCEL, /* the loop cancels once it sees active */
} Ending;

typedef struct {
	MigramRamList *list;
	MigramRamList *dst; /* the destination's, or NULL */
	MigramSoftLog *log;
	MigramMigration *m;
	MigramChannel *ch;
	GMainLoop *loop;
	GArray *seen;   /* statuses from the fd, main thread */
	GArray *called; /* statuses from the callback, migration thread */
	GThread *self;  /* the migration thread */
	Ending ending;
	bool ok;
	GError *error;
	int wrong_thread; /* the callback ran elsewhere */
} Run;

static void pause_guest(void *opaque)
{
	(void)opaque;
}

static void on_event(MigramMigration *m, MigramMigrationStatus s, void *o)
{
	Run *r = o;

	g_assert_true(m == r->m);
	if (g_thread_self() != r->self)
		r->wrong_thread++;
	g_array_append_val(r->called, s);
}

static gpointer migration_main(gpointer p)
{
	Run *r = p;

	urcu_memb_register_thread();
	r->self = g_thread_self();
	r->ok = migram_migration_run(r->m, r->ch, &r->error);
	urcu_memb_unregister_thread();
	return NULL;
}

static bool terminal(MigramMigrationStatus s)
{
	return s == MIGRAM_MIGRATION_COMPLETED ||
	       s == MIGRAM_MIGRATION_FAILED || s == MIGRAM_MIGRATION_CANCELLED;
}

static gboolean on_fd(gint fd, GIOCondition cond, gpointer p)
{
	Run *r = p;
	MigramMigrationStatus s;
	uint64_t n;

	(void)cond;
	g_assert_cmpint(read(fd, &n, sizeof(n)), ==, sizeof(n));
	g_assert_cmpuint(n, >, 0);
	while (migram_migration_next_event(r->m, &s)) {
		g_array_append_val(r->seen, s);
		if (s == MIGRAM_MIGRATION_ACTIVE && r->ending == END_CANCEL)
			migram_migration_cancel(r->m);
		if (terminal(s)) {
			g_main_loop_quit(r->loop);
			return G_SOURCE_REMOVE;
		}
	}
	return G_SOURCE_CONTINUE;
}

static gboolean watchdog(gpointer p)
{
	(void)p;
	g_error("no terminal event within 60 s");
	return G_SOURCE_REMOVE;
}

/* Fixture set-up: builds the run for the ending in @data and runs it to
 * its terminal event; the case then checks what the run saw. */
static void run_one(Run *r, gconstpointer data)
{
	Ending ending = (Ending)GPOINTER_TO_INT(data);
	g_autoptr(GError) error = NULL;
	MigramMigrationConfig cfg = { .pause_guest = pause_guest };
	MigramRamBlock *b;
	MigramTestReceiver *rx = NULL;
	MigramLogSource src;
	GThread *t;
	GSource *watch;
	guint dog;
	int fds[2], efd;

	memset(r, 0, sizeof(*r));
	r->ending = ending;
	r->list = migram_ram_list_new();
	b = migram_ram_list_add(r->list,
				&(MigramRamBlockConfig){ .idstr = "pc.ram",
							 .used_length = 4 *
									MiB },
				&error);
	g_assert_no_error(error);
	/* Not zero pages: each is sent whole, at the bandwidth limit. */
	memset(migram_ram_block_host(b), 0x5a, 4 * MiB);
	r->log = migram_soft_log_new(migram_ram_block_offset(b) + 4 * MiB,
				     &error);
	g_assert_no_error(error);
	migram_soft_log_source(r->log, &src);
	if (ending == END_CANCEL)
		cfg.max_bandwidth = 1000 * 1000; /* 4 s: cancelled first */
	r->m = migram_migration_new(r->list, &src, &cfg);
	r->seen = g_array_new(FALSE, FALSE, sizeof(MigramMigrationStatus));
	r->called = g_array_new(FALSE, FALSE, sizeof(MigramMigrationStatus));
	g_assert_true(
		migram_migration_set_event_callback(r->m, on_event, r, &error));
	efd = migram_migration_get_event_fd(r->m, &error);
	g_assert_no_error(error);
	g_assert_cmpint(efd, >=, 0);
	g_assert_cmpint(migram_migration_get_event_fd(r->m, NULL), ==, efd);

	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
	if (ending == END_FAIL) {
		close(fds[1]);
	} else {
		MigramRamList *dst = migram_ram_list_new();

		r->dst = dst;
		migram_ram_list_add(dst,
				    &(MigramRamBlockConfig){
					    .idstr = "pc.ram",
					    .used_length = 4 * MiB },
				    &error);
		g_assert_no_error(error);
		rx = migram_test_receiver_start(dst, fds[1], FALSE);
	}
	r->ch = migram_channel_new(fds[0], true);

	r->loop = g_main_loop_new(NULL, FALSE);
	watch = g_unix_fd_source_new(efd, G_IO_IN);
	g_source_set_callback(watch, G_SOURCE_FUNC(on_fd), r, NULL);
	g_source_attach(watch, NULL);
	dog = g_timeout_add_seconds(60, watchdog, NULL);
	t = g_thread_new("migration", migration_main, r);
	g_main_loop_run(r->loop);
	g_thread_join(t);
	g_source_remove(dog);
	g_source_destroy(watch);
	g_source_unref(watch);
	g_main_loop_unref(r->loop);
	migram_channel_free(r->ch);
	if (rx)
		migram_test_receiver_join(rx, NULL);
}

static void run_free(Run *r, gconstpointer data)
{
	MigramMigrationStatus s;

	(void)data;
	/* Everything was taken: the queue is empty. */
	g_assert_false(migram_migration_next_event(r->m, &s));
	migram_migration_free(r->m);
	migram_soft_log_free(r->log);
	migram_ram_list_free(r->list);
	if (r->dst)
		migram_ram_list_free(r->dst);
	g_array_unref(r->seen);
	g_array_unref(r->called);
	g_clear_error(&r->error);
}

#define AT(a, i) g_array_index((a), MigramMigrationStatus, (i))

static void assert_same(GArray *a, GArray *b)
{
	g_assert_cmpuint(a->len, ==, b->len);
	for (guint i = 0; i < a->len; i++)
		g_assert_cmpstr(migram_migration_status_name(AT(a, i)), ==,
				migram_migration_status_name(AT(b, i)));
}

static void test_completed(Run *r, gconstpointer data)
{
	const MigramMigrationStatus want[] = { MIGRAM_MIGRATION_SETUP,
					       MIGRAM_MIGRATION_ACTIVE,
					       MIGRAM_MIGRATION_DEVICE,
					       MIGRAM_MIGRATION_COMPLETED };

	(void)data;
	g_assert_no_error(r->error);
	g_assert_true(r->ok);
	g_assert_cmpuint(r->seen->len, ==, G_N_ELEMENTS(want));
	for (guint i = 0; i < G_N_ELEMENTS(want); i++)
		g_assert_cmpstr(migram_migration_status_name(AT(r->seen, i)),
				==, migram_migration_status_name(want[i]));
	assert_same(r->seen, r->called);
	g_assert_cmpint(r->wrong_thread, ==, 0);
}

static void test_failed(Run *r, gconstpointer data)
{
	(void)data;
	g_assert_false(r->ok);
	g_assert_error(r->error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_cmpint(AT(r->seen, 0), ==, MIGRAM_MIGRATION_SETUP);
	g_assert_cmpint(AT(r->seen, r->seen->len - 1), ==,
			MIGRAM_MIGRATION_FAILED);
	assert_same(r->seen, r->called);
}

static void test_cancelled(Run *r, gconstpointer data)
{
	(void)data;
	g_assert_false(r->ok);
	g_assert_error(r->error, MIGRAM_ERROR, MIGRAM_ERROR_CANCELLED);
	g_assert_cmpuint(r->seen->len, ==, 3);
	g_assert_cmpint(AT(r->seen, 0), ==, MIGRAM_MIGRATION_SETUP);
	g_assert_cmpint(AT(r->seen, 1), ==, MIGRAM_MIGRATION_ACTIVE);
	g_assert_cmpint(AT(r->seen, 2), ==, MIGRAM_MIGRATION_CANCELLED);
	assert_same(r->seen, r->called);
}

static void test_bad_input(void)
{
	g_autoptr(GError) error = NULL;
	MigramMigrationStatus s = MIGRAM_MIGRATION_ACTIVE;

	g_assert_false(
		migram_migration_set_event_callback(NULL, NULL, NULL, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&error);
	g_assert_cmpint(migram_migration_get_event_fd(NULL, &error), ==, -1);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*!= NULL*");
	g_assert_false(migram_migration_next_event(NULL, &s));
	g_test_assert_expected_messages();
	g_assert_cmpint(s, ==, MIGRAM_MIGRATION_ACTIVE);
}

/* A migration that never ran has nothing queued; an fd asked for after
 * the changes were queued is readable at once. */
static void test_late_fd(void)
{
	g_autoptr(GError) error = NULL;
	MigramRamList *list = migram_ram_list_new();
	MigramLogSource src = { 0 };
	MigramSoftLog *log = migram_soft_log_new(MiB, &error);
	MigramMigrationConfig cfg = { .pause_guest = pause_guest };
	MigramMigrationStatus s;
	MigramMigration *m;
	MigramChannel *ch;
	uint64_t n = 0;
	int fds[2], efd;

	migram_soft_log_source(log, &src);
	m = migram_migration_new(list, &src, &cfg);
	g_assert_false(migram_migration_next_event(m, &s));
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
	ch = migram_channel_new(fds[0], true);
	close(fds[1]); /* the destination is gone */
	g_assert_false(migram_migration_run(m, ch, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	efd = migram_migration_get_event_fd(m, NULL);
	g_assert_cmpint(read(efd, &n, sizeof(n)), ==, sizeof(n));
	g_assert_cmpuint(n, >=, 1);
	while (migram_migration_next_event(m, &s))
		;
	g_assert_true(terminal(s));
	/* Read and drained: not readable any more (non-blocking). */
	g_assert_cmpint(read(efd, &n, sizeof(n)), ==, -1);
	g_assert_cmpint(s, ==, MIGRAM_MIGRATION_FAILED);
	migram_channel_free(ch);
	migram_migration_free(m);
	migram_soft_log_free(log);
	migram_ram_list_free(list);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	g_test_add_func("/migration/events/bad-input", test_bad_input);
	g_test_add_func("/migration/events/late-fd", test_late_fd);
	g_test_add("/migration/events/main-loop/completed", Run,
		   GINT_TO_POINTER(END_COMPLETE), run_one, test_completed,
		   run_free);
	g_test_add("/migration/events/main-loop/failed", Run,
		   GINT_TO_POINTER(END_FAIL), run_one, test_failed, run_free);
	g_test_add("/migration/events/main-loop/cancelled", Run,
		   GINT_TO_POINTER(END_CANCEL), run_one, test_cancelled,
		   run_free);
	return g_test_run();
}
