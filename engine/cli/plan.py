"""`gravity plan` and its sub-commands (execute, rollback, resume, complete, graph); `rollback`.
Each command resolves the operation, calls one service verb and renders its outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from engine import fsm
from engine.cli import background
from engine.cli.ask import CONFIRM, confirmed
from engine.cli.background import BLOCK, DriveSpec
from engine.cli.completion import complete_phase_ids
from engine.cli.context import CliContext
from engine.cli.drive import (
    AGENT_TIMEOUT,
    LOCAL,
    MAX_PARALLEL,
    OP_OPTION,
    drive_to_end,
    engine_for,
    report,
    run,
    show_order,
    summary,
)
from engine.cli.graph import graph as graph_command
from engine.cli.params import Duration
from engine.errors import Refused
from engine.model import Action, OpState, State

if TYPE_CHECKING:
    from engine.service import Engine


@click.group(invoke_without_command=True)
@OP_OPTION
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text",
              show_default=True, help="Output format of the plan.")
@click.option("--short", is_flag=True, help="Show only the top-level phases.")
@click.option("--follow", "--tail", "follow", is_flag=True,
              help="After the plan, print transitions as they happen until the operation ends "
              "or nobody drives it (--tail is the same).")
@click.pass_context
def plan(ctx: click.Context, operation_id: str | None, output: str, short: bool,
         follow: bool) -> None:
    """Show the operation's plan: every phase with its state, node, requirements and errors.

    \b
    Markers: ✓ completed, × failed, → in progress, ⤺ rolled back, * unstarted.
    Sub-commands drive the plan phase by phase; see `gravity plan COMMAND --help`.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(display, operation_id=operation_id, output=output, short=short, follow=follow)


@plan.command()
@OP_OPTION
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text",
              show_default=True, help="Output format of the plan.")
@click.option("--short", is_flag=True, help="Show only the top-level phases.")
@click.option("--follow", "--tail", "follow", is_flag=True,
              help="Then print transitions until the operation ends or nobody drives it "
              "(--tail is the same).")
@click.pass_obj
def display(obj: CliContext, operation_id: str | None, output: str, short: bool,
            follow: bool) -> None:
    """Show the plan (the default of `gravity plan`)."""
    from engine.presentation import dump, outline_text, plan_document, plan_text
    from engine.views import outline_view, plan_view, resolve_operation

    store = obj.store()
    op = resolve_operation(store, operation_id)
    after = 0
    if follow:  # where the table stands, so nothing written after it is missed
        after = store.last_seq(op.id)
    if short and output == "text":  # the top-level phases alone, not the whole plan
        shown = outline_view(store, op)
        failed = [st.phase_id for st in shown.outline.failed]
        click.echo(outline_text(shown, logs=failure_logs(obj, op.id, failed)))
    elif output == "text":
        view = plan_view(store, op, with_driver=True)
        failed = [p for p, st in view.states.items() if st.state is State.FAILED and st.error]
        click.echo(plan_text(view, logs=failure_logs(obj, op.id, failed)))
    else:
        click.echo(dump(plan_document(plan_view(store, op, with_driver=True)), output))
    if follow:
        follow_changes(obj, op.id, output, after)


def failure_logs(obj: CliContext, operation_id: str, failed: list[str]) -> dict[str, str]:
    """Where each failed phase's whole output is, for the lines under the plan table."""
    from engine.views import log_location

    store = obj.store()
    return {p: log_location(store, obj.state_dir, operation_id, p) for p in failed}


def follow_changes(obj: CliContext, operation_id: str, output: str, after: int) -> None:
    """Print changelog records after `after` as they are written, until the operation ends
    or goes idle (see engine.views.follow_changes)."""
    import json

    from engine.presentation import record_line
    from engine.views import follow_changes as follow_records

    why = follow_records(obj.store(), operation_id, after, lambda rec: click.echo(
        json.dumps(rec.to_dict()) if output == "json" else record_line(rec)))
    if why == "finished":
        op = obj.store().get_operation(operation_id)
        click.echo(f"operation {operation_id} {op.state.value}", err=True)
    else:
        click.echo(f"operation {operation_id} is idle (nobody is driving it); continue it "
                   "with `gravity plan resume`", err=True)


