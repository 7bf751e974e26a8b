/* SPDX-License-Identifier: MIT */
/*
 * migram-sim: a live migration of running memory, end to end.
 *
 * Real mode (default): two processes, a transport, a workload writing the
 * source's memory the whole time, then verification.  Model mode
 * (--model): the same algorithms in virtual time, for guests far larger
 * than this machine.  See docs/simulator.md.
 *
 * Exit codes: 0 migrated and verified, 1 failed or mismatched, 2 bad
 * usage, 3 did not converge within --max-time, 4 postcopy paused and the
 * peer did not reconnect within --recover-timeout, 128 + N stopped by
 * signal N (SIGINT, SIGTERM) after printing the report.  --version prints
 * the library version.
 */
#include <stdio.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include <migram/migram.h>
#include <migram/ramblock.h>

#include "peer.h"
#include "sim-snapshot.h"
#include "sim.h"

static bool add_block(SimOptions *o, const char *spec, GError **error)
{
	g_auto(GStrv) parts = g_strsplit(spec, ":", 0);
	SimBlockSpec b = { 0 };
	guint n = g_strv_length(parts);

	if (n < 2 || !parts[0][0] || strlen(parts[0]) > 255 ||
	    !(b.bytes = sim_parse_size(parts[1])) || b.bytes % 4096) {
		g_set_error(
			error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
			"--block '%s': want NAME:SIZE[:hugetlb][:shared][:caller] "
			"with SIZE a multiple of 4K",
			spec);
		return false;
	}
	for (guint i = 2; i < n; i++) {
		if (strcmp(parts[i], "hugetlb") == 0)
			b.hugetlb = true;
		else if (strcmp(parts[i], "shared") == 0)
			b.shared = true;
		else if (strcmp(parts[i], "caller") == 0)
			b.caller = true;
		else {
			g_set_error(error, G_OPTION_ERROR,
				    G_OPTION_ERROR_BAD_VALUE,
				    "--block '%s': unknown flag '%s'", spec,
				    parts[i]);
			return false;
		}
	}
	b.name = g_strdup(parts[0]);
	g_array_append_val(o->blocks, b);
	return true;
}

typedef struct {
	char *ram, *workload, *dirty_rate, *max_bandwidth, *transport, *mode;
	char *switchover_bandwidth, *link_bandwidth;
	char *working_set, *stride, *fill;
	char **blocks;
	/* durations, as given (units.c) */
	char *downtime_limit, *max_time, *latency, *inject_disconnect;
	char *recover_timeout;
	gint64 clear_shift, corrupt;
	gboolean preempt;
	gint threads, channels;
	char *compress;
	gdouble hot_fraction, hot_weight;
	gboolean auto_converge, model, quiet, verify_bytes, clear_at_sync;
	gboolean no_return_path, no_handshake;
	int io_timeout_ms;
	gboolean version, check_source, lazy;
	char *snapshot_after, *checkpoint_every, *snapshot_bridge;
	gint snapshot_epochs, checkpoint_epochs, snapshot_writers;
} Args;

static bool fail_usage(GError **error, const char *fmt, const char *v)
{
	g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, fmt, v);
	return false;
}

/* --checkpoint-every, --standby, --role standby (sim/checkpoint.c). */
static bool apply_checkpoint(const Args *a, SimOptions *o, GError **error)
{
	bool standby = o->role && strcmp(o->role, "standby") == 0;
	if (a->checkpoint_every) {
		uint64_t us;
		if (!sim_parse_duration(a->checkpoint_every, 1000, &us) ||
		    us < 1000)
			return fail_usage(
				error, "--checkpoint-every '%s': 1ms or more",
				a->checkpoint_every);
		o->checkpoint_every_ms = us / 1000;
	}
	if ((o->checkpoint_every_ms || standby) &&
	    (!o->standby || strncmp(o->standby, "tcp:", 4) != 0))
		return fail_usage(error,
				  "--checkpoint-every and --role standby need "
				  "--standby tcp:HOST:PORT%s",
				  "");
	if (o->standby && !o->checkpoint_every_ms && !standby)
		return fail_usage(error,
				  "--standby needs --checkpoint-every or "
				  "--role standby%s",
				  "");
	if (a->checkpoint_epochs < 1 || a->checkpoint_epochs > 1000000)
		return fail_usage(error, "--checkpoint-epochs: 1 to 1000000%s",
				  "");
	o->checkpoint_epochs = (unsigned int)a->checkpoint_epochs;
	if ((o->checkpoint_every_ms || standby) && o->model)
		return fail_usage(error,
				  "checkpoints run real workloads (not "
				  "--model)%s",
				  "");
	return true;
}

