/* SPDX-License-Identifier: MIT */
/*
 * Transitional: sim/model.c still includes this name for the policy; it is
 * owned by another change and moves to "policy.h" with it, and then this
 * file goes.  Library code includes the private header of what it uses
 * (buffer.h, policy.h, stream-error.h, stream-internal.h, return-path.h,
 * sender-internal.h, postcopy-src.h, dirty-log-internal.h).
 */
#ifndef MIGRAM_MIGRATION_INTERNAL_H
#define MIGRAM_MIGRATION_INTERNAL_H

#include "policy.h"

#endif /* MIGRAM_MIGRATION_INTERNAL_H */
