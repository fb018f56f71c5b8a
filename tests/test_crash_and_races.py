"""What happens when processes die or race: kill -9 of a coordinator mid-phase, two operators
executing the same phase at once, two coordinators resuming at once.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.helpers import wait_for

CRASH = """
kind: Plan
metadata: {name: crash}
phases:
  - id: first
    executor: command
    data: {run: "echo x >> first.count"}
  - id: slow
    executor: command
    data: {run: "echo x >> slow.count; sleep ${SLOW_SECONDS:-30}; echo x >> slow.done"}
  - id: last
    executor: command
    data: {run: "echo x >> last.count"}
"""


@pytest.fixture(autouse=True)
def _both_stores(any_store: str) -> str:
    """Every story here runs on the embedded store and on etcd."""
    return any_store


def lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow  # a whole CLI story: out of --fast
def test_kill_9_mid_phase_then_resume_finishes_without_rerunning_completed(
        gravity, write_plan) -> None:
    gravity("operation", "create", "--plan", str(write_plan(CRASH)), "--id", "op1", check=0)
    proc = gravity.spawn("plan", "resume")
    slow = gravity.node_file("local", "slow.count")
    wait_for(lambda: lines(slow))  # written, not just created
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert gravity.states() == {"/first": "completed", "/slow": "in_progress",
                                "/last": "unstarted"}
    # Another process resumes at once: the dead coordinator's lease is recognised as dead.
    done = gravity("plan", "resume", check=0, SLOW_SECONDS="0")
    assert "interrupted" in done.stderr
    assert gravity.states() == {"/first": "completed", "/slow": "completed",
                                "/last": "completed"}
    assert lines(gravity.node_file("local", "first.count")) == 1
    assert lines(slow) == 2  # the interrupted attempt and exactly one re-run
    assert lines(gravity.node_file("local", "slow.done")) == 1
    assert lines(gravity.node_file("local", "last.count")) == 1
    log = gravity.changelog("op1")
    slow_log = [(r["from"], r["to"], r.get("error")) for r in log
                if r["phase"] == "/slow"]
    assert slow_log[0][:2] == ("unstarted", "in_progress")
    assert slow_log[1][0:2] == ("in_progress", "failed")
    assert slow_log[1][2].startswith("interrupted:")
    assert slow_log[2:] == [("failed", "in_progress", None), ("in_progress", "completed", None)]


ONE = """
kind: Plan
metadata: {name: race}
phases:
  - id: once
    executor: command
    data: {run: "echo $$ >> once.count; while [ ! -e go ]; do sleep 0.05; done"}
"""
# /slow held until the test lets it go: the race below does not hang on how fast a
# process starts.
GATED = CRASH.replace("sleep ${SLOW_SECONDS:-30}", "while [ ! -e go ]; do sleep 0.05; done")


def test_two_operators_execute_the_same_phase_exactly_once(gravity, write_plan) -> None:
    gravity("operation", "create", "--plan", str(write_plan(ONE)), check=0)
    procs = [gravity.spawn("plan", "execute", "--phase", "/once") for _ in range(2)]
    # /once runs until `go` exists: one process drives it, the other is refused meanwhile.
    wait_for(lambda: any(p.poll() is not None for p in procs), what="one of them to end")
    gravity.node_file("local", "go").touch()
    codes = sorted(p.wait(timeout=60) for p in procs)
    errors = "".join(p.stderr.read() for p in procs)
    assert codes == [0, 3], errors
    assert "is being driven by" in errors or "already running" in errors
    assert lines(gravity.node_file("local", "once.count")) == 1
    assert gravity.states() == {"/once": "completed"}


def test_two_coordinators_resume_at_once_one_drives(gravity, write_plan) -> None:
    gravity("operation", "create", "--plan", str(write_plan(GATED)), check=0)
    first = gravity.spawn("plan", "resume")
    wait_for(lambda: gravity.node_file("local", "slow.count").exists())
    second = gravity("plan", "resume", check=3)
    assert "is being driven by coordinator" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    gravity.node_file("local", "go").touch()
    assert first.wait(timeout=60) == 0
    assert lines(gravity.node_file("local", "slow.count")) == 1
