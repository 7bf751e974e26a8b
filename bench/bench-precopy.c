/* SPDX-License-Identifier: MIT */
/*
 * Precopy benchmarks, each against the limit measured in the same run:
 *
 *  1. A full precopy of 4 GiB of non-zero memory from this process to a
 *     child process over loopback TCP (the receiver loads it into a
 *     block), against raw loopback TCP throughput of the same 4 GiB
 *     (1 MiB writes into a 1 MiB read buffer).  Destination memory is
 *     touched once before timing, so first-touch faults are not counted.
 *  2. The zero-page scan of an untouched 4 GiB block (the sender's check
 *     of every page, then a whole migration of that block), against a
 *     plain read of the same memory.
 *  3. One sync of a 1 TiB-equivalent block (2^28 pages) with 1 % of its
 *     pages dirty: the software source's collect plus the OR into bmap.
 *
 * Nothing is asserted on time; figures go to docs/performance.md.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/dirty-log.h>
#include <migram/sender.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>

#include "buffer.h"

#define GiB (UINT64_C(1) << 30)
#define SIZE (4 * GiB)

static double now(void)
{
	return (double)g_get_monotonic_time() / 1e6;
}

static int listen_local(int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(fd, 1) < 0 || getsockname(fd, (struct sockaddr *)&a, &len))
		return -1;
	*port = ntohs(a.sin_port);
	return fd;
}

static int connect_local(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		return -1;
	return fd;
}

/*
 * The destination process: first a raw receive of SIZE bytes, then a
 * migration stream into a prefaulted block.
 */
static int destination(int lfd, int ready)
{
	MigramRamList *list = migram_ram_list_new();
	MigramRamBlock *b;
	guint8 *buf = g_malloc(1 << 20);
	MigramReceiver *r;
	MigramChannel *ch;
	GError *error = NULL;
	uint64_t got = 0;
	int fd;

	/* Registered with RCU already: fork kept the parent's thread state. */
	b = migram_ram_list_add(list,
				&(MigramRamBlockConfig){ .idstr = "pc.ram",
							 .used_length = SIZE },
				NULL);
	memset(migram_ram_block_host(b), 1, SIZE);
	/* Populated: the parent may start its clock now. */
	if (write(ready, "r", 1) != 1)
		return 1;
	close(ready);

	fd = accept(lfd, NULL, NULL);
	while (got < SIZE) {
		ssize_t n = read(fd, buf, 1 << 20);

		if (n <= 0)
			return 1;
		got += (uint64_t)n;
	}
	close(fd);

	fd = accept(lfd, NULL, NULL);
	ch = migram_channel_new(fd, true);
	r = migram_receiver_new(list, NULL);
	if (!migram_receiver_load(r, ch, &error)) {
		fprintf(stderr, "destination: %s\n", error->message);
		return 1;
	}
	migram_receiver_free(r);
	migram_channel_free(ch);
	return 0;
}

static void no_pause(void *opaque)
{
	(void)opaque;
}

/* A migration of list over fd; returns seconds, or -1. */
static double migrate(MigramRamList *list, MigramSoftLog *log, int fd,
		      MigramMigrationStats *st)
{
	MigramLogSource src;
	MigramMigrationConfig cfg = { .pause_guest = no_pause };
	MigramChannel *ch = migram_channel_new(fd, true);
	MigramMigration *m;
	GError *error = NULL;
	double t0 = now(), dt;

	migram_soft_log_source(log, &src);
	m = migram_migration_new(list, &src, &cfg);
	if (!migram_migration_run(m, ch, &error)) {
		fprintf(stderr, "migration: %s\n", error->message);
		return -1;
	}
	dt = now() - t0;
	migram_migration_get_stats(m, st);
	migram_migration_free(m);
	migram_channel_free(ch);
	return dt;
}

static gpointer drain_main(gpointer p)
{
	guint8 buf[65536];

	while (read(GPOINTER_TO_INT(p), buf, sizeof(buf)) > 0)
		;
	return NULL;
}

