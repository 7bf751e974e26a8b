#!/usr/bin/env bash
# Build the fuzz targets with clang + libFuzzer + ASan + UBSan, and their
# seed corpora, into build-fuzz/ (meson's gcc build in build/ is not
# touched).  See docs/fuzzing.md.
#
#   tests/fuzz/build.sh            build-fuzz/fuzz-receiver,
#                                  fuzz-return-path, fuzz-verify,
#                                  fuzz-handshake, fuzz-multifd, make-corpus,
#                                  corpus/, corpus-rp/, corpus-verify/,
#                                  corpus-hs/, corpus-multifd/ (regenerated every time)
#   BUILD_FUZZ=<dir> CC=<clang>    other output directory / compiler
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${BUILD_FUZZ:-build-fuzz}
cc=${CC:-}
if [ -z "$cc" ]; then
	cc=$(command -v clang-14 || command -v clang || true)
fi
if [ -z "$cc" ]; then
	echo "fuzz: clang not found; run scripts/setup.sh (make setup)" >&2
	exit 1
fi
mkdir -p "$out"

# The library's sources, as meson builds them, and the shared fuzz code.
lib_src=(common/*.c bitmap/*.c ramblock/*.c migration/*.c)
common=(-std=c11 -g -Wall -Wextra
	-D_GNU_SOURCE -DG_LOG_DOMAIN=\"migram\"
	-DGLIB_VERSION_MIN_REQUIRED=GLIB_VERSION_2_66
	-Iinclude -Icommon -Ibitmap -Iramblock -Imigration -Itests/fuzz)
# shellcheck disable=SC2207
pkg=($(pkg-config --cflags --libs glib-2.0 liburcu-memb libzstd))

echo "fuzz: $cc -> $out/fuzz-receiver"
"$cc" "${common[@]}" -O1 \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer \
	"${lib_src[@]}" tests/fuzz/fuzz-harness.c tests/fuzz/fuzz-receiver.c \
	"${pkg[@]}" -pthread -lm -o "$out/fuzz-receiver"

echo "fuzz: $cc -> $out/fuzz-return-path"
"$cc" "${common[@]}" -O1 \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer \
	"${lib_src[@]}" tests/fuzz/fuzz-harness.c tests/fuzz/rp-harness.c \
	tests/fuzz/fuzz-return-path.c \
	"${pkg[@]}" -pthread -lm -o "$out/fuzz-return-path"

echo "fuzz: $cc -> $out/fuzz-verify"
"$cc" "${common[@]}" -O1 \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer \
	"${lib_src[@]}" tests/fuzz/verify-harness.c tests/fuzz/fuzz-verify.c \
	"${pkg[@]}" -pthread -lm -o "$out/fuzz-verify"

echo "fuzz: $cc -> $out/fuzz-handshake"
"$cc" "${common[@]}" -O1 \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer \
	"${lib_src[@]}" tests/fuzz/handshake-harness.c \
	tests/fuzz/fuzz-handshake.c \
	"${pkg[@]}" -pthread -lm -o "$out/fuzz-handshake"

echo "fuzz: $cc -> $out/fuzz-multifd"
"$cc" "${common[@]}" -O1 \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer \
	"${lib_src[@]}" tests/fuzz/fuzz-multifd.c \
	"${pkg[@]}" -pthread -lm -o "$out/fuzz-multifd"
"$cc" "${common[@]}" -O1 -DMULTIFD_CORPUS=1 \
	"${lib_src[@]}" tests/fuzz/fuzz-multifd.c \
	"${pkg[@]}" -pthread -lm -o "$out/make-corpus-multifd"

echo "fuzz: $cc -> $out/make-corpus"
"$cc" "${common[@]}" -O1 \
	"${lib_src[@]}" tests/fuzz/stream-samples.c tests/fuzz/rp-samples.c \
	tests/fuzz/verify-harness.c tests/fuzz/handshake-harness.c \
	tests/fuzz/make-corpus.c \
	"${pkg[@]}" -pthread -lm -o "$out/make-corpus"

rm -rf "$out/corpus" "$out/corpus-rp" "$out/corpus-verify" "$out/corpus-hs" \
	"$out/corpus-multifd"
"$out/make-corpus-multifd" "$out/corpus-multifd"
"$out/make-corpus" "$out/corpus" "$out/corpus-rp" "$out/corpus-verify" \
	"$out/corpus-hs"

echo "fuzz: $cc -> $out/fuzz-snapshot"
"$cc" "${common[@]}" -Isnapshot -O1 \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer \
	"${lib_src[@]}" snapshot/*.c tests/fuzz/snap-harness.c \
	tests/fuzz/fuzz-snapshot.c \
	"${pkg[@]}" -pthread -lm -o "$out/fuzz-snapshot"
"$cc" "${common[@]}" -Isnapshot -O1 \
	"${lib_src[@]}" snapshot/*.c tests/fuzz/snap-harness.c \
	tests/fuzz/make-snap-corpus.c \
	"${pkg[@]}" -pthread -lm -o "$out/make-snap-corpus"
rm -rf "$out/corpus-snap"
"$out/make-snap-corpus" "$out/corpus-snap"

echo "fuzz: $cc -> $out/fuzz-checkpoint"
"$cc" "${common[@]}" -Isnapshot -O1 \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer \
	"${lib_src[@]}" snapshot/*.c tests/fuzz/ckpt-harness.c \
	tests/fuzz/fuzz-checkpoint.c \
	"${pkg[@]}" -pthread -lm -o "$out/fuzz-checkpoint"
"$cc" "${common[@]}" -Isnapshot -O1 -DCKPT_CORPUS=1 \
	"${lib_src[@]}" snapshot/*.c tests/fuzz/ckpt-harness.c \
	tests/fuzz/fuzz-checkpoint.c \
	"${pkg[@]}" -pthread -lm -o "$out/make-ckpt-corpus"
rm -rf "$out/corpus-ckpt"
"$out/make-ckpt-corpus" "$out/corpus-ckpt"
