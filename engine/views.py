"""The read model: which operation a command means, its plan as a graph, and a PlanView of
stored leaf states with derived composite states. Read-only; shared by the verbs, CLI, dashboard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine import agent_protocol as proto
from engine import fsm
from engine.errors import NotFound
from engine.executors.runtime import phase_log_path, read_tail
from engine.graph import PlanGraph
from engine.leases import died_here, lease_alive
from engine.model import ChangeRecord, Lease, Operation, PhaseSpec, PhaseState, State
from engine.outline import Outline
from engine.store.base import Store, coordinator_lock


@dataclass(frozen=True)
class PlanView:
    """An operation's plan with stored leaf states and derived composite states.

    `driven` says whether a live process holds the operation's coordinator lock (None when
    the view was built without asking): a failed phase's "retrying in …" note is only true
    while someone drives the operation.
    """

    operation: Operation
    graph: PlanGraph
    states: dict[str, PhaseState]
    derived: dict[str, State]
    driven: bool | None = None

    def state(self, phase_id: str) -> PhaseState:
        """A leaf's stored state (unstarted at version 0 when none is stored)."""
        return self.states.get(phase_id) or PhaseState(phase_id)

    def leaf_states(self, phase_id: str | None = None) -> dict[str, State]:
        """The states of the leaves under `phase_id` (all leaves when None), written order."""
        leaves = self.graph.leaves_under(phase_id) if phase_id else self.graph.leaves
        return {p: self.derived[p] for p in leaves}


@dataclass(frozen=True)
class OutlineView:
    """An operation's top-level phases (an Outline read from the store's index) and whether
    a live process drives it: `gravity plan --short` without the whole plan."""

    operation: Operation
    outline: Outline
    driven: bool | None = None


def resolve_operation(store: Store, operation_id: str | None) -> Operation:
    """The named operation, else the active one, else the most recent one."""
    if operation_id:
        return store.get_operation(operation_id)
    active = store.active_operation_id()
    if active:
        return store.get_operation(active)
    ops = store.list_operations()
    if not ops:
        raise NotFound("there are no operations yet",
                       hint="create one with `gravity operation create --plan FILE`")
    return ops[-1]


def load_graph(store: Store, op: Operation) -> PlanGraph:
    return graph_of(op, store.load_specs(op.id))


def graph_of(op: Operation, specs: list[PhaseSpec]) -> PlanGraph:
    """The operation's plan graph from its specs (with the plan's top-level `parallel`)."""
    return PlanGraph.build(specs, int(op.data.get("parallel", 1)))


def operation_driver(store: Store, operation_id: str) -> Lease | None:
    """The live lease of whoever drives the operation now (its coordinator lock's holder).

    Only reads: a dead holder's lease is left for the next driver to revoke, so showing a
    plan writes nothing.
    """
    holder = store.lock_holder(coordinator_lock(operation_id))
    return None if holder is None or died_here(holder) else holder


def plan_view(store: Store, op: Operation, graph: PlanGraph | None = None, *,
              with_driver: bool = False) -> PlanView:
    """The plan's states; `with_driver` also asks whether a live process drives it."""
    if graph is None:
        specs, states = store.load_plan(op.id)
        graph = graph_of(op, specs)
    else:
        states = store.load_states(op.id)
    # After the states: a note written by a driver that has gone since reads as stale.
    driven = operation_driver(store, op.id) is not None if with_driver else None
    return derive_view(op, graph, states, driven)


def outline_view(store: Store, op: Operation) -> OutlineView:
    """The operation's Outline and whether a live process drives it."""
    outline = store.load_outline(op.id)
    # After the states, as in plan_view.
    return OutlineView(op, outline, operation_driver(store, op.id) is not None)


def derive_view(op: Operation, graph: PlanGraph, states: dict[str, PhaseState],
                driven: bool | None = None) -> PlanView:
    """The view of leaf states already in hand (a run's own, as it ended)."""
    derived: dict[str, State] = {}
    below: dict[str, frozenset[State]] = {}  # the distinct states of each phase's leaves
    for phase_id in reversed(graph.order):
        spec = graph.specs[phase_id]
        if spec.is_leaf:
            st = states.get(phase_id)
            derived[phase_id] = state = st.state if st is not None else State.UNSTARTED
            below[phase_id] = _ONE[state]
        else:
            seen = below[phase_id] = frozenset().union(*(below[c] for c in spec.children))
            derived[phase_id] = fsm.derive(seen)
    return PlanView(op, graph, states, derived, driven)


