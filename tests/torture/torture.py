#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""migram's torture campaign: random migrations with injected faults.

Each scenario is drawn from random.Random(seed): a block layout, a
workload and its rate, a dirty-log source, a mode, the policy knobs, a
transport and zero or more faults.  It runs migram-sim (real mode, two
processes) with those flags, injects the faults from outside (kill -9,
SIGSTOP/SIGCONT, a TCP proxy that cuts at a byte, /dev/full, RLIMIT_FSIZE,
SIGTERM/SIGINT) or through the simulator's hidden test hooks (a block
hot-added or resized, the source's self-check), and judges the outcome
with the oracle of docs/reliability.md.  A watchdog kills a scenario that
runs too long and fails it with its seed.

    torture.py --sim build/sim/migram-sim --runs 12 --seed 7
    torture.py --sim ... --runs 1 --seed 1234       # replay one scenario

Scenario i of a run has seed SEED + i, so one printed seed with --runs 1
replays that scenario.  The last line is "torture: N passed, N failed";
the exit status is 1 on any failure.  stdlib only.
"""
import argparse
import ctypes
import json
import os
import platform
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

MiB = 1 << 20
FAULT_KINDS = ["cut-at-byte", "kill-source", "kill-destination",
               "stall-destination", "file-enospc", "file-short-write",
               "cancel", "hot-add", "resize", "postcopy-disconnect"]
# Campaign C's kinds, drawn from a second generator (draw()) so that the
# seeds of campaigns A and B keep their first draws
NEW_FAULT_KINDS = ["black-hole", "cut-data-channel"]
PROXY_FAULTS = ("cut-at-byte", "black-hole", "cut-data-channel")
SAN_RE = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|"
                    r"runtime error:|ThreadSanitizer")


# ---- what this machine offers -------------------------------------------

def probe():
    caps = {"kvm": os.access("/dev/kvm", os.R_OK | os.W_OK),
            "uffd": False, "hugepages_free": 0}
    if platform.machine() == "x86_64":
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.syscall(323, os.O_CLOEXEC | os.O_NONBLOCK)
        if fd >= 0:
            os.close(fd)
            caps["uffd"] = True
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("HugePages_Free:"):
                    caps["hugepages_free"] = int(line.split()[1])
    except OSError:
        pass
    return caps


# ---- the generator -------------------------------------------------------

def pick(r, weighted):
    """One key of {value: weight}."""
    total = sum(weighted.values())
    x = r.uniform(0, total)
    for k, w in weighted.items():
        x -= w
        if x <= 0:
            return k
    return k


def draw(seed, caps):
    """The scenario of one seed.  Every draw is made whatever the machine
    offers, so that a seed means the same scenario everywhere; what the
    machine lacks is then replaced, and the scenario says so."""
    r = random.Random(seed)
    s = {"seed": seed, "notes": []}
    total = int(2 ** r.uniform(4, 8)) * MiB            # 16 MiB .. 256 MiB
    nblocks = r.randint(1, 6)
    kinds = [pick(r, {"anon": 4, "shared": 2, "caller": 2,
                      "caller-shared": 1, "hugetlb": 1})
             for _ in range(nblocks)]
    weights = [r.uniform(0.2, 1) for _ in range(nblocks)]
    workload = pick(r, {"uniform": 3, "hotset": 3, "sequential": 2,
                        "idle": 1, "kvm": 2})
    rate = pick(r, {"unlimited": 1, "low": 2, "mid": 2, "high": 1})
    rate_mib = {"unlimited": 0, "low": r.randint(1, 8),
                "mid": r.randint(8, 64), "high": r.randint(64, 256)}[rate]
    threads = r.randint(1, 4)
    fill = pick(r, {"pattern": 3, "random": 1, "zero": 1})
    log = pick(r, {"software": 3, "uffd-async": 2, "uffd-fault": 2})
    kvm_log = pick(r, {"manual": 2, "classic": 1, "ring": 1})
    mode = pick(r, {"precopy": 4, "postcopy": 2, "hybrid": 2, "preempt": 2})
    bw_mib = pick(r, {0: 2, 1: 3})
    bw_mib = bw_mib and r.choice([64, 128, 256, 512, 1024])
    downtime = r.choice([30, 100, 300, 1000])
    shift = pick(r, {None: 2, "low": 1, "high": 1})
    shift = {None: None, "low": r.randint(0, 12),
             "high": r.randint(13, 31)}[shift]
    transport = pick(r, {"socketpair": 3, "tcp": 2, "tcp-roles": 3,
                         "file": 1})
    auto_converge = r.random() < 0.3
    nfaults = pick(r, {0: 3, 1: 6, 2: 1})
    faults = []
    for _ in range(nfaults):
        faults.append({"kind": r.choice(FAULT_KINDS),
                       "when": r.random(),       # share of the run
                       "post": r.random() < 0.5,  # after the switch
                       "arg": r.random()})
    # -- reconcile: what the machine offers, what goes together ---------
    if workload == "kvm" and not caps["kvm"]:
        workload = "uniform"
        s["notes"].append("no /dev/kvm: uniform")
    if mode != "precopy" and not caps["uffd"]:
        mode = "precopy"
        s["notes"].append("no userfaultfd: precopy")
    if log.startswith("uffd") and not caps["uffd"]:
        log = "software"
    if workload == "kvm":
        kinds, weights = ["anon"], [1]
        total = max(total, 16 * MiB)
        if transport == "file":
            transport = "socketpair"
    need_huge = 0
    for i, k in enumerate(kinds):
        if k == "hugetlb":
            need_huge += 1
    sizes = []
    wsum = sum(weights)
    for w in weights:
        sizes.append(max(1, int(total / MiB * w / wsum)) * MiB)
    if need_huge:
        # source and destination each map it: 2 MiB pages, twice
        want = sum(-(-sz // (2 * MiB)) * 2 for sz, k in zip(sizes, kinds)
                   if k == "hugetlb")
        if caps["hugepages_free"] < want:
            kinds = ["anon" if k == "hugetlb" else k for k in kinds]
            s["notes"].append(f"hugetlb drawn, {caps['hugepages_free']} "
                              f"huge pages free (need {want}): anon")
        else:
            sizes = [-(-sz // (2 * MiB)) * 2 * MiB if k == "hugetlb"
                     else sz for sz, k in zip(sizes, kinds)]
    if "hugetlb" in kinds and mode != "precopy":
        # the destination creates its blocks from the stream, and after a
        # huge-page ADVISE it cannot (the receiver refuses; reliability.md)
        kinds = ["anon" if k == "hugetlb" else k for k in kinds]
        s["notes"].append("hugetlb with postcopy: anon")
    if "hugetlb" in kinds and log == "uffd-async":
        log = "uffd-fault"   # async mode refuses hugetlb blocks
    if transport == "file":
        mode = "precopy"     # the modes need a connection
    if mode == "precopy":
        faults = [f for f in faults if f["kind"] != "postcopy-disconnect"]
    # faults that need two processes over TCP, or a file
    for f in faults:
        if f["kind"] in ("cut-at-byte", "kill-source", "kill-destination"):
            transport = "tcp-roles"
        if f["kind"].startswith("file-"):
            transport = "file"
            mode = "precopy"
    if transport == "file":
        faults = [f for f in faults if f["kind"] not in
                  ("cut-at-byte", "kill-source", "kill-destination",
                   "stall-destination", "postcopy-disconnect")]
        if workload == "kvm":
            workload = "uniform"
            kinds, weights = ["anon"], [1]
    else:
        faults = [f for f in faults if not f["kind"].startswith("file-")]
    # -- campaign C: data channels, an I/O timeout, and their faults, from
    # a second generator so that the draws above stay those of A and B
    r2 = random.Random(seed * 1000003 + 19)
    channels = pick(r2, {1: 4, 2: 2, 3: 1, 4: 1})
    io_timeout = pick(r2, {0: 2, 1: 1}) and r2.choice([1000, 2000, 3000])
    if r2.random() < 0.3:
        faults.append({"kind": r2.choice(NEW_FAULT_KINDS),
                       "when": r2.random(), "post": r2.random() < 0.5,
                       "arg": r2.random()})
    if faults and faults[-1]["kind"] in NEW_FAULT_KINDS:
        # one proxy fault per scenario: the new one
        faults = [f for f in faults if f["kind"] != "cut-at-byte"]
    kinds_now = [f["kind"] for f in faults]
    if "cut-data-channel" in kinds_now:
        channels = max(channels, 2)
        faults = [f for f in faults if f["kind"] != "postcopy-disconnect"]
    if "black-hole" in kinds_now and not io_timeout:
        io_timeout = r2.choice([1000, 2000, 3000])   # else a hang
    if any(k in kinds_now for k in NEW_FAULT_KINDS):
        if transport == "file":
            faults = [f for f in faults if not f["kind"].startswith("file-")]
            s["notes"].append("a proxy fault: tcp-roles, not a file")
        transport = "tcp-roles"
    if transport == "file" or any(f["kind"] == "postcopy-disconnect"
                                  for f in faults):
        channels = 1   # sim/main.c refuses them together
    kinds_seen = set()
    faults = [f for f in faults if not (f["kind"] in kinds_seen or
                                        kinds_seen.add(f["kind"]))]
    if mode == "precopy":
        for f in faults:
            f["post"] = False
    # precopy must be able to converge: dirty rate well under bandwidth
    # (auto-converge too: it may still give up after 8 syncs, exit 3)
    eff_bw = bw_mib or 1024
    if mode in ("precopy", "hybrid"):
        if rate == "unlimited" or rate_mib > eff_bw // 4:
            rate_mib = max(1, eff_bw // 4)
    # A write-protect log tracks a hugetlb block by huge page: one 4 KiB
    # write dirties 2 MiB, so a writer spread over the block keeps all of
    # it dirty, and precopy converges only when the link carries the
    # whole block within the downtime limit (ASan CI seeds 132555974 and
    # 132556068 drew 20 MiB at 64 MiB/s in 100 ms: honestly not
    # convergent, exit 3 twice).  Give such a scenario the downtime (or
    # the bandwidth) it needs.
    huge_mib = sum(sz for k, sz in zip(kinds, sizes)
                   if k == "hugetlb") // MiB
    if mode == "precopy" and huge_mib and log.startswith("uffd") and \
            workload != "kvm":
        need_ms = 2 * huge_mib * 1000 // (bw_mib or 1024)
        if need_ms > downtime:
            downtime = min(d for d in (30, 100, 300, 1000, 100000)
                           if d >= need_ms)
            if downtime > 1000:
                downtime, bw_mib = 1000, 0
            s["notes"].append(f"hugetlb under a uffd log: downtime "
                              f"{downtime} ms")
    if workload == "kvm" and bw_mib and bw_mib < 256:
        bw_mib = 256   # the guest writes its working set flat out
    s.update(total=sum(sizes), blocks=list(zip(kinds, sizes)),
             workload=workload, rate_mib=rate_mib, threads=threads,
             fill="zero" if workload == "kvm" else fill,
             log=kvm_log if workload == "kvm" else log,
             mode=mode, bw_mib=bw_mib, downtime_ms=downtime,
             shift=shift, transport=transport,
             auto_converge=auto_converge, faults=faults,
             channels=channels, io_timeout_ms=io_timeout)
    return s


def describe(s):
    blocks = "+".join(f"{k}:{sz // MiB}M" for k, sz in s["blocks"])
    rate = f"{s['rate_mib']}M/s" if s["rate_mib"] else "unlimited"
    bw = f"{s['bw_mib']}M/s" if s["bw_mib"] else "unlimited"
    faults = ",".join(
        f"{f['kind']}@{f['when']:.2f}{'/post' if f['post'] else ''}"
        for f in s["faults"]) or "none"
    out = (f"{blocks} {s['workload']}@{rate} x{s['threads']} "
           f"fill={s['fill']} log={s['log']} mode={s['mode']} bw={bw} "
           f"downtime={s['downtime_ms']}ms shift={s['shift']} "
           f"{'auto-converge ' if s['auto_converge'] else ''}"
           f"transport={s['transport']} channels={s.get('channels', 1)} "
           f"io-timeout={s.get('io_timeout_ms') or 0}ms faults={faults}")
    if s["notes"]:
        out += " (" + "; ".join(s["notes"]) + ")"
    return out


# ---- command lines -------------------------------------------------------

def free_port():
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def source_args(s, work, faults=True):
    a = []
    for i, (k, sz) in enumerate(s["blocks"]):
        flags = {"anon": "", "shared": ":shared", "caller": ":caller",
                 "caller-shared": ":shared:caller",
                 "hugetlb": ":hugetlb"}[k]
        if s["workload"] == "kvm":
            a += ["--ram", f"{sz // MiB}M"]
        else:
            a += ["--block", f"b{i}:{sz // MiB}M{flags}"]
    a += ["--workload", s["workload"], "--threads", str(s["threads"])]
    if s["workload"] == "kvm":
        a += ["--dirty-log", s["log"], "--working-set",
              f"{max(1, min(4, s['total'] // MiB // 8))}M",
              "--max-time", "40s"]
    else:
        a += ["--fill", s["fill"]]
        if s["rate_mib"]:
            a += ["--dirty-rate", f"{s['rate_mib']}M/s"]
        if s["log"].startswith("uffd"):
            a += ["--debug-uffd-log", s["log"][5:]]
        a += ["--max-time", "40s"]
    if s["bw_mib"]:
        a += ["--max-bandwidth", f"{s['bw_mib']}M/s"]
    a += ["--downtime-limit", f"{s['downtime_ms']}ms"]
    if s["shift"] is not None:
        a += ["--clear-bitmap-shift", str(s["shift"])]
    if s["auto_converge"]:
        a += ["--auto-converge"]
    a += ["--debug-check-source"]
    if faults:
        for f in s["faults"]:
            if f["kind"] in ("hot-add", "resize"):
                ms = int(f["when"] * expected_secs(s) * 1000)
                a += ["--debug-hotplug",
                      f"{'add' if f['kind'] == 'hot-add' else 'resize'}:"
                      f"{ms}"]
    return a


def common_args(s, faults=True):
    a = []
    if s["mode"] != "precopy":
        a += ["--mode", "postcopy" if s["mode"] in ("postcopy", "preempt")
              else "hybrid", "--recover-timeout", "3s"]
        if s["mode"] == "preempt":
            a += ["--preempt"]
        if faults:
            for f in s["faults"]:
                if f["kind"] == "postcopy-disconnect":
                    a += ["--inject-disconnect-after",
                          f"{int(f['arg'] * 300)}ms"]
    if s["workload"] == "kvm":
        a += ["--workload", "kvm"]
    if s.get("channels", 1) > 1:
        a += ["--channels", str(s["channels"])]   # both sides
    if s.get("io_timeout_ms"):
        # both sides: the receiver's io_timeout_ms too (a destination
        # that hears nothing for that long fails and closes)
        a += ["--io-timeout-ms", str(s["io_timeout_ms"])]
    return a


def expected_secs(s):
    """Roughly how long the migration runs here: faults are timed as
    a share of it."""
    bw = (s["bw_mib"] or 1500) * MiB
    return 0.05 + 0.7 * s["total"] / bw


# ---- running one scenario ------------------------------------------------

class Proc:
    """A migram-sim process; stderr lines are kept and can be waited on."""

    def __init__(self, args, env, preexec=None):
        self.args = args
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env=env, preexec_fn=preexec,
                                  errors="replace")
        self.out, self.err = [], []
        self.cond = threading.Condition()
        self.killed_by_us = False
        self.fault_killed = False   # kill -9 as a fault, not the watchdog
        self.stacks = ""
        self.ended_at = None
        self.threads = [threading.Thread(target=self._pump,
                                         args=(self.p.stdout, self.out),
                                         daemon=True),
                        threading.Thread(target=self._pump,
                                         args=(self.p.stderr, self.err),
                                         daemon=True)]
        for t in self.threads:
            t.start()

    def _pump(self, f, keep):
        for line in f:
            with self.cond:
                keep.append(line)
                self.cond.notify_all()
        if keep is self.err:
            self.ended_at = time.monotonic()   # about when it exited

    def wait_line(self, needle, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while not any(needle in x for x in self.err):
                left = end - time.monotonic()
                if left <= 0 or self.p.poll() is not None:
                    return any(needle in x for x in self.err)
                self.cond.wait(min(left, 0.05))
            return True

    def signal(self, sig):
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
            except ProcessLookupError:
                pass

    def kill(self):
        if self.p.poll() is None:
            self.killed_by_us = True
            self.signal(signal.SIGKILL)

    def finish(self, deadline):
        """Exit code, or None if the deadline passed (then killed)."""
        try:
            rc = self.p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            self.stacks = stacks(self.p.pid)
            kid = child_of(self.p.pid)   # a forked destination
            if kid:
                self.stacks += "\n--- its forked destination\n" + \
                    stacks(kid)
                try:
                    os.kill(kid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.kill()
            self.p.wait()
            rc = None
        for t in self.threads:
            t.join(timeout=5)
        return rc

    def stderr(self):
        return "".join(self.err)

    def stdout(self):
        return "".join(self.out)


class CutProxy:
    """TCP proxy 127.0.0.1:port -> 127.0.0.1:target that acts once, at
    source byte `at`: counted over every connection from the source, or,
    with `conn`, over the connection accepted conn-th only (0 is main,
    then preempt, then the data channels, as sim/link.c connects them).

    A cut shuts both ends of that connection, as a dead link's reset
    would.  A black hole (`hole`) instead stops forwarding on every
    connection open at that moment, both ways, and keeps their sockets
    open: the peers see no error, only no progress.  Connections made
    later (preempt, a reconnect) pass untouched.  release() closes what
    the hole holds (the driver calls it once the source has ended, so
    that a destination without an I/O timeout of its own ends too)."""

    def __init__(self, target, at, conn=None, hole=False):
        self.target, self.at, self.conn, self.hole = target, at, conn, hole
        self.sent = 0
        self.cut_done = False
        self.hole_t = None      # monotonic time of the black hole
        self.hole_upto = -1     # connections up to this one are held
        self.nconn = 0
        self.socks = []
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                d = socket.create_connection(("127.0.0.1", self.target),
                                             timeout=5)
                d.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                cid = self.nconn
                self.nconn += 1
                self.socks += [c, d]
            threading.Thread(target=self._pump, args=(c, d, True, cid),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(d, c, False, cid),
                             daemon=True).start()
            del c, d   # the pumps own them: closed when both end

    def _held(self, cid):
        with self.lock:
            return self.hole_t is not None and cid <= self.hole_upto

    def _pump(self, a, b, counted, cid):
        try:
            while True:
                data = a.recv(1 << 18)
                if not data:
                    break
                if self._held(cid):
                    # black hole: this data never arrives, nor any more
                    self.released.wait()
                    return
                cut = False
                if counted and (self.conn is None or self.conn == cid):
                    with self.lock:
                        cut = (not self.cut_done and
                               self.sent + len(data) >= self.at)
                        n = self.at - self.sent if cut else len(data)
                        self.sent += n
                        if cut:
                            self.cut_done = True
                            if self.hole:
                                self.hole_t = time.monotonic()
                                self.hole_upto = self.nconn - 1
                if cut and self.hole:
                    b.sendall(data[:n])
                    self.released.wait()
                    return
                if cut:
                    # a cut: both ends closed, as a dead link's
                    # reset would
                    b.sendall(data[:n])
                    for so in (a, b):
                        try:
                            so.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        so.close()
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for so in (a, b):
                try:
                    so.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def release(self):
        """The held connections end (shut both ways)."""
        self.released.set()

    def close(self):
        self.closed = True
        self.released.set()
        self.ls.close()


def fsize_limit(limit):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def run_once(s, opts, work, faults=True):
    """Run the scenario; a dict of what happened (not yet judged)."""
    env = dict(os.environ)
    env["TORTURE_TAG"] = f"{s['seed']}-{os.getpid()}-{random.random()}"
    sim = opts.sim
    src_json = os.path.join(work, "src.json")
    dst_json = os.path.join(work, "dst.json")
    for p in (src_json, dst_json):
        if os.path.exists(p):
            os.unlink(p)
    fl = s["faults"] if faults else []
    kinds = {f["kind"]: f for f in fl}
    res = {"events": [], "dst": None, "fired": []}
    budget = 60 + 4 * expected_secs(s) + (12 if s["mode"] != "precopy"
                                          else 0)
    preexec = None
    a = source_args(s, work, faults) + common_args(s, faults)
    proxy = None
    if s["transport"] == "file":
        path = os.path.join(work, "stream.bin")
        if "file-enospc" in kinds:
            path = "/dev/full"
        if "file-short-write" in kinds:
            # memfd blocks count against the limit too: above the largest
            limit = int(kinds["file-short-write"]["arg"] * s["total"] * 0.9)
            limit += max(sz for _, sz in s["blocks"])
            preexec = fsize_limit(limit)
            res["events"].append(f"RLIMIT_FSIZE {limit}")
        a += ["--transport", f"file:{path}"]
    elif s["transport"] == "tcp":
        a += ["--transport", f"tcp:127.0.0.1:{free_port()}"]
    elif s["transport"] == "socketpair":
        a += ["--transport", "socketpair"]
    start = time.monotonic()
    deadline = start + budget
    if s["transport"] == "tcp-roles":
        port = free_port()
        dst = Proc([sim, "--role", "destination", "--json", dst_json,
                    "--transport", f"tcp:127.0.0.1:{port}",
                    "--threads", str(s["threads"])] + common_args(s, faults),
                   env)
        sport = port
        if "cut-at-byte" in kinds:
            at = max(1, int(kinds["cut-at-byte"]["arg"] * s["total"] * 0.8))
            proxy = CutProxy(port, at)
            sport = proxy.port
            res["events"].append(f"cut at byte {at}")
        elif "black-hole" in kinds:
            at = max(1, int(kinds["black-hole"]["arg"] * s["total"] * 0.8))
            proxy = CutProxy(port, at, hole=True)
            sport = proxy.port
            res["events"].append(f"black hole at byte {at}")
        elif "cut-data-channel" in kinds:
            f = kinds["cut-data-channel"]
            nch = s["channels"]
            conn = 1 + (s["mode"] == "preempt") + int(f["when"] * nch)
            at = max(1, int(f["arg"] * s["total"] * 0.8 / nch))
            proxy = CutProxy(port, at, conn=conn)
            sport = proxy.port
            res["events"].append(f"cut connection {conn} (a data "
                                 f"channel) at its byte {at}")
        src = Proc([sim, "--role", "source", "--json", src_json,
                    "--transport", f"tcp:127.0.0.1:{sport}"] + a, env)
    else:
        dst = None
        src = Proc([sim, "--json", src_json] + a, env, preexec)
    res["switched"] = False
    inject(s, fl, src, dst, res, start)
    rc = src.finish(deadline)
    if proxy:
        proxy.release()
    drc = None
    if dst is None:
        # A forked destination outliving its source (one killed, or
        # ended by a signal before the run started) is stopped: found
        # by this scenario's own tag in its environment.
        time.sleep(0.3)
        for pid in tagged(env["TORTURE_TAG"]):
            try:
                os.kill(pid, signal.SIGKILL)
                res["events"].append("forked destination outlived its "
                                     "source: stopped")
            except ProcessLookupError:
                pass
    res["rc"] = rc
    if dst:
        # A destination outlives its source by a bounded time (its
        # recover-timeout, then the report).  One that holds no
        # connection 2 s after the source ended is a listener whose
        # source never reached it (killed or stopped before connecting).
        ended = time.monotonic()
        grace = ended + 15 + (6 if s["mode"] != "precopy" else 0)
        while dst.p.poll() is None and time.monotonic() < min(grace,
                                                              deadline):
            if time.monotonic() > ended + 2 and not dst.err and \
                    not established(dst.p.pid):
                res["events"].append("destination never connected: "
                                     "stopped")
                break
            time.sleep(0.1)
        if dst.p.poll() is None and time.monotonic() >= min(grace,
                                                            deadline):
            res["dst_connected"] = established(dst.p.pid)
            res["dst_hung"] = True
        drc = dst.finish(time.monotonic())
    if proxy:
        proxy.close()
    res["elapsed"] = time.monotonic() - start
    # what took effect: the external faults say so as they fire; the
    # rest by their traces
    err = src.stderr()
    jj = {}
    try:
        with open(src_json) as f:
            jj = json.load(f)
    except (OSError, ValueError):
        pass
    if proxy and proxy.cut_done:
        k = "black-hole" if proxy.hole else \
            "cut-data-channel" if proxy.conn is not None else "cut-at-byte"
        res["fired"].append(k)
        if proxy.hole:
            res["hole_t"] = proxy.hole_t
    res["src_end"] = src.ended_at or time.monotonic()
    if "hot-added block" in err:
        res["fired"].append("hot-add")
    if "resized block" in err:
        res["fired"].append("resize")
    if "file-enospc" in kinds and "No space left" in err + \
            (jj.get("error") or ""):
        res["fired"].append("file-enospc")
    if "file-short-write" in kinds and rc not in (0, None):
        res["fired"].append("file-short-write")
    if "postcopy-disconnect" in kinds and jj.get("postcopy_recoveries"):
        res["fired"].append("postcopy-disconnect")
    res["rc"], res["drc"] = rc, drc
    res["src_err"], res["src_out"] = src.stderr(), src.stdout()
    res["stacks"] = src.stacks + (dst.stacks if dst else "")
    res["src_killed"] = src.fault_killed
    res["dst_killed"] = dst.fault_killed if dst else False
    res["dst_any_kill"] = dst.killed_by_us if dst else False
    res["dst_err"] = dst.stderr() if dst else ""
    res["dst_out"] = dst.stdout() if dst else ""
    res["has_dst"] = dst is not None
    logs = res["src_err"] + res["dst_err"]
    res["switched"] = res["switched"] or any(
        x in logs for x in ("switched to postcopy", "postcopy running",
                            "postcopy paused"))
    try:
        with open(src_json) as f:
            res["json"] = json.load(f)
    except (OSError, ValueError):
        res["json"] = None
    j = res["json"] or {}
    if j.get("postcopy_time_ms") or any(
            x.get("postcopy") for x in j.get("timeline") or []):
        res["switched"] = True
    return res


def stacks(pid):
    """Every thread's backtrace of a hung process, if gdb is there."""
    try:
        r = subprocess.run(["gdb", "-batch", "-p", str(pid), "-ex",
                            "thread apply all bt 12"], capture_output=True,
                           text=True, timeout=60, errors="replace")
        return "\n".join(x for x in r.stdout.splitlines()
                         if x.startswith(("#", "Thread")))
    except (OSError, subprocess.TimeoutExpired):
        return ""


