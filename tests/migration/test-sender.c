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
#include <migram/sender.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>

#include "migram-test-util.h"
#include "stream-internal.h" /* migram_channel_rate_slices */

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
	MigramChannel *ch;     /* the source's channel while migrate() runs */
	guint64 sent_at_pause; /* its bytes sent when the guest paused */
	void *caller_mem;
	size_t caller_len;
	unsigned int channels; /* data channels (multifd), 0: none */
	bool break_channel;    /* the destination's last one is shut down */
	uint64_t rate_slices;  /* the main channel's, when migrate() ended */
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
		/*
		 * A throttled vCPU spends most of its time asleep: the
		 * pause per write grows with the square of the throttle
		 * (4 ms at 20 %), so a throttle measurably slows the guest.
		 */
		th = g_atomic_int_get(&g->throttle);
		if (g->rate_us || th)
			g_usleep((gulong)(g->rate_us + th * th * 10));
	}
	g_rand_free(r);
	g_free(a);
	return NULL;
}

static void guest_pause(void *opaque)
{
	Guest *g = opaque;

	g->pause_calls++;
	if (g->ch)
		g->sent_at_pause = migram_channel_bytes_sent(g->ch);
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
	/* A resizeable block no writer touches: hot-plug tests change it. */
	add(g->list, &(MigramRamBlockConfig){ .idstr = "spare.ram",
					      .used_length = 256 * 1024,
					      .max_length = 1 * MiB });
	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next(g->list, NULL); b;
	     b = migram_ram_list_next(g->list, b))
		end = MAX(end, migram_ram_block_offset(b) +
				       migram_ram_block_max_length(b));
	urcu_memb_read_unlock();
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

/* A destination list with the source's blocks (plain anonymous memory). */
static MigramRamList *destination_for(Guest *g)
{
	MigramRamList *d = migram_ram_list_new();

	urcu_memb_read_lock();
	for (MigramRamBlock *b = migram_ram_list_next(g->list, NULL); b;
	     b = migram_ram_list_next(g->list, b))
		add(d, &(MigramRamBlockConfig){
			       .idstr = migram_ram_block_idstr(b),
			       .used_length = migram_ram_block_used_length(b),
			       .max_length = migram_ram_block_max_length(b) });
	urcu_memb_read_unlock();
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
	MigramTestReceiver *rx;
	g_autoptr(GError) rx_error = NULL;
	int fds[2];
	bool ok;

	int sfd[4], rfd[4];

	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
	for (unsigned int i = 0; i < g->channels; i++) {
		int sv[2];

		g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
		sfd[i] = sv[0];
		rfd[i] = sv[1];
	}
	if (g->break_channel)
		shutdown(rfd[g->channels - 1], SHUT_RDWR);
	cfg->multifd_channels = g->channels;
	cfg->multifd_fds = g->channels ? sfd : NULL;
	rx = g->channels ? migram_test_receiver_start_multifd(dst, fds[1],
							      g->channels, rfd)
			 : migram_test_receiver_start(dst, fds[1], FALSE);
	migram_soft_log_source(g->log, &src);
	cfg->pause_guest = guest_pause;
	cfg->resume_guest = guest_resume;
	cfg->throttle_guest = guest_throttle;
	cfg->opaque = g;
	m = migram_migration_new(g->list, &src, cfg);
	{
		MigramChannel *ch = migram_channel_new(fds[0], true);

		g->ch = ch;
		ok = migram_migration_run(m, ch, error);
		g->rate_slices = migram_channel_rate_slices(ch);
		g->ch = NULL;
		migram_channel_free(ch); /* closes: the receiver sees the end */
	}
	/* On failure the destination must have seen a clean error too. */
	g_assert_cmpint(migram_test_receiver_join(rx, &rx_error), ==, ok);
	if (ok)
		g_assert_no_error(rx_error);
	for (unsigned int i = 0; i < g->channels; i++) {
		close(sfd[i]);
		close(rfd[i]);
	}
	migram_migration_get_stats(m, st);
	migram_migration_free(m);
	if (dst_out)
		*dst_out = dst;
	else
		migram_ram_list_free(dst);
	return ok;
}

typedef struct {
	unsigned int shift;
	bool clear_at_sync;
	unsigned int channels; /* data channels (multifd) */
	bool zstd;             /* their payloads compressed */
	bool zero_main;        /* zero pages on the main stream (QEMU 7.2) */
} ShiftCase;

