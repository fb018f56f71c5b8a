"""`gravity store copy`: move operations with their plans, states and changelogs between stores.
Used to move from the embedded SQLite store to etcd (or back); safe to run again.
"""

from __future__ import annotations

import click

from engine.cli.context import CliContext
from engine.errors import Refused, StoreConfigError
from engine.store import Store, open_store
from engine.store.copy import copy_operations


@click.group()
def store() -> None:
    """Copy operations between stores."""


@store.command("copy")
@click.option("--from", "source", required=True, metavar="URL",
              help="Store to read: sqlite:///path/gravity.db or etcd://host:2379[/prefix].")
@click.option("--to", "dest", required=True, metavar="URL",
              help="Store to write; etcd credentials and TLS come from the global options.")
@click.option("--operation-id", "operation_ids", multiple=True, metavar="ID",
              help="Copy only this operation (repeatable; default: every operation).")
@click.option("--force", is_flag=True,
              help="Replace an operation the destination holds with a different history.")
@click.pass_obj
def copy(obj: CliContext, source: str, dest: str, operation_ids: tuple[str, ...],
         force: bool) -> None:
    """Copy operations, their phase specs, states and changelogs from one store to another.

    An operation the destination already holds with the same history is skipped;
    one with a different history is refused (exit 3) unless --force. A copied
    active operation takes the destination's cluster lock only if it is free.
    """
    if source.rstrip("/") == dest.rstrip("/"):
        raise StoreConfigError("--from and --to name the same store",
                               hint="give two different store URLs")
    src: Store | None = None
    dst: Store | None = None
    try:
        src = open_store(source, tls=obj.tls)
        dst = open_store(dest, tls=obj.tls)
        refused = []
        for result in copy_operations(src, dst, operation_ids, force=force):
            click.echo(result.render())
            if result.refused:
                refused.append(result.operation_id)
        if refused:
            raise Refused(
                f"{len(refused)} operation(s) not copied: {', '.join(refused)}",
                hint="compare them with `gravity --store URL plan`, then re-run with --force "
                "to replace the destination's copy",
            )
    finally:
        for opened in (dst, src):
            if opened is not None:
                opened.close()
