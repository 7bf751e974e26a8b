/* SPDX-License-Identifier: MIT */
/*
 * Verification as API (verify.h): a sender thread hashes one list over a
 * socketpair, the main thread compares another.  Equal lists; a
 * deliberately corrupted page found at its block and offset; blocks only
 * one side has or of another size; the skip callback.  Then hostile hash
 * streams: bad header fields, truncation anywhere, a block twice, a huge
 * length, an unknown name: each fails or differs with what and where.
 */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/migram.h>
#include <migram/ramblock.h>
#include <migram/verify.h>

#include "migram-test-util.h"

#define PAGE MIGRAM_TARGET_PAGE_SIZE

typedef struct {
	MigramRamList *src; /* the comparing side */
	MigramRamList *dst; /* the sending side */
} Fixture;

static void add_block(MigramRamList *list, const char *name, uint64_t pages,
		      guint8 seed)
{
	g_autoptr(GError) error = NULL;
	MigramRamBlockConfig c = { .idstr = name, .used_length = pages * PAGE };
	MigramRamBlock *b = migram_ram_list_add(list, &c, &error);
	guint8 *h;

	g_assert_no_error(error);
	h = migram_ram_block_host(b);
	for (uint64_t i = 0; i < pages * PAGE; i++)
		h[i] = (guint8)(i * 7 + seed + i / PAGE);
}

static guint8 *host_of(MigramRamList *list, const char *name)
{
	MigramRamBlock *b;
	guint8 *h;

	urcu_memb_read_lock();
	b = migram_ram_list_find(list, name);
	g_assert_nonnull(b);
	h = migram_ram_block_host(b);
	urcu_memb_read_unlock();
	return h;
}

static void setup(Fixture *f, gconstpointer data)
{
	(void)data;
	f->src = migram_ram_list_new();
	f->dst = migram_ram_list_new();
	add_block(f->src, "ram0", 64, 1);
	add_block(f->src, "ram1", 16, 2);
	add_block(f->dst, "ram0", 64, 1);
	add_block(f->dst, "ram1", 16, 2);
}

static void teardown(Fixture *f, gconstpointer data)
{
	(void)data;
	migram_ram_list_free(f->src);
	migram_ram_list_free(f->dst);
}

typedef struct {
	MigramRamList *list;
	MigramChannel *ch;
	GError *error;
} Sender;

static gpointer send_thread(gpointer p)
{
	Sender *s = p;
	bool ok;

	urcu_memb_register_thread();
	ok = migram_verify_send(s->list, s->ch, &s->error);
	urcu_memb_unregister_thread();
	return GINT_TO_POINTER(ok);
}

/* Exchange: f->dst sends, f->src compares; both must succeed. */
static void exchange(Fixture *f, MigramVerifySkipFn skip, void *opaque,
		     MigramVerifyResult *res)
{
	g_autoptr(GError) error = NULL;
	int sp[2];
	Sender s = { .list = f->dst };
	MigramChannel *r;
	GThread *t;
	bool ok;

	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), ==, 0);
	s.ch = migram_channel_new(sp[0], true);
	r = migram_channel_new(sp[1], true);
	t = g_thread_new("verify-send", send_thread, &s);
	ok = migram_verify_compare(f->src, r, skip, opaque, res, &error);
	g_assert_no_error(error);
	g_assert_true(ok);
	/* The comparison may stop early: let the sender finish writing. */
	migram_channel_free(r);
	g_thread_join(t);
	g_clear_error(&s.error);
	migram_channel_free(s.ch);
}

static void test_equal(Fixture *f, gconstpointer data)
{
	MigramVerifyResult res;
	g_autofree char *d = NULL;

	(void)data;
	exchange(f, NULL, NULL, &res);
	g_assert_cmpint(res.diff, ==, MIGRAM_VERIFY_EQUAL);
	g_assert_cmpuint(res.blocks, ==, 2);
	g_assert_cmpuint(res.pages, ==, 80);
	g_assert_cmpuint(res.differing, ==, 0);
	d = migram_verify_result_describe(&res);
	g_assert_cmpstr(d, ==, "2 blocks, 80 pages equal (per-page hashes)");
}

static void test_corrupt_page(Fixture *f, gconstpointer data)
{
	MigramVerifyResult res;
	g_autofree char *d = NULL;

	(void)data;
	/* One byte in the middle of ram0's page 37, one in ram1's page 3. */
	host_of(f->dst, "ram0")[37 * PAGE + 1234] ^= 0x40;
	host_of(f->dst, "ram1")[3 * PAGE + 4095] ^= 0x01;
	exchange(f, NULL, NULL, &res);
	g_assert_cmpint(res.diff, ==, MIGRAM_VERIFY_PAGE);
	g_assert_cmpstr(res.block, ==, "ram0");
	g_assert_cmpuint(res.offset, ==, 37 * PAGE);
	g_assert_cmpuint(res.differing, ==, 2);
	g_assert_cmpuint(res.pages, ==, 80);
	d = migram_verify_result_describe(&res);
	g_assert_cmpstr(d, ==,
			"block 'ram0' page 37 (offset 0x25000) differs "
			"(2 pages differ)");
}

