#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Calibrate migram-sim's model mode on this machine.

Runs short real-mode migrations (idle guests, 512 MiB, unlimited rate, each
three times, the median kept) and one hotset run, and derives the model's
cost parameters (sim/model-costs.h, docs/simulator-model.md):

  send_zero_us    sender CPU per zero page    idle, --fill zero: cpu_src / pages
  send_normal_us  sender CPU per normal page  idle, --fill random: cpu_src / pages
  place_zero_us   pipeline time per zero page idle, --fill zero: total / pages
  place_first_us  ... per first normal page   idle, --fill random: total / pages
  place_again_us  ... per page sent again     hotset 40M/s at 100M/s: the real
                  downtime's page part / the pages the model sends paused
  link_MBps       a socketpair's raw rate     1 GiB through a socketpair

Run it on a quiet machine, under nice, from the build directory's parent:
  nice -n 10 scripts/calibrate-model.py build/sim/migram-sim
It prints the figures and the MIGRAM_MODEL_COSTS value that makes the
model use them; put them into sim/model-costs.h to make them the default.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SIM = sys.argv[1] if len(sys.argv) > 1 else "build/sim/migram-sim"
RUNS = 3
PAGES = 512 * 1024 * 1024 // 4096


def run(work, *args, env=None):
    path = os.path.join(work, "c.json")
    subprocess.run([SIM, "--quiet", "--json", path, *args], check=True,
                   capture_output=True, env=env)
    with open(path) as f:
        return json.load(f)


def median_of(work, key, *args):
    return statistics.median(run(work, *args)[key] for _ in range(RUNS))


def socketpair_mbps():
    a, b = socket.socketpair()
    total = 1 << 30
    buf = bytes(1 << 20)

    def drain():
        left = total
        while left:
            left -= len(b.recv(min(left, 1 << 20)))

    t = threading.Thread(target=drain)
    t0 = time.monotonic()
    t.start()
    for _ in range(total // len(buf)):
        a.sendall(buf)
    t.join()
    return total / (time.monotonic() - t0) / 1e6


def main():
    with tempfile.TemporaryDirectory() as work:
        idle = ["--ram", "512M", "--workload", "idle"]
        zero = [run(work, *idle, "--fill", "zero") for _ in range(RUNS)]
        rand = [run(work, *idle, "--fill", "random") for _ in range(RUNS)]
        send_zero = statistics.median(r["cpu_src_ms"] for r in zero) \
            * 1000 / PAGES
        place_zero = statistics.median(r["total_time_ms"] for r in zero) \
            * 1000 / PAGES
        send_normal = statistics.median(r["cpu_src_ms"] for r in rand) \
            * 1000 / PAGES
        place_first = statistics.median(r["total_time_ms"] for r in rand) \
            * 1000 / PAGES
        hot = ["--ram", "256M", "--workload", "hotset", "--dirty-rate",
               "40M/s", "--max-bandwidth", "100M/s"]
        pages_us = median_of(work, "downtime_pages_us", *hot)
        env = dict(os.environ)
        env.pop("MIGRAM_MODEL_COSTS", None)
        tl = run(work, "--model", *hot, env=env)["timeline"]
        paused = [s for s in tl if s["paused"]]
        final_pages = max(paused[-1]["pages_sent"] - paused[0]["pages_sent"],
                          1)
        place_again = pages_us / final_pages
        link = socketpair_mbps()
    print(f"send_zero_us   {send_zero:.3f}")
    print(f"send_normal_us {send_normal:.3f}")
    print(f"place_zero_us  {place_zero:.3f}")
    print(f"place_first_us {place_first:.3f}")
    print(f"place_again_us {place_again:.3f}  ({pages_us:.0f} us for "
          f"{final_pages} pages paused)")
    print(f"link_MBps      {link:.0f}")
    print(f"MIGRAM_MODEL_COSTS={send_zero:.3f},{send_normal:.3f},"
          f"{place_zero:.3f},{place_first:.3f},{place_again:.3f},{link:.0f}")


main()