@plan.command()
@OP_OPTION
@click.option("--phase", "phase_id", required=True,
              help="Phase ID, e.g. /masters/node-1/drain; / for the whole plan.",
              shell_complete=complete_phase_ids)
@click.option("--force", is_flag=True,
              help="Run even if required phases are not completed, or re-run a completed "
              "phase. Never overrides a phase another live process is running.")
@click.option("--dry-run", is_flag=True, help="Print what would run; change nothing.")
@MAX_PARALLEL
@LOCAL
@AGENT_TIMEOUT
@click.pass_obj
def execute(obj: CliContext, operation_id: str | None, phase_id: str, force: bool,
            dry_run: bool, max_parallel: int, local: bool, agent_timeout: float) -> None:
    """Execute one phase; for a composite, its unfinished phases in order.

    `--phase /` executes the whole plan (every unfinished phase; with --force every phase).
    Exits 3 when a required phase is not completed (naming it) or the phase is
    running elsewhere; 1 when the phase fails (the operation stays resumable).

    \b
    Example:
      gravity plan execute --phase /masters/node-1/drain
      gravity plan execute --phase /masters --dry-run
      gravity plan execute --phase /
    """
    from engine.service import execute_phase

    result = execute_phase(engine_for(obj, max_parallel, local, agent_timeout), operation_id,
                           phase_id, force=force, dry_run=dry_run)
    report(obj, operation_id, result, dry="execute", done=f"executed {phase_id}",
           nothing=f"phase {phase_id} is already completed; nothing to do (use --force to "
           "run it again)")


@plan.command("rollback")
@OP_OPTION
@click.option("--phase", "phase_id", required=True, help="Phase ID to roll back.",
              shell_complete=complete_phase_ids)
@click.option("--force", is_flag=True,
              help="Roll back even though phases that depend on it are completed, failed or "
              "running.")
@click.option("--dry-run", is_flag=True, help="Print what would roll back; change nothing.")
@MAX_PARALLEL
@LOCAL
@AGENT_TIMEOUT
@click.pass_obj
def rollback_cmd(obj: CliContext, operation_id: str | None, phase_id: str, force: bool,
                 dry_run: bool, max_parallel: int, local: bool, agent_timeout: float) -> None:
    """Roll back one phase (or a composite's attempted phases, in reverse order).

    Refused (exit 3, naming them) while phases that depend on it are completed,
    failed or running, unless --force. `--phase /` (the whole operation) is
    `gravity rollback`'s, which asks first.
    """
    from engine.errors import InputError
    from engine.names import names_whole_plan
    from engine.service import rollback_phase

    if names_whole_plan(phase_id):
        raise InputError("--phase / names the whole operation; `gravity plan rollback` undoes "
                         "one phase (or one composite)", operation_id=operation_id,
                         hint="roll back the whole operation with `gravity rollback` (it says "
                         "how many phases and hooks it undoes and asks first; --confirm skips "
                         "the question)")
    result = rollback_phase(engine_for(obj, max_parallel, local, agent_timeout), operation_id,
                            phase_id, force=force, dry_run=dry_run)
    report(obj, operation_id, result, dry="roll back", done=f"rolled back {phase_id}",
           nothing=f"phase {phase_id} has nothing to roll back")


@plan.command()
@OP_OPTION
@click.option("--force", is_flag=True,
              help="Keep going after a phase fails: run every phase whose requirements are "
              "met instead of stopping at the first failure.")
