#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Gate no-mutable-globals: the library owns no writable static data.

House style (design/style.md 3.6): all state lives in a context object passed
as the first argument; only const tables may be static.  This gate runs `nm`
over every object in libmigram.a (all module objects, linked whole) and fails
on any writable data symbol, global or local:

    B b   .bss        (zero-initialised; includes function-local statics)
    D d   .data       (initialised)
    C     common      (tentative definitions)
    S s G g           small-data sections (other ABIs)

Read-only data (R r) and code (T t) are fine.  Thread-local variables also
land in b/d/B/D and count: per-thread state is still hidden global state.
A const table holding pointers (an ops table, an array of string pointers)
lands in .data.rel.ro, which nm also marks d; the dynamic linker makes it
read-only after relocation (RELRO), so a d symbol in .data.rel.ro* is a
const table and passes.  nm's sysv format says the section.

usage: no-mutable-globals.py LIBMIGRAM_A NM
"""
import re
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gatelib  # noqa: E402

GATE = "no-mutable-globals"

WRITABLE = set("BbDdCSsGg")

# (object file regex, symbol regex, why it may exist).  Keep this short;
# every entry needs its reason.
ALLOWED = [
    # G_DEFINE_QUARK(migram-error-quark, migram_error) in common/migram.c
    # caches the error-domain quark in a function-local `static GQuark q`
    # (gcc names it q.N, clang migram_error_quark.q).  It is written once,
    # idempotently, and GQuarks are process-global by GLib's design.
    (r"migram\.c\.o", r"(q\.\d+|migram_error_quark\.q)"),
    # Coverage counters, present only in -Db_coverage=true builds; they
    # belong to the instrumentation, not to the library.
    (r".*", r"__gcov\d*[._].*"),
]


def main():
    archive = sys.argv[1]
    nm = gatelib.need_tool(GATE, sys.argv[2])

    # -A: prefix each line with archive[member]; -P: "name type value size".
    out = subprocess.run([nm, "-A", "-P", "--defined-only", archive],
                         check=True, capture_output=True, text=True).stdout
    # (object, symbol) -> section, from nm's sysv format
    sysv = subprocess.run([nm, "-A", "--format=sysv", "--defined-only",
                           archive],
                          check=True, capture_output=True, text=True).stdout
    section = {}
    for line in sysv.splitlines():
        # "archive:member:symbol   |value|class|type|size|line|section"
        fields = line.split("|")
        if len(fields) < 7:
            continue
        head = fields[0].strip().rsplit(":", 2)
        if len(head) < 2:
            continue
        obj = head[-2].split("[")[-1].rstrip("]")
        section[(Path(obj).name, head[-1])] = fields[-1].strip()
    found = []
    allowed = []
    objects = set()
    for line in out.splitlines():
        m = re.match(r"(?:.*\[(?P<obj>[^\]]+)\]|(?P<file>[^:]+)):\s+"
                     r"(?P<name>\S+)\s+(?P<kind>\S)", line)
        if not m:
            continue
        obj = m.group("obj") or Path(m.group("file")).name
        objects.add(obj)
        name, kind = m.group("name"), m.group("kind")
        if kind not in WRITABLE:
            continue
        if section.get((obj, name), "").startswith(".data.rel.ro"):
            continue  # const table, read-only after relocation
        if any(re.fullmatch(o, obj) and re.fullmatch(s, name)
               for o, s in ALLOWED):
            allowed.append(f"{obj}: {name} ({kind})")
            continue
        found.append(f"{obj}: {name} ({kind})")

    if not objects:
        gatelib.fail(GATE, f"nm found no objects in {archive}")
    for a in allowed:
        print(f"  allowed: {a}")
    for f in found:
        print(f"  writable: {f}")
    if found:
        gatelib.fail(GATE, f"{len(found)} writable data symbol(s): "
                           + ", ".join(found)
                           + " (move the state into a context object, "
                           "or make it const)")
    gatelib.passed(GATE, f"{len(objects)} objects, no writable data "
                         f"({len(allowed)} allowed)")


if __name__ == "__main__":
    main()
