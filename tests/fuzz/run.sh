#!/usr/bin/env bash
# Run the receiver fuzz target for a bounded time, in-process (one job);
# exit non-zero when it finds a crash, a hang (-timeout), a leak or an
# out-of-memory.
#
#   tests/fuzz/run.sh [SECONDS]       default 60
#
# New interesting inputs go to build-fuzz/work/ (the seeds in
# build-fuzz/corpus/ stay as make-corpus wrote them); findings go to
# build-fuzz/artifacts/ as crash-*, timeout-*, leak-*, oom-*.
# Extra libFuzzer flags: FUZZ_ARGS="-seed=1 -only_ascii=0".
#
# -malloc_limit_mb=512: a single allocation over 512 MiB is reported as an
# out-of-memory.  Inputs are at most about 128 KiB, and no size in a
# stream may drive an allocation (include/migram/receiver.h), so anything
# that large is a finding, even if this machine could satisfy it.
#
# ASan's quarantine is cut from 256 to 64 MiB: each input frees the
# channel's 320 KiB of buffers, and a full quarantine halves the rate.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${BUILD_FUZZ:-build-fuzz}
secs=${1:-60}
mkdir -p "$out/work" "$out/artifacts"

# shellcheck disable=SC2086
ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:quarantine_size_mb=64} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
"$out/fuzz-receiver" "$out/work" "$out/corpus" \
	-dict=tests/fuzz/stream.dict \
	-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
	-print_final_stats=1 \
	-artifact_prefix="$out/artifacts/" ${FUZZ_ARGS:-}
