"""Agents on a real etcd: phases run on their own node's agent process, in parallel across
nodes; an agent or a coordinator killed with -9 is recovered from; stale results are fenced.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Gravity
from tests.helpers import wait_for

TTL = "2"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def cluster(gravity: Gravity, request: pytest.FixtureRequest) -> Iterator[Gravity]:
    """`gravity` pointed at a fresh etcd prefix, with agents dispatched to (the etcd default).
    It asks for etcd at run time: the tests using it carry `@pytest.mark.etcd` themselves."""
    if os.environ.get("GRAVITY_TEST_AGENTS_ON_SQLITE"):  # a quick local check of the logic
        gravity.extra_env.update(GRAVITY_DISPATCH="agents", GRAVITY_LEASE_TTL=TTL)
    else:
        etcd_url = request.getfixturevalue("etcd_url")
        gravity.extra_env.update(GRAVITY_STORE=etcd_url, GRAVITY_LEASE_TTL=TTL)
    procs: list[subprocess.Popen[str]] = []
    gravity.agents = procs  # type: ignore[attr-defined]
    yield gravity
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def start_agent(g: Gravity, node: str) -> subprocess.Popen[str]:
    proc = g.spawn("agent", "run", "--node", node, "--ttl", TTL, "--grace", "2")
    g.agents.append(proc)  # type: ignore[attr-defined]
    wait_for(lambda: node in g("agent", "status", "-o", "json", check=0).stdout
             and any(r["node"] == node and r["status"] == "Online"
                     for r in json.loads(g("agent", "status", "-o", "json").stdout)),
             what=f"agent {node} online")
    return proc


RECORD = "echo $GRAVITY_NODE $PPID > who; date +%s.%N > start; sleep 1; date +%s.%N > end"
THREE_NODES = f"""
kind: Plan
metadata: {{name: spread}}
phases:
  - id: work
    parallel: 3
    phases:
      - id: n1
        node: node-1
        executor: command
        data: {{run: "{RECORD}"}}
      - id: n2
        node: node-2
        executor: command
        data: {{run: "{RECORD}"}}
      - id: n3
        node: node-3
        executor: command
        data: {{run: "{RECORD}"}}
  - id: after
    executor: command
    data: {{run: "echo $PPID > who"}}
"""


@pytest.mark.etcd
def test_each_phase_runs_on_its_nodes_agent_in_parallel(cluster: Gravity, write_plan) -> None:
    agents = {n: start_agent(cluster, n) for n in ("node-1", "node-2", "node-3")}
    cluster("operation", "create", "--plan", str(write_plan(THREE_NODES)), "--id", "op1",
            check=0)
    coordinator = cluster("plan", "resume", check=0)
    assert "resumed: operation op1 is completed" in coordinator.stdout
    for node, proc in agents.items():
        assert cluster.node_file(node, "who").read_text().split() == [node, str(proc.pid)]
    # The phase without a node ran in the coordinator, not on an agent.
    assert int(cluster.node_file("local", "who").read_text()) not in {
        p.pid for p in agents.values()}
    spans = [(float(cluster.node_file(n, "start").read_text()),
              float(cluster.node_file(n, "end").read_text())) for n in agents]
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"no overlap: {spans}"
    states = json.loads(cluster("plan", "-o", "json", check=0).stdout)
    work = states["phases"][0]["phases"]
    assert [(p["node"], p["state"]) for p in work] == [
        ("node-1", "completed"), ("node-2", "completed"), ("node-3", "completed")]


FLAKY_AGENT = """
kind: Plan
metadata: {name: agent-dies}
phases:
  - id: slow
    node: node-1
    retry: {attempts: 3, initial: 200ms}
    executor: command
    data: {run: "echo x >> started; sleep ${SLOW:-4}; echo x >> finished"}
