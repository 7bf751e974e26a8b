#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/vs-qemu.py: QEMU 7.2 and migram-sim on the very same guest,
interleaved (Q, M, Q, M, ...), loopback TCP for both.

QEMU runs through the peer harness (../shared/peers/qemu/migbench.py);
migram-sim boots the same boot-sector image (built by the same
build-guest.sh with the same parameters) under KVM with --guest-image, or
holds the same memory content (--fill random) for the static row.  Every
row prints median [min-max] of total time, downtime, bytes sent, guest
passes per second during the migration, CPU seconds per side, and the
ratio migram / QEMU of the medians.

Nothing else may run on the machine meanwhile: only ratios from one
interleaved run count (docs/performance.md).

usage: bench/vs-qemu.py [--reps N] [--only NAME,...] [--out FILE.jsonl]
Exit: 0 done (or skipped with the reason: no QEMU, no /dev/kvm, no
peer harness), 1 a run failed to produce a result.
"""
import argparse
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
MARK_LOG2 = 0  # the guest reports every pass on COM1 (both sides)

# name, QEMU migbench.py args, migram-sim args, what it shows.
# ws: the working set in MiB [start, end) of the boot-sector guest.
SCENARIOS = [
    {"name": "static-4G-random",
     "what": "4 GiB of random data, no writes, fresh destination memory",
     "ws": (0, 0),
     "qemu": ["--mem", "4G", "--fill", "random", "--bandwidth", "unlimited"],
     "migram": ["--ram", "4G", "--workload", "idle", "--fill", "random"]},
    {"name": "dirty-64M",
     "what": "1 GiB guest dirtying 64 MiB, precopy, unlimited bandwidth",
     "ws": (1, 65),
     "qemu": ["--mem", "1G", "--bandwidth", "unlimited"],
     "migram": ["--ram", "1G"]},
    {"name": "dirty-512M",
     "what": "1 GiB guest dirtying 512 MiB, precopy, unlimited bandwidth",
     "ws": (1, 513),
     "qemu": ["--mem", "1G", "--bandwidth", "unlimited"],
     "migram": ["--ram", "1G"]},
    {"name": "postcopy-512M",
     "what": "1 GiB guest dirtying 512 MiB, postcopy from the start",
     "ws": (1, 513),
     "qemu": ["--mem", "1G", "--bandwidth", "unlimited",
              "--postcopy-after", "0"],
     "migram": ["--ram", "1G", "--mode", "postcopy"]},
    {"name": "capped-512M-autoconverge",
     "what": "1 GiB guest dirtying 512 MiB at a 128 MiB/s cap; QEMU plain "
             "precopy (cancelled at the timeout), migram auto-converge",
     "ws": (1, 513),
     "qemu": ["--mem", "1G", "--bandwidth", "128M"],
     "migram": ["--ram", "1G", "--max-bandwidth", "128M/s",
                "--auto-converge"],
     "timeout": 30},
    {"name": "capped-512M-hybrid",
     "what": "the same at 128 MiB/s; migram hybrid (one pass, then postcopy)",
     "ws": (1, 513),
     "qemu": ["--mem", "1G", "--bandwidth", "128M"],
     "migram": ["--ram", "1G", "--max-bandwidth", "128M/s",
                "--mode", "hybrid"],
     "timeout": 30},
    {"name": "idle-4G",
     "what": "4 GiB guest that halts, memory never touched",
     "ws": (0, 0),
     "qemu": ["--mem", "4G", "--bandwidth", "unlimited"],
     "migram": ["--ram", "4G"]},
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def skip_reason(peers, sim):
    if not os.path.exists(os.path.join(peers, "migbench.py")):
        return f"no QEMU peer harness at {peers} (--peers or $MIGRAM_QEMU_PEERS)"
    if not shutil.which(os.environ.get("QEMU", "qemu-system-x86_64")):
        return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        return f"no usable /dev/kvm ({e.strerror})"
    if not os.access(sim, os.X_OK):
        return f"no migram-sim at {sim} (build first)"
    if not shutil.which("as"):
        return "binutils' as is missing (the guest image is assembled)"
    return None


def run_qemu(peers, sc, rep, work, timeout):
    out = os.path.join(work, "qemu.jsonl")
    if os.path.exists(out):
        os.unlink(out)
    ws = sc["ws"]
    cmd = [sys.executable, os.path.join(peers, "migbench.py"), "run",
           "--name", sc["name"], "--reps", "1", "--first-rep", str(rep),
           "--ws-start-mib", str(ws[0]), "--ws-end-mib", str(ws[1]),
           "--mark-log2", str(MARK_LOG2), "--downtime-limit", "300",
           "--accel", "kvm", "--timeout", str(timeout), "--out", out,
           *sc["qemu"]]
    subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 300)
    with open(out) as f:
        rec = json.loads(f.readlines()[-1])
    if "error" in rec:
        return {"ok": False, "error": rec["error"], "cmd": cmd}
    r = rec["result"]
    total_s = (r.get("total-time") or r["wall_s"] * 1000) / 1000
    if not r["converged"]:
        total_s = r["wall_s"]
    cpu = r.get("cpu") or {}

    def cpu_of(side):
        c = cpu.get(side)
        return c["user_s"] + c["sys_s"] if c else None

    passes = r.get("guest_passes_during_migration")
    return {
        "ok": True, "converged": r["converged"], "total_s": total_s,
        "downtime_ms": r.get("downtime") if r["converged"] else None,
        "sent_bytes": r["ram"].get("transferred",
                                   (r.get("at_cancel") or {}).get("ram", {})
                                   .get("transferred")),
        "passes_per_s": passes / total_s if passes is not None and total_s else None,
        "cpu_src_s": cpu_of("src"), "cpu_dst_s": cpu_of("dst"),
        "verified": (rec.get("verify") or {}).get("ok"),
        "cmd": "python3 migbench.py " + shlex.join(cmd[3:]).replace(work, "$WORK"),
    }


def run_migram(sim, sc, rep, work, timeout, images):
    j = os.path.join(work, "migram.json")
    if os.path.exists(j):
        os.unlink(j)
    args = list(sc["migram"])
    if "--workload" not in args:
        args = ["--guest-image", images[sc["ws"]]] + args
    args += ["--downtime-limit", "300", "--max-time", str(timeout),
             "--transport", f"tcp:127.0.0.1:{free_port()}"]
    cmd = [sim, "--quiet", "--json", j] + args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 300)
    try:
        with open(j) as f:
            r = json.load(f)
    except (OSError, ValueError):
        return {"ok": False, "error": p.stderr[-500:], "cmd": cmd}
    g = r.get("guest") or {}
    total_s = r["total_time_ms"] / 1000
    converged = r["status"] == "completed"
    passes = (r["workload_writes"] / g["ws_pages"]) if g.get("ws_pages") else None
    return {
        "ok": True, "converged": converged, "total_s": total_s,
        "downtime_ms": r["downtime_ms"] if converged else None,
        "sent_bytes": r["transferred_bytes"],
        "passes_per_s": passes / total_s if passes is not None and total_s else None,
        "cpu_src_s": r["cpu_src_ms"] / 1000, "cpu_dst_s": r["cpu_dst_ms"] / 1000,
        "verified": bool(r["verified"]) and (g.get("verified", True)),
        "error": r.get("error"),
        "cmd": "migram-sim " + shlex.join(args).replace(work, "$WORK"),
    }


def cell(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a", None
    med = statistics.median(vals)
    return f"{fmt(med)} [{fmt(min(vals))}–{fmt(max(vals))}]", med


def ratio(m, q):
    if m is None or q is None or q == 0:
        return "n/a"
    return f"{m / q:.2f}"


METRICS = [
    ("total s", "total_s", lambda v: f"{v:.2f}"),
    ("downtime ms", "downtime_ms", lambda v: f"{v:.0f}"),
    ("sent GiB", "sent_bytes", lambda v: f"{v / 2**30:.2f}"),
    ("guest passes/s", "passes_per_s", lambda v: f"{v:.1f}"),
    ("CPU s src", "cpu_src_s", lambda v: f"{v:.2f}"),
    ("CPU s dst", "cpu_dst_s", lambda v: f"{v:.2f}"),
]


def table(results):
    lines = []
    for sc in SCENARIOS:
        runs = results.get(sc["name"])
        if not runs:
            continue
        lines.append(f"\n### {sc['name']}: {sc['what']}\n")
        q = [r for r in runs["qemu"] if r["ok"]]
        m = [r for r in runs["migram"] if r["ok"]]
        lines.append(f"QEMU: `{q[0]['cmd'] if q else '?'}`  ")
        lines.append(f"migram: `{m[0]['cmd'] if m else '?'}`\n")
        lines.append("| | QEMU 7.2 | migram | migram / QEMU |")
        lines.append("|---|---|---|---|")
        for label, key, fmt in METRICS:
            # times of runs cancelled at the timeout are not totals
            qv = [r[key] for r in q if r["converged"] or key != "total_s"]
            mv = [r[key] for r in m if r["converged"] or key != "total_s"]
            qc, qm = cell(qv, fmt)
            mc, mm = cell(mv, fmt)
            if key == "total_s" and not qv and q:
                qc = f"never (cancelled at {q[0]['total_s']:.0f} s)"
            if key == "total_s" and not mv and m:
                mc = f"never (cancelled at {m[0]['total_s']:.0f} s)"
            lines.append(f"| {label} | {qc} | {mc} | {ratio(mm, qm)} |")
        lines.append(f"| completed | {sum(r['converged'] for r in q)}/{len(runs['qemu'])}"
                     f" | {sum(r['converged'] for r in m)}/{len(runs['migram'])} | |")
        lines.append(f"| verified | {sum(bool(r['verified']) for r in q)}/{len(q)}"
                     f" | {sum(bool(r['verified']) for r in m)}/{len(m)} | |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="runs per side (default 5)")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--peers", default=os.environ.get(
        "MIGRAM_QEMU_PEERS", os.path.join(TOP, "..", "shared", "peers", "qemu")))
    ap.add_argument("--sim", default=os.path.join(TOP, "build", "sim", "migram-sim"))
    ap.add_argument("--out", default=None, help="raw results, JSON lines")
    ap.add_argument("--timeout", type=int, default=60,
                    help="seconds before a run that has not converged is "
                    "cancelled (default 60; capped rows 30)")
    ap.add_argument("--list", action="store_true", help="list the scenarios")
    opts = ap.parse_args()
    if opts.list:
        for sc in SCENARIOS:
            print(f"{sc['name']:28} {sc['what']}")
        return 0
    why = skip_reason(opts.peers, opts.sim)
    if why:
        print(f"vs-qemu: SKIP: {why}")
        return 0
    only = set(filter(None, opts.only.split(",")))
    chosen = [sc for sc in SCENARIOS if not only or sc["name"] in only]
    work = tempfile.mkdtemp(prefix="migram-vs-qemu.")
    out = opts.out or os.path.join(TOP, "build", "vs-qemu-%s.jsonl"
                                   % time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    images = {}
    failed = 0
    results = {}
    try:
        for sc in chosen:
            if sc["ws"] not in images:
                img = os.path.join(work, "ws%d-%d.img" % sc["ws"])
                subprocess.run(["bash", os.path.join(opts.peers, "build-guest.sh"), img,
                                str(sc["ws"][0]), str(sc["ws"][1]), str(MARK_LOG2)],
                               check=True, capture_output=True, timeout=60)
                images[sc["ws"]] = img
            timeout = sc.get("timeout", opts.timeout)
            runs = results.setdefault(sc["name"], {"qemu": [], "migram": []})
            for rep in range(1, opts.reps + 1):
                for side in ("qemu", "migram"):
                    t = time.monotonic()
                    r = (run_qemu(opts.peers, sc, rep, work, timeout) if side == "qemu"
                         else run_migram(opts.sim, sc, rep, work, timeout, images))
                    r.update(scenario=sc["name"], side=side, rep=rep,
                             wall_s=round(time.monotonic() - t, 1))
                    runs[side].append(r)
                    with open(out, "a") as f:
                        f.write(json.dumps(r) + "\n")
                    if not r["ok"]:
                        failed += 1
                    print(f"# {sc['name']} {side} {rep}: "
                          + (f"total {r['total_s']:.2f} s, down {r['downtime_ms']}, "
                             f"sent {r['sent_bytes'] / 2**30:.2f} GiB, "
                             f"verified {r['verified']}" if r["ok"]
                             else f"FAILED {r.get('error')}"), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    print(f"\nraw results: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
