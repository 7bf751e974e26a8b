/* SPDX-License-Identifier: MIT */
/*
 * guest-layout.c's calls for other migration files (the guest-physical
 * shared-log adapter).  Not installed.
 */
#ifndef MIGRAM_GUEST_LAYOUT_INTERNAL_H
#define MIGRAM_GUEST_LAYOUT_INTERNAL_H

#include "migram/guest-layout.h"

/* One mapped range: guest-physical [gpa, gpa + size) is block bytes
 * [offset, offset + size). */
typedef void (*MigramGpaRangeFunc)(uint64_t gpa, uint64_t size, uint64_t offset,
				   void *opaque);

/*
 * Call @p fn for every range that maps @p block, in guest-physical order;
 * return how many there are (@p fn may be NULL to count).  Takes the RCU
 * read lock inside (the calling thread must be registered); @p fn runs
 * inside it and must not block, allocate or call map/unmap.  Lock-free.
 */
guint migram_guest_layout_block_ranges(MigramGuestLayout *l,
				       const MigramRamBlock *block,
				       MigramGpaRangeFunc fn, void *opaque);

#endif /* MIGRAM_GUEST_LAYOUT_INTERNAL_H */
