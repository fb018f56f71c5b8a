"""Asking the operator before a command undoes or removes something: y/N on a terminal;
without a terminal the command needs --confirm (exit 2), as Gravity's do.
"""

from __future__ import annotations

import sys

import click

from engine.errors import InputError, Problem, Refused


def confirmed(confirm: bool, question: str) -> None:
    """Ask on a terminal (default No); without one, --confirm is required (exit 2). A "no"
    changes nothing and exits 3."""
    if confirm:
        return
    if not sys.stdin.isatty():
        raise InputError("this command needs confirmation and there is no terminal to ask on",
                         [Problem("pass --confirm", field="--confirm")],
                         hint="re-run with --confirm; nothing was done")
    if not click.confirm(question, default=False, err=True):
        raise Refused("not confirmed: nothing was done")


CONFIRM = click.option("--confirm", is_flag=True,
                       help="Do not ask; needed when there is no terminal to ask on.")
