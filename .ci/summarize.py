#!/usr/bin/env python3
"""Count TAP test cases across meson build directories' testlog*.json.

A build directory may hold more than one run's log: .ci/run writes
testlog.json (make test) and testlog-hugetlb.json (the hugetlb programs
again, with huge pages reserved); every case of every run counts.
"""
import json
import re
import sys
from pathlib import Path

passed = failed = skipped = 0
logs = [log for build in sys.argv[1:]
        for log in sorted((Path(build) / "meson-logs").glob("testlog*.json"))]
for log in logs:
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        out = entry.get("stdout") or ""
        cases = re.findall(r"^(ok|not ok)\b.*?(# SKIP.*)?$", out, re.M)
        if not cases:
            # a non-TAP test counts as one case
            res = entry.get("result", "")
            if res == "OK":
                passed += 1
            elif res == "SKIP":
                skipped += 1
            else:
                failed += 1
            continue
        for verdict, skip in cases:
            if skip:
                skipped += 1
            elif verdict == "ok":
                passed += 1
            else:
                failed += 1
        if entry.get("result") not in ("OK", "SKIP", "EXPECTEDFAIL"):
            if not any(v == "not ok" for v, _ in cases):
                failed += 1  # crashed after its last case
print(f"ci: {passed} passed, {failed} failed, {skipped} skipped")
