"""Which target leaves may start now — pure bookkeeping, no threads, no store, no clock.
Dependency counts over the DAG (reversed for a rollback), composite parallelism, one phase at a
time per named node; the scheduler asks it for starts and tells it how each attempt ended.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping

from engine import fsm
from engine.graph import ROOT, PlanGraph
from engine.model import PhaseState, State


class Planner:
    """The ready set of one run over `targets`.

    A leaf becomes ready when every node before it in the (direction-aware) DAG is done.
    Leaves that are already where the run wants them (fsm.settled) are done from the start;
    the targeted ones among them are reported in `skipped`.
    """

    def __init__(self, graph: PlanGraph, states: Mapping[str, PhaseState],
                 targets: Iterable[str], *, backward: bool, force: bool) -> None:
        self.g = graph
        self.backward = backward
        self.targets = set(targets)
        self.ready: deque[str] = deque()
        self.done: set[str] = set()
        self.pending: dict[str, int] = {}
        self.skipped: list[str] = []
        self.node_busy: dict[str, int] = {}
        self.active_children: dict[str, set[str]] = {}
        self.throttle_waits: dict[str, deque[str]] = {}
        self._exclusive: dict[str, bool] = {}
        self._prepare(states, force)

    # -- direction -------------------------------------------------------------------------
    def _succ(self, node: str) -> Iterable[str]:
        return self.g.pred[node] if self.backward else self.g.succ[node]

    def _pred(self, node: str) -> Iterable[str]:
        return self.g.succ[node] if self.backward else self.g.pred[node]

    def _prepare(self, states: Mapping[str, PhaseState], force: bool) -> None:
        order = self.g.topological_order()
        if self.backward:
            order.reverse()
        specs = self.g.specs
        for node in order:
            waiting = sum(1 for p in self._pred(node) if p not in self.done)
            is_leaf = node in specs and specs[node].is_leaf
            if is_leaf:
                st = states.get(node)
                state = st.state if st is not None else State.UNSTARTED
                if fsm.settled(state, targeted=node in self.targets, backward=self.backward,
                               force=force):
                    if node in self.targets:
                        self.skipped.append(node)
                    self.done.add(node)
                    continue
            elif waiting == 0:
                self.done.add(node)
                continue
            self.pending[node] = waiting
            if is_leaf and waiting == 0 and node in self.targets:
                self.ready.append(node)
        # Composites limiting concurrency (parallel > 1) that each leaf passes through, with
        # the child of each composite on the way down to the leaf.
        self.throttles: dict[str, list[tuple[str, str]]] = {}
        for phase_id in self.targets:
            chain = []
            child = phase_id
            for anc in [*self.g.ancestors(phase_id), ROOT]:
                if self._limit(anc) > 1:
                    chain.append((anc, child))
                child = anc
            self.throttles[phase_id] = chain

    def _limit(self, composite: str) -> int:
        return self.g.root_parallel if composite == ROOT else self.g.specs[composite].parallel

    # -- starting ----------------------------------------------------------------------------
    def pick(self, budget: int, runner: Callable[[str], int | None],
             park: Callable[[str], None]) -> list[tuple[str, int]]:
        """Up to `budget` ready leaves that may start now, with the runner (`runner(node)`,
        a lease ID) of each; each is now counted as running.

        A leaf held back by a composite's limit waits for a slot there; one whose node is
        busy is retried first next time; one whose node has no runner is handed to `park`.
        """
        starts: list[tuple[str, int]] = []
        deferred: list[str] = []
        while self.ready and len(starts) < budget:
            phase_id = self.ready.popleft()
            blocker = self._throttled(phase_id)
            if blocker is not None:
                self.throttle_waits.setdefault(blocker, deque()).append(phase_id)
                continue
            node = self.g.node_of(phase_id)
            if self.exclusive(phase_id) and self.node_busy.get(node, 0) > 0:
                deferred.append(phase_id)
                continue
            owner = runner(node)
            if owner is None:
                park(phase_id)
                continue
            self.occupy(phase_id)
            starts.append((phase_id, owner))
        self.ready.extendleft(reversed(deferred))
        return starts

    def occupy(self, phase_id: str) -> None:
        """Count `phase_id` as running: its composites' slots and, if exclusive, its node."""
        for composite, child in self.throttles.get(phase_id, ()):
            self.active_children.setdefault(composite, set()).add(child)
        if self.exclusive(phase_id):
            node = self.g.node_of(phase_id)
            self.node_busy[node] = self.node_busy.get(node, 0) + 1

    def exclusive(self, phase_id: str) -> bool:
        """A named node runs one phase at a time unless a parallel composite pinned to that
        node says its children may overlap there. Phases without a node follow only the
        plan's parallelism."""
        cached = self._exclusive.get(phase_id)
        if cached is not None:
            return cached
        exclusive = any(self.g.specs[p].node for p in (phase_id, *self.g.ancestors(phase_id)))
        node = self.g.node_of(phase_id)
        for composite, _ in self.throttles.get(phase_id, ()):
            if composite != ROOT and self.g.specs[composite].node == node:
                exclusive = False
        self._exclusive[phase_id] = exclusive
        return exclusive

    def _throttled(self, phase_id: str) -> str | None:
        for composite, child in self.throttles.get(phase_id, ()):
            active = self.active_children.setdefault(composite, set())
            if child not in active and len(active) >= self._limit(composite):
                return composite
        return None

    # -- how attempts ended ------------------------------------------------------------------
    def stopped(self, phase_id: str) -> None:
        """An attempt of `phase_id` ended (any way): its node is free again."""
        node = self.g.node_of(phase_id)
        if self.exclusive(phase_id) and self.node_busy.get(node, 0) > 0:
            self.node_busy[node] -= 1

    def again(self, phase_id: str) -> None:
        """`phase_id` may be tried again now (its retry is due, or its node's runner appeared)."""
        self.ready.append(phase_id)

    def completed(self, phase_id: str) -> None:
        """`phase_id` is where the run wants it: walk only its dependents; newly unblocked target
        leaves become ready; composite slots it held are freed once its child is done."""
        stack = [phase_id]
        specs = self.g.specs
        while stack:
            node = stack.pop()
            self.done.add(node)
            for nxt in self._succ(node):
                if nxt in self.done:
                    continue
                self.pending[nxt] -= 1
                if self.pending[nxt] == 0:
                    if nxt in specs and specs[nxt].is_leaf:
                        if nxt in self.targets:
                            self.ready.append(nxt)
                    else:
                        stack.append(nxt)
        self._release(phase_id, given_up=False)

    def given_up(self, phase_id: str) -> None:
        """`phase_id` failed for good: the composite slots it held are freed."""
        self._release(phase_id, given_up=True)

    def _release(self, phase_id: str, given_up: bool) -> None:
        for composite, child in self.throttles.get(phase_id, ()):
            if given_up or self.g.node_out(child) in self.done:
                active = self.active_children.get(composite)
                if active is not None and child in active:
                    active.discard(child)
                    self.ready.extend(self.throttle_waits.pop(composite, ()))

    def adopt(self, phase_id: str) -> None:
        """`phase_id` is already running (an agent runs it): never start it, count it running."""
        if phase_id in self.ready:
            self.ready.remove(phase_id)
        self.occupy(phase_id)

    def not_done(self) -> list[str]:
        """Targets this run did not bring where it wanted them, sorted."""
        return sorted(p for p in self.targets if p not in self.done)


__all__ = ["Planner"]
