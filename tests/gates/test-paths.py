#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Gate test-paths: every GLib test case is named /<module>/<file>/<case>.

The convention (issue 18, docs/before-you-commit.md): a case registered by
tests/<module>/test-<file>.c has a path that starts with /<module>/<file>/,
for example tests/migration/test-multifd.c registers
/migration/multifd/transfer/4.  Then `-p /<module>/<file>` runs one program's
cases, a failure in a meson log names the program, and two programs never
register the same path.

Two checks, so that neither a path built at run time nor a case registered
only on some machines (KVM, uffd-wp, huge pages) slips through:

1. Run each built test program with `-l` (GLib lists its cases and runs
   none) and check every listed path.
2. Read each tests/<module>/test-*.c and check every string literal that is
   the first argument of g_test_add*(), of a local add()/ADD() helper or
   macro, or that starts a path built with g_strdup_printf()/snprintf() and
   then registered.  Only literals that look like a test path are checked
   there (they start with "/" and the call is one of those above).

Every tests/<module>/test-*.c must also be built (appear in tests/meson.build),
else its cases would escape check 1.

usage: test-paths.py SRCROOT TEST_EXE...
"""
import re
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gatelib  # noqa: E402

GATE = "test-paths"

# First string literal of a registration call.  add()/ADD() are the local
# helpers and macros several programs wrap g_test_add() in.
REGISTER = re.compile(
    r'\b(?:g_test_add\w*|add\w*|ADD\w*)\s*\(\s*"(/[^"]*)"')
# A path built at run time before it is registered.
PRINTF = re.compile(
    r'\b(?:g_strdup_printf|snprintf|g_snprintf)\s*\(\s*'
    r'(?:[A-Za-z_][\w.\->\[\]]*\s*,\s*[^,]+,\s*)?"(/[^"%]*)')


def program_sources(root):
    """{program name: (module, source path)} for tests/<module>/test-*.c."""
    out = {}
    for src in sorted((root / "tests").glob("*/test-*.c")):
        out[src.stem] = (src.parent.name, src)
    return out


def prefix_of(module, name):
    return f"/{module}/{name[len('test-'):]}/"


def check_listing(exe, prefix, errors):
    try:
        res = subprocess.run([exe, "-l"], capture_output=True, text=True,
                             timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        errors.append(f"{exe}: cannot run `-l`: {e}")
        return 0
    if res.returncode != 0:
        errors.append(f"{exe} -l exited with {res.returncode}: "
                      f"{res.stderr.strip()[:200]}")
        return 0
    paths = [ln.strip() for ln in res.stdout.splitlines()
             if ln.startswith("/")]
    if not paths:
        errors.append(f"{exe} -l listed no test cases")
    for p in paths:
        if not p.startswith(prefix):
            errors.append(f"{Path(exe).name} registers {p}; "
                          f"it must start with {prefix}")
    return len(paths)


def check_source(src, prefix, root, errors):
    text = src.read_text(encoding="utf-8", errors="replace")
    for rx in (REGISTER, PRINTF):
        for m in rx.finditer(text):
            lit = m.group(1)
            if rx is PRINTF and not lit.startswith(prefix):
                # g_strdup_printf("/proc/self/...") and the like: only a
                # literal that starts like a test path of this tree counts.
                first = lit.split("/")[1] if "/" in lit[1:] else ""
                if first not in MODULES:
                    continue
            if not lit.startswith(prefix):
                line = text.count("\n", 0, m.start()) + 1
                errors.append(f"{gatelib.rel(src, root)}:{line}: path "
                              f'"{lit}" must start with {prefix}')


MODULES = set()


def main():
    if len(sys.argv) < 2:
        gatelib.fail(GATE, "usage: test-paths.py SRCROOT TEST_EXE...")
    root = Path(sys.argv[1])
    exes = {Path(e).name: e for e in sys.argv[2:]}
    sources = program_sources(root)
    if not sources:
        gatelib.fail(GATE, "no tests/<module>/test-*.c found")
    MODULES.update(module for module, _ in sources.values())

    errors = []
    cases = 0
    for name, (module, src) in sources.items():
        prefix = prefix_of(module, name)
        check_source(src, prefix, root, errors)
        if name not in exes:
            errors.append(f"{gatelib.rel(src, root)} is not built: add "
                          f"{name} to test_table in tests/meson.build")
            continue
        cases += check_listing(exes[name], prefix, errors)
    for name in exes:
        if name not in sources:
            errors.append(f"{name} has no tests/<module>/{name}.c; "
                          f"the gate cannot tell its module")

    for e in errors:
        print(f"  error: {e}")
    if errors:
        gatelib.fail(GATE, f"{len(errors)} test path(s) break "
                           "/<module>/<file>/<case>")
    gatelib.passed(GATE, f"{cases} cases of {len(sources)} test programs, "
                         "all under /<module>/<file>/")


if __name__ == "__main__":
    main()
