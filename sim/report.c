/* SPDX-License-Identifier: MIT */
/*
 * migram-sim's output: the progress line, the summary and JSON (the chart
 * is chart.c's).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include <migram/migram.h>

#include "sim.h"

void sim_report_init(SimReport *r)
{
	memset(r, 0, sizeof(*r));
	g_strlcpy(r->status, "setup", sizeof(r->status));
	r->timeline = g_array_new(FALSE, TRUE, sizeof(SimSample));
	r->pause_at = -1;
}

void sim_report_clear(SimReport *r)
{
	g_array_unref(r->timeline);
	g_free(r->error);
	g_free(r->verify_detail);
	g_free(r->dirty_log);
	g_free(r->guest_detail);
}

static bool on_terminal(const SimOptions *opt)
{
	return !opt->quiet && isatty(STDERR_FILENO);
}

static void human_bytes(char *buf, size_t n, double v)
{
	const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	g_snprintf(buf, n, "%.1f %s", v, unit[u]);
}

void sim_progress(const SimOptions *opt, const char *phase, const SimSample *s,
		  uint64_t iteration)
{
	char rem[32], dirty[32], bw[32], eta[32];

	if (!on_terminal(opt))
		return;
	human_bytes(rem, sizeof(rem), (double)s->remaining_pages * 4096);
	human_bytes(dirty, sizeof(dirty) - 2, (double)s->dirty_rate);
	if (s->dirty_rate_known)
		g_strlcat(dirty, "/s", sizeof(dirty));
	else
		g_strlcpy(dirty, "-", sizeof(dirty)); /* not measured yet */
	human_bytes(bw, sizeof(bw), s->bandwidth);
	if (s->bandwidth > 0)
		g_snprintf(eta, sizeof(eta), "%.1f s",
			   (double)s->remaining_pages * 4096 / s->bandwidth);
	else
		g_strlcpy(eta, "-", sizeof(eta));
	fprintf(stderr,
		"\r\033[K%7.1f s  %-9s pass %-4" G_GUINT64_FORMAT
		"  remaining %-10s  dirty %s  bw %s/s  eta %s",
		s->t, phase, iteration, rem, dirty, bw, eta);
}

void sim_progress_done(const SimOptions *opt)
{
	if (on_terminal(opt))
		fprintf(stderr, "\r\033[K");
}

/* The destination's postcopy figures, if it sent them back. */
static void print_dest_figures(const SimReport *r)
{
	if (!r->dest_figures) {
		printf("destination:       no figures (it did not finish)\n");
		return;
	}
	printf("faults:            %" G_GUINT64_FORMAT
	       " (latency p50 %" G_GUINT64_FORMAT " us, p99 %" G_GUINT64_FORMAT
	       " us, max %" G_GUINT64_FORMAT " us)\n",
	       r->faults, r->fault_p50_us, r->fault_p99_us, r->fault_max_us);
	printf("blocked:           %" G_GUINT64_FORMAT
	       " ms (workload threads, summed)\n",
	       r->blocked_ms);
	printf("dest reads:        %" G_GUINT64_FORMAT "\n", r->dest_touches);
}

/* --role destination: what this side received, and how it ended. */
static void print_destination(const SimReport *r)
{
	char xfer[32];

	human_bytes(xfer, sizeof(xfer), (double)r->transferred_bytes);
	printf("Migration status: %s (destination)\n", r->status);
	printf("load time:         %" G_GUINT64_FORMAT " ms\n",
	       r->total_time_ms);
	printf("received:          %s (%" G_GUINT64_FORMAT
	       " normal pages, %" G_GUINT64_FORMAT " zero)\n",
	       xfer, r->normal_pages, r->duplicate_pages);
	if (r->mode_name[0] && strcmp(r->mode_name, "precopy") != 0) {
		printf("migration mode:    %s\n", r->mode_name);
		printf("placed:            %" G_GUINT64_FORMAT
		       " pages in postcopy\n",
		       r->placed_pages);
		printf("page requests:     %" G_GUINT64_FORMAT "\n",
		       r->postcopy_requests);
		printf("faults:            %" G_GUINT64_FORMAT
		       " (latency p50 %" G_GUINT64_FORMAT
		       " us, p99 %" G_GUINT64_FORMAT
		       " us, max %" G_GUINT64_FORMAT " us)\n",
		       r->faults, r->fault_p50_us, r->fault_p99_us,
		       r->fault_max_us);
		printf("dest reads:        %" G_GUINT64_FORMAT "\n",
		       r->dest_touches);
		printf("recoveries:        %" G_GUINT64_FORMAT "\n",
		       r->postcopy_recoveries);
	}
	if (r->error)
		printf("error:             %s\n", r->error);
}

