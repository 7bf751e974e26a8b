/* SPDX-License-Identifier: MIT */
/*
 * Continuous checkpoints (include/migram/checkpoint.h): a primary with
 * writer threads checkpoints to a standby over a socketpair and the
 * standby's memory is compared byte for byte with the primary's memory
 * at each pause; every truncation and every single-byte corruption of a
 * valid stream fails cleanly and leaves the standby at the last applied
 * epoch (the harness checks it); another layout is refused.
 */
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <migram/checkpoint.h>
#include <migram/migram.h>

#include "ckpt-harness.h"

#define WRITERS 4
#define EPOCHS 12
#define NBLK 2

static const uint64_t blk_pages[NBLK] = { 1024, 256 };

typedef struct {
	MigramRamList *src_list, *dst_list;
	uint8_t *src[NBLK], *dst[NBLK], *ref[NBLK];
	unsigned long *dirty[NBLK]; /* set atomically by the writers */
	pthread_rwlock_t pause;     /* writers read-lock, the pause writes;
				       writer-preferring, or the pause starves */
	int stop;                   /* atomic */
	int fds[2];
} Fixture;

static MigramRamList *make_list(uint8_t **host)
{
	static const char *const names[NBLK] = { "pc.ram", "vga" };
	MigramRamList *list = migram_ram_list_new();
	for (int i = 0; i < NBLK; i++) {
		MigramRamBlockConfig c = { .idstr = names[i],
					   .used_length = blk_pages[i] * 4096,
					   .backend = MIGRAM_RAM_BACKEND_ANON };
		MigramRamBlock *b = migram_ram_list_add(list, &c, NULL);
		g_assert_nonnull(b);
		host[i] = migram_ram_block_host(b);
	}
	return list;
}

static void fx_setup(Fixture *f, gconstpointer data)
{
	(void)data;
	memset(f, 0, sizeof(*f));
	f->src_list = make_list(f->src);
	f->dst_list = make_list(f->dst);
	for (int i = 0; i < NBLK; i++) {
		f->ref[i] = g_malloc(blk_pages[i] * 4096);
		f->dirty[i] = g_new0(unsigned long, (blk_pages[i] + 63) / 64);
		memset(f->src[i], 0x40 + i, blk_pages[i] * 4096 / 2);
	}
	pthread_rwlockattr_t a;
	pthread_rwlockattr_init(&a);
	pthread_rwlockattr_setkind_np(
		&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&f->pause, &a);
	pthread_rwlockattr_destroy(&a);
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, f->fds), ==, 0);
}

static void fx_teardown(Fixture *f, gconstpointer data)
{
	(void)data;
	for (int i = 0; i < NBLK; i++) {
		g_free(f->ref[i]);
		g_free(f->dirty[i]);
	}
	pthread_rwlock_destroy(&f->pause);
	migram_ram_list_free(f->src_list);
	migram_ram_list_free(f->dst_list);
	close(f->fds[0]);
	close(f->fds[1]);
}

static gpointer writer(gpointer p)
{
	Fixture *f = p;
	GRand *rnd = g_rand_new();
	while (!g_atomic_int_get(&f->stop)) {
		pthread_rwlock_rdlock(&f->pause);
		for (int k = 0; k < 64; k++) {
			int b = g_rand_int_range(rnd, 0, NBLK);
			uint64_t pg = (uint64_t)g_rand_int_range(
				rnd, 0, (gint32)blk_pages[b]);
			uint64_t off = pg * 4096 +
				       (uint64_t)g_rand_int_range(rnd, 0, 4088);
			uint64_t v = g_rand_int(rnd) | 1;
			__atomic_store_n((uint64_t *)(void *)(f->src[b] +
							      (off & ~7ull)),
					 v, __ATOMIC_RELAXED);
			__atomic_fetch_or(&f->dirty[b][pg / 64],
					  1ul << (pg % 64), __ATOMIC_RELAXED);
		}
		pthread_rwlock_unlock(&f->pause);
	}
	g_rand_free(rnd);
	return NULL;
}

