"""`gravity remove`, `gravity leave`, `gravity uninstall` and `gravity app status|start|stop`:
the operations of a cluster's later life, each a plan of phases run to the end like install's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from engine.cli.ask import CONFIRM, confirmed
from engine.cli.background import BLOCK, DriveSpec
from engine.cli.context import CliContext
from engine.cli.drive import run, summary
from engine.cli.operation import operation_id_option
from engine.errors import EngineError, InputError, Problem

OP_ID = operation_id_option("Operation ID to use (default: generated): 1 to 128 ASCII "
                            "letters, digits, '-' or '_'.")
FORCE = click.option("--force", is_flag=True,
                     help="Go on although a node is offline (its own clean-up is skipped and "
                     "shown as skipped) or the flavor's minimum would not be met.")
PURGE = click.option("--purge", is_flag=True,
                     help="Also delete the volumes the node profile created (createIfMissing); "
                     "without it they are left and the note says which paths.")
DRY_RUN = click.option("--dry-run", is_flag=True,
                       help="Show the phases that would run; create nothing.")


def drive(obj: CliContext, prepare: Callable[[Any], Any], *, verb: str, dry_run: bool,
          operation_id: str | None, close_on_failure: bool = False,
          block: bool = True) -> str | None:
    """Prepare (with a throw-away blob cache for --dry-run), create and run an operation (in
    the background, followed here, when started from a terminal without `block`); its ID
    (None for a dry run)."""
    from engine.blobs import BlobCache

    if dry_run:
        with tempfile.TemporaryDirectory(prefix="gravity-dry-run-") as scratch:
            prepared = prepare(BlobCache(Path(scratch)))
        click.echo(f"dry run: {verb} would create a plan of {len(prepared.plan.leaves)} "
                   f"phase(s); nothing was written:")
        for spec in prepared.plan.leaves:
            skip = spec.data.get("skip") if isinstance(spec.data, dict) else None
            click.echo(f"  {spec.id}" + (f"  (skipped: {skip})" if skip else ""))
        return None
    op = prepare(obj.blobs()).create(obj.store(), operation_id)
    click.echo(f"{verb}: created operation {op.id}")
    if run(obj, DriveSpec(op.id, verb, close_on_failure=close_on_failure), block=block):
        summary(obj, op.id, verb)
    return op.id


@click.command()
@click.argument("node")
@FORCE
@PURGE
@CONFIRM
@DRY_RUN
@BLOCK
@OP_ID
@click.pass_obj
def remove(obj: CliContext, node: str, force: bool, purge: bool, confirm: bool,
           dry_run: bool, block: bool, operation_id: str | None) -> None:
    """Remove NODE from the installed cluster (Gravity's shrink).

    Phases: the preNodeRemove hook, drain, the node's own clean-up (runtime, packages,
    node state; volumes only with --purge), its deletion from Kubernetes and from the
    cluster's records (its agent is asked to stop), the postNodeRemove hook. Refused:
    a node not in the cluster (exit 2); the last master, an offline node or too few
    nodes for the flavor without --force, another active operation (exit 3).

    \b
    Example:
      gravity remove node-3 --dry-run
      gravity remove node-3 --confirm
      gravity remove node-3 --force --purge --confirm    # node-3 is gone for good
    """
    _remove(obj, node, f"Remove node {node} from the cluster?", f"remove {node}",
            force=force, purge=purge, confirm=confirm, dry_run=dry_run, block=block,
            operation_id=operation_id)


@click.command()
@FORCE
@PURGE
@CONFIRM
@DRY_RUN
@BLOCK
@OP_ID
@click.pass_obj
def leave(obj: CliContext, force: bool, purge: bool, confirm: bool, dry_run: bool,
          block: bool, operation_id: str | None) -> None:
    """Remove this node from the cluster (run on the node itself).

    The node is the one whose identity its bootstrap phase wrote into this host's state
    dir (<state-dir>/nodes/NAME/node.json); otherwise like `gravity remove NAME`.

    \b
    Example:
      gravity leave --confirm
      gravity leave --state-dir /var/lib/gravity --purge --confirm
    """
    from engine.cli.agent import agent_state_dir

    state_dir = agent_state_dir(obj)
    found = sorted(p.parent.name for p in (state_dir / "nodes").glob("*/node.json"))
    if len(found) != 1:
        raise InputError(
            "cannot tell which node this host is", [Problem(
                f"expected one node identity under {state_dir / 'nodes'}, found "
                f"{', '.join(found) or 'none'}", field="--state-dir")],
            hint="on the node, pass its --state-dir; or run `gravity remove NODE` from any "
            "host with the store")
    node = found[0]
    _remove(obj, node, f"Remove this node ({node}) from the cluster?", f"leave ({node})",
            force=force, purge=purge, confirm=confirm, dry_run=dry_run, block=block,
            operation_id=operation_id)


def _remove(obj: CliContext, node: str, question: str, verb: str, *, force: bool,
            purge: bool, confirm: bool, dry_run: bool, block: bool,
            operation_id: str | None) -> None:
    """What remove and leave do once they know the node: ask, then create and run the plan."""
    from engine.operations.lifecycle import prepare_remove

    if not dry_run:
        confirmed(confirm, question)
    drive(obj, lambda cache: prepare_remove(obj.store(), cache, node, force=force,
                                            purge=purge),
          verb=verb, dry_run=dry_run, operation_id=operation_id, block=block)


@click.command()
@FORCE
@PURGE
@CONFIRM
@DRY_RUN
@BLOCK
@OP_ID
@click.pass_obj
def uninstall(obj: CliContext, force: bool, purge: bool, confirm: bool, dry_run: bool,
              block: bool, operation_id: str | None) -> None:
    """Uninstall the application and clean every node, so `gravity install` can run again.

    Phases: the preUninstall and uninstall hooks on a master, then every node's clean-up
    (runtime, packages, node state; volumes only with --purge), then the cluster's records.
    A failed uninstall is resumable with `gravity plan resume`. On a terminal it asks
    first (y/N); without one, pass --confirm (else exit 2).

    \b
    Example:
      gravity uninstall --dry-run
      gravity uninstall --confirm --purge
    """
    from engine.operations.lifecycle import prepare_uninstall

    if not dry_run:
        confirmed(confirm, "Uninstall the application and clean every node?")
    drive(obj, lambda cache: prepare_uninstall(obj.store(), cache, force=force, purge=purge),
          verb="uninstall", dry_run=dry_run, operation_id=operation_id, block=block)


@click.group()
def app() -> None:
    """The application's own hooks: status, start, stop."""