static void test_end_to_end(gconstpointer data)
{
	const ShiftCase *c = data;
	const Pattern pats[] = { UNIFORM, HOTSET, SEQUENTIAL };
	/*
	 * 80 MB/s: a pass over 40 MiB takes half a second, so writers keep
	 * dirtying across syncs (pass ends and mid-pass) before it
	 * converges.
	 */
	MigramMigrationConfig cfg = {
		.clear_bmap_shift = c->shift,
		.clear_bmap_shift_set = true,
		.clear_at_sync = c->clear_at_sync,
		.downtime_limit_ms = 30,
		.max_bandwidth = 80 * 1000 * 1000,
		.multifd_compression = c->zstd ? MIGRAM_MULTIFD_COMPRESSION_ZSTD
					       : 0,
		.multifd_zero_pages = c->zero_main ? MIGRAM_MULTIFD_ZERO_MAIN
						   : MIGRAM_MULTIFD_ZERO_LISTED
	};
	g_autoptr(GError) error = NULL;
	MigramMigrationStats st;
	MigramRamList *dst;
	Guest g;

	guest_init(&g, 32 * MiB);
	g.rate_us = 50;
	g.channels = c->channels;
	guest_start(&g, 3, pats);
	g_assert_true(migrate(&g, &cfg, &st, &error, &dst));
	g_assert_no_error(error);
	/* Writers are paused (quiet): memory is final on both sides. */
	assert_same_memory(&g, dst);
	g_test_message("shift %u%s: %" G_GUINT64_FORMAT
		       " writes, %" G_GUINT64_FORMAT
		       " iterations, %" G_GUINT64_FORMAT
		       " syncs, %" G_GUINT64_FORMAT
		       " clears, downtime %" G_GUINT64_FORMAT
		       " ms, %" G_GUINT64_FORMAT " bytes sent paused",
		       c->shift, c->clear_at_sync ? " (clear at sync)" : "",
		       (guint64)__atomic_load_n(&g.writes, __ATOMIC_RELAXED),
		       st.iterations, st.dirty_sync_count, st.log_clear_calls,
		       st.downtime_ms, st.transferred_bytes - g.sent_at_pause);
	g_assert_cmpint(st.status, ==, MIGRAM_MIGRATION_COMPLETED);
	g_assert_cmpint(g.pause_calls, ==, 1);
	g_assert_cmpint(g.resume_calls, ==, 0);
	/* setup's sync, at least one while the writers ran (a pass's end
	 * or mid-pass, once the remainder fit), and the final one */
	g_assert_cmpuint(st.dirty_sync_count, >=, 3);
	g_assert_cmpuint(st.log_clear_calls, >, 0);
	g_assert_cmpuint(st.normal_pages + st.duplicate_pages, >=,
			 ((32 + 4 + 4) * MiB + 256 * 1024) / P);
	g_assert_cmpuint(st.total_bytes, ==, (32 + 4 + 4) * MiB + 256 * 1024);
	g_assert_cmpuint(st.remaining_bytes, ==, 0);
	/*
	 * It converged before pausing: what went out while the guest was
	 * paused (the channel's own count) is the dirty remainder, far less
	 * than the RAM that a pause with nothing converged would resend.
	 */
	/* (the guest_pause count is the main channel's alone: not with
	 * data channels) */
	if (!c->channels)
		g_assert_cmpuint(st.transferred_bytes - g.sent_at_pause, <,
				 st.total_bytes / 2);
	migram_ram_list_free(dst);
	guest_free(&g);
}

