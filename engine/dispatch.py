"""Where a phase runs: in this process (a worker thread) or on its node's agent via the store.
The scheduler asks a Dispatcher who owns a phase, launches it, and gets results on one queue;
`make_dispatcher` is the one place that chooses which.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine import agent_protocol as proto
from engine.blobs import BlobCache
from engine.errors import EngineError, PhaseConflict
from engine.executors.content import CachedContent, Facts
from engine.executors.fence import ChildFence
from engine.executors.runtime import PhaseResult, run_phase
from engine.leases import lease_grace
from engine.model import LOCAL_NODE, ChangeRecord, Lease, PhaseSpec, PhaseState, State
from engine.store.base import Store

STALE_RESULT = 10.0  # seconds an agent-run phase may go without its result being read back


class Dispatcher(ABC):
    """Chooses the owner of a phase attempt and gets its result onto `results`."""

    def __init__(self) -> None:
        self.results: queue.Queue[PhaseResult] = queue.Queue()

    @abstractmethod
    def owner_for(self, node: str) -> int | None:
        """The lease that will own an attempt on `node`; None while no runner is there."""

    def waited_too_long(self, node: str, waited: float) -> bool:
        """A phase has waited `waited` seconds for a runner on `node`: give up on it?"""
        return True

    def no_runner(self, node: str) -> str:
        """Why a phase waiting for a runner on `node` failed, with the command to fix it."""
        return f"nothing can run phases on node {node}"

    @abstractmethod
    def launch(self, spec: PhaseSpec, st: PhaseState, deadline: float | None,
               cancel: threading.Event) -> None:
        """Start the attempt whose in-progress state `st` was just recorded."""

    def adopt(self, st: PhaseState) -> None:
        """Wait for the result of an attempt another runner already has in progress."""
        raise PhaseConflict(f"phase {st.phase_id} is run by lease {st.owner}; this "
                            "dispatcher cannot wait for it", phase_id=st.phase_id)

    def lost(self, running: Mapping[str, PhaseState]) -> dict[str, str]:
        """Running phases whose runner is gone: phase -> who was lost."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop background work."""


