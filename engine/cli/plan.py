"""`gravity plan` and its sub-commands (execute, rollback, resume, complete, graph); `rollback`.
Each command resolves the operation, calls one service verb and renders its outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from engine.cli.ask import CONFIRM, confirmed
from engine.cli.completion import complete_phase_ids
from engine.cli.context import CliContext
from engine.cli.drive import (
    AGENT_TIMEOUT,
    LOCAL,
    MAX_PARALLEL,
    OP_OPTION,
    engine_for,
    report,
    show_order,
    summary,
)
from engine.cli.events import follow
from engine.cli.graph import graph as graph_command
from engine.errors import Refused
from engine.model import Action, OpState, State

if TYPE_CHECKING:
    from engine.service import Engine


@click.group(invoke_without_command=True)
@OP_OPTION
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text",
              show_default=True, help="Output format of the plan.")
@click.option("--short", is_flag=True, help="Show only the top-level phases.")
@click.option("--follow", is_flag=True,
              help="After the plan, print transitions as they happen until the operation ends "
              "or nobody drives it.")
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
@click.option("--follow", is_flag=True,
              help="Then print transitions until the operation ends or nobody drives it.")
@click.pass_obj
def display(obj: CliContext, operation_id: str | None, output: str, short: bool,
            follow: bool) -> None:
    """Show the plan (the default of `gravity plan`)."""
    from engine.presentation import dump, plan_document, plan_text
    from engine.views import log_location, plan_view, resolve_operation

    store = obj.store()
    op = resolve_operation(store, operation_id)
    after = 0
    if follow:  # where the table stands, so nothing written after it is missed
        after = store.last_seq(op.id)
    view = plan_view(store, op, with_driver=True)
    if output == "text":
        failed = [p for p, st in view.states.items() if st.state is State.FAILED and st.error]
        logs = {p: log_location(store, obj.state_dir, op.id, p) for p in failed}
        click.echo(plan_text(view, short=short, logs=logs))
    else:
        click.echo(dump(plan_document(view), output))
    if follow:
        follow_changes(obj, op.id, output, after)


def follow_changes(obj: CliContext, operation_id: str, output: str, after: int) -> None:
    """Print changelog records after `after` as they are written, until the operation ends
    or goes idle (see engine.cli.events.follow)."""
    import json

    from engine.presentation import record_line

    why = follow(obj.store(), operation_id, after, lambda rec: click.echo(
        json.dumps(rec.to_dict()) if output == "json" else record_line(rec)))
    if why == "finished":
        op = obj.store().get_operation(operation_id)
        click.echo(f"operation {operation_id} {op.state.value}", err=True)
    else:
        click.echo(f"operation {operation_id} is idle (nobody is driving it); continue it "
                   "with `gravity plan resume`", err=True)


@plan.command()
@OP_OPTION
@click.option("--phase", "phase_id", required=True, help="Phase ID, e.g. /masters/node-1/drain.",
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

    Exits 3 when a required phase is not completed (naming it) or the phase is
    running elsewhere; 1 when the phase fails (the operation stays resumable).
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
    failed or running, unless --force.
    """
    from engine.service import rollback_phase

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
@click.pass_obj
def resume(obj: CliContext, operation_id: str | None, force: bool, dry_run: bool,
           max_parallel: int, local: bool, agent_timeout: float) -> None:
    """Run every phase that is not completed, in dependency order.

    Failed and interrupted phases run again; completed ones never do. On
    success the operation is marked completed and the cluster lock released.
    A finished operation (completed, failed or rolled back) is refused with
    exit 3.
    """
    from engine.service import resume as resume_op

    result = resume_op(engine_for(obj, max_parallel, local, agent_timeout), operation_id,
                       keep_going=force, dry_run=dry_run)
    report(obj, operation_id, result, dry="execute", done="resumed")


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
@click.pass_obj
def rollback(obj: CliContext, operation_id: str | None, dry_run: bool, confirm: bool,
             max_parallel: int, local: bool, agent_timeout: float) -> None:
    """Roll back the whole operation: every attempted phase, in reverse dependency order.

    On a terminal it asks first (y/N), saying how many phases and hooks will be undone;
    without one, pass --confirm (else exit 2). Without --operation-id only the active
    operation is rolled back. When every phase is rolled back the operation is closed as
    rolled_back and the cluster lock released.

    Example: gravity rollback --confirm
    """
    from engine import fsm
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
    rollback_phase(engine, operation_id, None)
    summary(obj, operation_id, "rolled back")


def _hooks_among(engine: Engine, operation_id: str, phases: list[str]) -> int:
    """How many of these phases run a manifest hook when undone."""
    from engine.views import load_graph, resolve_operation

    graph = load_graph(engine.store, resolve_operation(engine.store, operation_id))
    return sum(1 for p in phases if graph.specs[p].executor == "hook"
               or graph.specs[p].data.get("rollback_hook"))


plan.add_command(graph_command)
