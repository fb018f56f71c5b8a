"""The structured event log: one JSON event per transition (and per notable engine step), as
lines in `<state-dir>/logs/<operation-id>.jsonl` and readable lines on the console.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable
from json.encoder import encode_basestring_ascii as _str
from pathlib import Path
from typing import Any, TextIO

from engine.errors import EventLogError
from engine.model import ChangeRecord, State

_second: tuple[int, str] = (-1, "")  # the last whole second `stamp` formatted, and its text


def stamp(now: float) -> str:
    """An event's `ts`: UTC to the millisecond, from one clock reading. The formatted second
    is kept: a run logs thousands of events per second."""
    global _second
    whole = int(now)
    cached = _second
    if cached[0] != whole:
        cached = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
        _second = cached
    return f"{cached[1]}.{int((now - whole) * 1000):03d}Z"


# `json.dumps`'s default form (what structlog's JSONRenderer wrote before); an object JSON
# cannot hold is written as its repr. One encoder for every event.
_ENCODER = json.JSONEncoder(default=repr)


def _json(record: dict[str, Any]) -> str:
    """One event as a JSON line."""
    return _ENCODER.encode(record)


def _number(value: float) -> str:
    return repr(value) if math.isfinite(value) else json.dumps(value)


def transition_fields(rec: ChangeRecord, duration: float | None) -> dict[str, Any]:
    """A transition event's fields, in the order its line lists them (None left out)."""
    fields: dict[str, Any] = {"seq": rec.seq, "phase": rec.phase_id, "version": rec.version,
                              "node": rec.node, "attempt": rec.attempt,
                              "action": rec.action.value, "from": rec.from_state.value,
                              "to": rec.to_state.value, "owner": rec.owner, "error": rec.error,
                              "note": rec.note,
                              "duration": round(duration, 3) if duration is not None else None}
    return {k: v for k, v in fields.items() if v is not None}


def transition_event(rec: ChangeRecord, duration: float | None) -> dict[str, Any]:
    """A stored transition as the event log's event (what `gravity events -o json` prints):
    the same fields, its `ts` the time the store recorded it."""
    return {**transition_fields(rec, duration), "operation": rec.operation_id,
            "event": "transition", "ts": stamp(rec.at)}


class Durations:
    """How long each attempt ran, from the changelog: from the record that put it in progress
    to the one that took it out (unknown when the first was not read)."""

    def __init__(self) -> None:
        self.started: dict[tuple[str, int], float] = {}

    def of(self, rec: ChangeRecord) -> float | None:
        """The duration to show with `rec`; every record read must pass here, in order."""
        key = (rec.phase_id, rec.attempt)
        if rec.to_state is State.IN_PROGRESS:
            self.started[key] = rec.at
            return None
        start = self.started.pop(key, None) if rec.from_state is State.IN_PROGRESS else None
        return None if start is None else rec.at - start


def transition_line(rec: ChangeRecord, duration: float | None, operation: str, ts: str) -> str:
    """The JSON line of one transition, written out field by field: the same bytes as
    `_json` of its event (tests/test_events.py holds the two equal), at a third of the cost —
    a run writes one per transition."""
    parts = [f'{{"seq": {rec.seq:d}, "phase": {_str(rec.phase_id)}, "version": {rec.version:d}']
    if rec.node is not None:
        parts.append(f'"node": {_str(rec.node)}')
    parts.append(f'"attempt": {rec.attempt:d}, "action": "{rec.action.value}", '
                 f'"from": "{rec.from_state.value}", "to": "{rec.to_state.value}"')
    if rec.owner is not None:
        parts.append(f'"owner": {rec.owner:d}')
    if rec.error is not None:
        parts.append(f'"error": {_str(rec.error)}')
    if rec.note is not None:
        parts.append(f'"note": {_str(rec.note)}')
    if duration is not None:
        parts.append(f'"duration": {_number(round(duration, 3))}')
    parts.append(f'"operation": {operation}, "event": "transition", "ts": "{ts}"}}')
    return ", ".join(parts)


def _console_line(event: dict[str, Any]) -> str:
    """A transition as one readable line; other events as `event key=value ...`."""
    ts = str(event.pop("ts", ""))[11:19]
    name = event.pop("event", "")
    event.pop("operation", None)
    if name == "transition":
        line = (f"{ts} {event.get('phase')}: {event.get('from')} -> {event.get('to')} "
                f"({event.get('action')}, node {event.get('node', '-')}, attempt "
                f"{event.get('attempt')})")
        if "duration" in event:
            line += f" in {event['duration']}s"
        if event.get("error"):
            line += " error: " + str(event["error"]).splitlines()[0]
        if event.get("note"):
            line += f" [{event['note']}]"
        return line
    rest = " ".join(f"{k}={v}" for k, v in event.items())
    return f"{ts} {name} {rest}".rstrip()


