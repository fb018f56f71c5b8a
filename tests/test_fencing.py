"""A phase never runs twice at once. A driver whose lease could not be kept — the database held
by another process, the driver frozen with SIGSTOP, an agent frozen past its lease — has its
phase processes stopped before anyone may take over, and records nothing afterwards. Every test
reads the phase's own side effect (a tick file each run appends to) to prove no two runs
overlapped.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import fsm
from engine.errors import OperationFailed
from engine.executors import ExecContext, Executor, registry
from engine.executors.fence import ChildFence
from engine.planfile import plan_from_mapping
from engine.service import Engine, create_operation, resume
from engine.store.sqlite import SQLiteStore
from tests.conftest import Gravity
from tests.helpers import wait_for

TICKS = 100


def tick_plan(ticks: Path, node: str | None = None, attempts: int = 1) -> str:
    """One phase that appends `<its pid> <time>` to `ticks` every 50 ms for ~5 s."""
    where = f"\n    node: {node}" if node else ""
    return f"""
kind: Plan
metadata: {{name: ticking}}
phases:
  - id: tick{where}
    executor: command
    retry: {{attempts: {attempts}, initial: 0.1}}
    data:
      run: 'for i in $(seq 1 {TICKS}); do echo "$$ $(date +%s.%N)" >> {ticks}; sleep 0.05; done'
