/* SPDX-License-Identifier: MIT */
/* The library's one errno-to-GError helper (migram-common.h). */
#include <stdarg.h>

#include "migram-common.h"
#include "migram/migram.h"

bool migram_error_errno(GError **error, int code, int err, const char *fmt, ...)
{
	g_autofree char *what = NULL;
	va_list ap;

	va_start(ap, fmt);
	what = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_set_error(error, MIGRAM_ERROR, code, "%s: %s", what, g_strerror(err));
	return false;
}
