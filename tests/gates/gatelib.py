# SPDX-License-Identifier: MIT
"""Shared by the gate scripts: which files make up the project, and how a
gate reports.

Every gate globs the source tree when it runs, so a file or a module added
later is checked without touching the gate.  The rules:

* A *library module* is a top-level directory with a meson.build that is not
  one of NOT_LIBRARY (tests, the simulator, tools, ...).  Its .c files are
  "library sources" (bitmap/, common/, ramblock/, migration/, and any
  module added later, from the moment it has a meson.build).
* *Project sources* are all .c and .h files of the tree, minus build
  directories (anything holding meson-private/ or named build*), hidden
  directories and subprojects/.
"""
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

# Top-level directories with a meson.build that are not part of libmigram.
NOT_LIBRARY = {"include", "tests", "sim", "bench", "tools", "docs", "examples",
               "scripts", "subprojects"}

# Top-level directories never scanned at all.
NEVER_SCANNED = {"subprojects", "fuzz-out"}


def is_build_dir(path):
    return (path.name.startswith("build")
            or (path / "meson-private").is_dir()
            or (path / "meson-info").is_dir())


def top_dirs(root):
    """Top-level source directories, sorted, without build/hidden ones."""
    for d in sorted(Path(root).iterdir()):
        if (d.is_dir() and not d.name.startswith(".")
                and d.name not in NEVER_SCANNED and not is_build_dir(d)):
            yield d


def library_dirs(root):
    return [d for d in top_dirs(root)
            if d.name not in NOT_LIBRARY and (d / "meson.build").is_file()]


def library_sources(root):
    """Every .c file of every library module, sorted."""
    out = []
    for d in library_dirs(root):
        out += sorted(d.rglob("*.c"))
    return out


def public_headers(root):
    return sorted((Path(root) / "include" / "migram").glob("*.h"))


def project_sources(root):
    """Every .c and .h file of the project (library, tests, tools, ...)."""
    root = Path(root)
    out = sorted(p for p in root.glob("*.[ch]") if p.is_file())
    for d in top_dirs(root):
        out += sorted(p for p in d.rglob("*.[ch]") if p.is_file())
    return out


def rel(path, root):
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def need_tool(gate, spec):
    """Resolve a tool passed by meson as a path, or 'missing:<name>'.

    A missing tool fails the gate: scripts/setup.sh installs every tool a
    gate uses, so "not installed" is a broken machine, not a reason to skip.
    """
    if spec.startswith("missing:"):
        name = spec[len("missing:"):]
        fail(gate, f"{name} not found; run scripts/setup.sh (or make setup)")
    if shutil.which(spec) is None and not Path(spec).is_file():
        fail(gate, f"{spec} not found; run scripts/setup.sh (or make setup)")
    return spec


def pkg_cflags(gate, pkg_config, *packages):
    try:
        out = subprocess.run([pkg_config, "--cflags", *packages],
                             check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        fail(gate, f"pkg-config --cflags {' '.join(packages)}: {e.stderr}")
    return shlex.split(out.stdout)


def fail(gate, message):
    print(f"FAIL {gate}: {message}")
    sys.exit(1)


def passed(gate, message):
    print(f"ok {gate}: {message}")
    sys.exit(0)
