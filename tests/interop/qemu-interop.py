#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Interoperability with QEMU 7.2's migration stream (TAP output).

QEMU -> migram: QEMU migrates a guest to a file with "exec:cat > FILE";
migram-stream must list it and extract each block byte for byte (compared
with the prefilled memory backend file, QEMU's own pmemsave of guest RAM,
and the firmware image).  migram -> QEMU: a stream migram-stream wrote is
loaded by a QEMU destination started with -incoming "exec:cat FILE", whose
memory must equal the image.  Multifd both ways: QEMU 7.2 with the
multifd capability to multifd-dest (a migram destination), and
multifd-src (a live migram source with zero pages on the main stream) to
a QEMU 7.2 destination with the multifd capability.

Usage: qemu-interop.py MIGRAM_STREAM [MULTIFD_DEST [MULTIFD_SRC]]
Skips (TAP "1..0 # SKIP") when qemu-system-x86_64 is missing.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

QEMU = shutil.which("qemu-system-x86_64")
TOOL = sys.argv[1] if len(sys.argv) > 1 else "migram-stream"
MULTIFD_DEST = sys.argv[2] if len(sys.argv) > 2 else None
MULTIFD_SRC = sys.argv[3] if len(sys.argv) > 3 else None
ACCEL = "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"
BIOS = "/usr/share/qemu/bios-256k.bin"


