/* SPDX-License-Identifier: MIT */
#include "migram-test-util.h"

#include <migram/bitmap.h>

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
