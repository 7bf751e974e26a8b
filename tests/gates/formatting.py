#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Gate formatting: every C file of the project matches .clang-format.

Runs `clang-format --dry-run -Werror` with the checked-in .clang-format
(kernel style) over every .c and .h file of the project, globbed now:
library modules, public headers, tests, tools, bench, sim, docs examples.
Build directories and hidden directories are skipped.

To fix a failure:  clang-format -i <file>
If clang-format reflows a comment you laid out by hand (a table, a diagram),
shorten its over-long lines by hand instead.

The gate insists on clang-format 14 (Debian 12's), because other versions
format some constructs differently and the tree would flip-flop.

usage: formatting.py SRCROOT CLANG_FORMAT
"""
import re
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gatelib  # noqa: E402

GATE = "formatting"
VERSION = 14


def main():
    root = Path(sys.argv[1]).resolve()
    clang_format = gatelib.need_tool(GATE, sys.argv[2])
    if not (root / ".clang-format").is_file():
        gatelib.fail(GATE, f"{root}/.clang-format missing")

    v = subprocess.run([clang_format, "--version"], capture_output=True,
                       text=True).stdout
    m = re.search(r"version (\d+)", v)
    if not m or int(m.group(1)) != VERSION:
        gatelib.fail(GATE, f"need clang-format {VERSION}, found: {v.strip()}")

    files = gatelib.project_sources(root)
    if not files:
        gatelib.fail(GATE, "no .c/.h files found")

    bad = []
    for f in files:
        r = subprocess.run([clang_format, "--dry-run", "-Werror",
                            "--style=file", str(f)],
                           capture_output=True, text=True, cwd=root)
        if r.returncode != 0:
            name = gatelib.rel(f, root)
            bad.append(name)
            lines = r.stderr.splitlines()
            shown = [ln for ln in lines if "error:" in ln][:3]
            for ln in shown:
                print("  " + ln.replace(str(root) + "/", ""))
            more = len([ln for ln in lines if "error:" in ln]) - len(shown)
            if more > 0:
                print(f"  ... and {more} more in {name}")
    if bad:
        gatelib.fail(GATE, f"{len(bad)} file(s) not formatted "
                           "(clang-format -i FILE): " + ", ".join(bad))
    gatelib.passed(GATE, f"{len(files)} files formatted")


if __name__ == "__main__":
    main()
