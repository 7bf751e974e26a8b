/* SPDX-License-Identifier: MIT */
/*
 * The optional connection handshake (handshake.h): two sides that agree
 * go on to a verified migration on the same channel; every field that can
 * differ fails on both sides before any page moves, naming both values;
 * the destination tells connections apart by their hello, whatever the
 * accept order; a QEMU-compatible source (no hello) is refused with a
 * clear error; malformed hellos (truncated anywhere, unknown role, too
 * many blocks, a block twice, an empty name) fail with byte offset and
 * field.
 */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/dirty-log.h>
#include <migram/guest-layout.h>
#include <migram/handshake.h>
#include <migram/migram.h>
#include <migram/migration.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>
#include <migram/verify.h>

#include "migram-test-util.h"

#define PAGE MIGRAM_TARGET_PAGE_SIZE

typedef struct {
	MigramRamList *src;
	MigramRamList *dst;
	MigramHandshake s; /* the source's hello */
	MigramHandshake d; /* the destination's */
} Fixture;

static void add_block(MigramRamList *list, const char *name, uint64_t pages,
		      guint8 fill)
{
	g_autoptr(GError) error = NULL;
	MigramRamBlockConfig c = { .idstr = name, .used_length = pages * PAGE };
	MigramRamBlock *b = migram_ram_list_add(list, &c, &error);

	g_assert_no_error(error);
	memset(migram_ram_block_host(b), fill, pages * PAGE);
	for (uint64_t p = 0; p < pages; p++)
		((guint8 *)migram_ram_block_host(b))[p * PAGE] = (guint8)p;
}

static void setup(Fixture *f, gconstpointer data)
{
	(void)data;
	f->src = migram_ram_list_new();
	f->dst = migram_ram_list_new();
	add_block(f->src, "pc.ram", 256, 0x5a);
	add_block(f->src, "vga.vram", 16, 0x11);
	add_block(f->dst, "pc.ram", 256, 0);
	add_block(f->dst, "vga.vram", 16, 0);
	migram_handshake_init(&f->s);
	migram_handshake_init(&f->d);
	memset(f->d.migration_id, 0, sizeof(f->d.migration_id));
	f->s.list = f->src;
	f->d.list = f->dst;
}

static void teardown(Fixture *f, gconstpointer data)
{
	(void)data;
	migram_ram_list_free(f->src);
	migram_ram_list_free(f->dst);
}

/* ---- the destination in a thread ------------------------------------- */

typedef struct {
	Fixture *f;
	MigramChannel *ch;
	MigramHandshake peer;
	bool load; /* then load the stream and send the verification */
	bool ok;
	GError *error;
} Dest;

static gpointer dest_main(gpointer p)
{
	Dest *d = p;

	urcu_memb_register_thread();
	d->ok = migram_handshake_accept(d->ch, &d->f->d, &d->peer, &d->error);
	if (d->ok && d->load) {
		MigramReceiver *r = migram_receiver_new(
			d->f->dst, &(MigramReceiverConfig){ 0 });

		d->ok = migram_receiver_load(r, d->ch, &d->error) &&
			migram_verify_send(d->f->dst, d->ch, &d->error);
		migram_receiver_free(r);
	}
	urcu_memb_unregister_thread();
	return NULL;
}

static GThread *dest_start(Dest *d, Fixture *f, int fd, bool load)
{
	memset(d, 0, sizeof(*d));
	d->f = f;
	d->ch = migram_channel_new(fd, true);
	d->load = load;
	return g_thread_new("dest", dest_main, d);
}

static void dest_join(GThread *t, Dest *d)
{
	g_thread_join(t);
	migram_channel_free(d->ch);
}

static void pause_guest(void *opaque)
{
	(void)opaque;
}

