/* SPDX-License-Identifier: MIT */
/*
 * Library-wide definitions: the error domain and the version string.
 */
#include "migram-common.h"
#include "migram/migram.h"

/*
 * G_DEFINE_QUARK keeps the quark in a function-local static: the only
 * writable data the library owns (listed in the no-globals gate).
 */
MIGRAM_EXPORT G_DEFINE_QUARK(migram-error-quark, migram_error)

#define STR_(x) #x
#define STR(x) STR_(x)

MIGRAM_EXPORT const char *migram_version_string(void)
{
	return STR(MIGRAM_VERSION_MAJOR) "." STR(MIGRAM_VERSION_MINOR) "." STR(
		MIGRAM_VERSION_MICRO);
}
