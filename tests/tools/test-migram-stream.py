#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""migram-stream's command line: exit codes, messages, round trips (TAP)."""
import json
import os
import subprocess
import sys
import tempfile

TOOL = sys.argv[1]
results = []


def run(*args, stdin=None):
    return subprocess.run([TOOL, *args], capture_output=True, text=False,
                          input=stdin, check=False)


def case(name):
    def wrap(fn):
        results.append((name, fn))
        return fn
    return wrap


@case("no arguments is bad usage (exit 2)")
def _(work):
    r = run()
    assert r.returncode == 2 and b"Usage" in r.stderr, r


@case("--help exits 0 and lists the commands")
def _(work):
    r = run("--help")
    assert r.returncode == 0
    for c in (b"info", b"extract", b"save", b"--version"):
        assert c in r.stdout


@case("--version prints the name and version, exit 0")
def _(work):
    r = run("--version")
    assert r.returncode == 0, r
    assert r.stdout.decode().startswith("migram-stream "), r.stdout
    assert len(r.stdout.decode().split()) == 2, r.stdout


@case("unknown command and missing options are bad usage")
def _(work):
    assert run("frobnicate").returncode == 2
    assert run("info").returncode == 2
    assert run("extract", "x").returncode == 2
    assert run("save", "a=b").returncode == 2
    assert run("info", "--bogus", "x").returncode == 2


@case("a missing file fails with one line naming it (exit 1)")
def _(work):
    r = run("info", os.path.join(work, "nope"))
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "nope" in lines[0], r


@case("garbage fails with the reason and the byte (exit 1)")
def _(work):
    p = os.path.join(work, "garbage")
    with open(p, "wb") as f:
        f.write(b"NOT A STREAM AT ALL")
    r = run("info", p)
    msg = r.stderr.decode()
    assert r.returncode == 1 and "bad magic" in msg and "byte 0" in msg, r


@case("save, info --json, extract: a round trip of two blocks")
def _(work):
    a = os.path.join(work, "a.img")
    b = os.path.join(work, "b.img")
    with open(a, "wb") as f:
        f.write(os.urandom(64 * 4096) + bytes(16 * 4096))
    with open(b, "wb") as f:
        f.write(bytes(4096) + os.urandom(4096))
    s = os.path.join(work, "s.stream")
    r = run("save", "-o", s, "--machine", "pc-q35-7.2",
            f"pc.ram={a}", f"vga.vram={b}")
    assert r.returncode == 0, r
    info = json.loads(run("info", "--json", s).stdout)
    assert info["machine"] == "pc-q35-7.2"
    assert info["complete"] and info["vmdesc_bytes"] > 0
    blocks = {x["name"]: x for x in info["blocks"]}
    assert blocks["pc.ram"]["length"] == 80 * 4096
    assert blocks["pc.ram"]["normal_pages"] == 64
    assert blocks["pc.ram"]["zero_pages"] == 16
    assert blocks["vga.vram"]["zero_pages"] == 1
    for name, img in (("pc.ram", a), ("vga.vram", b)):
        out = os.path.join(work, name + ".out")
        assert run("extract", s, "--block", name, "-o", out).returncode == 0
        with open(out, "rb") as x, open(img, "rb") as y:
            assert x.read() == y.read(), name
    # from standard input too
    with open(s, "rb") as f:
        r = run("info", "-", stdin=f.read())
    assert r.returncode == 0 and b"pc.ram" in r.stdout


@case("extract of an unknown block fails and leaves no output")
def _(work):
    img = os.path.join(work, "i.img")
    with open(img, "wb") as f:
        f.write(os.urandom(4096))
    s = os.path.join(work, "s.stream")
    assert run("save", "-o", s, f"ram={img}").returncode == 0
    out = os.path.join(work, "o")
    r = run("extract", s, "--block", "nope", "-o", out)
    assert r.returncode == 1 and b"no block 'nope'" in r.stderr, r
    assert not os.path.exists(out)


@case("a truncated stream fails with where it ended")
def _(work):
    img = os.path.join(work, "i.img")
    with open(img, "wb") as f:
        f.write(os.urandom(8 * 4096))
    s = os.path.join(work, "s.stream")
    assert run("save", "-o", s, f"ram={img}").returncode == 0
    with open(s, "rb") as f:
        data = f.read()
    with open(s, "wb") as f:
        f.write(data[: len(data) // 2])
    r = run("info", s)
    assert r.returncode == 1 and b"end of stream at byte" in r.stderr, r


def main():
    print(f"1..{len(results)}")
    bad = 0
    for i, (name, fn) in enumerate(results, 1):
        with tempfile.TemporaryDirectory() as work:
            try:
                fn(work)
                print(f"ok {i} - {name}")
            except Exception as e:  # noqa: BLE001
                bad += 1
                print(f"not ok {i} - {name}\n# {e!r}")
    return 1 if bad else 0


sys.exit(main())