/* Agreement, then a migration and a verification on the same channel. */
static void test_agree_and_migrate(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramMigrationConfig cfg = { .pause_guest = pause_guest };
	MigramHandshake peer;
	MigramVerifyResult res;
	MigramLogSource src;
	MigramSoftLog *log;
	MigramMigration *m;
	MigramChannel *ch;
	Dest d;
	GThread *t;
	int sp[2];

	(void)data;
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), ==, 0);
	t = dest_start(&d, f, sp[1], true);
	ch = migram_channel_new(sp[0], true);
	g_assert_true(migram_handshake_connect(ch, &f->s, &peer, &error));
	g_assert_no_error(error);
	g_assert_cmpuint(peer.role, ==, MIGRAM_HANDSHAKE_MAIN);
	g_assert_cmpuint(peer.peer_blocks, ==, 2);
	g_assert_cmpmem(peer.migration_id, 16, f->s.migration_id, 16);

	log = migram_soft_log_new(migram_ram_list_ram_space(f->src), &error);
	g_assert_no_error(error);
	migram_soft_log_source(log, &src);
	m = migram_migration_new(f->src, &src, &cfg);
	g_assert_true(migram_migration_run(m, ch, &error));
	g_assert_no_error(error);
	g_assert_true(
		migram_verify_compare(f->src, ch, NULL, NULL, &res, &error));
	g_assert_no_error(error);
	g_assert_cmpint(res.diff, ==, MIGRAM_VERIFY_EQUAL);
	g_assert_cmpuint(res.pages, ==, 272);
	migram_migration_free(m);
	migram_soft_log_free(log);
	migram_channel_free(ch);
	dest_join(t, &d);
	g_assert_no_error(d.error);
	g_assert_true(d.ok);
	g_assert_cmpuint(d.peer.role, ==, MIGRAM_HANDSHAKE_MAIN);
	/* The destination adopted the source's id. */
	g_assert_cmpmem(f->d.migration_id, 16, f->s.migration_id, 16);
}

/* Run a handshake; both sides must fail with the same message. */
static void expect_mismatch(Fixture *f, const char *want)
{
	g_autoptr(GError) error = NULL;
	MigramChannel *ch;
	Dest d;
	GThread *t;
	int sp[2];

	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), ==, 0);
	t = dest_start(&d, f, sp[1], false);
	ch = migram_channel_new(sp[0], true);
	g_assert_false(migram_handshake_connect(ch, &f->s, NULL, &error));
	dest_join(t, &d);
	migram_channel_free(ch);
	g_assert_false(d.ok);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_error(d.error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_cmpstr(error->message, ==, want);
	g_assert_cmpstr(d.error->message, ==, want);
	g_clear_error(&d.error);
}

static void test_mismatch_postcopy(Fixture *f, gconstpointer data)
{
	(void)data;
	f->s.caps = MIGRAM_HANDSHAKE_CAP_POSTCOPY;
	expect_mismatch(f, "handshake: postcopy differs: source on, "
			   "destination off");
}

static void test_mismatch_preempt(Fixture *f, gconstpointer data)
{
	(void)data;
	f->s.caps = MIGRAM_HANDSHAKE_CAP_POSTCOPY;
	f->d.caps = MIGRAM_HANDSHAKE_CAP_POSTCOPY |
		    MIGRAM_HANDSHAKE_CAP_PREEMPT;
	expect_mismatch(f, "handshake: preempt differs: source off, "
			   "destination on");
}

static void test_mismatch_fields(Fixture *f, gconstpointer data)
{
	(void)data;
	f->d.channels = 4;
	expect_mismatch(f, "handshake: channels differ: source 1 (0 data), "
			   "destination 4 (3 data)");
	f->d.channels = 1;
	f->s.compression = 1;
	expect_mismatch(f, "handshake: compression differs: source 1, "
			   "destination 0");
	f->s.compression = 0;
	f->s.page_size = 16384;
	expect_mismatch(f, "handshake: page size differs: source 16384, "
			   "destination 4096");
}