"""


@pytest.mark.etcd
@pytest.mark.slow
def test_agent_killed_mid_phase_is_interrupted_then_redispatched(
        cluster: Gravity, write_plan) -> None:
    agent = start_agent(cluster, "node-1")
    cluster("operation", "create", "--plan", str(write_plan(FLAKY_AGENT)), "--id", "op1",
            check=0)
    coordinator = cluster.spawn("plan", "resume", "--agent-timeout", "60")
    started = cluster.node_file("node-1", "started")
    wait_for(lambda: lines(started), what="the phase to start")
    os.kill(agent.pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def interrupted() -> bool:
        log = cluster("events", "-o", "json", check=0).stdout
        return "interrupted: agent on node-1 lost" in log

    wait_for(interrupted, timeout=20, what="the interruption to be recorded")
    assert time.monotonic() - killed_at <= 2 * float(TTL) + 1.5
    start_agent(cluster, "node-1")
    assert coordinator.wait(timeout=60) == 0, coordinator.stderr.read()
    assert len(lines(started)) == 2  # the killed attempt and exactly one more
    assert len(lines(cluster.node_file("node-1", "finished"))) == 1
    records = [json.loads(x) for x in cluster("events", "-o", "json", check=0).stdout.splitlines()]
    assert [(r["to"], r["attempt"]) for r in records] == [
        ("in_progress", 1), ("failed", 1), ("in_progress", 2), ("completed", 2)]


FAILS_ONCE = """
kind: Plan
metadata: {name: fails-once}
phases:
  - id: flaky
    node: node-1
    retry: {attempts: 2, initial: 100ms}
    executor: command
    data: {run: "echo x >> tries; test -e failed-once || { touch failed-once; exit 1; }"}
"""


@pytest.mark.etcd
def test_an_agent_runs_the_retry_that_follows_its_own_failure(
        cluster: Gravity, write_plan) -> None:
    """The agent waits only for dispatches (not for the results it records itself, which land
    in the same range of the log): its failure is recorded, and the retry of the same phase
    dispatched to it next still reaches it and runs once."""
    start_agent(cluster, "node-1")
    cluster("operation", "create", "--plan", str(write_plan(FAILS_ONCE)), "--id", "op1",
            check=0)
    cluster("plan", "resume", "--agent-timeout", "60")
    assert len(lines(cluster.node_file("node-1", "tries"))) == 2
    records = [json.loads(x) for x in cluster("events", "-o", "json", check=0).stdout.splitlines()]
    assert [(r["to"], r["attempt"]) for r in records] == [
        ("in_progress", 1), ("failed", 1), ("in_progress", 2), ("completed", 2)]


CHAIN = """
kind: Plan
metadata: {name: coordinator-dies}
phases:
  - id: first
    node: node-1
    executor: command
    data: {run: "echo x >> first"}
  - id: middle
    node: node-1
    executor: command
    data: {run: "echo x >> middle; sleep 3; echo x >> middle.done"}
  - id: last
    node: node-2
    executor: command
    data: {run: "echo x >> last"}
