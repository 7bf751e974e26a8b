/* SPDX-License-Identifier: MIT */
/*
 * Regression tests for the receiver fuzz target (tests/fuzz/).
 *
 * Every input goes through the fuzz harness, the same destination set-up
 * the fuzzer uses (guard pages, read-only "rom" and "vram" tail, checks
 * after each load), so an input replays here exactly as it ran there:
 *
 *  - /migration/fuzz-regressions/sample/<name>: the seed samples of
 * tests/fuzz/stream-samples.c, valid and hostile, each with its expected error
 * code and message;
 *  - /migration/fuzz-regressions/found/<name>: inputs the fuzzer found, as byte
 * arrays below, each with the outcome after the fix.
 *
 * docs/fuzzing.md says how to add one.
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/migram.h>
#include <migram/receiver.h>

#include "fuzz-harness.h"
#include "stream-samples.h"

/*
 * Each case loads into a harness of its own, made by the set-up and freed
 * by the tear-down, so no case sees what an earlier one loaded.  (The
 * fuzzer reuses one harness; fuzz_harness_run() resets it per input.)
 */
typedef struct {
	FuzzHarness *h;
} Fixture;

static void harness_set_up(Fixture *f, gconstpointer data)
{
	(void)data;
	f->h = fuzz_harness_new();
}

static void harness_tear_down(Fixture *f, gconstpointer data)
{
	(void)data;
	fuzz_harness_free(f->h);
}

typedef struct {
	const char *name;
	const guint8 *data;
	size_t len;
	int code;            /* 0: the stream loads */
	const char *message; /* substring of the error */
} FoundInput;

static bool load(Fixture *f, const guint8 *data, size_t len,
		 MigramReceiverStats *stats, GError **error)
{
	return fuzz_harness_run(f->h, data, len, stats, error);
}

/*
 * A postcopy sample failed at ADVISE because this host has no userfaultfd:
 * its outcome cannot be checked here.
 */
static bool uffd_missing(const GError *error)
{
	return error &&
	       g_error_matches(error, MIGRAM_ERROR, MIGRAM_ERROR_UNSUPPORTED) &&
	       strstr(error->message, "userfaultfd") &&
	       !migram_postcopy_available(NULL);
}

static void test_sample(Fixture *f, gconstpointer p)
{
	const StreamSample *s = p;
	g_autoptr(GBytes) b = stream_sample_bytes(s);
	g_autoptr(GError) error = NULL;
	MigramReceiverStats st;
	size_t len;
	const guint8 *data = g_bytes_get_data(b, &len);
	bool ok = load(f, data, len, &st, &error);

	if (uffd_missing(error)) {
		g_test_skip(error->message);
		return;
	}
	if (error)
		g_test_message("%s: %s", s->name, error->message);
	fuzz_assert_outcome(ok, error, s->code, s->message);
	/* A complete load reads every byte; a stop leaves the device. */
	if (ok && !st.stopped_at_device)
		g_assert_cmpuint(st.bytes, ==, len - 1);
}

static GBytes *sample(const char *name)
{
	return stream_sample_named(name);
}

/* The pages of the simplest valid stream land where they should. */
static void test_one_block_contents(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) b = sample("one-block");
	g_autoptr(GError) error = NULL;
	MigramReceiverStats st;
	const guint8 *pc;

	(void)data;
	g_assert_true(load(f, g_bytes_get_data(b, NULL), g_bytes_get_size(b),
			   &st, &error));
	g_assert_no_error(error);
	g_assert_cmpuint(st.normal_pages, ==, 3);
	g_assert_cmpuint(st.zero_pages, ==, 1);
	g_assert_cmpuint(st.sections, ==, 3);
	pc = fuzz_harness_host(f->h, "pc.ram");
	g_assert_cmphex(pc[0], ==, 0x11);
	g_assert_cmphex(pc[0x1fff], ==, 0x22);
	g_assert_cmphex(pc[0x2000], ==, 0);
	g_assert_cmphex(pc[FUZZ_PC_RAM_BYTES - 1], ==, 0x33);
}

/* stop_at_devices: success, and the section it stopped at. */
static void test_stop_at_devices(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) b = sample("stop-at-devices");
	g_autoptr(GError) error = NULL;
	MigramReceiverStats st;

	(void)data;
	g_assert_true(load(f, g_bytes_get_data(b, NULL), g_bytes_get_size(b),
			   &st, &error));
	g_assert_no_error(error);
	g_assert_true(st.stopped_at_device);
	g_assert_cmpstr(st.device, ==, "timer");
}

/*
 * A vmdesc longer than the reader's first 64 KiB chunk, whole and cut
 * short: the buffer grows with the bytes that arrive, not with the
 * announced length (found by review, not by the fuzzer).
 */
static void test_vmdesc_chunks(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) head = sample("no-vmdesc");
	const uint32_t len = 200000;
	g_autoptr(GByteArray) in = g_byte_array_new();
	g_autofree guint8 *json = g_malloc(len);
	uint32_t be = GUINT32_TO_BE(len);
	guint8 type = 0x06;

	(void)data;
	memset(json, ' ', len);
	json[0] = '{';
	json[len - 1] = '}';
	g_byte_array_append(in, g_bytes_get_data(head, NULL),
			    (guint)g_bytes_get_size(head));
	g_byte_array_append(in, &type, 1);
	g_byte_array_append(in, (const guint8 *)&be, 4);
	g_byte_array_append(in, json, len);

	for (int cut = 0; cut < 3; cut++) {
		g_autoptr(GError) error = NULL;
		/* whole; cut inside the first chunk; inside the third */
		size_t drop = cut == 0 ? 0 : cut == 1 ? len - 1000 : 1000;
		bool ok = load(f, in->data, in->len - drop, NULL, &error);

		fuzz_assert_outcome(ok, error, cut ? MIGRAM_ERROR_PROTOCOL : 0,
				    "unexpected end of stream at byte");
	}
}

