/* SPDX-License-Identifier: MIT */
/**
 * @file postcopy-stats.h
 * MigramPostcopyStats: what postcopy did on the destination.  Filled by
 * migram_receiver_get_postcopy_stats() (receiver.h); a plain struct, no
 * functions of its own.
 */
#ifndef MIGRAM_POSTCOPY_STATS_H
#define MIGRAM_POSTCOPY_STATS_H

#include <stdbool.h>
#include <stdint.h>

/** Buckets of MigramPostcopyStats.latency_hist (powers of two of us). */
#define MIGRAM_LATENCY_BUCKETS 32

/** Postcopy on the destination (migram_receiver_get_postcopy_stats()). */
typedef struct {
	bool active;              /**< LISTEN was reached in the last load */
	bool running;             /**< RUN was reached */
	bool paused;              /**< waiting for migram_receiver_recover() */
	uint64_t faults;          /**< missing-page faults read */
	uint64_t requests;        /**< page requests sent */
	uint64_t placed_pages;    /**< pages placed with UFFDIO_COPY/ZEROPAGE */
	uint64_t pushed_pages;    /**< of which never requested */
	uint64_t duplicate_pages; /**< arrived already received; dropped */
	uint64_t discarded_pages; /**< dropped by the discard list */
	uint64_t preempt_pages;   /**< placed from the preempt channel */
	uint64_t recoveries;      /**< completed recoveries */
	/**
	 * Fault to placement, per fault: the median, from latency_hist (the
	 * upper end of the bucket holding it, capped at latency_max_us, so at
	 * most twice the exact value).
	 */
	uint64_t latency_p50_us;
	uint64_t latency_p99_us; /**< the 99th percentile, the same way */
	uint64_t latency_max_us; /**< the longest, exact */
	uint64_t blocked_us;     /**< sum over faults: threads' blocked time */
	/**
	 * Faults by latency: bucket i counts [2^i, 2^(i+1)) us (0 us in
	 * bucket 0, 2^31 us and more in the last).  Fixed memory however
	 * many faults; the quantiles above are read from it.
	 */
	uint64_t latency_hist[MIGRAM_LATENCY_BUCKETS];
} MigramPostcopyStats;

#endif /* MIGRAM_POSTCOPY_STATS_H */