static void test_mismatch_blocks(Fixture *f, gconstpointer data)
{
	MigramRamList *l = f->dst;

	(void)data;
	f->d.list = migram_ram_list_new();
	add_block(f->d.list, "pc.ram", 256, 0);
	add_block(f->d.list, "vga.vram", 32, 0);
	expect_mismatch(f, "handshake: block 'vga.vram' differs in size: "
			   "source 0x10000, destination 0x20000");
	migram_ram_list_free(f->d.list);
	f->d.list = migram_ram_list_new();
	add_block(f->d.list, "pc.ram", 256, 0);
	expect_mismatch(f, "handshake: block 'vga.vram' exists on the source "
			   "only");
	add_block(f->d.list, "vga.vram", 16, 0);
	add_block(f->d.list, "rom", 1, 0);
	expect_mismatch(f, "handshake: block 'rom' exists on the destination "
			   "only");
	migram_ram_list_free(f->d.list);
	f->d.list = l;
}

static void test_no_list_accepts(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramChannel *ch;
	Dest d;
	GThread *t;
	int sp[2];

	(void)data;
	f->d.list = NULL; /* a receiver that creates blocks from the stream */
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), ==, 0);
	t = dest_start(&d, f, sp[1], false);
	ch = migram_channel_new(sp[0], true);
	g_assert_true(migram_handshake_connect(ch, &f->s, NULL, &error));
	g_assert_no_error(error);
	dest_join(t, &d);
	migram_channel_free(ch);
	g_assert_true(d.ok);
	g_assert_cmpuint(d.peer.peer_blocks, ==, 2);
}

/* The source's side in a thread: connect with role on fd. */
typedef struct {
	MigramHandshake hs;
	int fd;
	bool ok;
	GError *error;
} Src;

static gpointer src_main(gpointer p)
{
	Src *s = p;
	MigramChannel *ch = migram_channel_new(s->fd, true);

	urcu_memb_register_thread();
	s->ok = migram_handshake_connect(ch, &s->hs, NULL, &s->error);
	urcu_memb_unregister_thread();
	migram_channel_free(ch);
	return NULL;
}

/*
 * The destination accepts the preempt connection before the main one (it
 * knows the id: set by the embedder); the hellos, not the order, say which
 * is which.  Then a data channel (reserved role) and a connection from
 * another migration.
 */
static void test_roles(Fixture *f, gconstpointer data)
{
	static const uint32_t roles[] = { MIGRAM_HANDSHAKE_PREEMPT,
					  MIGRAM_HANDSHAKE_MAIN,
					  MIGRAM_HANDSHAKE_DATA + 3,
					  MIGRAM_HANDSHAKE_PREEMPT };
	char buf[16];

	(void)data;
	memcpy(f->d.migration_id, f->s.migration_id, 16);
	f->s.channels = f->d.channels = 5; /* main + data-0 .. data-3 */
	for (size_t i = 0; i < G_N_ELEMENTS(roles); i++) {
		g_autoptr(GError) error = NULL;
		Src s = { .hs = f->s };
		MigramHandshake peer;
		MigramChannel *ch;
		GThread *t;
		int sp[2];
		bool ok;

		s.hs.role = roles[i];
		if (i == 3) /* another migration's preempt connection */
			s.hs.migration_id[0] ^= 1;
		g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), ==, 0);
		s.fd = sp[0];
		t = g_thread_new("src", src_main, &s);
		ch = migram_channel_new(sp[1], true);
		ok = migram_handshake_accept(ch, &f->d, &peer, &error);
		g_thread_join(t);
		migram_channel_free(ch);
		if (i < 3) {
			g_assert_no_error(error);
			g_assert_true(ok && s.ok);
			g_assert_cmpuint(peer.role, ==, roles[i]);
			continue;
		}
		g_assert_false(ok || s.ok);
		g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
		g_assert_true(strstr(error->message, "migration id differs"));
		g_assert_cmpstr(error->message, ==, s.error->message);
		g_clear_error(&s.error);
	}
	g_assert_cmpstr(migram_handshake_role_name(MIGRAM_HANDSHAKE_DATA + 3,
						   buf),
			==, "data-3");
	g_assert_cmpstr(migram_handshake_role_name(MIGRAM_HANDSHAKE_MAIN, buf),
			==, "main");
	g_assert_cmpstr(migram_handshake_role_name(7, buf), ==, "unknown");
}

