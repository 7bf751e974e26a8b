#!/usr/bin/env bash
# Build and run an embedder's program against an installed migram, using
# nothing but what `pkg-config --cflags --libs migram` prints.
#
#   scripts/embed-check.sh [BUILD [PROGRAM.c ...]]
#                                       (make embed-check; BUILD defaults to
#                                       build; the meson suite `examples`
#                                       passes examples/vmm.c)
#
# 1. meson install the build into BUILD/stage (--destdir); the .pc files are
#    relocatable (pkgconfig.relocatable), so the staged one points into the
#    stage;
# 2. compile tests/embed/embed-check.c with `cc` and the staged .pc's flags
#    only: a library or include directory the .pc file forgets fails here;
# 3. run it with the staged library (checked with ldd): it migrates a RAM
#    block over a socketpair and compares the destination with the source;
# 4. build and run each further PROGRAM.c the same way (examples/vmm.c: a
#    KVM VMM migrating between two processes); a program exiting 77 is
#    skipped (no /dev/kvm), and the script then exits 77 too.
set -euo pipefail
cd "$(dirname "$0")/.."

build=$(realpath "${1:-build}")
shift || true
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

# Further programs (the examples), built and run the same way.
skipped=0
for src in "$@"; do
	name=$(basename "$src" .c)
	exe=$stage/$name
	say "building $src"
	# shellcheck disable=SC2086 # the flags are words
	"$cc" -std=c11 -Wall -Wextra -Werror "$src" -o "$exe" $flags
	rc=0
	LD_LIBRARY_PATH=$libdir "$exe" || rc=$?
	case $rc in
	0) ;;
	77) say "$name skipped"; skipped=1 ;;
	*) say "$name failed (exit $rc)"; exit 1 ;;
	esac
done
[ "$skipped" = 0 ] || exit 77
