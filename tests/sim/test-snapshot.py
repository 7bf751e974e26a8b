#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""migram-sim snapshots end to end (TAP): snapshot a running workload (the
writer threads, or a KVM guest with its vCPU registers as the file's device
state) into a base and diffs, restore eagerly and lazily in fresh processes
and verify against the hashes recorded at each pause (a KVM guest then
resumes and checks its own invariant); migram-stream info describes
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


def kvm_ok():
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        return f"no usable /dev/kvm ({e.strerror})"
    return None


def kvm_snapshot(work, mode="staging", log="manual"):
    path = os.path.join(work, "k.snap")
    r = sim("--workload", "kvm", "--ram", "32M", "--dirty-log", log,
            "--snapshot", path, "--snapshot-epochs", "1",
            "--snapshot-after", "100ms", "--snapshot-mode", mode)
    return r, [path, path + ".1"]


@case("kvm guest: snapshot with vCPU state, eager restore resumes it")
def _(work):
    why = kvm_ok()
    if why:
        return f"SKIP {why}"
    r, files = kvm_snapshot(work)
    assert r.returncode == 0, r.stderr + r.stdout
    assert r.stdout.count("device state:") == 2, r.stdout
    # The registers are in each file, and info says so.
    j = json.loads(run(STREAM, "info", "--json", files[1]).stdout)
    assert j["device_state_bytes"] > 0, j
    r = sim("--workload", "kvm", "--ram", "32M", "--restore",
            ",".join(files))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "0 page(s) differ" in r.stdout, r.stdout
    # The guest ran from the restored registers: its invariant held
    # before and after, and it wrote pages.
    m = re.search(r"KVM guest:\s+restored: (.*); resumed for \d+ ms: "
                  r"(\d+) page writes", r.stdout)
    assert m and int(m.group(2)) > 0, r.stdout
    # Without --workload kvm the memory alone is restored and verified.
    r = sim("--ram", "32M", "--restore", ",".join(files))
    assert r.returncode == 0 and "KVM guest" not in r.stdout, r.stdout


@case("kvm guest: lazy restore runs it while its pages fault in")
def _(work):
    why = kvm_ok()
    if why:
        return f"SKIP {why}"
    r, files = kvm_snapshot(work, log="ring")
    if r.returncode and "ring" in r.stderr:
        r, files = kvm_snapshot(work)
    assert r.returncode == 0, r.stderr + r.stdout
    r = sim("--workload", "kvm", "--ram", "32M", "--restore",
            ",".join(files), "--lazy")
    if r.returncode and "userfaultfd" in r.stderr:
        return "SKIP no userfaultfd: " + r.stderr.strip()
    assert r.returncode == 0, r.stderr + r.stdout
    assert "the KVM guest's first page write" in r.stdout, r.stdout
    assert "0 page(s) differ" in r.stdout, r.stdout
    assert re.search(r"faults served:\s+[1-9]", r.stdout), r.stdout
    assert "after the restore:" in r.stdout, r.stdout


@case("kvm guest: copy-before-write catches vCPU writes, restores")
def _(work):
    why = kvm_ok()
    if why:
        return f"SKIP {why}"
    r, files = kvm_snapshot(work, mode="cow")
    if r.returncode and "write-protect" in r.stderr:
        return "SKIP no userfaultfd write-protect: " + r.stderr.strip()
    assert r.returncode == 0, r.stderr + r.stdout
    # The vCPUs write through KVM: their writes fault on the protected
    # pages like a process's would, and the old content is kept.
    copied = re.findall(r"copy-before-write: (\d+) guest writes", r.stdout)
    assert copied and sum(int(c) for c in copied) > 0, r.stdout
    r = sim("--workload", "kvm", "--ram", "32M", "--restore",
            ",".join(files))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "0 page(s) differ" in r.stdout and "restored:" in r.stdout


@case("kvm restore of a file without device state: a clean error")
def _(work):
    why = kvm_ok()
    if why:
        return f"SKIP {why}"
    _, files = snapshot(work, epochs=0, ram="32M")
    r = sim("--workload", "kvm", "--ram", "32M", "--restore", files[0])
    assert r.returncode == 1, r.stdout
    assert "no device state" in r.stderr and files[0] in r.stderr, r.stderr


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