"""


def runs(ticks: Path) -> list[tuple[float, float]]:
    """Each run of the phase (one shell pid) as the span of its ticks, in start order."""
    spans: dict[str, list[float]] = {}
    for line in ticks.read_text().splitlines():
        pid, at = line.split()
        spans.setdefault(pid, []).append(float(at))
    return sorted((min(v), max(v)) for v in spans.values())


def assert_never_overlapped(ticks: Path, expected_runs: int) -> None:
    spans = runs(ticks)
    assert len(spans) == expected_runs, spans
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end < start, f"two runs of the phase overlapped: {spans}"


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def count(ticks: Path) -> int:
    return len(ticks.read_text().splitlines()) if ticks.exists() else 0


def hold_database(db: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process takes SQLite's write lock and keeps it for `seconds`."""
    code = ("import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\nprint('held', flush=True)\n"
            "time.sleep(float(sys.argv[2]))\nc.execute('COMMIT')\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def start_ticking(g: Gravity, write_plan, ticks: Path) -> subprocess.Popen[str]:
    """Create the ticking operation and start `plan resume`; returns once the phase runs."""
    g("operation", "create", "--plan", str(write_plan(tick_plan(ticks))), "--id", "op1",
      check=0)
    driver = g.spawn("plan", "resume")
    wait_for(lambda: count(ticks) >= 3, what="the phase to run")
    return driver


def tick_history(g: Gravity) -> list[tuple[str, int | None]]:
    """(to_state, owner) of /tick's records, oldest first."""
    records = [json.loads(x) for x in g("events", "-o", "json", check=0).stdout.splitlines()]
    return [(r["to"], r.get("owner")) for r in records if r["phase"] == "/tick"]


@pytest.mark.slow
def test_a_driver_that_waited_for_the_database_starts_with_its_whole_lease(
        gravity: Gravity, write_plan, tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"
    gravity("operation", "create", "--plan", str(write_plan(tick_plan(ticks))), "--id", "op1",
            check=0)
    holder = hold_database(gravity.db, 7)  # longer than the 3 s lease
    first = gravity.spawn("plan", "resume")  # waits for the lock to take its lease
    assert holder.wait(timeout=30) == 0
    wait_for(lambda: count(ticks) >= 3, what="the phase to run")
    # The first driver's lease counts from when it was written, so it is alive: refused.
    second = gravity("plan", "resume")
    assert second.returncode == 3, second.stderr
    assert "is being driven by" in second.stderr
    assert first.wait(timeout=60) == 0, first.stderr.read() if first.stderr else ""
    assert_never_overlapped(ticks, expected_runs=1)
    assert gravity.states() == {"/tick": "completed"}


@pytest.mark.slow
def test_a_driver_that_cannot_renew_stops_its_phase_before_another_takes_over(
        gravity: Gravity, write_plan, tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"
    first = start_ticking(gravity, write_plan, ticks)
    holder = hold_database(gravity.db, 6)  # the first driver cannot renew its 3 s lease
    second = gravity.spawn("plan", "resume")  # queued behind the lock, then takes over
    _out, err = first.communicate(timeout=60)
    assert first.returncode == 1, err
    assert "lost its lease" in err and "nothing more was recorded" in err
    assert holder.wait(timeout=30) == 0
    _out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert_never_overlapped(ticks, expected_runs=2)
    history = tick_history(gravity)
    assert [s for s, _ in history] == ["in_progress", "failed", "in_progress", "completed"]
    # The first driver wrote only its start: the interruption and the rerun are the second's.
    assert history[2][1] != history[0][1]
    assert gravity.states() == {"/tick": "completed"}


@pytest.mark.slow
def test_a_frozen_driver_is_fenced_by_its_guard_and_records_nothing_when_thawed(
        gravity: Gravity, write_plan, tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"
    first = start_ticking(gravity, write_plan, ticks)
    os.kill(first.pid, signal.SIGSTOP)  # a VM pause, a GC stall: it cannot renew
    try:
        takeover: list[subprocess.CompletedProcess[str]] = []

        def taken_over() -> bool:
            proc = gravity("plan", "resume")  # refused (3) while the frozen lease lives
            takeover.append(proc)
            return proc.returncode != 3

        wait_for(taken_over, timeout=30, what="the frozen driver's lease to expire")
        assert takeover[-1].returncode == 0, takeover[-1].stderr
        assert "interrupted" in gravity("events", check=0).stdout
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _out, err = first.communicate(timeout=30)
    assert first.returncode == 1, err
    assert "lost its lease" in err
    assert_never_overlapped(ticks, expected_runs=2)
    history = tick_history(gravity)
    assert [s for s, _ in history] == ["in_progress", "failed", "in_progress", "completed"]
    assert sum(1 for _, owner in history if owner == history[0][1]) == 1


@pytest.mark.etcd
@pytest.mark.slow
def test_a_frozen_agent_is_fenced_and_the_phase_runs_once_at_a_time(
        gravity: Gravity, write_plan, tmp_path: Path, etcd_url: str) -> None:
    ttl = "2"
    gravity.extra_env.update(GRAVITY_STORE=etcd_url, GRAVITY_LEASE_TTL=ttl)
    agents: list[subprocess.Popen[str]] = []

    def start_agent() -> subprocess.Popen[str]:
        proc = gravity.spawn("agent", "run", "--node", "node-1", "--ttl", ttl, "--grace", "2")
        agents.append(proc)

        def online() -> bool:
            out = gravity("agent", "status", "-o", "json", check=0).stdout
            return any(r["node"] == "node-1" and r["status"] == "Online"
                       and r["pid"] == proc.pid for r in json.loads(out))

        wait_for(online, what="the agent to be online")
        return proc

    ticks = tmp_path / "ticks"
    plan = write_plan(tick_plan(ticks, node="node-1", attempts=2))
    try:
        old = start_agent()
        gravity("operation", "create", "--plan", str(plan), "--id", "op1", check=0)
        coordinator = gravity.spawn("plan", "resume")
        wait_for(lambda: count(ticks) >= 3, what="the phase to run on the agent")
        os.kill(old.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: "interrupted" in gravity("events", check=0).stdout, timeout=30,
                     what="the coordinator to mark the phase interrupted")
            start_agent()
            _out, err = coordinator.communicate(timeout=60)
            assert coordinator.returncode == 0, err
        finally:
            os.kill(old.pid, signal.SIGCONT)
        log = gravity.state_dir / "logs" / "agents" / "node-1.jsonl"
        wait_for(lambda: old.poll() is not None, timeout=30,
                 what="the thawed agent to step aside")
        text = log.read_text()
        assert "result dropped" in text or "result rejected" in text
    finally:
        for proc in agents:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    assert_never_overlapped(ticks, expected_runs=2)
    history = tick_history(gravity)
    assert [s for s, _ in history] == ["in_progress", "failed", "in_progress", "completed"]
    assert sum(1 for _, owner in history if owner == history[0][1]) == 1


def test_the_guard_kills_a_registered_process_group_when_the_lease_runs_out() -> None:
    fence = ChildFence()
    child = subprocess.Popen(["bash", "-c", "sleep 60 & sleep 60; wait"],
                             start_new_session=True)
    try:
        fence.arm(time.monotonic() + 0.6, ttl=2.0)
        assert fence.add(child.pid)
        assert child.poll() is None
        assert child.wait(timeout=10) in (-signal.SIGTERM, -signal.SIGKILL)
        # The whole group went, the grandchild `sleep` too.
        wait_for(lambda: group_gone(child.pid), timeout=10, what="the grandchild to die")
        # Once the deadline has passed, a newly registered group is killed at once.
        late = subprocess.Popen(["sleep", "60"], start_new_session=True)
        assert not fence.add(late.pid)
        assert late.wait(timeout=10) == -signal.SIGKILL
    finally:
        for proc in (child,):
            if proc.poll() is None:
                proc.kill()
        fence.close()


def test_the_guard_kills_what_is_left_when_its_holder_dies(tmp_path: Path) -> None:
    code = ("import subprocess, sys, time\n"
            "from engine.executors.fence import ChildFence\n"
            "f = ChildFence(); f.arm(time.monotonic() + 3600, ttl=10)\n"
            "p = subprocess.Popen(['bash', '-c', 'sleep 60 & sleep 60; wait'],"
            " start_new_session=True)\n"
            "f.add(p.pid); print(p.pid, flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    pgid = int(holder.stdout.readline())
    holder.kill()  # kill -9: no cleanup of its own
    holder.wait(timeout=10)

    wait_for(lambda: group_gone(pgid), timeout=10,
             what="the guard to kill the dead holder's processes")


def test_the_database_lock_holder_in_these_tests_really_blocks_writers(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    sqlite3.connect(db).execute("CREATE TABLE t(x)")
    holder = hold_database(db, 1.5)
    conn = sqlite3.connect(db, timeout=0.1)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        conn.execute("INSERT INTO t VALUES(1)")
    conn.close()
    assert holder.wait(timeout=10) == 0


class _Meddler(Executor):
    """A phase during whose run another writer (its own connection to the same database)
    moves the phase on, as a process that took over would: the driver's own result then
    loses its compare-and-swap."""

    name = "meddle"

    def execute(self, ctx: ExecContext) -> str | None:
        with SQLiteStore(ctx.state_dir / "g.db") as other:
            current = other.get_state(ctx.operation_id, ctx.phase_id)
            other.apply(ctx.operation_id, [fsm.interrupt(current, "a test's other writer")])
        return None


def test_a_driver_whose_result_was_dropped_does_not_report_success(tmp_path: Path) -> None:
    registry.register(_Meddler())
    store = SQLiteStore(tmp_path / "g.db")
    plan = plan_from_mapping({"kind": "Plan", "metadata": {"name": "m"},
                              "phases": [{"id": "meddled", "executor": "meddle"}]})
    op = create_operation(store, plan, operation_id="op1")
    engine = Engine(store=store, state_dir=tmp_path, quiet=True)
    with pytest.raises(OperationFailed, match="was not recorded because another process"):
        resume(engine, op.id)
    assert store.get_state(op.id, "/meddled").state.value == "failed"
    store.close()


def test_a_write_refused_for_a_lost_lease_ends_the_run_with_the_fencing_message(
        gravity: Gravity, write_plan, tmp_path: Path) -> None:
    """The store refuses a driver's write because its lease is gone before the driver's own
    keeper noticed (here: revoked behind its back, between two renewals of a 30 s lease). The
    run ends as any lost lease does: fenced, exit 1, the one message that says nothing more was
    recorded — not the store's bare refusal."""
    from engine.store.base import coordinator_lock

    go = tmp_path / "go"
    plan = write_plan(f"""
kind: Plan
metadata: {{name: refused}}
phases:
  - id: wait
    executor: command
    data: {{run: "touch started; while [ ! -f {go} ]; do sleep 0.05; done"}}
""")
    gravity("operation", "create", "--plan", str(plan), "--id", "op1", check=0)
    driver = gravity.spawn("plan", "resume", GRAVITY_LEASE_TTL="30")
    wait_for(gravity.node_file("local", "started").exists, proc=driver, what="the phase to run")
    store = SQLiteStore(gravity.db)
    try:
        holder = store.lock_holder(coordinator_lock("op1"))
        assert holder is not None
        store.revoke_lease(holder.id)
    finally:
        store.close()
    go.touch()
    _out, err = driver.communicate(timeout=60)
    assert driver.returncode == 1, err
    assert "lost its lease" in err and "nothing more was recorded" in err, err
    assert "Traceback" not in err
    assert gravity.states() == {"/wait": "in_progress"}  # its end was not recorded
