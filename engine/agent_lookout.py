"""When an agent looks at the store again: a watch of its stop request and of the cluster lock wakes
it, so an idle agent blocks instead of reading on a timer; and the threads that run its phases.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable

from engine import agent_protocol as proto
from engine.store.base import Store, Watch

WAIT = 0.5  # the run loop's longest wait while it follows an operation (or has work pending)
POLL = 1.0  # without a working watch: how often stop requests and the active operation are read
# Idle with a watch: the longest wait (a watched key, a lost lease or a signal ends it sooner).
IDLE_WAIT = 5.0
# With a watch, the stop request and the active operation are read again only when a watched
# key changed, or after this long (a safety net: the watch reports every change).
RECHECK = 60.0


class Lookout:
    """Says when the run loop must read this node's stop request and the active operation
    again, and holds it while nothing can have changed. `nudge` (a watched key changed, the
    watch broke, the lease was lost) and `signal` (SIGTERM…) end a wait at once."""

    def __init__(self, store: Store, node: str, following: Callable[[], str | None]) -> None:
        self.store, self.node, self.following = store, node, following
        self.nudged = threading.Event()
        # What ends an idle wait (SimpleQueue.put is safe in a signal handler).
        self.wakeups: queue.SimpleQueue[None] = queue.SimpleQueue()
        self.watch: Watch | None = None
        self.checked = -1e9

    @property
    def watching(self) -> bool:
        return self.watch is not None and not self.watch.broken

    def due(self) -> bool:
        """Read now? When a watched key changed; else every POLL seconds without a working
        watch, every RECHECK with one. If so, the watch is (re)opened before the reads, so
        no change between the read and the watch is missed."""
        now = time.monotonic()
        if not self.nudged.is_set() and now - self.checked < (
                RECHECK if self.watching else POLL):
            return False
        self.nudged.clear()  # before reading: a change from now on nudges again
        self.checked = now
        if not self.watching:
            if self.watch is not None:
                self.watch.close()
            self.watch = self.store.watch(self.nudge, kv_keys=[proto.stop_key(self.node)],
                                          active_operation=True)
        return True

    def nudge(self) -> None:
        """Wake the run loop (its wait for this node's records too) and read again."""
        self.nudged.set()
        self.wakeups.put(None)
        operation = self.following()
        if operation is not None:
            self.store.wake(operation)

    def signal(self) -> None:
        self.wakeups.put(None)

    def idle(self, busy: bool) -> None:
        """No operation to follow: block until a nudge or a signal — nothing is read
        meanwhile. Shorter when `busy` (a result to report, a lease to recover) or when
        there is no watch (the loop polls)."""
        with contextlib.suppress(queue.Empty):
            self.wakeups.get(timeout=IDLE_WAIT if self.watching and not busy else WAIT)
        with contextlib.suppress(queue.Empty):
            while True:
                self.wakeups.get_nowait()

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()


class Workers:
    """Daemon threads reused from phase to phase (starting a thread per phase costs ~2 ms on a
    busy machine); a new one starts only when none is idle, so a hung phase blocks no other."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.idle = 0
        self.lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self.lock:
            spawn = self.idle == 0
            if not spawn:
                self.idle -= 1
        self.jobs.put(job)
        if spawn:
            threading.Thread(target=self._serve, name="agent-phase", daemon=True).start()

    def _serve(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                job()
            finally:
                with self.lock:
                    self.idle += 1


__all__ = ["IDLE_WAIT", "POLL", "RECHECK", "WAIT", "Lookout", "Workers"]
