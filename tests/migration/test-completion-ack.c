/* SPDX-License-Identifier: MIT */
/*
 * Precopy completion with a return path (config.return_path): the source
 * reports completed only once the destination answered SHUT 0.  A
 * connection cut after the source's last byte (the destination's SHUT
 * never arrives), or a destination whose load fails after the last byte,
 * fails the migration and resumes the source guest.  Without a return
 * path the source completes as QEMU's does, whatever happens next.
 *
 * A proxy thread pair sits between source and destination: it forwards
 * every byte of the stream, and in "cut" mode closes both connections
 * instead of passing the destination's first answer back.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/dirty-log.h>
#include <migram/guest-layout.h>
#include <migram/migram.h>
#include <migram/migration.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>

#include "migram-test-util.h"

#define P 4096u
#define BLOCK_BYTES (2048u * P) /* 8 MiB: more than a socket buffer */

typedef enum {
	PROXY_PASS,
	PROXY_CUT_ANSWER, /* close everything when the destination answers */
} ProxyMode;

typedef struct {
	int src_end, dst_end; /* the proxy's ends of the two socketpairs */
	ProxyMode mode;
	GThread *down, *up;
	int answer_dropped; /* atomic */
} Proxy;

typedef struct {
	MigramRamList *src, *dst;
	MigramSoftLog *log;
	int pauses, resumes;
	bool fail_device; /* the destination refuses the device section */
	/* the destination */
	int dst_fd;
	GThread *rx;
	bool rx_ok;
	GError *rx_error;
	Proxy proxy;
	int src_fd;
} Fixture;

static void pause_guest(void *o)
{
	((Fixture *)o)->pauses++;
}

static void resume_guest(void *o)
{
	((Fixture *)o)->resumes++;
}

static bool save_device(void *o, GByteArray *out, GError **error)
{
	(void)o;
	(void)error;
	g_byte_array_append(out, (const guint8 *)"state", 5);
	return true;
}

static bool load_device(void *o, const char *idstr, const guint8 *data,
			size_t len, GError **error)
{
	Fixture *f = o;

	(void)data;
	(void)len;
	if (!f->fail_device)
		return true;
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
		    "test: device '%s' refused", idstr);
	return false;
}

static gpointer rx_main(gpointer p)
{
	Fixture *f = p;
	MigramReceiver *r = migram_receiver_new(
		f->dst, &(MigramReceiverConfig){ .load_device = load_device,
						 .opaque = f });
	MigramChannel *ch = migram_channel_new(f->dst_fd, true);

	urcu_memb_register_thread();
	f->rx_ok = migram_receiver_load(r, ch, &f->rx_error);
	urcu_memb_unregister_thread();
	migram_receiver_free(r);
	migram_channel_free(ch);
	return NULL;
}

/* Copy from one fd to the other until end or error. */
static void pump(int from, int to, Proxy *px, bool answer)
{
	guint8 buf[65536];

	for (;;) {
		ssize_t n = read(from, buf, sizeof(buf)), w = 0;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (answer && px->mode == PROXY_CUT_ANSWER) {
			g_atomic_int_set(&px->answer_dropped, 1);
			shutdown(px->src_end, SHUT_RDWR);
			shutdown(px->dst_end, SHUT_RDWR);
			return;
		}
		while (w < n) {
			ssize_t k = write(to, buf + w, (size_t)(n - w));

			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				return;
			w += k;
		}
	}
	shutdown(to, SHUT_WR);
}

static gpointer down_main(gpointer p)
{
	Proxy *px = p;

	pump(px->src_end, px->dst_end, px, false);
	return NULL;
}

static gpointer up_main(gpointer p)
{
	Proxy *px = p;

	pump(px->dst_end, px->src_end, px, true);
	return NULL;
}

