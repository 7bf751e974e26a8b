#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Gate file-size: no library .c file grows past 1000 lines.

House style (design/style.md 3.6): a .c file should stay at or under about
600 lines; past 1000 a review needs a split plan.  This gate counts the
lines of every .c file in every library module (see gatelib.library_dirs:
bitmap/, common/, ramblock/, migration/, ... but not sim/ or tests/), fails
on any over 1000 and prints a warning for any over 600.

usage: file-size.py SRCROOT
"""
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gatelib  # noqa: E402

GATE = "file-size"
WARN = 600
LIMIT = 1000


def main():
    root = Path(sys.argv[1])
    files = gatelib.library_sources(root)
    if not files:
        gatelib.fail(GATE, "no library .c files found")

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
    gatelib.passed(GATE, f"{len(files)} library .c files, none over "
                         f"{LIMIT} lines")


if __name__ == "__main__":
    main()
