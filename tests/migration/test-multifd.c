/* SPDX-License-Identifier: MIT */
/*
 * Data channels (multifd): the wire format, every hostile packet, the
 * sending and receiving threads over socket pairs with 1, 2 and 4
 * channels (byte for byte), the late-older-copy race, a channel dying,
 * and cancel.
 */
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <migram/bitmap.h>
#include <migram/migram.h>

#include "migram-test-util.h"
#include "multifd.h"

#define PAGE MIGRAM_MULTIFD_PAGE
#define BIG_PAGES 1024 /* 4 MiB */
#define SMALL_PAGES 2

typedef struct {
	uint8_t *src_big, *src_small; /* source "guest" memory */
	uint8_t *dst_big, *dst_small; /* destination memory */
	unsigned long *recv_big, *recv_small;
	MigramMultifdBlock blocks[2];
	int snd[4], rcv[4]; /* socket pair ends, -1 when closed */
	uint8_t uuid[16];
} Fixture;

static void fx_setup(Fixture *f, gconstpointer data)
{
	(void)data;
	f->src_big = g_malloc0(BIG_PAGES * PAGE);
	f->src_small = g_malloc0(SMALL_PAGES * PAGE);
	f->dst_big = g_malloc0(BIG_PAGES * PAGE);
	f->dst_small = g_malloc0(SMALL_PAGES * PAGE);
	f->recv_big = migram_bitmap_new(BIG_PAGES);
	f->recv_small = migram_bitmap_new(SMALL_PAGES);
	f->blocks[0] = (MigramMultifdBlock){ "pc.ram", f->dst_big,
					     BIG_PAGES * PAGE, f->recv_big };
	f->blocks[1] = (MigramMultifdBlock){ "small", f->dst_small,
					     SMALL_PAGES * PAGE,
					     f->recv_small };
	for (int i = 0; i < 4; i++) {
		int sv[2];

		g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
		f->snd[i] = sv[0];
		f->rcv[i] = sv[1];
	}
	for (int i = 0; i < 16; i++)
		f->uuid[i] = (uint8_t)(0xa0 + i);
}

static void fx_teardown(Fixture *f, gconstpointer data)
{
	(void)data;
	for (int i = 0; i < 4; i++) {
		if (f->snd[i] >= 0)
			close(f->snd[i]);
		if (f->rcv[i] >= 0)
			close(f->rcv[i]);
	}
	g_free(f->src_big);
	g_free(f->src_small);
	g_free(f->dst_big);
	g_free(f->dst_small);
	migram_bitmap_free(f->recv_big);
	migram_bitmap_free(f->recv_small);
}

/* ---- the wire ---- */

static void test_header_roundtrip(void)
{
	uint8_t buf[MIGRAM_MULTIFD_HDR_SIZE + 8 * 4];
	uint64_t offs[3] = { 0, 0x2000, 0x5000 }, back[3];
	MigramMultifdHdr h = { .flags = MIGRAM_MULTIFD_FLAG_SYNC,
			       .pages_alloc = 4,
			       .normal = 2,
			       .zero = 1,
			       .next_packet_size = 2 * PAGE,
			       .packet_num = 77 },
			 out;
	g_autoptr(GError) error = NULL;

	g_strlcpy(h.block, "pc.ram", sizeof(h.block));
	g_assert_cmpuint(migram_multifd_encode_hdr(buf, &h, offs), ==,
			 sizeof(buf));
	/* QEMU's layout: magic, version, flags, pages_alloc, normal */
	g_assert_cmpuint(buf[0], ==, 0x11);
	g_assert_cmpuint(buf[3], ==, 0x44);
	g_assert_cmpuint(buf[7], ==, 1);
	g_assert_cmpuint(buf[11], ==, 1);
	g_assert_cmpuint(buf[15], ==, 4);
	/* the unused tail of the offset array is zero */
	for (size_t i = MIGRAM_MULTIFD_HDR_SIZE + 24; i < sizeof(buf); i++)
		g_assert_cmpuint(buf[i], ==, 0);
	g_assert_cmpuint(buf[19], ==, 2);
	g_assert_cmpuint(buf[31], ==, 77);
	g_assert_cmpuint(buf[35], ==, 1); /* zero_pages (QEMU 9.0's place) */
	g_assert_cmpstr((char *)buf + 64, ==, "pc.ram");
	g_assert_true(migram_multifd_parse_hdr(buf, 0, &out, &error));
	g_assert_no_error(error);
	g_assert_cmpuint(out.normal, ==, 2);
	g_assert_cmpuint(out.zero, ==, 1);
	g_assert_cmpuint(out.packet_num, ==, 77);
	g_assert_cmpstr(out.block, ==, "pc.ram");
	g_assert_true(
		migram_multifd_parse_offsets(buf + MIGRAM_MULTIFD_HDR_SIZE, 3,
					     &out, 0x6000, 0, back, &error));
	g_assert_cmpmem(back, sizeof(back), offs, sizeof(offs));
}

