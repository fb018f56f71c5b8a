"""The operator's story on the embedded store, through real `gravity` processes and real files:
execute, refuse, retry, time out, run in parallel, fail fast, resume, roll back, complete.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import chain_plan, run


def counted(name: str, app: str = "echo x >> app.count") -> str:
    """The chain plan whose phases each append a line to `<phase>.count` (`.undo` when rolled
    back); `app` replaces what /app runs."""
    return chain_plan(name, init=run("echo x >> init.count", "echo x >> init.undo"),
                      drain=run("echo x >> drain.count", "echo x >> drain.undo"),
                      upgrade=run("echo x >> upgrade.count", "echo x >> upgrade.undo"),
                      app=run(app, "echo x >> app.undo"))


CHAIN = counted("chain")


@pytest.fixture(autouse=True)
def _both_stores(any_store: str) -> str:
    """Every story here runs on the embedded store and on etcd."""
    return any_store


def count(gravity, node: str, name: str) -> int:
    path = gravity.node_file(node, name)
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_execute_with_unmet_requires_is_refused(gravity) -> None:
    gravity.create(CHAIN)
    proc = gravity("plan", "execute", "--phase", "/masters/node-1/upgrade", check=3)
    assert "requires phases that are not completed" in proc.stderr
    assert "/masters/node-1/drain (unstarted)" in proc.stderr
    assert "/init (unstarted)" in proc.stderr
    assert "hint:" in proc.stderr
    assert count(gravity, "node-1", "upgrade.count") == 0
    assert gravity.changelog("op1") == []


@pytest.mark.slow  # a whole CLI story: out of --fast
def test_execute_one_phase_then_composite_then_noop_then_force(gravity) -> None:
    gravity.create(CHAIN)
    gravity("plan", "execute", "--phase", "/init", check=0)
    gravity("plan", "execute", "--phase", "/masters", check=0)
    assert gravity.states() == {
        "/init": "completed", "/masters/node-1/drain": "completed",
        "/masters/node-1/upgrade": "completed", "/app": "unstarted"}
    # Phases ran in the node's own working directory.
    assert count(gravity, "node-1", "drain.count") == 1
    assert count(gravity, "local", "init.count") == 1
    # A completed phase is a no-op without --force, re-run with it.
    out = gravity("plan", "execute", "--phase", "/init", check=0).stdout
    assert "already completed" in out
    assert count(gravity, "local", "init.count") == 1
    gravity("plan", "execute", "--phase", "/init", "--force", check=0)
    assert count(gravity, "local", "init.count") == 2
    log = gravity.changelog("op1")
    assert [(r["phase"], r["from"], r["to"]) for r in log] == [
        ("/init", "unstarted", "in_progress"),
        ("/init", "in_progress", "completed"),
        ("/masters/node-1/drain", "unstarted", "in_progress"),
        ("/masters/node-1/drain", "in_progress", "completed"),
        ("/masters/node-1/upgrade", "unstarted", "in_progress"),
        ("/masters/node-1/upgrade", "in_progress", "completed"),
        ("/init", "completed", "in_progress"),
        ("/init", "in_progress", "completed"),
    ]


def test_rollback_out_of_order_names_the_blockers(gravity) -> None:
    gravity.create(CHAIN)
    gravity("plan", "resume", check=0)
    proc = gravity("plan", "rollback", "--phase", "/masters/node-1/drain", check=3)
    assert "/masters/node-1/upgrade (completed)" in proc.stderr
    assert "/app (completed)" in proc.stderr
    assert count(gravity, "node-1", "drain.undo") == 0
    # In order it works, phase by phase.
    op_state = json.loads(gravity("operation", "list", "-o", "json", check=0).stdout)[0]
    assert op_state["state"] == "completed"


@pytest.mark.slow
def test_rollback_phase_by_phase_and_force(gravity) -> None:
    gravity.create(CHAIN)
    for phase in ("/init", "/masters/node-1/drain", "/masters/node-1/upgrade"):
        gravity("plan", "execute", "--phase", phase, check=0)
    gravity("plan", "rollback", "--phase", "/masters/node-1/upgrade", check=0)
    gravity("plan", "rollback", "--phase", "/masters/node-1/drain", check=0)
    assert count(gravity, "node-1", "upgrade.undo") == 1
    assert count(gravity, "node-1", "drain.undo") == 1
    states = gravity.states()
    assert states["/masters/node-1/drain"] == "rolled_back"
    # Nothing to undo on an unstarted phase; --force rolls back despite a completed dependent.
    assert "nothing to roll back" in gravity("plan", "rollback", "--phase", "/app",
                                             check=0).stdout
    gravity("plan", "execute", "--phase", "/masters/node-1/drain", check=0)
    gravity("plan", "rollback", "--phase", "/init", check=3)
    gravity("plan", "rollback", "--phase", "/init", "--force", check=0)
    assert count(gravity, "local", "init.undo") == 1


RETRY = """
kind: Plan
metadata: {name: retry}
phases:
  - id: flaky
    executor: command
    retry: {attempts: 3, initial: 100ms, factor: 2, max: 1s, jitter: 0}
    data:
      run: |
        echo "attempt $GRAVITY_ATTEMPT" >> attempts
        [ "$(wc -l < attempts)" -ge 3 ] || { echo "not yet"; exit 1; }
