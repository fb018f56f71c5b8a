"""`gravity install`, `gravity expand` (alias `join`) and `gravity upgrade`: build the operation's
plan from plans/*.yaml, then run it to the end (or stop after creating it with --manual).
"""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.context import CliContext
from engine.cli.operation import operation_id_option
from engine.cli.values import values_from_params, values_options

MANUAL = click.option("--manual", is_flag=True,
                      help="Create the plan and stop; print the commands to drive it.")
KUBECONFIG = click.option(
    "--kubeconfig", envvar="GRAVITY_KUBECONFIG", default=None,
    help="kubeconfig for kubectl phases and hook Jobs [env GRAVITY_KUBECONFIG]. Without it, "
    "hooks run as local processes and kubectl phases complete as 'skipped: Kubernetes API "
    "not configured'.")
OP_ID = operation_id_option("Operation ID to use (default: generated): 1 to 128 ASCII "
                            "letters, digits, '-' or '_'.")


def _drive(obj: CliContext, op_id: str, manual: bool, verb: str, max_parallel: int = 8) -> None:
    """Run the new operation to the end, or print how to drive it by hand."""
    from engine.errors import OperationFailed
    from engine.operations.ops import close_if_preflight_failed
    from engine.service import resume

    click.echo(f"{verb}: created operation {op_id}")
    if manual:
        click.echo("the plan is ready; nothing has run. Drive it with:\n"
                   "  gravity plan                          # see the phases\n"
                   "  gravity plan execute --phase /init    # run phases one by one\n"
                   "  gravity plan resume                   # or run everything left")
        return
    from engine.cli.plan import _engine

    engine = _engine(obj, max_parallel)
    try:
        resume(engine, op_id)
    except OperationFailed as exc:
        if close_if_preflight_failed(engine, op_id):
            raise OperationFailed(
                f"preflight failed, nothing was changed: {exc.message}",
                operation_id=op_id, phase_id=exc.phase_id,
                hint=f"operation {op_id} is closed (failed) and the cluster lock released; "
                "fix the nodes (see `gravity plan --operation-id "
                f"{op_id}`) and run the command again") from None
        raise
    from engine.cli.plan import _summary

    _summary(obj, op_id, verb)


@click.command()
@click.argument("image_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--nodes", "nodes_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Inventory YAML: a list of {name, address, profile, role: master|node}.")
@click.option("--flavor", default=None,
              help="Installation flavor (default: the manifest's default flavor).")
@click.option("--service-uid", type=click.IntRange(min=0), default=1000, show_default=True,
              help="User ID of the service user on every node.")
@click.option("--parallel-workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Non-master nodes set up at once.")
@values_options
@MANUAL
@KUBECONFIG
@OP_ID
@click.pass_context
def install(ctx: click.Context, image_dir: Path, nodes_file: Path, flavor: str | None,
            service_uid: int, parallel_workers: int, manual: bool, kubeconfig: str | None,
            operation_id: str | None, **_: object) -> None:
    """Install the cluster image in IMAGE_DIR on the nodes of the inventory.

    Validates the manifest, the inventory against the chosen flavor and the
    values before anything is written (exit 2 on bad input). A failed
    preflight closes the operation (exit 1); a later failure leaves it
    resumable with `gravity plan resume`.
    """
    from engine.operations.ops import start_install

    obj: CliContext = ctx.obj
    values = values_from_params(ctx)
    op = start_install(obj.store(), obj.blobs(), image_dir, nodes_file, flavor=flavor,
                       values=values, service_uid=service_uid, kubeconfig=kubeconfig,
                       parallel_workers=parallel_workers, operation_id=operation_id)
    _drive(obj, op.id, manual, "install")


@click.command()
@click.option("--node", "name", required=True, help="Name of the new node.")
@click.option("--address", required=True, help="Its address.")
@click.option("--profile", required=True, help="Its node profile from the manifest.")
@click.option("--role", type=click.Choice(["node", "master"]), default="node",
              show_default=True, help="Role of the new node in the cluster.")
@values_options
@MANUAL
@KUBECONFIG
@OP_ID
@click.pass_context
def expand(ctx: click.Context, name: str, address: str, profile: str, role: str, manual: bool,
           kubeconfig: str | None, operation_id: str | None, **_: object) -> None:
    """Add a node to the installed cluster (alias: `gravity join`).

    Refused (exit 3) when the profile's expandPolicy is `fixed`.
    """
    from engine.operations.ops import new_node, start_expand

    obj: CliContext = ctx.obj
    node = new_node(name, address, profile, role)
    op = start_expand(obj.store(), obj.blobs(), node, values=values_from_params(ctx),
                      kubeconfig=kubeconfig, operation_id=operation_id)
    _drive(obj, op.id, manual, "expand")


@click.command()
@click.argument("image_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--parallel-workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Non-master nodes upgraded at once (masters always one at a time).")
@click.option("--force", is_flag=True,
              help="Upgrade even though the last upgrade was neither completed nor rolled "
              "back.")
@values_options
@MANUAL
@KUBECONFIG
@OP_ID
@click.pass_context
def upgrade(ctx: click.Context, image_dir: Path, parallel_workers: int, force: bool,
            manual: bool, kubeconfig: str | None, operation_id: str | None,
            **_: object) -> None:
    """Upgrade the installed cluster to the image in IMAGE_DIR.

    Masters are upgraded one at a time, other nodes up to --parallel-workers
    at once; then the `update` and `postUpdate` hooks run. If a phase fails:
    fix it and `gravity plan resume`, or undo everything with `gravity rollback`.
    """
    from engine.operations.ops import start_upgrade

    obj: CliContext = ctx.obj
    op = start_upgrade(obj.store(), obj.blobs(), image_dir, values=values_from_params(ctx),
                       parallel_workers=parallel_workers, force=force, kubeconfig=kubeconfig,
                       operation_id=operation_id)
    _drive(obj, op.id, manual, "upgrade")


def cluster_status_lines(obj: CliContext) -> list[str]:
    """The cluster part of `gravity status`: application, version, nodes and packages."""
    from engine.executors.content import Facts
    from engine.operations.cluster import cluster_state

    store = obj.store()
    cluster = cluster_state(store)
    if cluster is None:
        return ["Cluster:    none installed"]
    lines = [f"Cluster:    {cluster.app} {cluster.version}"
             + (f" (flavor {cluster.flavor})" if cluster.flavor else ""),
             f"Image:      {cluster.image_dir}",
             f"Application:  {'stopped' if cluster.stopped else 'running'}"]
    if cluster.status is not None:
        from engine.cli.render import when

        verdict = "ok" if cluster.status.ok else "failed"
        lines.append(f"App status:   {verdict} at {when(cluster.status.at)} "
                     f"(`gravity app status`, operation {cluster.status.operation})")
    lines.append("Nodes:")
    published = Facts.all_of(store, "packages")  # what each node reported, from any host
    for node in cluster.nodes:
        pkgs = published.get(node.name) or {}
        listing = ", ".join(f"{k} {v}" for k, v in pkgs.items()) or "no packages"
        lines.append(f"  {node.name:<12} {node.address:<15} {node.role.value:<7} "
                     f"{node.profile:<10} {listing}")
    return lines
