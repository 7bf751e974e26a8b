#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/channels.py: multi-channel transfer (issue 15) against raw
loopback TCP, measured in the same run, interleaved.

Each repetition runs, in this order:
  raw-tcp with 1 connection, raw-tcp with N connections (bench/raw-tcp.c:
  the same bytes, random data, fresh anonymous destination memory),
  migram-sim with --channels 1 (the main stream alone), 2 and 4
  (--workload idle --fill random: RAM of random data, nothing writes,
  fresh destination memory; loopback TCP), and, where QEMU 7.2 and
  /dev/kvm exist, QEMU with the same RAM size and content (random bytes
  from a /dev/shm file as its memory backend, preallocated so that it is
  mapped and resident as migram-sim's filled memory is; the guest in its
  firmware,
  destination memory-backend-ram with fresh memory): one stream, and multifd with 2 and 4
  channels (max-bandwidth unlimited, downtime-limit 300 ms).  QEMU's
  figure is RAM bytes / its own total-time, migram's RAM bytes / its
  total_time_ms: the same measure.
Each row reports median [min-max] of GB/s of guest RAM moved (RAM bytes /
total time) and CPU seconds per GiB on each side, and the ratio to raw
single-connection TCP.  Results go to bench/results/channels-<UTC>.json.

Nothing else may run on the machine meanwhile (docs/performance.md).

usage: bench/channels.py [--size 4G] [--reps 5] [--conns 4]
                         [--sim build/sim/migram-sim]
                         [--raw build/bench/raw-tcp] [--no-qemu] [--out FILE]
Exit: 0 done, 1 a run failed.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
GIB = 1 << 30


def parse_size(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)