@click.option("--dry-run", is_flag=True, help="Print what would run; change nothing.")
@MAX_PARALLEL
@LOCAL
@AGENT_TIMEOUT
@BLOCK
@click.pass_obj
def resume(obj: CliContext, operation_id: str | None, force: bool, dry_run: bool,
           max_parallel: int, local: bool, agent_timeout: float, block: bool) -> None:
    """Run every phase that is not completed, in dependency order.

    Failed and interrupted phases run again; completed ones never do. On
    success the operation is marked completed and the cluster lock released.
    From a terminal the run goes on in the background (see --block). A
    finished operation (completed, failed or rolled back) is refused with
    exit 3.

    \b
    Example:
      gravity plan resume
      gravity plan resume --force --agent-timeout 2m
    """
    from engine.service import resume as resume_op
    from engine.views import resolve_operation

    op = resolve_operation(obj.store(), operation_id)
    if dry_run or op.state.finished or not background.wanted(block):
        result = resume_op(engine_for(obj, max_parallel, local, agent_timeout), operation_id,
                           keep_going=force, dry_run=dry_run)
        report(obj, operation_id, result, dry="execute", done="resumed")
        return
    spec = DriveSpec(op.id, "resume", max_parallel=max_parallel, local=local,
                     agent_timeout=agent_timeout, keep_going=force)
    if run(obj, spec, block=block):
        summary(obj, op.id, "resumed")


@plan.command("drive", hidden=True)
@click.option("--operation-id", required=True)
@click.option("--verb", default="resume")
@click.option("--action", type=click.Choice(["execute", "rollback"]), default="execute")
@click.option("--keep-going", is_flag=True)
@click.option("--close-preflight", is_flag=True)
@click.option("--close-on-failure", is_flag=True)
@MAX_PARALLEL
@LOCAL
@AGENT_TIMEOUT
@click.pass_obj
def drive_cmd(obj: CliContext, operation_id: str, verb: str, action: str, keep_going: bool,
              close_preflight: bool, close_on_failure: bool, max_parallel: int, local: bool,
              agent_timeout: float) -> None:
    """The background driver a terminal command starts (engine.cli.background): runs the
    operation to its end and leaves how it ended for the command that follows it."""
    from engine.errors import EngineError, interruption

    spec = DriveSpec(operation_id, verb, action, max_parallel, local, agent_timeout,
                     keep_going, close_preflight, close_on_failure)
    try:
        drive_to_end(obj, spec)
    except EngineError as exc:
        background.write_result(obj.state_dir, operation_id, exc.exit_code, exc.message,
                                exc.hint)
        raise
    except KeyboardInterrupt as exc:
        stop = interruption(exc)
        by = "" if stop.name == "SIGINT" else f" by {stop.name}"
        background.write_result(
            obj.state_dir, operation_id, stop.exit_code,
            f"the background run of operation {operation_id} was stopped{by}; running "
            "phases were stopped and recorded interrupted",
            "continue with `gravity plan resume`, or see where it stopped with `gravity plan`")
        raise
    background.write_result(obj.state_dir, operation_id, 0)


@plan.command()
@OP_OPTION
@click.option("--timeout", type=Duration(), default="60s", show_default=True,
              help="How long to wait for the driver to stop (30s, 2m or seconds).")
