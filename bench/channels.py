#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/channels.py: multi-channel transfer (issue 15) against raw
loopback TCP, measured in the same run, interleaved.

Each repetition runs, in this order:
  raw-tcp with 1 connection, raw-tcp with N connections (bench/raw-tcp.c:
  the same bytes, random data, fresh anonymous destination memory),
  migram-sim with --channels 1 (the main stream alone), 2 and 4
  (--workload idle --fill random: RAM of random data, nothing writes,
  fresh destination memory; loopback TCP).
Each row reports median [min-max] of GB/s of guest RAM moved (RAM bytes /
total time) and CPU seconds per GiB on each side, and the ratio to raw
single-connection TCP.  Results go to bench/results/channels-<UTC>.json.

Nothing else may run on the machine meanwhile (docs/performance.md).

usage: bench/channels.py [--size 4G] [--reps 5] [--conns 4]
                         [--sim build/sim/migram-sim]
                         [--raw build/bench/raw-tcp] [--out FILE]
Exit: 0 done, 1 a run failed.
"""
import argparse
import json
import os
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
    ap.add_argument("--out")
    opts = ap.parse_args()
    size = parse_size(opts.size)
    rows = [("raw-tcp-1", "raw", 1), (f"raw-tcp-{opts.conns}", "raw",
                                      opts.conns),
            ("migram-1", "sim", 1), ("migram-2", "sim", 2),
            ("migram-4", "sim", 4)]
    results = {name: [] for name, _, _ in rows}
    port = 47900
    with tempfile.TemporaryDirectory() as work:
        for rep in range(opts.reps):
            for name, kind, n in rows:
                port += 1  # a fresh port: no TIME_WAIT collisions
                try:
                    r = (run_raw(opts.raw, size, n, port) if kind == "raw"
                         else run_sim(opts.sim, opts.size, size, n, port,
                                      work))
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    print(f"{name}: {e}", file=sys.stderr)
                    return 1
                results[name].append(r)
                print(f"rep {rep + 1} {name:12s} {r['gbps']:.3f} GB/s",
                      flush=True)
    base = statistics.median(r["gbps"] for r in results["raw-tcp-1"])
    report = {"size": size, "reps": opts.reps,
              "utc": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
              "rows": {}}
    print(f"\n{'row':12s} {'GB/s median [min-max]':28s} {'/raw-1':>7s} "
          f"{'cpu src s/GiB':>14s} {'cpu dst s/GiB':>14s}")
    for name, _, _ in rows:
        rs = results[name]
        g = summary([r["gbps"] for r in rs])
        cs = summary([r["cpu_src_s_per_gib"] for r in rs])
        cd = summary([r["cpu_dst_s_per_gib"] for r in rs])
        report["rows"][name] = {"gbps": g, "ratio_to_raw_1":
                                g["median"] / base, "cpu_src_s_per_gib": cs,
                                "cpu_dst_s_per_gib": cd, "runs": rs}
        print(f"{name:12s} {g['median']:.3f} [{g['min']:.3f}-{g['max']:.3f}]"
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