static bool skip_ram0_37(const char *block, uint64_t offset, void *opaque)
{
	int *calls = opaque;

	(*calls)++;
	return strcmp(block, "ram0") == 0 && offset == 37 * PAGE;
}

static void test_skip(Fixture *f, gconstpointer data)
{
	MigramVerifyResult res;
	int calls = 0;

	(void)data;
	host_of(f->dst, "ram0")[37 * PAGE] ^= 0xff;
	exchange(f, skip_ram0_37, &calls, &res);
	g_assert_cmpint(res.diff, ==, MIGRAM_VERIFY_EQUAL);
	g_assert_cmpuint(res.skipped, ==, 1);
	g_assert_cmpuint(res.pages, ==, 79);
	g_assert_cmpint(calls, ==, 80);
}

static void test_missing_here(Fixture *f, gconstpointer data)
{
	MigramVerifyResult res;

	(void)data;
	add_block(f->dst, "extra", 4, 3);
	exchange(f, NULL, NULL, &res);
	g_assert_cmpint(res.diff, ==, MIGRAM_VERIFY_MISSING_HERE);
	g_assert_cmpstr(res.block, ==, "extra");
}

static void test_missing_there(Fixture *f, gconstpointer data)
{
	MigramVerifyResult res;
	g_autofree char *d = NULL;

	(void)data;
	add_block(f->src, "extra", 4, 3);
	exchange(f, NULL, NULL, &res);
	g_assert_cmpint(res.diff, ==, MIGRAM_VERIFY_MISSING_THERE);
	g_assert_cmpstr(res.block, ==, "extra");
	d = migram_verify_result_describe(&res);
	g_assert_cmpstr(d, ==, "block 'extra' is missing on the peer");
}

static void test_size(Fixture *f, gconstpointer data)
{
	MigramVerifyResult res;
	g_autofree char *d = NULL;

	(void)data;
	add_block(f->src, "vga", 8, 3);
	add_block(f->dst, "vga", 9, 3);
	exchange(f, NULL, NULL, &res);
	g_assert_cmpint(res.diff, ==, MIGRAM_VERIFY_SIZE);
	g_assert_cmpstr(res.block, ==, "vga");
	g_assert_cmpuint(res.local_length, ==, 8 * PAGE);
	g_assert_cmpuint(res.peer_length, ==, 9 * PAGE);
	d = migram_verify_result_describe(&res);
	g_assert_cmpstr(d, ==,
			"block 'vga' is 0x8000 bytes here, 0x9000 on the peer");
}

/* ---- hostile streams ------------------------------------------------ */

static GByteArray *header(guint32 magic, guint32 version, guint32 page)
{
	GByteArray *a = g_byte_array_new();

	migram_test_put32(a, magic);
	migram_test_put32(a, version);
	migram_test_put32(a, page);
	return a;
}

/* ram1 (16 pages) as the comparing list holds it, hashes included. */
static void put_ram1(Fixture *f, GByteArray *a)
{
	const guint8 *h = host_of(f->src, "ram1");

	migram_test_putstr(a, "ram1");
	migram_test_put64(a, 16 * PAGE);
	for (int p = 0; p < 16; p++)
		migram_test_put64(a,
				  migram_verify_page_hash(h + p * PAGE, PAGE));
}

static bool run_bytes(Fixture *f, GByteArray *a, MigramVerifyResult *res,
		      GError **error)
{
	MigramChannel *ch = migram_test_channel_over(a->data, a->len);
	bool ok = migram_verify_compare(f->src, ch, NULL, NULL, res, error);

	migram_channel_free(ch);
	return ok;
}

static void expect_error(Fixture *f, GByteArray *a, int code,
			 const char *needle)
{
	g_autoptr(GError) error = NULL;
	MigramVerifyResult res;

	g_assert_false(run_bytes(f, a, &res, &error));
	g_assert_error(error, MIGRAM_ERROR, code);
	if (!strstr(error->message, needle))
		g_error("'%s' lacks '%s'", error->message, needle);
	g_byte_array_unref(a);
}

static void test_bad_header(Fixture *f, gconstpointer data)
{
	(void)data;
	expect_error(f, header(0x51454d55, 1, PAGE), MIGRAM_ERROR_PROTOCOL,
		     "byte 0: magic 0x51454d55, expected 0x4d475648");
	expect_error(f, header(MIGRAM_VERIFY_MAGIC, 2, PAGE),
		     MIGRAM_ERROR_PROTOCOL, "byte 4: version 0x2");
	expect_error(f, header(MIGRAM_VERIFY_MAGIC, 1, 65536),
		     MIGRAM_ERROR_PROTOCOL,
		     "byte 8: page size 0x10000, expected 0x1000");
	expect_error(f, g_byte_array_new(), MIGRAM_ERROR_PROTOCOL,
		     "verify stream byte 0: reading the magic");
}

