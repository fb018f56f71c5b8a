"""The structured event log: one structlog event per transition (and per notable engine step),
as JSON lines in `<state-dir>/logs/<operation-id>.jsonl` and readable lines on the console.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import structlog

from engine.errors import EventLogError
from engine.model import ChangeRecord


def stamp(now: float) -> str:
    """An event's `ts`: UTC to the millisecond, from one clock reading."""
    whole = int(now)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            + f".{int((now - whole) * 1000):03d}Z")


def _console_line(_: Any, __: str, event: dict[str, Any]) -> str:
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


class EventLog:
    """Writes every event to the operation's JSONL file and, optionally, to the console.

    Each event is rendered by structlog's processors (JSON for the file; JSON or
    `_console_line` for the console), called directly: an event is a dict rendered
    once per sink, with one `ts` shared by both.
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
        self._json = structlog.processors.JSONRenderer(sort_keys=False)
        self._console = console if listener is None else None
        self._console_render: Any = (structlog.processors.JSONRenderer()
                                     if console_format == "json" else _console_line)
        self._listener = listener

    def emit(self, event: str, *, quiet: bool = False, **fields: Any) -> None:
        """Record one event; `quiet` keeps it out of the console (file only)."""
        fields = {k: v for k, v in fields.items() if v is not None}
        fields["operation"] = self.operation_id
        record = {**fields, "event": event, "ts": stamp(time.time())}
        line = self._json(None, "info", dict(record))
        with self._lock:
            if self.broken is None:
                try:
                    self._file.write(line + "\n")
                    self._file.flush()
                except OSError as exc:
                    # Raised once; later events go to the console only, so the caller can
                    # still record in the store how its phases ended before it stops.
                    self.broken = self._failed(exc, "the operation is left resumable")
                    raise self.broken from exc
            if self._listener is not None:
                self._listener(event, dict(fields))
            elif self._console is not None and not quiet:
                self._console.write(self._console_render(None, "info", record) + "\n")
                self._console.flush()

    def transition(self, rec: ChangeRecord, *, duration: float | None = None,
                   quiet: bool = False) -> None:
        """The event for one recorded transition."""
        self.emit(
            "transition", quiet=quiet, phase=rec.phase_id, node=rec.node,
            attempt=rec.attempt, action=rec.action.value,
            **{"from": rec.from_state.value, "to": rec.to_state.value},
            error=rec.error, note=rec.note,
            duration=round(duration, 3) if duration is not None else None,
        )

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
