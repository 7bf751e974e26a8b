/* SPDX-License-Identifier: MIT */
/*
 * Postcopy end to end: a source whose writers dirty memory until the
 * switch, a destination whose own workload threads read and write pages
 * right after RUN (most not received yet, so they fault through
 * userfaultfd), and the final comparison: every page equals the source's
 * final page, except the stamps the destination's threads wrote, which
 * must all survive.  Also: the preempt channel, connection cuts at chosen
 * points followed by recovery, and hostile return-path messages.
 */
#include <poll.h>
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

#define P 4096u
#define MiB (UINT64_C(1) << 20)
#define NBLOCKS 2
#define NWORKERS 3
#define STAMP UINT64_C(0x5354414d50000000)

static const char *const names[NBLOCKS] = { "pc.ram", "vga.vram" };
static const uint64_t sizes[NBLOCKS] = { 24 * MiB, 4 * MiB };

typedef struct {
	MigramRamList *list;
	MigramSoftLog *log;
	MigramDirtyBitmap *db;
	MigramRamBlock *b[NBLOCKS];
	bool hugetlb; /* block 1 is hugetlb, not memfd */
	GThread *writer;
	int stop, paused, quiet; /* atomic */
	int pause_calls, resume_calls;
	/* status-change events of the last run (its callback), by status */
	unsigned int events[MIGRAM_MIGRATION_POSTCOPY_RECOVER + 1];
	MigramMigrationStatus last_event;
} Src;

typedef struct {
	MigramRamList *list;
	MigramReceiver *r;
	guint8 *host[NBLOCKS];
	const guint8 *src_host[NBLOCKS];
	unsigned long *stamped[NBLOCKS]; /* atomic bits */
	GThread *workers[NWORKERS];
	int nworkers;
	guint64 mismatches; /* atomic */
	guint64 touched;    /* atomic */
	int run_calls;
	int paused_calls;
	MigramChannel *recover_ch; /* given when paused */
	MigramRamList *hot_add_to; /* the source's list, for Case.hot_add */
	int started; /* atomic: workers running (dst_run waits for them) */
	GError *hot_add_error;
} Dst;

/* ---- source ---- */

static void src_write(Src *s, int bi, uint64_t pfn, guint64 seq)
{
	guint64 *w = (guint64 *)((guint8 *)migram_ram_block_host(s->b[bi]) +
				 pfn * P);

	__atomic_store_n(&w[0], seq, __ATOMIC_RELAXED);
	__atomic_store_n(&w[1], pfn ^ seq, __ATOMIC_RELAXED);
	migram_dirty_bitmap_set_dirty(s->db, migram_ram_block_offset(s->b[bi]) +
						     pfn * P);
}

static gpointer src_writer(gpointer p)
{
	Src *s = p;
	GRand *r = g_rand_new_with_seed(42);
	guint64 seq = 1000;

	while (!g_atomic_int_get(&s->stop)) {
		int bi;

		if (g_atomic_int_get(&s->paused)) {
			g_atomic_int_set(&s->quiet, 1);
			g_usleep(200);
			continue;
		}
		g_atomic_int_set(&s->quiet, 0);
		bi = g_rand_int_range(r, 0, NBLOCKS);
		src_write(s, bi,
			  (uint64_t)g_rand_int_range(r, 0,
						     (gint32)(sizes[bi] / P)),
			  ++seq);
		if (seq % 64 == 0)
			g_usleep(50);
	}
	g_rand_free(r);
	return NULL;
}

static void src_pause(void *o)
{
	Src *s = o;

	s->pause_calls++;
	g_atomic_int_set(&s->quiet, 0);
	g_atomic_int_set(&s->paused, 1);
	while (s->writer && !g_atomic_int_get(&s->quiet))
		g_usleep(100);
}

static void src_resume(void *o)
{
	Src *s = o;

	s->resume_calls++;
	g_atomic_int_set(&s->paused, 0);
}

/* Block 0 is anonymous; block 1 memfd-shared, or hugetlb if asked for. */
static MigramRamBlock *add_block(MigramRamList *l, int i, bool hugetlb)
{
	g_autoptr(GError) e = NULL;
	MigramRamBlock *b = migram_ram_list_add(
		l,
		&(MigramRamBlockConfig){
			.idstr = names[i],
			.backend = i == 0    ? MIGRAM_RAM_BACKEND_ANON
				   : hugetlb ? MIGRAM_RAM_BACKEND_HUGETLB
					     : MIGRAM_RAM_BACKEND_MEMFD,
			.used_length = sizes[i] },
		&e);

	g_assert_no_error(e);
	return b;
}