/* --workload kvm and its options (kvm-guest.h). */
static bool apply_kvm(const Args *a, SimOptions *o, GError **error)
{
	bool kvm = o->workload == SIM_WORKLOAD_KVM;

	if (o->dirty_log && strcmp(o->dirty_log, "manual") &&
	    strcmp(o->dirty_log, "classic") && strcmp(o->dirty_log, "ring"))
		return fail_usage(error,
				  "--dirty-log '%s': manual, classic or ring",
				  o->dirty_log);
	if (!kvm &&
	    (o->dirty_log || a->working_set || a->stride || o->guest_image))
		return fail_usage(error,
				  "--dirty-log, --working-set, --stride and "
				  "--guest-image go with --workload kvm%s",
				  "");
	if (!kvm)
		return true;
	if (o->fill != SIM_FILL_ZERO)
		return fail_usage(error,
				  "--workload kvm: guest memory starts zero "
				  "(--fill %s is for the other workloads)",
				  a->fill);
	if (o->guest_image && (a->working_set || a->stride))
		return fail_usage(error,
				  "--guest-image: the image sets its own "
				  "working set; no --working-set or --stride%s",
				  "");
	if (a->working_set &&
	    !(o->working_set = sim_parse_size(a->working_set)))
		return fail_usage(error,
				  "--working-set '%s': a size such as 64M",
				  a->working_set);
	if (a->stride && (!(o->stride = sim_parse_size(a->stride)) ||
			  o->stride % 4096 || o->stride > (1u << 30)))
		return fail_usage(error,
				  "--stride '%s': a multiple of 4K up to 1G",
				  a->stride);
	if (o->blocks->len != 1 ||
	    g_array_index(o->blocks, SimBlockSpec, 0).bytes > (4ULL << 30) ||
	    g_array_index(o->blocks, SimBlockSpec, 0).bytes < (2ULL << 20))
		return fail_usage(error,
				  "--workload kvm: one --ram block of 2M to "
				  "4G (a 32-bit guest)%s",
				  "");
	if (o->model || o->transport == SIM_TRANSPORT_FILE || a->dirty_rate)
		return fail_usage(error,
				  "--workload kvm runs a real guest: not with "
				  "--model, file transports or --dirty-rate%s",
				  "");
	if (o->threads > 16)
		return fail_usage(error,
				  "--workload kvm: --threads (vCPUs) 1 to 16%s",
				  "");
	return true;
}

/* One duration option: a unit, or a plain number in its own unit. */
static bool duration(const char *arg, const char *flag, uint64_t plain_us,
		     uint64_t *out_us, GError **error)
{
	static const struct {
		uint64_t us;
		const char *name;
	} plain[] = { { 1, "microseconds" },
		      { 1000, "milliseconds" },
		      { 1000000, "seconds" } };
	const char *unit = "";

	if (!arg || sim_parse_duration(arg, plain_us, out_us))
		return true;
	for (guint i = 0; i < G_N_ELEMENTS(plain); i++)
		if (plain[i].us == plain_us)
			unit = plain[i].name;
	g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
		    "%s '%s': a duration such as 250ms, 1.5s or 2m (us, ms, "
		    "s, m, h; a plain number is %s)",
		    flag, arg, unit);
	return false;
}

static uint64_t us_to_ms(uint64_t us)
{
	return (us + 999) / 1000;
}

/* Every option that is a time (units.c). */
static bool apply_durations(const Args *a, SimOptions *o, GError **error)
{
	uint64_t downtime = 0, max_time = 0, latency = 0, cut = 0;
	uint64_t recover = SIM_RECOVER_TIMEOUT_DEFAULT_MS * 1000;

	if (!duration(a->downtime_limit, "--downtime-limit", 1000, &downtime,
		      error) ||
	    !duration(a->max_time, "--max-time", 1000000, &max_time, error) ||
	    !duration(a->latency, "--link-latency-us", 1, &latency, error) ||
	    !duration(a->inject_disconnect, "--inject-disconnect-after", 1000,
		      &cut, error) ||
	    !duration(a->recover_timeout, "--recover-timeout", 1000000,
		      &recover, error))
		return false;
	o->downtime_limit_ms = us_to_ms(downtime);
	o->max_time_ms = us_to_ms(max_time);
	o->link_latency_us = latency;
	o->inject_disconnect_ms = us_to_ms(cut);
	o->recover_timeout_ms = us_to_ms(recover);
	return true;
}