/* Every proper prefix of a valid stream fails with a located error. */
static void test_truncated(Fixture *f, gconstpointer data)
{
	GByteArray *full = header(MIGRAM_VERIFY_MAGIC, 1, PAGE);

	(void)data;
	put_ram1(f, full);
	migram_test_putstr(full, "");
	for (guint cut = 0; cut < full->len; cut++) {
		g_autoptr(GError) error = NULL;
		GByteArray *a = g_byte_array_new();
		MigramVerifyResult res;

		g_byte_array_append(a, full->data, cut);
		g_assert_false(run_bytes(f, a, &res, &error));
		g_assert_nonnull(error);
		g_assert_true(strstr(error->message, "verify stream byte"));
		g_byte_array_unref(a);
	}
	g_byte_array_unref(full);
}

static void test_twice(Fixture *f, gconstpointer data)
{
	GByteArray *a = header(MIGRAM_VERIFY_MAGIC, 1, PAGE);
	g_autofree char *want = NULL;

	(void)data;
	put_ram1(f, a);
	want = g_strdup_printf("byte %u: block 'ram1' sent twice", a->len);
	put_ram1(f, a);
	migram_test_putstr(a, "");
	expect_error(f, a, MIGRAM_ERROR_PROTOCOL, want);
}

static void expect_diff(Fixture *f, GByteArray *a, MigramVerifyDiff diff,
			const char *block)
{
	g_autoptr(GError) error = NULL;
	MigramVerifyResult res;

	g_assert_true(run_bytes(f, a, &res, &error));
	g_assert_no_error(error);
	g_assert_cmpint(res.diff, ==, diff);
	g_assert_cmpstr(res.block, ==, block);
	g_byte_array_unref(a);
}

static void test_hostile_geometry(Fixture *f, gconstpointer data)
{
	GByteArray *a;

	(void)data;
	/* A huge length for a known block: a difference, nothing read. */
	a = header(MIGRAM_VERIFY_MAGIC, 1, PAGE);
	migram_test_putstr(a, "ram0");
	migram_test_put64(a, UINT64_MAX);
	expect_diff(f, a, MIGRAM_VERIFY_SIZE, "ram0");
	/* An unknown name, with no hashes after it. */
	a = header(MIGRAM_VERIFY_MAGIC, 1, PAGE);
	migram_test_putstr(a, "../../etc");
	migram_test_put64(a, 1ull << 62);
	expect_diff(f, a, MIGRAM_VERIFY_MISSING_HERE, "../../etc");
	/* The end marker at once: the peer has no blocks at all. */
	a = header(MIGRAM_VERIFY_MAGIC, 1, PAGE);
	migram_test_putstr(a, "");
	expect_diff(f, a, MIGRAM_VERIFY_MISSING_THERE, "ram0");
	/* One block right, the other missing. */
	a = header(MIGRAM_VERIFY_MAGIC, 1, PAGE);
	put_ram1(f, a);
	migram_test_putstr(a, "");
	expect_diff(f, a, MIGRAM_VERIFY_MISSING_THERE, "ram0");
}

static void test_hash_short_page(void)
{
	guint8 buf[PAGE + 3];

	memset(buf, 0x5a, sizeof(buf));
	g_assert_cmpuint(migram_verify_page_hash(buf, PAGE), ==,
			 migram_verify_page_hash(buf + 3, PAGE));
	g_assert_cmpuint(migram_verify_page_hash(buf, 5), !=,
			 migram_verify_page_hash(buf, 4));
	buf[100] ^= 1;
	g_assert_cmpuint(migram_verify_page_hash(buf, PAGE), !=,
			 migram_verify_page_hash(buf + 3, PAGE));
}

#define ADD(path, fn) g_test_add(path, Fixture, NULL, setup, fn, teardown)

int main(int argc, char **argv)
{
	int rc;

	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	ADD("/migration/verify/equal", test_equal);
	ADD("/migration/verify/corrupt-page", test_corrupt_page);
	ADD("/migration/verify/skip", test_skip);
	ADD("/migration/verify/missing-here", test_missing_here);
	ADD("/migration/verify/missing-there", test_missing_there);
	ADD("/migration/verify/size", test_size);
	ADD("/migration/verify/hostile/bad-header", test_bad_header);
	ADD("/migration/verify/hostile/truncated", test_truncated);
	ADD("/migration/verify/hostile/twice", test_twice);
	ADD("/migration/verify/hostile/geometry", test_hostile_geometry);
	g_test_add_func("/migration/verify/hash-short-page",
			test_hash_short_page);
	rc = g_test_run();
	urcu_memb_unregister_thread();
	return rc;
}
