"""`gravity events`: the operation's changelog — every phase transition — as text, or as JSON
lines with the event log's fields. Selects records after a seq or within a recent duration, follows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import click

from engine.durations import parse_duration
from engine.model import ChangeRecord
from engine.store.base import MAX_SEQ, parse_seq
from engine.views import follow_changes as follow


@dataclass(frozen=True)
class Since:
    """Where `--since` starts: after a changelog sequence number, or a number of seconds ago."""

    seq: int | None = None
    seconds: float | None = None

    def select(self, records: Iterable[ChangeRecord], now: float) -> list[ChangeRecord]:
        """The records this bound lets through, in changelog order."""
        if self.seq is not None:
            return [r for r in records if r.seq > self.seq]
        if self.seconds is not None:
            cutoff = now - self.seconds
            return [r for r in records if r.at >= cutoff]
        return list(records)


class SinceType(click.ParamType):
    """`--since 42` (records after seq 42) or `--since 10m` (records of the last 10 minutes)."""

    name = "SEQ|DURATION"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Since:
        if isinstance(value, Since):
            return value
        text = str(value).strip()
        if text.isascii() and text.isdigit():
            seq = parse_seq(text)
            if seq is None:
                self.fail(f"a sequence number must be 0 to {MAX_SEQ}, got {text}", param, ctx)
            return Since(seq=seq)
        try:
            return Since(seconds=parse_duration(text))
        except ValueError:
            self.fail(f"expected a sequence number (e.g. 42) or a duration (e.g. 30s, 10m, "
                      f"1h30m), got {value!r}", param, ctx)


@click.command()
@click.option("--operation-id", default=None,
              help="Operation to show (default: the active operation, else the most recent).")
@click.option("--since", type=SinceType(), default=None,
              help="Only records after this sequence number (e.g. 42), or from the last "
              "DURATION (e.g. 30s, 10m, 1h30m).")
@click.option("--follow", "follow_", is_flag=True,
              help="Keep printing records as they are written, until the operation ends or "
              "nobody drives it.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="Readable lines, or one JSON object per line (the event log's fields).")
@click.pass_obj
def events(obj: Any, operation_id: str | None, since: Since | None, follow_: bool,
           output: str) -> None:
    """Print the operation's changelog: every phase transition, oldest first.

    Each line is one state change with its attempt, node, error and note. The
    changelog is the durable history the current states are rebuilt from, so this
    is what happened even when the processes that did it are gone.
    """
    import json

    from engine.events import Durations, transition_event
    from engine.presentation import record_line
    from engine.views import resolve_operation

    store = obj.store()
    op = resolve_operation(store, operation_id)
    since = since or Since()
    records = store.changelog(op.id, since.seq or 0)
    durations = Durations()
    took = {rec.seq: durations.of(rec) for rec in records}

    def show(rec: ChangeRecord, duration: float | None) -> None:
        click.echo(json.dumps(transition_event(rec, duration), ensure_ascii=False)
                   if output == "json" else record_line(rec))

    for rec in since.select(records, time.time()):
        show(rec, took[rec.seq])
    if not follow_:
        return
    last = records[-1].seq if records else (since.seq or 0)
    why = follow(store, op.id, last, lambda rec: show(rec, durations.of(rec)))
    if why == "finished":
        final = store.get_operation(op.id)
        click.echo(f"operation {op.id} {final.state.value}", err=True)
    else:
        click.echo(f"operation {op.id} is idle (nobody is driving it); continue it with "
                   "`gravity plan resume`", err=True)