/*
 * A destination with no id yet takes its id from whichever connection comes
 * first (a preempt one here); a main connection of another migration after
 * it is refused, naming both ids.
 */
static void test_preempt_first(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramChannel *ch;
	Dest d;
	GThread *t;
	int sp[2];

	(void)data;
	f->s.role = MIGRAM_HANDSHAKE_PREEMPT;
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), ==, 0);
	t = dest_start(&d, f, sp[1], false);
	ch = migram_channel_new(sp[0], true);
	g_assert_true(migram_handshake_connect(ch, &f->s, NULL, &error));
	g_assert_no_error(error);
	dest_join(t, &d);
	migram_channel_free(ch);
	g_assert_true(d.ok);
	g_assert_cmpuint(d.peer.role, ==, MIGRAM_HANDSHAKE_PREEMPT);
	g_assert_cmpmem(f->d.migration_id, 16, f->s.migration_id, 16);

	f->s.role = MIGRAM_HANDSHAKE_MAIN;
	f->s.migration_id[15] ^= 0xff;
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), ==, 0);
	t = dest_start(&d, f, sp[1], false);
	ch = migram_channel_new(sp[0], true);
	g_assert_false(migram_handshake_connect(ch, &f->s, NULL, &error));
	dest_join(t, &d);
	migram_channel_free(ch);
	g_assert_error(d.error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_true(strstr(error->message, "migration id differs: source "));
	g_assert_cmpstr(error->message, ==, d.error->message);
	g_clear_error(&d.error);
}

/* ---- QEMU-compatible peers and malformed hellos ---------------------- */

static bool accept_bytes(Fixture *f, GByteArray *a, GError **error)
{
	int sp[2];
	MigramChannel *ch;
	MigramHandshake peer;
	bool ok;

	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), ==, 0);
	g_assert_cmpint(write(sp[0], a->data, a->len), ==, (gssize)a->len);
	shutdown(sp[0], SHUT_WR);
	ch = migram_channel_new(sp[1], true);
	ok = migram_handshake_accept(ch, &f->d, &peer, error);
	migram_channel_free(ch);
	close(sp[0]);
	return ok;
}