/* Can two 4 MiB hugetlb blocks exist (source and destination)? */
static bool hugetlb_available(void)
{
	MigramRamList *l = migram_ram_list_new();
	g_autoptr(GError) e = NULL;
	bool ok = true;

	for (int i = 0; i < 2 && ok; i++) {
		char name[16];

		g_snprintf(name, sizeof(name), "probe%d", i);
		ok = migram_ram_list_add(
			     l,
			     &(MigramRamBlockConfig){
				     .idstr = name,
				     .backend = MIGRAM_RAM_BACKEND_HUGETLB,
				     .used_length = sizes[1] },
			     &e) != NULL;
	}
	migram_ram_list_free(l);
	if (!ok) {
		g_autofree char *why = g_strdup_printf(
			"needs two 4 MiB hugetlb blocks: %s", e->message);

		g_test_skip(why);
	}
	return ok;
}

static void src_init(Src *s, bool hugetlb)
{
	memset(s, 0, sizeof(*s));
	s->hugetlb = hugetlb;
	s->list = migram_ram_list_new();
	for (int i = 0; i < NBLOCKS; i++)
		s->b[i] = add_block(s->list, i, hugetlb);
	s->log = migram_soft_log_new(64 * MiB, NULL);
	s->db = migram_soft_log_bitmap(s->log);
	/* Two pages in three hold data, the rest stay zero. */
	for (int i = 0; i < NBLOCKS; i++)
		for (uint64_t pfn = 0; pfn < sizes[i] / P; pfn++)
			if (pfn % 3)
				src_write(s, i, pfn, pfn + 1);
}

/* Idempotent: a zeroed or already freed Src is left as it is. */
static void src_free(Src *s)
{
	if (!s->list)
		return;
	g_atomic_int_set(&s->stop, 1);
	if (s->writer)
		g_thread_join(s->writer);
	migram_ram_list_free(s->list);
	migram_soft_log_free(s->log);
	memset(s, 0, sizeof(*s));
}

/* ---- destination ---- */

static uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

static gpointer dst_worker(gpointer p)
{
	Dst *d = ((void **)p)[0];
	int id = GPOINTER_TO_INT(((void **)p)[1]);
	GRand *r = g_rand_new_with_seed((guint32)id + 7);

	g_free(p);
	g_atomic_int_inc(&d->started);
	for (int bi = 0; bi < NBLOCKS; bi++) {
		uint64_t n = sizes[bi] / P;
		/* A stride prime to n visits each page once, scattered. */
		uint64_t stride = (uint64_t)g_rand_int_range(r, 100, 1000);

		while (gcd(stride, n) != 1)
			stride++;
		for (uint64_t k = 0; k < n; k++) {
			uint64_t pfn = (k * stride) % n;
			guint8 *page = d->host[bi] + pfn * P;

			if (pfn % NWORKERS != (uint64_t)id ||
			    g_rand_int_range(r, 0, 3) == 0)
				continue;
			/* The read sees the source's final content... */
			if (memcmp(page, d->src_host[bi] + pfn * P, P) != 0)
				__atomic_fetch_add(&d->mismatches, 1,
						   __ATOMIC_RELAXED);
			/* ...and the write must survive later arrivals. */
			((guint64 *)(void *)page)[P / 8 - 1] = STAMP ^ pfn;
			migram_bitmap_set_bit_atomic(d->stamped[bi],
						     (size_t)pfn);
			__atomic_fetch_add(&d->touched, 1, __ATOMIC_RELAXED);
		}
	}
	g_rand_free(r);
	return NULL;
}

static void dst_run(void *o)
{
	Dst *d = o;

	d->run_calls++;
	if (d->hot_add_to) {
		MigramRamBlockConfig c = { .idstr = "hot0",
					   .used_length = 1 * MiB };

		/* the guest runs here now: the source refuses the add */
		g_assert_null(migram_ram_list_add(d->hot_add_to, &c,
						  &d->hot_add_error));
	}
	for (int i = 0; i < d->nworkers; i++) {
		void **a = g_new(void *, 2);

		a[0] = d;
		a[1] = GINT_TO_POINTER(i);
		d->workers[i] = g_thread_new("dst-worker", dst_worker, a);
	}
	/*
	 * The load goes on placing pages only once every worker runs (CI
	 * saw a loaded machine start them after the whole push: no fault).
	 * A worker signals before its first touch, so this cannot wait on
	 * a page only this thread would place.
	 */
	for (int t = 0; g_atomic_int_get(&d->started) < d->nworkers; t++) {
		if (t > 100000)
			g_error("the destination's workers did not start");
		g_usleep(50);
	}
}

static void dst_paused(void *o)
{
	Dst *d = o;
	g_autoptr(GError) e = NULL;

	d->paused_calls++;
	if (d->recover_ch)
		g_assert_true(migram_receiver_recover(d->r, d->recover_ch, &e));
}