static void fixture_set_up(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramRamBlockConfig bc = { .idstr = "pc.ram",
				    .used_length = BLOCK_BYTES };
	MigramRamBlock *b;
	int a[2], d[2];

	(void)data;
	memset(f, 0, sizeof(*f));
	f->src = migram_ram_list_new();
	f->dst = migram_ram_list_new();
	b = migram_ram_list_add(f->src, &bc, &error);
	g_assert_no_error(error);
	for (unsigned int i = 0; i < BLOCK_BYTES / P; i++)
		memset((guint8 *)migram_ram_block_host(b) + i * P,
		       (int)(i % 251 + 1), P);
	g_assert_nonnull(migram_ram_list_add(f->dst, &bc, &error));
	g_assert_no_error(error);
	f->log = migram_soft_log_new(migram_ram_list_ram_space(f->src), &error);
	g_assert_no_error(error);
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, a), ==, 0);
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, d), ==, 0);
	f->src_fd = a[0];
	f->proxy.src_end = a[1];
	f->proxy.dst_end = d[0];
	f->dst_fd = d[1];
}

static void start(Fixture *f, ProxyMode mode)
{
	f->proxy.mode = mode;
	f->proxy.down = g_thread_new("proxy-down", down_main, &f->proxy);
	f->proxy.up = g_thread_new("proxy-up", up_main, &f->proxy);
	f->rx = g_thread_new("rx", rx_main, f);
}

static void fixture_tear_down(Fixture *f, gconstpointer data)
{
	(void)data;
	if (f->rx) {
		g_thread_join(f->rx);
		shutdown(f->proxy.src_end, SHUT_RDWR);
		shutdown(f->proxy.dst_end, SHUT_RDWR);
		g_thread_join(f->proxy.down);
		g_thread_join(f->proxy.up);
	}
	close(f->proxy.src_end);
	close(f->proxy.dst_end);
	g_clear_error(&f->rx_error);
	migram_soft_log_free(f->log);
	migram_ram_list_free(f->src);
	migram_ram_list_free(f->dst);
}

/* Run the migration; its status, with *error set on failure. */
static MigramMigrationStatus migrate(Fixture *f, bool return_path,
				     GError **error)
{
	MigramMigrationConfig cfg = { .pause_guest = pause_guest,
				      .resume_guest = resume_guest,
				      .save_device = save_device,
				      .return_path = return_path,
				      .opaque = f };
	MigramLogSource src;
	MigramMigrationStats st;
	MigramMigration *m;
	MigramChannel *ch = migram_channel_new(f->src_fd, true);

	migram_soft_log_source(f->log, &src);
	m = migram_migration_new(f->src, &src, &cfg);
	migram_migration_run(m, ch, error);
	migram_migration_get_stats(m, &st);
	migram_migration_free(m);
	migram_channel_free(ch);
	return st.status;
}

static void test_acked(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;

	(void)data;
	start(f, PROXY_PASS);
	g_assert_cmpint(migrate(f, true, &error), ==,
			MIGRAM_MIGRATION_COMPLETED);
	g_assert_no_error(error);
	g_thread_join(f->rx);
	f->rx = NULL;
	g_assert_no_error(f->rx_error);
	g_assert_true(f->rx_ok);
	g_assert_cmpint(f->pauses, ==, 1);
	g_assert_cmpint(f->resumes, ==, 0);
	g_thread_join(f->proxy.down);
	g_thread_join(f->proxy.up);
}

static void test_cut_after_last_byte(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;

	(void)data;
	start(f, PROXY_CUT_ANSWER);
	g_assert_cmpint(migrate(f, true, &error), ==, MIGRAM_MIGRATION_FAILED);
	g_test_message("source: %s", error->message);
	g_assert_nonnull(strstr(error->message, "did not confirm"));
	/* the destination had loaded everything: the cut hit its answer */
	g_assert_true(g_atomic_int_get(&f->proxy.answer_dropped));
	g_assert_cmpint(f->pauses, ==, 1);
	g_assert_cmpint(f->resumes, ==, 1);
}