_ONE = {s: frozenset((s,)) for s in State}


def log_location(store: Store, state_dir: Path, operation_id: str, phase_id: str) -> str:
    """Where a phase's whole output is: on the node that ran it (as its agent reported,
    readable from any host through `gravity plan`), else this host's phase log."""
    shipped = proto.shipped_output(store, operation_id, phase_id)
    if shipped is not None:
        return shipped.where
    return str(phase_log_path(state_dir, operation_id, phase_id))


def phase_output(store: Store, state_dir: Path, operation_id: str, phase_id: str) -> str | None:
    """The end of a phase's output: this host's log, else the tail its node shipped back."""
    found = read_tail(phase_log_path(state_dir, operation_id, phase_id))
    if found is not None:
        return found[0]
    shipped = proto.shipped_output(store, operation_id, phase_id)
    return shipped.tail if shipped is not None else None


def follow_changes(store: Store, operation_id: str, after: int,
                   emit: Callable[[ChangeRecord], None], *, poll: float = 1.0,
                   alive: Callable[[], bool] | None = None) -> str:
    """Emit records with seq > `after` as they are written, until nothing more can come.

    Returns why it stopped: "finished" when the operation reached a final state, "idle" when
    nobody drives it — no live coordinator lock holder, no phase in progress and (when given)
    `alive()` false, on two checks in a row (the rule of `gravity plan --follow`), so an
    abandoned operation does not keep the caller waiting forever.
    """
    idle_checks = 0
    while True:
        for rec in store.wait_changes(operation_id, after, timeout=poll):
            after = rec.seq
            emit(rec)
            idle_checks = 0
        if store.get_operation(operation_id).state.finished:
            # Records written in the same instant as the final state are still owed.
            for rec in store.changelog(operation_id, after):
                after = rec.seq
                emit(rec)
            return "finished"
        holder = store.lock_holder(coordinator_lock(operation_id))
        driven = holder is not None and lease_alive(store, holder.id) is not None
        running = any(s.state is State.IN_PROGRESS
                      for s in store.load_states(operation_id).values())
        if driven or running or (alive is not None and alive()):
            idle_checks = 0
            continue
        idle_checks += 1
        if idle_checks >= 2:
            return "idle"


# What an active operation with a failed phase and nobody driving it is, wherever it is shown.
IDLE = "idle — nothing is running; `gravity plan resume` or `gravity rollback`"
FAILURE_TAIL_LINES = 10  # output lines a failure message carries


def failure_message(store: Store, state_dir: Path, operation_id: str, phase_id: str,
                    error: str | None) -> str:
    """What a failed phase tells the operator: the phase, its node, the error, the last lines
    of its output (from the recorded error, else the log or the tail its node shipped) and
    where the whole output is."""
    st = store.load_states(operation_id).get(phase_id)
    node = st.node if st is not None and st.node else None
    lines = (error or "failed").splitlines()
    head, tail = lines[0], [line for line in lines[1:] if line.strip()]
    if not tail:
        found = phase_output(store, state_dir, operation_id, phase_id)
        tail = [line for line in (found or "").splitlines()
                if line.strip() and not line.startswith("--- attempt")]
    out = [f"phase {phase_id} failed" + (f" on node {node}" if node else "") + f": {head}"]
    if tail:
        out.append("  last output:")
        out += [f"    {line}" for line in tail[-FAILURE_TAIL_LINES:]]
    out.append(f"  full output: {log_location(store, state_dir, operation_id, phase_id)}")
    return "\n".join(out)


def require_phase(graph: PlanGraph, op: Operation, phase_id: str) -> str:
    """The absolute phase ID the operator meant (`drain` or `/drain/` for `/drain`)."""
    phase_id = phase_id if phase_id.startswith("/") else "/" + phase_id
    phase_id = phase_id.rstrip("/") or "/"
    if phase_id not in graph.specs:
        raise NotFound(f"operation {op.id} has no phase {phase_id}", operation_id=op.id,
                       phase_id=phase_id, hint="see the phase IDs with `gravity plan`")
    return phase_id


__all__ = [
    "IDLE",
    "OutlineView",
    "PlanView",
    "derive_view",
    "failure_message",
    "follow_changes",
    "load_graph",
    "log_location",
    "operation_driver",
    "outline_view",
    "plan_view",
    "require_phase",
    "resolve_operation",
]
