/* SPDX-License-Identifier: MIT */
/*
 * migram-sim real mode, shared by real.c (transports: file, pair,
 * socketpair, TCP), real-hash.c, real-monitor.c, real-source.c and
 * real-dest.c.
 */
#ifndef SIM_REAL_INTERNAL_H
#define SIM_REAL_INTERNAL_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <migram/soft-log.h>
#include <migram/migram.h>
#include <migram/sender.h>
#include <migram/receiver.h>
#include <migram/verify.h>

#include <migram/bitmap.h>

#include "kvm-sim.h"
#include "link.h"
#include "peer.h"
#include "torture.h"
#include "workload.h"

#define PAGE 4096u

/* ---- the monitor: timeline and progress ------------------------------ */

typedef struct {
	const SimOptions *opt;
	MigramMigration *m;
	SimReport *rep;
	int done;
	gint64 t0;
	int main_fd; /* atomic: the source's current main connection */
} Monitor;

/* The source's callbacks: the guest's, plus reconnecting in postcopy. */
typedef struct {
	const SimOptions *opt;
	SimGuest *guest;
	SimKvmSource *kvm; /* --workload kvm instead of guest */
	SimLink *lk;
	Monitor *mon;
	MigramChannel *cur;  /* the current main channel */
	GPtrArray *channels; /* every channel made, freed at the end */
	/* --recover-timeout bounds a run of pauses without a recovery that
	 * succeeded, not each attempt: a destination that accepts and never
	 * answers otherwise holds the source for good (torture campaign C,
	 * seed 30200178) */
	gint64 paused_since;      /* first pause of the run; 0: none */
	uint64_t recoveries_seen; /* postcopy_recoveries then */
} SrcCtx;

#define MAX_READERS 16

/*
 * The destination's side of postcopy: after RUN, reader threads touch
 * pages in the workload's pattern (most still missing, so they fault);
 * a cut connection is replaced by a spare or a new accept.
 */
typedef struct {
	const SimOptions *opt;
	SimLink *lk;
	MigramReceiver *r;
	MigramRamList *list;
	MigramChannel *cur;
	GPtrArray *channels;
	GPtrArray *hosts; /* guint8 * per migratable block */
	GArray *lens;     /* uint64_t */
	GThread *readers[MAX_READERS];
	unsigned int nreaders;
	int stop;              /* atomic */
	guint64 touches;       /* atomic */
	GByteArray *kvm_state; /* --workload kvm: the device section */
	SimKvm *kvm;           /* --workload kvm in postcopy: from RUN on */
} DstCtx;

/* ---- pages and hashes ------------------------------------------------ */

/* CPU time (user + system) of this process so far, in µs. */
uint64_t real_cpu_us(void);
MigramRamList *real_source_list(const SimOptions *opt, GError **error);
/* Send "name, n, hashes" for every migratable block of list. */
bool real_send_hashes(MigramRamList *list, MigramChannel *ch, GError **error);
/* Compare the peer's hashes with list's pages; a detail string. */
bool real_compare_hashes(MigramRamList *list, MigramChannel *ch, char **detail,
			 SimReport *rep, const unsigned long *skip,
			 GError **error);
gpointer real_monitor_main(gpointer p);
void real_fill_report(SimReport *rep, const MigramMigrationStats *st);
const char *real_mode_name(SimMode m);
/*
 * The source: run the migration on lk's connection with a live workload;
 * the guest is left paused (so memory is final) and its writers stopped.
 */
int real_run_source(const SimOptions *opt, MigramRamList *list, SimLink *lk,
		    SimReport *rep, GError **error);
/*
 * The destination: load from lk's connection (and answer with the hashes
 * when reply).  rep, if not NULL, gets the destination's own figures.
 */
int real_run_destination(const SimOptions *opt, MigramRamList *list,
			 SimLink *lk, bool reply, SimReport *rep);
void real_compare_bytes(const SimOptions *opt, MigramRamList *src,
			GPtrArray *maps, SimReport *rep);

#endif /* SIM_REAL_INTERNAL_H */
