#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Migrate the KVM micro-guest (migram-sim --workload kvm) with each
dirty-log variant and print what the KVM log cost and what the guest got
done: time per sync, number and time of clear ioctls, the guest's page
writes per second before and during the migration, total time, downtime.

Optionally (--qemu DIR) run QEMU's own migration of a boot-sector guest
with the same RAM and working set, in the same session, with DIR's
migbench.py (see /work/shared/peers/qemu/README.md), as the yardstick.

    bench-kvm-guest.py build/sim/migram-sim --ram 4G --working-set 1G \\
        --reps 3 [--qemu /work/shared/peers/qemu]

Never asserts a time; exits non-zero only when a run fails to verify."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

VARIANTS = {
    "clear-at-sync": ["--clear-at-sync"],
    "shift 18": ["--clear-bitmap-shift", "18"],
    "shift 12": ["--clear-bitmap-shift", "12"],
    "shift 6": ["--clear-bitmap-shift", "6"],
    "classic": ["--dirty-log", "classic"],
    "ring": ["--dirty-log", "ring"],
}


def size_bytes(s):
    mul = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(s[:-1]) * mul[s[-1].upper()]) if s[-1].isalpha() \
        else int(s)


def avail_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def med(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    m = statistics.median(xs)
    fmt = (lambda v: f"{v:.2f}") if m < 10 else (lambda v: f"{v:.0f}")
    return f"{fmt(m)} [{fmt(min(xs))}-{fmt(max(xs))}]" if len(xs) > 1 \
        else fmt(m)


def run_sim(sim, args, extra):
    with tempfile.TemporaryDirectory() as d:
        j = os.path.join(d, "r.json")
        cmd = [sim, "--quiet", "--json", j, "--ram", args.ram,
               "--workload", "kvm", "--threads", str(args.vcpus),
               "--working-set", args.working_set,
               "--max-time", str(args.max_time), *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        try:
            with open(j) as f:
                res = json.load(f)
        except (OSError, ValueError):
            res = {"status": "failed", "error": r.stderr.strip()}
        res["rc"] = r.returncode
        res["cmd"] = " ".join(["migram-sim"] + cmd[1:])
        return res


def sim_rows(args):
    bad = 0
    rows = []
    for name in args.variants.split(","):
        runs = [run_sim(args.sim, args, VARIANTS[name])
                for _ in range(args.reps)]
        ok = [r for r in runs if r["rc"] == 0]
        bad += len([r for r in runs if r["rc"] not in (0, 3)])
        # not converging (exit 3) still measured the log and the guest
        meas = [r for r in runs if r["rc"] in (0, 3) and "guest" in r]
        for r in runs:
            if r["rc"]:
                print(f"# {name}: rc {r['rc']}: {r.get('error')}",
                      file=sys.stderr)
        g = [r["guest"] for r in meas]
        rows.append((name, len(ok), len(runs), {
            "total ms": med([r["total_time_ms"] for r in ok]),
            "downtime ms": med([r["downtime_ms"] for r in ok]),
            "syncs": med([x["log_syncs"] for x in g]),
            "ms/sync": med([x["log_sync_ns"] / 1e6 / max(x["log_syncs"], 1)
                            for x in g]),
            "max ms/sync": med([x["log_sync_ns_max"] / 1e6 for x in g]),
            "clear ioctls": med([x["log_clear_ioctls"] for x in g]),
            "clear ms total": med([x["log_clear_ns"] / 1e6 for x in g]),
            "ring entries": med([x["log_harvested"] for x in g]),
            "guest writes/s before": med([x["rate_before"] for x in g]),
            "guest writes/s migrating": med([x["rate_during"] for x in g]),
            "GiB sent": med([r["transferred_bytes"] / 2**30 for r in meas]),
        }, runs[0]["cmd"]))
    cols = list(rows[0][3].keys())
    print("| variant | completed | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, nok, n, vals, _ in rows:
        print(f"| {name} | {nok}/{n} | " +
              " | ".join(vals[c] for c in cols) + " |")
    print()
    for name, _, _, _, cmd in rows:
        print(f"# {name}: {cmd}")
    return bad


def qemu_rows(args):
    mb = os.path.join(args.qemu, "migbench.py")
    ws = size_bytes(args.working_set) >> 20
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "q.jsonl")
        cmd = ["python3", mb, "run", "--name", "kvm-yardstick", "--mem",
               args.ram, "--ws-start-mib", "1", "--ws-end-mib",
               str(1 + ws), "--bandwidth", "unlimited", "--reps",
               str(args.reps), "--timeout", str(args.max_time),
               "--out", out]
        r = subprocess.run(cmd, capture_output=True, text=True,
                           check=False, cwd=args.qemu)
        rows = []
        if os.path.exists(out):
            with open(out) as f:
                rows = [json.loads(line) for line in f if line.strip()]
    res = [x.get("result", {}) for x in rows]
    done = [x for x in res if x.get("status") == "completed"]
    pages = ws << 8  # 4 KiB pages in the working set
    print("| QEMU 7.2 | ok | total ms | downtime ms | syncs | "
          "guest writes/s migrating | GiB sent |")
    print("|---|---|---|---|---|---|---|")
    print(f"| boot-sector guest | {len(done)}/{len(rows) or args.reps} | "
          f"{med([x.get('total-time') for x in done])} | "
          f"{med([x.get('downtime') for x in done])} | "
          f"{med([x['ram'].get('dirty-sync-count') for x in done])} | "
          f"{med([x['guest_passes_per_s'] * pages for x in done if x.get('guest_passes_per_s') is not None])} | "
          f"{med([x['ram'].get('transferred', 0) / 2**30 for x in done])} |")
    print(f"\n# qemu: {' '.join(cmd)}")
    if r.returncode:
        print(f"# migbench rc {r.returncode}: {r.stderr[-500:]}",
              file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sim")
    p.add_argument("--ram", default="4G")
    p.add_argument("--working-set", default="1G")
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--max-time", type=int, default=120)
    p.add_argument("--variants",
                   default="clear-at-sync,shift 18,shift 12,classic,ring")
    p.add_argument("--qemu", help="the folder with QEMU's migbench.py")
    args = p.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("1..0 # SKIP no usable /dev/kvm")
        return 0
    # Source and destination each hold the guest's RAM.
    need = 2 * size_bytes(args.ram) + (2 << 30)
    if avail_bytes() < need:
        print(f"# only {avail_bytes() >> 30} GiB available, {need >> 30} "
              f"needed: --ram 1G", file=sys.stderr)
        args.ram = "1G"
        args.working_set = min(args.working_set, "512M",
                               key=size_bytes)
    print(f"# --ram {args.ram} --working-set {args.working_set} "
          f"--vcpus {args.vcpus}, {args.reps} runs each; "
          f"median [min-max]\n")
    bad = sim_rows(args)
    if args.qemu:
        print()
        qemu_rows(args)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
