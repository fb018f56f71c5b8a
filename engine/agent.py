"""The per-node agent (`gravity agent run --node N`): announces itself under a lease, watches the
active operation for phases dispatched to it, runs them and records each result, fenced by version.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import agent_protocol as proto
from engine import fsm
from engine.agent_lookout import WAIT, Lookout, Workers
from engine.blobs import BlobCache
from engine.errors import EngineError, LeaseExpired, LockHeld, PhaseConflict, StoreError
from engine.events import EventLog
from engine.executors import registry
from engine.executors.content import Facts, ServedContent
from engine.executors.fence import ChildFence
from engine.executors.runtime import failure_text, phase_log_path, read_tail, run_phase
from engine.leases import LeaseKeeper, lease_alive
from engine.model import Lease, PhaseSpec, PhaseState, State
from engine.store.base import Store, this_host, this_pid

DEFAULT_TTL = 10.0
log = logging.getLogger("gravity.agent")


@dataclass
class _Running:
    operation: str
    state: PhaseState
    spec: PhaseSpec
    cancel: threading.Event
    started: float
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    reported: bool = False
    fenced: bool = False  # its lease was lost while it ran: its result is never recorded
    reporting: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Agent:
    """One node's worker. `run()` blocks until SIGTERM, SIGINT, SIGHUP or `gravity agent stop`."""

    store: Store
    node: str
    state_dir: Path
    ttl: float = DEFAULT_TTL
    grace: float = 30.0
    log_format: str = "console"
    ca_file: str | None = None  # the cluster CA: verifies the blob service's certificate
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.running: dict[str, _Running] = {}
        # A dispatch that arrived while an older attempt of the same phase was still winding
        # down (fenced, not yet reported): started as soon as that one is gone.
        self.deferred: dict[str, PhaseState] = {}
        self.workers = Workers()
        self.lock = threading.Lock()
        self.lease: Lease | None = None
        self.keeper: LeaseKeeper | None = None
        self.fence = ChildFence()  # one guard for the agent's life, re-armed per lease
        self.facts = Facts(self.store, self.node)
        self.cache = BlobCache(self.state_dir)  # this node's own copy of image content
        self._reannounce_at = 0.0
        self._fenced_logged = False
        self.started = time.time()
        self.operation: str | None = None
        # Wakes the run loop when this node's stop request or the cluster lock changes.
        self.lookout = Lookout(self.store, self.node, lambda: self.operation)
        # (operation, running phases) of the record last published: it is written again only
        # when they change, not at every renewal (`gravity agent status` reads the renewal
        # from the lease).
        self._published: tuple[str | None, tuple[str, ...]] | None = None
        self.after = 0
        self.specs: dict[str, PhaseSpec] = {}
        # (phase, version) of every attempt started in the followed operation: the same
        # dispatch can arrive twice (read at `_switch` and seen again by the watch).
        self.attempts: set[tuple[str, int]] = set()
        self.op_data: dict[str, Any] = {}
        # logs/agents/<node>.jsonl: apart from the operations' logs/<operation>.jsonl, so no
        # operation ID (even "agent-node-1") can share an agent's file
        self.events = EventLog(self.state_dir / "logs" / "agents", self.node,
                               console_format=self.log_format)

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self) -> None:
        self._install_signals()
        # Load (import) every executor now, not when the first phase arrives: a broken
        # plug-in fails the agent at start, and the first dispatch does not wait on imports.
        registry.names()
        self._announce()
        try:
            while not self.stopping.is_set():
                try:
                    if self.keeper is not None and self.keeper.lost.is_set():
                        self._recover_lease()
                    self._poll_once()
                except StoreError as exc:
                    # etcd restarting, a cut connection: keep the phases running (their
                    # guard stops them if the lease runs out first), try again.
                    self.events.emit("store unavailable; retrying", error=exc.message)
                    self.stopping.wait(0.5)
                self._report_finished()
        finally:
            self.stopping.set()
            self._shutdown()
            if self.keeper is not None:
                self.keeper.stop()
            self.lookout.close()
            self._retire()
            self.fence.close()
            self.events.close()

    def _install_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, self._on_signal)

    def _on_signal(self, *_: object) -> None:
        self.stopping.set()
        self.lookout.signal()

    def _agent_record(self) -> proto.AgentRecord:
        with self.lock:
            running = tuple(sorted(self.running))
        assert self.lease is not None
        return proto.AgentRecord(node=self.node, lease=self.lease.id, pid=this_pid(),
                                 host=this_host(), started=self.started,
                                 heartbeat=time.time(), ttl=self.ttl,
                                 operation=self.operation, running=running)

    def _announce(self) -> None:
        """Take a new lease and the node's lock, then publish this agent's record.

        All or nothing: if any step fails the new lease is revoked (freeing whatever it
        took) and `self.lease` is what it was, so no half-announced lease is kept alive by
        the heartbeat or published where a coordinator would dispatch to it.
        """
        previous = self.lease
        lease = self.store.grant_lease(proto.lease_name(self.node), self.ttl)
        name = proto.lock_name(self.node)
        try:
            holder = self.store.lock_holder(name)
            if holder is not None and holder.id != lease.id:
                lease_alive(self.store, holder.id)  # a dead local agent's lease goes at once
            self.store.acquire_lock(name, lease)
            # Ours from here: a coordinator dispatches to it only once the record is out.
            self.lease = lease
            self._publish(force=True)
            keeper = LeaseKeeper(self.store, lease, fence=self.fence,
                                 on_renewed=self._renewed, on_lost=lambda _: self.lookout.nudge())
        except BaseException as exc:
            self.lease = previous
            with contextlib.suppress(EngineError):
                self.store.revoke_lease(lease.id)
            if isinstance(exc, LockHeld):
                raise LockHeld(
                    f"an agent for node {self.node} is already running: {exc.holder}",
                    holder=exc.holder,
                    hint=f"stop it first with `gravity agent stop --node {self.node}`",
                ) from None
            raise
        self.keeper = keeper.start()
        self.events.emit("agent started", node=self.node, lease=lease.id,
                         pid=this_pid(), host=this_host(), ttl=self.ttl)

    def _renewed(self, lease: Lease) -> None:
        """After each renewal: refresh the record coordinators read, if it changed (the
        phases running now)."""
        if self.lease is not None and lease.id == self.lease.id:
            self._publish()

    def _publish(self, *, force: bool = False) -> None:
        record = self._agent_record()
        shown = (record.operation, record.running)
        if force or shown != self._published:
            proto.publish(self.store, record)
            self._published = shown

    def _recover_lease(self) -> None:
        """The lease could not be kept: the guard has stopped the running phases. Their
        results are dropped (the coordinator marks them interrupted), the old lease is
        revoked so nobody waits for it, and the agent announces itself again."""
        if time.monotonic() < self._reannounce_at:
            return
        self._reannounce_at = time.monotonic() + 1.0
        keeper, old = self.keeper, self.lease
        assert keeper is not None and old is not None
        if not self._fenced_logged:
            with self.lock:
                entries = list(self.running.values())
            for entry in entries:
                entry.fenced = True
                entry.cancel.set()
            self.events.emit("lease lost; phases stopped", node=self.node, lease=old.id,
                             reason=keeper.reason,
                             phases=",".join(e.state.phase_id for e in entries) or None)
            self._fenced_logged = True
        with contextlib.suppress(EngineError):
            self.store.revoke_lease(old.id)
        try:
            keeper.stop()
            self._announce()
        except LockHeld as exc:
            # Another agent took this node over while we were gone: step aside.
            self.events.emit("another agent took over; stopping", holder=exc.holder)
            self.lease = None
            self.stopping.set()
            return
        except EngineError as exc:
            self.events.emit("re-announce failed; retrying", error=exc.message)
            return
        self._fenced_logged = False

    def _retire(self) -> None:
        if self.lease is None:
            self.events.emit("agent stopped", node=self.node)
            return
        try:
            self.store.kv_delete(proto.record_key(self.node))
            self.store.release_lock(proto.lock_name(self.node), self.lease.id)
            self.store.revoke_lease(self.lease.id)
        except StoreError:
            pass  # the lease expires on its own
        self.events.emit("agent stopped", node=self.node)

    # -- finding work ------------------------------------------------------------------------
    def _poll_once(self) -> None:
        if self.lookout.due():
            request = proto.pending_stop(self.store, self.node)
            if request is not None and request.applies_to(self.started):
                self.events.emit("stop requested", node=self.node, by=request.by)
                self.store.kv_delete(proto.stop_key(self.node))
                self.stopping.set()
                return
            active = self.store.active_operation_id()
            if active != self.operation:
                self._switch(active)
        if self.operation is None:  # idle: nothing is read until a watched key changes
            with self.lock:
                busy = bool(self.running)
            self.lookout.idle(busy or (self.keeper is not None and self.keeper.lost.is_set()))
            return
        # Dispatches only: waking up for each result this agent records itself would cost as
        # much again per phase (etcd keeps those records outside the range it watches).
        for rec in self.store.wait_changes(self.operation, self.after, timeout=WAIT,
                                           node=self.node, to_state=State.IN_PROGRESS):
            self.after = max(self.after, rec.seq)
            if rec.to_state is State.IN_PROGRESS and self._mine(rec.owner):
                self._start(rec.state_after())

    def _mine(self, owner: int | None) -> bool:
        return self.lease is not None and owner == self.lease.id

    def _switch(self, operation: str | None) -> None:
        """Follow a new active operation: load its plan and pick up anything already ours.
        Nothing changes until all of it is read (a store error retries the whole switch)."""
        log.debug("agent %s follows operation %s", self.node, operation or "(none active)")
        after, specs, data, states = 0, {}, {}, {}
        if operation is not None:
            after = self.store.last_seq(operation)
            specs = {s.id: s for s in self.store.load_specs(operation)}
            data = dict(self.store.get_operation(operation).data)
            states = self.store.load_states(operation)
        old, self.operation = self.operation, operation
        self.after, self.specs, self.op_data = after, specs, data
        if old is not None and old != operation:  # its watch and records are not needed
            self.store.forget_changes(old)
        with self.lock:
            self.attempts, self.deferred = set(), {}
        # Say which operation this agent follows now, not at its next renewal.
        with contextlib.suppress(StoreError):  # else the next renewal publishes it
            self._publish()
        for st in states.values():
            if st.state is State.IN_PROGRESS and self._mine(st.owner):
                self._start(st)

    def _start(self, st: PhaseState) -> None:
        if self.keeper is None or self.keeper.lost.is_set():
            return  # a dispatch to a lease we no longer hold
        with self.lock:
            attempt = (st.phase_id, st.version)
            if st.phase_id not in self.specs or attempt in self.attempts:
                return
            older = self.running.get(st.phase_id)
            if older is not None:
                if older.state.version < st.version:  # never dropped: started after it
                    self.deferred[st.phase_id] = st
                return
            self.attempts.add(attempt)
        log.debug("agent %s runs %s (attempt %d, version %d)", self.node, st.phase_id,
                  st.attempt, st.version)
        spec = self.specs[st.phase_id]
        cancel = threading.Event()
        deadline = time.monotonic() + spec.timeout if spec.timeout else None
        op = self.operation
        entry = _Running(str(op), st, spec, cancel, time.monotonic())

        def output(line: str) -> None:
            self.events.emit("output", phase=st.phase_id, line=line, quiet=True)

        def work() -> None:
            try:
                entry.result = run_phase(spec, st, operation_id=entry.operation,
                                         state_dir=self.state_dir,
                                         operation_data=self.op_data, cancel=cancel,
                                         deadline=deadline, output=output,
                                         fence=self.fence, content=self._content(entry),
                                         facts=self.facts)
                if not cancel.is_set():
                    self._ship(entry)
                    self._report(entry)  # at once: the coordinator is waiting for it
            finally:
                entry.done.set()  # the run loop reports what this thread could not

        with self.lock:
            self.running[st.phase_id] = entry
        self.events.emit("phase started", phase=st.phase_id, attempt=st.attempt,
                         action=st.action.value, version=st.version)
        self.workers.submit(work)

    def _content(self, entry: _Running) -> ServedContent:
        """The image of the entry's operation, fetched from where its coordinator serves it."""
        return ServedContent(self.cache, self.node,
                             lambda: proto.service(self.store, entry.operation), self.ca_file)

    # -- reporting ---------------------------------------------------------------------------
    def _ship(self, entry: _Running) -> None:
        """Send the end of the phase's output to the store (before its result, so whoever
        reads the failure can read why); the whole log stays here."""
        path = phase_log_path(self.state_dir, entry.operation, entry.spec.id)
        found = read_tail(path)
        if found is None:
            return
        tail, size, truncated = found
        out = proto.ShippedOutput(node=self.node, host=this_host(), path=str(path),
                                  attempt=entry.state.attempt, size=size,
                                  truncated=truncated, tail=tail)
        try:
            proto.ship_output(self.store, entry.operation, entry.spec.id, out)
        except EngineError as exc:
            self.events.emit("output not shipped", phase=entry.spec.id, error=exc.message)

    def _report_finished(self) -> None:
        with self.lock:
            done = [e for e in self.running.values() if e.done.is_set()]
        for entry in done:
            self._report(entry)

    def _report(self, entry: _Running, *, error: str | None = None) -> None:
        """Record how the attempt ended, once (from its thread, or the loop as a retry)."""
        with entry.reporting:
            if entry.reported:
                return
            self._record_result(entry, error)

    def _record_result(self, entry: _Running, error: str | None) -> None:
        res = entry.result
        st = entry.state
        if entry.fenced:
            self.events.emit("result dropped", phase=st.phase_id, version=st.version,
                             reason="this agent lost the lease it ran under")
            entry.reported = True
            self._gone(entry)
            return
        if error is None and res is None:
            error = f"the agent on {self.node} could not run the phase (its runner crashed)"
        if error is not None:  # handed back or never run: not the executor's own result
            t = fsm.transition(st, State.FAILED, error=error)
        else:
            t = fsm.result_transition(
                st, error=failure_text(res.error) if res.error is not None else None,
                note=res.note)
        try:
            for rec in self.store.apply(entry.operation, [t], fence=st.owner):
                self.events.transition(rec, duration=time.monotonic() - entry.started)
        except (PhaseConflict, LeaseExpired):
            self.events.emit("result rejected", phase=st.phase_id, version=st.version,
                             reason="the phase moved on while it ran, or the lease it ran "
                             "under is gone (fenced: a newer attempt or an interruption was "
                             "recorded)")
        except StoreError as exc:
            self.events.emit("report failed; will retry", phase=st.phase_id,
                             error=exc.message)
            return
        except EngineError as exc:
            self.events.emit("result could not be recorded", phase=st.phase_id,
                             error=exc.message)
        entry.reported = True
        self._gone(entry)

    def _gone(self, entry: _Running) -> None:
        """The attempt is reported (or dropped): forget it, and start a newer dispatch of the
        same phase that arrived meanwhile (after a lease loss the coordinator may retry the
        phase on this agent before the fenced attempt's thread has ended)."""
        phase_id = entry.state.phase_id
        with self.lock:
            if self.running.get(phase_id) is entry:
                del self.running[phase_id]
            newer = self.deferred.pop(phase_id, None)
        if (newer is not None and entry.operation == self.operation
                and self._mine(newer.owner) and not self.stopping.is_set()):
            self._start(newer)

    def _shutdown(self) -> None:
        """SIGTERM: finish running phases within the grace period, else hand them back.

        A result that cannot be recorded now (store down) is retried until the grace ends.
        """
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            with self.lock:
                alive = [e for e in self.running.values() if not e.done.is_set()]
            self._report_finished()
            if not alive:
                break
            time.sleep(0.1)
        with self.lock:
            left = list(self.running.values())
        for entry in left:
            entry.cancel.set()
            entry.done.wait(timeout=5)
            try:
                self._report(entry, error=f"interrupted: agent on {self.node} stopped")
            except EngineError as exc:
                self.events.emit("could not hand back phase", phase=entry.state.phase_id,
                                 error=exc.message)
