/* SPDX-License-Identifier: MIT */
/*
 * Buffer helpers (buffer.c), private to the library.  Never installed.
 */
#ifndef MIGRAM_BUFFER_H
#define MIGRAM_BUFFER_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Whether len bytes at buf are all zero (buffer.c): zero-page detection on
 * both ends of a migration.  Any thread; reads only.
 */
bool migram_buffer_is_zero(const void *buf, size_t len);

#endif /* MIGRAM_BUFFER_H */
