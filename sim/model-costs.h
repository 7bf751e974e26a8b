/* SPDX-License-Identifier: MIT */
/*
 * Model mode's cost parameters, in seconds and bytes/s, calibrated on the
 * development machine (2 cores) by scripts/calibrate-model.sh from short
 * real-mode runs over a socketpair; docs/simulator-model.md says how and
 * what it measured.  Re-run the script on another machine and pass its
 * figures through the MIGRAM_MODEL_COSTS environment variable
 * ("send_zero_us,send_normal_us,place_zero_us,place_first_us,
 * place_again_us,link_MBps" and optionally ",place_pc_normal_us,
 * place_pc_zero_us,discard_us"),
 * or change the defaults here.
 */
#ifndef MIGRAM_SIM_MODEL_COSTS_H
#define MIGRAM_SIM_MODEL_COSTS_H

#include <stdio.h>
#include <stdlib.h>

#include "sim.h"

typedef struct {
	double send_zero_s;   /* sender CPU: zero check + ZERO record */
	double send_normal_s; /* sender CPU: zero check + PAGE record */
	double place_zero_s;  /* destination: one zero page */
	double place_first_s; /* destination: a page's first copy */
	double place_again_s; /* destination: a page it already holds */
	double pause_s;       /* stopping the guest */
	double sync_page_s;   /* sender: one page of a log sync */
	double clear_call_s;  /* sender: one chunk clear */
	double link_bw;       /* the link's raw rate, bytes/s */
	double buffer_bytes;  /* what the sender may run ahead of the link */
	double latency_s;     /* one round trip, at the end */
	/* postcopy (model-dest.c) */
	double touch_s; /* a destination reader's read: 20 us sleep + slack */
	double fault_s; /* a fault to its request at the source, no wire */
	double place_pc_normal_s; /* placing a page after the switch (uffd) */
	double place_pc_zero_s;   /* placing a zero page after the switch */
	double discard_s;         /* dropping a held page the switch discards */
} ModelCosts;

/* Calibrated on the development machine (docs/simulator-model.md). */
#define MODEL_SEND_ZERO_US 0.11
#define MODEL_SEND_NORMAL_US 0.95
#define MODEL_PLACE_ZERO_US 0.30
#define MODEL_PLACE_FIRST_US 5.5
#define MODEL_PLACE_AGAIN_US 2.4
#define MODEL_PAUSE_US 400.0
#define MODEL_LINK_BPS 4.0e9      /* socketpair copy, bytes/s */
#define MODEL_SYNC_PAGE_US 5.6e-5 /* 15 ms per TiB (docs/performance.md) */
#define MODEL_CLEAR_CALL_US 2.0
#define MODEL_BUFFER_BYTES (416.0 * 1024) /* both ends' socket buffers */
#define MODEL_TOUCH_US 75.0 /* g_usleep(20): 20 us + 50 us timer slack */
#define MODEL_FAULT_US 50.0 /* uffd read, request, return-path wake-up */
#define MODEL_PLACE_PC_NORMAL_US 5.5
#define MODEL_PLACE_PC_ZERO_US 4.5
#define MODEL_DISCARD_US 1.2
#define MODEL_TCP_BUFFER_BYTES (4.0 * 1024 * 1024) /* tcp_wmem's maximum */

static inline void model_costs_init(ModelCosts *c, const SimOptions *opt)
{
	const char *env = getenv("MIGRAM_MODEL_COSTS");
	double sz = MODEL_SEND_ZERO_US, sn = MODEL_SEND_NORMAL_US,
	       pz = MODEL_PLACE_ZERO_US, pf = MODEL_PLACE_FIRST_US,
	       pa = MODEL_PLACE_AGAIN_US, link = MODEL_LINK_BPS / 1e6,
	       pcn = MODEL_PLACE_PC_NORMAL_US, pcz = MODEL_PLACE_PC_ZERO_US,
	       dis = MODEL_DISCARD_US;
	int got = env ? sscanf(env, "%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf", &sz,
			       &sn, &pz, &pf, &pa, &link, &pcn, &pcz, &dis)
		      : 0;

	if (got != 9) { /* the postcopy figures are optional */
		pcn = MODEL_PLACE_PC_NORMAL_US;
		pcz = MODEL_PLACE_PC_ZERO_US;
		dis = MODEL_DISCARD_US;
	}
	if (env && got != 6 && got != 9) {
		sz = MODEL_SEND_ZERO_US;
		sn = MODEL_SEND_NORMAL_US;
		pz = MODEL_PLACE_ZERO_US;
		pf = MODEL_PLACE_FIRST_US;
		pa = MODEL_PLACE_AGAIN_US;
		link = MODEL_LINK_BPS / 1e6;
	}
	*c = (ModelCosts){
		.send_zero_s = sz / 1e6,
		.send_normal_s = sn / 1e6,
		.place_zero_s = pz / 1e6,
		.place_first_s = pf / 1e6,
		.place_again_s = pa / 1e6,
		.pause_s = MODEL_PAUSE_US / 1e6,
		.sync_page_s = MODEL_SYNC_PAGE_US / 1e6,
		.clear_call_s = MODEL_CLEAR_CALL_US / 1e6,
		.link_bw = opt->link_bandwidth ? (double)opt->link_bandwidth
					       : link * 1e6,
		.buffer_bytes = MODEL_BUFFER_BYTES,
		.latency_s = (double)opt->link_latency_us / 1e6,
		.touch_s = MODEL_TOUCH_US / 1e6,
		.fault_s = MODEL_FAULT_US / 1e6,
		.place_pc_normal_s = pcn / 1e6,
		.place_pc_zero_s = pcz / 1e6,
		.discard_s = dis / 1e6,
	};
	/* a stated link is a remote destination: its placement is not
	 * this machine's, only the wire counts, and the sender writes to a
	 * TCP socket that autotunes its buffer up to 4 MiB (tcp_wmem) */
	if (opt->link_bandwidth) {
		c->place_zero_s = c->place_first_s = c->place_again_s = 0;
		c->place_pc_normal_s = c->place_pc_zero_s = c->discard_s = 0;
		c->buffer_bytes = MODEL_TCP_BUFFER_BYTES;
	}
}

#endif /* MIGRAM_SIM_MODEL_COSTS_H */
