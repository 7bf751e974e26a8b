/* SPDX-License-Identifier: MIT */
/*
 * Device state as named, versioned sections (device-section.h): a
 * migration carries several sections (two instances of one device, other
 * versions, the old single blob too) and the destination's loader gets
 * each with its name, instance, version and exact body, in order; a
 * loader refusing an unknown name or version fails the load with its
 * reason and the section's place; the old save_device/load_device pair
 * still works, alone and next to named sections; a bad section list and a
 * failing save fail the migration with what and where.
 */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/device-section.h>
#include <migram/dirty-log.h>
#include <migram/guest-layout.h>
#include <migram/migram.h>
#include <migram/migration.h>
#include <migram/ramblock.h>
#include <migram/receiver.h>

#define PAGE MIGRAM_TARGET_PAGE_SIZE

/* What the destination's loader saw, in order. */
typedef struct {
	char idstr[256];
	uint32_t instance, version;
	GByteArray *body;
} Seen;

typedef struct {
	MigramRamList *src, *dst;
	GArray *seen;      /* Seen */
	char refuse[64];   /* loader refuses sections of this name */
	bool old_loader;   /* use load_device only */
	bool postcopy;     /* switch to postcopy once active */
	bool saw_postcopy; /* the source reached postcopy-active */
	bool load_ok;
	GError *load_error;
	int save_calls;
} Fixture;

static void clear_seen(gpointer p)
{
	Seen *s = p;

	g_byte_array_unref(s->body);
}

static void setup(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramRamBlockConfig c = { .idstr = "pc.ram",
				   .used_length = 64 * PAGE };
	MigramRamBlock *b;

	(void)data;
	f->src = migram_ram_list_new();
	f->dst = migram_ram_list_new();
	b = migram_ram_list_add(f->src, &c, &error);
	g_assert_no_error(error);
	memset(migram_ram_block_host(b), 0x33, 64 * PAGE);
	migram_ram_list_add(f->dst, &c, &error);
	g_assert_no_error(error);
	f->seen = g_array_new(FALSE, TRUE, sizeof(Seen));
	g_array_set_clear_func(f->seen, clear_seen);
}

static void teardown(Fixture *f, gconstpointer data)
{
	(void)data;
	migram_ram_list_free(f->src);
	migram_ram_list_free(f->dst);
	g_array_unref(f->seen);
	g_clear_error(&f->load_error);
}

/* ---- the source's devices ------------------------------------------ */

static bool save_text(void *opaque, GByteArray *out, GError **error)
{
	const char *text = opaque;

	(void)error;
	g_byte_array_append(out, (const guint8 *)text, strlen(text));
	return true;
}

static bool save_big(void *opaque, GByteArray *out, GError **error)
{
	(void)opaque;
	(void)error;
	g_byte_array_set_size(out, 100000);
	for (guint i = 0; i < out->len; i++)
		out->data[i] = (guint8)(i * 13);
	return true;
}

static bool save_fails(void *opaque, GByteArray *out, GError **error)
{
	(void)opaque;
	(void)out;
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_IO, "disk gone");
	return false;
}

static bool save_legacy(void *opaque, GByteArray *out, GError **error)
{
	Fixture *f = opaque;

	(void)error;
	f->save_calls++;
	g_byte_array_append(out, (const guint8 *)"legacy", 6);
	return true;
}

/* ---- the destination ------------------------------------------------ */

static void record(Fixture *f, const char *idstr, uint32_t instance,
		   uint32_t version, const guint8 *data, size_t len)
{
	Seen s = { .instance = instance, .version = version };

	g_strlcpy(s.idstr, idstr, sizeof(s.idstr));
	s.body = g_byte_array_new();
	g_byte_array_append(s.body, data, (guint)len);
	g_array_append_val(f->seen, s);
}

static bool load_section(void *opaque, const MigramDeviceSectionInfo *info,
			 const guint8 *data, size_t len, GError **error)
{
	Fixture *f = opaque;

	g_assert_cmpuint(info->stream_offset, >, 0);
	if (strcmp(info->idstr, f->refuse) == 0) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED,
			    "no device '%s' version %u here", info->idstr,
			    info->version_id);
		return false;
	}
	record(f, info->idstr, info->instance_id, info->version_id, data, len);
	return true;
}

static bool load_device(void *opaque, const char *idstr, const guint8 *data,
			size_t len, GError **error)
{
	(void)error;
	record(opaque, idstr, 0, 1, data, len);
	return true;
}

typedef struct {
	Fixture *f;
	int fd;
} Dst;

static void postcopy_run(void *opaque)
{
	(void)opaque;
}

static gpointer dst_main(gpointer p)
{
	Dst *d = p;
	Fixture *f = d->f;
	MigramChannel *ch = migram_channel_new(d->fd, true);
	MigramReceiverConfig cfg = { .opaque = f };
	MigramReceiver *r;

	if (f->postcopy)
		cfg.postcopy_run = postcopy_run;
	if (f->old_loader)
		cfg.load_device = load_device;
	else
		cfg.load_section = load_section;
	urcu_memb_register_thread();
	r = migram_receiver_new(f->dst, &cfg);
	f->load_ok = migram_receiver_load(r, ch, &f->load_error);
	migram_receiver_free(r);
	urcu_memb_unregister_thread();
	migram_channel_free(ch);
	return NULL;
}

