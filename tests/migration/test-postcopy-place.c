/* SPDX-License-Identifier: MIT */
/*
 * Postcopy placement on the destination, through the internal API: one
 * block registered with userfaultfd (ADVISE, LISTEN), the fault thread
 * running, and a placement hook that makes the first attempts fail with
 * EAGAIN.  Both placement paths (a page from the stream, and the zero
 * page the fault thread maps for a received but unpopulated page) must
 * retry and resolve the fault.
 */
#include <errno.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/migram.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>

#include "migram-test-util.h"
#include "postcopy-dst.h"

#define P 4096u

typedef struct {
	MigramRamList *list;
	MigramRamBlock *block;
	DstPostcopy *pc;
	int eagain_left; /* atomic: attempts still to fail */
	int calls;       /* atomic */
} Fixture;

static int inject_eagain(void *opaque, uint64_t offset, bool zero)
{
	Fixture *f = opaque;

	(void)offset;
	(void)zero;
	g_atomic_int_inc(&f->calls);
	if (g_atomic_int_get(&f->eagain_left) > 0) {
		g_atomic_int_add(&f->eagain_left, -1);
		return EAGAIN;
	}
	return 0;
}

/*
 * Fixture set-up: a 16-page block, its bitmaps and a listening postcopy
 * destination whose first @data (an int) placement attempts fail with
 * EAGAIN.  Without userfaultfd the case is skipped and f->pc stays NULL;
 * the case then returns at once.
 */
static void fixture_listen(Fixture *f, gconstpointer data)
{
	const int eagain = GPOINTER_TO_INT(data);
	static const guint8 advise[16] = { 0, 0, 0, 0, 0, 0, 0x10, 0,
					   0, 0, 0, 0, 0, 0, 0x10, 0 };
	g_autoptr(GError) error = NULL;

	memset(f, 0, sizeof(*f));
	if (!migram_postcopy_available(NULL)) {
		g_test_skip("no userfaultfd");
		return;
	}
	f->list = migram_ram_list_new();
	f->block = migram_ram_list_add(f->list,
				       &(MigramRamBlockConfig){
					       .idstr = "ram",
					       .used_length = 16 * P },
				       &error);
	g_assert_no_error(error);
	g_assert_true(migram_ram_list_bitmaps_init(f->list, 18, &error));
	f->pc = migram_postcopy_dst_new(f->list);
	f->eagain_left = eagain;
	migram_postcopy_dst_set_place_hook(f->pc, inject_eagain, f);
	g_assert_true(migram_postcopy_dst_advise(f->pc, advise, sizeof(advise),
						 0, &error));
	g_assert_true(migram_postcopy_dst_listen(f->pc, 0, &error));
	g_assert_no_error(error);
}

static void fixture_free(Fixture *f, gconstpointer data)
{
	(void)data;
	if (!f->pc)
		return;
	migram_postcopy_dst_free(f->pc);
	migram_ram_list_bitmaps_free(f->list);
	migram_ram_list_free(f->list);
}

typedef struct {
	volatile const guint8 *addr;
	guint8 seen;
	int done; /* atomic */
} Toucher;

static gpointer touch_main(gpointer p)
{
	Toucher *t = p;

	t->seen = *t->addr; /* faults until the page is placed */
	g_atomic_int_set(&t->done, 1);
	return NULL;
}

/* Wait up to 5 s for the faulting thread. */
static bool wait_done(Toucher *t)
{
	for (int i = 0; i < 500 && !g_atomic_int_get(&t->done); i++)
		g_usleep(10 * 1000);
	return g_atomic_int_get(&t->done);
}

/*
 * A page received as a precopy ZERO record but never populated: the fault
 * thread maps the zero page for it, retrying EAGAIN like any placement.
 */
static void test_zero_fill_retries(Fixture *f, gconstpointer data)
{
	Toucher t = { 0 };
	GThread *th;
	guint8 *host;

	(void)data;
	if (!f->pc)
		return;
	urcu_memb_read_lock();
	host = migram_ram_block_host(f->block);
	migram_bitmap_set_bit_atomic(migram_ram_block_receivedmap(f->block), 5);
	urcu_memb_read_unlock();
	t.addr = host + 5 * P + 17;
	th = g_thread_new("toucher", touch_main, &t);
	if (!wait_done(&t))
		g_error("the faulting thread is still blocked after %d "
			"placement attempts",
			g_atomic_int_get(&f->calls));
	g_thread_join(th);
	g_assert_cmpint(t.seen, ==, 0);
	g_assert_cmpint(g_atomic_int_get(&f->calls), ==, 4);
}

