/* SPDX-License-Identifier: MIT */
/*
 * userfaultfd helpers shared by the dirty log (dirty-log-uffd*.c),
 * postcopy on the destination (postcopy-dst*.c) and snapshots
 * (snapshot-cow.c, snapshot-lazy.c): opening the fd, the API handshake
 * (one wording for their errors) and placing pages (common/uffd.c).  Never
 * installed.
 */
#ifndef MIGRAM_COMMON_UFFD_H
#define MIGRAM_COMMON_UFFD_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

/*
 * A new userfaultfd (O_CLOEXEC | O_NONBLOCK), its API handshake not yet
 * made (the kernel takes one per fd); -1 with *error (MIGRAM_ERROR_
 * UNSUPPORTED, "WHO: userfaultfd() (needs ...): <errno>") if the kernel or
 * the caller's privileges refuse it.  Any thread.
 */
int migram_uffd_open(const char *who, GError **error);

/*
 * The UFFDIO_API handshake on fd asking for features: on success
 * *offered (may be NULL) is what the kernel offers and *ioctls (may be
 * NULL) the ioctls it allows on registered ranges.  false with *error
 * (the given code, "WHO: UFFDIO_API: <errno>").  Any thread.
 */
bool migram_uffd_api(int fd, uint64_t features, uint64_t *offered,
		     uint64_t *ioctls, const char *who, int code,
		     GError **error);

/*
 * Place len bytes at dst (registered in missing mode on uffd), atomically
 * per page: UFFDIO_COPY from src, or UFFDIO_ZEROPAGE when src is NULL;
 * wake the threads waiting on it unless !wake.  The one retry policy of
 * every placement (postcopy's and lazy restore's): EAGAIN, the kernel
 * placing part of the range or none while the address space changes, is
 * retried for the rest until it answers.  Returns 0 or the errno (EEXIST:
 * a page is already there); *placed (may be NULL) gets the bytes placed
 * before it.  Any thread; never allocates or locks.
 */
int migram_uffd_place(int uffd, uintptr_t dst, const void *src, uint64_t len,
		      bool wake, uint64_t *placed);

#endif /* MIGRAM_COMMON_UFFD_H */