static void on_event(MigramMigration *m, MigramMigrationStatus st, void *o)
{
	Fixture *f = o;

	if (st == MIGRAM_MIGRATION_ACTIVE)
		migram_migration_start_postcopy(m);
	if (st == MIGRAM_MIGRATION_POSTCOPY_ACTIVE)
		f->saw_postcopy = true;
}

static void pause_guest(void *opaque)
{
	(void)opaque;
}

/* Migrate f->src to f->dst with cfg; the source's result and stats. */
static bool migrate_stats(Fixture *f, MigramMigrationConfig *cfg,
			  MigramMigrationStats *st, GError **error)
{
	g_autoptr(GError) e = NULL;
	MigramLogSource src;
	MigramSoftLog *log;
	MigramMigration *m;
	MigramChannel *ch;
	GThread *t;
	Dst d = { .f = f };
	int sp[2];
	bool ok;

	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), ==, 0);
	d.fd = sp[1];
	t = g_thread_new("dst", dst_main, &d);
	log = migram_soft_log_new(migram_ram_list_ram_space(f->src), &e);
	g_assert_no_error(e);
	migram_soft_log_source(log, &src);
	cfg->pause_guest = pause_guest;
	m = migram_migration_new(f->src, &src, cfg);
	if (f->postcopy)
		g_assert_true(migram_migration_set_event_callback(m, on_event,
								  f, NULL));
	ch = migram_channel_new(sp[0], true);
	ok = migram_migration_run(m, ch, error);
	if (st)
		migram_migration_get_stats(m, st);
	migram_channel_free(ch); /* the destination sees the end */
	g_thread_join(t);
	migram_migration_free(m);
	migram_soft_log_free(log);
	return ok;
}

static bool migrate(Fixture *f, MigramMigrationConfig *cfg, GError **error)
{
	return migrate_stats(f, cfg, NULL, error);
}

static void assert_seen(Fixture *f, guint i, const char *idstr,
			uint32_t instance, uint32_t version, const void *body,
			size_t len)
{
	Seen *s;

	g_assert_cmpuint(i, <, f->seen->len);
	s = &g_array_index(f->seen, Seen, i);
	g_assert_cmpstr(s->idstr, ==, idstr);
	g_assert_cmpuint(s->instance, ==, instance);
	g_assert_cmpuint(s->version, ==, version);
	g_assert_cmpmem(s->body->data, s->body->len, body, len);
}

static void test_many_sections(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(GByteArray) big = g_byte_array_new();
	MigramDeviceSection secs[] = {
		{ "serial", 0, 2, save_text, "uart0 state" },
		{ "serial", 1, 2, save_text, "uart1 state" },
		{ "rtc", 0, 5, save_text, "" },
		{ "virtio-blk", 7, 1, save_big, NULL },
	};
	MigramMigrationConfig cfg = {
		.save_device = save_legacy,
		.device_idstr = "vmm-misc",
		.opaque = f,
		.device_sections = secs,
		.n_device_sections = G_N_ELEMENTS(secs),
	};

	(void)data;
	g_assert_true(migrate(f, &cfg, &error));
	g_assert_no_error(error);
	g_assert_no_error(f->load_error);
	g_assert_true(f->load_ok);
	save_big(NULL, big, NULL);
	g_assert_cmpuint(f->seen->len, ==, 5);
	assert_seen(f, 0, "vmm-misc", 0, 1, "legacy", 6);
	assert_seen(f, 1, "serial", 0, 2, "uart0 state", 11);
	assert_seen(f, 2, "serial", 1, 2, "uart1 state", 11);
	assert_seen(f, 3, "rtc", 0, 5, "", 0);
	assert_seen(f, 4, "virtio-blk", 7, 1, big->data, big->len);
	g_assert_cmpint(f->save_calls, ==, 1);
	/* and the RAM arrived */
	urcu_memb_read_lock();
	g_assert_cmpint(((guint8 *)migram_ram_block_host(migram_ram_list_find(
				f->dst, "pc.ram")))[63 * PAGE],
			==, 0x33);
	urcu_memb_read_unlock();
}

static void test_unknown_refused(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramDeviceSection secs[] = {
		{ "serial", 0, 2, save_text, "uart0" },
		{ "gpu", 0, 9, save_text, "frame" },
	};
	MigramMigrationConfig cfg = { .device_sections = secs,
				      .n_device_sections = 2 };

	(void)data;
	g_strlcpy(f->refuse, "gpu", sizeof(f->refuse));
	migrate(f, &cfg, &error);
	g_assert_false(f->load_ok);
	g_assert_error(f->load_error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED);
	g_assert_true(g_str_has_prefix(f->load_error->message, "stream byte "));
	g_assert_true(strstr(f->load_error->message,
			     ": device section 'gpu' instance 0 version 9 "
			     "(5 bytes) refused: no device 'gpu' version 9 "
			     "here"));
	g_assert_cmpuint(f->seen->len, ==, 1);
	assert_seen(f, 0, "serial", 0, 2, "uart0", 5);
}

