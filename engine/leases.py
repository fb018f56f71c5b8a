"""Leases from both sides: the holder keeps one alive and fences itself when it cannot
(LeaseKeeper), a taker-over decides whether an owner is gone and waits out its fencing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable

from engine.durations import env_duration
from engine.errors import EngineError, LeaseExpired, StoreError
from engine.executors.fence import ChildFence, term_window
from engine.model import Lease
from engine.store.base import Store, this_host

DEFAULT_GRACE = 1.0


def lease_grace() -> float:
    """Seconds a taker-over waits after a lease is gone before it re-runs that lease's phases
    (env GRAVITY_LEASE_GRACE, default 1): the holder's guard has killed its phase processes
    before the lease ran out; the grace covers the guard's polling and the kill itself."""
    return env_duration("GRAVITY_LEASE_GRACE", DEFAULT_GRACE)


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def died_here(lease: Lease) -> bool:
    """Whether the lease's holder was another process on this host that no longer runs."""
    return lease.host == this_host() and lease.pid != os.getpid() and not pid_exists(lease.pid)


def lease_alive(store: Store, lease_id: int | None) -> Lease | None:
    """The lease if its holder is alive; a dead local holder's lease is revoked at once."""
    if lease_id is None:
        return None
    lease = store.get_lease(lease_id)
    if lease is None:
        return None
    if died_here(lease):
        store.revoke_lease(lease.id)
        return None
    return lease


def wait_out_fencing(gone: Iterable[int], notify: Callable[[str], None] | None = None) -> None:
    """Before re-running phases whose owners' leases are gone, give those owners' guards the
    grace to have stopped their processes. Waited once, however many owners."""
    owners = sorted(set(gone))
    grace = lease_grace()
    if not owners or grace <= 0:
        return
    if notify is not None:
        notify(f"waiting {grace:g}s for the processes of lease(s) "
               f"{', '.join(map(str, owners))} to be stopped by their own guard")
    time.sleep(grace)


class LeaseKeeper:
    """Keeps a lease alive from a thread and knows until when it surely is valid.

    Renews every ttl/3. A renewal's expiry counts from before the request was sent (or, on
    the embedded store, from the moment it was written), so `valid_until` never claims more
    than the store grants. When that moment comes near without a renewal (the store is
    unreachable or locked, this process was frozen) the keeper fences: `lost` is set, the
    ChildFence's guard kills the phase processes, and `on_lost` is called once. A lost
    lease stays lost: its holder must stop and record nothing more.
    """

    def __init__(self, store: Store, lease: Lease, *, fence: ChildFence | None = None,
                 on_renewed: Callable[[Lease], None] | None = None,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.store, self.lease = store, lease
        self.fence = fence if fence is not None else ChildFence()
        self._own_fence = fence is None
        self.on_renewed, self.on_lost = on_renewed, on_lost
        self.lost = threading.Event()
        self.reason = ""
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self.valid_until = self._valid_until(lease)
        self.fence.arm(self.valid_until, lease.ttl)
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renew",
                                         daemon=True)
        self._watchdog = threading.Thread(target=self._watch_loop, name="lease-watchdog",
                                          daemon=True)

    @staticmethod
    def _valid_until(lease: Lease) -> float:
        return time.monotonic() + (lease.expires - time.time())

    @property
    def margin(self) -> float:
        return term_window(self.lease.ttl)

    def start(self) -> LeaseKeeper:
        self._renewer.start()
        self._watchdog.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in (self._renewer, self._watchdog):
            if t.is_alive():
                t.join(timeout=5)
        if self._own_fence:
            self.fence.close()

    def __enter__(self) -> LeaseKeeper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check(self) -> None:
        """Raise LeaseExpired if the lease is lost (callers check before each write)."""
        if self.lost.is_set():
            raise self.error()

    def error(self) -> LeaseExpired:
        return LeaseExpired(
            f"this process lost its lease {self.lease.id}: {self.reason}; its running phase "
            "processes were stopped and nothing more was recorded",
            hint="`gravity plan` shows the phases it left in progress; `gravity plan resume` "
            "marks them interrupted and runs them again")

    # -- threads ---------------------------------------------------------------------------
    def _renew_loop(self) -> None:
        interval = max(0.2, self.lease.ttl / 3)
        while not self._stop.wait(interval):
            if self.lost.is_set():
                return
            try:
                renewed = self.store.keepalive(self.lease.id)
            except LeaseExpired:
                self._lose("the store says it expired before it was renewed")
                return
            except StoreError:
                continue  # the watchdog fences if this goes on too long
            except EngineError:
                continue
            if self.lost.is_set():
                return  # renewed too late: what was fenced stays fenced
            with self._cond:
                self.valid_until = self._valid_until(renewed)
                self.fence.arm(self.valid_until, self.lease.ttl)
                self._cond.notify_all()
            if self.on_renewed is not None:
                with contextlib.suppress(EngineError):
                    self.on_renewed(renewed)

    def _watch_loop(self) -> None:
        with self._cond:
            while not self._stop.is_set():
                left = self.valid_until - self.margin - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(timeout=min(left, 1.0))
            else:
                return
        self._lose(f"it could not be renewed before it ran out (ttl {self.lease.ttl:g}s)")

    def lose(self, reason: str) -> None:
        """Treat the lease as lost for `reason` (kept if it was lost already): fence now."""
        self._lose(reason)

    def _lose(self, reason: str) -> None:
        with self._cond:
            if self.lost.is_set():
                return
            self.reason = reason
            self.lost.set()
        self.fence.fence()
        if self.on_lost is not None:
            self.on_lost(reason)


__all__ = ["LeaseKeeper", "died_here", "lease_alive", "lease_grace", "pid_exists",
           "wait_out_fencing"]
