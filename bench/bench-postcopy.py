#!/usr/bin/env python3
"""Postcopy benchmark: fault latency with and without the preempt channel,
and precopy vs postcopy vs hybrid on the default scenario, in one run.

    bench/bench-postcopy.py BUILD/sim/migram-sim [GiB]

Each row is one migram-sim run over loopback TCP between two processes:

 1. fault latency under a background stream: a GiB-sized guest (4 by
    default) in pure postcopy, destination readers touching a hot set,
    without and with --preempt;
 2. `make run`'s scenario (2 GiB, hot-set writes at 200 MB/s) in precopy,
    postcopy and hybrid: total time and downtime.

Figures are printed as a markdown table; nothing is asserted.
"""
import json
import os
import subprocess
import sys
import tempfile

SIM = sys.argv[1]
GIB = int(sys.argv[2]) if len(sys.argv) > 2 else 4


def run(port, *args):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        r = subprocess.run([SIM, "--quiet", "--json", f.name,
                            "--transport", f"tcp:127.0.0.1:{port}", *args],
                           capture_output=True, text=True, timeout=900)
        j = json.load(open(f.name))
    if r.returncode != 0 or not j["verified"]:
        sys.exit(f"bench-postcopy: {args}: exit {r.returncode}: "
                 f"{j.get('error')} {r.stderr}")
    return j


def main():
    print(f"# fault latency, pure postcopy, {GIB} GiB guest, loopback TCP,"
          " 2 destination readers on a 5 % hot set")
    print("| preempt | faults | p50 us | p99 us | max us | blocked ms |"
          " postcopy ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    port = 47760
    for pre in ([], ["--preempt"]):
        j = run(port, "--ram", f"{GIB}G", "--mode", "postcopy",
                "--workload", "hotset", "--dirty-rate", "200M/s", *pre)
        port += 1
        print(f"| {'yes' if pre else 'no'} | {j['faults']} |"
              f" {j['fault_latency_p50_us']} | {j['fault_latency_p99_us']} |"
              f" {j['fault_latency_max_us']} | {j['blocked_ms']} |"
              f" {j['postcopy_time_ms']} |")
    print()
    print("# make run's scenario: 2 GiB, hot-set writes at 200 MB/s")
    print("| mode | total ms | downtime ms | postcopy ms | passes |"
          " transferred MiB | faults | p99 us |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mode in ("precopy", "postcopy", "hybrid"):
        j = run(port, "--ram", "2G", "--workload", "hotset",
                "--dirty-rate", "200M/s", "--mode", mode)
        port += 1
        print(f"| {mode} | {j['total_time_ms']} | {j['downtime_ms']} |"
              f" {j['postcopy_time_ms']} | {j['iterations']} |"
              f" {j['transferred_bytes'] >> 20} | {j['faults']} |"
              f" {j['fault_latency_p99_us']} |")


if __name__ == "__main__":
    main()
