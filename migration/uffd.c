/* SPDX-License-Identifier: MIT */
/* Opening a userfaultfd and its API handshake (uffd.h). */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "uffd.h"

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