static void bench_tcp(void)
{
	MigramRamList *list = migram_ram_list_new();
	MigramSoftLog *log;
	MigramRamBlock *b;
	MigramMigrationStats st;
	guint8 *h;
	double t0, raw, mig, alone;
	int port = 0, lfd, fd, status, ready[2];
	char c;
	pid_t pid;

	b = migram_ram_list_add(list,
				&(MigramRamBlockConfig){ .idstr = "pc.ram",
							 .used_length = SIZE },
				NULL);
	h = migram_ram_block_host(b);
	for (uint64_t i = 0; i < SIZE; i += 8)
		*(guint64 *)(h + i) = i * 0x9e3779b97f4a7c15ULL | 1;
	log = migram_soft_log_new(migram_ram_block_offset(b) + SIZE, NULL);

	lfd = listen_local(&port);
	if (pipe(ready) < 0)
		return;
	pid = fork();
	if (pid == 0)
		_exit(destination(lfd, ready[1]));
	close(lfd);
	close(ready[1]);
	if (read(ready[0], &c, 1) != 1)
		return;
	close(ready[0]);

	fd = connect_local(port);
	t0 = now();
	for (uint64_t off = 0; off < SIZE;) {
		ssize_t n = write(fd, h + off, 1 << 20);

		if (n <= 0) {
			fprintf(stderr, "raw TCP: write failed\n");
			return;
		}
		off += (uint64_t)n;
	}
	close(fd);
	raw = SIZE / (now() - t0) / 1e9;

	g_usleep(100 * 1000); /* let the child accept again */
	fd = connect_local(port);
	mig = SIZE / migrate(list, log, fd, &st) / 1e9;
	waitpid(pid, &status, 0);

	/* The sender alone: the same migration into a draining thread. */
	{
		int sp[2];
		GThread *t;
		MigramMigrationStats st2;

		socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
		t = g_thread_new("drain", drain_main, GINT_TO_POINTER(sp[1]));
		alone = SIZE / migrate(list, log, sp[0], &st2) / 1e9;
		g_thread_join(t);
		close(sp[1]);
	}

	printf("4 GiB non-zero precopy over loopback TCP, two processes\n");
	printf("  %-40s %6.2f GB/s\n", "raw loopback TCP, 1 MiB writes (limit)",
	       raw);
	printf("  %-40s %6.2f GB/s  %.2f of raw TCP (dest %s)\n",
	       "migram precopy (stream, pages placed)", mig, mig / raw,
	       WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "ok" : "FAILED");
	printf("  %-40s %6.2f GB/s  (sender alone, into a draining thread)\n",
	       "migram sender, socketpair", alone);
	printf("  %-40s %" G_GUINT64_FORMAT " normal, %" G_GUINT64_FORMAT
	       " zero, %" G_GUINT64_FORMAT " passes\n\n",
	       "pages", st.normal_pages, st.duplicate_pages, st.iterations);
	migram_soft_log_free(log);
	migram_ram_list_free(list);
}

