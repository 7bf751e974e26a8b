/* SPDX-License-Identifier: MIT */
/*
 * The postcopy source on a virtual return path (sender-env.h's rp_pump and
 * migram_migration_rp_deliver()), as model mode drives it: a virtual
 * channel and clock, and a pump that plays the destination.  Good runs
 * complete on the virtual clock without sleeping; hostile or missing
 * messages fail the run with an error that says what.
 */
#include <string.h>

#include <migram/dirty-log.h>
#include <migram/migram.h>

#include "migram-test-util.h"
#include "sender-env.h"

#define PAGES UINT64_C(64)

typedef enum {
	PUMP_GOOD,    /* PONG 2, one good request, SHUT */
	PUMP_OVERRUN, /* a request past the block's end */
	PUMP_UNKNOWN, /* a request for a block that does not exist */
	PUMP_BITMAP,  /* a RECV_BITMAP (needs a channel) */
	PUMP_NO_SHUT, /* never answers the end */
} PumpKind;

typedef struct {
	PumpKind kind;
	gint64 now; /* us */
	uint64_t bytes;
	bool requested;
	MigramRamList *list;
	MigramSoftLog *log;
	MigramLogSource src;
	MigramMigration *m;
	MigramChannel *ch;
	MigramChannelSink sink;
	MigramSenderEnv env;
} Fixture;

static gint64 f_now(void *opaque)
{
	return ((Fixture *)opaque)->now;
}

static void f_sleep(void *opaque, gint64 us)
{
	((Fixture *)opaque)->now += us;
}

static bool f_write(void *opaque, const struct iovec *iov, int n,
		    GError **error)
{
	Fixture *f = opaque;

	(void)error;
	for (int i = 0; i < n; i++)
		f->bytes += iov[i].iov_len;
	f->now += 10; /* the link */
	return true;
}

static void f_deliver(Fixture *f, uint16_t type, const char *idstr,
		      uint64_t start, uint32_t value)
{
	MigramRpMessage msg = {
		.type = type, .value = value, .start = start, .len = 4096
	};

	if (idstr)
		g_strlcpy(msg.idstr, idstr, sizeof(msg.idstr));
	migram_migration_rp_deliver(f->m, &msg, NULL);
}

static bool f_pump(void *opaque, MigramRpWait wait, uint32_t value)
{
	Fixture *f = opaque;

	if (wait == MIGRAM_RP_WAIT_PONG) {
		f->now += 100; /* a round trip */
		f_deliver(f, MIGRAM_RP_PONG, NULL, 0, value);
		return true;
	}
	if (wait == MIGRAM_RP_WAIT_SHUT) {
		if (f->kind == PUMP_NO_SHUT)
			return false;
		f->now += 100;
		f_deliver(f, MIGRAM_RP_SHUT, NULL, 0, 0);
		return true;
	}
	if (f->requested)
		return true;
	f->requested = true;
	switch (f->kind) {
	case PUMP_OVERRUN:
		f_deliver(f, MIGRAM_RP_REQ_PAGES_ID, "pc.ram", PAGES * 4096, 0);
		break;
	case PUMP_UNKNOWN:
		f_deliver(f, MIGRAM_RP_REQ_PAGES_ID, "nope", 0, 0);
		break;
	case PUMP_BITMAP:
		f_deliver(f, MIGRAM_RP_RECV_BITMAP, "pc.ram", 0, 0);
		break;
	default: /* the last page: urgent, ahead of the background */
		f_deliver(f, MIGRAM_RP_REQ_PAGES_ID, "pc.ram",
			  (PAGES - 1) * 4096, 0);
		break;
	}
	return true;
}

static void f_guest(void *opaque)
{
	(void)opaque;
}