/* The destination's blocks have the source's backends. */
static void dst_init(Dst *d, Src *s, int nworkers)
{
	memset(d, 0, sizeof(*d));
	d->list = migram_ram_list_new();
	for (int i = 0; i < NBLOCKS; i++) {
		MigramRamBlock *b = add_block(d->list, i, s->hugetlb);

		d->host[i] = migram_ram_block_host(b);
		d->src_host[i] = migram_ram_block_host(s->b[i]);
		d->stamped[i] = migram_bitmap_new((size_t)(sizes[i] / P));
	}
	d->nworkers = nworkers;
	d->r = migram_receiver_new(
		d->list, &(MigramReceiverConfig){ .postcopy_run = dst_run,
						  .postcopy_paused = dst_paused,
						  .opaque = d });
}

static void dst_join(Dst *d)
{
	for (int i = 0; i < d->nworkers; i++)
		if (d->workers[i])
			g_thread_join(d->workers[i]);
}

/* Every page: the source's, with this side's stamps on top. */
static void dst_verify(Dst *d)
{
	guint8 want[P];
	uint64_t stamps = 0;

	g_assert_cmpuint(d->mismatches, ==, 0);
	for (int bi = 0; bi < NBLOCKS; bi++)
		for (uint64_t pfn = 0; pfn < sizes[bi] / P; pfn++) {
			memcpy(want, d->src_host[bi] + pfn * P, P);
			if (migram_bitmap_test_bit(d->stamped[bi],
						   (size_t)pfn)) {
				((guint64 *)(void *)want)[P / 8 - 1] = STAMP ^
								       pfn;
				stamps++;
			}
			if (memcmp(want, d->host[bi] + pfn * P, P) != 0)
				g_error("block %s page %" G_GUINT64_FORMAT
					" differs",
					names[bi], pfn);
		}
	g_assert_cmpuint(stamps, ==, d->touched);
}

/* Idempotent: a zeroed or already freed Dst is left as it is. */
static void dst_free(Dst *d)
{
	if (!d->list)
		return;
	migram_receiver_free(d->r);
	for (int i = 0; i < NBLOCKS; i++)
		migram_bitmap_free(d->stamped[i]);
	migram_ram_list_free(d->list);
	memset(d, 0, sizeof(*d));
}

/*
 * Each case gets a fresh, zeroed fixture (g_test_add) and builds in it
 * only what it needs; the tear-down frees whatever was built, so nothing
 * carries from one case to the next, whichever cases run (-p).
 */
typedef struct {
	Src s;
	Dst d;
} Fixture;

static void fixture_tear_down(Fixture *f, gconstpointer data)
{
	(void)data;
	dst_free(&f->d);
	src_free(&f->s);
}

/* ---- a proxy that cuts the connection at a chosen point ---- */

typedef enum {
	CUT_NONE,
	CUT_DISCARD,
	CUT_BACKGROUND,
	CUT_FAULTS
} CutAt;

typedef struct {
	int a, b; /* a: the source's peer, b: the destination's peer */
	CutAt cut;
	uint64_t cut_bytes;
	GThread *thread;
	int cut_done;
} Proxy;

static bool is_discard_at(const guint8 *buf, ssize_t n, ssize_t i)
{
	return i + 2 < n && buf[i] == 0x08 && buf[i + 1] == 0 &&
	       buf[i + 2] == 6;
}

static gpointer proxy_main(gpointer p)
{
	Proxy *x = p;
	const size_t len = 256 * 1024;
	guint8 *buf = g_malloc(len);
	uint64_t down = 0, up = 0;

	for (;;) {
		struct pollfd fds[2] = { { x->a, POLLIN, 0 },
					 { x->b, POLLIN, 0 } };
		ssize_t n;
		bool cut = false;

		if (poll(fds, 2, -1) < 0)
			break;
		if (fds[0].revents) {
			n = read(x->a, buf, len);
			if (n <= 0)
				break;
			if (x->cut == CUT_DISCARD)
				for (ssize_t i = 0; i < n && !cut; i++)
					if (is_discard_at(buf, n, i)) {
						n = i + 3; /* mid-command */
						cut = true;
					}
			down += (uint64_t)n;
			if (x->cut == CUT_BACKGROUND && down >= x->cut_bytes)
				cut = true;
			if (write(x->b, buf, (size_t)n) != n)
				break;
		}
		if (!cut && fds[1].revents) {
			n = read(x->b, buf, len);
			if (n <= 0)
				break;
			up += (uint64_t)n;
			if (x->cut == CUT_FAULTS && up >= x->cut_bytes)
				cut = true;
			if (write(x->a, buf, (size_t)n) != n)
				break;
		}
		if (cut) {
			g_atomic_int_set(&x->cut_done, 1);
			break;
		}
	}
	g_free(buf);
	shutdown(x->a, SHUT_RDWR);
	shutdown(x->b, SHUT_RDWR);
	return NULL;
}

/* ---- one migration ---- */