"""


@pytest.mark.etcd
@pytest.mark.slow
def test_coordinator_killed_then_resumed_elsewhere(cluster: Gravity, write_plan) -> None:
    start_agent(cluster, "node-1")
    start_agent(cluster, "node-2")
    cluster("operation", "create", "--plan", str(write_plan(CHAIN)), "--id", "op1", check=0)
    coordinator = cluster.spawn("plan", "resume")
    wait_for(lambda: cluster.node_file("node-1", "middle").exists(), what="middle to start")
    os.kill(coordinator.pid, signal.SIGKILL)
    coordinator.wait(timeout=10)
    # The agent keeps running the phase and records its result with nobody watching.
    wait_for(lambda: cluster.states().get("/middle") == "completed", timeout=20,
             what="the agent to record /middle")
    # Another coordinator may take over once the dead one's lease is gone.
    wait_for(lambda: cluster("plan", "resume").returncode == 0, timeout=20,
             what="resume to succeed")
    assert cluster.states() == {"/first": "completed", "/middle": "completed",
                                "/last": "completed"}
    assert [len(lines(cluster.node_file(n, f))) for n, f in (
        ("node-1", "first"), ("node-1", "middle"), ("node-1", "middle.done"),
        ("node-2", "last"))] == [1, 1, 1, 1]


@pytest.mark.etcd
@pytest.mark.slow
def test_two_coordinators_one_drives(cluster: Gravity, write_plan) -> None:
    start_agent(cluster, "node-1")
    start_agent(cluster, "node-2")
    cluster("operation", "create", "--plan", str(write_plan(CHAIN)), "--id", "op1", check=0)
    first = cluster.spawn("plan", "resume")
    wait_for(lambda: cluster.node_file("node-1", "first").exists(), what="the first phase")
    second = cluster("plan", "resume", check=3)
    assert "is being driven by coordinator:op1" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert first.wait(timeout=60) == 0


@pytest.mark.etcd
@pytest.mark.slow
def test_a_stale_agents_late_result_is_fenced(cluster: Gravity, write_plan) -> None:
    old = start_agent(cluster, "node-1")
    cluster("operation", "create", "--plan",
            str(write_plan(FLAKY_AGENT.replace("${SLOW:-4}", "1"))), "--id", "op1", check=0)
    coordinator = cluster.spawn("plan", "resume")
    wait_for(lambda: lines(cluster.node_file("node-1", "started")), what="first attempt")
    os.kill(old.pid, signal.SIGSTOP)  # frozen: its lease expires, its phase is interrupted
    try:
        wait_for(lambda: "interrupted" in cluster("events", check=0).stdout, timeout=20,
                 what="the interruption")
        new = start_agent(cluster, "node-1")
        assert coordinator.wait(timeout=60) == 0
    finally:
        os.kill(old.pid, signal.SIGCONT)
    # The old agent wakes up: its guard stopped the attempt when its lease ran out, so the
    # result is dropped (or, if it reported before noticing, rejected by the fenced write).
    log = cluster.state_dir / "logs" / "agents" / "node-1.jsonl"
    wait_for(lambda: "result dropped" in log.read_text()
             or "result rejected" in log.read_text(), timeout=20,
             what="the stale result to be dropped")
    records = [json.loads(x) for x in cluster("events", "-o", "json", check=0).stdout.splitlines()]
    assert [r["to"] for r in records] == ["in_progress", "failed", "in_progress",
                                               "completed"]
    assert "owner" not in records[-1] and records[2]["owner"] != records[0]["owner"]
    assert cluster.states() == {"/slow": "completed"}
    assert new.poll() is None
    wait_for(lambda: old.poll() is not None, timeout=20, what="the stale agent to give up")


@pytest.mark.etcd
def test_agent_stop_through_the_store_and_missing_agent_message(
        cluster: Gravity, write_plan) -> None:
    agent = start_agent(cluster, "node-1")
    cluster("agent", "stop", "--node", "node-1", check=0)
    assert agent.wait(timeout=20) == 0
    assert json.loads(cluster("agent", "status", "-o", "json", check=0).stdout) == []
    cluster("operation", "create", "--plan", str(write_plan(CHAIN)), "--id", "op1", check=0)
    status = json.loads(cluster("agent", "status", "-o", "json", check=0).stdout)
    assert status == [{"node": n, "status": "Offline", "heartbeat": None, "running": [],
                       "pid": None, "host": None} for n in ("node-1", "node-2")]
    assert "gravity agent run --node NODE` on: node-1, node-2" in cluster(
        "agent", "status", check=0).stdout
    proc = cluster("plan", "resume", "--agent-timeout", "1", check=1)
    assert "no agent running on node node-1: run `gravity agent run --node node-1` there" \
        in proc.stderr
    # --local runs the phase in this process instead.
    cluster("plan", "execute", "--phase", "/first", "--local", check=0)
    assert cluster.states()["/first"] == "completed"


ONE_ON_NODE_1 = """
kind: Plan
metadata: {name: one}
phases:
  - id: only
    node: node-1
    executor: command
    data: {run: "echo x > only"}