/* The software source alone: sync reads, clear re-arms only the mask. */
static void test_soft_log_semantics(void)
{
	MigramRamList *list = migram_ram_list_new();
	MigramRamBlock *b =
		add(list, &(MigramRamBlockConfig){ .idstr = "pc.ram",
						   .used_length = 1 * MiB });
	g_autoptr(MigramSoftLog) log = migram_soft_log_new(1 * MiB, NULL);
	MigramDirtyBitmap *db = migram_soft_log_bitmap(log);
	unsigned long *collected = migram_bitmap_new(256);
	MigramLogSource src;
	uint64_t newly = 0;

	migram_soft_log_source(log, &src);
	g_assert_true(src.ops->start(src.opaque, b, NULL));
	migram_dirty_bitmap_set_dirty_by_index(db, 3);
	migram_dirty_bitmap_set_dirty_by_index(db, 70);
	g_assert_true(src.ops->sync(src.opaque, b, collected, &newly, NULL));
	g_assert_cmpuint(newly, ==, 2);
	migram_test_assert_ranges(collected, 256, "3,70");
	/* sync did not re-arm: the marks are still there */
	g_assert_true(migram_dirty_bitmap_is_dirty_by_index(db, 3));
	/* page 5 is written after the sync, page 3 again */
	migram_dirty_bitmap_set_dirty_by_index(db, 5);
	migram_dirty_bitmap_set_dirty_by_index(db, 3);
	g_assert_true(src.ops->clear(src.opaque, b, 0, 64, collected, NULL));
	/* 3 re-armed (cleared), 5 not in the mask keeps its mark, 70 is
	 * outside the cleared range */
	g_assert_false(migram_dirty_bitmap_is_dirty_by_index(db, 3));
	g_assert_true(migram_dirty_bitmap_is_dirty_by_index(db, 5));
	g_assert_true(migram_dirty_bitmap_is_dirty_by_index(db, 70));
	migram_bitmap_clear(collected, 0, 256);
	g_assert_true(src.ops->sync(src.opaque, b, collected, &newly, NULL));
	migram_test_assert_ranges(collected, 256, "5,70");
	src.ops->stop(src.opaque, b);
	migram_bitmap_free(collected);
	migram_ram_list_free(list);
}

/*
 * The sync / owed-clear race, made deterministic: a source wrapping the
 * software one performs guest writes at the exact moment of the first
 * chunk clear, i.e. after the sync collected the chunk and before the
 * sender reads any page of it:
 *   - page A was clean at the sync and is written now: it is not in the
 *     mask, keeps its mark, and must be sent again after the next sync;
 *   - page B was dirty at the sync and is written again now: the sender
 *     reads it after the clear, so the new content goes out.
 */
typedef struct {
	MigramLogSource inner;
	Guest *g;
	MigramRamBlock *block;
	uint64_t page_a, page_b;
	int clears;
	bool injected;
} RaceSource;

static bool race_start(void *o, MigramRamBlock *b, GError **e)
{
	RaceSource *r = o;

	return r->inner.ops->start(r->inner.opaque, b, e);
}

static bool race_sync(void *o, MigramRamBlock *b, unsigned long *c, uint64_t *n,
		      GError **e)
{
	RaceSource *r = o;

	return r->inner.ops->sync(r->inner.opaque, b, c, n, e);
}

static bool race_clear(void *o, MigramRamBlock *b, uint64_t first, uint64_t n,
		       const unsigned long *mask, GError **e)
{
	RaceSource *r = o;

	r->clears++;
	if (!r->injected && b == r->block && r->page_a >= first &&
	    r->page_a < first + n) {
		r->injected = true;
		g_assert_false(migram_bitmap_test_bit(mask, r->page_a));
		g_assert_true(migram_bitmap_test_bit(mask, r->page_b));
		write_page(r->g, b, r->page_a, 1, 0xa11ce);
		write_page(r->g, b, r->page_b, 1, 0xb0b);
	}
	return r->inner.ops->clear(r->inner.opaque, b, first, n, mask, e);
}

static void race_stop(void *o, MigramRamBlock *b)
{
	RaceSource *r = o;

	r->inner.ops->stop(r->inner.opaque, b);
}

static const MigramLogSourceOps race_ops = {
	"race", race_start, race_sync, race_clear, race_stop,
};

static void test_sync_clear_race(void)
{
	Guest g;
	RaceSource rs = { 0 };
	MigramLogSource src = { &race_ops, &rs };
	MigramMigrationConfig cfg = { .clear_bmap_shift = 6,
				      .clear_bmap_shift_set = true,
				      .pause_guest = guest_pause,
				      .opaque = &g };
	MigramRamList *dst;
	MigramTestReceiver *rx;
	MigramMigration *m;
	g_autoptr(GError) error = NULL;
	int fds[2];

	guest_init(&g, 1 * MiB);
	migram_soft_log_source(g.log, &rs.inner);
	rs.g = &g;
	rs.block = g_ptr_array_index(g.blocks, 0);
	/* Dirty B before the migration; A stays clean until the clear. */
	rs.page_a = 10;
	rs.page_b = 11;
	write_page(&g, rs.block, rs.page_b, 2, 1);
	dst = destination_for(&g);
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
	rx = migram_test_receiver_start(dst, fds[1], FALSE);
	m = migram_migration_new(g.list, &src, &cfg);
	{
		MigramChannel *ch = migram_channel_new(fds[0], true);

		g_assert_true(migram_migration_run(m, ch, &error));
		g_assert_no_error(error);
		migram_channel_free(ch);
	}
	g_assert_true(migram_test_receiver_join(rx, NULL));
	g_assert_true(rs.injected);
	/* Both writes reached the destination. */
	assert_same_memory(&g, dst);
	migram_migration_free(m);
	migram_ram_list_free(dst);
	guest_free(&g);
}

