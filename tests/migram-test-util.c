/* SPDX-License-Identifier: MIT */
#include "migram-test-util.h"

#include <string.h>

#include <sys/mman.h>
#include <unistd.h>

#include <migram/bitmap.h>
#include <migram/channel.h>

/* Naive on purpose: it checks the library, so it must not rely on it. */
static bool bit(const unsigned long *map, size_t b)
{
	return (map[b / MIGRAM_BITS_PER_LONG] >> (b % MIGRAM_BITS_PER_LONG)) &
	       1;
}

char *migram_test_ranges(const unsigned long *map, size_t nbits)
{
	GString *s = g_string_new(NULL);

	for (size_t b = 0; b < nbits; b++) {
		size_t e = b;

		if (!bit(map, b))
			continue;
		while (e + 1 < nbits && bit(map, e + 1))
			e++;
		if (s->len)
			g_string_append_c(s, ',');
		if (e == b)
			g_string_append_printf(s, "%zu", b);
		else
			g_string_append_printf(s, "%zu-%zu", b, e);
		b = e;
	}
	return g_string_free(s, FALSE);
}

void migram_test_assert_ranges_at(const char *file, int line,
				  const unsigned long *map, size_t nbits,
				  const char *expected)
{
	g_autofree char *got = migram_test_ranges(map, nbits);

	if (g_strcmp0(got, expected) != 0)
		g_error("%s:%d: bitmap is \"%s\", expected \"%s\"", file, line,
			got, expected);
}

unsigned int migram_test_scale(unsigned int normal)
{
	return g_test_thorough() ? normal * 10 : normal;
}

void migram_test_put8(GByteArray *a, guint8 v)
{
	g_byte_array_append(a, &v, 1);
}

void migram_test_put32(GByteArray *a, guint32 v)
{
	guint32 be = GUINT32_TO_BE(v);

	g_byte_array_append(a, (guint8 *)&be, 4);
}

void migram_test_put64(GByteArray *a, guint64 v)
{
	guint64 be = GUINT64_TO_BE(v);

	g_byte_array_append(a, (guint8 *)&be, 8);
}

void migram_test_putstr(GByteArray *a, const char *s)
{
	migram_test_put8(a, (guint8)strlen(s));
	g_byte_array_append(a, (const guint8 *)s, (guint)strlen(s));
}

MigramChannel *migram_test_channel_over(const void *bytes, gsize len)
{
	int fd = memfd_create("test-stream", MFD_CLOEXEC);

	g_assert_cmpint(fd, >=, 0);
	g_assert_cmpint(write(fd, bytes, len), ==, (gssize)len);
	lseek(fd, 0, SEEK_SET);
	return migram_channel_new(fd, true);
}
