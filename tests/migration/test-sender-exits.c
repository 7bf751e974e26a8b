/* SPDX-License-Identifier: MIT */
/*
 * How the sender ends: every exit path lifts the auto-converge throttle,
 * and every false or NULL return says why.  A scripted log source that
 * reports every page dirty at every sync keeps the migration from ever
 * converging, and the stream goes to /dev/null at a fixed rate, so the
 * tests need no receiver and no guest threads.
 */
#include <fcntl.h>
#include <locale.h>
#include <string.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/bitmap.h>
#include <migram/dirty-log.h>
#include <migram/migram.h>
#include <migram/sender.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>
#include <migram/stream.h>

#include "migram-test-util.h"

#define P 4096u
#define MiB (UINT64_C(1) << 20)

/*
 * The fixture of the cases that run a migration: one 4 MiB block, a
 * channel to /dev/null, and what the case builds from them; the tear-down
 * frees whatever is set.
 */
typedef struct {
	MigramRamList *list;
	MigramMigration *m;
	MigramChannel *ch;
	MigramSoftLog *log; /* the case's own log source, or NULL */
	int throttle_calls;
	unsigned int last_throttle;
	unsigned int max_throttle;
	bool cancel_on_throttle; /* cancel from the first throttle call */
	bool add_on_start;       /* hot-plug a block while blocks start */
	bool added;
} Ctx;

static bool dirty_start(void *o, MigramRamBlock *b, GError **e)
{
	Ctx *c = o;

	(void)e;
	if (c->add_on_start && !c->added) {
		g_autoptr(GError) error = NULL;

		/* A small block sorts last: the setup loop meets it. */
		c->added = true;
		g_assert_nonnull(migram_ram_list_add(
			c->list,
			&(MigramRamBlockConfig){ .idstr = "hotplug.ram",
						 .used_length = 64 * 1024 },
			&error));
		g_assert_no_error(error);
	}
	(void)b;
	return true;
}

/* Every page is dirty again at every sync: it never converges. */
static bool dirty_sync(void *o, MigramRamBlock *b, unsigned long *collected,
		       uint64_t *newly, GError **e)
{
	size_t pages = (size_t)(migram_ram_block_used_length(b) / P);

	(void)o;
	(void)e;
	*newly = pages - migram_bitmap_count(collected, 0, pages);
	migram_bitmap_set(collected, 0, pages);
	return true;
}

static bool dirty_clear(void *o, MigramRamBlock *b, uint64_t first, uint64_t n,
			const unsigned long *mask, GError **e)
{
	(void)o;
	(void)b;
	(void)first;
	(void)n;
	(void)mask;
	(void)e;
	return true;
}

static void dirty_stop(void *o, MigramRamBlock *b)
{
	(void)o;
	(void)b;
}

static const MigramLogSourceOps dirty_ops = {
	"always-dirty", dirty_start, dirty_sync, dirty_clear, dirty_stop,
};

static void pause_guest(void *opaque)
{
	(void)opaque;
}

static void throttle_guest(void *opaque, unsigned int percent)
{
	Ctx *c = opaque;

	c->throttle_calls++;
	c->last_throttle = percent;
	c->max_throttle = MAX(c->max_throttle, percent);
	if (percent && c->cancel_on_throttle)
		migram_migration_cancel(c->m);
}

/* One 4 MiB block of non-zero pages (zero pages would cost nothing). */
static MigramRamList *one_block(void)
{
	g_autoptr(GError) error = NULL;
	MigramRamList *l = migram_ram_list_new();
	MigramRamBlock *b = migram_ram_list_add(
		l,
		&(MigramRamBlockConfig){ .idstr = "pc.ram",
					 .used_length = 4 * MiB },
		&error);

	g_assert_no_error(error);
	urcu_memb_read_lock();
	memset(migram_ram_block_host(b), 0x5a, 4 * MiB);
	urcu_memb_read_unlock();
	return l;
}

static MigramChannel *null_channel(void)
{
	int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);

	g_assert_cmpint(fd, >=, 0);
	return migram_channel_new(fd, true);
}

/*
 * Run a migration of one always-dirty block to /dev/null at 40 MB/s (a
 * pass takes about 100 ms) with auto-converge; return its result.
 */