static bool apply(const Args *a, SimOptions *o, GError **error)
{
	static const char *const wl[] = { "idle", "uniform", "hotset",
					  "sequential", "kvm" };
	uint64_t ram;

	o->workload = SIM_WORKLOAD_HOTSET;
	if (a->workload) {
		guint i = 0;

		while (i < G_N_ELEMENTS(wl) && strcmp(a->workload, wl[i]))
			i++;
		if (i == G_N_ELEMENTS(wl))
			return fail_usage(error,
					  "--workload '%s': idle, uniform, "
					  "hotset, sequential or kvm",
					  a->workload);
		o->workload = (SimWorkload)i;
	}
	if (o->guest_image && !a->workload)
		o->workload = SIM_WORKLOAD_KVM;
	if (!a->fill)
		o->fill = o->workload == SIM_WORKLOAD_KVM ? SIM_FILL_ZERO
							  : SIM_FILL_PATTERN;
	else if (strcmp(a->fill, "pattern") == 0)
		o->fill = SIM_FILL_PATTERN;
	else if (strcmp(a->fill, "random") == 0)
		o->fill = SIM_FILL_RANDOM;
	else if (strcmp(a->fill, "zero") == 0)
		o->fill = SIM_FILL_ZERO;
	else
		return fail_usage(error, "--fill '%s': pattern, random or zero",
				  a->fill);
	if (!a->mode || strcmp(a->mode, "precopy") == 0)
		o->mode = SIM_MODE_PRECOPY;
	else if (strcmp(a->mode, "postcopy") == 0)
		o->mode = SIM_MODE_POSTCOPY;
	else if (strcmp(a->mode, "hybrid") == 0)
		o->mode = SIM_MODE_HYBRID;
	else
		return fail_usage(error,
				  "--mode '%s': precopy, postcopy or hybrid",
				  a->mode);
	if (o->mode != SIM_MODE_PRECOPY && a->transport &&
	    g_str_has_prefix(a->transport, "file:"))
		return fail_usage(error,
				  "--mode %s needs a connection (socketpair "
				  "or tcp), not a file",
				  a->mode);
	if (!apply_durations(a, o, error))
		return false;
	if ((a->preempt || o->inject_disconnect_ms) &&
	    o->mode == SIM_MODE_PRECOPY)
		return fail_usage(error,
				  "--preempt and --inject-disconnect-after "
				  "need --mode postcopy or hybrid%s",
				  "");
	if (a->model && (a->preempt || o->inject_disconnect_ms))
		return fail_usage(error,
				  "--preempt and --inject-disconnect-after: "
				  "not with --model%s",
				  "");
	o->preempt = a->preempt;
	if (a->channels < 0 || a->channels > SIM_MAX_CHANNELS)
		return fail_usage(error, "--channels: 1..16%s", "");
	o->channels = a->channels > 1 ? (unsigned int)a->channels : 1;
	if (o->channels > 1 && (o->inject_disconnect_ms || a->model))
		return fail_usage(error,
				  "--channels: not with --model or "
				  "--inject-disconnect-after%s",
				  "");
	if (a->compress) {
		const char *lv = g_str_has_prefix(a->compress, "zstd:")
					 ? a->compress + 5
					 : NULL;
		char *end = NULL;
		long l = lv ? strtol(lv, &end, 10) : 1;

		if ((!lv && strcmp(a->compress, "zstd") != 0) ||
		    (lv && (!*lv || *end)) || l < 1 || l > 19)
			return fail_usage(error,
					  "--compress '%s': zstd or zstd:LEVEL "
					  "(1..19)",
					  a->compress);
		if (o->channels < 2)
			return fail_usage(error,
					  "--compress needs --channels N > 1%s",
					  "");
		o->zstd_level = (int)l;
	}
	for (char **b = a->blocks; b && *b; b++)
		if (!add_block(o, *b, error))
			return false;
	if (a->ram || !o->blocks->len) {
		SimBlockSpec b = { 0 };

		ram = sim_parse_size(a->ram ? a->ram : "1G");
		if (!ram || ram % 4096)
			return fail_usage(error,
					  "--ram '%s': a size such as 2G",
					  a->ram);
		b.name = g_strdup("pc.ram");
		b.bytes = ram;
		g_array_prepend_val(o->blocks, b);
	}
	if (a->dirty_rate && strcmp(a->dirty_rate, "unlimited") &&
	    !(o->dirty_rate = sim_parse_rate(a->dirty_rate)))
		return fail_usage(error,
				  "--dirty-rate '%s': a rate such as 200M/s",
				  a->dirty_rate);
	if (a->max_bandwidth &&
	    !(o->max_bandwidth = sim_parse_rate(a->max_bandwidth)))
		return fail_usage(
			error,
			"--max-bandwidth '%s': a rate such as 1G/s or "
			"10Gbit/s",
			a->max_bandwidth);
	if (a->switchover_bandwidth &&
	    !(o->switchover_bandwidth =
		      sim_parse_rate(a->switchover_bandwidth)))
		return fail_usage(error,
				  "--switchover-bandwidth '%s': a rate such "
				  "as 3G/s",
				  a->switchover_bandwidth);
	if (a->link_bandwidth &&
	    !(o->link_bandwidth = sim_parse_rate(a->link_bandwidth)))
		return fail_usage(error,
				  "--link-bandwidth '%s': a rate such as "
				  "10Gbit/s",
				  a->link_bandwidth);
	if (a->link_bandwidth && !a->model)
		return fail_usage(error, "--link-bandwidth '%s' needs --model",
				  a->link_bandwidth);
	if (a->transport) {
		if (strcmp(a->transport, "socketpair") == 0) {
			o->transport = SIM_TRANSPORT_SOCKETPAIR;
		} else if (g_str_has_prefix(a->transport, "tcp:")) {
			o->transport = SIM_TRANSPORT_TCP;
			o->transport_arg = g_strdup(a->transport + 4);
		} else if (g_str_has_prefix(a->transport, "file:") &&
			   a->transport[5]) {
			o->transport = SIM_TRANSPORT_FILE;
			o->transport_arg = g_strdup(a->transport + 5);
		} else {
			return fail_usage(error,
					  "--transport '%s': socketpair, "
					  "tcp:HOST:PORT or file:PATH",
					  a->transport);
		}
	}
	if (!apply_checkpoint(a, o, error))
		return false;
	if (o->role && strcmp(o->role, "source") &&
	    strcmp(o->role, "destination") && strcmp(o->role, "standby"))
		return fail_usage(error,
				  "--role '%s': source, destination or standby",
				  o->role);
	if (o->channels > 1 && o->transport == SIM_TRANSPORT_FILE)
		return fail_usage(error,
				  "--channels needs connections (socketpair "
				  "or tcp), not a file%s",
				  "");
	if (o->role && strcmp(o->role, "standby") &&
	    o->transport != SIM_TRANSPORT_TCP)
		return fail_usage(error, "--role %s needs --transport tcp:...",
				  o->role);
	if (a->threads < 1 || a->threads > 64)
		return fail_usage(error, "--threads: 1 to 64%s", "");
	if (a->hot_fraction < 0 || a->hot_fraction > 1 || a->hot_weight < 0 ||
	    a->hot_weight > 1)
		return fail_usage(error,
				  "--hot-fraction and --hot-weight are in "
				  "[0, 1]%s",
				  "");
	if (a->clear_shift > MIGRAM_CLEAR_BMAP_SHIFT_MAX)
		return fail_usage(error, "--clear-bitmap-shift: 0 to 31%s", "");
	if (a->verify_bytes && (o->role || o->transport == SIM_TRANSPORT_FILE))
		return fail_usage(error,
				  "--verify-bytes needs both sides in one run "
				  "over socketpair or tcp%s",
				  "");
	if (o->snapshot_path && o->restore_path)
		return fail_usage(error,
				  "--snapshot and --restore: one of "
				  "them%s",
				  "");
	if (o->snapshot_mode && strcmp(o->snapshot_mode, "staging") != 0 &&
	    strcmp(o->snapshot_mode, "cow") != 0)
		return fail_usage(error, "--snapshot-mode '%s': staging or cow",
				  o->snapshot_mode);
	if (a->lazy && !o->restore_path)
		return fail_usage(error, "--lazy needs --restore%s", "");
	if ((o->snapshot_path || o->restore_path) && (o->model || o->role))
		return fail_usage(error,
				  "--snapshot/--restore run the workload in "
				  "one process (not --model or --role)%s",
				  "");
	if (a->snapshot_epochs < 0 || a->snapshot_epochs > 1000)
		return fail_usage(error, "--snapshot-epochs: 0 to 1000%s", "");
	o->snapshot_epochs = (unsigned int)a->snapshot_epochs;
	if (a->snapshot_writers < 0 || a->snapshot_writers > 64)
		return fail_usage(error, "--snapshot-writers: 0 to 64%s", "");
	o->snapshot_writers = (unsigned int)a->snapshot_writers;
	uint64_t bridge = 64 * 1024; /* sim_parse_size: 0 is a failure */
	if (a->snapshot_bridge)
		bridge = strcmp(a->snapshot_bridge, "0") == 0
				 ? 0
				 : sim_parse_size(a->snapshot_bridge);
	if ((a->snapshot_bridge && bridge == 0 &&
	     strcmp(a->snapshot_bridge, "0") != 0) ||
	    bridge % 4096 || bridge > 1024 * 1024)
		return fail_usage(error,
				  "--snapshot-bridge '%s': 0 to 1M in 4K steps",
				  a->snapshot_bridge);
	o->snapshot_bridge_pages = bridge / 4096;
	o->lazy = a->lazy;
	o->snapshot_after_ms = 200;
	if (a->snapshot_after) {
		uint64_t us;
		if (!sim_parse_duration(a->snapshot_after, 1000, &us))
			return fail_usage(error, "--snapshot-after '%s'",
					  a->snapshot_after);
		o->snapshot_after_ms = us / 1000;
	}
	o->threads = (unsigned int)a->threads;
	o->hot_fraction = a->hot_fraction;
	o->hot_weight = a->hot_weight;
	o->clear_bitmap_shift_set = a->clear_shift >= 0;
	o->clear_bitmap_shift = (unsigned int)MAX(a->clear_shift, 0);
	o->auto_converge = a->auto_converge;
	o->clear_at_sync = a->clear_at_sync;
	o->no_return_path = a->no_return_path;
	o->no_handshake = a->no_handshake;
	o->io_timeout_ms = (unsigned int)MAX(a->io_timeout_ms, 0);
	o->model = a->model;
	o->quiet = a->quiet;
	o->verify_bytes = a->verify_bytes;
	o->debug_corrupt_page = a->corrupt;
	o->debug_check_source = a->check_source;
	if (o->debug_uffd_log && strcmp(o->debug_uffd_log, "async") &&
	    strcmp(o->debug_uffd_log, "fault"))
		return fail_usage(error,
				  "--debug-uffd-log '%s': async or fault",
				  o->debug_uffd_log);
	if (o->debug_hotplug && !g_str_has_prefix(o->debug_hotplug, "add:") &&
	    !g_str_has_prefix(o->debug_hotplug, "resize:"))
		return fail_usage(error,
				  "--debug-hotplug '%s': add:MS or "
				  "resize:MS",
				  o->debug_hotplug);
	return apply_kvm(a, o, error);
}