"""


def test_retry_succeeds_on_the_third_attempt(gravity) -> None:
    gravity.create(RETRY)
    gravity("plan", "resume", check=0)
    attempts = gravity.node_file("local", "attempts").read_text().split("\n")
    assert attempts[:3] == ["attempt 1", "attempt 2", "attempt 3"]
    log = gravity.changelog("op1")
    assert [(r["to"], r["attempt"]) for r in log] == [
        ("in_progress", 1), ("failed", 1), ("in_progress", 2), ("failed", 2),
        ("in_progress", 3), ("completed", 3)]
    assert "retrying in 100ms" in log[1]["note"]
    assert "retrying in 200ms" in log[3]["note"]
    assert "not yet" in log[1]["error"]
    assert gravity.states() == {"/flaky": "completed"}


def test_retries_exhausted_fail_with_output_tail(gravity) -> None:
    gravity.create(RETRY.replace("attempts: 3", "attempts: 2"))
    proc = gravity("plan", "resume", check=1)
    assert "phase /flaky failed on node local: command exited with status 1" in proc.stderr
    assert "  last output:\n    not yet\n" in proc.stderr  # the cause, not only the status
    assert "gravity plan resume" in proc.stderr
    plan = gravity("plan", check=0).stdout
    assert "× /flaky" in plan
    assert "not yet" in plan  # the error's tail is shown under the table
    log_file = gravity.state_dir / "logs" / "op1" / "flaky.log"
    assert log_file.read_text().count("not yet") == 2


TIMEOUT = """
kind: Plan
metadata: {name: timeout}
phases:
  - id: hang
    executor: command
    timeout: 1s
    data: {run: "sleep 30; touch finished"}
"""


def test_timeout_stops_the_work_and_fails_the_phase(gravity) -> None:
    gravity.create(TIMEOUT)
    proc = gravity("plan", "resume", check=1)
    assert "timed out after 1s" in proc.stderr
    assert not gravity.node_file("local", "finished").exists()
    log = gravity.changelog("op1")
    assert log[-1]["to"] == "failed"
    assert log[-1]["error"].startswith("timed out after 1s")


PARALLEL = """
kind: Plan
metadata: {name: parallel}
phases:
  - id: group
    parallel: 2
    phases:
      - id: one
        executor: command
        data: {run: "date +%s.%N > start; sleep 1; date +%s.%N > end"}
        node: n1
      - id: two
        executor: command
        data: {run: "date +%s.%N > start; sleep 1; date +%s.%N > end"}
        node: n2
"""


def test_parallel_children_overlap_in_time(gravity) -> None:
    gravity.create(PARALLEL)
    gravity("plan", "resume", check=0)
    spans = [tuple(float(gravity.node_file(n, f).read_text()) for f in ("start", "end"))
             for n in ("n1", "n2")]
    (s1, e1), (s2, e2) = spans
    assert s1 < e2 and s2 < e1, f"phases did not overlap: {spans}"


@pytest.mark.slow  # a whole CLI story: out of --fast
def test_sequential_children_do_not_overlap(gravity) -> None:
    gravity.create(PARALLEL.replace("parallel: 2", "parallel: 1"))
    gravity("plan", "resume", check=0)
    (_s1, e1), (s2, _e2) = [tuple(float(gravity.node_file(n, f).read_text())
                                for f in ("start", "end")) for n in ("n1", "n2")]
    assert e1 <= s2


FAIL_FAST = """
kind: Plan
metadata: {name: failfast}
phases:
  - id: group
    parallel: 2
    phases:
      - id: broken
        executor: command
        data: {run: "sleep 0.2; test -f fixed || { echo 'disk full'; exit 3; }; echo ok > done"}
      - id: slow
        executor: command
        data: {run: "sleep 1.5; echo x >> slow.count"}
  - id: after
    executor: command
    data: {run: "echo x >> after.count"}
