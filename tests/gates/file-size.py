#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Gate file-size: no .c or .h file of the library, sim/ or tools/ grows
past 800 lines.

House style (design/style.md 3.6): a .c file should stay at or under about
600 lines; past 800 it does several jobs and is split by job (issue 18).
This gate counts the lines of every .c and .h file in every library module
(see gatelib.library_dirs: bitmap/, common/, ramblock/, migration/, ...),
in include/, sim/ and tools/ (not tests/), fails on any over 800 and prints
a warning for any over 600.

usage: file-size.py SRCROOT
"""
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gatelib  # noqa: E402

GATE = "file-size"
WARN = 600
LIMIT = 800


def main():
    root = Path(sys.argv[1])
    files = gatelib.library_sources(root)
    if not files:
        gatelib.fail(GATE, "no library .c files found")
    for d in gatelib.library_dirs(root):
        files += sorted(d.rglob("*.h"))
    for d in ("include", "sim", "tools"):
        files += sorted((root / d).rglob("*.[ch]"))

    over = []
    for f in files:
        with open(f, "rb") as fh:
            n = sum(1 for _ in fh)
        name = gatelib.rel(f, root)
        if n > LIMIT:
            over.append(f"{name} ({n} lines)")
            print(f"  error:   {name}: {n} lines, limit {LIMIT}; split it")
        elif n > WARN:
            print(f"  warning: {name}: {n} lines, budget {WARN}")

    if over:
        gatelib.fail(GATE, f"over {LIMIT} lines: " + ", ".join(over))
    gatelib.passed(GATE, f"{len(files)} files of the library, sim/ and "
                         f"tools/, none over {LIMIT} lines")


if __name__ == "__main__":
    main()