static void set_up(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) e = NULL;
	MigramMigrationConfig cfg = {
		.postcopy = true,
		.pause_guest = f_guest,
		.resume_guest = f_guest,
	};
	MigramRamBlock *b;

	memset(f, 0, sizeof(*f));
	f->kind = *(const PumpKind *)data;
	f->now = 1000000;
	f->list = migram_ram_list_new();
	b = migram_ram_list_add(f->list,
				&(MigramRamBlockConfig){
					.idstr = "pc.ram",
					.backend = MIGRAM_RAM_BACKEND_ANON,
					.used_length = PAGES * 4096,
				},
				&e);
	g_assert_no_error(e);
	memset(migram_ram_block_host(b), 0x5a, PAGES * 4096 / 2);
	f->log = migram_soft_log_new(PAGES * 4096, &e);
	g_assert_no_error(e);
	migram_soft_log_source(f->log, &f->src);
	f->sink = (MigramChannelSink){ f_write, f };
	f->env = (MigramSenderEnv){
		.clock = { f_now, f_sleep, f },
		.opaque = f,
		.rp_pump = f_pump,
	};
	f->ch = migram_channel_new_virtual(&f->sink, &f->env.clock);
	f->m = migram_migration_new(f->list, &f->src, &cfg);
	migram_migration_set_env(f->m, &f->env);
	migram_migration_start_postcopy(f->m);
}

static void tear_down(Fixture *f, gconstpointer data)
{
	(void)data;
	migram_migration_free(f->m);
	migram_channel_free(f->ch);
	migram_soft_log_free(f->log);
	migram_ram_list_free(f->list);
}

/* Postcopy completes on the virtual clock; the request went first. */
static void test_good(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) e = NULL;
	MigramMigrationStats st;
	gint64 t0 = g_get_monotonic_time();

	(void)data;
	migram_migration_run(f->m, f->ch, &e);
	g_assert_no_error(e);
	migram_migration_get_stats(f->m, &st);
	g_assert_cmpuint(st.postcopy_requests, ==, 1);
	g_assert_cmpuint(st.postcopy_urgent_pages, ==, 1);
	g_assert_cmpuint(st.normal_pages, ==, PAGES / 2);
	g_assert_cmpuint(st.duplicate_pages, ==, PAGES / 2);
	g_assert_cmpuint(f->bytes, >, PAGES / 2 * 4096);
	/* the PONG's round trip is the switch's downtime; SHUT's ends it */
	g_assert_cmpuint(st.downtime_ms, ==, 0);
	g_assert_cmpuint(st.postcopy_time_ms, <, 10);
	/* nothing waited for real (a generous bound, not a timing claim) */
	g_assert_cmpint(g_get_monotonic_time() - t0, <,
			(gint64)10 * G_USEC_PER_SEC);
}

/* A hostile or missing message fails the run and says what. */
static void test_bad(Fixture *f, gconstpointer data)
{
	static const char *const want[] = {
		[PUMP_OVERRUN] = "overruns ramblock 'pc.ram'",
		[PUMP_UNKNOWN] = "unknown ramblock 'nope'",
		[PUMP_BITMAP] = "virtual return path",
		[PUMP_NO_SHUT] = "never sent the SHUT",
	};
	g_autoptr(GError) e = NULL;

	g_assert_false(migram_migration_run(f->m, f->ch, &e));
	g_assert_nonnull(e);
	if (!strstr(e->message, want[*(const PumpKind *)data]))
		g_error("unexpected error: %s", e->message);
}

static const PumpKind kinds[] = { PUMP_GOOD, PUMP_OVERRUN, PUMP_UNKNOWN,
				  PUMP_BITMAP, PUMP_NO_SHUT };

#define ADD(path, kind, fn)                                                    \
	g_test_add("/migration/virtual-rp/" path, Fixture, &kinds[kind],       \
		   set_up, fn, tear_down)

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	ADD("good", PUMP_GOOD, test_good);
	ADD("overrun", PUMP_OVERRUN, test_bad);
	ADD("unknown-block", PUMP_UNKNOWN, test_bad);
	ADD("bitmap", PUMP_BITMAP, test_bad);
	ADD("no-shut", PUMP_NO_SHUT, test_bad);
	return g_test_run();
}
