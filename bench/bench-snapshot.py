#!/usr/bin/env python3
"""Snapshot benchmark (issue 17): the pause with staging and with
copy-before-write, the guest's progress while the file is written, the
write rate against dd on the same file system, eager restore rate and
lazy restore's time to first access and faults.

    bench/bench-snapshot.py BUILD/sim/migram-sim [--ram 4G] [--ws 512M]
                            [--dir DIR] [--reps N]

Each snapshot run: a --ram guest whose writers dirty a --ws working set
(hot set) at full speed, a full snapshot after 1 s, then a diff epoch.
Figures are printed as a markdown table; nothing is asserted.  Needs a
quiet machine and free space for three files of --ram in --dir.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time


def parse_size(s):
    m = re.fullmatch(r"(\d+)([KMG]?)", s)
    if not m:
        sys.exit(f"bench-snapshot: bad size {s}")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def run(*cmd, timeout=3600):
    r = subprocess.run(list(cmd), capture_output=True, text=True,
                       timeout=timeout, check=False)
    if r.returncode:
        sys.exit(f"bench-snapshot: {' '.join(cmd)}: exit {r.returncode}: "
                 f"{r.stderr}")
    return r.stdout


def make_random(size):
    """A file of size random bytes in /dev/shm: dd's input.  Not
    /dev/zero: a virtual disk may turn written zeros into discards
    (QEMU's detect-zeroes), and on this machine kind dd from /dev/zero
    ran at up to 1.1 GB/s where random data ran at 180-350 MB/s."""
    fd, path = tempfile.mkstemp(prefix="migram-bench-rand-", dir="/dev/shm")
    with os.fdopen(fd, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    return path


def dd_rate(src, path, size):
    """MiB/s of dd copying size random bytes (1 MiB blocks, from memory)
    into path, fsync included."""
    subprocess.run(["sync"], check=False)
    t = time.monotonic()
    run("dd", f"if={src}", f"of={path}", "bs=1M",
        f"count={size >> 20}", "conv=fsync", "status=none")
    rate = (size >> 20) / (time.monotonic() - t)
    os.unlink(path)
    return rate


def snapshot(sim, d, ram, ws, mode):
    path = os.path.join(d, f"{mode}.snap")
    frac = max(min(ws / ram, 1.0), 0.0001)
    out = run(sim, "--ram", str(ram >> 20) + "M", "--workload", "hotset",
              "--hot-fraction", f"{frac:.4f}", "--hot-weight", "1",
              "--snapshot", path, "--snapshot-mode", mode,
              "--snapshot-epochs", "1", "--snapshot-after", "1s")
    rows = []
    for blk in out.split("epoch ")[1:]:
        m = re.search(r"pause w/o hash:\s+([\d.]+) ms", blk)
        p = re.search(r"pause:\s+([\d.]+) ms \(stop ([\d.]+), dirty log "
                      r"([\d.]+), \w+ ([\d.]+)", blk)
        w = re.search(r"written:\s+(\d+) pages in ([\d.]+) ms "
                      r"\(([\d.]+) MiB/s\)", blk)
        g = re.search(r"guest writes:\s+(\d+) from the pause", blk)
        rows.append({"pause": float(m.group(1)), "stop": float(p.group(2)),
                     "log": float(p.group(3)), "work": float(p.group(4)),
                     "pages": int(w.group(1)), "write_ms": float(w.group(2)),
                     "rate": float(w.group(3)), "guest": int(g.group(1))})
    return path, rows


def restore(sim, ram, files, lazy):
    args = [sim, "--ram", str(ram >> 20) + "M", "--restore", ",".join(files)]
    if lazy:
        args.append("--lazy")
    out = run(*args)
    first = float(re.search(r"first guest access: ([\d.]+) ms", out)[1])
    rate = float(re.search(r"\(([\d.]+) MiB/s\)", out)[1])
    faults = re.search(r"faults served:\s+(\d+)", out)
    assert "0 page(s) differ" in out, out
    return first, rate, int(faults[1]) if faults else 0


def checkpoint(sim, ram, ws, every_ms, epochs):
    """Checkpoints to a standby process on 127.0.0.1 every every_ms."""
    frac = max(min(ws / ram, 1.0), 0.0001)
    mem = ["--ram", str(ram >> 20) + "M"]
    sb = subprocess.Popen([sim, "--role", "standby", "--standby",
                           "tcp:127.0.0.1:0", *mem],
                          stdout=subprocess.PIPE, text=True)
    port = re.search(r"port (\d+)", sb.stdout.readline())[1]
    out = run(sim, *mem, "--workload", "hotset", "--hot-fraction",
              f"{frac:.4f}", "--hot-weight", "1", "--checkpoint-every",
              f"{every_ms}ms", "--checkpoint-epochs", str(epochs),
              "--standby", f"tcp:127.0.0.1:{port}")
    sb.communicate(timeout=600)
    acked = re.findall(r"acked: pause ([\d.]+) ms .*?, (\d+) pages, "
                       r"(\d+) bytes, send ([\d.]+) ms", out)
    steady = acked[1:] or acked  # epoch 0 is the full copy
    over = float(re.search(r"overhead (-?[\d.]+)%", out)[1])
    n = len(steady)
    return {"pause": sum(float(x[0]) for x in steady) / n,
            "pages": sum(int(x[1]) for x in steady) / n,
            "send": sum(float(x[3]) for x in steady) / n,
            "overhead": over}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sim")
    ap.add_argument("--ram", default="4G")
    ap.add_argument("--ws", default="512M")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--checkpoint-epochs", type=int, default=20)
    a = ap.parse_args()
    ram, ws = parse_size(a.ram), parse_size(a.ws)
    d = tempfile.mkdtemp(prefix="migram-bench-snap-", dir=a.dir)
    rand = make_random(ram)
    try:
        print(f"# snapshots, {a.ram} guest, {a.ws} working set, in {d}; "
              "dd copies the same size of random data (from /dev/shm) "
              "right before each snapshot run")
        print("| mode | epoch | pause ms (stop/log/work) | pages | "
              "write MiB/s | dd MiB/s | vs dd | "
              "guest writes, pause to written |")
        print("|---|---|---|---|---|---|---|---|")
        paths = {}
        for _ in range(a.reps):
            for mode in ("staging", "cow"):
                dd = dd_rate(rand, os.path.join(d, "dd"), ram)
                path, rows = snapshot(a.sim, d, ram, ws, mode)
                paths[mode] = path
                for e, r in enumerate(rows):
                    print(f"| {mode} | {e} | {r['pause']:.2f} "
                          f"({r['stop']:.2f}/{r['log']:.2f}/"
                          f"{r['work']:.2f}) | {r['pages']} | "
                          f"{r['rate']:.0f} | {dd:.0f} | "
                          f"{r['rate'] / dd:.2f} | {r['guest']} |")
        os.unlink(rand)
        rand = None
        files = [paths["staging"], paths["staging"] + ".1"]
        print("\n| restore | first access ms | MiB/s | faults |")
        print("|---|---|---|---|")
        for lazy in (False, True):
            first, rate, faults = restore(a.sim, ram, files, lazy)
            print(f"| {'lazy' if lazy else 'eager'} | {first:.2f} | "
                  f"{rate:.0f} | {faults} |")
        print("\n| checkpoint every | mean pause ms | pages/epoch | "
              "send ms | guest progress overhead |")
        print("|---|---|---|---|---|")
        for every in (50, 200):
            c = checkpoint(a.sim, ram, ws, every, a.checkpoint_epochs)
            print(f"| {every} ms | {c['pause']:.2f} | {c['pages']:.0f} | "
                  f"{c['send']:.1f} | {c['overhead']:.1f}% |")
    finally:
        shutil.rmtree(d, ignore_errors=True)
        if rand:
            os.unlink(rand)


if __name__ == "__main__":
    main()
