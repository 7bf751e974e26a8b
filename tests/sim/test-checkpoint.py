#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""migram-sim continuous checkpoints end to end (TAP): a primary running
the writer workload checkpoints to a standby process over TCP on
127.0.0.1; the standby's memory must equal, byte for byte by per-page
hashes, the primary's memory at the pause of the last epoch it applied.
The primary is killed with SIGKILL at several points, mid-epoch transfer
included: the standby then holds exactly the last complete epoch, never a
partial one.  Hostile streams make the standby fail with an error naming
the epoch, block and offset."""
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

SIM = sys.argv[1]
cases = []
RAM = "16M"  # 4096 pages
PAGES = 4096


def case(name):
    def wrap(fn):
        cases.append((name, fn))
        return fn
    return wrap


class Standby:
    def __init__(self, work, ram=RAM, extra=()):
        self.out = os.path.join(work, "standby.out")
        self.work = work
        with open(self.out, "w") as f:
            self.p = subprocess.Popen(
                [SIM, "--role", "standby", "--standby", "tcp:127.0.0.1:0",
                 "--ram", ram, "--checkpoint-hashes", work, *extra],
                stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        self.port = None
        while time.monotonic() < deadline and self.port is None:
            m = re.search(r"listening on port (\d+)", self.text())
            if m:
                self.port = int(m.group(1))
            else:
                time.sleep(0.02)
        assert self.port, self.text()

    def text(self):
        with open(self.out) as f:
            return f.read()

    def finish(self):
        rc = self.p.wait(timeout=60)
        return rc, self.text()

    def held(self):
        with open(os.path.join(self.work, "standby.epoch")) as f:
            e = f.read().strip()
        return None if e == "none" else int(e)


def primary(work, port, *extra, wait=True):
    cmd = [SIM, "--ram", RAM, "--checkpoint-every", "50ms",
           "--dirty-rate", "100M/s", "--standby", f"tcp:127.0.0.1:{port}",
           "--checkpoint-hashes", work, *extra]
    out = open(os.path.join(work, "primary.out"), "w")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    if wait:
        p.wait(timeout=120)
        out.close()
    return p


def primary_text(work):
    with open(os.path.join(work, "primary.out")) as f:
        return f.read()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def check_holds(work, sb, expect=None):
    """The standby's memory equals exactly the epoch it says it holds."""
    e = sb.held()
    if expect is not None:
        assert e == expect, (e, expect, sb.text())
    mine = read(os.path.join(work, "standby.hashes"))
    assert len(mine) == PAGES * 8
    if e is None:
        assert mine == mine[:8] * PAGES  # untouched (zero) memory
        return e
    want = read(os.path.join(work, f"epoch-{e}.hashes"))
    if mine != want:
        bad = sum(1 for i in range(PAGES)
                  if mine[i * 8:i * 8 + 8] != want[i * 8:i * 8 + 8])
        raise AssertionError(f"standby differs from epoch {e} in {bad} "
                             "pages")
    # ... and from every other epoch the primary recorded.
    for f in os.listdir(work):
        m = re.match(r"epoch-(\d+)\.hashes$", f)
        if m and int(m.group(1)) != e:
            assert read(os.path.join(work, f)) != mine, f
    return e


@case("a standby holds the last acked epoch, byte for byte")
def _(work):
    sb = Standby(work)
    primary(work, sb.port, "--checkpoint-epochs", "6")
    rc, text = sb.finish()
    out = primary_text(work)
    assert rc == 0, text
    acked = re.findall(r"epoch (\d+) acked: pause ([\d.]+) ms w/o hash "
                       r"\(stop [\d.]+, dirty log [\d.]+, copy [\d.]+; "
                       r"hash [\d.]+ \[verification only\]\), (\d+) pages, "
                       r"(\d+) bytes", out)
    assert [int(a[0]) for a in acked] == list(range(6)), out
    # Later epochs carry only the pages dirtied since the one before.
    assert all(int(a[2]) < PAGES for a in acked[1:]), out
    assert all(int(a[3]) > int(a[2]) * 4096 for a in acked), out
    assert re.search(r"guest progress: .* \(overhead -?[\d.]+%\)", out), out
    assert len(re.findall(r"standby epoch \d+ applied", text)) == 6, text
    check_holds(work, sb, expect=5)


@case("primary killed mid-epoch: the standby holds the epoch before")
def _(work):
    for epoch, pages in ((2, 1), (3, 200), (1, 64)):
        for f in os.listdir(work):
            os.unlink(os.path.join(work, f))
        sb = Standby(work)
        p = primary(work, sb.port, "--checkpoint-epochs", "8",
                    "--checkpoint-kill-at", f"{epoch}:{pages}")
        rc, text = sb.finish()
        out = primary_text(work)
        assert p.returncode == -signal.SIGKILL, out
        assert f"killing the primary: epoch {epoch}" in out, out
        assert rc == 0, text
        assert "primary lost" in text and "discarded" in text, text
        check_holds(work, sb, expect=epoch - 1)


def kvm_ok():
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        return f"no usable /dev/kvm ({e.strerror})"
    return None