@click.pass_obj
def stop(obj: CliContext, operation_id: str | None, timeout: float) -> None:
    """Stop the process that drives the operation (a background run, or one in another
    terminal) as Ctrl-C would: its running phases are stopped and recorded interrupted, and
    the operation stays resumable with `gravity plan resume`.

    Only a driver on this host can be stopped from here; for one on another host the
    message names the host to run this on. Nothing to stop is not an error.

    \b
    Example:
      gravity plan stop
    """
    import os
    import signal
    import time

    from engine.store.base import this_host
    from engine.views import operation_driver, resolve_operation

    store = obj.store()
    op = resolve_operation(store, operation_id)
    driver = operation_driver(store, op.id)
    if driver is None:
        click.echo(f"operation {op.id} is {op.state.value}; nothing is driving it "
                   "(nothing to stop)")
        return
    if driver.host != this_host():
        raise Refused(f"operation {op.id} is driven by {driver.describe()}, on another host",
                      operation_id=op.id,
                      hint=f"run `gravity plan stop` on {driver.host}, or stop pid "
                      f"{driver.pid} there")
    os.kill(driver.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while operation_driver(store, op.id) is not None:
        if time.monotonic() > deadline:
            raise Refused(f"the driver of operation {op.id} ({driver.describe()}) did not "
                          f"stop within {timeout:g}s", operation_id=op.id,
                          hint=f"see `gravity plan`; if it is stuck, `kill -9 {driver.pid}` "
                          "(its phases are then recovered by the next `gravity plan resume`)")
        time.sleep(0.2)
    click.echo(f"stopped the driver of operation {op.id} (pid {driver.pid}); it is left "
               "resumable: `gravity plan resume` continues it")


@plan.command()
@OP_OPTION
@click.pass_obj
def complete(obj: CliContext, operation_id: str | None) -> None:
    """Close the operation: completed if every phase is, otherwise failed ("completed manually").

    Releases the cluster lock so a new operation can start. Nothing is undone.
    An operation that is already finished is refused with exit 3.
    """
    from engine.service import Engine
    from engine.service import complete as complete_op

    op = complete_op(Engine(obj.store(), obj.state_dir), operation_id)
    click.echo(f"operation {op.id} marked {op.state.value}" + (f" ({op.note})" if op.note
                                                               else ""))


@click.command()
@click.option("--operation-id", default=None,
              help="Operation to roll back (default: the active one). A closed operation is "
              "reopened only when named here.")
@click.option("--dry-run", is_flag=True, help="Print the rollback order; change nothing.")
@CONFIRM
@MAX_PARALLEL
@LOCAL
@AGENT_TIMEOUT
@BLOCK
@click.pass_obj
def rollback(obj: CliContext, operation_id: str | None, dry_run: bool, confirm: bool,
             max_parallel: int, local: bool, agent_timeout: float, block: bool) -> None:
    """Roll back the whole operation: every attempted phase, in reverse dependency order.

    On a terminal it asks first (y/N), saying how many phases and hooks will be undone;
    without one, pass --confirm (else exit 2). Without --operation-id only the active
    operation is rolled back. When every phase is rolled back the operation is closed as
    rolled_back and the cluster lock released.

    \b
    Example:
      gravity rollback --dry-run
      gravity rollback --confirm
      gravity rollback --operation-id upgrade-2 --confirm
    """
    from engine.service import rollback_phase
    from engine.views import resolve_operation

    engine = engine_for(obj, max_parallel, local, agent_timeout)
    if operation_id is None:
        operation_id = engine.store.active_operation_id()
        if operation_id is None:
            last = resolve_operation(engine.store, None)  # NotFound when there is none
            if last.state is OpState.FAILED:
                raise Refused(
                    f"there is no active operation; the last one, {last.id}, was closed as "
                    f"failed ({last.note or 'completed manually'})", operation_id=last.id,
                    hint=f"to reopen and roll it back, name it: `gravity rollback "
                    f"--operation-id {last.id}`")
            fsm.check_operation_move(last.state, OpState.ACTIVE, operation_id=last.id,
                                     note=last.note, action=Action.ROLLBACK)
    order = rollback_phase(engine, operation_id, None, dry_run=True)
    if dry_run:
        show_order(order, "roll back")  # type: ignore[arg-type]
        return
    hooks = _hooks_among(engine, operation_id, order)  # type: ignore[arg-type]
    confirmed(confirm, f"Roll back operation {operation_id}: undo {len(order)} phase(s), "
              f"running {hooks} hook(s)?")
    op_id = resolve_operation(engine.store, operation_id).id
    spec = DriveSpec(op_id, "rollback", "rollback", max_parallel, local, agent_timeout)
    if run(obj, spec, block=block):
        summary(obj, op_id, "rolled back")


def _hooks_among(engine: Engine, operation_id: str, phases: list[str]) -> int:
    """How many of these phases run a manifest hook when undone."""
    from engine.views import load_graph, resolve_operation

    graph = load_graph(engine.store, resolve_operation(engine.store, operation_id))
    return sum(1 for p in phases if graph.specs[p].executor == "hook"
               or graph.specs[p].data.get("rollback_hook"))


plan.add_command(graph_command)
