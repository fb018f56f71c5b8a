"""Where a phase runs: in this process (a worker thread) or on its node's agent via the store.
The scheduler asks a Dispatcher who owns a phase, launches it, and gets results on one queue.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EngineError, ExecutionError
from engine.executors import ExecContext, registry
from engine.leases import lease_grace
from engine.model import Action, ChangeRecord, Lease, PhaseSpec, PhaseState, State
from engine.store.base import Store

LOCAL_NODE = "local"
STALE_RESULT = 10.0  # seconds an agent-run phase may go without its result being read back
AGENT_KEY = "agents/"


def agent_key(node: str) -> str:
    return f"{AGENT_KEY}{node}"


def stop_key(node: str) -> str:
    return f"agent-stop/{node}"


def phase_log_path(state_dir: Path, operation_id: str, phase_id: str) -> Path:
    """The file holding a phase's output (all attempts appended)."""
    return state_dir / "logs" / operation_id / (phase_id.strip("/") + ".log")


@dataclass
class PhaseResult:
    """How one attempt ended. `recorded` is set when the runner already stored the transition
    (an agent reports its own result); otherwise the scheduler records it."""

    phase_id: str
    version: int
    error: EngineError | None = None
    note: str | None = None
    duration: float = 0.0
    recorded: PhaseState | None = None


def run_phase(spec: PhaseSpec, st: PhaseState, *, operation_id: str, state_dir: Path,
              operation_data: Mapping[str, Any], cancel: threading.Event,
              deadline: float | None, output: Any = None, fence: Any = None) -> PhaseResult:
    """Run one attempt of a leaf's executor (execute or rollback, per the state's action)."""
    node = st.node or LOCAL_NODE
    ctx = ExecContext(
        operation_id=operation_id, phase_id=spec.id, node=node, attempt=st.attempt,
        data=spec.data, workdir=state_dir / "nodes" / node, state_dir=state_dir,
        log_path=phase_log_path(state_dir, operation_id, spec.id), deadline=deadline,
        timeout=spec.timeout, cancel=cancel, operation_data=operation_data, fence=fence,
        **({"output": output} if output is not None else {}),
    )
    started = time.monotonic()
    error: EngineError | None = None
    note = None
    name = spec.executor or "noop"
    try:
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        executor = registry.get(name)
        if st.action is Action.ROLLBACK:
            note = executor.rollback(ctx)
        else:
            executor.precheck(ctx)
            note = executor.execute(ctx)
    except EngineError as exc:
        error = exc
    except Exception as exc:
        error = ExecutionError(f"executor {name} crashed: {type(exc).__name__}: {exc}",
                               retryable=False)
    return PhaseResult(spec.id, st.version, error, note, time.monotonic() - started)


class Dispatcher(ABC):
    """Chooses the owner of a phase attempt and gets its result onto `results`."""

    def __init__(self) -> None:
        self.results: queue.Queue[PhaseResult] = queue.Queue()

    @abstractmethod
    def owner_for(self, node: str) -> int | None:
        """The lease that will own an attempt on `node`; None while no runner is there."""

    @abstractmethod
    def launch(self, spec: PhaseSpec, st: PhaseState, deadline: float | None,
               cancel: threading.Event) -> None:
        """Start the attempt whose in-progress state `st` was just recorded."""

    def lost(self, running: Mapping[str, PhaseState]) -> dict[str, str]:
        """Running phases whose runner is gone: phase -> who was lost."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop background work."""