def _app_verb(verb: str, summary: str) -> click.Command:
    @app.command(verb, help=f"""{summary}

    Runs the manifest's `{verb}` hook as an operation of one phase on a master and prints
    its output. Exit 2 when the image defines no `{verb}` hook; exit 1 when the hook fails
    (the operation is closed as failed: run the command again).

    \b
    Example:
      gravity app {verb}
    """)
    @OP_ID
    @click.pass_obj
    def command(obj: CliContext, operation_id: str | None) -> None:
        from engine.operations.lifecycle import prepare_app_hook

        try:
            drive(obj, lambda cache: prepare_app_hook(obj.store(), cache, verb),
                  verb=f"app {verb}", dry_run=False, operation_id=operation_id,
                  close_on_failure=True)
        finally:
            _print_hook_output(obj, verb)

    return command


def _print_hook_output(obj: CliContext, verb: str) -> None:
    """The hook's output, from wherever its phase ran (this host or a node's shipped tail)."""
    from engine.views import phase_output, resolve_operation

    try:
        op = resolve_operation(obj.store(), None)
    except EngineError:
        return
    if op.type != f"app-{verb}":
        return
    text = phase_output(obj.store(), obj.state_dir, op.id, f"/{verb}") or ""
    lines = [line for line in text.splitlines() if not line.startswith("--- attempt")]
    if lines:
        click.echo("\n".join(lines))


_app_verb("status", "Run the application's status hook and print what it says.")
_app_verb("start", "Start the application (its start hook); `gravity status` shows it running.")
_app_verb("stop", "Stop the application (its stop hook); `gravity status` shows it stopped.")
