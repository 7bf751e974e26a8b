/* SPDX-License-Identifier: MIT */
/*
 * MigramChannel: encodings, gathering writes across partial writes, exact
 * reads, end of stream, sticky errors, counters, the rate limit and cancel.
 */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <migram/channel.h>
#include <migram/migram.h>

#include "migram-test-util.h"
#include "sender-env.h"
#include "stream-internal.h"

static void pair(int fds[2])
{
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
}

static void test_encodings(void)
{
	int fds[2];
	MigramChannel *w, *r;
	g_autoptr(GError) error = NULL;
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	uint64_t u64;
	char s[256], raw[8];
	guint8 page[4096];

	pair(fds);
	w = migram_channel_new(fds[0], true);
	r = migram_channel_new(fds[1], true);
	memset(page, 0x77, sizeof(page));
	migram_channel_put_u8(w, 0xab);
	migram_channel_put_be16(w, 0x1234);
	migram_channel_put_be32(w, 0x89abcdef);
	migram_channel_put_be64(w, 0x0102030405060708ULL);
	migram_channel_put_counted_string(w, "pc.ram");
	migram_channel_put_counted_string(w, "");
	migram_channel_put_ref(w, page, sizeof(page));
	migram_channel_put_bytes(w, "QEVM", 4);
	g_assert_true(migram_channel_flush(w, &error));
	g_assert_no_error(error);
	/* 1+2+4+8 + 7+1 + 4096 + 4 */
	g_assert_cmpuint(migram_channel_bytes_sent(w), ==, 4123);

	g_assert_true(migram_channel_peek_u8(r, &u8, NULL));
	g_assert_cmphex(u8, ==, 0xab);
	g_assert_cmpuint(migram_channel_read_offset(r), ==, 0);
	g_assert_true(migram_channel_get_u8(r, &u8, NULL));
	g_assert_cmphex(u8, ==, 0xab);
	g_assert_true(migram_channel_get_be16(r, &u16, NULL));
	g_assert_cmphex(u16, ==, 0x1234);
	g_assert_true(migram_channel_get_be32(r, &u32, NULL));
	g_assert_cmphex(u32, ==, 0x89abcdef);
	g_assert_true(migram_channel_get_bytes(r, raw, 8, NULL));
	g_assert_cmpmem(raw, 8, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	g_assert_true(migram_channel_get_counted_string(r, s, NULL));
	g_assert_cmpstr(s, ==, "pc.ram");
	g_assert_true(migram_channel_get_counted_string(r, s, NULL));
	g_assert_cmpstr(s, ==, "");
	g_assert_true(migram_channel_skip(r, 4096, NULL));
	g_assert_true(migram_channel_get_be32(r, &u32, NULL));
	g_assert_cmphex(u32, ==, 0x5145564d);
	g_assert_cmpuint(migram_channel_read_offset(r), ==, 4123);

	/* Then the peer closes: end of stream, not an I/O error. */
	migram_channel_free(w);
	bool end = false;
	g_assert_true(migram_channel_at_end(r, &end, NULL));
	g_assert_true(end);
	g_assert_false(migram_channel_get_be64(r, &u64, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
	g_assert_nonnull(strstr(error->message, "end of stream at byte 4123"));
	migram_channel_free(r);
}

static void test_truncated_is_sticky(void)
{
	int fds[2];
	MigramChannel *r;
	GError *error = NULL;
	uint32_t v;
	uint8_t b;

	pair(fds);
	g_assert_cmpint(write(fds[0], "\x01\x02\x03", 3), ==, 3);
	close(fds[0]);
	r = migram_channel_new(fds[1], true);
	g_assert_false(migram_channel_get_be32(r, &v, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
	g_assert_nonnull(strstr(error->message, "byte 3"));
	g_clear_error(&error);
	/* Sticky: later calls fail the same way and read nothing. */
	g_assert_false(migram_channel_get_u8(r, &b, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
	g_assert_nonnull(migram_channel_error(r));
	g_clear_error(&error);
	migram_channel_free(r);
}

static void test_bad_string_is_sticky(void)
{
	int fds[2];
	MigramChannel *w;
	GError *error = NULL;
	char name[300];

	pair(fds);
	w = migram_channel_new(fds[0], true);
	memset(name, 'a', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	migram_channel_put_counted_string(w, name);
	migram_channel_put_u8(w, 1); /* ignored: the channel has failed */
	g_assert_false(migram_channel_flush(w, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_cmpuint(migram_channel_bytes_sent(w), ==, 0);
	g_clear_error(&error);
	migram_channel_free(w);
	close(fds[1]);
}

typedef struct {
	int fd;
	guint8 *buf;
	size_t len;
	bool ok;
} ReadJob;

static gpointer reader_main(gpointer p)
{
	ReadJob *j = p;
	MigramChannel *r = migram_channel_new(j->fd, false);

	j->ok = migram_channel_get_bytes(r, j->buf, j->len, NULL);
	migram_channel_free(r);
	return NULL;
}

/*
 * Many small items and large references, more than one writev and more
 * than the socket buffer: partial writes must resume exactly.
 */
static void test_gathering(void)
{
	const size_t pages = 3000;
	int fds[2];
	MigramChannel *w;
	guint8 *src = g_malloc(pages * 4096);
	GByteArray *want = g_byte_array_new();
	ReadJob job;
	GThread *t;
	int sndbuf = 8192;

	pair(fds);
	setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	for (size_t i = 0; i < pages * 4096; i++)
		src[i] = (guint8)(i * 7 + i / 4096);
	for (size_t i = 0; i < pages; i++) {
		guint64 hdr = GUINT64_TO_BE(i * 4096 | 8);

		g_byte_array_append(want, (guint8 *)&hdr, 8);
		g_byte_array_append(want, src + i * 4096, 4096);
	}
	/* The reader first: a full queue flushes (and blocks) on its own. */
	job = (ReadJob){ fds[1], g_malloc(want->len), want->len, false };
	t = g_thread_new("reader", reader_main, &job);
	w = migram_channel_new(fds[0], true);
	for (size_t i = 0; i < pages; i++) {
		migram_channel_put_be64(w, i * 4096 | 8);
		migram_channel_put_ref(w, src + i * 4096, 4096);
	}
	g_assert_true(migram_channel_flush(w, NULL));
	g_thread_join(t);
	g_assert_true(job.ok);
	g_assert_cmpmem(job.buf, job.len, want->data, want->len);
	g_assert_cmpuint(migram_channel_bytes_sent(w), ==, want->len);
	migram_channel_free(w);
	close(fds[1]);
	g_free(job.buf);
	g_free(src);
	g_byte_array_unref(want);
}

/*
 * 1 MB/s means 100 kB per 100 ms slice: 350 kB cannot go out in less than
 * three slices.  Only that lower bound is asserted (the limiter sleeps, so
 * it holds on any machine); how close to the limit it runs is measured,
 * not tested.
 */
static void test_rate_limit(void)
{
	const size_t len = 350 * 1000;
	int fds[2];
	MigramChannel *w;
	guint8 *src = g_malloc0(len);
	ReadJob job = { 0 };
	GThread *t;
	uint64_t slices;

	pair(fds);
	w = migram_channel_new(fds[0], true);
	migram_channel_set_rate_limit(w, 1000 * 1000);
	job = (ReadJob){ fds[1], g_malloc(len), len, false };
	t = g_thread_new("reader", reader_main, &job);
	for (size_t off = 0; off < len; off += 10000) {
		migram_channel_put_ref(w, src + off, 10000);
		g_assert_true(migram_channel_flush(w, NULL));
	}
	g_thread_join(t);
	g_assert_true(job.ok);
	/* 350 kB at 100 kB a slice: the writer moved on at least 3 times
	 * (each time it slept to a slice's end or the slice had run out),
	 * which is what spreads it over 300 ms and more */
	slices = migram_channel_rate_slices(w);
	g_test_message("350 kB at 1 MB/s: %" G_GUINT64_FORMAT " slices",
		       slices);
	g_assert_cmpuint(slices, >=, 3);
	/* Lifting the limit: the budget no longer applies. */
	migram_channel_set_rate_limit(w, 0);
	g_assert_false(migram_channel_rate_exceeded(w));
	migram_channel_free(w);
	close(fds[1]);
	g_free(job.buf);
	g_free(src);
}

static gpointer cancel_later(gpointer p)
{
	g_usleep(50 * 1000);
	migram_channel_cancel(p);
	return NULL;
}

static void test_cancel(void)
{
	int fds[2];
	MigramChannel *r;
	GError *error = NULL;
	GThread *t;
	uint64_t v;

	pair(fds);
	r = migram_channel_new(fds[1], true);
	t = g_thread_new("cancel", cancel_later, r);
	/* Blocks: nobody writes.  The cancel must wake it. */
	g_assert_false(migram_channel_get_be64(r, &v, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_CANCELLED);
	g_clear_error(&error);
	g_thread_join(t);
	migram_channel_free(r);
	close(fds[0]);
}

static void test_write_to_closed_peer(void)
{
	int fds[2];
	MigramChannel *w;
	GError *error = NULL;
	guint8 buf[65536] = { 0 };

	pair(fds);
	close(fds[1]);
	w = migram_channel_new(fds[0], true);
	migram_channel_put_bytes(w, buf, sizeof(buf));
	g_assert_false(migram_channel_flush(w, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_nonnull(strstr(error->message, "write"));
	g_clear_error(&error);
	migram_channel_free(w);
}

/* ---- virtual channels (sender-env.h) ------------------------------------ */

typedef struct {
	gint64 now;     /* the virtual clock, us */
	gint64 slept;   /* us slept on it */
	uint64_t bytes; /* taken by the sink */
	uint64_t pages; /* iovecs of one page: referenced payloads */
	bool refuse;    /* the sink fails */
	MigramClock clock;
	MigramChannelSink sink;
} Virtual;

static gint64 v_now(void *opaque)
{
	return ((Virtual *)opaque)->now;
}

static void v_sleep(void *opaque, gint64 us)
{
	Virtual *v = opaque;

	v->now += us;
	v->slept += us;
}

static bool v_write(void *opaque, const struct iovec *iov, int n,
		    GError **error)
{
	Virtual *v = opaque;

	if (v->refuse) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO,
			    "test sink: refused %d iovecs", n);
		return false;
	}
	for (int i = 0; i < n; i++) {
		v->bytes += iov[i].iov_len;
		v->pages += iov[i].iov_len == 4096;
	}
	return true;
}

static void virtual_set_up(Virtual *v, gconstpointer data)
{
	(void)data;
	*v = (Virtual){ .now = 1000000 };
	v->clock = (MigramClock){ v_now, v_sleep, v };
	v->sink = (MigramChannelSink){ v_write, v };
}

static void virtual_tear_down(Virtual *v, gconstpointer data)
{
	(void)v;
	(void)data;
}

/* Bytes go to the sink; referenced payloads are passed, not copied. */
static void test_virtual_sink(Virtual *v, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramChannel *ch = migram_channel_new_virtual(&v->sink, &v->clock);
	static guint8 page[4096];

	(void)data;
	for (int i = 0; i < 3000; i++) {
		migram_channel_put_be64(ch, (uint64_t)i);
		migram_channel_put_ref(ch, page, sizeof(page));
	}
	g_assert_true(migram_channel_flush(ch, &error));
	g_assert_no_error(error);
	g_assert_cmpuint(v->bytes, ==, 3000 * (8 + 4096));
	g_assert_cmpuint(v->pages, ==, 3000);
	g_assert_cmpuint(migram_channel_bytes_sent(ch), ==, v->bytes);
	/* a virtual channel has nothing to read */
	g_assert_false(migram_channel_get_bytes(ch, page, 1, &error));
	g_assert_nonnull(error);
	migram_channel_free(ch);
}

/* A sink's failure is the channel's sticky error. */
static void test_virtual_refused(Virtual *v, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramChannel *ch = migram_channel_new_virtual(&v->sink, &v->clock);

	(void)data;
	v->refuse = true;
	migram_channel_put_be32(ch, 7);
	g_assert_false(migram_channel_flush(ch, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_nonnull(strstr(error->message, "refused"));
	g_clear_error(&error);
	v->refuse = false;
	migram_channel_put_be32(ch, 7);
	g_assert_false(migram_channel_flush(ch, &error));
	g_assert_cmpuint(v->bytes, ==, 0);
	migram_channel_free(ch);
}

/* The rate limit reads and sleeps on the virtual clock only: every sleep
 * went through the hook (v->slept), so none was real. */
static void test_virtual_rate_limit(Virtual *v, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramChannel *ch = migram_channel_new_virtual(&v->sink, &v->clock);
	static guint8 page[4096];

	(void)data;
	/* 10 MB/s: 1 MB per 100 ms slice; 50 MB take about 5 s */
	migram_channel_set_rate_limit(ch, 10 * 1000 * 1000);
	for (int i = 0; i < 50 * 1000 * 1000 / 4096; i++) {
		migram_channel_put_ref(ch, page, sizeof(page));
		if (i % 256 == 255)
			g_assert_true(migram_channel_flush(ch, &error));
	}
	g_assert_true(migram_channel_flush(ch, &error));
	g_assert_cmpint(v->slept, >=, 4800000);
	g_assert_cmpint(v->slept, <=, 5100000);
	migram_channel_free(ch);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	/*
	 * SIGPIPE is deliberately not ignored: writing to a socket whose peer
	 * closed must be an error, never a signal (MSG_NOSIGNAL).
	 */
	g_test_add_func("/migration/channel/encodings", test_encodings);
	g_test_add_func("/migration/channel/truncated-is-sticky",
			test_truncated_is_sticky);
	g_test_add_func("/migration/channel/bad-string-is-sticky",
			test_bad_string_is_sticky);
	g_test_add_func("/migration/channel/gathering", test_gathering);
	g_test_add_func("/migration/channel/rate-limit", test_rate_limit);
	g_test_add("/migration/channel/virtual-sink", Virtual, NULL,
		   virtual_set_up, test_virtual_sink, virtual_tear_down);
	g_test_add("/migration/channel/virtual-refused", Virtual, NULL,
		   virtual_set_up, test_virtual_refused, virtual_tear_down);
	g_test_add("/migration/channel/virtual-rate-limit", Virtual, NULL,
		   virtual_set_up, test_virtual_rate_limit, virtual_tear_down);
	g_test_add_func("/migration/channel/cancel", test_cancel);
	g_test_add_func("/migration/channel/write-to-closed-peer",
			test_write_to_closed_peer);
	return g_test_run();
}