/* A dirty rate above the bandwidth: refused cleanly, guest not paused. */
static void test_does_not_converge(void)
{
	const Pattern pats[] = { UNIFORM, UNIFORM, UNIFORM };
	MigramMigrationConfig cfg = { .max_bandwidth = 20 * 1000 * 1000,
				      .stall_syncs = 3,
				      .downtime_limit_ms = 10,
				      .max_time_ms = 60 * 1000 };
	g_autoptr(GError) error = NULL;
	MigramMigrationStats st;
	Guest g;

	guest_init(&g, 1 * MiB);
	g.rate_us = 0;
	guest_start(&g, 2, pats);
	g_assert_false(migrate(&g, &cfg, &st, &error, NULL));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_CONVERGED);
	g_test_message("%s", error->message);
	g_assert_cmpint(g.pause_calls, ==, 0);
	g_assert_true(st.not_converging);
	g_assert_cmpint(st.status, ==, MIGRAM_MIGRATION_FAILED);
	/* It gave up on the stall rule, not on max_time_ms. */
	g_assert_nonnull(strstr(error->message, "syncs without progress"));
	g_assert_cmpuint(st.dirty_sync_count, >=, cfg.stall_syncs);
	guest_free(&g);
}

/* The same guest converges once auto-converge throttles it. */
static void test_auto_converge(void)
{
	const Pattern pats[] = { UNIFORM, UNIFORM, UNIFORM };
	/*
	 * Unthrottled, two writers re-dirty all 9 MiB every pass over a
	 * 20 MB/s link; throttled, they dirty a few hundred pages a second,
	 * which converges.
	 */
	MigramMigrationConfig cfg = { .max_bandwidth = 20 * 1000 * 1000,
				      .stall_syncs = 2,
				      .auto_converge = true,
				      .downtime_limit_ms = 50,
				      .max_time_ms = 120 * 1000 };
	g_autoptr(GError) error = NULL;
	MigramMigrationStats st;
	MigramRamList *dst;
	Guest g;

	guest_init(&g, 1 * MiB);
	g.rate_us = 0;
	guest_start(&g, 2, pats);
	g_assert_true(migrate(&g, &cfg, &st, &error, &dst));
	g_assert_no_error(error);
	assert_same_memory(&g, dst);
	g_test_message("converged at %u %% throttle after %" G_GUINT64_FORMAT
		       " iterations, %" G_GUINT64_FORMAT
		       " writes, %" G_GUINT64_FORMAT " ms",
		       st.throttle_percent, st.iterations,
		       (guint64)__atomic_load_n(&g.writes, __ATOMIC_RELAXED),
		       st.total_time_ms);
	g_assert_cmpuint(st.throttle_percent, >=, 20);
	/* Lifted when the migration ended. */
	g_assert_cmpint(g_atomic_int_get(&g.throttle), ==, 0);
	migram_ram_list_free(dst);
	guest_free(&g);
}

typedef struct {
	Guest *g;
	int what; /* 0 cancel, 1 add, 2 remove, 3 resize a block */
	MigramMigration *m;
	MigramChannel *ch;
	guint64 sent_at_disturb; /* ch's bytes sent right after the change */
} Disturb;

static gpointer disturb_main(gpointer p)
{
	Disturb *d = p;
	MigramMigrationStats st;

	do {
		g_usleep(20 * 1000);
		migram_migration_get_stats(d->m, &st);
	} while (st.status == MIGRAM_MIGRATION_SETUP);
	if (d->what == 0) {
		migram_migration_cancel(d->m);
	} else if (d->what == 1) {
		migram_ram_list_add(d->g->list,
				    &(MigramRamBlockConfig){
					    .idstr = "hotplug.ram",
					    .used_length = 1 * MiB },
				    NULL);
	} else if (d->what == 2) {
		migram_ram_list_remove(d->g->list, "spare.ram", NULL);
	} else {
		migram_ram_list_resize(d->g->list, "spare.ram", 512 * 1024,
				       NULL);
	}
	d->sent_at_disturb = migram_channel_bytes_sent(d->ch);
	return NULL;
}

