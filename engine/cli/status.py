"""`gravity status` and `gravity status history`: the cluster's state (active, updating, degraded,
stopped) and why, its nodes and their versions, the operation in progress, the lock; the past.
"""

from __future__ import annotations

from typing import Any

import click

from engine.cli.context import CliContext
from engine.cli.drive import OP_OPTION
from engine.errors import NotFound

OUTPUT = click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
                      show_default=True, help="Readable text, or JSON for scripts.")


def lock_status(obj: CliContext) -> dict[str, Any]:
    """Who holds the cluster lock: the active operation, whether a live process drives it
    (and which), or whether it is idle with a failed phase."""
    from engine.model import State
    from engine.operations.condition import IDLE
    from engine.views import plan_view

    store = obj.store()
    active = store.active_operation_id()
    if active is None:
        return {"operation": None, "driver": None, "failed": [], "running": False,
                "idle": None}
    view = plan_view(store, store.get_operation(active), with_driver=True)
    from engine.views import operation_driver

    driver = operation_driver(store, active)
    leaves = view.leaf_states()
    failed = [p for p, s in leaves.items() if s is State.FAILED]
    running = any(s is State.IN_PROGRESS for s in leaves.values())
    return {"operation": active, "type": view.operation.type,
            "driver": driver.describe() if driver is not None else None, "failed": failed,
            "running": running,
            "idle": IDLE if driver is None and not running else None}


