/* SPDX-License-Identifier: MIT */
/*
 * Error formatters for the stream and the return path (stream-error.c):
 * every parser error names where in which byte stream it was found.
 * Never installed.
 */
#ifndef MIGRAM_STREAM_ERROR_H
#define MIGRAM_STREAM_ERROR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

/*
 * Sets *error (domain MIGRAM_ERROR, the given code) to "stream byte AT: "
 * followed by the formatted message, and returns false so parsers can
 * `return migram_stream_fail(...)`.  Any thread; error may be NULL.
 */
bool migram_stream_fail(GError **error, int code, uint64_t at, const char *fmt,
			...) G_GNUC_PRINTF(4, 5);
/* The same with the place named: "WHERE byte AT: message". */
bool migram_fail_vat(GError **error, int code, const char *where, uint64_t at,
		     const char *fmt, va_list ap) G_GNUC_PRINTF(5, 0);

/* "return path byte AT: ..." (MIGRAM_ERROR_PROTOCOL); returns false. */
bool migram_rp_fail(GError **error, uint64_t at, const char *fmt, ...)
	G_GNUC_PRINTF(3, 4);

#endif /* MIGRAM_STREAM_ERROR_H */
