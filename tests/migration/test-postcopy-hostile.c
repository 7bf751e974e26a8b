/* SPDX-License-Identifier: MIT */
/*
 * Postcopy under hostile input, on both ends, without threads of our own:
 *
 *  - /migration/postcopy-hostile/stream/<name>: the postcopy samples of
 *    tests/fuzz/stream-samples.c ("pc-*": ADVISE, the discard list, the
 *    package with LISTEN and RUN, placement, commands out of order),
 *    loaded through the receiver fuzz harness.  Each must fail with its
 *    error code and a message naming what and where (a stream byte), and
 *    the destination memory must be what the stream's valid prefix left
 *    (the prefix is loaded too and the blocks compared), except the pages
 *    a sample names;
 *  - /migration/postcopy-hostile/rp/<name>: the samples of
 * tests/fuzz/rp-samples.c, return-path messages read by the source's parser
 * (migram_rp_read, migram_rp_read_bitmap) through the return-path fuzz harness;
 *  - no file descriptor or thread outlives a postcopy load (ADVISE opens a
 *    userfaultfd, LISTEN starts the fault thread);
 *  - a block's postcopy length left over from an earlier load.
 *
 * Samples that need userfaultfd are skipped, with the reason, where it is
 * unavailable.
 */
#include <dirent.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include <migram/migram.h>
#include <migram/receiver.h>

#include "fuzz-harness.h"
#include "rp-harness.h"
#include "rp-samples.h"
#include "stream-samples.h"

/*
 * Each case loads into harnesses of its own, made by the set-up and freed
 * by the tear-down, so no case sees what an earlier one loaded.
 */
typedef struct {
	FuzzHarness *h;
	RpHarness *rp;
} Fixture;

static void harness_set_up(Fixture *f, gconstpointer data)
{
	(void)data;
	f->h = fuzz_harness_new();
	f->rp = rp_harness_new();
}

static void harness_tear_down(Fixture *f, gconstpointer data)
{
	(void)data;
	rp_harness_free(f->rp);
	fuzz_harness_free(f->h);
}

/* The pages a sample's hostile part may change, by design. */
typedef struct {
	const char *sample;
	const char *block;
	uint64_t offset, length;
} NamedPages;

static const NamedPages named[] = {
	/* its first range is good and dropped before the second fails */
	{ "pc-discard-second-bad", "pc.ram", 0x3000, 0x1000 },
	/* its one page is placed before the stream ends */
	{ "pc-cut-after-listen", "pc.ram", 0x1000, 0x1000 },
};

static const struct {
	const char *name;
	size_t bytes;
} compared[] = {
	{ "pc.ram", FUZZ_PC_RAM_BYTES },
	{ "vram", FUZZ_VRAM_USED },
	{ "shared", FUZZ_SHARED_BYTES },
};

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

static bool need_uffd(void)
{
	g_autoptr(GError) error = NULL;

	if (migram_postcopy_available(&error))
		return true;
	g_test_skip(error->message);
	return false;
}

/* The destination blocks' memory as the last load left it. */
static GByteArray *snapshot(const Fixture *f)
{
	GByteArray *a = g_byte_array_new();

	for (size_t i = 0; i < G_N_ELEMENTS(compared); i++)
		g_byte_array_append(a,
				    fuzz_harness_host(f->h, compared[i].name),
				    (guint)compared[i].bytes);
	return a;
}

/* Whether byte @p at of a snapshot lies in pages @p s names. */
static bool is_named(const char *sample, size_t at)
{
	size_t base = 0;

	for (size_t i = 0; i < G_N_ELEMENTS(compared); i++) {
		if (at < base + compared[i].bytes) {
			for (size_t k = 0; k < G_N_ELEMENTS(named); k++)
				if (strcmp(named[k].sample, sample) == 0 &&
				    strcmp(named[k].block, compared[i].name) ==
					    0 &&
				    at - base >= named[k].offset &&
				    at - base <
					    named[k].offset + named[k].length)
					return true;
			return false;
		}
		base += compared[i].bytes;
	}
	return false;
}