static void bench_zero_scan(void)
{
	MigramRamList *list = migram_ram_list_new();
	MigramRamBlock *b = migram_ram_list_add(list,
						&(MigramRamBlockConfig){
							.idstr = "pc.ram",
							.used_length = SIZE },
						NULL);
	const guint8 *h = migram_ram_block_host(b);
	MigramSoftLog *log =
		migram_soft_log_new(migram_ram_block_offset(b) + SIZE, NULL);
	MigramMigrationStats st;
	volatile unsigned long sink;
	double t0, plain, scan, mig;
	GThread *t;
	int fds[2];

	/* Warm: map the shared zero page everywhere (read faults). */
	for (uint64_t i = 0; i < SIZE; i += 4096)
		sink = h[i];
	t0 = now();
	{
		const unsigned long *w = (const unsigned long *)h;
		unsigned long a0 = 0, a1 = 0, a2 = 0, a3 = 0;

		for (uint64_t i = 0; i < SIZE / sizeof(long); i += 4) {
			a0 |= w[i];
			a1 |= w[i + 1];
			a2 |= w[i + 2];
			a3 |= w[i + 3];
		}
		sink = a0 | a1 | a2 | a3;
	}
	plain = SIZE / (now() - t0) / 1e9;
	t0 = now();
	{
		uint64_t zero = 0;

		for (uint64_t off = 0; off < SIZE; off += 4096)
			zero += migram_buffer_is_zero(h + off, 4096);
		sink = zero;
	}
	scan = SIZE / (now() - t0) / 1e9;
	(void)sink;

	socketpair(AF_UNIX, SOCK_STREAM, 0, fds);
	t = g_thread_new("drain", drain_main, GINT_TO_POINTER(fds[1]));
	mig = SIZE / migrate(list, log, fds[0], &st) / 1e9;
	g_thread_join(t);
	close(fds[1]);

	printf("untouched 4 GiB block: zero-page detection\n");
	printf("  %-40s %6.2f GB/s\n", "plain read of the same memory (limit)",
	       plain);
	printf("  %-40s %6.2f GB/s  %.2f of plain read\n",
	       "zero-page check of every page", scan, scan / plain);
	printf("  %-40s %6.2f GB/s  %.2f of plain read (%" G_GUINT64_FORMAT
	       " zero pages)\n\n",
	       "whole migration of the block", mig, mig / plain,
	       st.duplicate_pages);
	migram_soft_log_free(log);
	migram_ram_list_free(list);
}

static void ignore_page(uint64_t pfn, void *opaque)
{
	(void)pfn;
	(void)opaque;
}

static void bench_sync(void)
{
	const uint64_t pages = UINT64_C(1) << 28;
	MigramRamList *list = migram_ram_list_new();
	MigramRamBlock *b = migram_ram_list_add(
		list,
		&(MigramRamBlockConfig){ .idstr = "huge.ram",
					 .used_length = pages * 4096 },
		NULL);
	MigramSoftLog *log = migram_soft_log_new(
		migram_ram_block_offset(b) + pages * 4096, NULL);
	MigramDirtyBitmap *db = migram_soft_log_bitmap(log);
	unsigned long *synced = migram_bitmap_new(pages);
	MigramLogSource src;
	GRand *r = g_rand_new_with_seed(7);
	uint64_t newly = 0, fresh;
	double t0, t[5];

	migram_soft_log_source(log, &src);
	migram_ram_list_bitmaps_init(list, 18, NULL);
	urcu_memb_read_lock();
	for (int k = 0; k < 5; k++) {
		unsigned long *bmap = migram_ram_block_bmap(b);

		migram_bitmap_clear(bmap, 0, pages);
		migram_bitmap_clear(synced, 0, pages);
		for (uint64_t i = 0; i < pages / 100; i++)
			migram_dirty_bitmap_set_dirty_by_index(
				db, migram_ram_block_offset(b) / 4096 +
					    (uint64_t)g_rand_double_range(
						    r, 0, (double)pages));
		t0 = now();
		src.ops->sync(src.opaque, b, synced, &newly, NULL);
		fresh = migram_bitmap_or_collect(bmap, synced, 0, pages);
		t[k] = now() - t0;
		migram_dirty_bitmap_drain_into(db, ignore_page, NULL);
	}
	urcu_memb_read_unlock();
	for (int i = 1; i < 5; i++)
		for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
			double x = t[j];

			t[j] = t[j - 1];
			t[j - 1] = x;
		}
	printf("sync of a 1 TiB-equivalent block (2^28 pages, 1 %% dirty)\n");
	printf("  %-40s %6.1f ms  (%.2f GB/s of log and bmap scanned, %" G_GUINT64_FORMAT
	       " pages found)\n",
	       "collect + OR into bmap, median of 5", t[2] * 1e3,
	       2.0 * (double)(pages / 8) / t[2] / 1e9, fresh);
	g_rand_free(r);
	migram_bitmap_free(synced);
	migram_soft_log_free(log);
	migram_ram_list_free(list);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	urcu_memb_register_thread();
	bench_tcp();
	bench_zero_scan();
	bench_sync();
	return 0;
}
