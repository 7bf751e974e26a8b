/* SPDX-License-Identifier: MIT */
/*
 * Sample inputs for the return-path fuzz target (mode byte + messages, see
 * rp-harness.h), each with the outcome the reader must produce.
 *
 * make-corpus.c writes them as the seed corpus of fuzz-return-path; the
 * regression test tests/migration/test-postcopy-hostile.c reads each
 * through the harness and checks the outcome.  Valid messages come from
 * migram's return-path writer; hostile ones are written by hand.
 */
#ifndef MIGRAM_RP_SAMPLES_H
#define MIGRAM_RP_SAMPLES_H

#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include <migram/channel.h>

typedef struct {
	const char *name;
	uint8_t mode; /* RP_MODE_* */
	void (*build)(MigramChannel *ch);
	int code;            /* MigramError code, or 0: read to the end */
	const char *message; /* with code: a substring of the message */
} RpSample;

/* The samples, and their number. */
const RpSample *rp_samples(size_t *n);

/* One sample's input: the mode byte, then the messages. */
GBytes *rp_sample_bytes(const RpSample *s);

#endif /* MIGRAM_RP_SAMPLES_H */
