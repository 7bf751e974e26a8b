#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Gate static-analysis-cppcheck: cppcheck finds nothing in the library.

Runs cppcheck over every library .c file (globbed now; tests, tools, bench
and sim are not library code) with the warning, style, performance and
portability checks, GLib/POSIX/GNU library knowledge, and each module's own
include path.  Any finding fails the gate.  Suppress a wrong one only inline,
on the line before it, with the reason:

    /* cppcheck-suppress <id> ; why */

cppcheck does get liburcu's headers (with the target's predefined macros
taken from the C compiler), so it understands cds_list_for_each_entry() and
friends instead of stopping at an "unknown macro"; GLib is described by its
library config instead, since parsing all of glib.h is slow and noisy.
cppcheck-glib.cfg (next to this script) adds the GLib macros gtk.cfg lacks;
without it cppcheck silently skips the code after G_DEFINE_QUARK().

Not enabled: unusedFunction (every exported function is "unused" inside the
library) and missingIncludeSystem (cppcheck is not given the system include
path; its library configs describe GLib and libc instead).

usage: static-analysis-cppcheck.py SRCROOT CC CPPCHECK PKG_CONFIG
"""
import re
import shlex
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gatelib  # noqa: E402

GATE = "static-analysis-cppcheck"

# Predefined macros liburcu's headers select the platform with.
PREDEFINED = re.compile(r"__(linux|unix|gnu_linux|x86_64|i386|aarch64|arm|"
                        r"powerpc64|powerpc|s390x|riscv|GNUC|GNUC_MINOR|"
                        r"SIZEOF_LONG|SIZEOF_POINTER|CHAR_BIT|BYTE_ORDER|"
                        r"ORDER_LITTLE_ENDIAN|ORDER_BIG_ENDIAN|LP64)__?$")


def predefines(cc):
    out = subprocess.run(cc + ["-dM", "-E", "-x", "c", "/dev/null"],
                         check=True, capture_output=True, text=True).stdout
    flags = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and PREDEFINED.fullmatch(parts[1]):
            value = parts[2] if len(parts) > 2 else "1"
            flags.append(f"-D{parts[1]}={value}")
    return flags


def main():
    root = Path(sys.argv[1]).resolve()
    cc = shlex.split(sys.argv[2])
    gatelib.need_tool(GATE, cc[0])
    cppcheck = gatelib.need_tool(GATE, sys.argv[3])
    pkg_config = gatelib.need_tool(GATE, sys.argv[4])
    files = gatelib.library_sources(root)
    if not files:
        gatelib.fail(GATE, "no library .c files found")

    includes = ["-I", str(root / "include"), "-I", str(root / "common")]
    for d in gatelib.library_dirs(root):
        includes += ["-I", str(d)]
    urcu = gatelib.pkg_cflags(GATE, pkg_config, "liburcu-memb")
    urcu_dir = subprocess.run([pkg_config, "--variable=includedir",
                               "liburcu-memb"], capture_output=True,
                              text=True).stdout.strip()
    for d in [a[2:] for a in urcu if a.startswith("-I")] + [urcu_dir]:
        if d and d not in includes:
            includes += ["-I", d]
    cmd = [cppcheck, "--quiet", "--std=c11", "--language=c",
           "--enable=warning,style,performance,portability",
           "--library=gnu", "--library=posix", "--library=gtk",
           f"--library={Path(__file__).resolve().parent / 'cppcheck-glib.cfg'}",
           "--inline-suppr", "--error-exitcode=1",
           "--suppress=missingIncludeSystem",
           "-D_GNU_SOURCE", *predefines(cc),
           "--template={file}:{line}: {severity}: {message} [{id}]",
           *includes, *[str(f) for f in files]]
    r = subprocess.run(cmd, capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0 or out:
        print(out)
        lines = [ln for ln in out.splitlines() if ": " in ln and "[" in ln]
        gatelib.fail(GATE, f"{len(lines)} finding(s) (exit {r.returncode})"
                           + (": " + lines[0] if lines else ""))
    gatelib.passed(GATE, f"{len(files)} library files, no findings")


if __name__ == "__main__":
    main()