"""


@pytest.mark.etcd
def test_an_idle_agent_blocks_on_a_watch_and_reads_nothing(cluster: Gravity, write_plan) -> None:
    """An agent with no operation to follow costs ~nothing: across several of its lease
    renewals it reads nothing from the store (its --debug call log has a line for every read),
    because it blocks on a watch of its stop request and of the cluster lock. It still takes
    up a new operation at once, and a stop request."""
    log = cluster.tmp / "agent-debug.log"
    with open(log, "w") as err:
        agent = subprocess.Popen(cluster.argv("agent", "run", "--node", "node-1", "--ttl", TTL),
                                 stdout=subprocess.DEVNULL, stderr=err, text=True,
                                 env=cluster.env(GRAVITY_DEBUG="1"), cwd=cluster.tmp)
    cluster.agents.append(agent)  # type: ignore[attr-defined]

    def renewals() -> int:
        return log.read_text().count(" keepalive lease ")

    wait_for(lambda: renewals() >= 1, proc=agent, what="its first lease renewal")
    start, since = len(log.read_text()), time.time()
    # Four renewals at TTL/3: over two seconds in which it used to read twice a second.
    wait_for(lambda: renewals() >= 5, proc=agent, what="four more lease renewals")
    idle = log.read_text()[start:]
    assert [line for line in idle.splitlines() if " gravity.store.reads " in line] == []
    assert " keepalive lease " in idle
    # `agent status` shows its last renewal, although its record was not rewritten since.
    [row] = json.loads(cluster("agent", "status", "-o", "json").stdout)
    assert row["status"] == "Online" and row["heartbeat"] > since

    cluster("operation", "create", "--plan", str(write_plan(ONE_ON_NODE_1)), "--id", "op1",
            check=0)
    wait_for(lambda: "follows operation op1" in log.read_text(), proc=agent,
             what="the agent to follow op1")
    cluster("plan", "resume", check=0)
    assert cluster.states() == {"/only": "completed"}
    assert cluster.node_file("node-1", "only").exists()
    cluster("agent", "stop", "--node", "node-1", check=0)
    assert agent.wait(timeout=20) == 0


@pytest.mark.etcd
@pytest.mark.slow
def test_a_new_coordinator_adopts_a_phase_an_agent_is_still_running(
        cluster: Gravity, write_plan) -> None:
    agent = start_agent(cluster, "node-1")
    start_agent(cluster, "node-2")
    cluster("operation", "create", "--plan", str(write_plan(CHAIN)), "--id", "op1", check=0)
    coordinator = cluster.spawn("plan", "resume")
    wait_for(lambda: cluster.node_file("node-1", "middle").exists(), what="middle to start")
    os.kill(coordinator.pid, signal.SIGKILL)
    coordinator.wait(timeout=10)
    # Resume at once, while the agent still runs /middle: it is adopted, not started again.
    assert cluster.states()["/middle"] == "in_progress"
    cluster("plan", "resume", check=0)
    assert cluster.states() == {"/first": "completed", "/middle": "completed",
                                "/last": "completed"}
    assert len(lines(cluster.node_file("node-1", "middle"))) == 1
    assert len(lines(cluster.node_file("node-1", "middle.done"))) == 1
    # An agent killed with -9 can be started again at once on the same machine.
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait(timeout=10)
    start_agent(cluster, "node-1")


SPAWNER = """
import json, sys, threading
from pathlib import Path
from engine.store import open_store
from engine.executors.base import ExecContext, run_process
from engine.errors import ExecutionError
from engine.model import Operation, PhaseSpec

url, workdir, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
store = open_store(url)  # a live etcd connection, watch and lease, as an agent holds
store.create_operation(Operation(id="op", type="plan", plan_name="spawn"),
                       [PhaseSpec(id="/p", parent="/", executor="noop")])
lease = store.grant_lease("agent:spawner", 5)
stop = threading.Event()
def watch():
    while not stop.is_set():
        store.wait_changes("op", 0, timeout=0.2)
def beat():
    while not stop.wait(0.1):
        store.keepalive(lease.id)
        store.kv_put("agents/spawner", {"n": 1}, lease.id)
threads = [threading.Thread(target=f, daemon=True) for f in (watch, beat)]
for t in threads:
    t.start()
ctx = ExecContext("op", "/p", "spawner", 1, {}, workdir, workdir, workdir / "p.log")
failures = []
for _ in range(n):
    try:
        run_process(ctx, ["sh", "-c", "true"])
    except ExecutionError as exc:
        failures.append(exc.message)
stop.set()
print(json.dumps({"failures": failures}))
"""


@pytest.mark.slow
def test_phase_processes_of_a_process_talking_to_etcd_are_not_aborted_by_grpc(
        etcd_url: str, tmp_path: Path) -> None:
    """gRPC's fork handlers used to restart its poller in every forked phase process, which then
    aborted (`command exited with status -6`) before running anything, in ~3% of spawns."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    proc = subprocess.run([sys.executable, "-c", SPAWNER, etcd_url, str(tmp_path), "300"],
                          capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr
    failures = json.loads(proc.stdout.splitlines()[-1])["failures"]
    assert failures == [], f"{len(failures)} of 300 spawns failed, first: {failures[0]}"