static void test_stream(Fixture *f, gconstpointer p)
{
	const StreamSample *s = p;
	size_t mark = 0, len;
	g_autoptr(GBytes) b = stream_sample_bytes_at(s, &mark);
	g_autoptr(GError) error = NULL;
	g_autoptr(GError) prefix_error = NULL;
	g_autoptr(GByteArray) after = NULL;
	g_autoptr(GByteArray) before = NULL;
	const guint8 *data = g_bytes_get_data(b, &len);
	bool ok;

	ok = fuzz_harness_run(f->h, data, len, NULL, &error);
	if (uffd_missing(error)) {
		g_test_skip(error->message);
		return;
	}
	if (error)
		g_test_message("%s: %s", s->name, error->message);
	fuzz_assert_outcome(ok, error, s->code, s->message);
	if (!mark)
		return;
	after = snapshot(f);
	/* The valid prefix alone (it fails at its end of stream). */
	g_assert_false(fuzz_harness_run(f->h, data, mark, NULL, &prefix_error));
	g_assert_error(prefix_error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
	g_assert_nonnull(strstr(prefix_error->message, "unexpected end of "
						       "stream at byte"));
	before = snapshot(f);
	g_assert_cmpuint(after->len, ==, before->len);
	for (size_t i = 0; i < after->len; i++)
		if (after->data[i] != before->data[i] && !is_named(s->name, i))
			g_error("%s: byte %zu of the destination changed "
				"(0x%02x, after the prefix 0x%02x)",
				s->name, i, after->data[i], before->data[i]);
}

/* A valid postcopy stream: the discarded pages arrive after the switch. */
static void test_valid_contents(Fixture *f, gconstpointer data)
{
	const StreamSample *all;
	const StreamSample *s = NULL;
	g_autoptr(GBytes) b = NULL;
	g_autoptr(GError) error = NULL;
	MigramReceiverStats st;
	const guint8 *pc, *shared;
	size_t n;

	(void)data;
	if (!need_uffd())
		return;
	all = stream_samples(&n);
	for (size_t i = 0; i < n; i++)
		if (strcmp(all[i].name, "pc-valid") == 0)
			s = &all[i];
	g_assert_nonnull(s);
	b = stream_sample_bytes(s);
	g_assert_true(fuzz_harness_run(f->h, g_bytes_get_data(b, NULL),
				       g_bytes_get_size(b), &st, &error));
	g_assert_no_error(error);
	pc = fuzz_harness_host(f->h, "pc.ram");
	shared = fuzz_harness_host(f->h, "shared");
	/* page 0 and 1 discarded and resent; page 2 from precopy */
	g_assert_cmphex(pc[0], ==, 0x22);
	g_assert_cmphex(pc[0x1fff], ==, 0x33);
	g_assert_cmphex(pc[0x2000], ==, 0x33);
	g_assert_cmphex(pc[0x7fff], ==, 0x22);
	g_assert_cmphex(pc[0x8000], ==, 0);
	g_assert_cmphex(shared[0x1000], ==, 0);
	g_assert_cmpuint(st.normal_pages, ==, 10);
}

static GBytes *sample(const char *name)
{
	return stream_sample_named(name);
}

/*
 * A load grows "vram" to 256 KiB (its postcopy length follows); the
 * harness shrinks it back to 64 KiB.  A postcopy load whose list leaves
 * vram out then placed a page at 128 KiB: past used_length, into the
 * harness's read-only tail (the harness aborted on the received bit).
 * The postcopy length is now bounded by the used length.
 */
static void test_stale_postcopy_length(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) grow = sample("vram-grow");
	g_autoptr(GBytes) past = sample("pc-vram-past-used");
	g_autoptr(GError) error = NULL;

	(void)data;
	if (!need_uffd())
		return;
	g_assert_true(fuzz_harness_run(f->h, g_bytes_get_data(grow, NULL),
				       g_bytes_get_size(grow), NULL, &error));
	g_assert_no_error(error);
	g_assert_false(fuzz_harness_run(f->h, g_bytes_get_data(past, NULL),
					g_bytes_get_size(past), NULL, &error));
	g_assert_error(error, MIGRAM_ERROR, MIGRAM_ERROR_PROTOCOL);
	g_assert_nonnull(strstr(error->message,
				"postcopy page at offset 0x20000 is outside "
				"ramblock 'vram' (postcopy length 0x10000)"));
}

static void test_rp(Fixture *f, gconstpointer p)
{
	const RpSample *s = p;
	g_autoptr(GBytes) b = rp_sample_bytes(s);
	g_autoptr(GError) error = NULL;
	RpStats st;
	size_t len;
	const guint8 *data = g_bytes_get_data(b, &len);
	bool ok = rp_harness_run(f->rp, data, len, &st, &error);

	if (error)
		g_test_message("%s: %s", s->name, error->message);
	fuzz_assert_outcome(ok, error, s->code, s->message);
	if (ok)
		g_assert_cmpuint(st.bytes, ==, len - 1);
	else
		g_assert_true(
			g_str_has_prefix(error->message, "return path byte "));
}

static unsigned count_dir(const char *path)
{
	GDir *d = g_dir_open(path, 0, NULL);
	unsigned n = 0;

	g_assert_nonnull(d);
	while (g_dir_read_name(d))
		n++;
	g_dir_close(d);
	return n;
}

/* Every postcopy sample, then as many fds and threads as before. */
static void test_no_leaks(Fixture *f, gconstpointer data)
{
	const StreamSample *s;
	unsigned fds, threads;
	size_t n;

	(void)data;
	if (!need_uffd())
		return;
	s = stream_samples(&n);
	fds = count_dir("/proc/self/fd");
	threads = count_dir("/proc/self/task");
	for (size_t i = 0; i < n; i++) {
		g_autoptr(GBytes) b = NULL;
		g_autoptr(GError) error = NULL;

		if (!g_str_has_prefix(s[i].name, "pc-"))
			continue;
		b = stream_sample_bytes(&s[i]);
		fuzz_harness_run(f->h, g_bytes_get_data(b, NULL),
				 g_bytes_get_size(b), NULL, &error);
	}
	g_assert_cmpuint(count_dir("/proc/self/fd"), ==, fds);
	g_assert_cmpuint(count_dir("/proc/self/task"), ==, threads);
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
	const RpSample *r;
	size_t n;
	int rc;

	g_test_init(&argc, &argv, NULL);
	urcu_memb_register_thread();

	s = stream_samples(&n);
	for (size_t i = 0; i < n; i++) {
		g_autofree char *path = NULL;

		if (!g_str_has_prefix(s[i].name, "pc-"))
			continue;
		path = g_strdup_printf("/migration/postcopy-hostile/stream/%s",
				       s[i].name);
		add(path, &s[i], test_stream);
	}
	add("/migration/postcopy-hostile/valid-contents", NULL,
	    test_valid_contents);
	add("/migration/postcopy-hostile/no-leaks", NULL, test_no_leaks);
	add("/migration/postcopy-hostile/stale-postcopy-length", NULL,
	    test_stale_postcopy_length);
	r = rp_samples(&n);
	for (size_t i = 0; i < n; i++) {
		g_autofree char *path = g_strdup_printf(
			"/migration/postcopy-hostile/rp/%s", r[i].name);

		add(path, &r[i], test_rp);
	}
	rc = g_test_run();
	urcu_memb_unregister_thread();
	return rc;
}