/* Postcopy: the sections travel inside the package, before RUN. */
static void test_postcopy(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramDeviceSection secs[] = {
		{ "serial", 0, 2, save_text, "uart0 state" },
		{ "rtc", 1, 5, save_text, "tick" },
	};
	MigramMigrationConfig cfg = { .postcopy = true,
				      .device_sections = secs,
				      .n_device_sections = 2 };
	(void)data;
	if (!migram_postcopy_available(&error)) {
		g_test_skip(error->message);
		return;
	}
	f->postcopy = true;
	g_assert_true(migrate(f, &cfg, &error));
	g_assert_no_error(error);
	g_assert_no_error(f->load_error);
	g_assert_true(f->load_ok);
	g_assert_true(f->saw_postcopy);
	g_assert_cmpuint(f->seen->len, ==, 2);
	assert_seen(f, 0, "serial", 0, 2, "uart0 state", 11);
	assert_seen(f, 1, "rtc", 1, 5, "tick", 4);
}

/* The 0.1 pair alone, and an old loader next to named sections. */
static void test_old_api(Fixture *f, gconstpointer data)
{
	g_autoptr(GError) error = NULL;
	MigramDeviceSection v1 = { "extra", 3, 1, save_text, "x" };
	MigramDeviceSection v2 = { "newer", 0, 2, save_text, "y" };
	MigramMigrationConfig cfg = { .save_device = save_legacy, .opaque = f };

	(void)data;
	f->old_loader = true;
	g_assert_true(migrate(f, &cfg, &error));
	g_assert_true(f->load_ok);
	g_assert_cmpuint(f->seen->len, ==, 1);
	assert_seen(f, 0, "migram-device", 0, 1, "legacy", 6);

	/* version-1 named sections reach load_device too */
	g_array_set_size(f->seen, 0);
	cfg.device_sections = &v1;
	cfg.n_device_sections = 1;
	g_assert_true(migrate(f, &cfg, &error));
	g_assert_true(f->load_ok);
	g_assert_cmpuint(f->seen->len, ==, 2);
	assert_seen(f, 1, "extra", 0, 1, "x", 1);

	/* another version does not: refused as before */
	g_array_set_size(f->seen, 0);
	cfg.device_sections = &v2;
	migrate(f, &cfg, &error);
	g_clear_error(&error);
	g_assert_false(f->load_ok);
	g_assert_true(strstr(f->load_error->message,
			     "device section 'newer' version 2: only migram "
			     "device blobs (version 1) can be loaded"));
}

static void expect_source_error(Fixture *f, const MigramDeviceSection *secs,
				unsigned int n, const char *needle)
{
	g_autoptr(GError) error = NULL;
	MigramMigrationConfig cfg = { .device_sections = secs,
				      .n_device_sections = n };

	g_assert_false(migrate(f, &cfg, &error));
	g_assert_nonnull(error);
	if (!strstr(error->message, needle))
		g_error("'%s' lacks '%s'", error->message, needle);
	g_assert_false(f->load_ok);
	g_clear_error(&f->load_error);
}

static void test_bad_list(Fixture *f, gconstpointer data)
{
	char long_name[300];
	MigramDeviceSection dup[] = {
		{ "serial", 0, 2, save_text, "a" },
		{ "serial", 0, 3, save_text, "b" },
	};
	MigramDeviceSection bad[] = { { "ram", 0, 4, save_text, "a" } };
	MigramDeviceSection noname[] = { { "", 0, 1, save_text, "a" } };
	MigramDeviceSection nosave[] = { { "x", 0, 1, NULL, NULL } };
	MigramDeviceSection fails[] = { { "disk", 2, 1, save_fails, NULL } };
	MigramDeviceSection longn[] = { { long_name, 0, 1, save_text, "" } };

	(void)data;
	memset(long_name, 'n', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = 0;
	expect_source_error(f, dup, 2,
			    "device sections 0 and 1 are both 'serial' "
			    "instance 0");
	expect_source_error(f, bad, 1, "device section 0 ('ram' instance 0)");
	expect_source_error(f, noname, 1, "device section 0 ('' instance 0)");
	expect_source_error(f, nosave, 1, "a save callback");
	expect_source_error(f, longn, 1, "name of 1 to 255 bytes");
	expect_source_error(f, fails, 1,
			    "saving device section 'disk' instance 2: disk "
			    "gone");
	expect_source_error(f, NULL, 2, "2 device sections but no array");
}

#define ADD(path, fn) g_test_add(path, Fixture, NULL, setup, fn, teardown)

int main(int argc, char **argv)
{
	int rc;

	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();
	ADD("/migration/device-sections/many", test_many_sections);
	ADD("/migration/device-sections/unknown-refused", test_unknown_refused);
	ADD("/migration/device-sections/postcopy", test_postcopy);
	ADD("/migration/device-sections/old-api", test_old_api);
	ADD("/migration/device-sections/bad-list", test_bad_list);
	rc = g_test_run();
	urcu_memb_unregister_thread();
	return rc;
}