class Qmp:
    """Just enough of QMP: commands and their replies, skipping events."""

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
        json.loads(self.file.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.file.write(json.dumps({"execute": name, "arguments": args}))
        self.file.write("\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error']}")
            return reply["return"]

    def close(self):
        self.file.close()
        self.sock.close()


class Qemu:
    def __init__(self, workdir, name, args):
        self.qmp_path = os.path.join(workdir, name + ".qmp")
        self.log = open(os.path.join(workdir, name + ".log"), "w")
        self.proc = subprocess.Popen(
            [QEMU, "-accel", ACCEL, "-nodefaults", "-display", "none",
             "-qmp", f"unix:{self.qmp_path},server=on,wait=off"] + args,
            stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        self.qmp = Qmp(self.qmp_path)

    def wait_status(self, pred, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.qmp.cmd("query-status")["status"]
            if pred(st):
                return st
            time.sleep(0.05)
        raise RuntimeError("timed out waiting for the VM status")

    def migrate_to(self, path, timeout=60):
        self.qmp.cmd("migrate", uri=f"exec:cat > {path}")
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.qmp.cmd("query-migrate").get("status")
            if st == "completed":
                return
            if st in ("failed", "cancelled"):
                raise RuntimeError(f"migration {st}")
            time.sleep(0.05)
        raise RuntimeError("migration did not complete")

    def stop(self):
        try:
            self.qmp.cmd("quit")
        except Exception:  # noqa: BLE001 - quitting may drop the socket
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.qmp.close()
        self.log.close()


def tool(*args):
    r = subprocess.run([TOOL, *args], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        raise RuntimeError(f"migram-stream {' '.join(args)}: "
                           f"exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def read(path):
    with open(path, "rb") as f:
        return f.read()


def first_diff(a, b):
    if len(a) != len(b):
        return f"lengths {len(a)} != {len(b)}"
    for i in range(0, len(a), 4096):
        if a[i:i + 4096] != b[i:i + 4096]:
            return f"first differing page at {i:#x}"
    return None


def qemu_to_migram_backend(work):
    """-machine none with a prefilled memory-backend-file."""
    backing = os.path.join(work, "backing.ram")
    size = 8 << 20
    with open(backing, "wb") as f:
        for i in range(size // 4096):
            # pages of a pattern, every 7th page zero
            f.write(bytes(4096) if i % 7 == 6 else
                    bytes([(i * 13 + k) & 0xff for k in range(16)]) * 256)
    vm = Qemu(work, "src-none", [
        "-machine", "none,memory-backend=mem", "-m", "8M", "-S",
        "-object", f"memory-backend-file,id=mem,size=8M,"
                   f"mem-path={backing},share=on"])
    stream = os.path.join(work, "none.stream")
    try:
        vm.migrate_to(stream)
    finally:
        vm.stop()
    info = json.loads(tool("info", "--json", stream))
    assert info["complete"], info
    assert len(info["blocks"]) == 1, info["blocks"]
    name = info["blocks"][0]["name"]
    assert info["blocks"][0]["length"] == size
    out = os.path.join(work, "none.img")
    tool("extract", stream, "--block", name, "-o", out)
    diff = first_diff(read(out), read(backing))
    assert diff is None, f"block {name}: {diff}"


def qemu_to_migram_pc(work):
    """-machine pc after its firmware ran: several blocks, devices after."""
    vm = Qemu(work, "src-pc", ["-machine", "pc", "-m", "64M"])
    mem = os.path.join(work, "pc.pmemsave")
    stream = os.path.join(work, "pc.stream")
    try:
        time.sleep(1.0)  # let SeaBIOS run
        vm.qmp.cmd("stop")
        vm.qmp.cmd("pmemsave", val=0, size=64 << 20, filename=mem)
        vm.migrate_to(stream)
    finally:
        vm.stop()
    info = json.loads(tool("info", "--json", stream))
    names = [b["name"] for b in info["blocks"]]
    assert info["complete"], "device sections were not all parsed"
    assert info["machine"].startswith("pc-i440fx-"), info["machine"]
    assert {"pc.ram", "pc.bios", "pc.rom"} <= set(names), names
    assert len(info["devices"]) >= 10, info["devices"]
    assert info["vmdesc_bytes"] > 0
    ram = os.path.join(work, "pc.ram.img")
    tool("extract", stream, "--block", "pc.ram", "-o", ram)
    diff = first_diff(read(ram), read(mem))
    assert diff is None, f"pc.ram vs pmemsave: {diff}"
    if os.path.exists(BIOS):
        bios = os.path.join(work, "pc.bios.img")
        tool("extract", stream, "--block", "pc.bios", "-o", bios)
        diff = first_diff(read(bios), read(BIOS))
        assert diff is None, f"pc.bios vs {BIOS}: {diff}"


def migram_to_qemu(work):
    """A migram stream loaded by a QEMU destination."""
    size = 8 << 20
    img = os.path.join(work, "image.bin")
    with open(img, "wb") as f:
        f.write(os.urandom(size))
        f.seek(100 * 4096)
        f.write(bytes(50 * 4096))  # some zero pages
    stream = os.path.join(work, "migram.stream")
    tool("save", "--machine", "none", "-o", stream, f"ram={img}")
    vm = Qemu(work, "dst-none", [
        "-machine", "none", "-m", "8M", "-S",
        "-incoming", f"exec:cat {stream}"])
    out = os.path.join(work, "dst.pmemsave")
    try:
        vm.wait_status(lambda s: s != "inmigrate")
        vm.qmp.cmd("pmemsave", val=0, size=size, filename=out)
    finally:
        vm.stop()
    diff = first_diff(read(out), read(img))
    assert diff is None, f"destination memory: {diff}"


def qemu_multifd_to_migram(work, compression=None):
    """QEMU 7.2 with the multifd capability (4 channels) to a migram
    destination over loopback TCP: pc.ram equals QEMU's pmemsave.  With
    compression ("zstd"), QEMU compresses every packet."""
    if not MULTIFD_DEST:
        return "SKIP multifd-dest not built"
    port = 47751 if not compression else 47752
    out = os.path.join(work, "pc.ram.multifd")
    dest = subprocess.Popen([MULTIFD_DEST, str(port), "4", "pc.ram", out],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert dest.stdout.readline().strip() == "listening"
    vm = Qemu(work, "src-multifd", ["-machine", "pc", "-m", "64M"])
    mem = os.path.join(work, "pc.pmemsave")
    try:
        time.sleep(1.0)  # let SeaBIOS run
        vm.qmp.cmd("stop")
        vm.qmp.cmd("pmemsave", val=0, size=64 << 20, filename=mem)
        vm.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "multifd", "state": True}])
        vm.qmp.cmd("migrate-set-parameters", **{"multifd-channels": 4})
        if compression:
            try:
                vm.qmp.cmd("migrate-set-parameters",
                           **{"multifd-compression": compression})
            except RuntimeError as e:  # a QEMU built without zstd
                dest.kill()
                dest.communicate()
                return f"SKIP QEMU refuses multifd-compression " \
                       f"{compression}: {e}"
        vm.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        deadline = time.time() + 60
        while time.time() < deadline:
            st = vm.qmp.cmd("query-migrate").get("status")
            if st == "completed":
                break
            if st in ("failed", "cancelled"):
                info = vm.qmp.cmd("query-migrate")
                dest.kill()
                raise RuntimeError(f"QEMU migration {st}: "
                                   f"{info.get('error-desc')}; "
                                   f"destination: {dest.communicate()[1]}")
            time.sleep(0.05)
    finally:
        vm.stop()
    try:
        _, err = dest.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        dest.kill()
        _, err = dest.communicate()
        raise RuntimeError("multifd-dest did not finish")
    assert dest.returncode == 0, err
    diff = first_diff(read(out), read(mem))
    assert diff is None, f"pc.ram vs pmemsave: {diff}"
    return None


def migram_multifd_to_qemu(work):
    """A live migram source with 4 data channels and zero pages on the
    main stream (QEMU 7.2's form) to a QEMU 7.2 destination with the
    multifd capability: QEMU's memory equals the source's at the pause."""
    if not MULTIFD_SRC:
        return "SKIP multifd-src not built"
    port = 47753
    size = 8 << 20
    img = os.path.join(work, "image.bin")
    with open(img, "wb") as f:
        f.write(os.urandom(size))
        f.seek(600 * 4096)
        f.write(bytes(100 * 4096))  # zero pages from the start
    vm = Qemu(work, "dst-multifd", [
        "-machine", "none", "-m", "8M", "-incoming", "defer"])
    out = os.path.join(work, "src.final")
    mem = os.path.join(work, "dst.pmemsave")
    src = None
    try:
        vm.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "multifd", "state": True}])
        vm.qmp.cmd("migrate-set-parameters", **{"multifd-channels": 4})
        vm.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        src = subprocess.run([MULTIFD_SRC, str(port), "4", img, out],
                             capture_output=True, text=True, timeout=60)
        assert src.returncode == 0, f"multifd-src: {src.stderr}"
        vm.wait_status(lambda st: st not in ("inmigrate",))
        info = vm.qmp.cmd("query-migrate")
        assert info.get("status") in (None, "completed"), info
        vm.qmp.cmd("pmemsave", val=0, size=size, filename=mem)
    finally:
        vm.stop()
    print(f"# {src.stderr.strip()}")
    diff = first_diff(read(mem), read(out))
    assert diff is None, f"QEMU's memory vs the source's: {diff}"
    return None


TESTS = [
    ("qemu-to-migram: -machine none, memory-backend-file",
     qemu_to_migram_backend),
    ("qemu-to-migram: -machine pc after firmware, devices follow RAM",
     qemu_to_migram_pc),
    ("migram-to-qemu: -incoming exec:cat loads a migram stream",
     migram_to_qemu),
    ("qemu-to-migram: multifd with 4 channels over tcp, pc.ram equal",
     qemu_multifd_to_migram),
    ("qemu-to-migram: multifd zstd with 4 channels, pc.ram equal",
     lambda work: qemu_multifd_to_migram(work, "zstd")),
    ("migram-to-qemu: live, 4 data channels, zero pages on the main "
     "stream, QEMU 7.2 multifd destination", migram_multifd_to_qemu),
]


def main():
    if not QEMU:
        print("1..0 # SKIP qemu-system-x86_64 is not installed "
              "(apt-get install qemu-system-x86)")
        return 0
    print(f"1..{len(TESTS)}")
    failed = 0
    for i, (name, fn) in enumerate(TESTS, 1):
        work = tempfile.mkdtemp(prefix="migram-interop-")
        try:
            skip = fn(work)
            if skip:
                print(f"ok {i} - {name} # {skip}")
            else:
                print(f"ok {i} - {name}")
        except Exception as e:  # noqa: BLE001 - report every failure
            failed += 1
            print(f"not ok {i} - {name}")
            for line in str(e).splitlines():
                print(f"# {line}")
            for log in sorted(os.listdir(work)):
                if log.endswith(".log"):
                    with open(os.path.join(work, log)) as f:
                        for line in f.read().splitlines()[-5:]:
                            print(f"# {log}: {line}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
