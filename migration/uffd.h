/* SPDX-License-Identifier: MIT */
/*
 * userfaultfd helpers shared by the dirty log (dirty-log-uffd*.c) and
 * postcopy on the destination (postcopy-dst.c): opening the fd and the
 * API handshake, with one wording for their errors (uffd.c).  Never
 * installed.
 */
#ifndef MIGRAM_UFFD_H
#define MIGRAM_UFFD_H

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

#endif /* MIGRAM_UFFD_H */
