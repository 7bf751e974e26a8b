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

#include <stdbool.h>

#include <sys/uio.h>

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

/*
 * Sets *error (domain MIGRAM_ERROR, the given code) to the formatted
 * message followed by ": " and g_strerror(err), and returns false, so a
 * failed system call is reported as `return migram_error_errno(error,
 * MIGRAM_ERROR_IO, errno, "what %d", x);`.  Pass errno's value, read
 * before anything else can change it.  Any thread; error may be NULL.
 * The one errno-to-GError helper of the library (errno-error.c).
 */
bool migram_error_errno(GError **error, int code, int err, const char *fmt, ...)
	G_GNUC_PRINTF(4, 5);

/*
 * After a readv/writev/pwritev moved @p done bytes of the @p *n iovecs at
 * @p *iov: drop the iovecs it covered and trim a partly moved one, so the
 * next call goes on where this one stopped.  Never allocates or locks.
 */
static inline void migram_iov_advance(struct iovec **iov, int *n, size_t done)
{
	while (*n > 0 && done >= (*iov)->iov_len) {
		done -= (*iov)->iov_len;
		(*iov)++;
		(*n)--;
	}
	if (*n > 0) {
		(*iov)->iov_base = (guint8 *)(*iov)->iov_base + done;
		(*iov)->iov_len -= done;
	}
}

#endif /* MIGRAM_COMMON_H */
