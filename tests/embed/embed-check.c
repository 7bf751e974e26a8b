/* SPDX-License-Identifier: MIT */
/*
 * What an embedder builds first, compiled against an installed migram with
 * nothing but `pkg-config --cflags --libs migram` (scripts/embed-check.sh,
 * `make embed-check`).  It uses only the public headers and the calls the
 * docs ask of every embedder: register each thread with liburcu, build a
 * RAM list, mark written pages in a software dirty log, migrate over a
 * socketpair to a receiver thread, and check that the destination's bytes
 * equal the source's.  It links only if the .pc file names every library
 * those calls need, and it exits non-zero if the migration does not
 * deliver the memory.
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <glib.h>
#include <urcu/urcu-memb.h>

#include <migram/channel.h>
#include <migram/dirty-bitmap.h>
#include <migram/dirty-log.h>
#include <migram/migram.h>
#include <migram/migration.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>

#define BLOCK_BYTES (4u << 20)
#define PAGE 4096u

typedef struct {
	MigramRamList *list;
	int fd;
	bool ok;
	GError *error;
} Receiver;

/* The destination's thread: registered with RCU, as migram.h requires. */
static gpointer receiver_main(gpointer p)
{
	Receiver *rx = p;
	MigramReceiver *r = migram_receiver_new(rx->list, NULL);
	MigramChannel *ch = migram_channel_new(rx->fd, true);

	urcu_memb_register_thread();
	rx->ok = migram_receiver_load(r, ch, &rx->error);
	urcu_memb_unregister_thread();
	migram_channel_free(ch);
	migram_receiver_free(r);
	return NULL;
}

/* No vCPUs here: the guest is quiet as soon as it is asked to pause. */
static void pause_guest(void *opaque)
{
	(void)opaque;
}

static MigramRamList *list_with_block(GError **error)
{
	MigramRamList *list = migram_ram_list_new();
	const MigramRamBlockConfig config = { .idstr = "pc.ram",
					      .backend =
						      MIGRAM_RAM_BACKEND_ANON,
					      .used_length = BLOCK_BYTES };

	if (!migram_ram_list_add(list, &config, error)) {
		migram_ram_list_free(list);
		return NULL;
	}
	return list;
}

static int fail(const char *what, const GError *error)
{
	fprintf(stderr, "embed-check: %s: %s\n", what,
		error ? error->message : "failed");
	return 1;
}

int main(void)
{
	g_autoptr(GError) error = NULL;
	MigramMigrationConfig cfg = { .pause_guest = pause_guest };
	MigramRamList *src, *dst;
	MigramRamBlock *sb, *db;
	MigramSoftLog *log;
	MigramLogSource source;
	MigramMigration *m;
	MigramChannel *ch;
	Receiver rx = { 0 };
	GThread *t;
	guint8 *host;
	int fds[2];
	bool ok, same;

	urcu_memb_register_thread();
	src = list_with_block(&error);
	dst = src ? list_with_block(&error) : NULL;
	if (!dst)
		return fail("ram list", error);
	log = migram_soft_log_new(BLOCK_BYTES, &error);
	if (!log)
		return fail("dirty log", error);

	/* The guest writes every third page, then marks it, in that order. */
	urcu_memb_read_lock();
	sb = migram_ram_list_find(src, "pc.ram");
	host = migram_ram_block_host(sb);
	for (uint64_t off = 0; off < BLOCK_BYTES; off += 3 * PAGE) {
		memset(host + off, (int)(off / PAGE) | 1, PAGE);
		migram_dirty_bitmap_set_dirty(migram_soft_log_bitmap(log),
					      migram_ram_block_offset(sb) +
						      off);
	}
	urcu_memb_read_unlock();

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
		perror("embed-check: socketpair");
		return 1;
	}
	rx = (Receiver){ dst, fds[1], false, NULL };
	t = g_thread_new("receiver", receiver_main, &rx);
	migram_soft_log_source(log, &source);
	m = migram_migration_new(src, &source, &cfg);
	ch = migram_channel_new(fds[0], true);
	ok = migram_migration_run(m, ch, &error);
	migram_channel_free(ch); /* closes: the receiver sees the end */
	g_thread_join(t);
	migram_migration_free(m);
	if (!ok)
		return fail("migration", error);
	if (!rx.ok)
		return fail("receiver", rx.error);

	urcu_memb_read_lock();
	sb = migram_ram_list_find(src, "pc.ram");
	db = migram_ram_list_find(dst, "pc.ram");
	same = db && memcmp(migram_ram_block_host(sb),
			    migram_ram_block_host(db), BLOCK_BYTES) == 0;
	urcu_memb_read_unlock();
	if (!same)
		return fail("destination differs from the source", NULL);

	migram_soft_log_free(log);
	migram_ram_list_free(dst);
	migram_ram_list_free(src);
	urcu_memb_unregister_thread();
	printf("embed-check: migrated %u KiB, destination equals source\n",
	       BLOCK_BYTES / 1024);
	return 0;
}
