"""Operations on a real etcd: the server restarts in the middle of a plan and every phase still
runs exactly once; a 10,000-phase plan is created and executed; megabytes of output are recorded.
"""

from __future__ import annotations

import threading

import pytest

from engine.model import MAX_ERROR_BYTES, json_size
from tests.conftest import Gravity
from tests.etcd_server import EtcdServer
from tests.helpers import wait_for

SLEEPERS = """
kind: Plan
metadata: {name: sleepers}
phases:
""" + "".join(f"""  - id: p{i}
    executor: command
    data: {{run: "echo x >> p{i}.count; sleep 0.4"}}
""" for i in range(8))


@pytest.mark.slow
def test_etcd_restart_mid_operation_pauses_then_completes_once(
        gravity: Gravity, write_plan, private_etcd: EtcdServer) -> None:
    gravity.extra_env.update(GRAVITY_STORE=f"{private_etcd.url}/restart",
                             GRAVITY_DISPATCH="local", GRAVITY_LEASE_TTL="10")
    gravity("operation", "create", "--plan", str(write_plan(SLEEPERS)), "--id", "op1", check=0)
    coordinator = gravity.spawn("plan", "resume")
    first = gravity.node_file("local", "p1.count")
    wait_for(first.exists, proc=coordinator, what="/p1 to start")
    private_etcd.stop()
    down_for = 2.5
    timer = threading.Timer(down_for, private_etcd.start)
    timer.start()
    try:
        assert coordinator.wait(timeout=120) == 0, coordinator.stderr.read()
    finally:
        timer.join()
    assert gravity.states() == {f"/p{i}": "completed" for i in range(8)}
    for i in range(8):
        assert gravity.node_file("local", f"p{i}.count").read_text() == "x\n", f"p{i}"
    log = gravity.changelog("op1")
    assert len(log) == 16
    seqs = [r["seq"] for r in log]
    assert seqs == sorted(set(seqs))  # in order, nothing written twice
    assert sorted((r["phase"], r["to"]) for r in log) == sorted(
        (f"/p{i}", to) for i in range(8) for to in ("in_progress", "completed"))


@pytest.mark.slow
def test_ten_thousand_noop_phases_on_etcd(gravity: Gravity, write_plan, etcd_url: str) -> None:
    gravity.extra_env.update(GRAVITY_STORE=etcd_url, GRAVITY_DISPATCH="local")
    groups = "".join(
        f"  - id: g{g}\n    parallel: 8\n    phases:\n" + "".join(
            f"      - {{id: p{i}, executor: noop}}\n" for i in range(100))
        for g in range(100))
    path = write_plan("kind: Plan\nmetadata: {name: big}\nphases:\n" + groups)
    gravity("operation", "create", "--plan", str(path), "--id", "big", check=0, timeout=300)
    gravity("plan", "resume", "--max-parallel", "16", check=0, timeout=600,
            GRAVITY_QUIET="1")
    doc = gravity.plan_json()
    assert doc["progress"]["leaves"] == 10_000
    assert doc["progress"]["completed"] == 10_000
    assert doc["operation"]["state"] == "completed"


LOUD = """
kind: Plan
metadata: {name: loud}
phases:
  - id: loud
    executor: command
    data: {run: "head -c 3000000 /dev/zero | tr '\\\\0' x; echo; echo the last line; exit 3"}
"""


def test_a_phase_failing_with_megabytes_of_output_is_recorded_failed(
        gravity: Gravity, write_plan, etcd_url: str) -> None:
    """Its error (the message and the output's last lines) is cut to its bound, so the failure
    fits one etcd transaction, which a 3 MB line never would: it is recorded, not lost."""
    gravity.extra_env.update(GRAVITY_STORE=etcd_url, GRAVITY_DISPATCH="local")
    gravity("operation", "create", "--plan", str(write_plan(LOUD)), "--id", "loud", check=0)
    out = gravity("plan", "resume", check=1)
    assert "phase /loud failed" in out.stderr + out.stdout
    [phase] = gravity.plan_json()["phases"]
    assert phase["state"] == "failed"
    error = phase["error"]
    assert error.startswith("command exited with status 3\nxxx")
    assert "characters cut ...]\nxxx" in error and error.endswith("xxx\nthe last line")
    assert json_size(phase["error"]) <= MAX_ERROR_BYTES
    assert [r["to"] for r in gravity.changelog("loud")] == ["in_progress", "failed"]


def test_more_transitions_due_at_once_than_one_etcd_write_takes(
        gravity: Gravity, write_plan, etcd_url: str) -> None:
    """80 parallel phases finishing and starting together: more than etcd's limit for one
    atomic write (a few dozen), so the scheduler records them in several writes."""
    gravity.extra_env.update(GRAVITY_STORE=etcd_url, GRAVITY_DISPATCH="local")
    phases = "".join(f"  - {{id: p{i}, executor: noop}}\n" for i in range(80))
    path = write_plan("kind: Plan\nmetadata: {name: wide}\nparallel: 80\nphases:\n" + phases)
    gravity("operation", "create", "--plan", str(path), "--id", "wide", check=0)
    gravity("plan", "resume", "--max-parallel", "80", check=0, GRAVITY_QUIET="1")
    doc = gravity.plan_json()
    assert doc["progress"]["completed"] == 80
    assert doc["operation"]["state"] == "completed"
    log = gravity.changelog("wide")
    assert len(log) == 160 and [r["seq"] for r in log] == sorted({r["seq"] for r in log})