static void disturbed(int what, int code, const char *needle)
{
	const Pattern pats[] = { HOTSET };
	MigramMigrationConfig cfg = { .max_bandwidth = 20 * 1000 * 1000,
				      .pause_guest = guest_pause,
				      .resume_guest = guest_resume };
	g_autoptr(GError) error = NULL;
	MigramLogSource src;
	Disturb d;
	MigramTestReceiver *rx;
	g_autoptr(GError) rx_error = NULL;
	GThread *dt;
	MigramMigrationStats st;
	MigramRamList *dst;
	int fds[2];
	Guest g;

	guest_init(&g, 32 * MiB);
	g.rate_us = 100;
	guest_start(&g, 1, pats);
	cfg.opaque = &g;
	dst = destination_for(&g);
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
	rx = migram_test_receiver_start(dst, fds[1], FALSE);
	migram_soft_log_source(g.log, &src);
	d = (Disturb){ &g, what, migram_migration_new(g.list, &src, &cfg),
		       migram_channel_new(fds[0], true), 0 };
	dt = g_thread_new("disturb", disturb_main, &d);
	g_assert_false(migram_migration_run(d.m, d.ch, &error));
	g_thread_join(dt);
	migram_migration_get_stats(d.m, &st);
	migram_channel_free(d.ch);
	g_assert_false(migram_test_receiver_join(rx, &rx_error));
	g_assert_nonnull(rx_error);
	g_assert_error(error, MIGRAM_ERROR, code);
	if (!strstr(error->message, needle))
		g_error("\"%s\" lacks \"%s\"", error->message, needle);
	/*
	 * Promptly: the sender checks every few pages, so after the change
	 * it sent at most a batch or two (the channel's own count), far less
	 * than the rest of its first pass.  Cleanly: the destination saw an
	 * error, the guest ran on, the source's migration bitmaps are gone.
	 */
	g_test_message("%" G_GUINT64_FORMAT " bytes sent after the change",
		       st.transferred_bytes - d.sent_at_disturb);
	g_assert_cmpuint(st.transferred_bytes - d.sent_at_disturb, <,
			 st.total_bytes / 4);
	g_assert_cmpint(g.pause_calls, ==, 0);
	urcu_memb_read_lock();
	g_assert_null(migram_ram_block_bmap(g_ptr_array_index(g.blocks, 0)));
	urcu_memb_read_unlock();
	migram_migration_free(d.m);
	migram_ram_list_free(dst);
	guest_free(&g);
}

static void test_cancel(void)
{
	disturbed(0, MIGRAM_ERROR_CANCELLED, "cancelled");
}

static void test_block_added(void)
{
	disturbed(1, MIGRAM_ERROR_INVALID,
		  "ramblock 'hotplug.ram' changed during migration");
}

static void test_block_removed(void)
{
	disturbed(2, MIGRAM_ERROR_INVALID,
		  "ramblock 'spare.ram' changed during migration");
}

static void test_block_resized(void)
{
	disturbed(3, MIGRAM_ERROR_INVALID,
		  "ramblock 'spare.ram' changed during migration");
}

