/* SPDX-License-Identifier: MIT */
/*
 * multifd-src: a migram source for a QEMU 7.2 multifd destination
 * (tests/interop).  Block "ram" (QEMU's -machine none -m) holds IMAGE; it
 * connects the main connection to 127.0.0.1:PORT, then N data connections
 * (QEMU 7.2 takes the first connection as main), and migrates live with
 * zero pages on the main stream (MIGRAM_MULTIFD_ZERO_MAIN, QEMU 7.2's
 * form) while a writer thread keeps turning pages of the first MiB zero
 * and back, so that a page sent whole in one pass is a ZERO record in a
 * later one and the reverse.  At the pause the writer stops; the memory
 * then is written to OUT, which QEMU's must equal.
 *
 *   multifd-src PORT N IMAGE OUT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/channel.h>
#include <migram/dirty-bitmap.h>
#include <migram/guest-layout.h>
#include <migram/migram.h>
#include <migram/ramblock.h>
#include <migram/sender.h>
#include <migram/soft-log.h>

#define PAGE 4096u
#define TOGGLED 256u /* pages the writer turns zero and back */

typedef struct {
	guint8 *host;
	MigramDirtyBitmap *db;
	uint64_t ram_offset;
	int paused, stop, quiet; /* atomic */
	guint64 writes;
} Guest;

static gpointer writer_main(gpointer p)
{
	Guest *g = p;
	guint32 k = 0;

	while (!g_atomic_int_get(&g->stop)) {
		guint8 *page = g->host + (uint64_t)(k % TOGGLED) * PAGE;

		if (g_atomic_int_get(&g->paused)) {
			g_atomic_int_set(&g->quiet, 1);
			g_usleep(100);
			continue;
		}
		/* odd rounds zero a page, even ones fill it again */
		if ((k / TOGGLED) % 2)
			memset(page, 0, PAGE);
		else
			memset(page, (int)(k & 0xff) | 1, PAGE);
		migram_dirty_bitmap_set_dirty(
			g->db, g->ram_offset + (uint64_t)(k % TOGGLED) * PAGE);
		g->writes++;
		k++;
		if (k % 16 == 0)
			g_usleep(200);
	}
	return NULL;
}

static void pause_guest(void *o)
{
	Guest *g = o;

	g_atomic_int_set(&g->quiet, 0);
	g_atomic_int_set(&g->paused, 1);
	while (!g_atomic_int_get(&g->quiet))
		g_usleep(100);
}

static void resume_guest(void *o)
{
	g_atomic_int_set(&((Guest *)o)->paused, 0);
}

static int dial(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	for (int i = 0; i < 100; i++) {
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			return fd;
		g_usleep(50 * 1000); /* QEMU may not listen yet */
	}
	perror("multifd-src: connect");
	exit(1);
}

int main(int argc, char **argv)
{
	g_autoptr(GError) error = NULL;
	g_autofree gchar *image = NULL;
	gsize len = 0;
	int n, fd, fds[16];
	MigramMigrationStats st;
	MigramRamList *list;
	MigramRamBlock *b;
	MigramSoftLog *log;
	MigramLogSource src;
	MigramMigration *m;
	MigramChannel *ch;
	Guest g = { 0 };
	GThread *t;
	FILE *f;
	bool ok;

	if (argc != 5 || (n = atoi(argv[2])) < 1 || n > 16)
		return 2;
	if (!g_file_get_contents(argv[3], &image, &len, &error) || len % PAGE ||
	    len < TOGGLED * PAGE) {
		fprintf(stderr, "multifd-src: %s\n",
			error ? error->message : "bad image size");
		return 2;
	}
	urcu_memb_register_thread();
	list = migram_ram_list_new();
	b = migram_ram_list_add(list,
				&(MigramRamBlockConfig){ .idstr = "ram",
							 .used_length = len },
				&error);
	log = b ? migram_soft_log_new(migram_ram_list_ram_space(list), &error)
		: NULL;
	if (!log) {
		fprintf(stderr, "multifd-src: %s\n", error->message);
		return 1;
	}
	g.host = migram_ram_block_host(b);
	memcpy(g.host, image, len);
	g.db = migram_soft_log_bitmap(log);
	g.ram_offset = migram_ram_block_offset(b);
	fd = dial((uint16_t)atoi(argv[1]));
	for (int i = 0; i < n; i++)
		fds[i] = dial((uint16_t)atoi(argv[1]));
	migram_soft_log_source(log, &src);
	m = migram_migration_new(
		list, &src,
		&(MigramMigrationConfig){
			.machine_type = "none",
			.max_bandwidth = 32u << 20, /* several passes */
			.pause_guest = pause_guest,
			.resume_guest = resume_guest,
			.opaque = &g,
			.multifd_channels = (unsigned)n,
			.multifd_fds = fds,
			.multifd_zero_pages = MIGRAM_MULTIFD_ZERO_MAIN });
	t = g_thread_new("writer", writer_main, &g);
	ch = migram_channel_new(fd, true);
	ok = migram_migration_run(m, ch, &error);
	migram_migration_get_stats(m, &st);
	g_atomic_int_set(&g.stop, 1);
	g_thread_join(t);
	fprintf(stderr,
		"multifd-src: %s after %" G_GUINT64_FORMAT
		" passes, %" G_GUINT64_FORMAT " writes; zero pages on the "
		"main stream %" G_GUINT64_FORMAT
		", pages sent whole %" G_GUINT64_FORMAT "\n",
		ok ? "completed" : error->message, st.iterations, g.writes,
		st.duplicate_pages, st.normal_pages);
	migram_migration_free(m);
	migram_channel_free(ch);
	for (int i = 0; i < n; i++)
		close(fds[i]);
	if (ok) {
		/* the memory at the pause: the writer stopped there */
		f = fopen(argv[4], "wb");
		ok = f && fwrite(g.host, 1, len, f) == len;
		if (f)
			fclose(f);
	}
	migram_soft_log_free(log);
	migram_ram_list_free(list);
	return ok ? 0 : 1;
}