typedef struct {
	bool hybrid;
	bool preempt;
	bool hugetlb;
	CutAt cut;
	uint64_t cut_bytes;
	int nworkers;
	/* the destination never answers the recovery; the source is
	 * cancelled while it waits for the receivedmaps */
	bool silent_recovery;
	/* config.io_timeout_ms; with silent_recovery the source must pause
	 * again (the handshake stalled) before it is cancelled */
	unsigned int io_timeout_ms;
	/* when the destination runs, a block is hot-added on the source */
	bool hot_add;
} Case;

typedef struct {
	Dst *d;
	MigramChannel *ch;
	MigramChannel *preempt;
	GError *error;
	bool ok;
} LoadArgs;

static gpointer load_main(gpointer p)
{
	LoadArgs *a = p;

	urcu_memb_register_thread();
	if (a->preempt)
		migram_receiver_set_preempt(a->d->r, a->preempt);
	a->ok = migram_receiver_load(a->d->r, a->ch, &a->error);
	urcu_memb_unregister_thread();
	return NULL;
}

static void src_paused(void *o)
{
	(void)o;
}

static void src_event(MigramMigration *m, MigramMigrationStatus st, void *o)
{
	Src *s = o;

	(void)m;
	g_assert_cmpint(st, <=, MIGRAM_MIGRATION_POSTCOPY_RECOVER);
	s->events[st]++;
	s->last_event = st;
}

static void pair(int fds[2])
{
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds),
			==, 0);
}

/* A side's paused callback runs on its thread; the test waits here. */
typedef struct {
	MigramMigration *m;
	MigramChannel *ch;
	int done;
	bool cancel;  /* cancel the migration once recover() took ch */
	bool repause; /* first wait until it paused again */
	int repaused;
} RecoverArgs;

static gpointer src_recover_main(gpointer p)
{
	RecoverArgs *a = p;
	MigramMigrationStats st;

	for (int i = 0; i < 20000; i++) {
		migram_migration_get_stats(a->m, &st);
		if (st.status == MIGRAM_MIGRATION_POSTCOPY_PAUSED &&
		    migram_migration_recover(a->m, a->ch, NULL)) {
			g_atomic_int_set(&a->done, 1);
			/* paused again: a stalled handshake (bounded: 20 s) */
			for (int j = 0; a->repause && j < 20000; j++) {
				migram_migration_get_stats(a->m, &st);
				if (st.status ==
				    MIGRAM_MIGRATION_POSTCOPY_PAUSED) {
					a->repaused = 1;
					break;
				}
				g_usleep(1000);
			}
			if (a->cancel) {
				g_usleep(200 * 1000);
				migram_migration_cancel(a->m);
			}
			break;
		}
		if (st.status == MIGRAM_MIGRATION_COMPLETED ||
		    st.status == MIGRAM_MIGRATION_FAILED)
			break;
		g_usleep(500);
	}
	return NULL;
}

static bool run_case(const Case *c, Src *s, Dst *d, MigramMigrationStats *st,
		     GError **src_error, GError **dst_error)
{
	MigramLogSource source;
	MigramMigration *m;
	MigramChannel *sch, *pre_s = NULL, *pre_d = NULL, *rs = NULL;
	MigramChannel *silent = NULL;
	LoadArgs la = { .d = d };
	RecoverArgs ra = { 0 };
	Proxy x = { 0 };
	GThread *loader, *recoverer = NULL;
	int f1[2], f2[2], fp[2], fr[2];
	bool ok;

	pair(f1);
	if (c->cut != CUT_NONE) {
		pair(f2);
		x = (Proxy){ f1[1], f2[0], c->cut, c->cut_bytes, NULL, 0 };
		x.thread = g_thread_new("proxy", proxy_main, &x);
		la.ch = migram_channel_new(f2[1], true);
		pair(fr);
		rs = migram_channel_new(fr[0], true);
		if (c->silent_recovery)
			silent = migram_channel_new(fr[1], true);
		else
			d->recover_ch = migram_channel_new(fr[1], true);
	} else {
		la.ch = migram_channel_new(f1[1], true);
	}
	sch = migram_channel_new(f1[0], true);
	if (c->preempt) {
		pair(fp);
		pre_s = migram_channel_new(fp[0], true);
		pre_d = migram_channel_new(fp[1], true);
		la.preempt = pre_d;
	}
	loader = g_thread_new("loader", load_main, &la);
	migram_soft_log_source(s->log, &source);
	m = migram_migration_new(s->list, &source,
				 &(MigramMigrationConfig){
					 .postcopy = true,
					 .postcopy_after_passes = c->hybrid ? 1
									    : 0,
					 .pause_guest = src_pause,
					 .resume_guest = src_resume,
					 .postcopy_paused = src_paused,
					 .io_timeout_ms = c->io_timeout_ms,
					 .opaque = s });
	memset(s->events, 0, sizeof(s->events));
	g_assert_true(
		migram_migration_set_event_callback(m, src_event, s, NULL));
	if (pre_s)
		migram_migration_set_preempt(m, pre_s);
	if (!c->hybrid)
		migram_migration_start_postcopy(m);
	if (rs) {
		ra = (RecoverArgs){
			m, rs, 0, c->silent_recovery, c->io_timeout_ms > 0, 0
		};
		recoverer = g_thread_new("recoverer", src_recover_main, &ra);
	}
	ok = migram_migration_run(m, sch, src_error);
	migram_migration_get_stats(m, st);
	if (!ok)
		shutdown(migram_channel_fd(sch), SHUT_RDWR);
	if (recoverer)
		g_thread_join(recoverer);
	if (!ok && (d->recover_ch || silent))
		migram_receiver_cancel(d->r);
	g_thread_join(loader);
	dst_join(d);
	if (x.thread) {
		shutdown(x.a, SHUT_RDWR);
		g_thread_join(x.thread);
		close(x.a);
		close(x.b);
	}
	*dst_error = la.error;
	migram_migration_free(m);
	migram_channel_free(sch);
	migram_channel_free(la.ch);
	migram_channel_free(pre_s);
	migram_channel_free(pre_d);
	migram_channel_free(rs);
	migram_channel_free(silent);
	if (d->recover_ch)
		migram_channel_free(d->recover_ch);
	d->recover_ch = NULL;
	g_assert_cmpint(ok, ==, la.ok);
	g_assert_cmpint(ra.repaused, ==, ra.repause);
	return ok;
}