class LocalDispatcher(Dispatcher):
    """Runs every phase in this process on a pool of worker threads."""

    def __init__(self, lease: Lease, *, workers: int, operation_id: str, state_dir: Path,
                 operation_data: Mapping[str, Any], fence: Any = None) -> None:
        super().__init__()
        self.lease, self.fence = lease, fence
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="phase")
        self.op, self.state_dir, self.data = operation_id, state_dir, operation_data

    def owner_for(self, node: str) -> int | None:
        return self.lease.id

    def launch(self, spec: PhaseSpec, st: PhaseState, deadline: float | None,
               cancel: threading.Event) -> None:
        def work() -> None:
            self.results.put(run_phase(spec, st, operation_id=self.op,
                                       state_dir=self.state_dir, operation_data=self.data,
                                       cancel=cancel, deadline=deadline,
                                       fence=self.fence))

        self.pool.submit(work)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class AgentDispatcher(LocalDispatcher):
    """Hands each node's phases to the agent running there (`gravity agent run --node N`).

    Dispatch is the in-progress transition itself: its owner is the agent's lease, which
    the agent watches for. The agent records the result; this dispatcher watches the
    changelog for it. Phases on the coordinator's own (local) node run here.
    """

    def __init__(self, store: Store, lease: Lease, *, workers: int, operation_id: str,
                 state_dir: Path, operation_data: Mapping[str, Any], after: int,
                 fence: Any = None) -> None:
        super().__init__(lease, workers=workers, operation_id=operation_id,
                         state_dir=state_dir, operation_data=operation_data, fence=fence)
        self.store = store
        self.remote: dict[str, int] = {}  # phase -> version it was dispatched at
        self.since: dict[str, float] = {}  # phase -> when we started waiting for it
        self.unclaimed: dict[str, ChangeRecord] = {}  # results seen before `_expect`
        self._lost_checked = 0.0
        self._gone_since: dict[int, float] = {}  # agent lease -> when first seen gone
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._after = after
        self._agents: dict[str, dict[str, Any]] = {}
        self._agents_read = 0.0
        # Open the changelog watch now, before anything is dispatched. A watch opened later
        # starts from history, and etcd delivers such an "unsynced" watch's first events on
        # its 100 ms sync loop: the first results would wait for it. What this returns stays
        # in the store's feed for the watcher's first call.
        store.wait_changes(operation_id, after, timeout=0)
        self._watcher = threading.Thread(target=self._watch, name="dispatch-watch",
                                         daemon=True)
        self._watcher.start()

    def agents(self, max_age: float = 0.5) -> dict[str, dict[str, Any]]:
        if time.monotonic() - self._agents_read > max_age:
            found = self.store.kv_list(AGENT_KEY)
            self._agents = {k[len(AGENT_KEY):]: v for k, v in found.items()}
            self._agents_read = time.monotonic()
        return self._agents

    def owner_for(self, node: str) -> int | None:
        if node == LOCAL_NODE:
            return self.lease.id
        info = self.agents().get(node)
        return int(info["lease"]) if info else None

    def launch(self, spec: PhaseSpec, st: PhaseState, deadline: float | None,
               cancel: threading.Event) -> None:
        if st.owner == self.lease.id:
            super().launch(spec, st, deadline, cancel)
            return
        self._expect(st)

    def adopt(self, st: PhaseState) -> None:
        """Wait for a phase an agent was already running when this coordinator started."""
        self._expect(st)

    def _expect(self, st: PhaseState) -> None:
        """Wait for the result of the attempt at `st.version` — which a fast agent may have
        recorded (and the watcher seen) before this call: then it is delivered at once."""
        with self._lock:
            early = self.unclaimed.pop(st.phase_id, None)
            if early is not None and early.version == st.version + 1:
                self.results.put(PhaseResult(st.phase_id, st.version,
                                             recorded=early.state_after()))
                return
            self.remote[st.phase_id] = st.version
            self.since[st.phase_id] = time.monotonic()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                records = self.store.wait_changes(self.op, self._after, timeout=1.0)
            except EngineError:
                time.sleep(0.5)
                continue
            for rec in records:
                self._after = max(self._after, rec.seq)
                if rec.to_state is State.IN_PROGRESS:
                    continue
                with self._lock:
                    dispatched = self.remote.get(rec.phase_id)
                    if dispatched is None:
                        # Not registered yet (or run here): keep it for `_expect`.
                        self.unclaimed[rec.phase_id] = rec
                        continue
                    if rec.version != dispatched + 1:
                        continue
                    del self.remote[rec.phase_id]
                    self.since.pop(rec.phase_id, None)
                self.results.put(PhaseResult(rec.phase_id, dispatched,
                                             recorded=rec.state_after()))

    def lost(self, running: Mapping[str, PhaseState]) -> dict[str, str]:
        """Agent-run phases whose agent's lease is gone (checked at most every TTL/3), and a
        safety net: a result the watcher never delivered is read back from the store."""
        now = time.monotonic()
        if now - self._lost_checked < max(0.2, self.lease.ttl / 3):
            return {}
        self._lost_checked = now
        out = {}
        owners: dict[int, bool] = {}
        for pid, st in running.items():
            if st.owner is None or st.owner == self.lease.id:
                continue
            if st.owner not in owners:
                owners[st.owner] = self.store.get_lease(st.owner) is not None
            if not owners[st.owner]:
                # Its guard stopped the phase before the lease ran out; the grace covers
                # the kill itself. Only then may the phase run again elsewhere.
                if now - self._gone_since.setdefault(st.owner, now) < lease_grace():
                    continue
                out[pid] = f"agent on {st.node}"
                with self._lock:
                    self.remote.pop(pid, None)
                    self.since.pop(pid, None)
        with self._lock:
            stale = [(p, v) for p, v in self.remote.items()
                     if now - self.since.get(p, now) > STALE_RESULT and p not in out]
        for pid, version in stale:
            current = self.store.get_state(self.op, pid)
            with self._lock:
                if self.remote.get(pid) != version:
                    continue
                self.since[pid] = now
                if current.version == version + 1 and current.state is not State.IN_PROGRESS:
                    del self.remote[pid]
                    del self.since[pid]
                    self.results.put(PhaseResult(pid, version, recorded=current))
        return out

    def close(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + 3
        while self._watcher.is_alive() and time.monotonic() < deadline:
            # Its wait returns now, not at its timeout; again, in case it was not yet waiting.
            self.store.wake(self.op)
            self._watcher.join(timeout=0.01)
        super().close()


def dispatch_mode(store_url: str) -> str:
    """`agents` on etcd, `local` on the embedded store; env GRAVITY_DISPATCH overrides."""
    env = os.environ.get("GRAVITY_DISPATCH")
    if env in ("agents", "local"):
        return env
    return "agents" if store_url.startswith(("etcd://", "etcds://")) else "local"
