"""`gravity status`: the installed cluster (from the completed operations and the facts nodes
published) and the active, named or most recent operation's progress.
"""

from __future__ import annotations

import click

from engine.cli.context import CliContext
from engine.cli.drive import OP_OPTION
from engine.errors import NotFound


def cluster_status_lines(obj: CliContext) -> list[str]:
    """The cluster part of `gravity status`: application, version, nodes and packages."""
    from engine.executors.content import Facts
    from engine.operations.cluster import cluster_state
    from engine.presentation import endpoint_lines, when

    store = obj.store()
    cluster = cluster_state(store)
    if cluster is None:
        return ["Cluster:    none installed"]
    lines = [f"Cluster:    {cluster.app} {cluster.version}"
             + (f" (flavor {cluster.flavor})" if cluster.flavor else ""),
             f"Image:      {cluster.image_dir}",
             f"Application:  {'stopped' if cluster.stopped else 'running'}",
             "Service user: " + (f"planet (uid {cluster.service_uid}, gid "
                                 f"{cluster.service_gid})" if cluster.service_uid is not None
                                 else "not yet created")]
    if cluster.status is not None:
        verdict = "ok" if cluster.status.ok else "failed"
        lines.append(f"App status:   {verdict} at {when(cluster.status.at)} "
                     f"(`gravity app status`, operation {cluster.status.operation})")
    lines += endpoint_lines(cluster.image)
    lines.append("Nodes:")
    published = Facts.all_of(store, "packages")  # what each node reported, from any host
    for node in cluster.nodes:
        pkgs = published.get(node.name) or {}
        listing = ", ".join(f"{k} {v}" for k, v in pkgs.items()) or "no packages"
        lines.append(f"  {node.name:<12} {node.address:<15} {node.role.value:<7} "
                     f"{node.profile:<10} {listing}")
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
    and the store in use.
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
        click.echo("no operations yet" if output == "text" else json.dumps({"operation": None}))
        return
    view = plan_view(store, op)
    active = store.active_operation_id()
    if output == "json":
        leaves = view.graph.leaves
        click.echo(json.dumps({
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