static bool have_uffd(void)
{
	g_autoptr(GError) e = NULL;

	if (migram_postcopy_available(&e))
		return true;
	g_test_skip(e->message);
	return false;
}

static void test_postcopy(Fixture *f, gconstpointer data)
{
	const Case *c = data;
	MigramMigrationStats st;
	MigramPostcopyStats ps;
	GError *se = NULL, *de = NULL;
	Src *s = &f->s;
	Dst *d = &f->d;

	if (!have_uffd())
		return;
	if (c->hugetlb && !hugetlb_available())
		return;
	src_init(s, c->hugetlb);
	if (c->hybrid)
		s->writer = g_thread_new("src-writer", src_writer, s);
	dst_init(d, s, c->nworkers);
	if (c->hot_add)
		d->hot_add_to = s->list;
	g_assert_true(run_case(c, s, d, &st, &se, &de));
	g_assert_no_error(se);
	g_assert_no_error(de);
	migram_receiver_get_postcopy_stats(d->r, &ps);
	g_test_message("%s: downtime %" G_GUINT64_FORMAT
		       " ms, postcopy %" G_GUINT64_FORMAT
		       " ms, discarded %" G_GUINT64_FORMAT
		       " pages, faults %" G_GUINT64_FORMAT
		       ", requests %" G_GUINT64_FORMAT
		       ", urgent %" G_GUINT64_FORMAT
		       ", pushed %" G_GUINT64_FORMAT
		       ", duplicates %" G_GUINT64_FORMAT
		       ", preempt %" G_GUINT64_FORMAT ", p50 %" G_GUINT64_FORMAT
		       " us, p99 %" G_GUINT64_FORMAT
		       " us, recoveries %" G_GUINT64_FORMAT,
		       g_test_get_path(), st.downtime_ms, st.postcopy_time_ms,
		       st.postcopy_discard_pages, ps.faults, ps.requests,
		       st.postcopy_urgent_pages, ps.pushed_pages,
		       ps.duplicate_pages, ps.preempt_pages, ps.latency_p50_us,
		       ps.latency_p99_us, ps.recoveries);
	g_assert_cmpint(st.status, ==, MIGRAM_MIGRATION_COMPLETED);
	if (c->hot_add) {
		/*
		 * Refused while the migration held the list (torture seed
		 * 20275405: accepted, the block never reached the guest on
		 * the destination); the migration went on; after it, the
		 * list takes changes again.
		 */
		MigramRamBlockConfig hc = { .idstr = "hot0",
					    .used_length = 1 * MiB };

		g_assert_error(d->hot_add_error, MIGRAM_ERROR,
			       MIGRAM_ERROR_BUSY);
		g_assert_nonnull(strstr(d->hot_add_error->message, "postcopy"));
		g_clear_error(&d->hot_add_error);
		g_assert_nonnull(migram_ram_list_add(s->list, &hc, NULL));
		g_assert_true(migram_ram_list_remove(s->list, "hot0", NULL));
	}
	/* The events an embedder sees: postcopy-active, and a pause and a
	 * recovery when the connection was cut. */
	g_assert_cmpint(s->last_event, ==, MIGRAM_MIGRATION_COMPLETED);
	g_assert_cmpuint(s->events[MIGRAM_MIGRATION_SETUP], ==, 1);
	g_assert_cmpuint(s->events[MIGRAM_MIGRATION_POSTCOPY_ACTIVE], >=, 1);
	g_assert_cmpuint(s->events[MIGRAM_MIGRATION_POSTCOPY_PAUSED], ==,
			 c->cut != CUT_NONE ? 1 : 0);
	g_assert_cmpuint(s->events[MIGRAM_MIGRATION_POSTCOPY_RECOVER], ==,
			 c->cut != CUT_NONE ? 1 : 0);
	g_assert_cmpint(s->pause_calls, ==, 1);
	g_assert_cmpint(s->resume_calls, ==, 0);
	g_assert_cmpint(d->run_calls, ==, 1);
	g_assert_true(ps.active && ps.running);
	/* The workload touched pages before they arrived. */
	if (c->nworkers) {
		g_assert_cmpuint(ps.faults, >, 0);
		g_assert_cmpuint(ps.requests, >, 0);
		/* A requested page the background push already sent is not
		 * urgent; after a precopy pass (hybrid) few pages are left to
		 * send, so every request may find its page on the way. */
		if (!c->hybrid)
			g_assert_cmpuint(st.postcopy_urgent_pages, >, 0);
	}
	/* Pure postcopy discards every page; hybrid what was re-dirtied. */
	g_assert_cmpuint(st.postcopy_discard_pages, >, 0);
	/* Urgent pages go on the preempt channel (none may be urgent when
	 * the background push was ahead of every request). */
	if (c->preempt && c->cut == CUT_NONE && st.postcopy_urgent_pages > 0)
		g_assert_cmpuint(ps.preempt_pages, >, 0);
	if (c->cut != CUT_NONE) {
		g_assert_cmpuint(st.postcopy_recoveries, ==, 1);
		g_assert_cmpuint(ps.recoveries, ==, 1);
		g_assert_cmpint(d->paused_calls, ==, 1);
	}
	dst_verify(d);
}

