/* SPDX-License-Identifier: MIT */
/*
 * migram-sim: shared definitions of the simulator's parts.
 *
 *   main.c      command line, mode dispatch, exit codes
 *   real.c      real mode: two processes, a transport, a workload, verify
 *   link.c      real mode's connections: socketpairs, TCP, reconnects
 *   peer.c      a dead peer in postcopy (--recover-timeout), SIGINT/SIGTERM
 *   torture.c   test hooks for tests/torture (hidden options)
 *   workload.c  writer threads that dirty guest memory (real mode)
 *   kvm-vmm.c   --workload kvm: a minimal VMM and its micro-guest
 *   kvm-sim.c   --workload kvm: the source's and destination's steps
 *   model.c     model mode: the real sender in virtual time, no contents
 *   model-guest.c  model mode's guest: a Poisson write process
 *   units.c     sizes, rates and durations on the command line
 *   report.c    progress line, summary, JSON (json-glib)
 *   chart.c     the chart of the timeline (cairo)
 *
 * Exit codes: SIM_EXIT_OK 0 migrated and verified, SIM_EXIT_FAILED 1
 * failed or mismatched, SIM_EXIT_USAGE 2 bad usage, SIM_EXIT_NOT_CONVERGED
 * 3 did not converge within --max-time, SIM_EXIT_RECOVER_TIMEOUT 4 postcopy
 * paused and the peer did not reconnect within --recover-timeout; 128 + N
 * stopped by signal N (the report printed first).
 */
#ifndef MIGRAM_SIM_H
#define MIGRAM_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <migram/dirty-log-kvm.h>

enum {
	SIM_EXIT_OK = 0,
	SIM_EXIT_FAILED = 1,
	SIM_EXIT_USAGE = 2,
	SIM_EXIT_NOT_CONVERGED = 3,
	/* postcopy paused and the peer did not reconnect in --recover-timeout
	 */
	SIM_EXIT_RECOVER_TIMEOUT = 4,
	/* 128 + N: stopped by signal N (SIGINT, SIGTERM), report printed */
};

/* peer.c: peer death in postcopy, and SIGINT/SIGTERM */
#define SIM_MAX_CHANNELS 16 /* --channels */

typedef struct SimPeer SimPeer;

/* --recover-timeout's default: 3 minutes. */
#define SIM_RECOVER_TIMEOUT_DEFAULT_MS (3 * 60 * 1000)

typedef enum {
	SIM_WORKLOAD_IDLE,
	SIM_WORKLOAD_UNIFORM,
	SIM_WORKLOAD_HOTSET,
	SIM_WORKLOAD_SEQUENTIAL,
	SIM_WORKLOAD_KVM, /* a KVM micro-guest (kvm-guest.h) */
} SimWorkload;

/* What the source's RAM holds before the workload starts (--fill). */
typedef enum {
	SIM_FILL_PATTERN, /* three pages in four a byte pattern, one zero */
	SIM_FILL_RANDOM,  /* every byte pseudo-random (incompressible) */
	SIM_FILL_ZERO,    /* untouched: the kernel's zero pages */
} SimFill;

typedef enum {
	SIM_MODE_PRECOPY,
	SIM_MODE_POSTCOPY, /* switch right after setup */
	SIM_MODE_HYBRID,   /* one precopy pass, then postcopy */
} SimMode;

typedef enum {
	SIM_TRANSPORT_SOCKETPAIR, /* fork, socketpair (default) */
	SIM_TRANSPORT_TCP,        /* --transport tcp:HOST:PORT */
	SIM_TRANSPORT_FILE,       /* --transport file:PATH: save, restore */
} SimTransport;

typedef struct {
	char *name;
	uint64_t bytes;
	bool hugetlb;
	bool shared;
	bool caller; /* memory mapped by the simulator (backend CALLER) */
} SimBlockSpec;