static bool parse_args(int *argc, char ***argv, SimOptions *o, GError **error)
{
	Args a = { .threads = 2,
		   .clear_shift = -1,
		   .corrupt = -1,
		   .checkpoint_epochs = 10 };
	GOptionEntry entries[] = {
		{ "ram", 0, 0, G_OPTION_ARG_STRING, &a.ram,
		  "One RAM block of this size (default 1G)", "SIZE" },
		{ "block", 0, 0, G_OPTION_ARG_STRING_ARRAY, &a.blocks,
		  "A RAM block (repeatable; :caller maps it here, not in "
		  "migram)",
		  "NAME:SIZE[:hugetlb][:shared][:caller]" },
		{ "workload", 'w', 0, G_OPTION_ARG_STRING, &a.workload,
		  "idle, uniform, hotset (default), sequential or kvm",
		  "KIND" },
		{ "threads", 't', 0, G_OPTION_ARG_INT, &a.threads,
		  "Writer threads, or vCPUs with kvm (default 2)", "N" },
		{ "dirty-log", 0, 0, G_OPTION_ARG_STRING, &o->dirty_log,
		  "kvm: manual (default), classic or ring", "MODE" },
		{ "working-set", 0, 0, G_OPTION_ARG_STRING, &a.working_set,
		  "kvm: bytes the guest writes (default all above 1M)",
		  "SIZE" },
		{ "guest-image", 0, 0, G_OPTION_ARG_FILENAME, &o->guest_image,
		  "kvm: boot this raw boot-sector image (real mode at "
		  "0x7c00, COM1 output) instead of the micro-guest; implies "
		  "--workload kvm",
		  "FILE" },
		{ "fill", 0, 0, G_OPTION_ARG_STRING, &a.fill,
		  "Initial RAM: pattern (3 pages in 4, default), random or "
		  "zero (untouched); kvm guests start zero",
		  "KIND" },
		{ "stride", 0, 0, G_OPTION_ARG_STRING, &a.stride,
		  "kvm: distance between written pages (default 4K)", "SIZE" },
		{ "dirty-rate", 0, 0, G_OPTION_ARG_STRING, &a.dirty_rate,
		  "Workload write rate (default unlimited; required with "
		  "--model)",
		  "RATE/s" },
		{ "hot-fraction", 0, 0, G_OPTION_ARG_DOUBLE, &a.hot_fraction,
		  "hotset: share of pages that are hot (default 0.05)", "F" },
		{ "hot-weight", 0, 0, G_OPTION_ARG_DOUBLE, &a.hot_weight,
		  "hotset: share of writes to hot pages (default 0.8)", "W" },
		{ "mode", 'm', 0, G_OPTION_ARG_STRING, &a.mode,
		  "precopy (default), postcopy or hybrid (one precopy pass, "
		  "then postcopy)",
		  "MODE" },
		{ "preempt", 0, 0, G_OPTION_ARG_NONE, &a.preempt,
		  "Postcopy: requested pages on a second connection", NULL },
		{ "channels", 0, 0, G_OPTION_ARG_INT, &a.channels,
		  "Data connections for precopy pages (multifd): 1 (default) "
		  "sends every page on the main connection; N > 1 opens N "
		  "more (tcp: to the same port, after main and preempt)",
		  "N" },
		{ "compress", 0, 0, G_OPTION_ARG_STRING, &a.compress,
		  "Compress the data connections' payloads: zstd or "
		  "zstd:LEVEL (1..19, default 1), QEMU 7.2's multifd zstd",
		  "zstd[:LEVEL]" },
		{ "inject-disconnect-after", 0, 0, G_OPTION_ARG_STRING,
		  &a.inject_disconnect,
		  "Postcopy: cut the connection this long into postcopy, "
		  "then reconnect and recover (plain number: ms)",
		  "TIME" },
		{ "recover-timeout", 0, 0, G_OPTION_ARG_STRING,
		  &a.recover_timeout,
		  "Postcopy: how long a paused side waits for its peer to "
		  "reconnect, then gives up (exit 4; default 3m; plain "
		  "number: s)",
		  "TIME" },
		{ "downtime-limit", 0, 0, G_OPTION_ARG_STRING,
		  &a.downtime_limit,
		  "Longest pause (default 300ms; plain number: ms)", "TIME" },
		{ "max-bandwidth", 0, 0, G_OPTION_ARG_STRING, &a.max_bandwidth,
		  "Migration bandwidth (default unlimited)", "RATE/s" },
		{ "switchover-bandwidth", 0, 0, G_OPTION_ARG_STRING,
		  &a.switchover_bandwidth,
		  "The rate once the guest is paused, for the downtime "
		  "estimate (default: the live rate measured)",
		  "RATE/s" },
		{ "clear-bitmap-shift", 0, 0, G_OPTION_ARG_INT64,
		  &a.clear_shift, "Log-clear chunk exponent (default 18)",
		  "N" },
		{ "clear-at-sync", 0, 0, G_OPTION_ARG_NONE, &a.clear_at_sync,
		  "Re-arm the whole dirty log at each sync (no postponed clear)",
		  NULL },
		{ "io-timeout-ms", 0, 0, G_OPTION_ARG_INT, &a.io_timeout_ms,
		  "Either side: fail when a connection makes no progress for "
		  "MS milliseconds (0: wait forever, the default)",
		  "MS" },
		{ "no-return-path", 0, 0, G_OPTION_ARG_NONE, &a.no_return_path,
		  "Precopy over a socket: complete at the last byte, without "
		  "waiting for the destination's SHUT (QEMU without a return "
		  "path)",
		  NULL },
		{ "no-handshake", 0, 0, G_OPTION_ARG_NONE, &a.no_handshake,
		  "TCP: no migram handshake; the destination then tells the "
		  "connections apart by accept order (main, preempt, data)",
		  NULL },
		{ "auto-converge", 0, 0, G_OPTION_ARG_NONE, &a.auto_converge,
		  "Throttle the guest when not converging", NULL },
		{ "max-time", 0, 0, G_OPTION_ARG_STRING, &a.max_time,
		  "Give up after this long (exit 3; plain number: s)", "TIME" },
		{ "transport", 0, 0, G_OPTION_ARG_STRING, &a.transport,
		  "socketpair (default), tcp:HOST:PORT or file:PATH", "T" },
		{ "role", 0, 0, G_OPTION_ARG_STRING, &o->role,
		  "source or destination (two hosts; needs tcp)", "ROLE" },
		{ "verify-bytes", 0, 0, G_OPTION_ARG_NONE, &a.verify_bytes,
		  "Also compare memory byte for byte", NULL },
		{ "snapshot", 0, 0, G_OPTION_ARG_FILENAME, &o->snapshot_path,
		  "Snapshot the running workload into FILE (then diffs "
		  "FILE.1, ... with --snapshot-epochs)",
		  "FILE" },
		{ "snapshot-mode", 0, 0, G_OPTION_ARG_STRING, &o->snapshot_mode,
		  "How: staging (default) or cow (copy-before-write)", "MODE" },
		{ "snapshot-epochs", 0, 0, G_OPTION_ARG_INT, &a.snapshot_epochs,
		  "Diff snapshots after the first (0)", "N" },
		{ "snapshot-writers", 0, 0, G_OPTION_ARG_INT,
		  &a.snapshot_writers, "Threads writing the staging out (1)",
		  "N" },
		{ "snapshot-bridge", 0, 0, G_OPTION_ARG_STRING,
		  &a.snapshot_bridge,
		  "Write zero gaps up to SIZE between staged runs (64K)",
		  "SIZE" },
		{ "snapshot-after", 0, 0, G_OPTION_ARG_STRING,
		  &a.snapshot_after,
		  "Run the workload this long before each snapshot (200ms)",
		  "TIME" },
		{ "restore", 0, 0, G_OPTION_ARG_STRING, &o->restore_path,
		  "Restore FILE[,DIFF...] into fresh memory and verify it "
		  "(kvm: then resume the guest)",
		  "FILES" },
		{ "lazy", 0, 0, G_OPTION_ARG_NONE, &a.lazy,
		  "With --restore: fault pages in through userfaultfd", NULL },
		{ "checkpoint-every", 0, 0, G_OPTION_ARG_STRING,
		  &a.checkpoint_every,
		  "Checkpoint to --standby every TIME (COLO/Remus style)",
		  "TIME" },
		{ "standby", 0, 0, G_OPTION_ARG_STRING, &o->standby,
		  "The standby's address (tcp:HOST:PORT; port 0 with --role "
		  "standby: any)",
		  "ADDR" },
		{ "checkpoint-epochs", 0, 0, G_OPTION_ARG_INT,
		  &a.checkpoint_epochs, "Checkpoints to take (10)", "N" },
		{ "checkpoint-hashes", 0, 0, G_OPTION_ARG_FILENAME,
		  &o->checkpoint_hashes,
		  "Write every epoch's page hashes (and the standby's) here",
		  "DIR" },
		{ "checkpoint-kill-at", 0, 0, G_OPTION_ARG_STRING,
		  &o->checkpoint_kill_at,
		  "Test: SIGKILL the primary once epoch E has sent PAGES pages",
		  "E:PAGES" },
		{ "model", 0, 0, G_OPTION_ARG_NONE, &a.model,
		  "Model mode: the real sender in virtual time, no page contents",
		  NULL },
		{ "link-latency-us", 0, 0, G_OPTION_ARG_STRING, &a.latency,
		  "Model mode: round-trip latency (plain number: us)", "TIME" },
		{ "link-bandwidth", 0, 0, G_OPTION_ARG_STRING,
		  &a.link_bandwidth,
		  "Model mode: the link's raw rate to a remote destination "
		  "(default: this machine's socketpair, calibrated)",
		  "RATE/s" },
		{ "json", 0, 0, G_OPTION_ARG_FILENAME, &o->json_path,
		  "Write statistics and a timeline as JSON", "FILE" },
		{ "plot", 0, 0, G_OPTION_ARG_FILENAME, &o->plot_path,
		  "Write a chart of the timeline (.svg or .png)", "FILE" },
		{ "quiet", 'q', 0, G_OPTION_ARG_NONE, &a.quiet,
		  "No progress line and no summary", NULL },
		{ "version", 0, 0, G_OPTION_ARG_NONE, &a.version,
		  "Print the version and exit", NULL },
		{ "debug-corrupt-page", 0, G_OPTION_FLAG_HIDDEN,
		  G_OPTION_ARG_INT64, &a.corrupt,
		  "Test hook: corrupt a destination page", "N" },
		{ "debug-uffd-log", 0, G_OPTION_FLAG_HIDDEN,
		  G_OPTION_ARG_STRING, &o->debug_uffd_log,
		  "Test hook: a userfaultfd dirty log", "async|fault" },
		{ "debug-hotplug", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_STRING,
		  &o->debug_hotplug,
		  "Test hook: add or resize a block that long into the run",
		  "add:MS|resize:MS" },
		{ "debug-check-source", 0, G_OPTION_FLAG_HIDDEN,
		  G_OPTION_ARG_NONE, &a.check_source,
		  "Test hook: check the source's guest after a failure", NULL },
		{ NULL, 0, 0, 0, NULL, NULL, NULL }
	};
	g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
	bool ok;

	g_option_context_set_summary(
		ctx, "Migrate running memory live between two processes "
		     "(or in virtual time with --model) and verify it.");
	g_option_context_set_description(
		ctx,
		"Durations take a unit (us, ms, s, m, h: 250ms, 1.5s, 2m); "
		"a plain number is in the unit the option names.\n\n"
		"Exit status: 0 migrated and verified, 1 failed or "
		"mismatched, 2 bad usage, 3 did not converge in time, 4 "
		"postcopy paused and the peer did not reconnect within "
		"--recover-timeout, 128+N stopped by signal N (130 SIGINT, "
		"143 SIGTERM) after printing the report.\n");
	g_option_context_add_main_entries(ctx, entries, NULL);
	ok = g_option_context_parse(ctx, argc, argv, error);
	if (ok && *argc > 1)
		ok = fail_usage(error, "unexpected argument '%s'", (*argv)[1]);
	if (ok && a.version) {
		printf("migram-sim %s\n", migram_version_string());
		o->version_only = true;
	}
	ok = ok && (o->version_only || apply(&a, o, error));
	g_free(a.ram);
	g_free(a.workload);
	g_free(a.dirty_rate);
	g_free(a.max_bandwidth);
	g_free(a.compress);
	g_free(a.switchover_bandwidth);
	g_free(a.link_bandwidth);
	g_free(a.transport);
	g_free(a.snapshot_after);
	g_free(a.snapshot_bridge);
	g_free(a.checkpoint_every);
	g_free(a.mode);
	g_free(a.working_set);
	g_free(a.stride);
	g_free(a.fill);
	g_free(a.downtime_limit);
	g_free(a.max_time);
	g_free(a.latency);
	g_free(a.inject_disconnect);
	g_free(a.recover_timeout);
	g_strfreev(a.blocks);
	return ok;
}

