"""The event log's directory read-only or its disk full: the command says which file and why,
exits 1, and the store never shows a phase in progress that is not running.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Gravity


@pytest.fixture
def mount_tmpfs() -> Iterator[Callable[[Path, str], None]]:
    """Mount a small tmpfs (as root) over a directory; unmounted at the end of the test."""
    mounted: list[Path] = []

    def mount(where: Path, options: str) -> None:
        where.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(where)

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


PLAN = """
kind: Plan
metadata: {name: logged}
phases:
  - id: one
    executor: command
    data: {run: "FILL"}
  - id: two
    executor: command
    data: {run: "echo ran >> two.ran"}
"""


def test_a_read_only_log_directory_is_named_and_nothing_starts(
        gravity: Gravity, write_plan, mount_tmpfs) -> None:
    gravity("operation", "create", "--plan", str(write_plan(PLAN.replace("FILL", "true"))),
            "--id", "op1", check=0)
    mount_tmpfs(gravity.state_dir / "logs", "ro,size=1m")
    proc = gravity("plan", "resume")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"cannot write the event log {gravity.state_dir / 'logs' / 'op1.jsonl'}" in \
        proc.stderr
    assert "Read-only file system" in proc.stderr and "nothing was started" in proc.stderr
    assert gravity.states() == {"/one": "unstarted", "/two": "unstarted"}


@pytest.mark.slow  # over ~2.5 s: out of --fast
def test_a_full_disk_under_the_log_stops_the_run_and_leaves_nothing_in_progress(
        gravity: Gravity, write_plan, mount_tmpfs) -> None:
    logs = gravity.state_dir / "logs"
    mount_tmpfs(logs, "size=256k")
    # Fill the disk, then the event log's own last block, so its next line cannot be written.
    fill = (f"head -c 10M /dev/zero > {logs}/filler; "
            f"yes '' | head -c 8192 >> {logs}/op1.jsonl; true")
    gravity("operation", "create", "--plan", str(write_plan(PLAN.replace("FILL", fill))),
            "--id", "op1", check=0)
    proc = gravity("plan", "resume")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cannot write the event log" in proc.stderr
    assert "No space left on device" in proc.stderr
    # /one completed; /two's start was recorded with the entry that could not be logged, so
    # it is recorded failed (never run), not left in progress.
    states = gravity.states()
    assert states["/one"] == "completed"
    assert states["/two"] == "failed"
    assert "not run: cannot write the event log" in gravity("plan", check=0).stdout
    assert not gravity.node_file("local", "two.ran").exists()
    doc = gravity.plan_json()
    assert all(p.get("state") != "in_progress" for p in doc["phases"])
    # Space freed: the same operation resumes and finishes.
    (logs / "filler").unlink()
    gravity("plan", "resume", check=0)
    assert gravity.states() == {"/one": "completed", "/two": "completed"}
    assert gravity.node_file("local", "two.ran").read_text() == "ran\n"
