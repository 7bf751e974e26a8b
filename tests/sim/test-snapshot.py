#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""migram-sim snapshots end to end (TAP): snapshot a running workload into
a base and diffs, restore eagerly and lazily in fresh processes and verify
against the hashes recorded at each pause; migram-stream info describes
the files; bad chains, layouts, truncated and corrupted files fail cleanly
(exit 1, an error naming the file and what)."""
import json
import os
import re
import subprocess
import sys
import tempfile

SIM = sys.argv[1]
STREAM = sys.argv[2]
cases = []


def case(name):
    def wrap(fn):
        cases.append((name, fn))
        return fn
    return wrap


def run(*cmd, timeout=120):
    return subprocess.run(list(cmd), capture_output=True, text=True,
                          timeout=timeout, check=False)


def sim(*args):
    return run(SIM, *args)


def snapshot(work, epochs=2, ram="16M", mode="staging"):
    path = os.path.join(work, "s.snap")
    r = sim("--ram", ram, "--snapshot", path, "--snapshot-epochs",
            str(epochs), "--snapshot-after", "50ms", "--dirty-rate",
            "50M/s", "--snapshot-mode", mode)
    assert r.returncode == 0, r.stderr
    files = [path] + [f"{path}.{e}" for e in range(1, epochs + 1)]
    return r, files


@case("snapshot reports the pause and its parts for every epoch")
def _(work):
    r, files = snapshot(work)
    pauses = re.findall(r"pause:\s+([\d.]+) ms \(stop ([\d.]+), dirty log "
                        r"([\d.]+), copy ([\d.]+), hash ([\d.]+)", r.stdout)
    assert len(pauses) == 3, r.stdout
    for p in pauses:
        total, parts = float(p[0]), sum(float(x) for x in p[1:])
        assert parts <= total + 0.01, p
    assert "(full)" in r.stdout and "(diff)" in r.stdout
    for f in files:
        assert os.path.exists(f)


@case("eager restore of base + diffs in a fresh process verifies")
def _(work):
    _, files = snapshot(work)
    r = sim("--ram", "16M", "--restore", ",".join(files))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "0 page(s) differ" in r.stdout, r.stdout
    # Every prefix of the chain is a consistent point in time too.
    r = sim("--ram", "16M", "--restore", ",".join(files[:2]))
    assert r.returncode == 0, r.stderr
    assert "0 page(s) differ" in r.stdout


@case("copy-before-write snapshots (uffd-wp) restore and verify")
def _(work):
    path = os.path.join(work, "s.snap")
    r = sim("--ram", "16M", "--snapshot", path, "--snapshot-epochs", "1",
            "--snapshot-after", "50ms", "--dirty-rate", "50M/s",
            "--snapshot-mode", "cow")
    if r.returncode and "write-protect" in r.stderr:
        return "SKIP no userfaultfd write-protect: " + r.stderr.strip()
    assert r.returncode == 0, r.stderr
    assert "protect" in r.stdout and "copy-before-write" in r.stdout
    r = sim("--ram", "16M", "--restore", f"{path},{path}.1")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "0 page(s) differ" in r.stdout, r.stdout
    r = sim("--ram", "16M", "--restore", path, "--lazy")
    assert r.returncode == 0, r.stderr + r.stdout


@case("lazy restore through userfaultfd verifies")
def _(work):
    _, files = snapshot(work, epochs=1)
    r = sim("--ram", "16M", "--restore", ",".join(files), "--lazy")
    if r.returncode and "userfaultfd" in r.stderr:
        return "SKIP no userfaultfd: " + r.stderr.strip()
    assert r.returncode == 0, r.stderr + r.stdout
    assert "0 page(s) differ" in r.stdout, r.stdout
    assert re.search(r"faults served:\s+\d+", r.stdout), r.stdout
    assert "first guest access" in r.stdout


@case("migram-stream info describes snapshot files (text and JSON)")
def _(work):
    _, files = snapshot(work, epochs=1)
    r = run(STREAM, "info", files[1])
    assert r.returncode == 0, r.stderr
    assert "diff (needs its parent)" in r.stdout, r.stdout
    assert "'pc.ram'" in r.stdout and "pages @1048576" in r.stdout
    r = run(STREAM, "info", "--json", files[0])
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["kind"] == "snapshot" and not j["diff"]
    assert j["blocks"][0]["name"] == "pc.ram"
    assert j["blocks"][0]["used_length"] == 16 << 20
    assert j["blocks"][0]["hashes"]


@case("a diff without its base, a wrong order, another layout: errors")
def _(work):
    _, files = snapshot(work, epochs=2)
    bad = [
        (["--ram", "16M", "--restore", files[1]], "without its base"),
        (["--ram", "16M", "--restore", f"{files[0]},{files[2]}"],
         "not a diff of"),
        (["--ram", "8M", "--restore", files[0]], "not this RAM layout"),
        (["--block", "pc.ram:16M", "--block", "vram:1M", "--restore",
          files[0]], "not this RAM layout"),
        (["--ram", "16M", "--restore", os.path.join(work, "nope")],
         "open"),
        (["--snapshot", "x", "--restore", "y"], "one of them"),
        (["--lazy"], "--lazy needs --restore"),
        (["--snapshot", "x", "--snapshot-mode", "teleport"],
         "--snapshot-mode"),
    ]
    for args, what in bad:
        r = sim(*args)
        assert r.returncode in (1, 2), (args, r.returncode)
        assert what in r.stderr, (args, r.stderr)


@case("truncated and corrupted files fail naming the offset")
def _(work):
    _, files = snapshot(work, epochs=0)
    size = os.path.getsize(files[0])
    with open(files[0], "r+b") as f:
        f.truncate(size - 4096)
    r = sim("--ram", "16M", "--restore", files[0])
    assert r.returncode == 1
    assert "offset" in r.stderr and "past the end" in r.stderr, r.stderr
    _, files = snapshot(work, epochs=0)
    with open(files[0], "r+b") as f:
        f.seek(70)
        f.write(b"\xff")
    r = sim("--ram", "16M", "--restore", files[0])
    assert r.returncode == 1
    assert "offset 56" in r.stderr and "corrupted" in r.stderr, r.stderr
    # A corrupted page is caught by the hashes recorded at the pause.
    _, files = snapshot(work, epochs=0)
    r = run(STREAM, "info", "--json", files[0])
    off = json.loads(r.stdout)["blocks"][0]["pages_offset"]
    with open(files[0], "r+b") as f:
        f.seek(off + 4096 + 17)
        b = f.read(1)
        f.seek(off + 4096 + 17)
        f.write(bytes([b[0] ^ 0x5a]))
    r = sim("--ram", "16M", "--restore", files[0])
    assert r.returncode == 1, r.stdout
    assert "differ from the snapshot" in r.stderr, r.stderr


def main():
    print(f"1..{len(cases)}")
    bad = 0
    for i, (name, fn) in enumerate(cases, 1):
        with tempfile.TemporaryDirectory() as work:
            try:
                res = fn(work)
                if isinstance(res, str) and res.startswith("SKIP"):
                    print(f"ok {i} - {name} # {res}")
                else:
                    print(f"ok {i} - {name}")
            except Exception as e:  # noqa: BLE001
                bad += 1
                print(f"not ok {i} - {name}\n# {e!r}")
    return 1 if bad else 0


sys.exit(main())