/* The device state the stress test attaches to odd epochs. */
static GBytes *dev_for(unsigned e)
{
	GString *g = g_string_new(NULL);
	for (unsigned i = 0; i < 50 + e * 13; i++)
		g_string_append_printf(g, "e%u:%u ", e, i);
	return g_string_free_to_bytes(g);
}

static gpointer standby(gpointer p)
{
	Fixture *f = p;
	g_autoptr(GError) err = NULL;
	MigramCheckpointReceiver *r = migram_checkpoint_receiver_new(
		f->dst_list, f->fds[1], f->fds[1], &err);
	g_assert_no_error(err);
	bool closed = false;
	unsigned n = 0;
	while (!closed) {
		g_assert_true(migram_checkpoint_receiver_next(r, NULL, &closed,
							      &err));
		g_assert_no_error(err);
		n += !closed;
		/* The device state of the last odd epoch applied, or none
		 * before epoch 1: epochs without one keep the earlier one. */
		g_autoptr(GBytes) dev =
			migram_checkpoint_receiver_device_state(r);
		if (n < 2) {
			g_assert_null(dev);
		} else {
			unsigned last = n - 1;
			g_autoptr(GBytes) want = dev_for(last % 2 ? last
								  : last - 1);
			g_assert_nonnull(dev);
			g_assert_true(g_bytes_equal(dev, want));
		}
	}
	g_assert_cmpuint(n, ==, EPOCHS);
	migram_checkpoint_receiver_free(r);
	return NULL;
}