def run_raw(raw, size, conns, port):
    out = subprocess.run([raw, str(size), str(conns), str(port)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f"raw-tcp failed: {out.stderr}")
    j = json.loads(out.stdout)
    return {"gbps": j["gbps"], "seconds": j["seconds"],
            "cpu_src_s_per_gib": j["cpu_src_s"] / (j["bytes"] / GIB),
            "cpu_dst_s_per_gib": j["cpu_dst_s"] / (j["bytes"] / GIB)}


def run_sim(sim, size_arg, size, channels, port, work):
    jpath = os.path.join(work, "sim.json")
    cmd = [sim, "--quiet", "--json", jpath, "--ram", size_arg,
           "--workload", "idle", "--fill", "random",
           "--transport", f"tcp:127.0.0.1:{port}",
           "--channels", str(channels)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(f"migram-sim failed: {out.stderr}")
    with open(jpath) as f:
        j = json.load(f)
    secs = j["total_time_ms"] / 1000.0
    gib = j["total_bytes"] / GIB
    return {"gbps": j["total_bytes"] / secs / 1e9, "seconds": secs,
            "transferred_bytes": j["transferred_bytes"],
            "cpu_src_s_per_gib": j["cpu_src_ms"] / 1000.0 / gib,
            "cpu_dst_s_per_gib": j["cpu_dst_ms"] / 1000.0 / gib}


QEMU = shutil.which("qemu-system-x86_64")


class Qmp:
    """QMP over a unix socket: commands and replies, events skipped."""

    def __init__(self, path, timeout=30):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rw")
        json.loads(self.file.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.file.write(json.dumps({"execute": name, "arguments": args})
                        + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error']}")
            return reply["return"]


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def qemu_fill(size, work):
    """The source's RAM: a /dev/shm file of random bytes (made once)."""
    path = f"/dev/shm/migram-bench-{os.getpid()}.ram"
    if not os.path.exists(path):
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, 64 << 20)
                f.write(os.urandom(n))
                left -= n
    return path


def run_qemu(size_arg, size, channels, work, shm):
    """One QEMU 7.2 migration over loopback TCP: channels 1 is the plain
    stream, more is multifd with that many channels."""
    base = [QEMU, "-accel", "kvm", "-nodefaults", "-display", "none",
            "-smp", "1"]
    src_qmp, dst_qmp = (os.path.join(work, f"{r}.qmp") for r in
                        ("src", "dst"))
    src = subprocess.Popen(base + [
        "-machine", "pc,memory-backend=mem", "-m", size_arg, "-object",
        f"memory-backend-file,id=mem,size={size_arg},mem-path={shm},"
        # prealloc: mapped and resident before the clock starts, as
        # migram-sim's source memory is after its fill (else QEMU's
        # source pays a minor fault per page during the migration)
        "share=on,prealloc=on",
        "-qmp", f"unix:{src_qmp},server=on,wait=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dst = subprocess.Popen(base + [
        # the same block name as the source's ("mem"), fresh memory
        "-machine", "pc,memory-backend=mem", "-m", size_arg, "-object",
        f"memory-backend-ram,id=mem,size={size_arg}", "-incoming", "defer",
        "-qmp", f"unix:{dst_qmp},server=on,wait=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        sq, dq = Qmp(src_qmp), Qmp(dst_qmp)
        for q in (sq, dq):
            if channels > 1:
                q.cmd("migrate-set-capabilities", capabilities=[
                    {"capability": "multifd", "state": True}])
                q.cmd("migrate-set-parameters",
                      **{"multifd-channels": channels})
        sq.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40,
                                            "downtime-limit": 300})
        dq.cmd("migrate-incoming", uri="tcp:127.0.0.1:0")
        port = dq.cmd("query-migrate")["socket-address"][0]["port"]
        time.sleep(0.5)  # the firmware runs, then idles
        c0 = (cpu_s(src.pid), cpu_s(dst.pid))
        sq.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        deadline = time.time() + 600
        while True:
            info = sq.cmd("query-migrate")
            st = info.get("status")
            if st == "completed" and info.get("total-time"):
                break
            if st in ("failed", "cancelled") or time.time() > deadline:
                raise RuntimeError(f"QEMU migration {st}: "
                                   f"{info.get('error-desc')}")
            time.sleep(0.02)
        c1 = (cpu_s(src.pid), cpu_s(dst.pid))
        secs = info["total-time"] / 1000.0
        gib = size / GIB
        return {"gbps": size / secs / 1e9, "seconds": secs,
                "transferred_bytes": info["ram"]["transferred"],
                "cpu_src_s_per_gib": (c1[0] - c0[0]) / gib,
                "cpu_dst_s_per_gib": (c1[1] - c0[1]) / gib}
    finally:
        for p in (src, dst):
            p.kill()
            p.wait()


def summary(vals):
    return {"median": statistics.median(vals), "min": min(vals),
            "max": max(vals)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4G")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--conns", type=int, default=4,
                    help="raw TCP connections in the N row")
    ap.add_argument("--sim", default=os.path.join(TOP, "build", "sim",
                                                  "migram-sim"))
    ap.add_argument("--raw", default=os.path.join(TOP, "build", "bench",
                                                  "raw-tcp"))
    ap.add_argument("--no-qemu", action="store_true",
                    help="leave out the QEMU rows")
    ap.add_argument("--out")
    opts = ap.parse_args()
    size = parse_size(opts.size)
    rows = [("raw-tcp-1", "raw", 1), (f"raw-tcp-{opts.conns}", "raw",
                                      opts.conns),
            ("migram-1", "sim", 1), ("migram-2", "sim", 2),
            ("migram-4", "sim", 4)]
    qemu_why = None if QEMU else "qemu-system-x86_64 is not installed"
    if not qemu_why and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        qemu_why = "no usable /dev/kvm"
    if opts.no_qemu:
        qemu_why = "--no-qemu"
    if qemu_why:
        print(f"QEMU rows left out: {qemu_why}", file=sys.stderr)
    else:
        rows += [("qemu-1", "qemu", 1), ("qemu-multifd-2", "qemu", 2),
                 ("qemu-multifd-4", "qemu", 4)]
    results = {name: [] for name, _, _ in rows}
    port = 47900
    shm = None
    with tempfile.TemporaryDirectory() as work:
        if not qemu_why:
            shm = qemu_fill(size, work)
        try:
            rc = run_rows(opts, rows, results, size, port, work, shm)
        finally:
            if shm:
                os.unlink(shm)
        if rc:
            return rc
    return report_rows(opts, rows, results, size, qemu_why)


def run_rows(opts, rows, results, size, port, work, shm):
    for rep in range(opts.reps):
        for name, kind, n in rows:
            port += 1  # a fresh port: no TIME_WAIT collisions
            try:
                r = (run_raw(opts.raw, size, n, port) if kind == "raw"
                     else run_qemu(opts.size, size, n, work, shm)
                     if kind == "qemu"
                     else run_sim(opts.sim, opts.size, size, n, port,
                                  work))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"{name}: {e}", file=sys.stderr)
                return 1
            results[name].append(r)
            print(f"rep {rep + 1} {name:15s} {r['gbps']:.3f} GB/s",
                  flush=True)
    return 0


def report_rows(opts, rows, results, size, qemu_why):
    base = statistics.median(r["gbps"] for r in results["raw-tcp-1"])
    report = {"size": size, "reps": opts.reps,
              "utc": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
              "qemu_left_out": qemu_why, "rows": {}}
    print(f"\n{'row':15s} {'GB/s median [min-max]':28s} {'/raw-1':>7s} "
          f"{'cpu src s/GiB':>14s} {'cpu dst s/GiB':>14s}")
    for name, _, _ in rows:
        rs = results[name]
        g = summary([r["gbps"] for r in rs])
        cs = summary([r["cpu_src_s_per_gib"] for r in rs])
        cd = summary([r["cpu_dst_s_per_gib"] for r in rs])
        report["rows"][name] = {"gbps": g, "ratio_to_raw_1":
                                g["median"] / base, "cpu_src_s_per_gib": cs,
                                "cpu_dst_s_per_gib": cd, "runs": rs}
        print(f"{name:15s} {g['median']:.3f} [{g['min']:.3f}-{g['max']:.3f}]"
              f"{'':8s} {g['median'] / base:7.2f} {cs['median']:14.3f} "
              f"{cd['median']:14.3f}")
    out = opts.out or os.path.join(
        HERE, "results", "channels-%s.json" %
        time.strftime("%Y%m%dT%H%MZ", time.gmtime()))
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
