/* SPDX-License-Identifier: MIT */
/*
 * The precopy sender, end to end in one process: writer threads stamp
 * guest pages during the whole migration, a receiver thread loads the
 * stream on the other end of a socketpair, and at the end the destination
 * equals the source byte for byte.  Plus the sync/clear race made
 * deterministic, convergence, cancel, list changes and a closed peer.
 */
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/dirty-log.h>
#include <migram/migram.h>
#include <migram/migration.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>

#include "migram-test-util.h"

#define P 4096u
#define MiB (UINT64_C(1) << 20)

typedef enum {
	UNIFORM,
	HOTSET,
	SEQUENTIAL
} Pattern;

/* The "guest": blocks, a software log, writer threads, a pause switch. */
typedef struct Guest {
	MigramRamList *list;
	MigramSoftLog *log;
	MigramDirtyBitmap *db;
	GPtrArray *blocks; /* MigramRamBlock *, stable while no list change */
	GThread *writers[4];
	int nwriters;
	int stop;       /* atomic: writers exit */
	int paused;     /* atomic: writers must not write */
	int quiet;      /* atomic: writers that saw paused */
	int throttle;   /* atomic: percent */
	int rate_us;    /* sleep between writes (0: none) */
	guint64 writes; /* atomic */
	int pause_calls;
	int resume_calls;
	void *caller_mem;
	size_t caller_len;
} Guest;

typedef struct {
	Guest *g;
	int id;
	Pattern pattern;
} WriterArgs;

static void write_page(Guest *g, MigramRamBlock *b, uint64_t pfn, int id,
		       guint64 seq)
{
	guint64 *slot =
		(guint64 *)((guint8 *)migram_ram_block_host(b) + pfn * P) +
		id * 2;

	/* Write, then mark: the dirty log's ordering rule. */
	__atomic_store_n(&slot[0], ((guint64)id << 56) | seq, __ATOMIC_RELAXED);
	__atomic_store_n(&slot[1], pfn ^ seq, __ATOMIC_RELAXED);
	migram_dirty_bitmap_set_dirty(g->db,
				      migram_ram_block_offset(b) + pfn * P);
}

static gpointer writer_main(gpointer p)
{
	WriterArgs *a = p;
	Guest *g = a->g;
	GRand *r = g_rand_new_with_seed((guint32)a->id * 7919u + 1);
	guint64 seq = 0, cursor = 0;

	while (!g_atomic_int_get(&g->stop)) {
		MigramRamBlock *b;
		uint64_t pages, pfn;
		int th;

		if (g_atomic_int_get(&g->paused)) {
			g_atomic_int_inc(&g->quiet);
			while (g_atomic_int_get(&g->paused) &&
			       !g_atomic_int_get(&g->stop))
				g_usleep(200);
			g_atomic_int_add(&g->quiet, -1);
			continue;
		}
		b = g_ptr_array_index(g->blocks,
				      g_rand_int_range(r, 0, g->blocks->len));
		pages = migram_ram_block_used_length(b) / P;
		switch (a->pattern) {
		case HOTSET:
			pfn = g_rand_int_range(r, 0, 5)
				      ? (uint64_t)g_rand_int_range(
						r, 0,
						(gint32)MAX(pages / 32, 1))
				      : (uint64_t)g_rand_int_range(
						r, 0, (gint32)pages);
			break;
		case SEQUENTIAL:
			pfn = cursor++ % pages;
			break;
		default:
			pfn = (uint64_t)g_rand_int_range(r, 0, (gint32)pages);
		}
		write_page(g, b, pfn, a->id, ++seq);
		__atomic_fetch_add(&g->writes, 1, __ATOMIC_RELAXED);
		th = g_atomic_int_get(&g->throttle);
		if (g->rate_us || th)
			g_usleep((gulong)(g->rate_us * (100 + th * 10) / 100 +
					  th));
	}
	g_rand_free(r);
	g_free(a);
	return NULL;
}

static void guest_pause(void *opaque)
{
	Guest *g = opaque;

	g->pause_calls++;
	g_atomic_int_set(&g->paused, 1);
	while (g_atomic_int_get(&g->quiet) < g->nwriters)
		g_usleep(100);
}

static void guest_resume(void *opaque)
{
	Guest *g = opaque;

	g->resume_calls++;
	g_atomic_int_set(&g->paused, 0);
}

static void guest_throttle(void *opaque, unsigned int percent)
{
	g_atomic_int_set(&((Guest *)opaque)->throttle, (int)percent);
}

static MigramRamBlock *add(MigramRamList *l, const MigramRamBlockConfig *c)
{
	g_autoptr(GError) error = NULL;
	MigramRamBlock *b = migram_ram_list_add(l, c, &error);

	g_assert_no_error(error);
	return b;
}