typedef struct {
	/* RAM: one or more blocks (--ram is one block "pc.ram") */
	GArray *blocks; /* SimBlockSpec */

	/* workload */
	SimWorkload workload;
	unsigned int threads; /* writer threads, default 2 */
	uint64_t dirty_rate;  /* bytes/s the workload aims for; 0 = max */
	double hot_fraction;  /* hotset: share of pages that are hot */
	double hot_weight;    /* hotset: share of writes that go there */
	/* kvm: the dirty log ("manual", "classic", "ring"; NULL = manual),
	 * the working set (0 = all RAM above 1 MiB) and its stride */
	char *dirty_log;
	uint64_t working_set;
	uint64_t stride;
	/* kvm: a raw boot-sector image run instead of the micro-guest */
	char *guest_image;
	/* initial RAM content (default: pattern; zero with --workload kvm) */
	SimFill fill;

	/* policy, QEMU's names */
	uint64_t downtime_limit_ms;
	uint64_t max_bandwidth;        /* bytes/s, 0 = unlimited */
	uint64_t switchover_bandwidth; /* bytes/s once paused; 0: measure */
	unsigned int clear_bitmap_shift;
	bool clear_bitmap_shift_set;
	bool clear_at_sync;  /* re-arm the whole log at each sync */
	bool no_return_path; /* precopy: complete without the SHUT */
	bool no_handshake;   /* TCP: no migram hello (QEMU stream only) */
	unsigned int io_timeout_ms; /* source: a stalled connection fails */
	bool auto_converge;
	uint64_t max_time_ms; /* 0: no limit */

	/* postcopy */
	SimMode mode;
	bool preempt;                  /* a second connection for requests */
	unsigned int channels;         /* --channels: 1 = the main stream alone,
					  N > 1 = N data connections (multifd) */
	int zstd_level;                /* --compress zstd[:L]: 1..19; 0 = off */
	uint64_t inject_disconnect_ms; /* cut main this long into postcopy */
	uint64_t recover_timeout_ms;   /* a paused side waits this long */
	SimPeer *peer;                 /* signals and pauses; may be NULL */

	/* real mode */
	SimTransport transport;
	char *transport_arg;        /* "HOST:PORT" or "PATH" */
	char *role;                 /* NULL (both), "source", "destination" */
	bool verify_bytes;          /* byte-for-byte, not only per-block hash */
	int64_t debug_corrupt_page; /* test hook: corrupt this dest page */
	/* torture hooks (torture.h): a userfaultfd log ("async", "fault"),
	 * a mid-migration "add:MS" or "resize:MS", the source's self-check */
	char *debug_uffd_log;
	char *debug_hotplug;
	bool debug_check_source;

	/* snapshot mode (sim/snapshot.c): --snapshot FILE takes
	 * 1 + snapshot_epochs snapshots (FILE, then diffs FILE.1, ...),
	 * snapshot_after_ms apart; --restore FILE[,DIFF...] [--lazy] */
	char *snapshot_path;
	char *snapshot_mode; /* "staging" (default) */
	unsigned int snapshot_epochs;
	uint64_t snapshot_after_ms;
	/* staging write-out: threads (0: one) and the
	 * longest absent gap written as zeros, in pages */
	unsigned int snapshot_writers;
	uint64_t snapshot_bridge_pages;
	char *restore_path;
	bool lazy;

	/* checkpoints to a standby (sim/checkpoint.c): the primary with
	 * --checkpoint-every, the standby with --role standby; both name
	 * the standby's address with --standby tcp:HOST:PORT */
	uint64_t checkpoint_every_ms; /* 0: not a checkpointing primary */
	char *standby;                /* "HOST:PORT" */
	unsigned int checkpoint_epochs;
	char *checkpoint_hashes;  /* directory for per-epoch page hashes */
	char *checkpoint_kill_at; /* "E:PAGES": SIGKILL itself (tests) */

	/* model mode */
	bool model;
	uint64_t link_latency_us; /* model: round-trip latency */
	uint64_t link_bandwidth;  /* model: the link, bytes/s; 0: calibrated */

	/* output */
	bool version_only; /* --version: printed, nothing to run */
	bool quiet;
	char *json_path;
	char *plot_path;
} SimOptions;

/* One sample of the timeline, taken a few times a second. */
typedef struct {
	double t; /* seconds since the start */
	uint64_t remaining_pages;
	uint64_t dirty_rate;   /* bytes/s, last period */
	bool dirty_rate_known; /* measured yet (real: after the first pass) */
	double bandwidth;      /* bytes/s */
	uint64_t pages_sent;
	uint64_t pass; /* passes over RAM completed */
	bool paused;   /* the guest is paused (stop-and-copy) */
	bool postcopy; /* after the switch to postcopy */
} SimSample;