"""


@pytest.mark.slow
def test_fail_fast_then_resume_after_the_fix(gravity) -> None:
    gravity.create(FAIL_FAST)
    proc = gravity("plan", "resume", check=1)
    assert "phase /group/broken failed" in proc.stderr
    # The running sibling finished; nothing new started; the operation stays resumable.
    assert gravity.states() == {"/group/broken": "failed", "/group/slow": "completed",
                                "/after": "unstarted"}
    assert count(gravity, "local", "slow.count") == 1
    assert count(gravity, "local", "after.count") == 0
    listing = json.loads(gravity("operation", "list", "-o", "json", check=0).stdout)
    assert listing[0]["state"] == "active"
    plan = gravity("plan", check=0).stdout
    assert "disk full" in plan
    # The operator fixes the cause and resumes: only what was not completed runs.
    gravity.node_file("local", "fixed").write_text("")
    gravity("plan", "resume", check=0)
    assert gravity.states() == {"/group/broken": "completed", "/group/slow": "completed",
                                "/after": "completed"}
    assert count(gravity, "local", "slow.count") == 1
    assert count(gravity, "local", "after.count") == 1
    listing = json.loads(gravity("operation", "list", "-o", "json", check=0).stdout)
    assert listing[0]["state"] == "completed"


@pytest.mark.slow
def test_complete_closes_a_stuck_operation_and_frees_the_lock(gravity, write_plan) -> None:
    gravity.create(FAIL_FAST)
    gravity("plan", "resume", check=1)
    second = write_plan(CHAIN, "second.yaml")
    proc = gravity("operation", "create", "--plan", str(second), check=3)
    assert "op1 is still active" in proc.stderr
    assert "gravity plan complete" in proc.stderr
    out = gravity("plan", "complete", check=0).stdout
    assert "op1 marked failed (completed manually)" in out
    assert gravity("operation", "create", "--plan", str(second), "--id", "op2",
                   check=0).stdout.strip() == "op2"
    ops = {o["id"]: o["state"] for o in json.loads(
        gravity("operation", "list", "-o", "json", check=0).stdout)}
    assert ops == {"op1": "failed", "op2": "active"}
    # A finished operation cannot be driven any more.
    gravity("plan", "resume", "--operation-id", "op1", check=3)


@pytest.mark.slow
def test_a_finished_operation_refuses_resume_and_complete(gravity) -> None:
    """As in Gravity, `plan resume` and `plan complete` act on an active operation only: on a
    finished one they exit 3 saying what it is and what to do instead, and change nothing."""
    gravity.create(CHAIN)
    gravity("plan", "resume", check=0)  # op1: completed
    before = gravity.changelog("op1")
    for verb in (["resume"], ["resume", "--dry-run"], ["complete"]):
        proc = gravity("plan", *verb, check=3)
        assert "error: operation op1 is already completed; `gravity plan " + verb[0] + \
            "` works on an active operation only" in proc.stderr
        assert "hint: nothing is left to do (see it with `gravity plan --operation-id op1`)" \
            in proc.stderr
        assert proc.stdout == ""
    assert gravity.changelog("op1") == before
    gravity.create(CHAIN, "op2")
    gravity("plan", "execute", "--phase", "/init", check=0)
    gravity("rollback", "--confirm", check=0)
    assert "op2 is already rolled back" in gravity("plan", "resume", check=3).stderr
    gravity.create(CHAIN, "op3")
    gravity("plan", "complete", check=0)  # closed as failed, completed manually
    proc = gravity("plan", "complete", check=3)
    assert "op3 is already closed as failed (completed manually)" in proc.stderr
    assert "gravity rollback --operation-id op3" in proc.stderr
    states = {o["id"]: o["state"] for o in json.loads(
        gravity("operation", "list", "-o", "json", check=0).stdout)}
    assert states == {"op1": "completed", "op2": "rolled_back", "op3": "failed"}


@pytest.mark.slow
def test_whole_rollback_in_reverse_order(gravity) -> None:
    gravity.create(CHAIN)
    gravity("plan", "resume", check=0)
    gravity("operation", "list", check=0)
    # A completed operation is closed; make a new one that stops halfway and roll it back.
    gravity.create(counted("chain", app="exit 1"), "op2")
    gravity("plan", "resume", check=1)
    dry = gravity("rollback", "--dry-run", check=0).stdout.split()
    assert dry[-4:] == ["/app", "/masters/node-1/upgrade", "/masters/node-1/drain", "/init"]
    gravity("rollback", "--confirm", check=0)
    assert set(gravity.states().values()) == {"rolled_back"}
    log = [r for r in gravity.changelog("op2") if r["to"] == "rolled_back"]
    assert [r["phase"] for r in log] == ["/app", "/masters/node-1/upgrade",
                                           "/masters/node-1/drain", "/init"]
    ops = {o["id"]: o["state"] for o in json.loads(
        gravity("operation", "list", "-o", "json", check=0).stdout)}
    assert ops["op2"] == "rolled_back"


def test_dry_run_writes_nothing(gravity) -> None:
    gravity.create(CHAIN)
    out = gravity("plan", "resume", "--dry-run", check=0).stdout
    assert out.split("\n")[1:5] == ["  /init", "  /masters/node-1/drain",
                                    "  /masters/node-1/upgrade", "  /app"]
    gravity("plan", "execute", "--phase", "/init", "--dry-run", check=0)
    assert gravity.changelog("op1") == []
    assert not gravity.node_file("local", "init.count").exists()


def test_plan_outputs(gravity) -> None:
    gravity.create(CHAIN)
    gravity("plan", "execute", "--phase", "/init", check=0)
    text = gravity("plan", check=0).stdout
    header = next(line for line in text.splitlines() if line.startswith("Phase"))
    assert header.split() == ["Phase", "Description", "State", "Node", "Requires", "Updated"]
    assert "✓ /init" in text
    assert "    * /masters/node-1/drain" in text
    doc = gravity.plan_json()
    assert doc["progress"] == {"leaves": 4, "unstarted": 3, "in_progress": 0, "completed": 1,
                               "failed": 0, "rolled_back": 0}
    masters = doc["phases"][1]
    assert masters["id"] == "/masters" and masters["state"] == "unstarted"
    assert masters["phases"][0]["phases"][0]["node"] == "node-1"
    yaml_out = gravity("plan", "-o", "yaml", check=0).stdout
    assert "id: /masters/node-1/upgrade" in yaml_out
    short = gravity("plan", "--short", check=0).stdout
    assert "/masters/node-1" not in short and "/masters" in short
    status = gravity("status", check=0).stdout
    assert "1/4 phases completed" in status


@pytest.mark.parametrize("args", [
    ("plan", "execute", "--phase", "/nope"),
    ("plan", "--operation-id", "missing"),
    ("plan", "execute"),
    ("plan", "resume", "--max-parallel", "0"),
])
def test_bad_cli_input_is_exit_2(gravity, args: tuple[str, ...]) -> None:
    gravity.create(CHAIN)
    proc = gravity(*args, check=2)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip()
    assert gravity.changelog("op1") == []


def test_no_operations_yet(gravity) -> None:
    proc = gravity("plan", check=2)
    assert "there are no operations yet" in proc.stderr
    assert "no operations yet" in gravity("status", check=0).stdout


SAME_NODE = """
kind: Plan
metadata: {name: same-node}
phases:
  - id: group
    parallel: 2
    phases:
      - id: one
        node: n1
        executor: command
        data: {run: "date +%s.%N > one.start; sleep 0.6; date +%s.%N > one.end"}
      - id: two
        node: n1
        executor: command
        data: {run: "date +%s.%N > two.start; sleep 0.6; date +%s.%N > two.end"}
"""


def spans(gravity, node: str) -> list[tuple[float, float]]:
    return [tuple(float(gravity.node_file(node, f"{p}.{e}").read_text()) for e in ("start",
                                                                                   "end"))
            for p in ("one", "two")]


def test_phases_on_one_node_do_not_overlap(gravity) -> None:
    gravity.create(SAME_NODE)
    gravity("plan", "resume", check=0)
    (_s1, e1), (s2, _e2) = sorted(spans(gravity, "n1"))
    assert e1 <= s2, "two phases overlapped on node n1"


def test_a_composite_pinned_to_a_node_lets_its_children_overlap(gravity) -> None:
    pinned = SAME_NODE.replace("    parallel: 2\n", "    parallel: 2\n    node: n1\n")
    gravity.create(pinned)
    gravity("plan", "resume", check=0)
    (_s1, e1), (s2, _e2) = sorted(spans(gravity, "n1"))
    assert s2 < e1, "children of a node-pinned parallel composite should overlap"
