"""`gravity status`: the installed cluster (from the completed operations and the facts nodes
published) and the active, named or most recent operation's progress.
"""

from __future__ import annotations

from typing import Any

import click

from engine.cli.context import CliContext
from engine.cli.drive import OP_OPTION
from engine.errors import NotFound


def cluster_status(obj: CliContext) -> dict[str, Any] | None:
    """The installed cluster as data (None before an install): application, version, service
    user, endpoints and each node with what it published — its package versions and runtime
    configuration. Never the application's values (`gravity values show` has them)."""
    from engine.executors.content import Facts
    from engine.operations.cluster import cluster_state

    store = obj.store()
    cluster = cluster_state(store)
    if cluster is None:
        return None
    packages = Facts.all_of(store, "packages")  # what each node reported, from any host
    runtime = Facts.all_of(store, "runtime_config")
    status = cluster.status
    return {
        "app": cluster.app, "version": cluster.version, "flavor": cluster.flavor,
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
                   "runtime_config": runtime.get(n.name)} for n in cluster.nodes],
    }


def cluster_status_lines(obj: CliContext) -> list[str]:
    """The cluster part of `gravity status`: application, version, nodes and packages."""
    from engine.presentation import endpoint_lines, when

    cluster = cluster_status(obj)
    if cluster is None:
        return ["Cluster:    none installed"]
    user = cluster["service_user"]
    lines = [f"Cluster:    {cluster['app']} {cluster['version']}"
             + (f" (flavor {cluster['flavor']})" if cluster["flavor"] else ""),
             f"Image:      {cluster['image_dir']}",
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
        lines.append(f"  {node['name']:<12} {node['address']:<15} {node['role']:<7} "
                     f"{node['profile']:<10} {listing}")
    return lines


@click.command()
@OP_OPTION
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Readable text, or JSON for scripts.")
@click.pass_obj
def status(obj: CliContext, operation_id: str | None, output: str) -> None:
    """Show the cluster and the active (or named, or most recent) operation's progress.

    The cluster part (application, version, nodes with their roles, profiles and package
    versions) is derived from the completed operations; then the operation, its progress
    and the store in use. `-o json` adds each node's runtime configuration (the manifest's
    systemOptions as the node has them).
    """
    import json

    from engine.presentation import progress_line, when
    from engine.views import plan_view, resolve_operation

    store = obj.store()
    try:
        op = resolve_operation(store, operation_id)
    except NotFound:
        if operation_id:
            raise
        click.echo("no operations yet" if output == "text" else json.dumps(
            {"cluster": cluster_status(obj), "operation": None}))
        return
    view = plan_view(store, op)
    active = store.active_operation_id()
    if output == "json":
        leaves = view.graph.leaves
        click.echo(json.dumps({
            "cluster": cluster_status(obj),
            "operation": op.to_dict(), "active": active == op.id,
            "leaves": len(leaves),
            "states": {p: view.derived[p].value for p in leaves},
        }, indent=2))
        return
    for line in cluster_status_lines(obj):
        click.echo(line)
    click.echo(f"Operation:  {op.id} ({op.type}: {op.plan_name})")
    click.echo(f"State:      {op.state.value}" + (f" ({op.note})" if op.note else ""))
    click.echo(f"Progress:   {progress_line(view)}")
    click.echo(f"Created:    {when(op.created)}")
    click.echo(f"Updated:    {when(max([op.updated, *[s.updated for s in view.states.values()]]))}")
    click.echo(f"Store:      {store.url}")
    if active is None:
        click.echo("Cluster lock: free (no active operation)")
