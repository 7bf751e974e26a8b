/* SPDX-License-Identifier: MIT */
/*
 * Sample inputs for the receiver fuzz target (mode byte + stream, see
 * fuzz-harness.h), each with the outcome the receiver must produce.
 *
 * make-corpus.c writes them (and truncated copies) as the seed corpus; the
 * regression test loads each through the fuzz harness and checks the
 * outcome.  Valid streams come from migram's stream writer; hostile ones
 * are the writer's output with one thing changed by hand.
 */
#ifndef MIGRAM_STREAM_SAMPLES_H
#define MIGRAM_STREAM_SAMPLES_H

#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include <migram/channel.h>
#include <migram/stream.h>

/* What a builder writes with. */
typedef struct {
	MigramStreamWriter *w;
	MigramChannel *ch;
	const guint8 *page[3]; /* 4 KiB pages filled with 0x11, 0x22, 0x33 */
	size_t mark;           /* where the hostile part starts, or 0 */
} SampleCtx;

typedef struct {
	const char *name;
	uint8_t mode; /* FUZZ_MODE_* */
	void (*build)(SampleCtx *c);
	int code;            /* MigramError code, or 0: the stream loads */
	const char *message; /* with code: a substring of the message */
} StreamSample;

/* The samples, and their number. */
const StreamSample *stream_samples(size_t *n);

/* One sample's input: the mode byte, then the stream. */
GBytes *stream_sample_bytes(const StreamSample *s);

/*
 * The same, and in @p mark where its hostile part starts in the input
 * (mode byte included), or 0 when the builder marks none.
 */
GBytes *stream_sample_bytes_at(const StreamSample *s, size_t *mark);

/* The bytes of the sample called name; aborts the test if none is. */
GBytes *stream_sample_named(const char *name);

#endif /* MIGRAM_STREAM_SAMPLES_H */
