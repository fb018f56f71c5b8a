"""`gravity operation create|list`: turn a plan file into an operation, list operations.
Validation happens before anything is written; a held cluster lock refuses with exit 3.
"""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.context import CliContext


@click.group()
def operation() -> None:
    """Create and list operations."""


@operation.command("create")
@click.option("--plan", "plan_path", required=True, type=click.Path(path_type=Path),
              help="Plan file (YAML, kind: Plan). See docs/plan-format.md.")
@click.option("--id", "operation_id", default=None,
              help="Operation ID to use (default: op-<date>-<time>-<random>).")
@click.pass_obj
def create(obj: CliContext, plan_path: Path, operation_id: str | None) -> None:
    """Validate PLAN and create an operation from it; prints the new operation's ID.

    Refused (exit 3) while another operation is active; invalid plans exit 2
    and write nothing.
    """
    from engine.planfile import load_plan
    from engine.service import create_operation

    plan = load_plan(plan_path)
    if operation_id is not None and not operation_id.replace("-", "").replace("_", "").isalnum():
        from engine.errors import InputError, Problem

        raise InputError("invalid --id", [Problem("expected letters, digits, '-' or '_'",
                                                   field="--id")])
    op = create_operation(obj.store(), plan, operation_id=operation_id)
    click.echo(op.id)


@operation.command("list")
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text",
              show_default=True, help="A table, or JSON/YAML records for scripts.")
@click.pass_obj
def list_(obj: CliContext, output: str) -> None:
    """List operations, oldest first; the active one is marked with *."""
    from engine.cli.render import dump, operations_text

    store = obj.store()
    ops = store.list_operations()
    active = store.active_operation_id()
    if output == "text":
        click.echo(operations_text(ops, active) if ops else "no operations")
    else:
        click.echo(dump([o.to_dict() for o in ops], output))
