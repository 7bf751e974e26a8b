#!/usr/bin/env bash
# Install the Debian packages migram's build and tests need, if missing.
#
# As root: apt-get installs what is missing (non-interactively).
# Otherwise: prints the exact apt-get line to run and exits 1.
set -euo pipefail

packages=(
	# build
	meson ninja-build pkg-config gcc g++ libglib2.0-dev liburcu-dev libzstd-dev
	# gates: static analysis, formatting, clang -Wdocumentation, nm
	clang clang-tidy clang-format cppcheck binutils
	# sanitizer and fuzzer runtimes for clang
	libclang-rt-14-dev
	# tools: JSON output and vmdesc parsing in migram-stream, sim charts
	libjson-glib-dev libcairo2-dev
	# QEMU 7.2 for the interoperability tests
	qemu-system-x86
	# python3 for the CI summary; valgrind for make valgrind
	python3 valgrind
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
		grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "migram needs these Debian packages; run as root:" >&2
	echo "  apt-get install -y ${missing[*]}" >&2
	exit 1
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
