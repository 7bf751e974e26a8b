/* SPDX-License-Identifier: MIT */
/*
 * The error formatters of the byte streams the library parses: the
 * migration stream ("stream byte N: ...") and the return path ("return
 * path byte N: ...").  Every parser error goes through one of them, so
 * each names where in which stream it was found.
 */
#include <stdarg.h>

#include "migram/migram.h"
#include "stream-error.h"

bool migram_fail_vat(GError **error, int code, const char *where, uint64_t at,
		     const char *fmt, va_list ap)
{
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);

	g_set_error(error, MIGRAM_ERROR, code,
		    "%s byte %" G_GUINT64_FORMAT ": %s", where, at, msg);
	return false;
}

bool migram_stream_fail(GError **error, int code, uint64_t at, const char *fmt,
			...)
{
	va_list ap;

	va_start(ap, fmt);
	migram_fail_vat(error, code, "stream", at, fmt, ap);
	va_end(ap);
	return false;
}

bool migram_rp_fail(GError **error, uint64_t at, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	migram_fail_vat(error, MIGRAM_ERROR_PROTOCOL, "return path", at, fmt,
			ap);
	va_end(ap);
	return false;
}
