"""Self-fencing of phase processes: a lease holder's phase processes die before its lease can
expire. The holder arms a ChildFence with how long its lease is surely valid; a guard process
(fence_guard.py) kills every registered process group when that time runs out.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

GUARD = Path(__file__).with_name("fence_guard.py")


def term_window(ttl: float) -> float:
    """How long before a lease's end its phase processes get SIGTERM (SIGKILL at the end)."""
    return min(1.0, max(0.1, ttl / 4))


class ChildFence:
    """The holder's side of the guard: registers phase process groups and moves the deadline.

    The guard process is started with the first registered group (plans that run no process
    never pay for it). Once `fence()` is called the fence stays shut until `arm()` is given a
    deadline in the future again (an agent that re-announced with a new lease).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._guard: subprocess.Popen[bytes] | None = None
        self._term_at = math.inf
        self._kill_at = math.inf
        self._groups: set[int] = set()
        self.fenced = False

    # -- the lease side --------------------------------------------------------------------
    def arm(self, valid_until: float, ttl: float) -> None:
        """The lease is surely valid until `valid_until` (time.monotonic())."""
        with self._lock:
            self._kill_at = valid_until
            self._term_at = valid_until - term_window(ttl)
            if valid_until > time.monotonic():
                self.fenced = False
            self._send(f"D {self._term_at!r} {self._kill_at!r}")

    def fence(self) -> None:
        """Stop every registered process group now (SIGTERM, then SIGKILL a second later)."""
        with self._lock:
            self.fenced = True
            self._kill_at = self._term_at = time.monotonic()
            self._send("F")

    # -- the executor side -----------------------------------------------------------------
    def add(self, pgid: int) -> bool:
        """Register a phase's process group; False (and the group is killed) when fenced."""
        with self._lock:
            if self._guard is None:
                self._start()
            self._groups.add(pgid)
            self._send(f"A {pgid}")
            return not self.fenced and time.monotonic() < self._kill_at

    def remove(self, pgid: int) -> None:
        with self._lock:
            if pgid in self._groups:
                self._groups.discard(pgid)
                self._send(f"R {pgid}")

    def close(self) -> None:
        """Stop the guard (it kills whatever is still registered)."""
        with self._lock:
            guard, self._guard = self._guard, None
        if guard is not None:
            with contextlib.suppress(OSError):
                assert guard.stdin is not None
                guard.stdin.close()
            try:
                guard.wait(timeout=5)
            except subprocess.TimeoutExpired:
                guard.kill()

    # -- plumbing --------------------------------------------------------------------------
    def _start(self) -> None:
        self._guard = subprocess.Popen(
            [sys.executable, "-I", "-S", str(GUARD)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        if self.fenced:
            self._send("F")
        else:
            self._send(f"D {self._term_at!r} {self._kill_at!r}")

    def _send(self, line: str) -> None:
        if self._guard is None or self._guard.stdin is None:
            return
        try:
            self._guard.stdin.write(line.encode() + b"\n")
            self._guard.stdin.flush()
        except (BrokenPipeError, OSError):
            self._guard = None  # started again with the next group


__all__ = ["ChildFence", "term_window"]
