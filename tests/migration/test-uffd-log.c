/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd write-protect source: its manual-protect semantics on
 * plain process memory (the kernel marks the writes, nobody else), and a
 * whole migration of memory that writer threads keep writing.
 */
#include <string.h>
#include <sys/socket.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/dirty-log-uffd.h>
#include <migram/migram.h>
#include <migram/migration.h>

#include "migram-test-util.h"

#define P 4096u
#define MiB (UINT64_C(1) << 20)

/* NULL (and the test skipped) when the kernel cannot do it here. */
static MigramUffdLog *open_log(void)
{
	g_autoptr(GError) error = NULL;
	MigramUffdLog *log = migram_uffd_log_new(&error);

	if (!log) {
		g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED);
		g_test_skip(error->message);
	}
	return log;
}

static MigramRamBlock *anon_block(MigramRamList *list, const char *id,
				  uint64_t bytes)
{
	return migram_ram_list_add(list,
				   &(MigramRamBlockConfig){
					   .idstr = id, .used_length = bytes },
				   NULL);
}

static void test_semantics(void)
{
	g_autoptr(MigramUffdLog) log = open_log();
	MigramRamList *list;
	MigramRamBlock *b;
	MigramLogSource src;
	unsigned long *c;
	volatile guint8 *h;
	uint64_t newly = 0;
	g_autoptr(GError) error = NULL;

	if (!log)
		return;
	list = migram_ram_list_new();
	b = anon_block(list, "pc.ram", 1 * MiB);
	h = migram_ram_block_host(b);
	h[1 * P] = 1; /* populated before tracking starts */
	c = migram_bitmap_new(256);
	migram_uffd_log_source(log, &src);
	g_assert_true(src.ops->start(src.opaque, b, &error));
	g_assert_no_error(error);

	/* Nothing written since start (populated and unpopulated alike). */
	g_assert_true(src.ops->sync(src.opaque, b, c, &newly, &error));
	g_assert_cmpuint(newly, ==, 0);

	h[3 * P + 9] = 1; /* a populated-later page */
	h[1 * P] = 2;     /* a page populated before start */
	h[70 * P] = 3;
	g_assert_true(src.ops->sync(src.opaque, b, c, &newly, &error));
	migram_test_assert_ranges(c, 256, "1,3,70");
	g_assert_cmpuint(newly, ==, 3);
	/* sync did not re-arm: a second sync still sees them, none new */
	g_assert_true(src.ops->sync(src.opaque, b, c, &newly, &error));
	g_assert_cmpuint(newly, ==, 0);

	/* After the sync: page 5 written for the first time, 3 again. */
	h[5 * P] = 4;
	h[3 * P] = 5;
	/* Clear chunk [0, 64) with the collected mask {1, 3}. */
	g_assert_true(src.ops->clear(src.opaque, b, 0, 64, c, &error));
	migram_bitmap_clear(c, 0, 256);
	g_assert_true(src.ops->sync(src.opaque, b, c, &newly, &error));
	/* 1 and 3 re-armed; 5 (not in the mask) and 70 (outside) kept. */
	migram_test_assert_ranges(c, 256, "5,70");
	/* A re-armed page written again is seen again. */
	h[1 * P] = 6;
	g_assert_true(src.ops->sync(src.opaque, b, c, &newly, &error));
	migram_test_assert_ranges(c, 256, "1,5,70");
	src.ops->stop(src.opaque, b);
	migram_bitmap_free(c);
	migram_ram_list_free(list);
}

typedef struct {
	guint8 *host;
	uint64_t pages;
	int stop, paused, quiet;
	int nwriters;
	guint32 seed;
} Guest;

static gpointer writer_main(gpointer p)
{
	Guest *g = p;
	GRand *r = g_rand_new_with_seed(g_atomic_int_add(&g->seed, 1));
	guint64 seq = 0;

	while (!g_atomic_int_get(&g->stop)) {
		uint64_t pfn;

		if (g_atomic_int_get(&g->paused)) {
			g_atomic_int_inc(&g->quiet);
			while (g_atomic_int_get(&g->paused) &&
			       !g_atomic_int_get(&g->stop))
				g_usleep(200);
			continue;
		}
		pfn = (uint64_t)g_rand_int_range(r, 0, (gint32)g->pages);
		/* No marking at all: the kernel sees the write. */
		__atomic_store_n((guint64 *)(g->host + pfn * P) + 1, ++seq,
				 __ATOMIC_RELAXED);
		g_usleep(20);
	}
	g_rand_free(r);
	return NULL;
}

static void guest_pause(void *opaque)
{
	Guest *g = opaque;

	g_atomic_int_set(&g->paused, 1);
	while (g_atomic_int_get(&g->quiet) < g->nwriters)
		g_usleep(100);
}

static void test_migration(void)
{
	g_autoptr(MigramUffdLog) log = open_log();
	MigramRamList *src, *dst;
	MigramRamBlock *b, *d;
	MigramLogSource source;
	MigramMigration *m;
	MigramMigrationStats st;
	Guest g = { 0 };
	MigramTestReceiver *rx;
	GThread *w[2];
	g_autoptr(GError) error = NULL;
	int fds[2];

	if (!log)
		return;
	src = migram_ram_list_new();
	dst = migram_ram_list_new();
	b = anon_block(src, "pc.ram", 16 * MiB);
	g = (Guest){ .host = migram_ram_block_host(b),
		     .pages = 16 * MiB / P,
		     .nwriters = 2 };
	for (uint64_t p = 0; p < g.pages; p += 2)
		memset(g.host + p * P, (int)(p % 200) + 1, P);
	for (int i = 0; i < 2; i++)
		w[i] = g_thread_new("uffd-writer", writer_main, &g);
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
	rx = migram_test_receiver_start(dst, fds[1], TRUE);
	migram_uffd_log_source(log, &source);
	m = migram_migration_new(src, &source,
				 &(MigramMigrationConfig){
					 .pause_guest = guest_pause,
					 .opaque = &g,
					 .clear_bmap_shift = 6,
					 .clear_bmap_shift_set = true,
					 .max_bandwidth = 40 * 1000 * 1000 });
	{
		MigramChannel *ch = migram_channel_new(fds[0], true);

		g_assert_true(migram_migration_run(m, ch, &error));
		g_assert_no_error(error);
		migram_channel_free(ch);
	}
	g_assert_true(migram_test_receiver_join(rx, NULL));
	migram_migration_get_stats(m, &st);
	g_test_message("%" G_GUINT64_FORMAT " passes, %" G_GUINT64_FORMAT
		       " clear calls",
		       st.iterations, st.log_clear_calls);
	g_assert_cmpuint(st.iterations, >=, 1);
	urcu_memb_read_lock();
	d = migram_ram_list_find(dst, "pc.ram");
	g_assert_cmpmem(migram_ram_block_host(d), 16 * MiB, g.host, 16 * MiB);
	urcu_memb_read_unlock();
	g_atomic_int_set(&g.stop, 1);
	for (int i = 0; i < 2; i++)
		g_thread_join(w[i]);
	migram_migration_free(m);
	migram_ram_list_free(src);
	migram_ram_list_free(dst);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	g_test_add_func("/migration/uffd-log/semantics", test_semantics);
	g_test_add_func("/migration/uffd-log/migration", test_migration);
	return g_test_run();
}
