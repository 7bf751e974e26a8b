#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Gate exports: libmigram.so exports exactly the names in migram.sym.

A symbol reaches embedders only with MIGRAM_EXPORT on its definition *and*
a line in the version script.  This gate compares the dynamic symbol table
(`nm -D --defined-only`, version nodes such as MIGRAM_0.1 ignored) with the
global: sections of migram.sym and fails on any difference:

  * in the library but not in migram.sym: cannot happen through the linker
    (the script ends in `local: *;`), so it means the script was bypassed;
  * in migram.sym but not exported: the definition lacks MIGRAM_EXPORT, was
    renamed, or was never written.

usage: exports.py LIBMIGRAM_SO MIGRAM_SYM NM
"""
import re
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gatelib  # noqa: E402

GATE = "exports"


def script_names(path):
    """Names listed under global: in a GNU ld version script."""
    text = Path(path).read_text()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"#[^\n]*", " ", text)
    names = set()
    bad = []
    # Each node: NAME { global: ...; local: ...; } [parent];
    for body in re.findall(r"\{(.*?)\}", text, flags=re.S):
        section = "global"
        for tok in re.split(r";", body):
            tok = tok.strip()
            m = re.match(r"(global|local)\s*:\s*(.*)", tok, flags=re.S)
            if m:
                section, tok = m.group(1), m.group(2).strip()
            if not tok or section != "global":
                continue
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tok):
                bad.append(tok)
                continue
            names.add(tok)
    return names, bad


def exported_names(nm, lib):
    out = subprocess.run([nm, "-D", "--defined-only", lib], check=True,
                         capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        kind, name = parts[1], parts[2]
        if kind == "A":  # a version node (MIGRAM_0.1), not a symbol
            continue
        names.add(name.split("@")[0])
    return names


def main():
    lib, sym = sys.argv[1], sys.argv[2]
    nm = gatelib.need_tool(GATE, sys.argv[3])

    listed, bad = script_names(sym)
    if bad:
        gatelib.fail(GATE, "migram.sym: global: entries must be plain "
                           "names, not patterns: " + ", ".join(bad))
    exported = exported_names(nm, lib)

    extra = sorted(exported - listed)
    missing = sorted(listed - exported)
    for name in extra:
        print(f"  extra:   {name} (exported, not in migram.sym)")
    for name in missing:
        print(f"  missing: {name} (in migram.sym, not exported; "
              "MIGRAM_EXPORT on its definition?)")
    if extra or missing:
        gatelib.fail(GATE, f"{len(extra)} extra, {len(missing)} missing: "
                           + ", ".join(extra + missing))
    gatelib.passed(GATE, f"{len(exported)} exported symbols match migram.sym")


if __name__ == "__main__":
    main()
