#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Gate headers-standalone: every public header compiles on its own.

For each include/migram/*.h (globbed now, so new headers are picked up) a
translation unit that includes the header twice (the second time checks the
include guard) is compiled with -fsyntax-only:

  * as C11:   <cc>  -std=c11   -pedantic -Wall -Wextra -Werror
  * as C++17: <c++> -std=c++17 -pedantic -Wall -Wextra -Werror

with only include/ and glib's flags on the include path, so a header that
leans on something its includer happened to include first fails here.

usage: headers-standalone.py SRCROOT CC CXX PKG_CONFIG
"""
import shlex
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gatelib  # noqa: E402

GATE = "headers-standalone"

LANGS = [
    ("C11", "c", ["-std=c11"]),
    ("C++17", "c++", ["-std=c++17"]),
]


def main():
    root = Path(sys.argv[1])
    cc = shlex.split(sys.argv[2])
    cxx = gatelib.need_tool(GATE, sys.argv[3])
    pkg_config = gatelib.need_tool(GATE, sys.argv[4])
    gatelib.need_tool(GATE, cc[0])
    glib = gatelib.pkg_cflags(GATE, pkg_config, "glib-2.0")

    headers = gatelib.public_headers(root)
    if not headers:
        gatelib.fail(GATE, f"no headers found in {root}/include/migram")

    failures = []
    for h in headers:
        tu = (f"#include <migram/{h.name}>\n"
              f"#include <migram/{h.name}>\n")
        for label, lang, std in LANGS:
            compiler = cc if lang == "c" else [cxx]
            cmd = (compiler + ["-x", lang, "-fsyntax-only", *std,
                               "-pedantic", "-Wall", "-Wextra", "-Werror",
                               "-I", str(root / "include"), *glib, "-"])
            r = subprocess.run(cmd, input=tu, capture_output=True, text=True)
            if r.returncode != 0:
                failures.append(f"include/migram/{h.name} as {label}")
                print(f"--- include/migram/{h.name} as {label}: "
                      f"{shlex.join(cmd)}")
                print(r.stderr.rstrip())

    if failures:
        gatelib.fail(GATE, "not self-contained: " + ", ".join(failures))
    gatelib.passed(GATE, f"{len(headers)} headers compile alone as C11 "
                         "and C++17")


if __name__ == "__main__":
    main()
