/* SPDX-License-Identifier: MIT */
/* Opening a userfaultfd, its API handshake, placing pages (uffd.h). */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "migram-uffd.h"

int migram_uffd_open(const char *who, GError **error)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		migram_error_errno(error, MIGRAM_ERROR_UNSUPPORTED, errno,
				   "%s: userfaultfd() (needs root, "
				   "CAP_SYS_PTRACE or "
				   "vm.unprivileged_userfaultfd=1)",
				   who);
	return fd;
}

bool migram_uffd_api(int fd, uint64_t features, uint64_t *offered,
		     uint64_t *ioctls, const char *who, int code,
		     GError **error)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };

	if (ioctl(fd, UFFDIO_API, &api) < 0)
		return migram_error_errno(error, code, errno, "%s: UFFDIO_API",
					  who);
	if (offered)
		*offered = api.features;
	if (ioctls)
		*ioctls = api.ioctls;
	return true;
}

int migram_uffd_place(int uffd, uintptr_t dst, const void *src, uint64_t len,
		      bool wake, uint64_t *placed)
{
	uint64_t off = 0;

	for (;;) {
		int64_t done;
		int rc;

		if (src) {
			struct uffdio_copy c = {
				.dst = dst + off,
				.src = (uintptr_t)src + off,
				.len = len - off,
				.mode = wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE,
			};

			rc = ioctl(uffd, UFFDIO_COPY, &c);
			done = c.copy;
		} else {
			struct uffdio_zeropage z = {
				.range = { .start = dst + off,
					   .len = len - off },
				.mode = wake ? 0
					     : UFFDIO_ZEROPAGE_MODE_DONTWAKE,
			};

			rc = ioctl(uffd, UFFDIO_ZEROPAGE, &z);
			done = z.zeropage;
		}
		if (rc == 0) {
			off = len;
			break;
		}
		rc = errno;
		if (done > 0)
			off += (uint64_t)done;
		if (rc != EAGAIN) {
			if (placed)
				*placed = off;
			return rc;
		}
	}
	if (placed)
		*placed = off;
	return 0;
}