def _console_transition(rec: ChangeRecord, duration: float | None, ts: str) -> str:
    """`_console_line` of a transition event, without building the event."""
    line = (f"{ts[11:19]} {rec.phase_id}: {rec.from_state.value} -> {rec.to_state.value} "
            f"({rec.action.value}, node {rec.node if rec.node is not None else '-'}, attempt "
            f"{rec.attempt})")
    if duration is not None:
        line += f" in {round(duration, 3)}s"
    if rec.error:
        line += " error: " + rec.error.splitlines()[0]
    if rec.note:
        line += f" [{rec.note}]"
    return line


class EventLog:
    """Writes every event to the operation's JSONL file and, optionally, to the console.

    An event is a dict with one `ts`, rendered once per sink. A batch of transitions (what
    one store write recorded) is written with one `write` and one `flush` per sink, before
    `transitions` returns: nothing reported is left in a buffer, and a file that cannot be
    written is known before the caller starts what it just logged.
    """

    def __init__(self, log_dir: Path, operation_id: str, *, console: TextIO | None = sys.stderr,
                 console_format: str = "console",
                 listener: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.path = log_dir / f"{operation_id}.jsonl"
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - in close()
        except OSError as exc:
            raise self._failed(exc, "nothing was started") from exc
        self._lock = threading.Lock()
        self.broken: EventLogError | None = None
        self.operation_id = operation_id
        self._operation = _str(operation_id)
        self._console = console if listener is None else None
        self._console_json = console_format == "json"
        self._listener = listener

    def emit(self, event: str, *, quiet: bool = False, **fields: Any) -> None:
        """Record one event; `quiet` keeps it out of the console (file only)."""
        fields = {k: v for k, v in fields.items() if v is not None}
        fields["operation"] = self.operation_id
        record = {**fields, "event": event, "ts": stamp(time.time())}
        line = _json(record)
        console: list[str] = []
        if self._console is not None and not quiet:
            console.append(line if self._console_json else _console_line(record))
        self._write(line + "\n", console, [(event, fields)])

    def transition(self, rec: ChangeRecord, *, duration: float | None = None,
                   quiet: bool = False) -> None:
        """The event for one recorded transition."""
        self.transitions([(rec, duration)], quiet=quiet)

    def transitions(self, batch: Iterable[tuple[ChangeRecord, float | None]], *,
                    quiet: bool = False) -> None:
        """The events of transitions recorded together (each with its phase's duration, if
        it ran), written as one block."""
        ts = stamp(time.time())
        lines: list[str] = []
        console: list[str] = []
        heard: list[tuple[str, dict[str, Any]]] = []
        to_console = self._console is not None and not quiet
        for rec, duration in batch:
            line = transition_line(rec, duration, self._operation, ts)
            lines.append(line)
            if to_console:
                console.append(line if self._console_json
                               else _console_transition(rec, duration, ts))
            if self._listener is not None:
                fields = transition_fields(rec, duration)
                fields["operation"] = self.operation_id
                heard.append(("transition", fields))
        if lines:
            lines.append("")
            self._write("\n".join(lines), console, heard)

    def _write(self, text: str, console: list[str],
               heard: list[tuple[str, dict[str, Any]]]) -> None:
        with self._lock:
            if self.broken is None:
                try:
                    self._file.write(text)
                    self._file.flush()
                except OSError as exc:
                    # Raised once; later events go to the console only, so the caller can
                    # still record in the store how its phases ended before it stops.
                    self.broken = self._failed(exc, "the operation is left resumable")
                    raise self.broken from exc
            if self._listener is not None:
                for event, fields in heard:
                    self._listener(event, dict(fields))
            elif console and self._console is not None:
                console.append("")
                self._console.write("\n".join(console))
                self._console.flush()

    def _failed(self, exc: OSError, state: str) -> EventLogError:
        return EventLogError(
            f"cannot write the event log {self.path}: {exc.strerror or exc}; {state}",
            hint=f"free space on, or make writable, {self.path.parent}; then `gravity plan "
            "resume`")

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                with contextlib.suppress(OSError):  # a flush that already failed
                    self._file.close()
        close = getattr(self._listener, "close", None)
        if close is not None:
            close()