void sim_report_print(const SimOptions *opt, const SimReport *r)
{
	char tot[32], xfer[32];

	if (opt->quiet)
		return;
	if (r->destination) {
		print_destination(r);
		return;
	}
	human_bytes(tot, sizeof(tot), (double)r->total_bytes);
	human_bytes(xfer, sizeof(xfer), (double)r->transferred_bytes);
	printf("Migration status: %s%s\n", r->status,
	       r->model ? " (model mode, virtual time)" : "");
	printf("total time:        %" G_GUINT64_FORMAT " ms\n",
	       r->total_time_ms);
	printf("downtime:          %" G_GUINT64_FORMAT " ms", r->downtime_ms);
	if (!r->model && r->downtime_ms)
		printf(" (pause %.1f, final sync %.1f, pages %.1f, device and "
		       "end %.1f ms)",
		       (double)r->downtime_parts_us[0] / 1000,
		       (double)r->downtime_parts_us[1] / 1000,
		       (double)r->downtime_parts_us[2] / 1000,
		       (double)r->downtime_parts_us[3] / 1000);
	printf("\n");
	printf("setup:             %" G_GUINT64_FORMAT " ms\n",
	       r->setup_time_ms);
	printf("transferred ram:   %s\n", xfer);
	printf("throughput:        %.2f mbps\n", r->mbps);
	printf("total ram:         %s\n", tot);
	printf("duplicate:         %" G_GUINT64_FORMAT " pages\n",
	       r->duplicate_pages);
	printf("normal:            %" G_GUINT64_FORMAT " pages\n",
	       r->normal_pages);
	printf("dirty sync count:  %" G_GUINT64_FORMAT "\n",
	       r->dirty_sync_count);
	printf("passes:            %" G_GUINT64_FORMAT "\n", r->iterations);
	printf("log clear calls:   %" G_GUINT64_FORMAT "\n",
	       r->log_clear_calls);
	printf("throttle:          %u %%\n", r->throttle_percent);
	if (!r->model)
		printf("guest writes:      %" G_GUINT64_FORMAT "\n",
		       r->workload_writes);
	if (!r->model)
		printf("cpu time:          source %.2f s, destination %.2f s "
		       "(whole processes, during the migration)\n",
		       (double)r->cpu_src_ms / 1000,
		       (double)r->cpu_dst_ms / 1000);
	if (r->mode_name[0] && strcmp(r->mode_name, "precopy") != 0) {
		printf("migration mode:    %s\n", r->mode_name);
		printf("postcopy time:     %" G_GUINT64_FORMAT " ms\n",
		       r->postcopy_time_ms);
		printf("discarded:         %" G_GUINT64_FORMAT " pages\n",
		       r->discard_pages);
		printf("page requests:     %" G_GUINT64_FORMAT
		       " (%" G_GUINT64_FORMAT " pages sent because asked)\n",
		       r->postcopy_requests, r->postcopy_urgent_pages);
		print_dest_figures(r);
		printf("recoveries:        %" G_GUINT64_FORMAT "\n",
		       r->postcopy_recoveries);
	}
	if (r->verify_detail)
		printf("verification:      %s: %s\n",
		       r->verified ? "OK" : "FAILED", r->verify_detail);
	if (r->kvm)
		sim_report_print_kvm(r);
	if (r->error)
		printf("error:             %s\n", r->error);
}

static void add_u64(JsonBuilder *b, const char *name, uint64_t v)
{
	json_builder_set_member_name(b, name);
	json_builder_add_int_value(b, (gint64)v);
}

static void add_double(JsonBuilder *b, const char *name, double v)
{
	json_builder_set_member_name(b, name);
	json_builder_add_double_value(b, v);
}

