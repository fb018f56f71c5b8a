"""A short chaos run as part of the suite: every fault scenario once, against real processes and
a real etcd, and the invariant checker's closing summary must show nothing lost or broken.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^trials=(\d+) completed=(\d+) lost=(\d+) duplicated=(\d+) "
                     r"concurrent=(\d+) stuck=(\d+) violations=(\d+) skipped=(\d+)$",
                     re.MULTILINE)


@pytest.mark.etcd
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_short_chaos_run_keeps_every_invariant(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "chaos", "--trials", "1", "--seed", "20240607",
         "--workdir", str(tmp_path / "chaos")],
        capture_output=True, text=True, cwd=ROOT, timeout=380)
    found = SUMMARY.findall(proc.stdout)
    assert found, f"no summary line:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    trials, completed, lost, duplicated, concurrent, stuck, violations, skipped = map(
        int, found[-1])
    report = proc.stdout
    assert trials + skipped == 13, report  # one trial of each of the thirteen scenarios
    assert skipped <= 2, report  # only the two that mount a tmpfs may be skipped (no root)
    assert (lost, duplicated, concurrent, stuck, violations) == (0, 0, 0, 0, 0), report
    assert completed == trials, report
    assert proc.returncode == 0, report