@case("kvm guest: primary killed mid-epoch, the standby resumes the guest")
def _(work):
    why = kvm_ok()
    if why:
        return f"SKIP {why}"
    sb = Standby(work, extra=("--workload", "kvm"))
    cmd = [SIM, "--ram", RAM, "--workload", "kvm", "--checkpoint-every",
           "50ms", "--checkpoint-epochs", "8", "--checkpoint-kill-at",
           "3:100", "--standby", f"tcp:127.0.0.1:{sb.port}",
           "--checkpoint-hashes", work]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                       check=False)
    rc, text = sb.finish()
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    assert rc == 0, text
    # Memory exactly at epoch 2 ...
    check_holds(work, sb, expect=2)
    # ... and the guest resumed from it with epoch 2's vCPU registers:
    # its invariant held, it ran and wrote pages, and held again.
    m = re.search(r"standby: resumed the guest from epoch 2: at the "
                  r"epoch: (.*); resumed for \d+ ms: (\d+) page writes",
                  text)
    assert m and int(m.group(2)) > 0, text


@case("kvm standby fed epochs without vCPU state: refuses to resume")
def _(work):
    why = kvm_ok()
    if why:
        return f"SKIP {why}"
    sb = Standby(work, extra=("--workload", "kvm"))
    primary(work, sb.port, "--checkpoint-epochs", "2")
    rc, text = sb.finish()
    assert rc == 1, text
    assert "no epoch carried its vCPU state" in text, text
    check_holds(work, sb, expect=1)


@case("primary killed in the first epoch: the standby holds nothing")
def _(work):
    sb = Standby(work)
    p = primary(work, sb.port, "--checkpoint-kill-at", "0:100")
    rc, text = sb.finish()
    assert p.returncode == -signal.SIGKILL
    assert rc == 0 and "holds no epoch" in text, text
    assert sb.held() is None
    mine = read(os.path.join(work, "standby.hashes"))
    # Untouched memory: every page hashes like every other (zero).
    assert mine == mine[:8] * PAGES


@case("primary killed with SIGKILL at random moments")
def _(work):
    rng = random.Random(int(os.environ.get("CKPT_SEED", "17")))
    for delay in sorted(rng.uniform(0.25, 1.5) for _ in range(3)):
        for f in os.listdir(work):
            os.unlink(os.path.join(work, f))
        sb = Standby(work)
        p = primary(work, sb.port, "--checkpoint-epochs", "1000",
                    wait=False)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        rc, text = sb.finish()
        out = primary_text(work)
        assert rc == 0, text
        acked = [int(x) for x in re.findall(r"epoch (\d+) acked", out)]
        e = check_holds(work, sb)
        last = acked[-1] if acked else None
        # It has everything acked, and at most the one epoch more whose
        # ack the primary did not live to read.
        if last is None:
            assert e in (None, 0), (e, out)
        else:
            assert e in (last, last + 1), (e, last)


def hello(blocks):
    b = b"MIGRAMCK" + struct.pack("<II", 1, len(blocks))
    for name, length in blocks:
        b += struct.pack("<QH", length, len(name)) + name.encode()
    return b


def rec(tag, block, a, b):
    return tag.encode() + struct.pack("<IQQ", block, a, b)


def hostile(work, data):
    sb = Standby(work)
    s = socket.create_connection(("127.0.0.1", sb.port))
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    rc, text = sb.finish()
    s.close()
    return rc, text, sb


@case("hostile streams: clean errors naming epoch, block and offset")
def _(work):
    good = hello([("pc.ram", 16 << 20)])
    rc, text, _ = hostile(work, b"NOTMIGRA" + bytes(8))
    assert rc == 1 and "offset 0: not a checkpoint stream" in text, text
    rc, text, _ = hostile(work, hello([("rom", 16 << 20)]))
    assert rc == 1 and "block 0 is 'rom'" in text, text
    rc, text, _ = hostile(work, hello([("pc.ram", 8 << 20)]))
    assert rc == 1 and "block 'pc.ram' is 8388608 bytes" in text, text
    rc, text, _ = hostile(work, good + rec("EPOC", 0, 3, 0))
    assert rc == 1 and "epoch 3 starts where epoch 0 was due" in text, text
    rc, text, _ = hostile(work, good + rec("EPOC", 0, 0, 0) +
                          rec("PAGE", 7, 0, 1))
    assert rc == 1 and "epoch 0: block 7" in text, text
    assert "offset 56" in text, text  # 32-byte hello + 24-byte EPOC
    rc, text, _ = hostile(work, good + rec("EPOC", 0, 0, 0) +
                          rec("PAGE", 0, 4095, 2))
    assert rc == 1 and "pages [4095, +2)" in text, text
    rc, text, _ = hostile(work, good + rec("EPOC", 0, 0, 0) +
                          rec("PAGE", 0, 5, 1) + b"\xab" * 4096 +
                          rec("DONE", 0, 1, 12345))
    assert rc == 1 and "checksum mismatch" in text, text
    assert "holds no epoch" in text, text
    # A truncated epoch is a lost primary, not an attack: exit 0.
    rc, text, sb = hostile(work, good + rec("EPOC", 0, 0, 0) +
                           rec("PAGE", 0, 5, 1) + b"\xab" * 100)
    assert rc == 0 and "ended inside" in text, text
    assert sb.held() is None


def main():
    print(f"1..{len(cases)}")
    bad = 0
    for i, (name, fn) in enumerate(cases, 1):
        with tempfile.TemporaryDirectory() as work:
            try:
                fn(work)
                print(f"ok {i} - {name}")
            except Exception as e:  # noqa: BLE001
                bad += 1
                print(f"not ok {i} - {name}\n# {e!r}")
            sys.stdout.flush()
    return 1 if bad else 0


sys.exit(main())