/*
 * Cancelled while recovering (waiting for receivedmaps that never come):
 * run() fails with the one cancel error, and no second error is set over
 * it (GLib's warning is fatal in tests).
 */
static void test_cancel_in_recovery(Fixture *f, gconstpointer data)
{
	const Case c = { .cut = CUT_BACKGROUND,
			 .cut_bytes = 4 << 20,
			 .silent_recovery = true };
	MigramMigrationStats st;
	GError *se = NULL, *de = NULL;
	Src *s = &f->s;
	Dst *d = &f->d;

	(void)data;
	if (!have_uffd())
		return;
	src_init(s, false);
	dst_init(d, s, 0);
	g_assert_false(run_case(&c, s, d, &st, &se, &de));
	g_assert_error(se, MIGRAM_ERROR, MIGRAM_ERROR_CANCELLED);
	g_assert_cmpint(st.status, ==, MIGRAM_MIGRATION_CANCELLED);
	g_clear_error(&se);
	g_clear_error(&de);
}

/*
 * The same with io_timeout_ms: the recovery connection stops moving (a
 * black hole, found by the torture campaign C), and the source treats it
 * as lost and pauses again, ready for another recover(), instead of
 * waiting for the receivedmaps forever.  run_case() asserts the second
 * pause; then the cancel ends it.
 */
static void test_recovery_stalled(Fixture *f, gconstpointer data)
{
	const Case c = { .cut = CUT_BACKGROUND,
			 .cut_bytes = 4 << 20,
			 .silent_recovery = true,
			 .io_timeout_ms = 100 };
	MigramMigrationStats st;
	GError *se = NULL, *de = NULL;
	Src *s = &f->s;
	Dst *d = &f->d;

	(void)data;
	if (!have_uffd())
		return;
	src_init(s, false);
	dst_init(d, s, 0);
	g_assert_false(run_case(&c, s, d, &st, &se, &de));
	g_assert_error(se, MIGRAM_ERROR, MIGRAM_ERROR_CANCELLED);
	g_assert_cmpint(st.status, ==, MIGRAM_MIGRATION_CANCELLED);
	g_assert_cmpuint(s->events[MIGRAM_MIGRATION_POSTCOPY_PAUSED], >=, 2);
	g_clear_error(&se);
	g_clear_error(&de);
}

/* A cut before the package: nothing ran here, the source resumes. */
static void test_cut_during_discard(Fixture *f, gconstpointer data)
{
	const Case c = { .cut = CUT_DISCARD, .nworkers = NWORKERS };
	const Case again = { .nworkers = NWORKERS };
	MigramMigrationStats st;
	GError *se = NULL, *de = NULL;
	Src *s = &f->s;
	Dst *d = &f->d;

	(void)data;
	if (!have_uffd())
		return;
	src_init(s, false);
	dst_init(d, s, NWORKERS);
	g_assert_false(run_case(&c, s, d, &st, &se, &de));
	g_assert_nonnull(se);
	g_assert_nonnull(de);
	g_test_message("source: %s; destination: %s", se->message, de->message);
	g_clear_error(&se);
	g_clear_error(&de);
	g_assert_cmpint(st.status, ==, MIGRAM_MIGRATION_FAILED);
	g_assert_cmpint(s->resume_calls, ==, 1); /* the source runs again */
	g_assert_cmpint(d->run_calls, ==, 0);
	dst_free(d);
	/* A new migration to a fresh destination completes. */
	dst_init(d, s, NWORKERS);
	g_assert_true(run_case(&again, s, d, &st, &se, &de));
	g_assert_no_error(se);
	g_assert_no_error(de);
	dst_verify(d);
}

