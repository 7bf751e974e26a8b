/* SPDX-License-Identifier: MIT */
/*
 * Internal helpers shared by every migram module.  Never installed.
 *
 * MIGRAM_EXPORT marks a definition as part of the ABI.  The library is built
 * with hidden visibility and a version script (migram.sym); a symbol needs
 * both the attribute and a line in the script to be visible to embedders.
 */
#ifndef MIGRAM_COMMON_H
#define MIGRAM_COMMON_H

#include <glib.h>

#define MIGRAM_EXPORT __attribute__((visibility("default")))

/*
 * RCU contract checks.  The documented "Context: RCU reader." phrase and the
 * assertion sit next to each other in the code; debug builds enforce them.
 */
#ifdef G_DISABLE_ASSERT
#define MIGRAM_ASSERT_RCU_READER() ((void)0)
#define MIGRAM_ASSERT_NOT_RCU_READER() ((void)0)
#else
#define MIGRAM_ASSERT_RCU_READER()                                             \
	g_assert(urcu_memb_read_ongoing() && "caller must be an RCU reader")
#define MIGRAM_ASSERT_NOT_RCU_READER()                                         \
	g_assert(!urcu_memb_read_ongoing() &&                                  \
		 "must not be called inside an RCU read-side section")
#endif

#endif /* MIGRAM_COMMON_H */