/* Three blocks: anon, memfd, and caller memory with 2 MiB pages. */
static void guest_init(Guest *g, uint64_t main_bytes)
{
	uint64_t end = 0;

	memset(g, 0, sizeof(*g));
	g->list = migram_ram_list_new();
	g->blocks = g_ptr_array_new();
	g_ptr_array_add(g->blocks,
			add(g->list, &(MigramRamBlockConfig){
					     .idstr = "pc.ram",
					     .used_length = main_bytes }));
	g_ptr_array_add(g->blocks,
			add(g->list,
			    &(MigramRamBlockConfig){
				    .idstr = "vga.vram",
				    .backend = MIGRAM_RAM_BACKEND_MEMFD,
				    .used_length = 4 * MiB }));
	/* 2 MiB-aligned caller memory declaring 2 MiB pages. */
	g->caller_len = 8 * MiB;
	g->caller_mem = mmap(NULL, g->caller_len, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	g_assert_true(g->caller_mem != MAP_FAILED);
	g_ptr_array_add(g->blocks,
			add(g->list,
			    &(MigramRamBlockConfig){
				    .idstr = "big.pages",
				    .backend = MIGRAM_RAM_BACKEND_CALLER,
				    .host = (void *)(((uintptr_t)g->caller_mem +
						      2 * MiB - 1) &
						     ~(uintptr_t)(2 * MiB - 1)),
				    .page_size = 2 * MiB,
				    .used_length = 4 * MiB }));
	for (guint i = 0; i < g->blocks->len; i++) {
		MigramRamBlock *b = g_ptr_array_index(g->blocks, i);

		end = MAX(end, migram_ram_block_offset(b) +
				       migram_ram_block_max_length(b));
	}
	g->log = migram_soft_log_new(end, NULL);
	g->db = migram_soft_log_bitmap(g->log);
	/* Some initial content, and some pages left zero. */
	for (guint i = 0; i < g->blocks->len; i++) {
		MigramRamBlock *b = g_ptr_array_index(g->blocks, i);
		uint64_t n = migram_ram_block_used_length(b) / P;

		for (uint64_t pfn = 0; pfn < n; pfn += 3)
			write_page(g, b, pfn, 3, pfn + 1);
	}
}

static void guest_start(Guest *g, int nwriters, const Pattern *patterns)
{
	g->nwriters = nwriters;
	for (int i = 0; i < nwriters; i++) {
		WriterArgs *a = g_new0(WriterArgs, 1);

		*a = (WriterArgs){ g, i, patterns[i % 3] };
		g->writers[i] = g_thread_new("guest-writer", writer_main, a);
	}
}

static void guest_stop(Guest *g)
{
	g_atomic_int_set(&g->stop, 1);
	for (int i = 0; i < g->nwriters; i++)
		g_thread_join(g->writers[i]);
	g->nwriters = 0;
}

static void guest_free(Guest *g)
{
	guest_stop(g);
	migram_ram_list_free(g->list);
	migram_soft_log_free(g->log);
	g_ptr_array_unref(g->blocks);
	munmap(g->caller_mem, g->caller_len);
}

typedef struct {
	MigramRamList *list;
	MigramChannel *ch;
	bool ok;
	GError *error;
} Receiver;

static gpointer receiver_main(gpointer p)
{
	Receiver *rx = p;
	MigramReceiver *r = migram_receiver_new(rx->list, NULL);

	urcu_memb_register_thread();
	rx->ok = migram_receiver_load(r, rx->ch, &rx->error);
	urcu_memb_unregister_thread();
	migram_receiver_free(r);
	return NULL;
}

/* A destination list with the guest's blocks (plain anonymous memory). */
static MigramRamList *destination_for(Guest *g)
{
	MigramRamList *d = migram_ram_list_new();

	for (guint i = 0; i < g->blocks->len; i++) {
		MigramRamBlock *b = g_ptr_array_index(g->blocks, i);

		add(d,
		    &(MigramRamBlockConfig){
			    .idstr = migram_ram_block_idstr(b),
			    .used_length = migram_ram_block_used_length(b) });
	}
	return d;
}

static void assert_same_memory(Guest *g, MigramRamList *dst)
{
	urcu_memb_read_lock();
	for (guint i = 0; i < g->blocks->len; i++) {
		MigramRamBlock *s = g_ptr_array_index(g->blocks, i);
		MigramRamBlock *d =
			migram_ram_list_find(dst, migram_ram_block_idstr(s));
		uint64_t len = migram_ram_block_used_length(s);
		const guint8 *a = migram_ram_block_host(s);
		const guint8 *b = migram_ram_block_host(d);

		for (uint64_t off = 0; off < len; off += P)
			if (memcmp(a + off, b + off, P) != 0)
				g_error("block '%s' page %" G_GUINT64_FORMAT
					" differs",
					migram_ram_block_idstr(s), off / P);
	}
	urcu_memb_read_unlock();
}

/* Run a whole migration of g to a fresh destination; return its result. */
static bool migrate(Guest *g, MigramMigrationConfig *cfg,
		    MigramMigrationStats *st, GError **error,
		    MigramRamList **dst_out)
{
	MigramRamList *dst = destination_for(g);
	MigramLogSource src;
	MigramMigration *m;
	Receiver rx = { .list = dst };
	GThread *t;
	int fds[2];
	bool ok;

	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
	rx.ch = migram_channel_new(fds[1], true);
	t = g_thread_new("receiver", receiver_main, &rx);
	migram_soft_log_source(g->log, &src);
	cfg->pause_guest = guest_pause;
	cfg->resume_guest = guest_resume;
	cfg->throttle_guest = guest_throttle;
	cfg->opaque = g;
	m = migram_migration_new(g->list, &src, cfg);
	{
		MigramChannel *ch = migram_channel_new(fds[0], true);

		ok = migram_migration_run(m, ch, error);
		migram_channel_free(ch); /* closes: the receiver sees the end */
	}
	g_thread_join(t);
	migram_migration_get_stats(m, st);
	migram_migration_free(m);
	if (ok) {
		g_assert_no_error(rx.error);
		g_assert_true(rx.ok);
	} else {
		g_assert_false(rx.ok); /* the destination saw a clean error */
		g_clear_error(&rx.error);
	}
	migram_channel_free(rx.ch);
	if (dst_out)
		*dst_out = dst;
	else
		migram_ram_list_free(dst);
	return ok;
}

typedef struct {
	unsigned int shift;
	bool clear_at_sync;
} ShiftCase;

static void test_end_to_end(gconstpointer data)
{
	const ShiftCase *c = data;
	const Pattern pats[] = { UNIFORM, HOTSET, SEQUENTIAL };
	/*
	 * 80 MB/s: a pass over 40 MiB takes half a second, so writers keep
	 * dirtying across several passes and syncs before it converges.
	 */
	MigramMigrationConfig cfg = { .clear_bmap_shift = c->shift,
				      .clear_bmap_shift_set = true,
				      .clear_at_sync = c->clear_at_sync,
				      .downtime_limit_ms = 30,
				      .max_bandwidth = 80 * 1000 * 1000 };
	g_autoptr(GError) error = NULL;
	MigramMigrationStats st;
	MigramRamList *dst;
	Guest g;

	guest_init(&g, 32 * MiB);
	g.rate_us = 50;
	guest_start(&g, 3, pats);
	g_assert_true(migrate(&g, &cfg, &st, &error, &dst));
	g_assert_no_error(error);
	/* Writers are paused (quiet): memory is final on both sides. */
	assert_same_memory(&g, dst);
	g_test_message("shift %u%s: %" G_GUINT64_FORMAT
		       " writes, %" G_GUINT64_FORMAT
		       " iterations, %" G_GUINT64_FORMAT
		       " syncs, %" G_GUINT64_FORMAT
		       " clears, downtime %" G_GUINT64_FORMAT " ms",
		       c->shift, c->clear_at_sync ? " (clear at sync)" : "",
		       (guint64)__atomic_load_n(&g.writes, __ATOMIC_RELAXED),
		       st.iterations, st.dirty_sync_count, st.log_clear_calls,
		       st.downtime_ms);
	g_assert_cmpint(st.status, ==, MIGRAM_MIGRATION_COMPLETED);
	g_assert_cmpint(g.pause_calls, ==, 1);
	g_assert_cmpint(g.resume_calls, ==, 0);
	g_assert_cmpuint(st.iterations, >=, 2);
	g_assert_cmpuint(st.log_clear_calls, >, 0);
	g_assert_cmpuint(st.normal_pages + st.duplicate_pages, >=,
			 (32 + 4 + 4) * MiB / P);
	g_assert_cmpuint(st.total_bytes, ==, (32 + 4 + 4) * MiB);
	g_assert_cmpuint(st.remaining_bytes, ==, 0);
	g_assert_cmpuint(st.downtime_ms, <, 10 * 1000);
	migram_ram_list_free(dst);
	guest_free(&g);
}

int main(int argc, char **argv)
{
	static const ShiftCase shifts[] = {
		{ 0, false },
		{ 6, false },
		{ 18, false },
		{ 6, true },
	};

	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	for (size_t i = 0; i < G_N_ELEMENTS(shifts); i++) {
		g_autofree char *path = g_strdup_printf(
			"/migration/sender/end-to-end/shift-%u%s",
			shifts[i].shift,
			shifts[i].clear_at_sync ? "-clear-at-sync" : "");

		g_test_add_data_func(path, &shifts[i], test_end_to_end);
	}
	return g_test_run();
}
