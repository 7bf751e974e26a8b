/* SPDX-License-Identifier: MIT */
/**
 * @file migram.h
 * migram: live-migration RAM tracking and transfer.
 *
 * This header holds what every module shares: the library version, the error
 * domain, and the rules for threads.
 *
 * Threads and RCU.  migram protects its shared structures with liburcu's
 * "memb" flavour (urcu-memb).  Any thread that calls a function documented
 * "Context: RCU reader." or one that says it takes the RCU read lock itself
 * must be registered with liburcu first:
 *
 *     urcu_memb_register_thread();     once, when the thread starts
 *     ...                              calls into migram
 *     urcu_memb_unregister_thread();   before the thread exits
 *
 * migram uses the prefixed urcu_memb_* names only and never defines
 * URCU_API_MAP in a public header, so an embedder may use another liburcu
 * flavour for its own structures in the same process.
 *
 * Errors.  Fallible calls take a `GError **error` as their last argument and
 * return false or NULL on failure; `*error` is untouched on success.  Errors
 * are in MIGRAM_ERROR with a MigramError code.  Programming errors (NULL where
 * a pointer is required, an index past the end) are g_return_if_fail() checks,
 * never GErrors.
 */
#ifndef MIGRAM_MIGRAM_H
#define MIGRAM_MIGRAM_H

#include <glib.h>

G_BEGIN_DECLS

/** Library major version. */
#define MIGRAM_VERSION_MAJOR 0
/** Library minor version. */
#define MIGRAM_VERSION_MINOR 1
/** Library micro version. */
#define MIGRAM_VERSION_MICRO 0

/** Error domain of every GError migram sets. */
#define MIGRAM_ERROR (migram_error_quark())

/** Codes of MIGRAM_ERROR. */
typedef enum {
	MIGRAM_ERROR_INVALID = 1,     /**< bad argument or geometry */
	MIGRAM_ERROR_NO_MEMORY = 2,   /**< an allocation failed */
	MIGRAM_ERROR_IO = 3,          /**< a system call failed */
	MIGRAM_ERROR_UNSUPPORTED = 4, /**< the host or stream lacks a feature */
	MIGRAM_ERROR_EXISTS = 5,      /**< a name is already taken */
	MIGRAM_ERROR_NOT_FOUND = 6,   /**< no such object */
	MIGRAM_ERROR_PROTOCOL = 7,    /**< the peer broke the stream rules */
	MIGRAM_ERROR_CANCELLED = 8,   /**< the operation was cancelled */
	MIGRAM_ERROR_NOT_CONVERGED = 9, /**< a migration cannot finish */
	MIGRAM_ERROR_BUSY = 10, /**< held by another user (added in 0.3) */
} MigramError;

/**
 * The quark of MIGRAM_ERROR.
 *
 * @return the error domain quark.
 *
 * Context: Any thread.
 */
GQuark migram_error_quark(void);

/**
 * The version of the library the program runs against.
 *
 * @return a static string such as "0.1.0"; never freed.
 *
 * Context: Any thread.
 */
const char *migram_version_string(void);

G_END_DECLS

#endif /* MIGRAM_MIGRAM_H */
