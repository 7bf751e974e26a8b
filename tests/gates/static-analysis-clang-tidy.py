#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Gate static-analysis-clang-tidy: clang-tidy finds nothing in the library.

Runs clang-tidy with the checked-in .clang-tidy over every library .c file
(globbed now), using the compile_commands.json of the build directory the
test runs from, so each file is analysed with its real flags.  Findings in
our own headers count too (header filter: include/ and the library module
directories of this source tree).  Any warning fails the gate; suppress a
wrong one only inline, `/* NOLINT(check): why */`.

usage: static-analysis-clang-tidy.py SRCROOT BUILDDIR CLANG_TIDY
"""
import re
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gatelib  # noqa: E402

GATE = "static-analysis-clang-tidy"


def main():
    root = Path(sys.argv[1]).resolve()
    build = Path(sys.argv[2]).resolve()
    tidy = gatelib.need_tool(GATE, sys.argv[3])

    if not (build / "compile_commands.json").is_file():
        gatelib.fail(GATE, f"{build}/compile_commands.json missing")
    if not (root / ".clang-tidy").is_file():
        gatelib.fail(GATE, f"{root}/.clang-tidy missing")
    files = gatelib.library_sources(root)
    if not files:
        gatelib.fail(GATE, "no library .c files found")

    dirs = ["include"] + [d.name for d in gatelib.library_dirs(root)]
    header_filter = "^" + re.escape(str(root)) + "/(" + "|".join(dirs) + ")/"
    cmd = [tidy, "--quiet", "-p", str(build),
           f"--config-file={root / '.clang-tidy'}",
           f"--header-filter={header_filter}",
           *[str(f) for f in files]]
    r = subprocess.run(cmd, capture_output=True, text=True)
    out = r.stdout + r.stderr
    findings = [line for line in out.splitlines()
                if re.search(r": (warning|error): ", line)]
    if findings or r.returncode != 0:
        print(out.rstrip())
        names = sorted({m.group(1).replace(",-warnings-as-errors", "")
                        for f in findings
                        for m in [re.search(r"\[([\w.,-]+)\]$", f)] if m})
        gatelib.fail(GATE, f"{len(findings)} finding(s) "
                           f"[{', '.join(names)}] (exit {r.returncode})")
    gatelib.passed(GATE, f"{len(files)} library files, no findings")


if __name__ == "__main__":
    main()