static bool run_throttled(Ctx *c, MigramMigrationConfig *cfg, GError **error)
{
	MigramLogSource src = { &dirty_ops, c };

	cfg->max_bandwidth = 40 * 1000 * 1000;
	cfg->downtime_limit_ms = 1;
	cfg->auto_converge = true;
	cfg->stall_syncs = 100;
	cfg->pause_guest = pause_guest;
	cfg->throttle_guest = throttle_guest;
	cfg->opaque = c;
	c->m = migram_migration_new(c->list, &src, cfg);
	g_assert_nonnull(c->m);
	return migram_migration_run(c->m, c->ch, error);
}

static void ctx_set_up(Ctx *c, gconstpointer data)
{
	(void)data;
	c->list = one_block();
	c->ch = null_channel();
}

static void ctx_tear_down(Ctx *c, gconstpointer data)
{
	(void)data;
	if (c->ch)
		migram_channel_free(c->ch);
	if (c->m)
		migram_migration_free(c->m);
	migram_ram_list_free(c->list);
	if (c->log)
		migram_soft_log_free(c->log);
}

/* Cancelled while throttled: the guest runs at full speed again. */
static void test_cancel_lifts_throttle(Ctx *c, gconstpointer data)
{
	MigramMigrationConfig cfg = { .max_time_ms = 60 * 1000 };
	g_autoptr(GError) error = NULL;
	MigramMigrationStats st;

	(void)data;
	c->cancel_on_throttle = true;
	g_assert_false(run_throttled(c, &cfg, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_CANCELLED);
	migram_migration_get_stats(c->m, &st);
	g_assert_cmpint(st.status, ==, MIGRAM_MIGRATION_CANCELLED);
	g_assert_cmpuint(c->max_throttle, >=, 20);
	g_assert_cmpuint(c->last_throttle, ==, 0);
}

/* Out of time while throttled: lifted too. */
static void test_max_time_lifts_throttle(Ctx *c, gconstpointer data)
{
	MigramMigrationConfig cfg = { .max_time_ms = 700 };
	g_autoptr(GError) error = NULL;

	(void)data;
	g_assert_false(run_throttled(c, &cfg, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NOT_CONVERGED);
	g_assert_nonnull(strstr(error->message, "did not finish within"));
	g_test_message("throttled to %u %%, then %u", c->max_throttle,
		       c->last_throttle);
	g_assert_cmpuint(c->max_throttle, >=, 20);
	g_assert_cmpuint(c->last_throttle, ==, 0);
}

/* A required callback missing is an error the caller can print. */
static void test_no_pause_guest(Ctx *c, gconstpointer data)
{
	MigramMigrationConfig cfg = { 0 };
	g_autoptr(GError) error = NULL;
	MigramLogSource src = { &dirty_ops, c };

	(void)data;
	c->m = migram_migration_new(c->list, &src, &cfg);
	g_assert_nonnull(c->m);
	g_assert_false(migram_migration_run(c->m, c->ch, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(error->message, "pause_guest"));
}

/* A programming error: a critical and NULL, nothing half-built. */
static void test_new_without_source(void)
{
	MigramMigrationConfig cfg = { .pause_guest = pause_guest };
	MigramLogSource none = { NULL, NULL };
	MigramRamList *l = migram_ram_list_new();

	g_test_expect_message("migram", G_LOG_LEVEL_CRITICAL, "*source*");
	g_assert_null(migram_migration_new(l, &none, &cfg));
	g_test_assert_expected_messages();
	g_test_expect_message("migram", G_LOG_LEVEL_CRITICAL, "*config*");
	g_assert_null(migram_migration_new(
		l, &(MigramLogSource){ &dirty_ops, NULL }, NULL));
	g_test_assert_expected_messages();
	migram_ram_list_free(l);
}

/*
 * A block added after the bitmaps were allocated but before the blocks
 * started has no bmap: the migration fails and names it.
 */
static void test_block_added_in_setup(Ctx *c, gconstpointer data)
{
	MigramMigrationConfig cfg = { .pause_guest = pause_guest };
	g_autoptr(GError) error = NULL;
	MigramLogSource src = { &dirty_ops, c };

	(void)data;
	c->add_on_start = true;
	cfg.opaque = c;
	c->m = migram_migration_new(c->list, &src, &cfg);
	g_assert_false(migram_migration_run(c->m, c->ch, &error));
	g_assert_true(c->added);
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
	g_assert_nonnull(strstr(error->message, "hotplug.ram"));
}

/* A lost mark on the software log shows in the migration's stats. */
static void test_lost_marks_in_stats(Ctx *c, gconstpointer data)
{
	MigramMigrationConfig cfg = { .pause_guest = pause_guest };
	g_autoptr(GError) error = NULL;
	g_autofree char *json = NULL;
	MigramMigrationStats st;
	MigramSoftLog *log;
	MigramLogSource src;

	(void)data;
	log = c->log = migram_soft_log_new(16 * MiB, &error);
	g_assert_no_error(error);
#ifndef G_DISABLE_ASSERT
	g_test_expect_message("migram", G_LOG_LEVEL_CRITICAL, "*outside*");
#endif
	g_assert_false(migram_dirty_bitmap_set_dirty(
		migram_soft_log_bitmap(log), 64 * MiB));
	g_test_assert_expected_messages();
	migram_soft_log_source(log, &src);
	c->m = migram_migration_new(c->list, &src, &cfg);
	g_assert_true(migram_migration_run(c->m, c->ch, &error));
	g_assert_no_error(error);
	migram_migration_get_stats(c->m, &st);
	g_assert_cmpuint(st.out_of_range_marks, ==, 1);
	json = migram_migration_stats_to_json(&st);
	g_assert_nonnull(strstr(json, "\"out_of_range_marks\": 1"));
}

/* The JSON's numbers have a decimal point whatever the locale says. */
static void test_json_decimal_comma(void)
{
	static const char *const commas[] = { "de_DE.UTF-8", "de_DE.utf8",
					      "fr_FR.UTF-8", "nl_NL.UTF-8" };
	MigramMigrationStats st = { .mbps = 1.5 };
	g_autofree char *saved = g_strdup(setlocale(LC_NUMERIC, NULL));
	g_autofree char *json = NULL;
	const char *got = NULL;

	/* The formatter itself, in the current (C) locale. */
	json = migram_migration_stats_to_json(&st);
	g_assert_nonnull(strstr(json, "\"mbps\": 1.500"));
	g_clear_pointer(&json, g_free);
	for (size_t i = 0; i < G_N_ELEMENTS(commas) && !got; i++)
		got = setlocale(LC_NUMERIC, commas[i]);
	if (!got) {
		g_test_skip("no decimal-comma locale installed (de_DE.UTF-8: "
			    "localedef -i de_DE -f UTF-8 de_DE.UTF-8)");
		return;
	}
	g_test_message("LC_NUMERIC=%s", got);
	json = migram_migration_stats_to_json(&st);
	setlocale(LC_NUMERIC, saved);
	g_assert_nonnull(strstr(json, "\"mbps\": 1.500"));
	g_assert_null(strstr(json, "1,500"));
}

/* g_autoptr() for the public object types (declared owner first). */
static void test_autoptr(void)
{
	g_autoptr(MigramRamList) list = one_block();
	g_autoptr(MigramChannel) ch = null_channel();
	g_autoptr(MigramReceiver) rx = migram_receiver_new(list, NULL);
	g_autoptr(MigramStreamWriter) w = migram_stream_writer_new(ch);
	g_autoptr(MigramMigration) m = NULL;
	MigramMigrationConfig cfg = { .pause_guest = pause_guest };
	MigramLogSource src = { &dirty_ops, NULL };

	m = migram_migration_new(list, &src, &cfg);
	g_assert_nonnull(rx);
	g_assert_nonnull(w);
	g_assert_nonnull(m);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	g_test_add("/migration/sender-exits/cancel-lifts-throttle", Ctx, NULL,
		   ctx_set_up, test_cancel_lifts_throttle, ctx_tear_down);
	g_test_add("/migration/sender-exits/max-time-lifts-throttle", Ctx, NULL,
		   ctx_set_up, test_max_time_lifts_throttle, ctx_tear_down);
	g_test_add("/migration/sender-exits/no-pause-guest", Ctx, NULL,
		   ctx_set_up, test_no_pause_guest, ctx_tear_down);
	g_test_add_func("/migration/sender-exits/new-without-source",
			test_new_without_source);
	g_test_add("/migration/sender-exits/block-added-in-setup", Ctx, NULL,
		   ctx_set_up, test_block_added_in_setup, ctx_tear_down);
	g_test_add("/migration/sender-exits/lost-marks-in-stats", Ctx, NULL,
		   ctx_set_up, test_lost_marks_in_stats, ctx_tear_down);
	g_test_add_func("/migration/sender-exits/json-decimal-comma",
			test_json_decimal_comma);
	g_test_add_func("/migration/sender-exits/autoptr", test_autoptr);
	return g_test_run();
}