/* A sample's stream (without the mode byte) into @p list. */
static bool load_into(MigramRamList *list, const MigramReceiverConfig *cfg,
		      const char *name, GError **error)
{
	g_autoptr(GBytes) b = sample(name);
	const guint8 *data = g_bytes_get_data(b, NULL);
	size_t len = g_bytes_get_size(b) - 1;
	int fd = memfd_create("stream", MFD_CLOEXEC);
	MigramChannel *ch;
	MigramReceiver *r;
	bool ok;

	g_assert_cmpint(fd, >=, 0);
	g_assert_cmpint(write(fd, data + 1, len), ==, (ssize_t)len);
	g_assert_cmpint(lseek(fd, 0, SEEK_SET), ==, 0);
	ch = migram_channel_new(fd, true);
	r = migram_receiver_new(list, cfg);
	ok = migram_receiver_load(r, ch, error);
	migram_receiver_free(r);
	migram_channel_free(ch);
	return ok;
}

/*
 * A second load with create_blocks into a list whose bitmaps the first
 * load allocated: the created block has none, and the list's bitmaps
 * cannot be set up again, so the load fails (a known limitation, see
 * docs/fuzzing.md).  The error used to be the bitmap set-up's own, which
 * did not say where in the stream; now it does.
 */
static void test_second_load_creates(void)
{
	MigramRamList *list = migram_ram_list_new();
	MigramReceiverConfig cfg = { .create_blocks = true };
	MigramRamBlockConfig pc = { .idstr = "pc.ram",
				    .backend = MIGRAM_RAM_BACKEND_ANON,
				    .used_length = FUZZ_PC_RAM_BYTES };
	g_autoptr(GError) error = NULL;

	g_assert_nonnull(migram_ram_list_add(list, &pc, NULL));
	g_assert_true(load_into(list, &cfg, "one-block", &error));
	g_assert_no_error(error);
	if (!load_into(list, &cfg, "create-block", &error)) {
		g_test_message("%s", error->message);
		g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID);
		g_assert_nonnull(strstr(error->message, "stream byte "));
		g_assert_nonnull(strstr(error->message, "migration bitmaps"));
	}
	migram_ram_list_bitmaps_free(list);
	migram_ram_list_free(list);
}

/* ---- inputs the fuzzer found (mode byte first) ---- */

/*
 * create_blocks, and a block list entry "big" of 2^46 bytes.  The anonymous
 * mapping (MAP_NORESERVE) succeeded, then the bitmaps for 2^34 pages were
 * allocated (2 x 2 GiB) and bmap filled: libFuzzer's out-of-memory.  Now
 * the blocks one load creates are bounded by the host's memory.
 */
static const guint8 oom_create_big[] = {
	0x01, 0x51, 0x45, 0x56, 0x4d, 0x00, 0x00, 0x00, 0x03, 0x07, 0x00, 0x00,
	0x00, 0x04, 0x6e, 0x6f, 0x6e, 0x65, 0x01, 0x00, 0x00, 0x00, 0x02, 0x03,
	0x72, 0x61, 0x6d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
	0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x04, 0x03, 0x62, 0x69, 0x67, 0x00,
	0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x10, 0x7e, 0x00, 0x00, 0x00, 0x02,
};

static const FoundInput found[] = {
	{ "oom-create-big", oom_create_big, sizeof(oom_create_big),
	  MIGRAM_ERROR_INVALID,
	  "stream byte 42: cannot create block 'big' of 0x400000000000 bytes" },
};

static void test_found(Fixture *f, gconstpointer p)
{
	const FoundInput *in = p;
	g_autoptr(GError) error = NULL;
	bool ok = load(f, in->data, in->len, NULL, &error);

	if (error)
		g_test_message("%s: %s", in->name, error->message);
	fuzz_assert_outcome(ok, error, in->code, in->message);
}

static void add(const char *path, gconstpointer data,
		void (*test)(Fixture *, gconstpointer))
{
	g_test_add(path, Fixture, data, harness_set_up, test,
		   harness_tear_down);
}

int main(int argc, char **argv)
{
	const StreamSample *s;
	size_t n;
	int rc;

	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();

	s = stream_samples(&n);
	for (size_t i = 0; i < n; i++) {
		g_autofree char *path = g_strdup_printf(
			"/migration/fuzz-regressions/sample/%s", s[i].name);

		add(path, &s[i], test_sample);
	}
	add("/migration/fuzz-regressions/one-block-contents", NULL,
	    test_one_block_contents);
	add("/migration/fuzz-regressions/stop-at-devices", NULL,
	    test_stop_at_devices);
	g_test_add_func("/migration/fuzz-regressions/second-load-creates",
			test_second_load_creates);
	add("/migration/fuzz-regressions/vmdesc-chunks", NULL,
	    test_vmdesc_chunks);
	for (size_t i = 0; i < G_N_ELEMENTS(found); i++) {
		g_autofree char *path = NULL;

		if (!found[i].name)
			continue;
		path = g_strdup_printf("/migration/fuzz-regressions/found/%s",
				       found[i].name);
		add(path, &found[i], test_found);
	}
	rc = g_test_run();
	urcu_memb_unregister_thread();
	return rc;
}