void sim_report_print_kvm(const SimReport *r)
{
	const MigramKvmLogStats *k = &r->kvm_log;

	printf("dirty log:         kvm %s: %" G_GUINT64_FORMAT
	       " syncs, %.2f ms each (max %.2f); %" G_GUINT64_FORMAT
	       " clear ioctls, %.2f ms in all; %" G_GUINT64_FORMAT
	       " ring entries\n",
	       r->dirty_log ? r->dirty_log : "?", k->syncs,
	       k->syncs ? (double)k->sync_ns / 1e6 / (double)k->syncs : 0,
	       (double)k->sync_ns_max / 1e6, k->clear_ioctls,
	       (double)k->clear_ns / 1e6, k->harvested);
	printf("guest rate:        %.0f page writes/s before, %.0f while "
	       "migrating",
	       r->guest_rate_before, r->guest_rate_during);
	if (r->guest_ws_pages)
		printf(" (%.1f passes/s over %" G_GUINT64_FORMAT " pages)",
		       r->guest_rate_during / (double)r->guest_ws_pages,
		       r->guest_ws_pages);
	printf("\n");
	if (r->guest_detail)
		printf("guest check:       %s: %s\n",
		       r->guest_verified ? "OK" : "FAILED", r->guest_detail);
}

/* The "guest" object of --workload kvm. */
static void add_kvm(JsonBuilder *b, const SimReport *r)
{
	const MigramKvmLogStats *k = &r->kvm_log;

	json_builder_set_member_name(b, "guest");
	json_builder_begin_object(b);
	json_builder_set_member_name(b, "kind");
	json_builder_add_string_value(b, "kvm");
	json_builder_set_member_name(b, "dirty_log");
	json_builder_add_string_value(b, r->dirty_log ? r->dirty_log : "");
	json_builder_set_member_name(b, "verified");
	json_builder_add_boolean_value(b, r->guest_verified);
	json_builder_set_member_name(b, "detail");
	json_builder_add_string_value(b,
				      r->guest_detail ? r->guest_detail : "");
	add_double(b, "rate_before", r->guest_rate_before);
	add_double(b, "rate_during", r->guest_rate_during);
	add_u64(b, "passes", r->guest_passes);
	add_u64(b, "ws_pages", r->guest_ws_pages);
	add_double(b, "passes_per_s_during",
		   r->guest_ws_pages
			   ? r->guest_rate_during / (double)r->guest_ws_pages
			   : 0);
	json_builder_set_member_name(b, "guest_image");
	json_builder_add_boolean_value(b, r->guest_image);
	add_u64(b, "log_syncs", k->syncs);
	add_u64(b, "log_sync_ns", k->sync_ns);
	add_u64(b, "log_sync_ns_max", k->sync_ns_max);
	add_u64(b, "log_clear_ioctls", k->clear_ioctls);
	add_u64(b, "log_clear_ns", k->clear_ns);
	add_u64(b, "log_clear_pages", k->clear_pages);
	add_u64(b, "log_harvests", k->harvests);
	add_u64(b, "log_harvested", k->harvested);
	add_u64(b, "log_harvest_ns", k->harvest_ns);
	add_u64(b, "log_ring_overflows", k->ring_overflows);
	json_builder_end_object(b);
}

