/* SPDX-License-Identifier: MIT */
/*
 * What the sender asks of the dirty-log sources beyond the public
 * MigramLogSource (soft-log.c, dirty-log-combined.c).  Never installed.
 */
#ifndef MIGRAM_DIRTY_LOG_INTERNAL_H
#define MIGRAM_DIRTY_LOG_INTERNAL_H

#include <stdint.h>

#include "migram/dirty-log.h"

/* soft-log.c: the software log's out-of-range marks; 0 for any other
 * source.  Any thread. */
uint64_t migram_soft_log_lost_marks(const MigramLogSource *source);
/* dirty-log-combined.c: the sum over a combined source's children (each
 * with migram_soft_log_lost_marks()); 0 for any other source. */
uint64_t migram_combined_log_lost_marks(const MigramLogSource *source);

#endif /* MIGRAM_DIRTY_LOG_INTERNAL_H */
