/* SPDX-License-Identifier: MIT */
/* Helpers shared by the test suites. */
#ifndef MIGRAM_TEST_UTIL_H
#define MIGRAM_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include <glib.h>

/*
 * Format the set bits of map[0, nbits) as a range list ("0-63,79-97").
 * Returns a newly allocated string.
 */
char *migram_test_ranges(const unsigned long *map, size_t nbits);

void migram_test_assert_ranges_at(const char *file, int line,
				  const unsigned long *map, size_t nbits,
				  const char *expected);

/* Fail with file:line and both range lists when map does not match. */
#define migram_test_assert_ranges(map, nbits, expected)                        \
	migram_test_assert_ranges_at(__FILE__, __LINE__, (map), (nbits),       \
				     (expected))

/* Scale an iteration count by -m quick / -m thorough. */
unsigned int migram_test_scale(unsigned int normal);

/* Building streams by hand: big-endian integers and counted strings. */
void migram_test_put8(GByteArray *a, guint8 v);
void migram_test_put32(GByteArray *a, guint32 v);
void migram_test_put64(GByteArray *a, guint64 v);
void migram_test_putstr(GByteArray *a, const char *s);

/* A new channel (owning its fd) over a memfd holding bytes, at offset 0. */
struct MigramChannel;
struct MigramChannel *migram_test_channel_over(const void *bytes, gsize len);

/*
 * A receiver thread: loads one stream from fd (a channel owning it) into
 * list, in a thread registered with RCU.  _join waits, returns whether the
 * load succeeded (the error, if any, goes to *error) and frees everything.
 */
struct MigramRamList;
typedef struct MigramTestReceiver MigramTestReceiver;
MigramTestReceiver *migram_test_receiver_start(struct MigramRamList *list,
					       int fd, gboolean create_blocks);
gboolean migram_test_receiver_join(MigramTestReceiver *rx, GError **error);
/* The same with @n data channels (multifd): @fds borrowed until _join. */
MigramTestReceiver *
migram_test_receiver_start_multifd(struct MigramRamList *list, int fd,
				   unsigned int n, const int *fds);

/*
 * KVM test guests.  EINTR-retrying ioctl; the vCPU in 32-bit protected
 * mode with flat 4 GiB code and data segments, no paging; and a program
 * (at any address) that makes one pass over ecx pages from ebx at stride
 * edx, each "inc dword [page]; mov [page + 4], eax" with eax the pass
 * number kept at [edi], then halts.  Any thread that owns the vCPU.
 */
int migram_test_xioctl(int fd, unsigned long req, void *arg);
void migram_test_flat_pm(int vcpu_fd);
extern const guint8 migram_test_pm_pass_code[];
extern const size_t migram_test_pm_pass_code_len;

#endif
