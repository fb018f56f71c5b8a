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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from engine import fsm
from engine.errors import EngineError, ExecutionError, PhaseTimeout
from engine.events import EventLog
from engine.executors import ExecContext, registry
from engine.graph import ROOT, PlanGraph
from engine.model import Action, Lease, PhaseState, State, Transition
from engine.planfile import format_duration
from engine.retry import delay_after, should_retry
from engine.store.base import Store

DEFAULT_NODE = "local"
TIMEOUT_GRACE = 2.0


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

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked and self.stopped is None


@dataclass
class _Result:
    phase_id: str
    version: int
    error: EngineError | None
    note: str | None
    duration: float


def node_of(graph: PlanGraph, phase_id: str) -> str:
    """Where a phase runs: its own `node`, else its nearest ancestor's, else the local node."""
    spec = graph.specs[phase_id]
    if spec.node:
        return spec.node
    for anc in graph.ancestors(phase_id):
        if graph.specs[anc].node:
            return graph.specs[anc].node or DEFAULT_NODE
    return DEFAULT_NODE


def phase_log_path(state_dir: Path, operation_id: str, phase_id: str) -> Path:
    """The file holding a phase's output (all attempts appended)."""
    return state_dir / "logs" / operation_id / (phase_id.strip("/") + ".log")


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
        lease: Lease,
        state_dir: Path,
        events: EventLog,
        options: RunOptions,
        operation_data: dict | None = None,
        lease_lost: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.op = operation_id
        self.g = graph
        self.states = states
        self.lease = lease
        self.state_dir = state_dir
        self.events = events
        self.opt = options
        self.operation_data = operation_data or {}
        self.lease_lost = lease_lost or threading.Event()
        self.backward = options.action is Action.ROLLBACK
        self.results: queue.Queue[_Result] = queue.Queue()
        self.ready: deque[str] = deque()
        self.timers: list[tuple[float, str]] = []
        self.running: dict[str, tuple[float, float | None, threading.Event]] = {}
        self.tries: dict[str, int] = {}
        self.throttle_waits: dict[str, deque[str]] = {}
        self.active_children: dict[str, set[str]] = {}
        self.result = RunResult()
        self.stopping = False
        self.cancel_all = threading.Event()

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
        workers = max(1, self.opt.max_parallel)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="phase") as pool:
            outbox: list[tuple[Transition, float | None]] = []
            try:
                while True:
                    if self.lease_lost.is_set():
                        self._stop("this process lost its lease; another coordinator may "
                                   "take over")
                    self._due_timers()
                    starts = [] if self.stopping else self._pick_starts()
                    self._record(outbox, starts)
                    outbox = []
                    for t, _ in starts:
                        self._launch(pool, t.new)
                    if not self.running and (
                        self.stopping or (not self.ready and not self.timers)
                    ):
                        break
                    outbox = self._collect()
            except KeyboardInterrupt:
                self._interrupted(outbox)
                raise
        for _, pid in self.timers:
            self.result.failed[pid] = self._state(pid).error or "failed"
        self.result.blocked = sorted(
            p for p in self.targets
            if p not in self.done and p not in self.result.failed and not self.stopping
        )
        return self.result

    def _record(self, outbox: list[tuple[Transition, float | None]],
                starts: list[tuple[Transition, None]]) -> None:
        """One store write for every transition that fell due together."""
        transitions = [t for t, _ in outbox] + [t for t, _ in starts]
        if not transitions:
            return
        records = self._apply(transitions)
        durations = [d for _, d in outbox] + [None] * len(starts)
        for rec, dur in zip(records, durations, strict=True):
            self.events.transition(rec, duration=dur)

    def _interrupted(self, outbox: list[tuple[Transition, float | None]]) -> None:
        """Ctrl-C: stop every running phase's processes and record how each one ended."""
        self._stop("interrupted by the operator")
        for _, _, cancel in self.running.values():
            cancel.set()
        deadline = time.monotonic() + 5
        while self.running and time.monotonic() < deadline:
            try:
                res = self.results.get(timeout=0.2)
            except queue.Empty:
                continue
            if res.phase_id in self.running:
                outbox.append(self._finish(res))
        self._record(outbox, [])

    def _apply(self, transitions: list[Transition]) -> list:
        records = self.store.apply(self.op, transitions)
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
        while self.ready and budget > 0:
            pid = self.ready.popleft()
            blocker = self._throttled(pid)
            if blocker is not None:
                self.throttle_waits.setdefault(blocker, deque()).append(pid)
                continue
            self._occupy(pid)
            starts.append((self._start_transition(pid), None))
            budget -= 1
        return starts

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

    def _start_transition(self, pid: str) -> Transition:
        self.tries[pid] = self.tries.get(pid, 0) + 1
        cur = self._state(pid)
        return fsm.transition(cur, State.IN_PROGRESS, action=self.opt.action,
                              owner=self.lease.id, attempt=cur.attempt + 1,
                              node=node_of(self.g, pid))

    def _launch(self, pool: ThreadPoolExecutor, st: PhaseState) -> None:
        pid = st.phase_id
        spec = self.g.specs[pid]
        cancel = threading.Event()
        timeout = spec.timeout
        deadline = time.monotonic() + timeout if timeout else None
        self.running[pid] = (time.monotonic(), deadline, cancel)
        node = st.node or DEFAULT_NODE
        workdir = self.state_dir / "nodes" / node
        ctx = ExecContext(
            operation_id=self.op, phase_id=pid, node=node, attempt=st.attempt,
            data=spec.data, workdir=workdir, state_dir=self.state_dir,
            log_path=phase_log_path(self.state_dir, self.op, pid), deadline=deadline,
            timeout=timeout, cancel=cancel, operation_data=self.operation_data,
        )
        pool.submit(self._work, ctx, spec.executor or "noop", st.version)

    def _work(self, ctx: ExecContext, executor_name: str, version: int) -> None:
        started = time.monotonic()
        error: EngineError | None = None
        note = None
        try:
            ctx.workdir.mkdir(parents=True, exist_ok=True)
            executor = registry.get(executor_name)
            if self.backward:
                note = executor.rollback(ctx)
            else:
                executor.precheck(ctx)
                note = executor.execute(ctx)
        except EngineError as exc:
            error = exc
        except Exception as exc:
            error = ExecutionError(f"executor {executor_name} crashed: "
                                   f"{type(exc).__name__}: {exc}", retryable=False)
        self.results.put(_Result(ctx.phase_id, version, error, note,
                                 time.monotonic() - started))

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

    def _collect(self) -> list[tuple[Transition, float | None]]:
        out: list[tuple[Transition, float | None]] = []
        try:
            first = self.results.get(timeout=self._next_wakeup()) if (
                self.running or self.timers) else None
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

    def _overdue(self) -> list[tuple[Transition, float | None]]:
        """Phases whose executor ignored the deadline: fail them and abandon the thread."""
        now = time.monotonic()
        out = []
        for pid, (started, deadline, cancel) in list(self.running.items()):
            if deadline is not None and now > deadline + TIMEOUT_GRACE:
                cancel.set()
                timeout = self.g.specs[pid].timeout or 0
                err = PhaseTimeout(f"timed out after {format_duration(timeout)}")
                out.append(self._finish(_Result(pid, self._state(pid).version, err, None,
                                                now - started)))
        return out

    def _finish(self, res: _Result) -> tuple[Transition, float | None]:
        pid = res.phase_id
        self.running.pop(pid, None)
        cur = self._state(pid)
        if res.error is None:
            to = State.ROLLED_BACK if self.backward else State.COMPLETED
            t = fsm.transition(cur, to, note=res.note)
            self._mark_done(pid)
            self.result.completed.append(pid)
            self._release(pid, given_up=False)
            return t, res.duration
        message = res.error.message
        tail = getattr(res.error, "tail", "")
        if self.backward:
            message = f"rollback failed: {message}"
        error_text = f"{message}\n{tail}".strip() if tail else message
        policy = self.g.specs[pid].retry
        retryable = getattr(res.error, "retryable", True)
        if retryable and not self.stopping and should_retry(policy, self.tries.get(pid, 1)):
            delay = delay_after(policy, self.tries.get(pid, 1))
            heapq.heappush(self.timers, (time.monotonic() + delay, pid))
            note = (f"attempt {cur.attempt} of {policy.attempts} failed; retrying in "
                    f"{format_duration(delay)}")
            return fsm.transition(cur, State.FAILED, error=error_text, note=note), res.duration
        self.result.failed[pid] = error_text
        self._release(pid, given_up=True)
        if not self.opt.keep_going:
            self._stop(f"phase {pid} failed")
        return fsm.transition(cur, State.FAILED, error=error_text), res.duration

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


def cancel_hook(scheduler: Scheduler) -> Callable[[], None]:
    """A callable that stops a run from another thread (signal handlers, tests)."""

    def stop() -> None:
        scheduler._stop("stopped on request")
        for _, _, cancel in scheduler.running.values():
            cancel.set()

    return stop