typedef struct {
	/* what happened (QEMU's info migrate figures for RAM) */
	char status[16];
	uint64_t total_bytes;
	uint64_t transferred_bytes;
	uint64_t normal_pages;
	uint64_t duplicate_pages;
	uint64_t dirty_sync_count;
	uint64_t iterations;
	uint64_t log_clear_calls;
	uint64_t downtime_ms;
	/* where the downtime went (µs): pause, final sync, pages, device */
	uint64_t downtime_parts_us[4];
	uint64_t log_sync_us, log_clear_us; /* dirty-log calls while live */
	uint64_t setup_time_ms;
	uint64_t total_time_ms;
	double mbps;
	unsigned int throttle_percent;
	uint64_t workload_writes;
	/* CPU time (user + system) of each side's whole process during the
	 * migration: the source from start to completion, the destination
	 * from its connection to the end of the load */
	uint64_t cpu_src_ms;
	uint64_t cpu_dst_ms;
	char *error; /* NULL on success */

	/* verification (real mode) */
	bool verified;
	char *verify_detail; /* first differing page, or the hashes */

	/* --workload kvm */
	bool kvm;
	char *dirty_log;          /* the mode in force */
	bool guest_verified;      /* invariant held on both sides, dest ran */
	char *guest_detail;       /* what was checked, or what failed */
	double guest_rate_before; /* guest page writes/s before migrating */
	double guest_rate_during; /* ... while migrating (until the pause) */
	uint64_t guest_passes;    /* sum of the vCPUs' pass numbers at pause */
	uint64_t guest_ws_pages;  /* pages one pass writes (all vCPUs) */
	bool guest_image;         /* a boot-sector image, not the micro-guest */
	MigramKvmLogStats kvm_log; /* the KVM log's ioctl counters */

	/* postcopy (source figures, and the destination's sent back) */
	char mode_name[16];
	uint64_t postcopy_time_ms;
	uint64_t postcopy_requests;
	uint64_t postcopy_urgent_pages;
	uint64_t postcopy_recoveries;
	uint64_t discard_pages;
	uint64_t faults;
	uint64_t fault_p50_us;
	uint64_t fault_p99_us;
	uint64_t fault_max_us;
	uint64_t fault_hist[32]; /* faults by latency, [2^i, 2^(i+1)) us */
	uint64_t blocked_ms;
	bool dest_figures;     /* the destination sent the next five back */
	uint64_t dest_touches; /* destination workload reads after RUN */
	uint64_t placed_pages; /* destination: placed in postcopy */

	/* --role destination: the figures are the destination's own */
	bool destination;

	double pause_at;  /* seconds since the start, or < 0 */
	GArray *timeline; /* SimSample */
	bool model;
} SimReport;

/* units.c: the command line's units (docs/simulator.md, "Units"). */
/* A size: "2G", "512M", "64K", "4096" (binary units); 0 on error. */
uint64_t sim_parse_size(const char *s);
/* A rate: "200M/s", "1G/s", "10Gbit/s"; bytes per second, 0 on error. */
uint64_t sim_parse_rate(const char *s);
/*
 * A duration: "250ms", "1.5s", "2m", "500us", "1h", or a plain number
 * counted in plain_unit_us microseconds (the option's documented unit).
 * Stores microseconds (rounded up) in *out_us; false on a malformed,
 * negative or too large value.
 */
bool sim_parse_duration(const char *s, uint64_t plain_unit_us,
			uint64_t *out_us);
/* "3m", "1.5s", "250ms": a duration for a message; caller g_free()s. */
char *sim_format_duration(uint64_t us);

/* model.c: run the scenario in virtual time; fill report; exit code. */
int sim_model_run(const SimOptions *opt, SimReport *report);

/* real.c */
int sim_real_run(const SimOptions *opt, SimReport *report);

/* report.c, and chart.c for the chart */
void sim_report_init(SimReport *r);
void sim_report_clear(SimReport *r);
void sim_report_print(const SimOptions *opt, const SimReport *r);
void sim_report_print_kvm(const SimReport *r);
bool sim_report_write_json(const SimOptions *opt, const SimReport *r,
			   GError **error);
bool sim_report_write_plot(const SimReport *r, const char *path,
			   GError **error);
/* the progress line (only on a terminal, and not with --quiet) */
void sim_progress(const SimOptions *opt, const char *phase, const SimSample *s,
		  uint64_t iteration);
void sim_progress_done(const SimOptions *opt);

#endif /* MIGRAM_SIM_H */