static void test_init_checks(void)
{
	uint8_t init[MIGRAM_MULTIFD_INIT_SIZE], uuid[16] = { 1, 2, 3 },
						other[16] = { 9 };
	MigramMultifdIds ids = { { 0 } };
	uint8_t id;
	GError *error = NULL;

	migram_multifd_encode_init(init, uuid, 2);
	g_assert_true(migram_multifd_parse_init(init, 4, uuid, &ids, "c0", &id,
						&error));
	g_assert_cmpuint(id, ==, 2);
	/* duplicate */
	g_assert_false(migram_multifd_parse_init(init, 4, uuid, &ids, "c1", &id,
						 &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
	g_assert_nonnull(strstr(error->message, "c1: channel id 2 announced "
						"twice"));
	g_clear_error(&error);
	/* out of range */
	migram_multifd_encode_init(init, uuid, 4);
	g_assert_false(migram_multifd_parse_init(init, 4, uuid, &ids, "c2", &id,
						 &error));
	g_assert_nonnull(strstr(error->message, "channel id 4 out of range"));
	g_clear_error(&error);
	/* another migration */
	migram_multifd_encode_init(init, other, 0);
	g_assert_false(migram_multifd_parse_init(init, 4, uuid, &ids, "c3", &id,
						 &error));
	g_assert_nonnull(strstr(error->message, "UUID differs"));
	g_clear_error(&error);
	/* magic, version */
	migram_multifd_encode_init(init, uuid, 0);
	init[0] = 0x51;
	g_assert_false(migram_multifd_parse_init(init, 4, NULL, &ids, "c4", &id,
						 &error));
	g_assert_nonnull(strstr(error->message, "c4: initial packet magic"));
	g_clear_error(&error);
	migram_multifd_encode_init(init, uuid, 0);
	init[7] = 2;
	g_assert_false(migram_multifd_parse_init(init, 4, NULL, &ids, "c5", &id,
						 &error));
	g_assert_nonnull(strstr(error->message, "version 2"));
	g_clear_error(&error);
}

/* ---- hostile packets, through the real reading code ---- */

typedef struct {
	const char *name;
	void (*mutate)(uint8_t *hdr, size_t *len);
	const char *expect; /* in the message */
} Hostile;

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static void m_magic(uint8_t *h, size_t *len)
{
	(void)len;
	put32(h, 0xdeadbeef);
}
static void m_version(uint8_t *h, size_t *len)
{
	(void)len;
	put32(h + 4, 7);
}
static void m_block(uint8_t *h, size_t *len)
{
	(void)len;
	memcpy(h + 64, "nosuch", 7);
}
static void m_outside(uint8_t *h, size_t *len)
{
	(void)len;
	put64(h + MIGRAM_MULTIFD_HDR_SIZE, (uint64_t)SMALL_PAGES * PAGE);
}
static void m_unaligned(uint8_t *h, size_t *len)
{
	(void)len;
	put64(h + MIGRAM_MULTIFD_HDR_SIZE, 0x10);
}
static void m_huge_offset(uint8_t *h, size_t *len)
{
	(void)len;
	put64(h + MIGRAM_MULTIFD_HDR_SIZE, UINT64_MAX - PAGE + 1);
}
static void m_alloc(uint8_t *h, size_t *len)
{
	(void)len;
	put32(h + 12, 129);
}
static void m_count(uint8_t *h, size_t *len)
{
	(void)len;
	put32(h + 32, 128); /* 1 normal + 128 zero > 128 */
}
static void m_size(uint8_t *h, size_t *len)
{
	(void)len;
	put32(h + 20, PAGE - 1);
}
static void m_flags(uint8_t *h, size_t *len)
{
	(void)len;
	put32(h + 8, 0x100);
}
static void m_zlib(uint8_t *h, size_t *len)
{
	(void)len;
	put32(h + 8, 0x2);
}
static void m_name(uint8_t *h, size_t *len)
{
	(void)len;
	memset(h + 64, 'x', 256);
}
static void m_short(uint8_t *h, size_t *len)
{
	(void)h;
	*len -= 100; /* ends inside the payload */
}

static const Hostile hostile[] = {
	{ "magic", m_magic, "packet 5: magic 0xdeadbeef" },
	{ "version", m_version, "packet 5: version 7" },
	{ "unknown-block", m_block, "packet 5: unknown block 'nosuch'" },
	{ "outside", m_outside,
	  "packet 5: offset 0x2000 outside block 'small'" },
	{ "unaligned", m_unaligned,
	  "offset 0x10 in block 'small' is not "
	  "page-aligned" },
	{ "wrapping-offset", m_huge_offset, "outside block 'small'" },
	{ "pages-alloc", m_alloc, "129 pages allocated, at most 128" },
	{ "count", m_count, "1 normal + 128 zero pages" },
	{ "payload-size", m_size, "payload of 4095 bytes for 1 pages" },
	{ "unknown-flags", m_flags, "unknown flags 0x100" },
	{ "compressed", m_zlib, "only zstd" },
	{ "unterminated-name", m_name, "not terminated" },
	{ "short", m_short, "stream ended" },
};

static void test_hostile(Fixture *f, gconstpointer data)
{
	const Hostile *t = data;
	uint8_t pkt[MIGRAM_MULTIFD_HDR_SIZE + 8 * 128 + PAGE];
	uint64_t off = PAGE, syncs = 0;
	MigramMultifdHdr h = { .pages_alloc = 128,
			       .normal = 1,
			       .next_packet_size = PAGE,
			       .packet_num = 5 };
	size_t len;
	int fd = memfd_create("multifd-hostile", 0);
	g_autoptr(GError) error = NULL;

	g_assert_cmpint(fd, >=, 0);
	g_strlcpy(h.block, "small", sizeof(h.block));
	len = migram_multifd_encode_hdr(pkt, &h, &off);
	memset(pkt + len, 0x5a, PAGE);
	len += PAGE;
	t->mutate(pkt, &len);
	g_assert_cmpint(write(fd, pkt, len), ==, (ssize_t)len);
	g_assert_cmpint(lseek(fd, 0, SEEK_SET), ==, 0);
	g_assert_false(
		migram_multifd_recv_drain_fd(f->blocks, 2, fd, &syncs, &error));
	g_assert_nonnull(error);
	if (!strstr(error->message, t->expect))
		g_error("'%s' lacks '%s'", error->message, t->expect);
	g_assert_nonnull(strstr(error->message, "data channel 0"));
	/* nothing written outside the one page the packet may name */
	for (size_t i = 0; i < SMALL_PAGES * PAGE; i++)
		if (i < PAGE || i >= 2 * PAGE)
			g_assert_cmpuint(f->dst_small[i], ==, 0);
	close(fd);
}

/* ---- threads ---- */

/* Entries of a /proc/self directory (threads, fds). */
static unsigned int count_dir(const char *path)
{
	GDir *d = g_dir_open(path, 0, NULL);
	unsigned int n = 0;

	g_assert_nonnull(d);
	while (g_dir_read_name(d))
		n++;
	g_dir_close(d);
	return n;
}

static void fill(Fixture *f, uint32_t seed)
{
	GRand *r = g_rand_new_with_seed(seed);

	for (size_t p = 0; p < BIG_PAGES; p++) {
		uint8_t *pg = f->src_big + p * PAGE;

		if (p % 5 == 0) {
			memset(pg, 0, PAGE); /* a zero page */
			continue;
		}
		for (size_t i = 0; i < PAGE; i += 4)
			*(uint32_t *)(pg + i) = g_rand_int(r);
	}
	memset(f->src_small, 0x33, SMALL_PAGES * PAGE);
	g_rand_free(r);
}

static void send_all(Fixture *f, MigramMultifdSend *s)
{
	g_autoptr(GError) error = NULL;

	for (uint64_t p = 0; p < BIG_PAGES; p++)
		g_assert_true(migram_multifd_send_queue(s, "pc.ram", f->src_big,
							p * PAGE, &error));
	for (uint64_t p = 0; p < SMALL_PAGES; p++)
		g_assert_true(migram_multifd_send_queue(
			s, "small", f->src_small, p * PAGE, &error));
	g_assert_true(migram_multifd_send_sync(s, &error));
	g_assert_no_error(error);
}

typedef struct {
	MigramMultifdRecv *r;
	unsigned int syncs;
	bool ok;
	GError *error;
} SyncJob;

static gpointer sync_thread(gpointer opaque)
{
	SyncJob *j = opaque;

	j->ok = true;
	for (unsigned int i = 0; i < j->syncs && j->ok; i++)
		j->ok = migram_multifd_recv_sync(j->r, &j->error);
	return NULL;
}

static void test_transfer(Fixture *f, gconstpointer data)
{
	unsigned int n = GPOINTER_TO_UINT(data);
	g_autoptr(GError) error = NULL;
	MigramMultifdSend *s;
	MigramMultifdRecv *r;
	SyncJob job = { 0 };
	GThread *t;
	uint64_t pages, zero, bytes, rp, rz;
	int rfds[4];

	unsigned int threads0 = count_dir("/proc/self/task"),
		     fds0 = count_dir("/proc/self/fd");

	/* the receiver sees the connections in another order */
	for (unsigned int i = 0; i < n; i++)
		rfds[i] = f->rcv[n - 1 - i];
	fill(f, 1);
	memset(f->dst_big + 5 * PAGE, 0x11, PAGE); /* stale: must be zeroed */
	s = migram_multifd_send_new(n, f->snd, f->uuid, 0, &error);
	g_assert_no_error(error);
	r = migram_multifd_recv_new(f->blocks, 2, n, rfds, f->uuid, &error);
	g_assert_no_error(error);
	job.r = r;
	job.syncs = 3;
	t = g_thread_new("sync", sync_thread, &job);
	/* three sections, the source changing between them */
	send_all(f, s);
	fill(f, 2);
	send_all(f, s);
	fill(f, 3);
	send_all(f, s);
	g_thread_join(t);
	g_assert_no_error(job.error);
	g_assert_true(job.ok);
	g_assert_cmpmem(f->dst_big, BIG_PAGES * PAGE, f->src_big,
			BIG_PAGES * PAGE);
	g_assert_cmpmem(f->dst_small, SMALL_PAGES * PAGE, f->src_small,
			SMALL_PAGES * PAGE);
	for (size_t p = 0; p < BIG_PAGES; p++)
		g_assert_true(migram_bitmap_test_bit(f->recv_big, p));
	migram_multifd_send_counts(s, &pages, &zero, &bytes);
	migram_multifd_recv_counts(r, &rp, &rz);
	g_assert_cmpuint(zero, ==, 3 * ((BIG_PAGES + 4) / 5));
	g_assert_cmpuint(pages + zero, ==, 3 * (BIG_PAGES + SMALL_PAGES));
	g_assert_cmpuint(rp, ==, pages);
	g_assert_cmpuint(rz, ==, zero);
	/* zero pages cost 8 bytes each: bytes are payloads plus headers */
	g_assert_cmpuint(bytes, <, pages * PAGE + 64 * PAGE);
	migram_multifd_send_free(s);
	migram_multifd_recv_free(r);
	/* every channel thread joined, no fd opened or closed */
	g_assert_cmpuint(count_dir("/proc/self/task"), ==, threads0);
	g_assert_cmpuint(count_dir("/proc/self/fd"), ==, fds0);
}

/* Bytes waiting unread on a receiving socket. */
static int unread(int fd)
{
	int n = 0;

	g_assert_cmpint(ioctl(fd, FIONREAD, &n), ==, 0);
	return n;
}

static size_t packet(uint8_t *buf, const char *block, uint64_t off,
		     uint8_t fill_byte, bool sync, uint64_t num)
{
	MigramMultifdHdr h = { .flags = sync ? MIGRAM_MULTIFD_FLAG_SYNC : 0,
			       .pages_alloc = 128,
			       .normal = block ? 1 : 0,
			       .next_packet_size = block ? PAGE : 0,
			       .packet_num = num };
	size_t len;

	if (block)
		g_strlcpy(h.block, block, sizeof(h.block));
	len = migram_multifd_encode_hdr(buf, &h, &off);
	if (block) {
		memset(buf + len, fill_byte, PAGE);
		len += PAGE;
	}
	return len;
}

static void send_bytes(int fd, const uint8_t *b, size_t n)
{
	g_assert_cmpint(write(fd, b, n), ==, (ssize_t)n);
}

/*
 * Page 3 goes in section 1 on channel 0 (old copy 0xAA) and in section 2
 * on channel 1 (new copy 0xBB).  Channel 1's bytes all arrive first; the
 * old copy on channel 0 arrives last.  Channel 1 must stop at its SYNC
 * until section 1 is complete, so the new copy wins.
 */
static void test_late_old_copy(Fixture *f, gconstpointer data)
{
	uint8_t init[MIGRAM_MULTIFD_INIT_SIZE];
	uint8_t buf[3 * (MIGRAM_MULTIFD_HDR_SIZE + 8 * 128 + PAGE)];
	size_t n, rest;
	g_autoptr(GError) error = NULL;
	MigramMultifdRecv *r;
	SyncJob job = { 0 };
	GThread *t;
	uint8_t want[PAGE];

	(void)data;
	for (int i = 0; i < 2; i++) {
		migram_multifd_encode_init(init, f->uuid, (uint8_t)i);
		send_bytes(f->snd[i], init, sizeof(init));
	}
	r = migram_multifd_recv_new(f->blocks, 2, 2, f->rcv, f->uuid, &error);
	g_assert_no_error(error);
	/* channel 1: SYNC (section 1), new copy, SYNC (section 2) */
	n = packet(buf, NULL, 0, 0, true, 0);
	rest = packet(buf + n, "pc.ram", 3 * PAGE, 0xBB, false, 1);
	rest += packet(buf + n + rest, NULL, 0, 0, true, 2);
	send_bytes(f->snd[1], buf, n + rest);
	/* channel 1 read its SYNC and waits: the rest stays unread */
	while (unread(f->rcv[1]) != (int)rest)
		g_usleep(1000);
	g_usleep(20 * 1000);
	g_assert_cmpint(unread(f->rcv[1]), ==, (int)rest);
	g_assert_cmpuint(f->dst_big[3 * PAGE], ==, 0);
	/* the main stream reaches both sync points; then channel 0's old
	 * copy arrives */
	job.r = r;
	job.syncs = 2;
	t = g_thread_new("sync", sync_thread, &job);
	n = packet(buf, "pc.ram", 3 * PAGE, 0xAA, true, 0);
	n += packet(buf + n, NULL, 0, 0, true, 1);
	send_bytes(f->snd[0], buf, n);
	g_thread_join(t);
	g_assert_true(job.ok);
	g_assert_no_error(job.error);
	memset(want, 0xBB, sizeof(want));
	g_assert_cmpmem(f->dst_big + 3 * PAGE, PAGE, want, PAGE);
	migram_multifd_recv_free(r);
}

/* One destination connection dies: the sender's next sync fails naming
 * the channel; the receiver's sync fails too. */
static gpointer drain_thread(gpointer opaque)
{
	int fd = *(int *)opaque;
	uint8_t sink[65536];

	while (read(fd, sink, sizeof(sink)) > 0)
		;
	return NULL;
}

static void test_channel_dies(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramMultifdSend *s;
	GThread *drain;
	bool ok = true;

	(void)data;
	fill(f, 4);
	s = migram_multifd_send_new(2, f->snd, f->uuid, 0, &error);
	g_assert_no_error(error);
	close(f->rcv[1]);
	f->rcv[1] = -1;
	/* channel 0 is read to its end, so it never blocks */
	drain = g_thread_new("drain", drain_thread, &f->rcv[0]);
	for (int round = 0; ok && round < 100; round++) {
		for (uint64_t p = 0; ok && p < BIG_PAGES; p++)
			ok = migram_multifd_send_queue(s, "pc.ram", f->src_big,
						       p * PAGE, &error);
		ok = ok && migram_multifd_send_sync(s, &error);
	}
	g_assert_false(ok);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_nonnull(strstr(error->message, "data channel 1"));
	migram_multifd_send_cancel(s);
	migram_multifd_send_free(s);
	g_thread_join(drain);
}

/* A black-holed data channel (open, never read; found by the torture
 * campaign C): with an I/O timeout the send fails with a "stalled" error
 * naming the channel instead of blocking in sendmsg() forever. */
static void test_stalled(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramMultifdSend *s;
	bool ok = true;

	(void)data;
	fill(f, 6);
	s = migram_multifd_send_new(2, f->snd, f->uuid, 100, &error);
	g_assert_no_error(error);
	/* nobody reads either channel: the socket buffers fill, then no
	 * write makes progress */
	for (int round = 0; ok && round < 1000; round++) {
		for (uint64_t p = 0; ok && p < BIG_PAGES; p++)
			ok = migram_multifd_send_queue(s, "pc.ram", f->src_big,
						       p * PAGE, &error);
		ok = ok && migram_multifd_send_sync(s, &error);
	}
	g_assert_false(ok);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO);
	g_assert_nonnull(strstr(error->message, "stalled"));
	g_assert_nonnull(strstr(error->message, "data channel"));
	migram_multifd_send_cancel(s);
	migram_multifd_send_free(s);
}

static gpointer cancel_later(gpointer opaque)
{
	g_usleep(50 * 1000);
	migram_multifd_send_cancel(opaque);
	return NULL;
}

/* Cancel while the sender is blocked (nobody reads) and while the
 * receiver waits at a sync: both return promptly, every thread joins. */
static void test_cancel(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramMultifdSend *s;
	bool ok = true;
	GThread *t;

	(void)data;
	fill(f, 5);
	s = migram_multifd_send_new(4, f->snd, f->uuid, 0, &error);
	g_assert_no_error(error);
	/* nobody reads: the channels block once the socket buffers fill;
	 * the cancel comes while they are blocked in writev() */
	t = g_thread_new("cancel", cancel_later, s);
	for (int round = 0; ok && round < 1000; round++)
		for (uint64_t p = 0; ok && p < BIG_PAGES; p++)
			ok = migram_multifd_send_queue(s, "pc.ram", f->src_big,
						       p * PAGE, &error);
	g_thread_join(t);
	g_assert_false(ok);
	g_assert_nonnull(error);
	migram_multifd_send_free(s);
}

/* The receiver: both channels announced, then silent; the sync waits and
 * a cancel ends it and every channel thread. */
static void test_cancel_recv(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramMultifdRecv *r;
	uint8_t init[MIGRAM_MULTIFD_INIT_SIZE];
	SyncJob job = { 0 };
	GThread *t;

	(void)data;
	for (int i = 0; i < 2; i++) {
		migram_multifd_encode_init(init, f->uuid, (uint8_t)i);
		send_bytes(f->snd[i], init, sizeof(init));
	}
	r = migram_multifd_recv_new(f->blocks, 2, 2, f->rcv, NULL, &error);
	g_assert_no_error(error);
	job.r = r;
	job.syncs = 1;
	t = g_thread_new("sync", sync_thread, &job);
	migram_multifd_recv_cancel(r);
	g_thread_join(t);
	g_assert_false(job.ok);
	g_assert_nonnull(job.error);
	g_clear_error(&job.error);
	migram_multifd_recv_free(r);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/migration/multifd/wire/header",
			test_header_roundtrip);
	g_test_add_func("/migration/multifd/wire/init", test_init_checks);
	for (size_t i = 0; i < G_N_ELEMENTS(hostile); i++) {
		g_autofree char *path = g_strdup_printf(
			"/migration/multifd/hostile/%s", hostile[i].name);

		g_test_add(path, Fixture, &hostile[i], fx_setup, test_hostile,
			   fx_teardown);
	}
	g_test_add("/migration/multifd/transfer/1", Fixture,
		   GUINT_TO_POINTER(1), fx_setup, test_transfer, fx_teardown);
	g_test_add("/migration/multifd/transfer/2", Fixture,
		   GUINT_TO_POINTER(2), fx_setup, test_transfer, fx_teardown);
	g_test_add("/migration/multifd/transfer/4", Fixture,
		   GUINT_TO_POINTER(4), fx_setup, test_transfer, fx_teardown);
	g_test_add("/migration/multifd/late-old-copy", Fixture, NULL, fx_setup,
		   test_late_old_copy, fx_teardown);
	g_test_add("/migration/multifd/channel-dies", Fixture, NULL, fx_setup,
		   test_channel_dies, fx_teardown);
	g_test_add("/migration/multifd/stalled", Fixture, NULL, fx_setup,
		   test_stalled, fx_teardown);
	g_test_add("/migration/multifd/cancel-send", Fixture, NULL, fx_setup,
		   test_cancel, fx_teardown);
	g_test_add("/migration/multifd/cancel-recv", Fixture, NULL, fx_setup,
		   test_cancel_recv, fx_teardown);
	return g_test_run();
}
