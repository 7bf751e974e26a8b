#!/usr/bin/env bash
# Build and run an embedder's program against an installed migram, using
# nothing but what `pkg-config --cflags --libs migram` prints.
#
#   scripts/embed-check.sh [BUILD]      (make embed-check; BUILD defaults to build)
#
# 1. meson install the build into BUILD/stage (--destdir); the .pc files are
#    relocatable (pkgconfig.relocatable), so the staged one points into the
#    stage;
# 2. compile tests/embed/embed-check.c with `cc` and the staged .pc's flags
#    only: a library or include directory the .pc file forgets fails here;
# 3. run it with the staged library (checked with ldd): it migrates a RAM
#    block over a socketpair and compares the destination with the source.
set -euo pipefail
cd "$(dirname "$0")/.."

build=$(realpath "${1:-build}")
stage=$build/stage
cc=${CC:-cc}

say() { printf 'embed-check: %s\n' "$*"; }

[ -f "$build/build.ninja" ] || { say "no meson build in $build (run make build)"; exit 1; }

# Build directories set up before the option became the default.
if ! meson introspect "$build" --buildoptions |
	python3 -c 'import json, sys; sys.exit(0 if any(o["name"] == "pkgconfig.relocatable" and o["value"] for o in json.load(sys.stdin)) else 1)'; then
	say "setting pkgconfig.relocatable=true in $build"
	meson configure "$build" -Dpkgconfig.relocatable=true >/dev/null
fi

rm -rf "$stage"
meson install -C "$build" --destdir "$stage" --quiet
pc=$(find "$stage" -name migram.pc -path '*/pkgconfig/*' | head -1)
[ -n "$pc" ] || { say "no migram.pc under $stage"; exit 1; }

# Only the stage's .pc directory: no uninstalled or system migram.pc.
export PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --cflags --libs migram)
libdir=$(pkg-config --variable=libdir migram)
say "pkg-config --cflags --libs migram: $flags"

exe=$stage/embed-check
# shellcheck disable=SC2086 # the flags are words
"$cc" tests/embed/embed-check.c -o "$exe" $flags

lib=$(LD_LIBRARY_PATH=$libdir ldd "$exe" | awk '/libmigram\.so/ { print $3 }')
case "$(realpath "${lib:-/nonexistent}" 2>/dev/null)" in
"$stage"/*) ;;
*) say "$exe resolves libmigram to '${lib:-nothing}', not the stage"; exit 1 ;;
esac
LD_LIBRARY_PATH=$libdir "$exe"
