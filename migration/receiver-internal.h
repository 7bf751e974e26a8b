/* SPDX-License-Identifier: MIT */
/*
 * The receiver's state, shared by receiver.c (precopy records) and
 * receiver-postcopy.c (commands, the package, the preempt thread, pause
 * and recovery).  Never installed.
 */
#ifndef MIGRAM_RECEIVER_INTERNAL_H
#define MIGRAM_RECEIVER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "migram/receiver.h"
#include "migram/stream.h"
#include "stream-error.h"
#include "stream-internal.h"
#include "postcopy-dst.h"

/* A package holds commands and device state: bounded by the blob cap. */
#define MAX_PACKAGE_BYTES (MIGRAM_DEVICE_BLOB_MAX + (1u << 20))

struct MigramReceiver {
	MigramRamList *list;
	MigramReceiverConfig cfg;
	char *machine_type;
	MigramReceiverStats stats;
	MigramStreamReader *reader;
	uint64_t page_size;
	bool list_done; /* the block list was read and bitmaps exist */
	bool in_end;    /* inside the RAM END section */
	bool ram_done;  /* the RAM END section is complete */
	bool on_socket; /* the channel is a socket (see the vmdesc case) */
	uint64_t created_bytes; /* blocks created by this load */
	bool advise_huge;       /* POSTCOPY_ADVISE's summary names huge pages */

	/* Block cache: valid while the list version equals last_version. */
	MigramRamBlock *last;
	uint64_t last_version;
	char last_name[MIGRAM_RAM_IDSTR_MAX + 1];
	bool last_fresh; /* last is in created */
	/* Names of the blocks this load created (NULL until one is): their
	 * memory starts zero, so a ZERO record for a page not yet received
	 * needs no look at the page (no fault, no read). */
	GHashTable *created;

	/* Postcopy and the return path (postcopy-dst.c) */
	MigramChannel *ch; /* the current main channel */
	DstPostcopy *pc;   /* from OPEN_RETURN_PATH or ADVISE */
	DstPlacer placer;  /* the loading thread's */
	bool in_package;
	bool recovering; /* between a recovery and POSTCOPY_RESUME */
	MigramChannel *preempt;
	pthread_t preempt_thread;
	bool preempt_running;
	GError *preempt_error; /* set by the preempt thread before it ends */

	/* data channels (multifd-receiver.c); set under lock */
	struct MigramMultifdRecv *mfd;
	bool mfd_stopped; /* after a postcopy LISTEN: no more syncs */

	/* guards pc, ch and preempt_error above, and everything below */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	MigramChannel *recover_ch;
	bool paused;
	bool cancelled;
};

/* Errors name the stream byte of the record that caused them. */
#define fail(error, code, rec, ...)                                            \
	migram_stream_fail((error), (code), (rec)->stream_offset, __VA_ARGS__)

/* receiver.c: one record (also for the records inside a package). */
bool migram_receiver_handle(MigramReceiver *r, const MigramStreamRecord *rec,
			    bool *done, GError **error);
/* receiver.c: pages go through userfaultfd placement (LISTEN reached). */
bool migram_receiver_postcopy_placing(const MigramReceiver *r);

/* receiver-postcopy.c */
bool migram_receiver_command(MigramReceiver *r, const MigramStreamRecord *rec,
			     GError **error);
bool migram_receiver_postcopy_finish(MigramReceiver *r,
				     const MigramStreamRecord *rec,
				     GError **error);
/* A failed load: pause for recovery if postcopy runs; true to go on. */
bool migram_receiver_pause(MigramReceiver *r, GError **error);
void migram_receiver_load_end(MigramReceiver *r, bool ok);

/* multifd-receiver.c: data channels at a RAM EOS, at the end, cancel
 * (the last with lock held) */
bool migram_receiver_multifd_eos(MigramReceiver *r,
				 const MigramStreamRecord *rec, GError **error);
void migram_receiver_multifd_stop(MigramReceiver *r);
void migram_receiver_multifd_cancel_locked(MigramReceiver *r);

#endif /* MIGRAM_RECEIVER_INTERNAL_H */
