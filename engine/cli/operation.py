"""`gravity operation create|list`: turn a plan file into an operation, list operations.
Validation happens before anything is written; a held cluster lock refuses with exit 3.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from engine.cli.context import CliContext
from engine.names import check_operation_id

F = TypeVar("F", bound=Callable[..., Any])


def _operation_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check --id while the command line is parsed, before anything is read or written."""
    if value is not None:
        check_operation_id(value)
    return value


def operation_id_option(help: str) -> Callable[[F], F]:
    """`--id`, validated by the one operation-ID rule (engine.names), for every command
    that creates an operation."""
    return click.option("--id", "operation_id", default=None, callback=_operation_id,
                        help=help)


@click.group()
def operation() -> None:
    """Create and list operations."""


@operation.command("create")
@click.option("--plan", "plan_path", required=True, type=click.Path(path_type=Path),
              help="Plan file (YAML, kind: Plan). See docs/plan-format.md.")
@operation_id_option("Operation ID to use (default: op-<date>-<time>-<random>): 1 to 128 "
                     "ASCII letters, digits, '-' or '_'.")
@click.pass_obj
def create(obj: CliContext, plan_path: Path, operation_id: str | None) -> None:
    """Validate PLAN and create an operation from it; prints the new operation's ID.

    Refused (exit 3) while another operation is active, or while another process
    creates an operation with the same ID; a taken ID and invalid plans exit 2.
    Either way nothing is written.
    """
    from engine.planfile import load_plan
    from engine.service import create_operation

    plan = load_plan(plan_path)
    op = create_operation(obj.store(), plan, operation_id=operation_id)
    click.echo(op.id)


@operation.command("list")
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text",
              show_default=True, help="A table, or JSON/YAML records for scripts.")
@click.pass_obj
def list_(obj: CliContext, output: str) -> None:
    """List operations, oldest first; the active one is marked with *.

    The records' values are redacted (`gravity values show --operation-id ID --reveal`
    shows them).
    """
    from engine.presentation import dump, operation_dict, operations_text

    store = obj.store()
    ops = store.list_operations()
    active = store.active_operation_id()
    if output == "text":
        click.echo(operations_text(ops, active) if ops else "no operations")
    else:
        click.echo(dump([operation_dict(o) for o in ops], output))