bool sim_report_write_json(const SimOptions *opt, const SimReport *r,
			   GError **error)
{
	g_autoptr(JsonBuilder) b = json_builder_new();
	g_autoptr(JsonGenerator) gen = json_generator_new();
	g_autoptr(JsonNode) root = NULL;

	json_builder_begin_object(b);
	json_builder_set_member_name(b, "status");
	json_builder_add_string_value(b, r->status);
	json_builder_set_member_name(b, "mode");
	json_builder_add_string_value(b, r->model ? "model" : "real");
	add_u64(b, "total_bytes", r->total_bytes);
	add_u64(b, "transferred_bytes", r->transferred_bytes);
	add_u64(b, "normal_pages", r->normal_pages);
	add_u64(b, "cpu_src_ms", r->cpu_src_ms);
	add_u64(b, "downtime_pause_us", r->downtime_parts_us[0]);
	add_u64(b, "downtime_sync_us", r->downtime_parts_us[1]);
	add_u64(b, "downtime_pages_us", r->downtime_parts_us[2]);
	add_u64(b, "downtime_device_us", r->downtime_parts_us[3]);
	add_u64(b, "log_sync_us", r->log_sync_us);
	add_u64(b, "log_clear_us", r->log_clear_us);
	add_u64(b, "cpu_dst_ms", r->cpu_dst_ms);
	add_u64(b, "duplicate_pages", r->duplicate_pages);
	add_u64(b, "dirty_sync_count", r->dirty_sync_count);
	add_u64(b, "iterations", r->iterations);
	add_u64(b, "log_clear_calls", r->log_clear_calls);
	add_u64(b, "downtime_ms", r->downtime_ms);
	add_u64(b, "setup_time_ms", r->setup_time_ms);
	add_u64(b, "total_time_ms", r->total_time_ms);
	add_u64(b, "throttle_percent", r->throttle_percent);
	add_u64(b, "workload_writes", r->workload_writes);
	json_builder_set_member_name(b, "migration_mode");
	json_builder_add_string_value(b, r->mode_name[0] ? r->mode_name
							 : "precopy");
	add_u64(b, "postcopy_time_ms", r->postcopy_time_ms);
	add_u64(b, "discard_pages", r->discard_pages);
	add_u64(b, "postcopy_requests", r->postcopy_requests);
	add_u64(b, "postcopy_urgent_pages", r->postcopy_urgent_pages);
	add_u64(b, "postcopy_recoveries", r->postcopy_recoveries);
	add_u64(b, "faults", r->faults);
	add_u64(b, "fault_latency_p50_us", r->fault_p50_us);
	add_u64(b, "fault_latency_p99_us", r->fault_p99_us);
	add_u64(b, "fault_latency_max_us", r->fault_max_us);
	json_builder_set_member_name(b, "fault_latency_hist_us");
	json_builder_begin_array(b);
	for (int i = 0; i < 32; i++)
		json_builder_add_int_value(b, (gint64)r->fault_hist[i]);
	json_builder_end_array(b);
	add_u64(b, "blocked_ms", r->blocked_ms);
	add_u64(b, "dest_reads", r->dest_touches);
	json_builder_set_member_name(b, "mbps");
	json_builder_add_double_value(b, r->mbps);
	json_builder_set_member_name(b, "verified");
	json_builder_add_boolean_value(b, r->verified);
	json_builder_set_member_name(b, "verify_detail");
	json_builder_add_string_value(b,
				      r->verify_detail ? r->verify_detail : "");
	json_builder_set_member_name(b, "error");
	if (r->error)
		json_builder_add_string_value(b, r->error);
	else
		json_builder_add_null_value(b);
	json_builder_set_member_name(b, "pause_at_s");
	json_builder_add_double_value(b, r->pause_at);
	if (r->kvm)
		add_kvm(b, r);
	json_builder_set_member_name(b, "timeline");
	json_builder_begin_array(b);
	for (guint i = 0; i < r->timeline->len; i++) {
		const SimSample *s = &g_array_index(r->timeline, SimSample, i);

		json_builder_begin_object(b);
		json_builder_set_member_name(b, "t");
		json_builder_add_double_value(b, s->t);
		add_u64(b, "remaining_pages", s->remaining_pages);
		json_builder_set_member_name(b, "dirty_rate");
		if (s->dirty_rate_known)
			json_builder_add_int_value(b, (gint64)s->dirty_rate);
		else
			json_builder_add_null_value(b);
		json_builder_set_member_name(b, "bandwidth");
		json_builder_add_double_value(b, s->bandwidth);
		add_u64(b, "pages_sent", s->pages_sent);
		json_builder_set_member_name(b, "paused");
		json_builder_add_boolean_value(b, s->paused);
		add_u64(b, "pass", s->pass);
		json_builder_set_member_name(b, "postcopy");
		json_builder_add_boolean_value(b, s->postcopy);
		json_builder_end_object(b);
	}
	json_builder_end_array(b);
	json_builder_end_object(b);
	root = json_builder_get_root(b);
	json_generator_set_root(gen, root);
	json_generator_set_pretty(gen, TRUE);
	return json_generator_to_file(gen, opt->json_path, error);
}
