#!/usr/bin/env bash
# Run one fuzz target for a bounded time, in-process (one job); exit
# non-zero when it finds a crash, a hang (-timeout), a leak or an
# out-of-memory.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET]    default 60, receiver
#
# TARGET is receiver (fuzz-receiver: the stream reader and the receiver)
# or return-path (fuzz-return-path: the source's return-path reader) or
# verify (fuzz-verify: the source's half of verification, verify.h) or
# handshake (fuzz-handshake: the destination's handshake, handshake.h)
# or snapshot (fuzz-snapshot: the snapshot-file parser) or
# multifd (fuzz-multifd: a data channel's packets, tests/fuzz/fuzz-multifd.c)
# or checkpoint (fuzz-checkpoint: the standby's checkpoint reader).
#
# New interesting inputs go to build-fuzz/work/ (receiver) or
# build-fuzz/work-rp/ (return path); the seeds in build-fuzz/corpus/ and
# corpus-rp/ stay as make-corpus wrote them.  Findings go to
# build-fuzz/artifacts/ as crash-*, timeout-*, leak-*, oom-* (return path:
# rp-crash-* and so on).
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
target=${2:-receiver}
case $target in
receiver)
	bin=fuzz-receiver work=work corpus=corpus prefix=
	dict=tests/fuzz/stream.dict ;;
return-path)
	bin=fuzz-return-path work=work-rp corpus=corpus-rp prefix=rp-
	dict=tests/fuzz/return-path.dict ;;
multifd)
	bin=fuzz-multifd work=work-multifd corpus=corpus-multifd
	prefix=multifd- dict=tests/fuzz/multifd.dict ;;
snapshot)
	bin=fuzz-snapshot work=work-snap corpus=corpus-snap prefix=snap-
	dict=tests/fuzz/snapshot.dict ;;
verify)
	bin=fuzz-verify work=work-verify corpus=corpus-verify prefix=verify-
	dict=tests/fuzz/verify.dict ;;
checkpoint)
	bin=fuzz-checkpoint work=work-ckpt corpus=corpus-ckpt prefix=ckpt-
	dict=tests/fuzz/checkpoint.dict ;;
handshake)
	bin=fuzz-handshake work=work-hs corpus=corpus-hs prefix=hs-
	dict=tests/fuzz/handshake.dict ;;
*)
	echo "fuzz: unknown target '$target' (receiver, return-path, verify, handshake, snapshot, multifd, checkpoint)" >&2
	exit 2 ;;
esac
mkdir -p "$out/$work" "$out/artifacts"

# shellcheck disable=SC2086
ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:quarantine_size_mb=64} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
"$out/$bin" "$out/$work" "$out/$corpus" \
	-dict="$dict" \
	-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
	-print_final_stats=1 \
	-artifact_prefix="$out/artifacts/$prefix" ${FUZZ_ARGS:-}
