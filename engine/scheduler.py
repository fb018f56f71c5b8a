"""The event-driven loop: ready phases -> dispatch -> results -> only their dependents re-checked.
Runs forward (execute) or backward over the reversed DAG (rollback); transitions due together
share one store write.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine import fsm
from engine.dispatch import LOCAL_NODE, Dispatcher, LocalDispatcher, PhaseResult
from engine.errors import (
    EventLogError,
    ExecutionError,
    LeaseExpired,
    PhaseConflict,
    PhaseTimeout,
    interruption,
)
from engine.events import EventLog
from engine.graph import ROOT, PlanGraph
from engine.leases import LeaseKeeper
from engine.model import Action, PhaseState, State, Transition
from engine.planfile import format_duration
from engine.retry import delay_after, should_retry
from engine.store.base import Store

DEFAULT_NODE = LOCAL_NODE
TIMEOUT_GRACE = 2.0


@dataclass(frozen=True)
class RunOptions:
    """Knobs of one run. `keep_going` disables fail-fast."""

    action: Action = Action.EXECUTE
    force: bool = False
    max_parallel: int = 8
    keep_going: bool = False
    agent_timeout: float = 60.0


@dataclass
class RunResult:
    """What a run did: phases finished, failed (with errors) and left blocked."""

    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stopped: str | None = None
    dropped: list[str] = field(default_factory=list)  # results another process overrode


def node_of(graph: PlanGraph, phase_id: str) -> str:
    """Where a phase runs: its own `node`, else its nearest ancestor's, else the local node."""
    spec = graph.specs[phase_id]
    if spec.node:
        return spec.node
    for anc in graph.ancestors(phase_id):
        if graph.specs[anc].node:
            return graph.specs[anc].node or DEFAULT_NODE
    return DEFAULT_NODE