def cluster_status(obj: CliContext, lock: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The installed cluster as data (None before an install): its state and why, version
    (and the one an active upgrade moves to), service user, endpoints and each node with
    what it published — package versions, runtime configuration — and what differs from the
    cluster's. Never the application's values (`gravity values show` has them)."""
    from engine.executors.content import Facts
    from engine.operations.cluster import cluster_state
    from engine.operations.condition import ActiveRun, condition, differing_nodes

    store = obj.store()
    ops = store.list_operations()
    cluster = cluster_state(store, ops)
    if cluster is None:
        return None
    lock = lock if lock is not None else lock_status(obj)
    packages = Facts.all_of(store, "packages")  # what each node reported, from any host
    runtime = Facts.all_of(store, "runtime_config")
    names = [n.name for n in cluster.nodes]
    active = None
    if lock["operation"] is not None:
        active = ActiveRun(store.get_operation(lock["operation"]), lock["driver"] is not None,
                           tuple(lock["failed"]), lock["running"])
    finished = [o for o in ops if o.state.finished]
    found = condition(cluster.versions, packages, names, stopped=cluster.stopped,
                      active=active, last=finished[-1] if finished else None)
    differs = differing_nodes(cluster.versions, packages, names)
    target = None
    if active is not None and active.operation.type == "upgrade":
        target = {"version": active.operation.data.get("version"),
                  "operation": active.operation.id}
    status = cluster.status
    return {
        "app": cluster.app, "version": cluster.version, "flavor": cluster.flavor,
        "state": found.state.value, "reasons": list(found.reasons), "updating_to": target,
        "image_dir": cluster.image_dir,
        "application": "stopped" if cluster.stopped else "running",
        "service_user": ({"user": "planet", "uid": cluster.service_uid,
                          "gid": cluster.service_gid}
                         if cluster.service_uid is not None else None),
        "app_status": ({"ok": status.ok, "at": status.at, "operation": status.operation}
                       if status is not None else None),
        "endpoints": list(cluster.image.get("image_facts", {}).get("endpoints") or []),
        "nodes": [{"name": n.name, "address": n.address, "role": n.role.value,
                   "profile": n.profile, "packages": packages.get(n.name) or {},
                   "differs": differs.get(n.name) or {},
                   "runtime_config": runtime.get(n.name)} for n in cluster.nodes],
    }


def cluster_status_lines(obj: CliContext, cluster: dict[str, Any] | None = None) -> list[str]:
    """The cluster part of `gravity status`: state, application, version, nodes, packages."""
    from engine.presentation import endpoint_lines, when

    cluster = cluster if cluster is not None else cluster_status(obj)
    if cluster is None:
        return ["Cluster:    none installed"]
    user = cluster["service_user"]
    version = f"{cluster['app']} {cluster['version']}" + (
        f" (flavor {cluster['flavor']})" if cluster["flavor"] else "")
    if cluster["updating_to"]:
        version += (f", updating to {cluster['updating_to']['version']} (operation "
                    f"{cluster['updating_to']['operation']})")
    lines = [f"Cluster:    {version}",
             f"Status:     {cluster['state']}"]
    lines += [f"  - {reason}" for reason in cluster["reasons"]]
    lines += [f"Image:      {cluster['image_dir']}",
              f"Application:  {cluster['application']}",
              "Service user: " + (f"planet (uid {user['uid']}, gid {user['gid']})"
                                  if user is not None else "not yet created")]
    status = cluster["app_status"]
    if status is not None:
        verdict = "ok" if status["ok"] else "failed"
        lines.append(f"App status:   {verdict} at {when(status['at'])} "
                     f"(`gravity app status`, operation {status['operation']})")
    lines += endpoint_lines({"image_facts": {"endpoints": cluster["endpoints"]}})
    lines.append("Nodes:")
    for node in cluster["nodes"]:
        listing = ", ".join(f"{k} {v}" for k, v in node["packages"].items()) or "no packages"
        mark = "  (differs)" if node["differs"] else ""
        lines.append(f"  {node['name']:<12} {node['address']:<15} {node['role']:<7} "
                     f"{node['profile']:<10} {listing}{mark}")
    return lines


def lock_line(lock: dict[str, Any]) -> str:
    if lock["operation"] is None:
        return "Cluster lock: free (no active operation)"
    who = f"driven by {lock['driver']}" if lock["driver"] else \
        "idle — nothing is running" if lock["idle"] else "a phase is running"
    return f"Cluster lock: held by operation {lock['operation']} ({who})"


@click.group(invoke_without_command=True)
@OP_OPTION
@OUTPUT
@click.pass_context
def status(ctx: click.Context, operation_id: str | None, output: str) -> None:
    """Show the cluster's state and the active (or named, or most recent) operation.

    \b
    The cluster's state: active (nothing running, every node on the cluster's versions),
    updating (an operation is running or may go on), degraded (a node on other versions,
    or an operation that failed and is idle, or the last one closed as failed), stopped
    (the application was stopped) — with the reasons. Then the version (and the one an
    upgrade moves to), the nodes with their roles, profiles and package versions, the
    operation and its progress, and the cluster lock. `-o json` carries the same, with
    each node's runtime configuration; never the application's values.

    \b
    Example:
      gravity status
      gravity status history
    """
    if ctx.invoked_subcommand is not None:
        return
    import json

    from engine.presentation import operation_dict, progress_line, when
    from engine.views import plan_view, resolve_operation

    obj: CliContext = ctx.obj
    store = obj.store()
    lock = lock_status(obj)
    cluster = cluster_status(obj, lock)
    try:
        op = resolve_operation(store, operation_id)
    except NotFound:
        if operation_id:
            raise
        if output == "json":
            click.echo(json.dumps({"cluster": cluster, "operation": None, "lock": lock},
                                  indent=2))
        else:
            click.echo("no operations yet")
        return
    view = plan_view(store, op)
    updated = max([op.updated, *[s.updated for s in view.states.values()]])
    if output == "json":
        leaves = view.graph.leaves
        click.echo(json.dumps({
            "cluster": cluster,
            "operation": {**operation_dict(op), "last_change": updated},
            "active": lock["operation"] == op.id,
            "progress": progress_line(view),
            "leaves": len(leaves),
            "states": {p: view.derived[p].value for p in leaves},
            "lock": lock,
        }, indent=2))
        return
    for line in cluster_status_lines(obj, cluster):
        click.echo(line)
    click.echo(f"Operation:  {op.id} ({op.type}: {op.plan_name})")
    state = op.state.value + (f" ({op.note})" if op.note else "")
    if lock["operation"] == op.id and lock["idle"] and lock["failed"]:
        state += f"; {lock['idle']}"
    click.echo(f"State:      {state}")
    click.echo(f"Progress:   {progress_line(view)}")
    click.echo(f"Created:    {when(op.created)}")
    click.echo(f"Updated:    {when(updated)}")
    click.echo(f"Store:      {store.url}")
    click.echo(lock_line(lock))


@status.command()
@OUTPUT
@click.pass_obj
def history(obj: CliContext, output: str) -> None:
    """List every operation, oldest first: its type, state, when it started and finished,
    and who started it (user@host).

    \b
    Example:
      gravity status history
    """
    import json

    from engine.presentation import table, when

    rows = []
    for op in obj.store().list_operations():
        rows.append({"id": op.id, "type": op.type, "state": op.state.value, "note": op.note,
                     "started": op.created, "finished": op.updated if op.state.finished
                     else None, "by": op.data.get("created_by")})
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no operations yet")
        return
    click.echo(table([[r["id"], r["type"], r["state"] + (f" ({r['note']})" if r["note"]
                                                          else ""),
                       when(r["started"]), when(r["finished"]) if r["finished"] else "-",
                       r["by"] or "-"] for r in rows],
                     ["Operation", "Type", "State", "Started", "Finished", "By"]))
