/* SPDX-License-Identifier: MIT */
/*
 * Host memory behind a RAM block.
 *
 * Each backend maps max_length bytes once, at creation, and never moves
 * the mapping: growing a block only raises used_length, so readers holding
 * a host pointer never see it change.  Anonymous memory is mapped
 * MAP_NORESERVE, so reserving a large max_length costs address space only.
 * A memfd is sized to max_length (sparse: unbacked until touched) and
 * sealed against shrinking, so a peer holding the fd cannot truncate it and
 * make our accesses fault.  A hugetlb memfd reserves its huge pages when
 * mapped; if the host has too few, the mapping fails and we say how many
 * are free.  Caller-owned memory is used as given and never unmapped.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migram-common.h"
#include "migram/migram.h"
#include "ramblock-internal.h"

#define HUGE_2M (UINT64_C(2) << 20)
#ifndef MFD_HUGE_2MB /* <linux/memfd.h>: log2(page size) << MFD_HUGE_SHIFT */
#define MFD_HUGE_2MB (21U << 26)
#endif

static uint64_t host_page_size(void)
{
	return (uint64_t)sysconf(_SC_PAGESIZE);
}

/* HugePages_Free from /proc/meminfo, or -1 when it cannot be read. */
static long hugepages_free(void)
{
	g_autofree char *text = NULL;
	const char *p;

	if (!g_file_get_contents("/proc/meminfo", &text, NULL, NULL))
		return -1;
	p = strstr(text, "HugePages_Free:");
	if (!p)
		return -1;
	return strtol(p + strlen("HugePages_Free:"), NULL, 10);
}

static bool set_io_error(GError **error, const char *idstr, const char *what,
			 int err)
{
	return migram_error_errno(
		error, err == ENOMEM ? MIGRAM_ERROR_NO_MEMORY : MIGRAM_ERROR_IO,
		err, "ram block '%s': %s failed", idstr, what);
}

static bool map_anon(MigramRamBlock *b, GError **error)
{
	void *p =
		mmap(NULL, b->max_length, PROT_READ | PROT_WRITE,
		     /* cppcheck-suppress invalidFunctionArg ; anon takes -1 */
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return set_io_error(error, b->idstr, "mmap", errno);
	b->host = p;
	/* Advice only: a kernel without THP (or with it off) says EINVAL,
	 * and the block works as well with 4 KiB pages. */
	if (!(b->flags & MIGRAM_RAM_NO_THP))
		(void)madvise(p, b->max_length, MADV_HUGEPAGE);
	return true;
}

static bool map_memfd(MigramRamBlock *b, bool huge, GError **error)
{
	unsigned int fl = MFD_CLOEXEC | MFD_ALLOW_SEALING;
	void *p;
	int err;

	if (huge)
		fl = MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB;
	b->fd = memfd_create(b->idstr, fl);
	if (b->fd < 0)
		return set_io_error(error, b->idstr, "memfd_create", errno);
	if (ftruncate(b->fd, (off_t)b->max_length) < 0) {
		err = errno;
		goto fail;
	}
	if (!huge && fcntl(b->fd, F_ADD_SEALS, F_SEAL_SHRINK) < 0) {
		err = errno;
		goto fail;
	}
	p = mmap(NULL, b->max_length, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd,
		 0);
	if (p == MAP_FAILED) {
		err = errno;
		if (huge && err == ENOMEM) {
			close(b->fd);
			b->fd = -1;
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_NO_MEMORY,
				    "ram block '%s': needs %" G_GUINT64_FORMAT
				    " hugetlb pages of 2 MiB, the host has "
				    "%ld free (reserve more with "
				    "/proc/sys/vm/nr_hugepages)",
				    b->idstr, b->max_length / HUGE_2M,
				    hugepages_free());
			return false;
		}
		goto fail;
	}
	b->host = p;
	return true;
fail:
	close(b->fd);
	b->fd = -1;
	return set_io_error(error, b->idstr, "memfd setup", err);
}

/* Validate sizes against the page size the backend will use. */
static bool check_lengths(MigramRamBlock *b, uint64_t used, GError **error)
{
	if (used == 0 || used % b->page_size || b->max_length % b->page_size ||
	    b->max_length < used) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "ram block '%s': used_length %#" G_GINT64_MODIFIER
			    "x and max_length %#" G_GINT64_MODIFIER
			    "x must be non-zero multiples of the page size "
			    "%#" G_GINT64_MODIFIER "x with used <= max",
			    b->idstr, used, b->max_length, b->page_size);
		return false;
	}
	/* Keep offset + length arithmetic far from overflow. */
	if (b->max_length > (UINT64_C(1) << 52)) {
		g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
			    "ram block '%s': max_length %#" G_GINT64_MODIFIER
			    "x exceeds 2^52 bytes",
			    b->idstr, b->max_length);
		return false;
	}
	return true;
}

bool migram_ram_backend_map(MigramRamBlock *b,
			    const MigramRamBlockConfig *config, GError **error)
{
	uint64_t used = config->used_length;

	b->fd = -1;
	b->max_length = config->max_length ? config->max_length : used;
	switch (config->backend) {
	case MIGRAM_RAM_BACKEND_ANON:
		b->page_size = host_page_size();
		return check_lengths(b, used, error) && map_anon(b, error);
	case MIGRAM_RAM_BACKEND_MEMFD:
		b->page_size = host_page_size();
		b->flags |= MIGRAM_RAM_SHARED;
		return check_lengths(b, used, error) &&
		       map_memfd(b, false, error);
	case MIGRAM_RAM_BACKEND_HUGETLB:
		b->page_size = HUGE_2M;
		b->flags |= MIGRAM_RAM_SHARED | MIGRAM_RAM_HUGETLB;
		return check_lengths(b, used, error) &&
		       map_memfd(b, true, error);
	case MIGRAM_RAM_BACKEND_CALLER:
		b->page_size = config->page_size ? config->page_size
						 : host_page_size();
		if (!config->host || (b->page_size & (b->page_size - 1)) != 0 ||
		    b->page_size < MIGRAM_TARGET_PAGE_SIZE ||
		    (uintptr_t)config->host % b->page_size != 0) {
			g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
				    "ram block '%s': caller memory %p must be "
				    "non-NULL and aligned to its page size "
				    "%#" G_GINT64_MODIFIER "x (a power of two, "
				    ">= 4 KiB)",
				    b->idstr, config->host, b->page_size);
			return false;
		}
		if (!check_lengths(b, used, error))
			return false;
		b->host = config->host;
		b->fd = config->has_fd ? config->fd : -1;
		b->flags |= MIGRAM_RAM_CALLER_OWNED;
		return true;
	}
	g_set_error(error, MIGRAM_ERROR, MIGRAM_ERROR_INVALID,
		    "ram block '%s': unknown backend %d", b->idstr,
		    (int)config->backend);
	return false;
}

void migram_ram_backend_unmap(MigramRamBlock *b)
{
	if (b->backend == MIGRAM_RAM_BACKEND_CALLER || !b->host)
		return;
	munmap(b->host, b->max_length);
	if (b->fd >= 0)
		close(b->fd);
	b->host = NULL;
	b->fd = -1;
}
