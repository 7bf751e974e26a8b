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
 * No cached static (G_DEFINE_QUARK keeps one, read and written by every
 * thread without synchronization): GLib's quark table is thread-safe and
 * returns the same quark for the same string, and errors are not a hot
 * path.  The library thus owns no writable data at all.
 */
MIGRAM_EXPORT GQuark migram_error_quark(void)
{
	return g_quark_from_static_string("migram-error-quark");
}

#define STR_(x) #x
#define STR(x) STR_(x)

MIGRAM_EXPORT const char *migram_version_string(void)
{
	return STR(MIGRAM_VERSION_MAJOR) "." STR(MIGRAM_VERSION_MINOR) "." STR(
		MIGRAM_VERSION_MICRO);
}