/* ---- hostile return-path messages ---- */

typedef struct {
	int fd;
	const guint8 *msg;
	size_t len;
} FakeDst;

static gpointer fake_dst_main(gpointer p)
{
	FakeDst *f = p;
	guint8 buf[65536];

	g_assert_cmpint(write(f->fd, f->msg, f->len), ==, (ssize_t)f->len);
	while (read(f->fd, buf, sizeof(buf)) > 0)
		;
	return NULL;
}

static void hostile_rp(Fixture *fx, const guint8 *msg, size_t len,
		       const char *needle)
{
	MigramLogSource source;
	MigramMigration *m;
	MigramChannel *ch;
	g_autoptr(GError) e = NULL;
	FakeDst f;
	GThread *t;
	guint8 *before;
	Src *s = &fx->s;
	int fds[2];

	src_init(s, false);
	before = g_memdup2(migram_ram_block_host(s->b[0]), sizes[0]);
	pair(fds);
	f = (FakeDst){ fds[1], msg, len };
	t = g_thread_new("fake-dst", fake_dst_main, &f);
	migram_soft_log_source(s->log, &source);
	m = migram_migration_new(s->list, &source,
				 &(MigramMigrationConfig){
					 .postcopy = true,
					 .max_bandwidth = 16 * MiB,
					 .pause_guest = src_pause,
					 .resume_guest = src_resume,
					 .opaque = s });
	ch = migram_channel_new(fds[0], true);
	g_assert_false(migram_migration_run(m, ch, &e));
	g_assert_nonnull(e);
	g_test_message("%s", e->message);
	g_assert_error(e, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
	g_assert_nonnull(strstr(e->message, needle));
	shutdown(fds[0], SHUT_RDWR);
	g_thread_join(t);
	close(fds[1]);
	migram_channel_free(ch);
	migram_migration_free(m);
	g_assert_cmpint(memcmp(before, migram_ram_block_host(s->b[0]),
			       sizes[0]),
			==, 0);
	g_free(before);
}

static void test_rp_unknown_type(Fixture *f, gconstpointer data)
{
	const guint8 msg[] = { 0, 99, 0, 0 };

	(void)data;
	hostile_rp(f, msg, sizeof(msg), "unknown message type 99");
}

static void test_rp_out_of_range(Fixture *f, gconstpointer data)
{
	/* REQ_PAGES_ID pc.ram at 24 MiB (one past the end), one page. */
	const guint8 msg[] = { 0,    3,    0,   19,  0,   0,   0,    0,
			       0x01, 0x80, 0,   0,   0,   0,   0x10, 0,
			       6,    'p',  'c', '.', 'r', 'a', 'm' };

	(void)data;
	hostile_rp(f, msg, sizeof(msg), "overruns ramblock 'pc.ram'");
}

static void test_rp_misaligned(Fixture *f, gconstpointer data)
{
	const guint8 msg[] = { 0, 3,   0,    19,  0,   0,   0,    0,
			       0, 0,   0x08, 0,   0,   0,   0x10, 0,
			       6, 'p', 'c',  '.', 'r', 'a', 'm' };

	(void)data;
	hostile_rp(f, msg, sizeof(msg), "misaligned");
}

static void test_rp_unknown_block(Fixture *f, gconstpointer data)
{
	const guint8 msg[] = { 0, 3, 0, 17,   0, 0, 0,   0,   0,   0,  0,
			       0, 0, 0, 0x10, 0, 4, 'n', 'o', 'p', 'e' };

	(void)data;
	hostile_rp(f, msg, sizeof(msg), "unknown ramblock 'nope'");
}

static void test_rp_req_without_id(Fixture *f, gconstpointer data)
{
	const guint8 msg[] = { 0, 4, 0, 12, 0, 0, 0,    0,
			       0, 0, 0, 0,  0, 0, 0x10, 0 };

	(void)data;
	hostile_rp(f, msg, sizeof(msg), "REQ_PAGES before any REQ_PAGES_ID");
}

static void test_rp_bad_length(Fixture *f, gconstpointer data)
{
	const guint8 msg[] = { 0, 2, 0, 3, 0, 0, 0 };

	(void)data;
	hostile_rp(f, msg, sizeof(msg), "PONG message of 3 bytes");
}

static void test_not_a_socket(Fixture *f, gconstpointer data)
{
	MigramLogSource source;
	MigramMigration *m;
	MigramChannel *ch;
	g_autoptr(GError) e = NULL;
	Src *s = &f->s;
	int fd = memfd_create("not-a-socket", MFD_CLOEXEC);

	(void)data;
	src_init(s, false);
	migram_soft_log_source(s->log, &source);
	m = migram_migration_new(s->list, &source,
				 &(MigramMigrationConfig){
					 .postcopy = true,
					 .pause_guest = src_pause,
					 .opaque = s });
	ch = migram_channel_new(fd, true);
	g_assert_false(migram_migration_run(m, ch, &e));
	g_assert_error(e, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED);
	g_assert_nonnull(strstr(e->message, "needs a socket"));
	g_assert_cmpint(s->pause_calls, ==, 0);
	migram_channel_free(ch);
	migram_migration_free(m);
}

static void test_recover_when_not_paused(void)
{
	MigramRamList *l = migram_ram_list_new();
	MigramReceiver *r = migram_receiver_new(l, NULL);
	g_autoptr(GError) e = NULL;

	g_assert_false(migram_receiver_recover(r, NULL, &e));
	g_assert_error(e, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	migram_receiver_free(r);
	migram_ram_list_free(l);
}

static const Case pure = { .nworkers = NWORKERS };
static const Case hybrid = { .hybrid = true, .nworkers = NWORKERS };
static const Case pure_preempt = { .preempt = true, .nworkers = NWORKERS };
static const Case hybrid_preempt = { .hybrid = true,
				     .preempt = true,
				     .nworkers = NWORKERS };
static const Case no_workload = { .nworkers = 0 };
static const Case huge = { .hybrid = true,
			   .hugetlb = true,
			   .nworkers = NWORKERS };
static const Case huge_preempt = { .preempt = true,
				   .hugetlb = true,
				   .nworkers = NWORKERS };
static const Case hot_add = { .hybrid = true,
			      .nworkers = NWORKERS,
			      .hot_add = true };
static const Case cut_background = { .cut = CUT_BACKGROUND,
				     .cut_bytes = 12 * MiB,
				     .nworkers = NWORKERS };
static const Case cut_faults = { .cut = CUT_FAULTS,
				 .cut_bytes = 32 + 40 * 16,
				 .nworkers = NWORKERS };
static const Case cut_preempt = { .cut = CUT_BACKGROUND,
				  .preempt = true,
				  .cut_bytes = 8 * MiB,
				  .nworkers = NWORKERS };

/* Registers a case that runs on a fresh, zeroed Fixture. */
static void add(const char *path, const Case *c,
		void (*test)(Fixture *, gconstpointer))
{
	g_test_add(path, Fixture, c, NULL, test, fixture_tear_down);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	add("/migration/postcopy/pure", &pure, test_postcopy);
	add("/migration/postcopy/hybrid", &hybrid, test_postcopy);
	add("/migration/postcopy/pure-preempt", &pure_preempt, test_postcopy);
	add("/migration/postcopy/hybrid-preempt", &hybrid_preempt,
	    test_postcopy);
	add("/migration/postcopy/no-workload", &no_workload, test_postcopy);
	add("/migration/postcopy/hot-add-refused", &hot_add, test_postcopy);
	add("/migration/postcopy/hugetlb-hybrid", &huge, test_postcopy);
	add("/migration/postcopy/hugetlb-preempt", &huge_preempt,
	    test_postcopy);
	add("/migration/postcopy/recover/background", &cut_background,
	    test_postcopy);
	add("/migration/postcopy/recover/faults-outstanding", &cut_faults,
	    test_postcopy);
	add("/migration/postcopy/recover/preempt", &cut_preempt, test_postcopy);
	add("/migration/postcopy/recover/cancel-while-recovering", NULL,
	    test_cancel_in_recovery);
	add("/migration/postcopy/recovery-stalled", NULL,
	    test_recovery_stalled);
	add("/migration/postcopy/recover/cut-during-discard", NULL,
	    test_cut_during_discard);
	add("/migration/postcopy/return-path/unknown-type", NULL,
	    test_rp_unknown_type);
	add("/migration/postcopy/return-path/out-of-range", NULL,
	    test_rp_out_of_range);
	add("/migration/postcopy/return-path/misaligned", NULL,
	    test_rp_misaligned);
	add("/migration/postcopy/return-path/unknown-block", NULL,
	    test_rp_unknown_block);
	add("/migration/postcopy/return-path/req-without-id", NULL,
	    test_rp_req_without_id);
	add("/migration/postcopy/return-path/bad-length", NULL,
	    test_rp_bad_length);
	add("/migration/postcopy/not-a-socket", NULL, test_not_a_socket);
	g_test_add_func("/migration/postcopy/recover-when-not-paused",
			test_recover_when_not_paused);
	return g_test_run();
}
