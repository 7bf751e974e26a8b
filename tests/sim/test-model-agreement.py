#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Model mode against real mode (TAP), suite model-agreement.

Each scenario runs in real mode three times and in model mode once.  The
model's total time must be within 25 % of real mode's median, and its
downtime within 50 % of real mode's median or 25 ms of it, whichever is
wider (docs/simulator-model.md, "How its figures compare with real mode").

Why this is sound on a loaded machine: every scenario has a rate limit
(--max-bandwidth) well below what this machine moves unlimited, so real
mode's total time is set by the limit, not by the CPU; the downtime, sent
unlimited, is CPU-bound but short, which the 25 ms floor absorbs; the
median of three real runs drops one run disturbed by other load.  The
model is deterministic and runs on the calibrated defaults
(MIGRAM_MODEL_COSTS is removed from its environment).  Zero pages take part
through the default pattern fill (every fourth page starts zero); a zero
fill's first pass is CPU-bound and lasts tens of milliseconds, too short
to compare under load, so it is left to test-model's cases.

Postcopy and hybrid: the switch lifts the rate limit, so the postcopy
phase is CPU-bound.  In hybrid it is short (tens of ms after a limited
pass).  The postcopy scenario is CPU-bound end to end (about 300 ms on a
quiet machine): its real time measures the machine's speed, not the
algorithm, so it is run and printed but not held to the tolerance (it was
+16 % and +30 % in two quiet runs; docs/simulator-model.md).  Fault
figures are printed, not compared.

Usage: test-model-agreement.py MIGRAM_SIM [--table]
  --table  print the comparison as a Markdown table (docs)."""
import json
import os
import statistics
import subprocess
import sys
import tempfile

SIM = sys.argv[1]
TABLE = "--table" in sys.argv[2:]
REAL_RUNS = 3

SCENARIOS = [
    ("hotset 40M/s, 100M/s",
     ["--ram", "256M", "--workload", "hotset", "--dirty-rate", "40M/s",
      "--max-bandwidth", "100M/s"]),
    ("uniform 20M/s, 200M/s",
     ["--ram", "256M", "--workload", "uniform", "--dirty-rate", "20M/s",
      "--max-bandwidth", "200M/s"]),
    ("hotset 40M/s, 1Gbit/s, 512M",
     ["--ram", "512M", "--workload", "hotset", "--dirty-rate", "40M/s",
      "--max-bandwidth", "1Gbit/s"]),
    ("uniform 60M/s, 40M/s, auto-converge, 128M",
     ["--ram", "128M", "--workload", "uniform", "--dirty-rate", "60M/s",
      "--max-bandwidth", "40M/s", "--auto-converge"]),
    # one rate-limited pass, then postcopy: the switch's discards and the
    # postcopy tail are short and unlimited
    ("hybrid, hotset 40M/s, 100M/s",
     ["--ram", "256M", "--workload", "hotset", "--dirty-rate", "40M/s",
      "--max-bandwidth", "100M/s", "--mode", "hybrid"]),
    # everything in postcopy, unlimited (the switch lifts the limit): the
    # one CPU-bound scenario, see the docstring
    ("postcopy, hotset 40M/s",
     ["--ram", "256M", "--workload", "hotset", "--dirty-rate", "40M/s",
      "--max-bandwidth", "100M/s", "--mode", "postcopy"]),
]

# CPU-bound scenarios: run and printed, not held to the tolerance.
REPORT_ONLY = {"postcopy, hotset 40M/s"}


def run(work, *args):
    path = os.path.join(work, "r.json")
    env = dict(os.environ)
    env.pop("MIGRAM_MODEL_COSTS", None)
    r = subprocess.run([SIM, "--quiet", "--max-time", "120", "--json", path,
                        *args], capture_output=True, text=True,
                       timeout=300, check=False, env=env)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {r.returncode}: "
                             f"{r.stderr.strip()}")
    with open(path) as f:
        return json.load(f)


def compare(work, args):
    reals = [run(work, *args) for _ in range(REAL_RUNS)]
    model = run(work, "--model", *args)
    total = statistics.median(r["total_time_ms"] for r in reals)
    down = statistics.median(r["downtime_ms"] for r in reals)
    faults = [(r["faults"], r["fault_latency_p50_us"]) for r in reals]
    return total, down, model, faults


def main():
    print(f"1..{len(SCENARIOS)}")
    bad = 0
    rows = []
    for i, (name, args) in enumerate(SCENARIOS, 1):
        with tempfile.TemporaryDirectory() as work:
            try:
                total, down, m, faults = compare(work, args)
                mt, md = m["total_time_ms"], m["downtime_ms"]
                rows.append((name, total, mt, down, md))
                detail = (f"total real {total} ms model {mt} ms "
                          f"({(mt - total) / total * 100:+.0f} %), downtime "
                          f"real {down} ms model {md} ms")
                if name in REPORT_ONLY:
                    print(f"ok {i} - {name} # reported, not compared "
                          f"(CPU-bound)\n# {detail}")
                else:
                    assert abs(mt - total) <= 0.25 * total, detail
                    assert abs(md - down) <= max(0.5 * down, 25), detail
                    print(f"ok {i} - {name}\n# {detail}")
                if "--mode" in args:
                    print(f"# faults (p50 us): real {faults}, model "
                          f"({m['faults']}, {m['fault_latency_p50_us']})")
            except Exception as e:  # noqa: BLE001
                bad += 1
                print(f"not ok {i} - {name}\n# {e}")
    if TABLE:
        print("| scenario | total real | total model | diff "
              "| downtime real | downtime model |")
        print("|---|---|---|---|---|---|")
        for name, t, mt, d, md in rows:
            print(f"| {name} | {t} ms | {mt} ms | "
                  f"{(mt - t) / t * 100:+.1f} % | {d} ms | {md} ms |")
    return 1 if bad else 0


sys.exit(main())
