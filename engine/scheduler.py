"""The event-driven loop of one run: the planner says what may start, the dispatcher runs it,
results come back on a queue, and every transition that fell due together shares one store
write. Runs forward (execute) or backward over the reversed DAG (rollback).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine import fsm
from engine.dispatch import Dispatcher
from engine.durations import format_duration
from engine.errors import (
    EventLogError,
    ExecutionError,
    LeaseExpired,
    PhaseConflict,
    PhaseTimeout,
    interruption,
)
from engine.events import EventLog
from engine.executors.runtime import PhaseResult, failure_text
from engine.graph import PlanGraph
from engine.leases import LeaseKeeper
from engine.model import Action, ChangeRecord, PhaseState, State, Transition
from engine.planner import Planner
from engine.retry import RetryTimers, delay_after, should_retry
from engine.store.base import Store

log = logging.getLogger("gravity.scheduler")

TIMEOUT_GRACE = 2.0
Outcome = tuple[Transition | None, float | None]  # a transition to record, and its duration


@dataclass(frozen=True)
class RunOptions:
    """Knobs of one run. `keep_going` disables fail-fast."""

    action: Action = Action.EXECUTE
    force: bool = False
    max_parallel: int = 8
    keep_going: bool = False


@dataclass
class RunResult:
    """What a run did: phases finished, failed (with errors) and left blocked."""

    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stopped: str | None = None
    dropped: list[str] = field(default_factory=list)  # results another process overrode
    # The operation as the run left it, for the line a command ends with: the read model's
    # PlanView (engine.views; set by the service, which sits above this layer).
    view: Any = None


@dataclass
class _Attempt:
    started: float
    deadline: float | None
    cancel: threading.Event


class Scheduler:
    """Runs a set of target leaves of one operation until done, or until fail-fast stops it.

    The caller holds the operation's coordinator lock under `keeper`'s lease.
    """

    def __init__(self, store: Store, operation_id: str, graph: PlanGraph,
                 states: dict[str, PhaseState], *, keeper: LeaseKeeper, events: EventLog,
                 options: RunOptions, dispatcher: Dispatcher,
                 adopted: Iterable[str] = ()) -> None:
        self.store, self.op_id, self.g, self.states = store, operation_id, graph, states
        self.keeper, self.lease = keeper, keeper.lease
        self.events, self.opt, self.dispatcher = events, options, dispatcher
        self.backward = options.action is Action.ROLLBACK
        self.adopted = list(adopted)
        self.running: dict[str, _Attempt] = {}
        self.parked: dict[str, float] = {}  # phase -> since when it waits for a runner
        self.timers = RetryTimers()
        self.tries: dict[str, int] = {}
        self.result = RunResult()
        self.stopping = False
        self.planner: Planner | None = None

    def _state(self, phase_id: str) -> PhaseState:
        return self.states.get(phase_id) or PhaseState(phase_id)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, targets: Iterable[str]) -> RunResult:
        planner = self.planner = Planner(self.g, self.states, targets, backward=self.backward,
                                         force=self.opt.force)
        self.result.skipped = list(planner.skipped)
        log.debug("run %s: %s of %d phase(s), up to %d at once, dispatched by %s",
                  self.op_id, self.opt.action.value, len(planner.targets),
                  self.opt.max_parallel, type(self.dispatcher).__name__)
        for phase_id in self.adopted:  # running on an agent already: wait for it, never restart it
            planner.adopt(phase_id)
            self._track(self._state(phase_id))
            self.dispatcher.adopt(self._state(phase_id))
        outbox: list[Outcome] = []
        try:
            while True:
                self.keeper.check()  # a lost lease: stop, record nothing more
                self._due_retries()
                outbox.extend(self._parked_phases())
                starts = [] if self.stopping else self._starts()
                applied = self._record(outbox, starts)
                outbox = []
                if self.events.broken is not None:
                    self._unlaunch([t for t in starts if t in applied])
                    raise self.events.broken
                for t in starts:
                    if t in applied:
                        self._launch(t.new)
                if not self.running and (self.stopping or (
                        not planner.ready and not self.timers and not self.parked)):
                    break
                outbox = self._collect()
        except KeyboardInterrupt as exc:
            self._interrupted(outbox, interruption(exc).reason)
            raise
        except LeaseExpired as exc:
            # Lost, as the keeper saw it or as the store said when it refused a write under
            # the lease before the keeper noticed: the same end either way, one message.
            self._abandon(f"the store refused a write under it ({exc.message})")
            raise self.keeper.error() from None
        except EventLogError as exc:
            # The log went read-only or full: stop, and record in the store how each running
            # phase ended, so nothing is left in progress that is not running.
            self._interrupted(outbox, f"interrupted: {exc.message}")
            raise
        finally:
            self.dispatcher.close()
        for phase_id in self.timers.drain():
            self.result.failed[phase_id] = self._state(phase_id).error or "failed"
        if not self.stopping:
            self.result.blocked = [p for p in planner.not_done()
                                   if p not in self.result.failed]
        return self.result

    def _stop(self, why: str) -> None:
        if not self.stopping:
            log.debug("run %s stopping: %s", self.op_id, why)
            self.stopping = True
            self.result.stopped = why

    # -- recording -----------------------------------------------------------------------------
    def _record(self, outbox: list[Outcome], starts: list[Transition]) -> list[Transition]:
        """One store write for every transition that fell due together — or as few as the
        store's limit on one atomic write allows (etcd: a few dozen); returns those applied.

        If another process moved one of these phases first (a late agent result, say), the
        stale transitions are dropped — re-read from the store — and the rest applied.
        """
        pairs: list[tuple[Transition, float | None]] = [
            (t, d) for t, d in outbox if t is not None]
        pairs += [(t, None) for t in starts]
        limit = max(1, self.store.capabilities.max_transitions)
        applied: list[Transition] = []
        for start in range(0, len(pairs), limit):
            applied += self._record_part(pairs[start:start + limit])
        return applied

    def _record_part(self, pairs: list[tuple[Transition, float | None]]) -> list[Transition]:
        for _ in range(3):
            if not pairs:
                return []
            try:
                records = self._apply([t for t, _ in pairs])
            except PhaseConflict:
                pairs = self._without_stale(pairs)
                continue
            # Recorded in the store all the same if the log fails; `run` sees `events.broken`.
            with contextlib.suppress(EventLogError):
                self.events.transitions(zip(records, (d for _, d in pairs), strict=True))
            return [t for t, _ in pairs]
        raise PhaseConflict(f"operation {self.op_id} keeps changing under this coordinator",
                            operation_id=self.op_id, hint="check for another coordinator")

    def _without_stale(self, pairs: list[tuple[Transition, float | None]]
                       ) -> list[tuple[Transition, float | None]]:
        fresh = self.store.load_states(self.op_id)
        kept = []
        for t, d in pairs:
            now = fresh.get(t.phase_id, PhaseState(t.phase_id))
            if now.version == t.expected:
                kept.append((t, d))
                continue
            self.states[t.phase_id] = now
            if t.from_state is State.IN_PROGRESS:
                self.result.dropped.append(t.phase_id)
            self.events.emit("transition dropped", phase=t.phase_id,
                             reason="the phase was changed by another process",
                             expected=t.expected, found=now.version)
        return kept

    def _apply(self, transitions: list[Transition]) -> list[ChangeRecord]:
        self.keeper.check()
        records = self.store.apply(self.op_id, transitions, fence=self.lease.id)
        for t in transitions:
            self.states[t.phase_id] = t.new
        return records

    # -- stopping early ------------------------------------------------------------------------
    def _interrupted(self, outbox: list[Outcome], reason: str) -> None:
        """Ctrl-C, SIGTERM, SIGHUP: stop every running phase's processes and record how each
        one ended (`reason` for those that failed by being stopped)."""
        self._stop(reason)
        for attempt in self.running.values():
            attempt.cancel.set()
        for res in self._drain_results():
            if res.error is not None:
                res.error = ExecutionError(reason, getattr(res.error, "tail", ""),
                                           retryable=False)
            outbox.append(self._finish(res))
        self._record(outbox, [])

    def _abandon(self, reason: str) -> None:
        """The lease is lost (for `reason`, unless the keeper already knew why): fence, stop
        every running phase and wait (briefly) for its worker to return, recording nothing —
        whoever takes over marks them interrupted."""
        self._stop("this process lost its lease")
        self.keeper.lose(reason)  # fences: the phase processes are killed
        for attempt in self.running.values():
            attempt.cancel.set()
        for res in self._drain_results():
            self.running.pop(res.phase_id, None)
        self.events.emit("lease lost", reason=self.keeper.reason, abandoned=len(self.running))

    def _drain_results(self, within: float = 5.0) -> list[PhaseResult]:
        """Results of running phases that arrive within `within` seconds."""
        out: list[PhaseResult] = []
        deadline = time.monotonic() + within
        waiting = set(self.running)
        while waiting and time.monotonic() < deadline:
            try:
                res = self.dispatcher.results.get(timeout=0.2)
            except queue.Empty:
                continue
            if res.phase_id in waiting:
                waiting.discard(res.phase_id)
                out.append(res)
        return out

    def _unlaunch(self, started: list[Transition]) -> None:
        """Phases recorded as started that will not be launched (the event log broke as
        their start was logged): record them failed at once, never left in progress."""
        why = "not run: " + (self.events.broken.message if self.events.broken else "stopped")
        self._record([(fsm.transition(t.new, State.FAILED, error=why), None)
                      for t in started], [])

    # -- starting phases -----------------------------------------------------------------------
    def _starts(self) -> list[Transition]:
        assert self.planner is not None
        budget = self.opt.max_parallel - len(self.running)
        picked = self.planner.pick(budget, self.dispatcher.owner_for, self._park)
        return [self._start_transition(phase_id, owner) for phase_id, owner in picked]

    def _park(self, phase_id: str) -> None:
        self.parked.setdefault(phase_id, time.monotonic())

    def _start_transition(self, phase_id: str, owner: int) -> Transition:
        self.tries[phase_id] = self.tries.get(phase_id, 0) + 1
        cur = self._state(phase_id)
        return fsm.transition(cur, State.IN_PROGRESS, action=self.opt.action, owner=owner,
                              attempt=cur.attempt + 1, node=self.g.node_of(phase_id))

    def _track(self, st: PhaseState) -> _Attempt:
        spec = self.g.specs[st.phase_id]
        now = time.monotonic()
        attempt = _Attempt(now, now + spec.timeout if spec.timeout else None,
                           threading.Event())
        self.running[st.phase_id] = attempt
        self.tries.setdefault(st.phase_id, 1)
        return attempt

    def _launch(self, st: PhaseState) -> None:
        attempt = self._track(st)
        log.debug("dispatch %s (%s, attempt %d) to node %s, owner lease %s", st.phase_id,
                  self.opt.action.value, st.attempt, self.g.node_of(st.phase_id), st.owner)
        self.dispatcher.launch(self.g.specs[st.phase_id], st, attempt.deadline, attempt.cancel)

    def _parked_phases(self) -> list[Outcome]:
        """Phases waiting for a runner on their node: start them once it is there; fail them
        when the dispatcher stops waiting, with the command that would fix it."""
        assert self.planner is not None
        out: list[Outcome] = []
        now = time.monotonic()
        for phase_id, since in list(self.parked.items()):
            node = self.g.node_of(phase_id)
            if self.dispatcher.owner_for(node) is not None:
                del self.parked[phase_id]
                self.planner.again(phase_id)
            elif self.stopping or self.dispatcher.waited_too_long(node, now - since):
                del self.parked[phase_id]
                error = self.dispatcher.no_runner(node)
                cur = self._state(phase_id)
                if cur.state is not State.IN_PROGRESS:
                    self._record([], [self._start_transition(phase_id, self.lease.id)])
                    cur = self._state(phase_id)
                self.result.failed[phase_id] = error
                self.planner.given_up(phase_id)
                if not self.opt.keep_going:
                    self._stop(f"phase {phase_id} failed")
                out.append((fsm.transition(cur, State.FAILED, error=error), None))
        return out

    def _due_retries(self) -> None:
        assert self.planner is not None
        for phase_id in self.timers.due(time.monotonic()):
            if self.stopping:
                self.result.failed[phase_id] = self._state(phase_id).error or "failed"
            else:
                self.planner.again(phase_id)

    # -- results -------------------------------------------------------------------------------
    def _next_wakeup(self) -> float:
        now = time.monotonic()
        wake = now + 0.5
        due = self.timers.next_at()
        if due is not None:
            wake = min(wake, due)
        for attempt in self.running.values():
            if attempt.deadline is not None:
                wake = min(wake, attempt.deadline + TIMEOUT_GRACE)
        return max(0.0, wake - now)

    def _collect(self) -> list[Outcome]:
        results = self.dispatcher.results
        out: list[Outcome] = []
        try:
            first = results.get(timeout=self._next_wakeup()) if (
                self.running or self.timers or self.parked) else None
        except queue.Empty:
            first = None
        batch = [first] if first else []
        while True:
            try:
                batch.append(results.get_nowait())
            except queue.Empty:
                break
        for res in batch:
            if res.phase_id not in self.running:
                continue  # abandoned after a timeout: its late result is ignored
            out.append(self._finish(res))
        out.extend(self._overdue())
        return out

    def _overdue(self) -> list[Outcome]:
        """Phases whose runner is gone (a dead agent) or ignored the deadline: fail them."""
        now = time.monotonic()
        out = []
        running_states = {phase_id: self._state(phase_id) for phase_id in self.running}
        for phase_id, who in self.dispatcher.lost(running_states).items():
            err = ExecutionError(f"interrupted: {who} lost")
            out.append(self._finish(PhaseResult(phase_id, self._state(phase_id).version, err, None,
                                                now - self.running[phase_id].started)))
        for phase_id, attempt in list(self.running.items()):
            if attempt.deadline is not None and now > attempt.deadline + TIMEOUT_GRACE:
                attempt.cancel.set()
                timeout = self.g.specs[phase_id].timeout or 0
                err = PhaseTimeout(f"timed out after {format_duration(timeout)}")
                version = self._state(phase_id).version
                out.append(self._finish(PhaseResult(phase_id, version, err, None,
                                                    now - attempt.started)))
        return out

    def _finish(self, res: PhaseResult) -> Outcome:
        """Record how an attempt ended (unless its runner did) and decide what comes next."""
        assert self.planner is not None
        phase_id = res.phase_id
        if log.isEnabledFor(logging.DEBUG):
            log.debug("result of %s after %.2fs: %s", phase_id, res.duration, _said(res))
        self.running.pop(phase_id, None)
        self.planner.stopped(phase_id)
        cur = self._state(phase_id)
        retryable = True
        if res.recorded is not None:
            self.states[phase_id] = res.recorded
            error = (res.recorded.error or "failed") if res.recorded.state is State.FAILED \
                else None
        elif cur.state is not State.IN_PROGRESS or cur.version != res.version:
            return None, None  # someone else already moved it on (fenced)
        else:
            error = failure_text(res.error) if res.error is not None else None
            retryable = getattr(res.error, "retryable", True)
            if error is not None and self.backward:
                error = f"rollback failed: {error}"
        if error is None:
            self.planner.completed(phase_id)
            self.result.completed.append(phase_id)
            if res.recorded is not None:
                return None, res.duration
            return fsm.result_transition(cur, error=None, note=res.note), res.duration
        retry_note = self._retry_or_give_up(phase_id, cur, error, retryable)
        if res.recorded is not None:
            return None, res.duration
        return fsm.result_transition(cur, error=error, note=retry_note), res.duration

    def _retry_or_give_up(self, phase_id: str, cur: PhaseState, error: str,
                          retryable: bool) -> str | None:
        """Schedule the next attempt under the phase's retry policy (the note says when), or
        give the phase up: fail-fast stops the run unless keep_going."""
        assert self.planner is not None
        policy = self.g.specs[phase_id].retry
        tries = self.tries.get(phase_id, 1)
        if retryable and not self.stopping and should_retry(policy, tries):
            delay = delay_after(policy, tries)
            self.timers.push(phase_id, time.monotonic() + delay)
            return (f"attempt {cur.attempt} of {policy.attempts} failed; retrying in "
                    f"{format_duration(delay)}")
        self.result.failed[phase_id] = error
        self.planner.given_up(phase_id)
        if not self.opt.keep_going:
            self._stop(f"phase {phase_id} failed")
        return None


def _said(res: PhaseResult) -> str:
    """How a result reads in a debug line: ok, its error, or what its runner recorded."""
    if res.recorded is not None:
        return f"recorded {res.recorded.state.value} by its runner"
    return "ok" if res.error is None else f"error: {failure_text(res.error)[:200]!r}"


__all__ = ["RunOptions", "RunResult", "Scheduler"]