class Scheduler:
    """Runs a set of target leaves of one operation until done, or until fail-fast stops it.

    The caller holds the operation's coordinator lock and keeps `lease` alive.
    """

    def __init__(
        self,
        store: Store,
        operation_id: str,
        graph: PlanGraph,
        states: dict[str, PhaseState],
        *,
        keeper: LeaseKeeper,
        state_dir: Path,
        events: EventLog,
        options: RunOptions,
        operation_data: dict | None = None,
        dispatcher: Dispatcher | None = None,
        adopted: Iterable[str] = (),
    ) -> None:
        self.store = store
        self.op = operation_id
        self.g = graph
        self.states = states
        self.keeper = keeper
        self.lease = keeper.lease
        self.state_dir = state_dir
        self.events = events
        self.opt = options
        self.operation_data = operation_data or {}
        self.backward = options.action is Action.ROLLBACK
        self.dispatcher = dispatcher or LocalDispatcher(
            self.lease, workers=options.max_parallel, operation_id=operation_id,
            state_dir=state_dir, operation_data=self.operation_data, fence=keeper.fence)
        self.results = self.dispatcher.results
        self.adopted = set(adopted)
        self.agent_waits: dict[str, float] = {}
        self.node_busy: dict[str, int] = {}
        self._exclusive: dict[str, bool] = {}
        self._nodes: dict[str, str] = {}
        self.ready: deque[str] = deque()
        self.timers: list[tuple[float, str]] = []
        self.running: dict[str, tuple[float, float | None, threading.Event]] = {}
        self.tries: dict[str, int] = {}
        self.throttle_waits: dict[str, deque[str]] = {}
        self.active_children: dict[str, set[str]] = {}
        self.result = RunResult()
        self.stopping = False

    # -- graph helpers (direction-aware) -------------------------------------------------------
    def _succ(self, node: str) -> Iterable[str]:
        return self.g.dag.pred[node] if self.backward else self.g.dag.succ[node]

    def _pred(self, node: str) -> Iterable[str]:
        return self.g.dag.succ[node] if self.backward else self.g.dag.pred[node]

    def _state(self, pid: str) -> PhaseState:
        return self.states.get(pid) or PhaseState(pid)

    def _settled(self, pid: str, targets: set[str]) -> bool:
        """Is this leaf already where the run wants it (so dependents need not wait)?"""
        st = self._state(pid).state
        if pid in targets:
            if self.backward:
                return False
            return st is State.COMPLETED and not self.opt.force
        if self.opt.force:
            return True
        if self.backward:
            return st not in fsm.ROLLBACK_BLOCKING
        return st is State.COMPLETED

    # -- set-up --------------------------------------------------------------------------------
    def _prepare(self, targets: set[str]) -> None:
        import networkx as nx

        dag = self.g.dag
        order = list(nx.topological_sort(dag))
        if self.backward:
            order.reverse()
        self.done: set[str] = set()
        self.pending: dict[str, int] = {}
        leaves = self.g.specs
        for node in order:
            waiting = sum(1 for p in self._pred(node) if p not in self.done)
            is_leaf = node in leaves and leaves[node].is_leaf
            if is_leaf:
                if self._settled(node, targets):
                    if node in targets:
                        self.result.skipped.append(node)
                    self.done.add(node)
                    continue
            elif waiting == 0:
                self.done.add(node)
                continue
            self.pending[node] = waiting
            if is_leaf and waiting == 0 and node in targets:
                self.ready.append(node)
        self.targets = targets
        # Composites limiting concurrency (parallel > 1) that each leaf passes through.
        self.throttles: dict[str, list[tuple[str, str]]] = {}
        for pid in targets:
            chain = []
            child = pid
            for anc in [*self.g.ancestors(pid), ROOT]:
                limit = self.g.root_parallel if anc == ROOT else self.g.specs[anc].parallel
                if limit > 1:
                    chain.append((anc, child))
                child = anc
            self.throttles[pid] = chain

    def _limit(self, composite: str) -> int:
        return self.g.root_parallel if composite == ROOT else self.g.specs[composite].parallel

    # -- main loop -----------------------------------------------------------------------------
    def run(self, targets: Iterable[str]) -> RunResult:
        targets = set(targets)
        self._prepare(targets)
        for pid in self.adopted:  # running on an agent already: wait for it, never restart it
            if pid in self.ready:
                self.ready.remove(pid)
            st = self._state(pid)
            self._occupy(pid)
            if self._node_exclusive(pid):
                node = self._node_of(pid)
                self.node_busy[node] = self.node_busy.get(node, 0) + 1
            self._track(st)
            adopt = getattr(self.dispatcher, "adopt", None)
            if adopt is not None:
                adopt(st)
        outbox: list[tuple[Transition | None, float | None]] = []
        try:
            while True:
                self.keeper.check()  # a lost lease: stop, record nothing more
                self._due_timers()
                outbox.extend(self._due_agents())
                starts = [] if self.stopping else self._pick_starts()
                applied = self._record(outbox, starts)
                outbox = []
                if self.events.broken is not None:
                    self._unlaunch([t for t, _ in starts if t in applied])
                    raise self.events.broken
                for t, _ in starts:
                    if t in applied:
                        self._launch(t.new)
                if not self.running and (self.stopping or (
                        not self.ready and not self.timers and not self.agent_waits)):
                    break
                outbox = self._collect()
        except KeyboardInterrupt as exc:
            self._interrupted(outbox, interruption(exc).reason)
            raise
        except LeaseExpired:
            self._abandon()
            raise
        except EventLogError as exc:
            # The log went read-only or full: stop, and record in the store how each running
            # phase ended, so nothing is left in progress that is not running.
            self._interrupted(outbox, f"interrupted: {exc.message}")
            raise
        finally:
            self.dispatcher.close()
        for _, pid in self.timers:
            self.result.failed[pid] = self._state(pid).error or "failed"
        self.result.blocked = sorted(
            p for p in self.targets
            if p not in self.done and p not in self.result.failed and not self.stopping
        )
        return self.result

    def _record(self, outbox: list[tuple[Transition | None, float | None]],
                starts: list[tuple[Transition, None]]) -> list[Transition]:
        """One store write for every transition that fell due together.

        If another process moved one of these phases first (a late agent result, say), the
        stale transitions are dropped — re-read from the store — and the rest applied.
        """
        pairs = [(t, d) for t, d in outbox if t is not None] + list(starts)
        for _ in range(3):
            if not pairs:
                return []
            try:
                records = self._apply([t for t, _ in pairs])
            except PhaseConflict:
                fresh = self.store.load_states(self.op)
                kept = []
                for t, d in pairs:
                    now = fresh.get(t.phase_id, PhaseState(t.phase_id))
                    if now.version == t.expected:
                        kept.append((t, d))
                    else:
                        self.states[t.phase_id] = now
                        if t.from_state is State.IN_PROGRESS:
                            self.result.dropped.append(t.phase_id)
                        self.events.emit("transition dropped", phase=t.phase_id,
                                         reason="the phase was changed by another process",
                                         expected=t.expected, found=now.version)
                pairs = kept
                continue
            try:
                for rec, (_, dur) in zip(records, pairs, strict=True):
                    self.events.transition(rec, duration=dur)
            except EventLogError:
                pass  # recorded in the store all the same; `run` sees `events.broken`
            return [t for t, _ in pairs]
        raise PhaseConflict(f"operation {self.op} keeps changing under this coordinator",
                            operation_id=self.op, hint="check for another coordinator")

    def _interrupted(self, outbox: list[tuple[Transition | None, float | None]],
                     reason: str) -> None:
        """Ctrl-C, SIGTERM, SIGHUP: stop every running phase's processes and record how each
        one ended (`reason` for those that failed by being stopped)."""
        self._stop(reason)
        for _, _, cancel in self.running.values():
            cancel.set()
        deadline = time.monotonic() + 5
        while self.running and time.monotonic() < deadline:
            try:
                res = self.results.get(timeout=0.2)
            except queue.Empty:
                continue
            if res.phase_id in self.running:
                if res.error is not None:
                    res.error = ExecutionError(reason, getattr(res.error, "tail", ""),
                                               retryable=False)
                outbox.append(self._finish(res))
        self._record(outbox, [])

    def _unlaunch(self, started: list[Transition]) -> None:
        """Phases recorded as started that will not be launched (the event log broke as
        their start was logged): record them failed at once, never left in progress."""
        for t in started:
            self.running.pop(t.phase_id, None)
        why = "not run: " + (self.events.broken.message if self.events.broken else "stopped")
        self._record([(fsm.transition(t.new, State.FAILED, error=why), None)
                      for t in started], [])

    def _abandon(self) -> None:
        """The lease is lost: stop every running phase and wait (briefly) for its worker to
        return, recording nothing — whoever takes over marks them interrupted."""
        self._stop("this process lost its lease")
        self.keeper.fence.fence()
        for _, _, cancel in self.running.values():
            cancel.set()
        deadline = time.monotonic() + 5
        while self.running and time.monotonic() < deadline:
            try:
                res = self.results.get(timeout=0.2)
            except queue.Empty:
                continue
            self.running.pop(res.phase_id, None)
        self.events.emit("lease lost", reason=self.keeper.reason or "the store refused it",
                         abandoned=len(self.running))

    def _apply(self, transitions: list[Transition]) -> list:
        self.keeper.check()
        records = self.store.apply(self.op, transitions, fence=self.lease.id)
        for t in transitions:
            self.states[t.phase_id] = t.new
        return records

    def _stop(self, why: str) -> None:
        if not self.stopping:
            self.stopping = True
            self.result.stopped = why

    # -- starting phases -----------------------------------------------------------------------
    def _pick_starts(self) -> list[tuple[Transition, None]]:
        starts = []
        budget = self.opt.max_parallel - len(self.running)
        deferred: list[str] = []
        while self.ready and budget > 0:
            pid = self.ready.popleft()
            blocker = self._throttled(pid)
            if blocker is not None:
                self.throttle_waits.setdefault(blocker, deque()).append(pid)
                continue
            node = self._node_of(pid)
            if self._node_exclusive(pid) and self.node_busy.get(node, 0) > 0:
                deferred.append(pid)  # retried when the node frees up
                continue
            owner = self.dispatcher.owner_for(node)
            if owner is None:
                self.agent_waits.setdefault(pid, time.monotonic())
                continue
            self.agent_waits.pop(pid, None)
            self._occupy(pid)
            starts.append((self._start_transition(pid, owner, node), None))
            if self._node_exclusive(pid):
                self.node_busy[node] = self.node_busy.get(node, 0) + 1
            budget -= 1
        self.ready.extendleft(reversed(deferred))
        return starts

    def _node_exclusive(self, pid: str) -> bool:
        """A named node runs one phase at a time unless a parallel composite pinned to that
        node says its children may overlap there. Phases without a node follow only the
        plan's parallelism."""
        cached = self._exclusive.get(pid)
        if cached is not None:
            return cached
        exclusive = any(self.g.specs[p].node for p in (pid, *self.g.ancestors(pid)))
        node = self._node_of(pid)
        for composite, _ in self.throttles.get(pid, ()):
            if composite != ROOT and self.g.specs[composite].node == node:
                exclusive = False
        self._exclusive[pid] = exclusive
        return exclusive

    def _node_of(self, pid: str) -> str:
        node = self._nodes.get(pid)
        if node is None:
            node = self._nodes[pid] = node_of(self.g, pid)
        return node

    def _throttled(self, pid: str) -> str | None:
        for composite, child in self.throttles.get(pid, ()):
            active = self.active_children.setdefault(composite, set())
            if child not in active and len(active) >= self._limit(composite):
                return composite
        return None

    def _occupy(self, pid: str) -> None:
        for composite, child in self.throttles.get(pid, ()):
            self.active_children.setdefault(composite, set()).add(child)

    def _release(self, pid: str, given_up: bool) -> None:
        """Free the throttle slots a leaf held once its whole child is done (or given up)."""
        for composite, child in self.throttles.get(pid, ()):
            if given_up or self.g.node_out(child) in self.done:
                active = self.active_children.get(composite)
                if active is not None and child in active:
                    active.discard(child)
                    self.ready.extend(self.throttle_waits.pop(composite, ()))

    def _start_transition(self, pid: str, owner: int, node: str) -> Transition:
        self.tries[pid] = self.tries.get(pid, 0) + 1
        cur = self._state(pid)
        return fsm.transition(cur, State.IN_PROGRESS, action=self.opt.action,
                              owner=owner, attempt=cur.attempt + 1, node=node)

    def _track(self, st: PhaseState) -> tuple[float | None, threading.Event]:
        spec = self.g.specs[st.phase_id]
        cancel = threading.Event()
        deadline = time.monotonic() + spec.timeout if spec.timeout else None
        self.running[st.phase_id] = (time.monotonic(), deadline, cancel)
        self.tries.setdefault(st.phase_id, 1)
        return deadline, cancel

    def _launch(self, st: PhaseState) -> None:
        deadline, cancel = self._track(st)
        self.dispatcher.launch(self.g.specs[st.phase_id], st, deadline, cancel)

    def _due_agents(self) -> list[tuple[Transition | None, float | None]]:
        """Phases waiting for their node's agent: start them once it is there; fail them after
        --agent-timeout with the command that would fix it."""
        out: list[tuple[Transition | None, float | None]] = []
        now = time.monotonic()
        for pid, since in list(self.agent_waits.items()):
            node = self._node_of(pid)
            if self.dispatcher.owner_for(node) is not None:
                del self.agent_waits[pid]
                self.ready.append(pid)
            elif now - since > self.opt.agent_timeout or self.stopping:
                del self.agent_waits[pid]
                error = (f"no agent running on node {node}: run `gravity agent run --node "
                         f"{node}` there")
                cur = self._state(pid)
                if cur.state is not State.IN_PROGRESS:
                    self._record([(self._start_transition(pid, self.lease.id, node), None)], [])
                    cur = self._state(pid)
                self.result.failed[pid] = error
                self._release(pid, given_up=True)
                if not self.opt.keep_going:
                    self._stop(f"phase {pid} failed")
                out.append((fsm.transition(cur, State.FAILED, error=error), None))
        return out

    # -- results -------------------------------------------------------------------------------
    def _next_wakeup(self) -> float:
        now = time.monotonic()
        wake = now + 0.5
        if self.timers:
            wake = min(wake, self.timers[0][0])
        for _, deadline, _ in self.running.values():
            if deadline is not None:
                wake = min(wake, deadline + TIMEOUT_GRACE)
        return max(0.0, wake - now)

    def _collect(self) -> list[tuple[Transition | None, float | None]]:
        out: list[tuple[Transition | None, float | None]] = []
        try:
            first = self.results.get(timeout=self._next_wakeup()) if (
                self.running or self.timers or self.agent_waits) else None
        except queue.Empty:
            first = None
        batch = [first] if first else []
        while True:
            try:
                batch.append(self.results.get_nowait())
            except queue.Empty:
                break
        for res in batch:
            if res.phase_id not in self.running:
                continue  # abandoned after a timeout: its late result is ignored
            out.append(self._finish(res))
        out.extend(self._overdue())
        return out

    def _overdue(self) -> list[tuple[Transition | None, float | None]]:
        """Phases whose runner is gone (a dead agent) or ignored the deadline: fail them."""
        now = time.monotonic()
        out = []
        running_states = {pid: self._state(pid) for pid in self.running}
        for pid, who in self.dispatcher.lost(running_states).items():
            started = self.running[pid][0]
            err = ExecutionError(f"interrupted: {who} lost")
            out.append(self._finish(PhaseResult(pid, self._state(pid).version, err, None,
                                                now - started)))
        for pid, (started, deadline, cancel) in list(self.running.items()):
            if deadline is not None and now > deadline + TIMEOUT_GRACE:
                cancel.set()
                timeout = self.g.specs[pid].timeout or 0
                err = PhaseTimeout(f"timed out after {format_duration(timeout)}")
                out.append(self._finish(PhaseResult(pid, self._state(pid).version, err, None,
                                                    now - started)))
        return out

    def _finish(self, res: PhaseResult) -> tuple[Transition | None, float | None]:
        """Record how an attempt ended (unless its runner did) and decide what comes next."""
        pid = res.phase_id
        self.running.pop(pid, None)
        node = self._node_of(pid)
        if self._node_exclusive(pid) and self.node_busy.get(node, 0) > 0:
            self.node_busy[node] -= 1
        cur = self._state(pid)
        error, note = res.error, res.note
        if res.recorded is not None:
            self.states[pid] = res.recorded
            if res.recorded.state is State.FAILED:
                error = ExecutionError(res.recorded.error or "failed")
        elif cur.state is not State.IN_PROGRESS or cur.version != res.version:
            return None, None  # someone else already moved it on (fenced)
        if error is None:
            self._mark_done(pid)
            self.result.completed.append(pid)
            self._release(pid, given_up=False)
            if res.recorded is not None:
                return None, res.duration
            to = State.ROLLED_BACK if self.backward else State.COMPLETED
            return fsm.transition(cur, to, note=note), res.duration
        message = error.message
        tail = getattr(error, "tail", "")
        if self.backward and res.recorded is None:
            message = f"rollback failed: {message}"
        error_text = f"{message}\n{tail}".strip() if tail else message
        policy = self.g.specs[pid].retry
        retryable = getattr(error, "retryable", True)
        retry_note = None
        if retryable and not self.stopping and should_retry(policy, self.tries.get(pid, 1)):
            delay = delay_after(policy, self.tries.get(pid, 1))
            heapq.heappush(self.timers, (time.monotonic() + delay, pid))
            retry_note = (f"attempt {cur.attempt} of {policy.attempts} failed; retrying in "
                          f"{format_duration(delay)}")
        else:
            self.result.failed[pid] = error_text
            self._release(pid, given_up=True)
            if not self.opt.keep_going:
                self._stop(f"phase {pid} failed")
        if res.recorded is not None:
            return None, res.duration
        return fsm.transition(cur, State.FAILED, error=error_text, note=retry_note), res.duration

    def _due_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, pid = heapq.heappop(self.timers)
            if self.stopping:
                self.result.failed[pid] = self._state(pid).error or "failed"
                continue
            self.ready.append(pid)

    def _mark_done(self, pid: str) -> None:
        """Mark a node done and walk only its dependents; newly unblocked leaves become ready."""
        stack = [pid]
        leaves = self.g.specs
        while stack:
            node = stack.pop()
            self.done.add(node)
            for nxt in self._succ(node):
                if nxt in self.done:
                    continue
                self.pending[nxt] -= 1
                if self.pending[nxt] == 0:
                    if nxt in leaves and leaves[nxt].is_leaf:
                        if nxt in self.targets:
                            self.ready.append(nxt)
                    else:
                        stack.append(nxt)