static void test_load_failed(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;

	(void)data;
	f->fail_device = true;
	start(f, PROXY_PASS);
	g_assert_cmpint(migrate(f, true, &error), ==, MIGRAM_MIGRATION_FAILED);
	g_test_message("source: %s", error->message);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
	g_assert_nonnull(strstr(error->message, "SHUT 1"));
	g_assert_cmpint(f->resumes, ==, 1);
	g_thread_join(f->rx);
	f->rx = NULL;
	g_assert_false(f->rx_ok);
	g_assert_nonnull(strstr(f->rx_error->message, "refused"));
	g_thread_join(f->proxy.down);
	g_thread_join(f->proxy.up);
}

/* QEMU's behaviour without a return path: completed, nothing to resume. */
static void test_no_return_path(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;

	(void)data;
	f->fail_device = true;
	start(f, PROXY_PASS);
	g_assert_cmpint(migrate(f, false, &error), ==,
			MIGRAM_MIGRATION_COMPLETED);
	g_assert_no_error(error);
	g_assert_cmpint(f->resumes, ==, 0);
	g_thread_join(f->rx);
	f->rx = NULL;
	g_assert_false(f->rx_ok);
	g_thread_join(f->proxy.down);
	g_thread_join(f->proxy.up);
}

static void test_not_a_socket(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramMigrationConfig cfg = { .pause_guest = pause_guest,
				      .resume_guest = resume_guest,
				      .return_path = true,
				      .opaque = f };
	MigramLogSource src;
	MigramMigration *m;
	MigramChannel *ch;
	int p[2];

	(void)data;
	g_assert_cmpint(pipe(p), ==, 0);
	ch = migram_channel_new(p[1], true);
	migram_soft_log_source(f->log, &src);
	m = migram_migration_new(f->src, &src, &cfg);
	g_assert_false(migram_migration_run(m, ch, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED);
	g_assert_nonnull(strstr(error->message, "not a socket"));
	g_assert_cmpint(f->pauses, ==, 0);
	migram_migration_free(m);
	migram_channel_free(ch);
	close(p[0]);
	close(f->src_fd);
	close(f->dst_fd);
}

/* ---- stalled connections (config.io_timeout_ms) ----------------------- */

/* A peer that reads and drops everything and never answers. */
static gpointer drain_main(gpointer p)
{
	Fixture *f = p;
	guint8 buf[65536];
	ssize_t n;

	while ((n = read(f->proxy.src_end, buf, sizeof(buf))) != 0)
		if (n < 0 && errno != EINTR)
			break;
	return NULL;
}

static MigramMigrationStatus migrate_stalled(Fixture *f, bool return_path,
					     bool postcopy,
					     unsigned int switch_at,
					     GError **error)
{
	MigramMigrationConfig cfg = { .pause_guest = pause_guest,
				      .resume_guest = resume_guest,
				      .return_path = return_path,
				      .postcopy = postcopy,
				      .postcopy_after_passes = switch_at,
				      .io_timeout_ms = 300,
				      .opaque = f };
	MigramLogSource src;
	MigramMigrationStats st;
	MigramMigration *m;
	MigramChannel *ch = migram_channel_new(f->src_fd, true);

	migram_soft_log_source(f->log, &src);
	m = migram_migration_new(f->src, &src, &cfg);
	g_assert_false(migram_migration_run(m, ch, error));
	migram_migration_get_stats(m, &st);
	migram_migration_free(m);
	migram_channel_free(ch);
	close(f->dst_fd);
	return st.status;
}

/* The peer never reads: the socket buffer fills, the write stalls. */
static void test_stall_write(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;

	(void)data;
	g_assert_cmpint(migrate_stalled(f, false, false, 0, &error), ==,
			MIGRAM_MIGRATION_FAILED);
	g_test_message("source: %s", error->message);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_nonnull(strstr(error->message, "stalled"));
	g_assert_nonnull(strstr(error->message, "could not write for 300 ms"));
	g_assert_nonnull(strstr(error->message, "on fd "));
	/* it never paused: nothing to resume */
	g_assert_cmpint(f->pauses, ==, 0);
	g_assert_cmpint(f->resumes, ==, 0);
}

/* The peer reads it all but never answers SHUT (precopy return path). */
static void test_stall_no_shut(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	GThread *t;

	(void)data;
	t = g_thread_new("drain", drain_main, f);
	g_assert_cmpint(migrate_stalled(f, true, false, 0, &error), ==,
			MIGRAM_MIGRATION_FAILED);
	g_test_message("source: %s", error->message);
	g_assert_nonnull(strstr(error->message, "did not confirm"));
	g_assert_nonnull(strstr(error->message, "could not read for 300 ms"));
	g_assert_cmpint(f->pauses, ==, 1);
	g_assert_cmpint(f->resumes, ==, 1);
	shutdown(f->proxy.src_end, SHUT_RDWR);
	g_thread_join(t);
}

/* The same with postcopy advised: its SHUT wait is timed too. */
static void test_stall_no_shut_postcopy(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	GThread *t;

	(void)data;
	t = g_thread_new("drain", drain_main, f);
	g_assert_cmpint(migrate_stalled(f, false, true, 0, &error), ==,
			MIGRAM_MIGRATION_FAILED);
	g_test_message("source: %s", error->message);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_nonnull(strstr(error->message, "no SHUT"));
	g_assert_nonnull(strstr(error->message, "300 ms"));
	g_assert_cmpint(f->resumes, ==, 1);
	shutdown(f->proxy.src_end, SHUT_RDWR);
	g_thread_join(t);
}

/*
 * Hybrid: the switch to postcopy waits for PONG 2 with the guest paused.
 * A peer that never answers it (a black hole, torture seed 83756148) once
 * held the source there forever; now the wait is timed, the migration
 * fails before the destination could run, and the guest resumes.
 */
static void test_stall_no_pong2(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	GThread *t;

	(void)data;
	t = g_thread_new("drain", drain_main, f);
	g_assert_cmpint(migrate_stalled(f, false, true, 1, &error), ==,
			MIGRAM_MIGRATION_FAILED);
	g_test_message("source: %s", error->message);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_nonnull(strstr(error->message, "stalled"));
	g_assert_nonnull(strstr(error->message, "no PONG 2"));
	g_assert_nonnull(strstr(error->message, "300 ms"));
	g_assert_nonnull(strstr(error->message, "keeps the guest"));
	g_assert_cmpint(f->pauses, ==, 1);
	g_assert_cmpint(f->resumes, ==, 1);
	shutdown(f->proxy.src_end, SHUT_RDWR);
	g_thread_join(t);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	g_test_add("/migration/completion-ack/acked", Fixture, NULL,
		   fixture_set_up, test_acked, fixture_tear_down);
	g_test_add("/migration/completion-ack/cut-after-last-byte", Fixture,
		   NULL, fixture_set_up, test_cut_after_last_byte,
		   fixture_tear_down);
	g_test_add("/migration/completion-ack/load-failed", Fixture, NULL,
		   fixture_set_up, test_load_failed, fixture_tear_down);
	g_test_add("/migration/completion-ack/no-return-path", Fixture, NULL,
		   fixture_set_up, test_no_return_path, fixture_tear_down);
	g_test_add("/migration/completion-ack/not-a-socket", Fixture, NULL,
		   fixture_set_up, test_not_a_socket, fixture_tear_down);
	g_test_add("/migration/completion-ack/stall/write", Fixture, NULL,
		   fixture_set_up, test_stall_write, fixture_tear_down);
	g_test_add("/migration/completion-ack/stall/no-shut", Fixture, NULL,
		   fixture_set_up, test_stall_no_shut, fixture_tear_down);
	g_test_add("/migration/completion-ack/stall/no-shut-postcopy", Fixture,
		   NULL, fixture_set_up, test_stall_no_shut_postcopy,
		   fixture_tear_down);
	g_test_add("/migration/completion-ack/stall/no-pong2", Fixture, NULL,
		   fixture_set_up, test_stall_no_pong2, fixture_tear_down);
	return g_test_run();
}
