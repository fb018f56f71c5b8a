"""Live progress on a terminal: a bar of finished/total phases, the running phases with their
node and elapsed time, retries and failures kept above it. Without a TTY, plain lines are used.
"""

from __future__ import annotations

import threading
import time
from typing import Any, TextIO

BAR_WIDTH = 30
MAX_RUNNING_SHOWN = 6
_SHOWN: list[TtyProgress] = []  # the block on the terminal now, if any


class TtyProgress:
    """An EventLog listener that redraws a small status block in place (ANSI escapes)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.total = 0
        self.done = 0
        self.failed = 0
        self.retries = 0
        self.running: dict[str, tuple[str, float]] = {}
        self.notes: dict[str, list[str]] = {}  # a note (e.g. "skipped: …") -> its phases
        self.failures: list[str] = []
        self.started = time.monotonic()
        self.drawn = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
        self.ticker.start()
        _SHOWN.append(self)

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        with self.lock:
            if event == "run started":
                self.total = int(fields.get("phases", 0))
                self.done = self.failed = self.retries = 0
                self.notes, self.failures = {}, []
                self.started = time.monotonic()
            elif event == "transition":
                self._transition(fields)
            elif event not in ("run finished", "output"):
                self._above(f"{event}: " + " ".join(f"{k}={v}" for k, v in fields.items()
                                                     if k != "operation"))
            self._draw()

    def _transition(self, f: dict[str, Any]) -> None:
        phase, to = str(f.get("phase")), f.get("to")
        if to == "in_progress":
            self.running[phase] = (str(f.get("node") or "-"), time.monotonic())
            return
        self.running.pop(phase, None)
        if to in ("completed", "rolled_back"):
            self.done += 1
            if str(f.get("note") or "").startswith("skipped"):
                self._above(f"  {phase}: {f['note']}")
                self.notes.setdefault(str(f["note"]), []).append(phase)
        elif to == "failed":
            error = str(f.get("error") or "").splitlines()[0] if f.get("error") else "failed"
            note = str(f.get("note") or "")
            if note.startswith("attempt"):
                self.retries += 1
                self._above(f"↻ {phase} on {f.get('node') or '-'}: {error} ({note})")
            else:
                self.failed += 1
                self.failures.append(f"{phase} on {f.get('node') or '-'}: {error}")
                self._above(f"× {phase} on {f.get('node') or '-'}: {error}")

    def _above(self, line: str) -> None:
        """A line that stays: printed above the live block."""
        self._clear()
        self.stream.write(line + "\n")

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def _draw(self) -> None:
        self._clear()
        total = max(self.total, 1)
        filled = int(BAR_WIDTH * min(self.done, total) / total)
        elapsed = time.monotonic() - self.started
        lines = [f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {self.done}/{self.total} "
                 f"phases  {len(self.running)} running  {self.retries} retries  "
                 f"{self.failed} failed  {elapsed:5.1f}s"]
        now = time.monotonic()
        for phase, (node, since) in list(self.running.items())[:MAX_RUNNING_SHOWN]:
            lines.append(f"  → {phase} on {node} ({now - since:.1f}s)")
        if len(self.running) > MAX_RUNNING_SHOWN:
            lines.append(f"  … and {len(self.running) - MAX_RUNNING_SHOWN} more")
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self.drawn = len(lines)

    def _tick(self) -> None:
        while not self.stop.wait(0.5):
            with self.lock:
                if self.drawn:
                    self._draw()

    def summary(self) -> list[str]:
        """What stays on the terminal when the run ends: phases done, notes, failures."""
        elapsed = time.monotonic() - self.started
        lines = [f"summary: {self.done}/{self.total} phases done in {elapsed:.1f}s, "
                 f"{self.retries} retries, {self.failed} failed"]
        for note, phases in self.notes.items():
            shown = ", ".join(phases[:3]) + (f" and {len(phases) - 3} more"
                                             if len(phases) > 3 else "")
            lines.append(f"  {len(phases)} phase(s) {note} ({shown})")
        lines += [f"  × {failure}" for failure in self.failures]
        return lines

    def close(self) -> None:
        self.stop.set()
        if self in _SHOWN:
            _SHOWN.remove(self)
        with self.lock:
            self._clear()
            if self.total:
                self.stream.write("\n".join(self.summary()) + "\n")
            self.stream.flush()


def print_above(line: str, stream: TextIO) -> None:
    """A line another writer prints to `stream` (`--debug`'s log): above the live block when
    one is drawn there, which is then drawn again below it, so the two never interleave."""
    block = next((b for b in reversed(_SHOWN) if b.stream is stream), None)
    if block is None:
        stream.write(line + "\n")
        stream.flush()
        return
    with block.lock:
        drawn = block.drawn
        block._above(line)
        if drawn:
            block._draw()
        else:
            block.stream.flush()
