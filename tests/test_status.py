"""The truth at 3am: `gravity status` says what state the cluster is in and why, which nodes run
what, who holds the lock and what happened before; values never show unless asked.
"""

from __future__ import annotations

import json
import stat

import pytest

from engine.model import Operation, OpState
from engine.operations.condition import ActiveRun, ClusterState, condition
from engine.views import IDLE
from tests.conftest import Gravity

V1 = {"app": "1.0.0", "runtime": "1.0.0"}
V2 = {"app": "2.0.0", "runtime": "2.0.0"}


def op(state: OpState, *, note: str | None = None, op_type: str = "upgrade") -> Operation:
    return Operation(id="op-1", plan_name="p", state=state, created=1.0, updated=2.0,
                     type=op_type, note=note)


@pytest.mark.parametrize(("reported", "active", "last", "stopped", "expected"), [
    ({"n1": V1, "n2": V1}, None, op(OpState.COMPLETED), False, ClusterState.ACTIVE),
    ({"n1": V2, "n2": V1}, ActiveRun(op(OpState.ACTIVE), driven=True), None, False,
     ClusterState.UPDATING),
    ({"n1": V2, "n2": V1}, ActiveRun(op(OpState.ACTIVE), driven=False, failed=("/x",)), None,
     False, ClusterState.DEGRADED),
    ({"n1": V1, "n2": V1}, ActiveRun(op(OpState.ACTIVE), driven=False), None, False,
     ClusterState.UPDATING),  # created by hand, not run yet: it may go on
    ({"n1": V2, "n2": V1}, None, op(OpState.COMPLETED), False, ClusterState.DEGRADED),
    ({"n1": V1, "n2": V1}, None, op(OpState.FAILED, note="completed manually"), False,
     ClusterState.DEGRADED),
    ({"n1": V1, "n2": V1}, None, op(OpState.FAILED, note="preflight failed"), False,
     ClusterState.ACTIVE),  # a failed preflight changed nothing
    ({"n1": V1, "n2": V1}, None, op(OpState.COMPLETED), True, ClusterState.STOPPED),
])
def test_the_cluster_state_rules(reported: dict, active: ActiveRun | None,
                                 last: Operation | None, stopped: bool,
                                 expected: ClusterState) -> None:
    found = condition(V1, reported, ["n1", "n2"], stopped=stopped, active=active, last=last)
    assert found.state is expected
    if expected is not ClusterState.ACTIVE:
        assert found.reasons  # every state but active says why


def test_an_idle_failed_operation_names_the_commands_to_run() -> None:
    found = condition(V1, {"n1": V2}, ["n1"], stopped=False, last=None,
                      active=ActiveRun(op(OpState.ACTIVE), driven=False, failed=("/app/a",)))
    assert found.reasons[0] == f"operation op-1 (upgrade) failed at /app/a: {IDLE}"
    assert found.reasons[1] == "node n1 runs app 2.0.0, runtime 2.0.0 (the cluster: app " \
        "1.0.0, runtime 1.0.0)"


@pytest.mark.slow  # a whole cluster installed, then upgraded
def test_status_tells_the_state_versions_lock_and_history(gravity: Gravity, images) -> None:
    gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"), "--id",
            "install", "--set", "db.password=s3cret", check=0)
    status = gravity("status", check=0).stdout
    assert "Status:     active\n" in status
    assert "Cluster lock: free (no active operation)" in status
    # An upgrade that fails after every node moved: the cluster is degraded, and says why.
    gravity.node_file("node-1", "app/maintenance").write_text("")
    gravity("upgrade", str(images / "v2"), "--id", "upgrade", check=1)
    status = gravity("status", check=0).stdout
    assert "Cluster:    quickstart 1.0.0 (flavor three), updating to 2.0.0 (operation " \
        "upgrade)" in status
    assert "Status:     degraded\n" in status
    assert f"  - operation upgrade (upgrade) failed at /app/quickstart: {IDLE}" in status
    assert "  - node node-2 runs app 2.0.0, runtime 2.0.0 (the cluster: app 1.0.0, " \
        "runtime 1.0.0)" in status
    assert "Cluster lock: held by operation upgrade (idle — nothing is running)" in status
    assert f"— active; {IDLE}" in gravity("plan", check=0).stdout  # the plan says it too
    doc = json.loads(gravity("status", "-o", "json", check=0).stdout)
    assert doc["cluster"]["state"] == "degraded"
    assert doc["cluster"]["updating_to"] == {"version": "2.0.0", "operation": "upgrade"}
    nodes = {n["name"]: n for n in doc["cluster"]["nodes"]}
    assert nodes["node-3"]["packages"] == {"app": "2.0.0", "runtime": "2.0.0"}
    assert nodes["node-3"]["differs"] == {"app": "2.0.0", "runtime": "2.0.0"}
    assert nodes["node-3"]["profile"] == "worker"
    assert doc["lock"]["operation"] == "upgrade" and doc["lock"]["driver"] is None
    assert doc["lock"]["failed"] == ["/app/quickstart"]
    # Rolled back: active again, every node on 1.0.0.
    gravity("rollback", "--confirm", check=0)
    assert "Status:     active\n" in gravity("status", check=0).stdout
    # Stopped by the operator: stopped.
    gravity("app", "stop", check=0)
    assert "Status:     stopped\n" in gravity("status", check=0).stdout
    # The history: every operation, its state, when and by whom.
    rows = json.loads(gravity("status", "history", "-o", "json", check=0).stdout)
    assert [(r["id"], r["type"], r["state"]) for r in rows][:2] == [
        ("install", "install", "completed"), ("upgrade", "upgrade", "rolled_back")]
    assert all(r["by"] and "@" in r["by"] for r in rows)
    assert rows[0]["finished"] >= rows[0]["started"]
    text = gravity("status", "history", check=0).stdout
    assert text.splitlines()[0].split() == ["Operation", "Type", "State", "Started",
                                            "Finished", "By"]


@pytest.mark.slow  # a whole CLI story: out of --fast
def test_values_are_secrets_everywhere_but_values_show_reveal(gravity: Gravity,
                                                              images) -> None:
    gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"), "--id",
            "install", "--set", "db.password=s3cret", check=0)
    for args in (("operation", "list", "-o", "json"), ("operation", "list", "-o", "yaml"),
                 ("operation", "list"), ("status",), ("status", "-o", "json"),
                 ("status", "history", "-o", "json"), ("events",), ("events", "-o", "json"),
                 ("plan", "-o", "json"), ("values", "show"),
                 ("values", "show", "--operation-id", "install")):
        shown = gravity(*args, check=0)
        assert "s3cret" not in shown.stdout + shown.stderr, args
    listed = json.loads(gravity("operation", "list", "-o", "json", check=0).stdout)
    assert listed[0]["data"]["values"] == {"db": {"password": "***"}}  # keys kept
    assert "password: s3cret" in gravity("values", "show", "--operation-id", "install",
                                         "--reveal", check=0).stdout
    assert "s3cret" not in (gravity.state_dir / "logs" / "install.jsonl").read_text()
    values = gravity.node_file("node-1", "helm/values.yaml")
    assert stat.S_IMODE(values.stat().st_mode) == 0o600 and "s3cret" in values.read_text()
