"""What the commands that drive an operation share: their options, the Engine built from the
global options, the run to the end (here or in the background) and what they print after it.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import TYPE_CHECKING

import click

from engine.cli import background
from engine.cli.background import DriveSpec
from engine.cli.context import CliContext
from engine.cli.params import Duration
from engine.cli.progress import TtyProgress

if TYPE_CHECKING:  # typing only: the service is imported when a command runs
    from engine.scheduler import RunResult
    from engine.service import Engine
    from engine.views import PlanView

OP_OPTION = click.option(
    "--operation-id", default=None,
    help="Operation to act on (default: the active operation, else the most recent).")
MAX_PARALLEL = click.option(
    "--max-parallel", type=click.IntRange(min=1), default=8, show_default=True,
    help="Most phases running at once, over the whole plan.")
LOCAL = click.option(
    "--local", is_flag=True,
    help="Run phases in this process instead of dispatching them to node agents "
    "(the default with the embedded store).")
AGENT_TIMEOUT = click.option(
    "--agent-timeout", type=Duration(), default="60s", show_default=True,
    envvar="GRAVITY_AGENT_TIMEOUT",
    help="How long a phase waits for its node's agent before it fails (30s, 2m, 1h30m or "
    "seconds) [env GRAVITY_AGENT_TIMEOUT].")


def engine_for(obj: CliContext, max_parallel: int = 8, local: bool = False,
               agent_timeout: float = 60.0) -> Engine:
    """The service's Engine for this invocation: its store, state dir, event log format,
    dispatch mode (agents with a shared store unless --local) and, on a terminal, live
    progress."""
    from engine.dispatch import dispatch_mode
    from engine.service import Engine

    progress = None
    if obj.log_format == "console" and sys.stderr.isatty():
        progress = partial(TtyProgress, sys.stderr)
    return Engine(store=obj.store(), state_dir=obj.state_dir, log_format=obj.log_format,
                  progress=progress,
                  quiet=obj.quiet, max_parallel=max_parallel, agent_timeout=agent_timeout,
                  dispatch="local" if local else dispatch_mode(obj.store()), serve=obj.serve)


def summary(obj: CliContext, operation_id: str | None, verb: str, view: PlanView | None = None
            ) -> None:
    """The line a finished run ends with: the operation's state and its progress (from
    `view`, the operation as the run left it, when the run handed one back)."""
    from engine.presentation import progress_line
    from engine.views import plan_view, resolve_operation

    if view is None:
        store = obj.store()
        view = plan_view(store, resolve_operation(store, operation_id))
    op = view.operation
    click.echo(f"{verb}: operation {op.id} is {op.state.value}; {progress_line(view)}")


def show_order(order: list[str], verb: str) -> None:
    """What --dry-run prints: the phases a run would `verb`, in the order it would."""
    if not order:
        click.echo(f"dry run: nothing to {verb}")
        return
    click.echo(f"dry run: would {verb} {len(order)} phase(s) in this order:")
    for phase_id in order:
        click.echo(f"  {phase_id}")


def report(obj: CliContext, operation_id: str | None, result: RunResult | list[str], *,
           dry: str, done: str, nothing: str | None = None) -> None:
    """What a driving command prints at the end: with --dry-run the phases it would `dry` (in
    order); `nothing` when there was nothing to do; else the summary line headed `done`."""
    if isinstance(result, list):
        show_order(result, dry)
        return
    if nothing is not None and not result.completed and result.skipped:
        click.echo(nothing)
        return
    summary(obj, operation_id, done, result.view)


def drive_to_end(obj: CliContext, spec: DriveSpec) -> None:
    """Run (or roll back) the operation in this process until the run ends; a failed preflight
    or a failed probe closes the operation when `spec` says so. What `gravity plan drive` (the
    background driver) and every `--block` run do."""
    from engine.errors import OperationFailed
    from engine.service import resume, rollback_phase

    engine = engine_for(obj, spec.max_parallel, spec.local, spec.agent_timeout)
    op_id = spec.operation_id
    if spec.action == "rollback":
        rollback_phase(engine, op_id, None)
        return
    try:
        resume(engine, op_id, keep_going=spec.keep_going)
    except OperationFailed as exc:
        if spec.close_preflight:
            from engine.operations.ops import close_if_preflight_failed

            if close_if_preflight_failed(engine, op_id):
                raise OperationFailed(
                    f"preflight failed, nothing was changed: {exc.message}",
                    operation_id=op_id, phase_id=exc.phase_id,
                    hint=f"operation {op_id} is closed (failed) and the cluster lock "
                    "released; fix the nodes (see `gravity plan --operation-id "
                    f"{op_id}`) and run the command again") from None
        if spec.close_on_failure:  # a probe of the application changes nothing: do not
            from engine.model import OpState  # hold the cluster lock for it
            from engine.service import finish

            store = obj.store()
            finish(store, store.get_operation(op_id), OpState.FAILED, f"{spec.verb} hook failed")
        raise


def run(obj: CliContext, spec: DriveSpec, *, block: bool) -> bool:
    """Drive the operation to its end: in the background, followed here, when started from a
    terminal without --block; else in this process. True when the run ended with this
    command (so it may print its summary), False when the operator stopped following."""
    if background.wanted(block):
        return background.follow(obj, spec)
    drive_to_end(obj, spec)
    return True
