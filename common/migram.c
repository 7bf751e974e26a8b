/* SPDX-License-Identifier: MIT */
/*
 * Library-wide definitions: the error domain, the version string, and (in
 * ThreadSanitizer builds only) the grace-period key of migram-rcu.h.
 */
#include "migram-common.h"
#include "migram-rcu.h"
#include "migram/migram.h"

#if MIGRAM_TSAN
/*
 * Only its address matters: TSan keys the grace-period happens-before edge
 * on it (see migram-rcu.h).  Const, so it is not mutable state.
 */
const char migram_rcu_grace_key = 0;
#endif

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