static void options_clear(SimOptions *o)
{
	for (guint i = 0; i < o->blocks->len; i++)
		g_free(g_array_index(o->blocks, SimBlockSpec, i).name);
	g_array_unref(o->blocks);
	g_free(o->transport_arg);
	g_free(o->role);
	g_free(o->dirty_log);
	g_free(o->guest_image);
	g_free(o->debug_uffd_log);
	g_free(o->debug_hotplug);
	g_free(o->json_path);
	g_free(o->plot_path);
	g_free(o->snapshot_path);
	g_free(o->snapshot_mode);
	g_free(o->restore_path);
	g_free(o->standby);
	g_free(o->checkpoint_hashes);
	g_free(o->checkpoint_kill_at);
}

int main(int argc, char **argv)
{
	SimOptions opt = { .blocks = g_array_new(FALSE, TRUE,
						 sizeof(SimBlockSpec)) };
	g_autoptr(GError) error = NULL;
	SimReport rep;
	int rc;

	if (!parse_args(&argc, &argv, &opt, &error)) {
		fprintf(stderr, "migram-sim: %s\n", error->message);
		options_clear(&opt);
		return SIM_EXIT_USAGE;
	}
	if (opt.version_only) {
		options_clear(&opt);
		return SIM_EXIT_OK;
	}
	if (opt.snapshot_path || opt.restore_path || opt.standby) {
		urcu_memb_register_thread();
		rc = opt.standby ? sim_checkpoint_run(&opt)
				 : sim_snapshot_run(&opt);
		urcu_memb_unregister_thread();
		options_clear(&opt);
		return rc;
	}
	/* Before any thread: they all inherit SIGINT and SIGTERM blocked. */
	opt.peer = opt.model ? NULL : sim_peer_new();
	urcu_memb_register_thread();
	sim_report_init(&rep);
	rc = opt.model ? sim_model_run(&opt, &rep) : sim_real_run(&opt, &rep);
	rc = sim_peer_outcome(opt.peer, rc, &rep);
	sim_report_print(&opt, &rep);
	if (opt.json_path && !sim_report_write_json(&opt, &rep, &error)) {
		fprintf(stderr, "migram-sim: %s\n", error->message);
		rc = rc ? rc : SIM_EXIT_FAILED;
		g_clear_error(&error);
	}
	if (opt.plot_path &&
	    !sim_report_write_plot(&rep, opt.plot_path, &error)) {
		fprintf(stderr, "migram-sim: %s\n", error->message);
		rc = rc ? rc : SIM_EXIT_FAILED;
	} else if (opt.plot_path && !opt.quiet) {
		printf("chart:             %s\n", opt.plot_path);
	}
	if (rc && rep.error && opt.quiet)
		fprintf(stderr, "migram-sim: %s\n", rep.error);
	sim_report_clear(&rep);
	urcu_memb_unregister_thread();
	sim_peer_free(opt.peer);
	options_clear(&opt);
	return rc;
}