static void expect_bad(Fixture *f, GByteArray *a, const char *needle)
{
	g_autoptr(GError) error = NULL;

	g_assert_false(accept_bytes(f, a, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
	if (!strstr(error->message, needle))
		g_error("'%s' lacks '%s'", error->message, needle);
	g_byte_array_unref(a);
}

static GByteArray *hello(const Fixture *f, uint32_t role, uint32_t nblocks)
{
	GByteArray *a = g_byte_array_new();

	migram_test_put32(a, MIGRAM_HANDSHAKE_MAGIC);
	migram_test_put32(a, MIGRAM_HANDSHAKE_VERSION);
	g_byte_array_append(a, f->s.migration_id, 16);
	migram_test_put32(a, role);
	migram_test_put32(a, 0);
	migram_test_put32(a, 1);
	migram_test_put32(a, 0);
	migram_test_put32(a, PAGE);
	migram_test_put32(a, nblocks);
	return a;
}

static void test_qemu_compatible_peer(Fixture *f, gconstpointer data)
{
	GByteArray *a = g_byte_array_new();

	(void)data;
	/* QEMU's stream: file magic "QEVM", version 3. */
	migram_test_put32(a, 0x5145564d);
	migram_test_put32(a, 3);
	expect_bad(f, a,
		   "handshake byte 0: magic 0x5145564d, expected 0x4d474853 "
		   "(is the peer in QEMU-compatible mode, without the "
		   "handshake?)");
}

static void test_hostile(Fixture *f, gconstpointer data)
{
	GByteArray *a;

	(void)data;
	expect_bad(f, hello(f, 7, 0), "handshake byte 24: unknown role 0x7");
	expect_bad(f, hello(f, MIGRAM_HANDSHAKE_DATA + 65536, 0),
		   "unknown role 0x10100");
	expect_bad(f, hello(f, MIGRAM_HANDSHAKE_MAIN, 4097),
		   "handshake byte 44: 4097 blocks, at most 4096");
	a = hello(f, MIGRAM_HANDSHAKE_MAIN, 2);
	migram_test_putstr(a, "pc.ram");
	migram_test_put64(a, 256 * PAGE);
	migram_test_putstr(a, "pc.ram");
	migram_test_put64(a, 256 * PAGE);
	expect_bad(f, a, "handshake byte 63: block 'pc.ram' listed twice");
	a = hello(f, MIGRAM_HANDSHAKE_MAIN, 1);
	migram_test_putstr(a, "");
	expect_bad(f, a, "handshake byte 48: block 0 has an empty name");
	/* A block count promising more than the stream holds. */
	a = hello(f, MIGRAM_HANDSHAKE_MAIN, 4096);
	expect_bad(f, a, "handshake byte 48: block 0's name");
}

/* Every proper prefix of a valid hello fails with a located error. */
static void test_truncated(Fixture *f, gconstpointer data)
{
	GByteArray *full = hello(f, MIGRAM_HANDSHAKE_MAIN, 2);

	(void)data;
	migram_test_putstr(full, "pc.ram");
	migram_test_put64(full, 256 * PAGE);
	migram_test_putstr(full, "vga.vram");
	migram_test_put64(full, 16 * PAGE);
	for (guint cut = 0; cut < full->len; cut++) {
		GByteArray *a = g_byte_array_new();

		g_byte_array_append(a, full->data, cut);
		expect_bad(f, a, "handshake byte ");
	}
	/* and the whole one is accepted */
	g_assert_true(accept_bytes(f, full, NULL));
	g_byte_array_unref(full);
}

/* ---- data channels -------------------------------------------------- */

#define NDATA 3

/* One source connection greeted on its own thread (any order). */
typedef struct {
	MigramHandshake hs;
	int fd; /* not closed */
	bool ok;
	GError *error;
	GThread *t;
} SrcFd;

static gpointer src_fd_main(gpointer p)
{
	SrcFd *s = p;

	urcu_memb_register_thread();
	s->ok = migram_handshake_connect_fd(s->fd, &s->hs, NULL, &s->error);
	urcu_memb_unregister_thread();
	return NULL;
}

/* The destination: greet fds in the order given, file them by role. */
typedef struct {
	Fixture *f;
	int fd[NDATA + 1]; /* destination ends, in greeting order */
	bool ok;
	GError *error;
} DataDest;

static bool file_by_role(DataDest *d, int *main_fd, int *data)
{
	for (unsigned int i = 0; i < NDATA + 1; i++) {
		MigramHandshake peer;
		uint32_t n;

		if (!migram_handshake_accept_fd(d->fd[i], &d->f->d, &peer,
						&d->error))
			return false;
		if (peer.role == MIGRAM_HANDSHAKE_MAIN && *main_fd < 0) {
			*main_fd = d->fd[i];
			continue;
		}
		n = peer.role - MIGRAM_HANDSHAKE_DATA;
		/* accept() checked n against the agreed count */
		g_assert_cmpuint(peer.role, >=, MIGRAM_HANDSHAKE_DATA);
		g_assert_cmpuint(n, <, NDATA);
		g_assert_cmpint(data[n], ==, -1);
		data[n] = d->fd[i];
	}
	return true;
}

static gpointer data_dest_main(gpointer p)
{
	DataDest *d = p;
	int main_fd = -1, data[NDATA] = { -1, -1, -1 };

	urcu_memb_register_thread();
	d->ok = file_by_role(d, &main_fd, data);
	if (d->ok) {
		MigramReceiverConfig cfg = { .multifd_channels = NDATA,
					     .multifd_fds = data };
		MigramReceiver *r = migram_receiver_new(d->f->dst, &cfg);
		MigramChannel *ch = migram_channel_new(main_fd, false);

		d->ok = migram_receiver_load(r, ch, &d->error) &&
			migram_verify_send(d->f->dst, ch, &d->error);
		migram_receiver_free(r);
		migram_channel_free(ch);
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/*
 * Main and three data channels, each greeted on its own source thread; the
 * destination greets them in a random order and files them by role; the
 * migration then runs with the pages on the data channels and the
 * destination's memory is compared page by page with the source's.
 */
static void test_data_channels(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	SrcFd src[NDATA + 1];
	int dfd[NDATA + 1], sfd[NDATA];
	DataDest d = { .f = f };
	MigramVerifyResult res;
	MigramLogSource ls;
	MigramSoftLog *log;
	MigramMigration *m;
	MigramChannel *ch;
	GThread *t;

	(void)data;
	f->s.channels = f->d.channels = NDATA + 1;
	for (unsigned int i = 0; i < NDATA + 1; i++) {
		int sp[2];

		g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), ==, 0);
		src[i] = (SrcFd){ .hs = f->s, .fd = sp[0] };
		src[i].hs.role = i ? MIGRAM_HANDSHAKE_DATA + i - 1
				   : MIGRAM_HANDSHAKE_MAIN;
		dfd[i] = sp[1];
		if (i)
			sfd[i - 1] = sp[0];
	}
	/* the destination's greeting order: a random permutation */
	for (unsigned int i = 0; i < NDATA + 1; i++)
		d.fd[i] = dfd[i];
	for (unsigned int i = NDATA; i > 0; i--) {
		unsigned int j = (unsigned int)g_test_rand_int_range(0, i + 1);
		int tmp = d.fd[i];

		d.fd[i] = d.fd[j];
		d.fd[j] = tmp;
	}
	t = g_thread_new("dest", data_dest_main, &d);
	for (unsigned int i = 0; i < NDATA + 1; i++)
		src[i].t = g_thread_new("src", src_fd_main, &src[i]);
	for (unsigned int i = 0; i < NDATA + 1; i++) {
		g_thread_join(src[i].t);
		g_assert_no_error(src[i].error);
		g_assert_true(src[i].ok);
	}

	log = migram_soft_log_new(migram_ram_list_ram_space(f->src), &error);
	g_assert_no_error(error);
	migram_soft_log_source(log, &ls);
	m = migram_migration_new(f->src, &ls,
				 &(MigramMigrationConfig){
					 .pause_guest = pause_guest,
					 .multifd_channels = NDATA,
					 .multifd_fds = sfd });
	ch = migram_channel_new(src[0].fd, false);
	g_assert_true(migram_migration_run(m, ch, &error));
	g_assert_no_error(error);
	g_assert_true(
		migram_verify_compare(f->src, ch, NULL, NULL, &res, &error));
	g_assert_no_error(error);
	g_assert_cmpint(res.diff, ==, MIGRAM_VERIFY_EQUAL);
	g_assert_cmpuint(res.pages, ==, 272);
	migram_migration_free(m);
	migram_soft_log_free(log);
	migram_channel_free(ch);
	g_thread_join(t);
	g_assert_no_error(d.error);
	g_assert_true(d.ok);
	for (unsigned int i = 0; i < NDATA + 1; i++) {
		close(src[i].fd);
		close(dfd[i]);
	}
}

/* One data connection greeted on both sides; both must fail with want. */
static void expect_data_mismatch(Fixture *f, uint32_t role, const char *want)
{
	g_autoptr(GError) error = NULL;
	MigramHandshake peer;
	SrcFd s = { .hs = f->s };
	int sp[2];

	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), ==, 0);
	s.fd = sp[0];
	s.hs.role = role;
	s.t = g_thread_new("src", src_fd_main, &s);
	g_assert_false(migram_handshake_accept_fd(sp[1], &f->d, &peer, &error));
	g_thread_join(s.t);
	g_assert_false(s.ok);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_error(s.error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_cmpstr(error->message, ==, want);
	g_assert_cmpstr(s.error->message, ==, want);
	g_clear_error(&s.error);
	close(sp[0]);
	close(sp[1]);
}

/*
 * A destination set up for another number of data channels refuses the
 * first connection it greets, a data one here, naming both counts; a data
 * channel numbered past the agreed count is refused on both sides.  No
 * page can have moved: the stream only starts after the greeting.
 */
static void test_data_channel_mismatch(Fixture *f, gconstpointer data)
{
	(void)data;
	f->s.channels = 3;
	f->d.channels = 5;
	expect_data_mismatch(f, MIGRAM_HANDSHAKE_DATA + 1,
			     "handshake: channels differ: source 3 (2 data), "
			     "destination 5 (4 data)");
	f->d.channels = 3;
	expect_data_mismatch(f, MIGRAM_HANDSHAKE_DATA + 2,
			     "handshake: data channel 2, but 2 data channels "
			     "agreed");
	f->s.channels = f->d.channels = 1;
	expect_data_mismatch(f, MIGRAM_HANDSHAKE_DATA,
			     "handshake: data channel 0, but 0 data channels "
			     "agreed");
}

/*
 * A source that sends past its hello before the answer (the multifd
 * initial packet too early) is refused by the fd helper: those bytes would
 * be lost with its temporary channel.
 */
static void test_fd_read_ahead(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	GByteArray *a = hello(f, MIGRAM_HANDSHAKE_MAIN, 0);
	MigramHandshake peer;
	int sp[2];

	(void)data;
	/* hello() lists no blocks: compare none */
	a->len -= 4;
	migram_test_put32(a, MIGRAM_HANDSHAKE_NO_BLOCKS);
	for (int i = 0; i < 16; i++)
		migram_test_put32(a, 0x11223344);
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), ==, 0);
	g_assert_cmpint(write(sp[0], a->data, a->len), ==, (gssize)a->len);
	g_assert_false(migram_handshake_accept_fd(sp[1], &f->d, &peer, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
	g_assert_true(strstr(error->message,
			     "64 bytes after the source's "
			     "hello arrived before the answer"));
	g_byte_array_unref(a);
	close(sp[0]);
	close(sp[1]);
}

#define ADD(path, fn) g_test_add(path, Fixture, NULL, setup, fn, teardown)

int main(int argc, char **argv)
{
	int rc;

	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	ADD("/migration/handshake/agree-and-migrate", test_agree_and_migrate);
	ADD("/migration/handshake/mismatch/postcopy", test_mismatch_postcopy);
	ADD("/migration/handshake/mismatch/preempt", test_mismatch_preempt);
	ADD("/migration/handshake/mismatch/fields", test_mismatch_fields);
	ADD("/migration/handshake/mismatch/blocks", test_mismatch_blocks);
	ADD("/migration/handshake/no-list-accepts", test_no_list_accepts);
	ADD("/migration/handshake/roles", test_roles);
	ADD("/migration/handshake/preempt-first", test_preempt_first);
	ADD("/migration/handshake/qemu-compatible-peer",
	    test_qemu_compatible_peer);
	ADD("/migration/handshake/hostile", test_hostile);
	ADD("/migration/handshake/truncated", test_truncated);
	ADD("/migration/handshake/data-channels", test_data_channels);
	ADD("/migration/handshake/data-channel-mismatch",
	    test_data_channel_mismatch);
	ADD("/migration/handshake/fd-read-ahead", test_fd_read_ahead);
	rc = g_test_run();
	urcu_memb_unregister_thread();
	return rc;
}