/* Writers run throughout; after each ack the standby equals the pause. */
static void test_stress(Fixture *f, gconstpointer data)
{
	(void)data;
	g_autoptr(GError) err = NULL;
	GThread *sb = g_thread_new("standby", standby, f);
	MigramCheckpointSender *s =
		migram_checkpoint_sender_new(f->src_list, f->fds[0], &err);
	g_assert_no_error(err);
	GThread *w[WRITERS];
	for (int i = 0; i < WRITERS; i++)
		w[i] = g_thread_new("writer", writer, f);
	uint64_t shipped = 0;
	for (unsigned e = 0; e < EPOCHS; e++) {
		g_usleep(5000);
		pthread_rwlock_wrlock(&f->pause);
		const unsigned long *dm[NBLK];
		unsigned long *snap[NBLK];
		for (int i = 0; i < NBLK; i++) {
			size_t words = (blk_pages[i] + 63) / 64;
			snap[i] = g_memdup2(f->dirty[i], words * 8);
			memset(f->dirty[i], 0, words * 8);
			dm[i] = snap[i];
			memcpy(f->ref[i], f->src[i], blk_pages[i] * 4096);
		}
		g_assert_true(
			migram_checkpoint_sender_stage(s, dm, NULL, &err));
		g_assert_no_error(err);
		if (e % 2) {
			g_autoptr(GBytes) d = dev_for(e);
			gsize dl;
			const void *dd = g_bytes_get_data(d, &dl);
			/* Replaced before shipping: the second one counts. */
			g_assert_true(migram_checkpoint_sender_set_device_state(
				s, "x", 1, &err));
			g_assert_true(migram_checkpoint_sender_set_device_state(
				s, dd, dl, &err));
		}
		pthread_rwlock_unlock(&f->pause);
		MigramCheckpointStats st;
		g_assert_true(migram_checkpoint_sender_ship(s, &st, &err));
		g_assert_no_error(err);
		g_assert_cmpuint(st.epoch, ==, e);
		shipped += st.pages;
		for (int i = 0; i < NBLK; i++) {
			g_assert_true(memcmp(f->ref[i], f->dst[i],
					     blk_pages[i] * 4096) == 0);
			g_free(snap[i]);
		}
	}
	g_atomic_int_set(&f->stop, 1);
	for (int i = 0; i < WRITERS; i++)
		g_thread_join(w[i]);
	g_assert_cmpuint(migram_checkpoint_sender_next_epoch(s), ==, EPOCHS);
	/* No bitmaps after the full epoch, then a second stage before ship:
	 * refused, naming the epoch. */
	g_assert_false(migram_checkpoint_sender_stage(s, NULL, NULL, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_clear_error(&err);
	const unsigned long *dm[NBLK] = { f->dirty[0], f->dirty[1] };
	g_assert_true(migram_checkpoint_sender_stage(s, dm, NULL, &err));
	g_assert_false(migram_checkpoint_sender_stage(s, dm, NULL, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(err->message, "epoch"));
	g_clear_error(&err);
	g_assert_false(
		migram_checkpoint_sender_set_device_state(s, "x", 0, &err));
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(err->message, "device state of 0 bytes"));
	g_assert_cmpuint(shipped, >, 0);
	shutdown(f->fds[0], SHUT_WR);
	g_thread_join(sb);
	migram_checkpoint_sender_free(s);
}

static void test_truncated(Fixture *f, gconstpointer data)
{
	(void)f;
	(void)data;
	size_t size, at;
	g_autofree uint8_t *s = ckpt_fuzz_sample(&size, &at);
	unsigned n;
	g_assert_true(ckpt_fuzz_one(s, size, &n, NULL));
	g_assert_cmpuint(n, ==, 2);
	/* The hello is 45 bytes; a stream may end after it or an epoch. */
	for (size_t cut = 0; cut <= size; cut += (cut < 200 ? 1 : 509)) {
		if (cut > at && cut < at + 509)
			cut = at;
		g_autoptr(GError) err = NULL;
		bool ok = ckpt_fuzz_one(s, cut, &n, &err);
		g_assert_true(ok == (cut == 45 || cut == at || cut == size));
		g_assert_cmpuint(n, ==, cut < at ? 0 : cut < size ? 1 : 2);
		if (!ok)
			g_assert_true(err->domain == MIGRAM_ERROR);
	}
}

static void test_corrupt(Fixture *f, gconstpointer data)
{
	(void)f;
	(void)data;
	size_t size, at;
	g_autofree uint8_t *s = ckpt_fuzz_sample(&size, &at);
	/* The device state's record: a corrupt length (up to 64 MiB) may
	 * instead run past the end of the stream, an I/O error. */
	const uint8_t *devs = memmem(s, size, "DEVS", 4);
	g_assert_nonnull(devs);
	size_t dlen_at = (size_t)(devs - s) + 8;
	for (size_t i = 0; i < size;
	     i += (i < 200 || (i + 120 > at && i < at + 32) || i + 80 > size
			   ? 1
			   : 97)) {
		g_autofree uint8_t *c = g_memdup2(s, size);
		c[i] ^= 0x5a;
		g_autoptr(GError) err = NULL;
		unsigned n;
		g_assert_false(ckpt_fuzz_one(c, size, &n, &err));
		if (i >= dlen_at && i < dlen_at + 8 &&
		    g_error_matches(err, MIGRAM_ERROR, MIGRAM_ERROR_IO))
			continue;
		g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
		g_assert_nonnull(strstr(err->message, "offset"));
		g_assert_cmpuint(n, <=, i < at ? 0 : 1);
	}
}

static void test_layout(Fixture *f, gconstpointer data)
{
	(void)data;
	g_autoptr(GError) err = NULL;
	MigramRamList *other = migram_ram_list_new();
	MigramRamBlockConfig c = { .idstr = "pc.ram",
				   .used_length = 512 * 4096,
				   .backend = MIGRAM_RAM_BACKEND_ANON };
	g_assert_nonnull(migram_ram_list_add(other, &c, NULL));
	MigramCheckpointSender *s =
		migram_checkpoint_sender_new(other, f->fds[0], &err);
	g_assert_no_error(err);
	MigramCheckpointReceiver *r = migram_checkpoint_receiver_new(
		f->dst_list, f->fds[1], -1, &err);
	g_assert_null(r);
	g_assert_error(err, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
	g_assert_nonnull(strstr(err->message, "1 blocks, this standby has 2"));
	migram_checkpoint_sender_free(s);
	migram_ram_list_free(other);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fx_setup, fn, fx_teardown)
	ADD("/snapshot/checkpoint/stress", test_stress);
	ADD("/snapshot/checkpoint/truncated", test_truncated);
	ADD("/snapshot/checkpoint/corrupt", test_corrupt);
	ADD("/snapshot/checkpoint/layout", test_layout);
	return g_test_run();
}