def test_a_dispatch_seen_twice_runs_once(tmp_path: Path) -> None:
    """An agent that starts following an operation reads its stored states and then watches the
    changelog from where it was when it began; a dispatch written in between shows up in both.
    The agent must run that attempt once, not twice."""
    from engine import fsm
    from engine.agent import Agent
    from engine.model import Action, PhaseState, State
    from engine.planfile import plan_from_mapping
    from engine.service import create_operation
    from engine.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "gravity.db")
    plan = plan_from_mapping({"kind": "Plan", "metadata": {"name": "once"}, "phases": [
        {"id": "p", "node": "node-1", "executor": "command", "data": {"run": "echo x >> ran"}}]})
    create_operation(store, plan, operation_id="op1")
    agent = Agent(store=store, node="node-1", state_dir=tmp_path, log_format="json")
    agent._announce()
    assert agent.lease is not None
    position = store.last_seq("op1")  # where its watch will start: before the dispatch
    store.apply("op1", [fsm.transition(PhaseState("/p"), State.IN_PROGRESS, action=Action.EXECUTE,
                                       owner=agent.lease.id,
                                       attempt=1, node="node-1")])
    agent._switch("op1")  # reads the dispatch from the stored states and starts it
    wait_for(lambda: store.get_state("op1", "/p").state is not State.IN_PROGRESS,
             what="the phase to finish", interval=0.02)
    agent.after = position
    agent._poll_once()  # the watch now delivers the same dispatch
    # A second run, if one started, ends (and is fenced).
    wait_for(lambda: not agent.running or agent._report_finished(),
             what="a second run to finish", interval=0.02)
    assert store.get_state("op1", "/p").state is State.COMPLETED
    assert (tmp_path / "nodes" / "node-1" / "ran").read_text() == "x\n"
    assert [r.to_state for r in store.changelog("op1")] == [State.IN_PROGRESS, State.COMPLETED]
    agent.stopping.set()
    agent._retire()
    store.close()


def test_a_retry_dispatched_while_the_fenced_attempt_winds_down_is_not_lost(
        tmp_path: Path) -> None:
    """An agent frozen past its lease thaws: its guard stops the phase, it announces itself
    with a new lease, and the coordinator retries the phase on it at once — before the fenced
    attempt's thread has been reported. That dispatch must start once the old attempt is gone,
    not be dropped (found by `python -m chaos`, scenario agent_pause: the retry waited
    forever)."""
    from engine import fsm
    from engine.agent import Agent
    from engine.model import Action, PhaseState, State
    from engine.planfile import plan_from_mapping
    from engine.service import create_operation
    from engine.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "gravity.db")
    run = 'echo "$GRAVITY_ATTEMPT" >> ran; if [ "$GRAVITY_ATTEMPT" = 1 ]; then sleep 30; fi'
    plan = plan_from_mapping({"kind": "Plan", "metadata": {"name": "retry"}, "phases": [
        {"id": "p", "node": "node-1", "executor": "command", "data": {"run": run}}]})
    create_operation(store, plan, operation_id="op1")
    ran = tmp_path / "nodes" / "node-1" / "ran"
    agent = Agent(store=store, node="node-1", state_dir=tmp_path, log_format="json", grace=1)
    agent._announce()
    assert agent.lease is not None
    first = store.apply("op1", [fsm.transition(
        PhaseState("/p"), State.IN_PROGRESS, action=Action.EXECUTE, owner=agent.lease.id,
        attempt=1, node="node-1")])[0].state_after()
    agent._switch("op1")
    wait_for(lambda: ran.exists(), what="attempt 1 to start", interval=0.02)
    assert agent.keeper is not None
    agent.keeper.lost.set()  # as the watchdog does when the lease ran out during the freeze
    agent._recover_lease()  # attempt 1 fenced and stopped, a new lease announced
    # The coordinator records attempt 1 interrupted and dispatches attempt 2 to the new lease.
    failed = store.apply("op1", [fsm.transition(first, State.FAILED,
                                                error="interrupted: agent on node-1 lost")])
    retry = store.apply("op1", [fsm.transition(
        failed[0].state_after(), State.IN_PROGRESS, action=Action.EXECUTE,
        owner=agent.lease.id, attempt=2, node="node-1")])[0].state_after()
    agent._start(retry)  # the watch delivers it: attempt 1 is still being wound down
    assert agent.running["/p"].state.version == first.version  # not alongside attempt 1
    wait_for(lambda: agent.running["/p"].done.is_set(), what="attempt 1 to be stopped")
    agent._report_finished()  # attempt 1's result dropped; attempt 2 starts now
    wait_for(lambda: store.get_state("op1", "/p").state is State.COMPLETED, timeout=30,
             what="attempt 2 to run and be recorded", interval=0.05)
    assert ran.read_text() == "1\n2\n"
    assert store.get_state("op1", "/p").attempt == 2
    agent.stopping.set()
    agent._shutdown()
    agent.keeper.stop()
    agent._retire()
    agent.fence.close()
    store.close()