class LocalDispatcher(Dispatcher):
    """Runs every phase in this process on a pool of worker threads."""

    def __init__(self, store: Store, lease: Lease, *, workers: int, operation_id: str,
                 state_dir: Path, operation_data: Mapping[str, Any],
                 fence: ChildFence | None = None) -> None:
        super().__init__()
        self.store, self.lease, self.fence = store, lease, fence
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="phase")
        self.op_id, self.state_dir, self.data = operation_id, state_dir, operation_data
        # This host published the image: its blobs are in this state dir's cache.
        self.content = CachedContent(BlobCache(state_dir))

    def owner_for(self, node: str) -> int | None:
        return self.lease.id

    def launch(self, spec: PhaseSpec, st: PhaseState, deadline: float | None,
               cancel: threading.Event) -> None:
        def work() -> None:
            self.results.put(run_phase(spec, st, operation_id=self.op_id,
                                       state_dir=self.state_dir, operation_data=self.data,
                                       cancel=cancel, deadline=deadline, fence=self.fence,
                                       content=self.content,
                                       facts=Facts(self.store, st.node or LOCAL_NODE)))

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
                 agent_timeout: float, fence: ChildFence | None = None) -> None:
        super().__init__(store, lease, workers=workers, operation_id=operation_id,
                         state_dir=state_dir, operation_data=operation_data, fence=fence)
        self.agent_timeout = agent_timeout
        self.remote: dict[str, int] = {}  # phase -> version it was dispatched at
        self.since: dict[str, float] = {}  # phase -> when we started waiting for it
        self.unclaimed: dict[str, ChangeRecord] = {}  # results seen before `_expect`
        self._lost_checked = 0.0
        self._gone_since: dict[int, float] = {}  # agent lease -> when first seen gone
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._after = after
        self._agents: dict[str, proto.AgentRecord] = {}
        self._agents_read = 0.0
        # Open the changelog watch now, before anything is dispatched. A watch opened later
        # starts from history, and etcd delivers such an "unsynced" watch's first events on
        # its 100 ms sync loop: the first results would wait for it. What this returns stays
        # in the store's feed for the watcher's first call.
        store.wait_changes(operation_id, after, timeout=0)
        self._watcher = threading.Thread(target=self._watch, name="dispatch-watch",
                                         daemon=True)
        self._watcher.start()

    def agents(self, max_age: float = 0.5) -> dict[str, proto.AgentRecord]:
        if time.monotonic() - self._agents_read > max_age:
            self._agents = proto.agents(self.store)
            self._agents_read = time.monotonic()
        return self._agents

    def owner_for(self, node: str) -> int | None:
        if node == LOCAL_NODE:
            return self.lease.id
        record = self.agents().get(node)
        return record.lease if record else None

    def waited_too_long(self, node: str, waited: float) -> bool:
        return waited > self.agent_timeout

    def no_runner(self, node: str) -> str:
        return f"no agent running on node {node}: run `gravity agent run --node {node}` there"

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
                records = self.store.wait_changes(self.op_id, self._after, timeout=1.0)
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
        # An agent's record lives exactly as long as its lease: a lease named by a record
        # (read at most 0.5 s ago) is alive without asking the store about each one — with
        # 32 agents that was 32 lease reads in a row on the scheduler's loop. Only a lease
        # no record names is looked up.
        owners: dict[int, bool] = {r.lease: True for r in self.agents().values()}
        for phase_id, st in running.items():
            if st.owner is None or st.owner == self.lease.id:
                continue
            if st.owner not in owners:
                owners[st.owner] = self.store.get_lease(st.owner) is not None
            if not owners[st.owner]:
                # Its guard stopped the phase before the lease ran out; the grace covers
                # the kill itself. Only then may the phase run again elsewhere.
                if now - self._gone_since.setdefault(st.owner, now) < lease_grace():
                    continue
                out[phase_id] = f"agent on {st.node}"
                with self._lock:
                    self.remote.pop(phase_id, None)
                    self.since.pop(phase_id, None)
        with self._lock:
            stale = [(p, v) for p, v in self.remote.items()
                     if now - self.since.get(p, now) > STALE_RESULT and p not in out]
        for phase_id, version in stale:
            current = self.store.get_state(self.op_id, phase_id)
            with self._lock:
                if self.remote.get(phase_id) != version:
                    continue
                self.since[phase_id] = now
                if current.version == version + 1 and current.state is not State.IN_PROGRESS:
                    del self.remote[phase_id]
                    del self.since[phase_id]
                    self.results.put(PhaseResult(phase_id, version, recorded=current))
        return out

    def close(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + 3
        while self._watcher.is_alive() and time.monotonic() < deadline:
            # Its wait returns now, not at its timeout; again, in case it was not yet waiting.
            self.store.wake(self.op_id)
            self._watcher.join(timeout=0.01)
        super().close()


def dispatch_mode(store: Store) -> str:
    """`agents` on a store other hosts share (etcd), `local` on one they cannot reach (the
    embedded file); env GRAVITY_DISPATCH overrides."""
    env = os.environ.get("GRAVITY_DISPATCH")
    if env in ("agents", "local"):
        return env
    return "agents" if store.capabilities.shared else "local"


def make_dispatcher(mode: str, store: Store, lease: Lease, *, workers: int, operation_id: str,
                    state_dir: Path, operation_data: Mapping[str, Any], agent_timeout: float,
                    fence: ChildFence | None) -> Dispatcher:
    """The dispatcher of one run: phases in this process (`local`), or on each node's agent
    (`agents`; phases on the local node still run here)."""
    if mode == "agents":
        return AgentDispatcher(store, lease, workers=workers, operation_id=operation_id,
                               state_dir=state_dir, operation_data=operation_data,
                               after=store.last_seq(operation_id),
                               agent_timeout=agent_timeout, fence=fence)
    return LocalDispatcher(store, lease, workers=workers, operation_id=operation_id,
                           state_dir=state_dir, operation_data=operation_data, fence=fence)