/* The destination goes away mid-stream: an I/O error, not a hang. */
static void test_destination_closes(void)
{
	MigramMigrationConfig cfg = { .pause_guest = guest_pause,
				      .max_bandwidth = 50 * 1000 * 1000 };
	g_autoptr(GError) error = NULL;
	MigramLogSource src;
	MigramMigration *m;
	MigramChannel *ch;
	int fds[2];
	Guest g;

	guest_init(&g, 64 * MiB);
	cfg.opaque = &g;
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
	close(fds[1]);
	migram_soft_log_source(g.log, &src);
	m = migram_migration_new(g.list, &src, &cfg);
	ch = migram_channel_new(fds[0], true);
	g_assert_false(migram_migration_run(m, ch, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_cmpint(g.pause_calls, ==, 0);
	migram_channel_free(ch);
	migram_migration_free(m);
	guest_free(&g);
}

/*
 * Shift 18 over a 1 GiB block: one chunk, so at most one clear call per
 * pass for it (plus the three small blocks' one chunk each).  A count, not
 * a time.
 */
static void test_clear_calls_per_chunk(void)
{
	MigramMigrationConfig cfg = { .clear_bmap_shift = 18,
				      .clear_bmap_shift_set = true };
	g_autoptr(GError) error = NULL;
	MigramMigrationStats st;
	MigramRamList *dst;
	Guest g;

	guest_init(&g, 1024 * MiB);
	g_assert_true(migrate(&g, &cfg, &st, &error, &dst));
	g_assert_no_error(error);
	g_test_message("%" G_GUINT64_FORMAT " passes, %" G_GUINT64_FORMAT
		       " clear calls",
		       st.iterations, st.log_clear_calls);
	g_assert_cmpuint(st.log_clear_calls, >, 0);
	g_assert_cmpuint(st.log_clear_calls, <=, 4 * (st.iterations + 1));
	assert_same_memory(&g, dst);
	migram_ram_list_free(dst);
	guest_free(&g);
}

static void test_stats_json(void)
{
	MigramMigrationStats st = { .status = MIGRAM_MIGRATION_ACTIVE,
				    .total_bytes = 42,
				    .mbps = 1.5 };
	g_autofree char *j = migram_migration_stats_to_json(&st);

	g_assert_nonnull(strstr(j, "\"status\": \"active\""));
	g_assert_nonnull(strstr(j, "\"total\": 42"));
	g_assert_nonnull(strstr(j, "\"mbps\": 1.500"));
	g_assert_nonnull(strstr(j, "\"log_clear_calls\": 0"));
	g_assert_cmpstr(migram_migration_status_name(
				MIGRAM_MIGRATION_CANCELLED),
			==, "cancelled");
}

/*
 * The downtime's parts add up to it, and the live phase's log calls are
 * accounted: a run of a block that a source keeps dirty.
 */
static void test_downtime_breakdown(void)
{
	const Pattern pats[] = { UNIFORM, HOTSET };
	MigramMigrationConfig cfg = { .downtime_limit_ms = 30,
				      .max_bandwidth = 80 * 1000 * 1000 };
	g_autoptr(GError) error = NULL;
	MigramMigrationStats st;
	uint64_t parts;
	Guest g;

	guest_init(&g, 16 * MiB);
	g.rate_us = 50;
	guest_start(&g, 2, pats);
	g_assert_true(migrate(&g, &cfg, &st, &error, NULL));
	g_assert_no_error(error);
	guest_free(&g);
	g_assert_cmpint(st.status, ==, MIGRAM_MIGRATION_COMPLETED);
	parts = st.downtime_pause_us + st.downtime_sync_us +
		st.downtime_pages_us + st.downtime_device_us;
	/* downtime_ms is the same span, truncated to ms */
	g_assert_cmpuint(parts / 1000, ==, st.downtime_ms);
	g_assert_cmpuint(st.downtime_pages_us, >, 0);
	g_assert_cmpuint(st.log_sync_us, >, 0);
	g_assert_cmpuint(st.log_clear_us, >, 0);
}

/* One data channel is dead from the start: the migration fails cleanly,
 * naming the channel, and the guest is never paused. */
static void test_multifd_channel_dies(void)
{
	const Pattern pats[] = { UNIFORM };
	MigramMigrationConfig cfg = { .downtime_limit_ms = 30 };
	g_autoptr(GError) error = NULL;
	MigramMigrationStats st;
	Guest g;

	guest_init(&g, 16 * MiB);
	g.rate_us = 50;
	g.channels = 3;
	g.break_channel = true;
	guest_start(&g, 1, pats);
	g_assert_false(migrate(&g, &cfg, &st, &error, NULL));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_nonnull(strstr(error->message, "data channel 2"));
	g_assert_cmpint(st.status, ==, MIGRAM_MIGRATION_FAILED);
	g_assert_cmpint(g.pause_calls, ==, 0);
	guest_free(&g);
}

/*
 * max_bandwidth is the migration's total over the main stream and the data
 * channels: the test guest (28 MiB, a third of its pages stamped) through
 * 2 or 4 data channels at 10 MB/s (1 MB a 100 ms slice) moves the main
 * channel's limiter on at least once per 1 MB the migration wrote.  Counted
 * slices, never wall time: the limiter sleeps, so the lower bound holds on any
 * machine.  Without the shared budget the main stream (block list and sync
 * points) stays in its first slice.
 */
static void test_multifd_rate_limit(gconstpointer data)
{
	const uint64_t rate = 10 * 1000 * 1000;
	MigramMigrationConfig cfg = { .downtime_limit_ms = 300,
				      .max_bandwidth = rate };
	g_autoptr(GError) error = NULL;
	MigramMigrationStats st;
	MigramRamList *dst;
	Guest g;

	guest_init(&g, 16 * MiB);
	g.channels = GPOINTER_TO_UINT(data);
	guest_start(&g, 0, NULL);
	g_assert_true(migrate(&g, &cfg, &st, &error, &dst));
	g_assert_no_error(error);
	assert_same_memory(&g, dst);
	g_test_message("%u channels: %" G_GUINT64_FORMAT
		       " bytes, %" G_GUINT64_FORMAT
		       " slices of %" G_GUINT64_FORMAT " bytes",
		       g.channels, st.transferred_bytes, g.rate_slices,
		       rate / 10);
	g_assert_cmpuint(st.normal_bytes, >, 8 * MiB);
	g_assert_cmpuint(g.rate_slices + 1, >=,
			 st.transferred_bytes / (rate / 10));
	migram_ram_list_free(dst);
	guest_free(&g);
}

int main(int argc, char **argv)
{
	static const ShiftCase shifts[] = {
		{ 0, false, 0, false, false },
		{ 6, false, 0, false, false },
		{ 18, false, 0, false, false },
		{ 6, true, 0, false, false },
		/* data channels (multifd), every clear_bmap_shift family */
		{ 0, false, 1, false, false },
		{ 6, true, 1, false, false },
		{ 0, false, 2, false, false },
		{ 6, false, 2, false, false },
		{ 18, false, 2, false, false },
		{ 0, false, 4, false, false },
		{ 6, false, 4, false, false },
		{ 18, false, 4, false, false },
		{ 6, true, 4, false, false },
		/* zstd payloads */
		{ 6, false, 2, true, false },
		{ 18, false, 4, true, false },
		/* zero pages on the main stream, QEMU 7.2's form */
		{ 6, false, 2, false, true },
		{ 18, false, 4, false, true },
	};

	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	for (size_t i = 0; i < G_N_ELEMENTS(shifts); i++) {
		g_autofree char *path = g_strdup_printf(
			"/migration/sender/end-to-end/shift-%u%s%s%s%s",
			shifts[i].shift,
			shifts[i].clear_at_sync ? "-clear-at-sync" : "",
			shifts[i].channels == 0   ? ""
			: shifts[i].channels == 1 ? "-multifd-1"
			: shifts[i].channels == 2 ? "-multifd-2"
						  : "-multifd-4",
			shifts[i].zstd ? "-zstd" : "",
			shifts[i].zero_main ? "-zero-main" : "");

		g_test_add_data_func(path, &shifts[i], test_end_to_end);
	}
	g_test_add_func("/migration/sender/downtime-breakdown",
			test_downtime_breakdown);
	g_test_add_func("/migration/sender/soft-log-semantics",
			test_soft_log_semantics);
	g_test_add_func("/migration/sender/sync-clear-race",
			test_sync_clear_race);
	g_test_add_func("/migration/sender/does-not-converge",
			test_does_not_converge);
	g_test_add_func("/migration/sender/auto-converge", test_auto_converge);
	g_test_add_func("/migration/sender/cancel", test_cancel);
	g_test_add_func("/migration/sender/multifd-channel-dies",
			test_multifd_channel_dies);
	g_test_add_func("/migration/sender/block-added", test_block_added);
	g_test_add_data_func("/migration/sender/multifd-rate-limit-2",
			     GUINT_TO_POINTER(2), test_multifd_rate_limit);
	g_test_add_data_func("/migration/sender/multifd-rate-limit-4",
			     GUINT_TO_POINTER(4), test_multifd_rate_limit);
	g_test_add_func("/migration/sender/block-removed", test_block_removed);
	g_test_add_func("/migration/sender/block-resized", test_block_resized);
	g_test_add_func("/migration/sender/destination-closes",
			test_destination_closes);
	g_test_add_func("/migration/sender/clear-calls-per-chunk",
			test_clear_calls_per_chunk);
	g_test_add_func("/migration/sender/stats-json", test_stats_json);
	return g_test_run();
}