/* A page from the stream: the same retry, then the fault resolves. */
static void test_copy_retries(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramPostcopyStats st;
	DstPlacer pl;
	Toucher t = { 0 };
	GThread *th;
	guint8 *host, *buf;

	(void)data;
	if (!f->pc)
		return;
	urcu_memb_read_lock();
	host = migram_ram_block_host(f->block);
	urcu_memb_read_unlock();
	migram_postcopy_placer_init(&pl, false);
	buf = migram_postcopy_placer_buffer(f->pc, &pl, "ram", 3 * P);
	g_assert_nonnull(buf);
	memset(buf, 0xab, P);
	g_assert_true(migram_postcopy_place(f->pc, &pl, "ram", 3 * P, false, 0,
					    &error));
	g_assert_no_error(error);
	g_assert_cmpint(g_atomic_int_get(&f->calls), ==, 3);
	t.addr = host + 3 * P;
	th = g_thread_new("toucher", touch_main, &t);
	g_assert_true(wait_done(&t));
	g_thread_join(th);
	g_assert_cmphex(t.seen, ==, 0xab);
	migram_postcopy_dst_stats(f->pc, &st);
	g_assert_cmpuint(st.placed_pages, ==, 1);
	migram_postcopy_placer_clear(&pl);
}

/*
 * One fault held for a few ms: its latency lands in the bucket the header
 * names ([2^i, 2^(i+1)) us), and with one sample p50 = p99 = max.
 */
static void test_latency_histogram(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramPostcopyStats st;
	DstPlacer pl;
	Toucher t = { 0 };
	GThread *th;
	guint8 *host;
	uint64_t n = 0;
	unsigned int bucket = 0;

	(void)data;
	if (!f->pc)
		return;
	urcu_memb_read_lock();
	host = migram_ram_block_host(f->block);
	urcu_memb_read_unlock();
	t.addr = host + 7 * P;
	th = g_thread_new("toucher", touch_main, &t);
	do {
		g_usleep(1000);
		migram_postcopy_dst_stats(f->pc, &st);
	} while (st.faults == 0);
	g_usleep(3000);
	migram_postcopy_placer_init(&pl, false);
	memset(migram_postcopy_placer_buffer(f->pc, &pl, "ram", 7 * P), 1, P);
	g_assert_true(migram_postcopy_place(f->pc, &pl, "ram", 7 * P, false, 0,
					    &error));
	g_assert_true(wait_done(&t));
	g_thread_join(th);
	migram_postcopy_dst_stats(f->pc, &st);
	for (unsigned int i = 0; i < MIGRAM_LATENCY_BUCKETS; i++) {
		n += st.latency_hist[i];
		if (st.latency_hist[i])
			bucket = i;
	}
	g_test_message("latency %" G_GUINT64_FORMAT " us in bucket %u",
		       st.latency_max_us, bucket);
	g_assert_cmpuint(n, ==, 1);
	g_assert_cmpuint(st.latency_max_us, >=, 3000);
	g_assert_cmpuint(st.latency_max_us, >=, UINT64_C(1) << bucket);
	g_assert_cmpuint(st.latency_max_us, <, UINT64_C(1) << (bucket + 1));
	g_assert_cmpuint(st.latency_p50_us, ==, st.latency_max_us);
	g_assert_cmpuint(st.latency_p99_us, ==, st.latency_max_us);
	migram_postcopy_placer_clear(&pl);
}

/* Quantiles from a histogram: the bucket's upper end, capped at max. */
static void test_latency_quantiles(void)
{
	uint64_t hist[MIGRAM_LATENCY_BUCKETS] = { 0 };

	g_assert_cmpuint(migram_postcopy_latency_quantile(hist, 0, 500), ==, 0);
	hist[3] = 90;  /* [8, 16) us */
	hist[10] = 10; /* [1024, 2048) us */
	g_assert_cmpuint(migram_postcopy_latency_quantile(hist, 1500, 500), ==,
			 15);
	g_assert_cmpuint(migram_postcopy_latency_quantile(hist, 1500, 890), ==,
			 15);
	g_assert_cmpuint(migram_postcopy_latency_quantile(hist, 1500, 900), ==,
			 1500);
	g_assert_cmpuint(migram_postcopy_latency_quantile(hist, 1500, 990), ==,
			 1500);
	hist[31] = 1; /* 2^31 us and more: open-ended, so the max */
	g_assert_cmpuint(
		migram_postcopy_latency_quantile(hist, UINT64_C(1) << 40, 1000),
		==, UINT64_C(1) << 40);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	g_test_add("/migration/postcopy-place/zero-fill-retries", Fixture,
		   GINT_TO_POINTER(3), fixture_listen, test_zero_fill_retries,
		   fixture_free);
	g_test_add("/migration/postcopy-place/copy-retries", Fixture,
		   GINT_TO_POINTER(2), fixture_listen, test_copy_retries,
		   fixture_free);
	g_test_add("/migration/postcopy-place/latency-histogram", Fixture,
		   GINT_TO_POINTER(0), fixture_listen, test_latency_histogram,
		   fixture_free);
	g_test_add_func("/migration/postcopy-place/latency-quantiles",
			test_latency_quantiles);
	return g_test_run();
}
