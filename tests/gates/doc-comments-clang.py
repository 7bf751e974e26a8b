#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Gate doc-comments-clang: doc comments agree with the code they document.

clang's -Wdocumentation checks Doxygen blocks against declarations: an
@param naming no parameter (a renamed or removed argument, QEMU's stale
`@again`), @return on a void function, a malformed command.  This gate runs

    clang -fsyntax-only -Wdocumentation -Werror=documentation

on every public header (include/migram/*.h, each as its own translation
unit) and every library .c file (with -D_GNU_SOURCE -Icommon -I<module>),
all globbed when the gate runs.  Whatever compiler the build uses, this gate
always uses clang.

usage: doc-comments-clang.py SRCROOT CLANG PKG_CONFIG
"""
import shlex
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gatelib  # noqa: E402

GATE = "doc-comments-clang"
FLAGS = ["-fsyntax-only", "-std=c11", "-Wdocumentation",
         "-Werror=documentation"]


def main():
    root = Path(sys.argv[1])
    clang = gatelib.need_tool(GATE, sys.argv[2])
    pkg_config = gatelib.need_tool(GATE, sys.argv[3])
    # Dependencies are system headers: their comments are not ours to fix
    # (GLib's /*< private >*/ markers trip -Wdocumentation).
    deps = [f"-isystem{a[2:]}" if a.startswith("-I") else a
            for a in gatelib.pkg_cflags(GATE, pkg_config, "glib-2.0",
                                        "liburcu-memb")]

    jobs = []
    for h in gatelib.public_headers(root):
        tu = f"#include <migram/{h.name}>\n"
        jobs.append((gatelib.rel(h, root), ["-x", "c", "-"], tu))
    for c in gatelib.library_sources(root):
        module = c.parent
        args = ["-D_GNU_SOURCE", "-I", str(root / "common"), "-I",
                str(module), str(c)]
        jobs.append((gatelib.rel(c, root), args, None))
    if not jobs:
        gatelib.fail(GATE, "nothing to check")

    failures = []
    for name, args, stdin in jobs:
        cmd = [clang, *FLAGS, "-I", str(root / "include"), *deps, *args]
        r = subprocess.run(cmd, input=stdin or "", capture_output=True,
                           text=True)
        if r.returncode != 0:
            failures.append(name)
            print(f"--- {name}: {shlex.join(cmd)}")
            print(r.stderr.rstrip())
    if failures:
        gatelib.fail(GATE, "documentation errors in " + ", ".join(failures))
    gatelib.passed(GATE, f"{len(jobs)} files clean under clang "
                         "-Wdocumentation")


if __name__ == "__main__":
    main()