def established(pid):
    """Whether process pid holds an established TCP connection."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                t = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if t.startswith("socket:["):
                inodes.add(t[8:-1])
        for tab in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(tab) as f:
                for line in f.readlines()[1:]:
                    x = line.split()
                    if x[3] == "01" and x[9] in inodes:
                        return True
    except OSError:
        pass
    return False


def tagged(tag):
    """The processes whose environment carries TORTURE_TAG=tag."""
    want = f"TORTURE_TAG={tag}".encode()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if want in f.read().split(b"\0"):
                    pids.append(int(d))
        except OSError:
            pass
    return pids


def child_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None
    except OSError:
        return None


def inject(s, faults, src, dst, res, start):
    """Inject the external faults at their times, in order."""
    est = expected_secs(s)
    plan = []
    for f in faults:
        k = f["kind"]
        if k in ("kill-source", "kill-destination", "stall-destination",
                 "cancel"):
            plan.append((f["when"] * est, f))
    plan.sort(key=lambda x: x[0])
    for delay, f in plan:
        if f["post"]:
            # after the switch: wait for the source to say so (two
            # processes), or for its timeline (one process: time only)
            if dst is not None:
                if not src.wait_line("switched to postcopy", 30):
                    res["events"].append(f"{f['kind']}: no switch seen")
                    continue
                res["switched"] = True
                t0 = time.monotonic()
                delay = f["arg"] * 0.3
            else:
                t0 = start
        else:
            t0 = start
        while time.monotonic() < t0 + delay and src.p.poll() is None:
            time.sleep(0.005)
        if src.p.poll() is not None:
            res["events"].append(f"{f['kind']}: source already ended")
            continue
        k = f["kind"]
        t = time.monotonic() - start
        if k == "kill-source":
            src.fault_killed = True
            src.kill()
            res["events"].append(f"kill -9 source at {t:.2f}s")
            res["fired"].append("kill-source")
        elif k == "kill-destination":
            dst.fault_killed = True
            dst.kill()
            res["events"].append(f"kill -9 destination at {t:.2f}s")
            res["fired"].append("kill-destination")
        elif k == "stall-destination":
            pid = dst.p.pid if dst else child_of(src.p.pid)
            if pid is None:
                continue
            secs = 1 + f["arg"] * 3
            try:
                os.kill(pid, signal.SIGSTOP)
                res["fired"].append("stall-destination")
                res["events"].append(f"SIGSTOP destination at {t:.2f}s "
                                     f"for {secs:.1f}s")
                time.sleep(secs)
            finally:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        elif k == "cancel":
            sig = signal.SIGINT if f["arg"] < 0.5 else signal.SIGTERM
            src.signal(sig)
            res["cancel_sig"] = sig
            res["fired"].append("cancel")
            res["events"].append(f"{signal.Signals(sig).name} source at "
                                 f"{t:.2f}s")


# ---- the oracle ----------------------------------------------------------

HUGE_SHORT = "hugetlb pages of 2 MiB, the host has"
# seconds past io_timeout_ms within which a black-holed source must fail:
# the socket buffers fill first (a few MiB), and a loaded machine is slow
BLACK_HOLE_MARGIN = 6


def verdict(s, res, opts, work):
    """(ok, outcome, why); outcome in completed, failed-as-expected,
    recovered, split, no-hugepages, lost-writes, hang, crash, wrong."""
    rc, drc = res["rc"], res["drc"]
    j = res["json"] or {}
    logs = res["src_err"] + res["dst_err"]
    if HUGE_SHORT in (j.get("error") or "") + logs:
        # another process took the huge pages after the draw
        return True, "no-hugepages", "huge pages gone: not run"

    if SAN_RE.search(logs):
        m = SAN_RE.search(logs)
        return False, "crash", f"sanitizer report: {logs[m.start():][:300]}"
    if rc is None or res.get("dst_hung"):
        return False, "hang", (f"watchdog: source rc {rc}, destination "
                               f"rc {drc} after {res['elapsed']:.0f}s")
    sig = res.get("cancel_sig")
    if sig and rc == -sig:
        rc = 128 + sig   # a signal before the run started: its default
    for who, code, killed in (("source", rc, res["src_killed"]),
                              ("destination", drc, res["dst_any_kill"])):
        if code is None or killed:
            continue
        if code < 0 or (code >= 128 and code not in (130, 143)) or \
                code == 2:
            return False, "crash", f"{who} exit {code}"
    detail = j.get("verify_detail") or ""
    if "differs" in detail or "missing or of another size" in detail or \
            "differs" in res["src_out"]:
        return False, "lost-writes", f"verification: {detail}"
    if rc == 0:
        if not j.get("verified"):
            if s["transport"] == "file":
                return True, "completed", "file: saved and restored"
            return False, "wrong", f"exit 0 but not verified: {j}"
        if res["has_dst"] and drc not in (0, None) and not res["dst_killed"]:
            return False, "wrong", f"source verified, destination exit {drc}"
        rec = j.get("postcopy_recoveries") or 0
        return True, "recovered" if rec else "completed", \
            f"verified: {detail}"
    # it failed
    if "black-hole" in res["fired"] and not res["switched"] and \
            j.get("status") != "completed" and \
            not res.get("cancel_sig") and not res["src_killed"]:
        # (a cancel or a kill -9 of the source may end it first: then
        # the rules of those apply; campaign C, seed 30200118)
        # the oracle of a black hole before the switch: the source fails
        # with a "stalled" error within its io_timeout_ms (+ a margin for
        # the socket buffers to fill and a loaded machine), then the
        # checks below (guest running, memory intact, a second attempt)
        err = (j.get("error") or "") + res["src_err"]
        took = res["src_end"] - res["hole_t"]
        limit = s["io_timeout_ms"] / 1000 + BLACK_HOLE_MARGIN
        res["events"].append(f"source ended {took:.1f}s after the hole")
        others = set(res["fired"]) - {"black-hole"}
        # another fault (a resize, a stalled destination) may end the
        # migration first, with its own error (campaign C, seed 30200170)
        # The destination's own I/O timeout may end it first: it closes,
        # and the proxy passes that close on (a real black hole would
        # not), so the source finds its return path lost while switching
        # (seed 83756148): the same outcome, the guest kept.
        if "stalled" not in err and not others and \
                "while switching to postcopy" not in err:
            return False, "wrong", ("black hole: no \"stalled\" error "
                                    f"(exit {rc}): {err.strip()[-200:]}")
        if took > limit:
            return False, "wrong", (f"black hole: the source took {took:.1f}"
                                    f" s to fail (limit {limit:.1f} s)")
    if j.get("status") == "completed" and rc == 1 and \
            (set(PROXY_FAULTS) & set(res["fired"]) or res["dst_killed"]):
        # The source completed, then the connection died before the
        # destination's hashes came back.  Every scenario over a socket
        # runs with a return path (migram-sim's default), so "completed"
        # means the destination answered SHUT 0: it had loaded the whole
        # stream.  An unacknowledged completion (the destination's load
        # failed, yet the source completed) is wrong; it was accepted as
        # "unacked-completion" before the return path existed.
        # (a postcopy pause the destination recovered from names its end
        # of stream too: not a failed load; campaign C, seed 30200195)
        dst = "".join(x for x in (res["dst_out"] + res["dst_err"])
                      .splitlines(True) if "postcopy paused" not in x)
        if s["transport"] == "file" or "end of stream" in dst or \
                "stream byte" in dst:
            return False, "wrong", (
                "source completed but the destination's load failed: "
                f"{dst.strip()[-160:]}")
        return True, "acked-unverified", (
            "destination confirmed the load (SHUT 0), then the "
            "connection died before its hashes came back: "
            f"{(j.get('error') or '')[:100]}")
    if res["src_killed"] and not res["switched"]:
        return retry(s, opts, work, "source killed before the switch")
    if res["switched"]:
        # after the switch: both sides report the split and exit in time
        codes = {rc, drc} - {None}
        if res["src_killed"] or res["dst_killed"]:
            surv = ("destination", drc, res["dst_out"] + res["dst_err"]) \
                if res["src_killed"] else ("source", rc,
                                           res["src_out"] + res["src_err"])
            if surv[1] in (4, 1, 130, 143) and \
                    ("reconnect" in surv[2] or "paused" in surv[2] or
                     "error" in surv[2]):
                return True, "split", (f"{surv[0]} exit {surv[1]} after "
                                       "the other was killed")
            if surv[0] == "destination" and surv[1] == 0:
                # the source died after its last page: the destination
                # completed and runs the guest (no hashes to compare)
                return True, "split", ("destination completed, source "
                                       "killed after its last page")
            return False, "wrong", f"survivor {surv[0]} exit {surv[1]}"
        if codes <= {1, 3, 4, 130, 143}:
            # neither finished: each printed its report with the reason
            return True, "split", f"after the switch: exit {rc}/{drc}"
        if rc in (130, 143) and drc == 0:
            # cancelled after the last page left: the destination has
            # it all and runs the guest; the source says it was stopped
            return True, "split", ("after the switch: source cancelled, "
                                   "destination completed")
        return False, "wrong", (f"after the switch: exit {rc}/{drc}: "
                                f"{(j.get('error') or '')[:300]}")
    # before the switch, the source alive: it ran its self-check
    if rc not in (1, 3, 130, 143):
        return False, "wrong", f"source exit {rc} before the switch"
    if s["workload"] != "kvm":
        m = re.search(r"torture: source check: (.*)", res["src_err"])
        if not m and rc in (130, 143) and sig:
            return retry(s, opts, work, "cancelled before the guest ran")
        if not m and j.get("status") in ("setup", "none") and \
                j.get("error"):
            return retry(s, opts, work, "failed before the migration "
                         f"started: {j['error'][:120]}")
        if not m:
            return False, "wrong", ("failed, but no source check line "
                                   f"(exit {rc}, status {j.get('status')}"
                                   f", error {j.get('error')})")
        if "NOT RUNNING" in m.group(1) and (res["has_dst"] or
                                            s["mode"] == "precopy"):
            return False, "wrong", f"guest not resumed: {m.group(1)}"
        # One process in postcopy: the switch is not announced, so a
        # source whose guest stays paused may have switched (the
        # destination ran it); only two-process runs can tell.
        if "CORRUPT" in m.group(1):
            return False, "lost-writes", f"source memory: {m.group(1)}"
    return retry(s, opts, work, f"failed before the switch (exit {rc})")


def retry(s, opts, work, why):
    """A failure before the switch: the same scenario without its
    faults must complete and verify."""
    res2 = run_once(s, opts, work, faults=False)
    ok, outcome, why2 = verdict_plain(s, res2)
    if not ok and HUGE_SHORT in ((res2["json"] or {}).get("error") or "") + \
            res2["src_err"]:
        return True, "no-hugepages", f"{why}; second attempt: huge pages gone"

    if ok:
        return True, "failed-as-expected", f"{why}; second attempt {why2}"
    return False, outcome, f"{why}; second attempt: {why2}"


def verdict_plain(s, res):
    j = res["json"] or {}
    logs = res["src_err"] + res["dst_err"]
    if SAN_RE.search(logs):
        return False, "crash", "sanitizer report in the second attempt"
    if res["rc"] is None:
        return False, "hang", "second attempt: watchdog"
    if "differs" in (j.get("verify_detail") or ""):
        return False, "lost-writes", j.get("verify_detail")
    if res["rc"] == 0 and (j.get("verified") or s["transport"] == "file"):
        return True, "completed", "completed and verified"
    return False, "wrong", (f"exit {res['rc']}/{res['drc']}: "
                            f"{(j.get('error') or res['src_err'])[-300:]}")


def run_scenario(seed, opts, caps):
    caps = dict(caps)
    # huge pages come and go with other users: what is free now, shared
    # among the scenarios running at once
    caps["hugepages_free"] = probe()["hugepages_free"] // max(opts.jobs, 1)
    s = draw(seed, caps)
    if opts.no_fork and s["transport"] in ("socketpair", "tcp"):
        # Under ASan a forked destination can deadlock in the
        # sanitizer's allocator lock inherited across fork()
        # (docs/reliability.md): two processes started apart instead
        s["transport"] = "tcp-roles"
        s["notes"].append("--no-fork: tcp-roles")
    with tempfile.TemporaryDirectory(prefix=f"torture-{seed}-",
                                     dir=opts.workdir) as work:
        res = run_once(s, opts, work)
        ok, outcome, why = verdict(s, res, opts, work)
    return {"seed": seed, "scenario": s, "desc": describe(s), "ok": ok,
            "outcome": outcome, "why": why, "events": res["events"],
            "elapsed": round(res["elapsed"], 2), "fired": res["fired"],
            "stderr": "" if ok else (res["src_err"][-3000:] + "\n--- dst\n"
                                     + res["dst_err"][-2000:]),
            "stacks": res["stacks"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sim", required=True)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--json", help="write every result here")
    ap.add_argument("--time-limit", type=float, default=0,
                    help="start no scenario after this many seconds")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("--no-fork", action="store_true",
                    help="run forked transports as two processes (ASan)")
    opts = ap.parse_args()
    if opts.seed is None:
        opts.seed = random.SystemRandom().randrange(1, 1 << 31)
    caps = probe()
    print(f"torture: {opts.runs} scenarios from seed {opts.seed} "
          f"(kvm {'yes' if caps['kvm'] else 'no'}, userfaultfd "
          f"{'yes' if caps['uffd'] else 'no'}, "
          f"{caps['hugepages_free']} huge pages free), {opts.jobs} at once",
          flush=True)
    t0 = time.monotonic()
    results = []
    lock = threading.Lock()

    def one(seed):
        if opts.time_limit and time.monotonic() - t0 > opts.time_limit:
            return None
        try:
            r = run_scenario(seed, opts, caps)
        except Exception as e:  # a driver bug must not hide the others
            import traceback
            r = {"seed": seed, "scenario": {"faults": []}, "desc": "?",
                 "ok": False, "outcome": "driver-error", "why": repr(e),
                 "events": [], "elapsed": 0,
                 "stderr": traceback.format_exc(), "stacks": ""}
        with lock:
            results.append(r)
            mark = "ok  " if r["ok"] else "FAIL"
            print(f"{mark} seed {r['seed']}: {r['desc']} -> {r['outcome']}"
                  f" [{r['elapsed']:.1f}s]"
                  + (f" {'; '.join(r['events'])}" if r["events"] else ""),
                  flush=True)
            if not r["ok"] or opts.verbose:
                print(f"     why: {r['why']}", flush=True)
            if not r["ok"]:
                print("     replay: make torture TORTURE_RUNS=1 "
                      f"TORTURE_SEED={r['seed']}", flush=True)
                for line in r["stderr"].splitlines()[-12:]:
                    print(f"     | {line}", flush=True)
                for line in r["stacks"].splitlines()[:60]:
                    print(f"     > {line}", flush=True)
        return r

    with ThreadPoolExecutor(max_workers=opts.jobs) as ex:
        list(ex.map(one, range(opts.seed, opts.seed + opts.runs)))
    summarize(results, opts, time.monotonic() - t0)
    failed = sum(not r["ok"] for r in results)
    print(f"torture: {len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def summarize(results, opts, secs):
    faults, outcomes, fired = {}, {}, {}
    for r in results:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        for k in r.get("fired", []):
            fired[k] = fired.get(k, 0) + 1
        for f in r["scenario"]["faults"]:
            k = f["kind"] + ("/post" if f["post"] else "")
            faults[k] = faults.get(k, 0) + 1
    lost = outcomes.get("lost-writes", 0)
    print(f"torture: {len(results)} scenarios in {secs:.0f} s; faults: "
          + ", ".join(f"{k} {v}" for k, v in sorted(faults.items())))
    print("torture: faults that took effect: "
          + ", ".join(f"{k} {v}" for k, v in sorted(fired.items())))
    print("torture: outcomes: "
          + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
          + f"; lost writes {lost}, hangs {outcomes.get('hang', 0)}, "
          f"crashes {outcomes.get('crash', 0)}")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"seconds": secs, "faults": faults, "fired": fired,
                       "outcomes": outcomes, "results": results}, f,
                      indent=1, default=str)


if __name__ == "__main__":
    main()
