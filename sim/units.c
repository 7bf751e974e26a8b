/* SPDX-License-Identifier: MIT */
/*
 * migram-sim's units on the command line: sizes, rates and durations.
 *
 * Sizes are binary ("2G" is 2 GiB; K, M, G, T with an optional "i" and
 * "B").  Rates are a size per second ("200M/s"), or decimal bits per
 * second as links are quoted ("10Gbit/s" is 1.25e9 B/s).  Durations are a
 * number with a unit (us, ms, s, m or min, h; "1.5s", "250ms"), or a plain
 * number in the option's own documented unit, so that "--max-time 30" and
 * "--downtime-limit 300" keep meaning what they always did.
 *
 * Every parser takes the whole string: trailing junk, a negative value or
 * a value too large for 64 bits fails, and the caller names the option.
 */
#include <math.h>
#include <string.h>

#include "sim.h"

/* Parse a non-negative decimal number; end points after it.  false if
 * there is none. */
static bool number(const char *s, double *v, char **end)
{
	*v = g_ascii_strtod(s, end);
	return *end != s && g_ascii_isdigit(s[0] == '.' ? s[1] : s[0]) &&
	       isfinite(*v) && *v >= 0;
}

uint64_t sim_parse_size(const char *s)
{
	char *end;
	double v;
	uint64_t mul = 1;

	if (!number(s, &v, &end))
		return 0;
	switch (g_ascii_toupper(*end)) {
	case 'T':
		mul <<= 10; /* fall through */
	case 'G':
		mul <<= 10; /* fall through */
	case 'M':
		mul <<= 10; /* fall through */
	case 'K':
		mul <<= 10;
		end++;
		break;
	case '\0':
		break;
	default:
		return 0;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v * (double)mul >= 0x1p64)
		return 0;
	return (uint64_t)(v * (double)mul);
}

uint64_t sim_parse_rate(const char *s)
{
	g_autofree char *copy = g_strdup(s);
	char *slash = strstr(copy, "/s");
	char *bit, *end;
	double v, mul = 1;

	if (!slash || slash[2])
		return 0;
	*slash = '\0';
	bit = strstr(copy, "bit");
	if (!bit || bit[3])
		return sim_parse_size(copy);
	*bit = '\0';
	/* decimal, as links are quoted: 10Gbit/s = 1.25e9 B/s */
	if (!number(copy, &v, &end))
		return 0;
	switch (g_ascii_toupper(*end)) {
	case 'G':
		mul = 1e9;
		end++;
		break;
	case 'M':
		mul = 1e6;
		end++;
		break;
	case 'K':
		mul = 1e3;
		end++;
		break;
	}
	if (*end || v <= 0 || v * mul / 8 >= 0x1p64)
		return 0;
	return (uint64_t)(v * mul / 8);
}

/* The duration units, in microseconds. */
static const struct {
	const char *name;
	double us;
} duration_units[] = {
	{ "us", 1 },   { "ms", 1e3 },   { "s", 1e6 },
	{ "m", 60e6 }, { "min", 60e6 }, { "h", 3600e6 },
};

bool sim_parse_duration(const char *s, uint64_t plain_unit_us, uint64_t *out_us)
{
	char *end;
	double v, mul = (double)plain_unit_us;

	if (!s || !number(s, &v, &end))
		return false;
	if (*end) {
		guint i = 0;

		while (i < G_N_ELEMENTS(duration_units) &&
		       strcmp(end, duration_units[i].name))
			i++;
		if (i == G_N_ELEMENTS(duration_units))
			return false;
		mul = duration_units[i].us;
	}
	v = ceil(v * mul); /* 0.5us is 1us: never round a wait down to 0 */
	if (v >= 0x1p63)
		return false;
	*out_us = (uint64_t)v;
	return true;
}

char *sim_format_duration(uint64_t us)
{
	if (us % 3600000000u == 0 && us)
		return g_strdup_printf("%" G_GUINT64_FORMAT "h",
				       us / 3600000000u);
	if (us % 60000000u == 0 && us)
		return g_strdup_printf("%" G_GUINT64_FORMAT "m",
				       us / 60000000u);
	if (us % 1000000u == 0)
		return g_strdup_printf("%" G_GUINT64_FORMAT "s", us / 1000000u);
	if (us >= 1000000u)
		return g_strdup_printf("%.1fs", (double)us / 1e6);
	if (us % 1000u == 0)
		return g_strdup_printf("%" G_GUINT64_FORMAT "ms", us / 1000u);
	return g_strdup_printf("%" G_GUINT64_FORMAT "us", us);
}
