"""The engine's public verbs — create, execute, rollback, resume, complete — one function each.
Each checks the rules (fsm) against fresh store reads, then drives a Scheduler under a lease.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import fsm
from engine.dispatch import AgentDispatcher, Dispatcher, phase_log_path
from engine.errors import (
    LockHeld,
    NotFound,
    OperationFailed,
    PhaseConflict,
    PreconditionFailed,
    StoreError,
)
from engine.events import EventLog
from engine.graph import PlanGraph
from engine.leases import LeaseKeeper, lease_alive, wait_out_fencing
from engine.model import Action, Operation, OpState, PhaseState, Plan, State
from engine.scheduler import RunOptions, RunResult, Scheduler
from engine.store.base import Store, coordinator_lock


def lease_ttl() -> float:
    """Lease TTL in seconds (env GRAVITY_LEASE_TTL, default 10)."""
    return float(os.environ.get("GRAVITY_LEASE_TTL", "10"))


@dataclass
class Engine:
    """What every verb needs: the store, where node dirs and logs live, and output settings."""

    store: Store
    state_dir: Path
    log_format: str = "console"
    quiet: bool = False
    max_parallel: int = 8
    console: Any = field(default=None)
    dispatch: str = "local"
    agent_timeout: float = 60.0
    progress: Any = field(default=None)  # factory of an EventLog listener (live TTY display)

    def event_log(self, operation_id: str) -> EventLog:
        import sys

        console = None if self.quiet else (self.console or sys.stderr)
        listener = self.progress() if (self.progress and not self.quiet) else None
        return EventLog(self.state_dir / "logs", operation_id, console=console,
                        console_format=self.log_format, listener=listener)


@dataclass(frozen=True)
class PlanView:
    """An operation's plan with stored leaf states and derived composite states."""

    operation: Operation
    graph: PlanGraph
    states: dict[str, PhaseState]
    derived: dict[str, State]


# -- reading --------------------------------------------------------------------------------
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
    specs = store.load_specs(op.id)
    return PlanGraph.build(specs, int(op.data.get("parallel", 1)))


def plan_view(store: Store, op: Operation, graph: PlanGraph | None = None) -> PlanView:
    graph = graph or load_graph(store, op)
    states = store.load_states(op.id)
    derived: dict[str, State] = {}
    leaf_states: dict[str, list[State]] = {}
    for pid in reversed(graph.order):
        spec = graph.specs[pid]
        if spec.is_leaf:
            st = states.get(pid, PhaseState(pid)).state
            derived[pid] = st
            leaf_states[pid] = [st]
        else:
            below = [s for c in spec.children for s in leaf_states[c]]
            leaf_states[pid] = below
            derived[pid] = fsm.derive(below)
    return PlanView(op, graph, states, derived)


def require_phase(graph: PlanGraph, op: Operation, phase_id: str) -> str:
    pid = phase_id if phase_id.startswith("/") else "/" + phase_id
    pid = pid.rstrip("/") or "/"
    if pid not in graph.specs:
        raise NotFound(f"operation {op.id} has no phase {pid}", operation_id=op.id,
                       phase_id=pid, hint="see the phase IDs with `gravity plan`")
    return pid


# -- creating -------------------------------------------------------------------------------
def new_operation_id() -> str:
    return time.strftime("op-%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]


def create_operation(store: Store, plan: Plan, *, operation_id: str | None = None,
                     op_type: str = "plan", data: dict[str, Any] | None = None) -> Operation:
    """Persist a validated plan as a new active operation holding the cluster lock."""
    now = time.time()
    payload = dict(data or {})
    payload["parallel"] = plan.parallel
    if plan.source:
        payload["source"] = plan.source
    op = Operation(id=operation_id or new_operation_id(), type=op_type, plan_name=plan.name,
                   state=OpState.ACTIVE, created=now, updated=now, data=payload)
    store.create_operation(op, plan.specs)
    return op


# -- driving --------------------------------------------------------------------------------
@contextmanager
def coordinating(engine: Engine, op: Operation) -> Iterator[LeaseKeeper]:
    """Hold the operation's coordinator lock under a kept-alive lease for the duration.

    The keeper fences this process when the lease cannot be renewed in time: its phase
    processes are killed and the scheduler stops recording (LeaseExpired)."""
    store = engine.store
    lease = store.grant_lease(f"coordinator:{op.id}", lease_ttl())
    try:
        name = coordinator_lock(op.id)
        try:
            store.acquire_lock(name, lease)
        except LockHeld:
            holder = store.lock_holder(name)
            if holder is not None and lease_alive(store, holder.id) is not None:
                raise LockHeld(
                    f"operation {op.id} is being driven by {holder.describe()}",
                    holder=holder.describe(), operation_id=op.id,
                    hint="wait for it to finish (watch with `gravity plan --follow`); if that "
                    f"process is dead its lease expires within {holder.ttl:.0f}s",
                ) from None
            store.acquire_lock(name, lease)
        with LeaseKeeper(store, lease) as keeper:
            yield keeper
    finally:
        try:
            store.release_lock(coordinator_lock(op.id), lease.id)
            store.revoke_lease(lease.id)
        except StoreError:
            pass  # the lease expires on its own


def _recover_interrupted(engine: Engine, op: Operation, view: PlanView,
                         scope: list[str], events: EventLog, keeper: LeaseKeeper) -> list[str]:
    """Phases left in progress by a dead owner become failed (interrupted) and retryable.

    With agents, a phase a live agent is still running is adopted: the new coordinator
    waits for its result instead. Returns the adopted phases.
    """
    transitions = []
    adopted = []
    gone: list[int] = []
    for pid in scope:
        st = view.states.get(pid)
        if st is None or st.state is not State.IN_PROGRESS:
            continue
        owner = lease_alive(engine.store, st.owner)
        if owner is not None and engine.dispatch == "agents" and \
                owner.owner.startswith("agent:"):
            adopted.append(pid)
            continue
        if owner is not None:
            raise PhaseConflict(
                f"phase {pid} is being run by lease {st.owner}; --force does not override "
                "a live owner", operation_id=op.id, phase_id=pid,
                hint="wait for it to finish, or stop that process and retry",
            )
        who = (f"agent on {st.node}" if st.node and st.node != "local"
               else f"owner (lease {st.owner}) of {pid}")
        transitions.append(fsm.interrupt(st, who))
        if st.owner is not None:
            gone.append(st.owner)
    if transitions:
        # Their owners' guards stopped them before the leases ran out; wait out the kill.
        wait_out_fencing(gone, lambda msg: events.emit("waiting for fencing", detail=msg))
        for rec in engine.store.apply(op.id, transitions, fence=keeper.lease.id):
            events.transition(rec)
        for t in transitions:
            view.states[t.phase_id] = t.new
    return adopted


def _run(engine: Engine, op: Operation, targets: list[str], options: RunOptions,
         *, scope_label: str, graph: PlanGraph) -> RunResult:
    if op.state.finished:
        op = _reopen_for_rollback(engine, op, options.action)
    events = engine.event_log(op.id)
    try:
        with coordinating(engine, op) as keeper:
            view = plan_view(engine.store, op, graph)  # fresh states, under the lock
            adopted = _recover_interrupted(engine, op, view, targets, events, keeper)
            if options.action is Action.ROLLBACK:
                targets = [p for p in targets
                           if view.states.get(p, PhaseState(p)).state in fsm.ROLLBACK_CANDIDATES]
            events.emit("run started", quiet=True, scope=scope_label,
                        action=options.action.value, phases=len(targets))
            sched = Scheduler(engine.store, op.id, graph, view.states, keeper=keeper,
                              state_dir=engine.state_dir, events=events, options=options,
                              operation_data=dict(op.data),
                              dispatcher=_dispatcher(engine, op, keeper),
                              adopted=adopted)
            result = sched.run(targets)
            _maybe_finish(engine, op, options.action, graph)
            events.emit("run finished", quiet=True, scope=scope_label,
                        completed=len(result.completed), failed=len(result.failed),
                        blocked=len(result.blocked))
            return result
    finally:
        events.close()


def _reopen_for_rollback(engine: Engine, op: Operation, action: Action) -> Operation:
    """A finished operation changes only one way: one closed as failed may be rolled back
    (it becomes active again and takes the cluster lock). Everything else is refused."""
    if op.state is OpState.FAILED and action is Action.ROLLBACK:
        return engine.store.reopen_operation(op.id, "reopened to roll back")
    if op.state is OpState.FAILED:
        raise PhaseConflict(
            f"operation {op.id} was closed as failed ({op.note or 'completed manually'}); "
            "it cannot run again", operation_id=op.id,
            hint=f"roll it back with `gravity rollback --operation-id {op.id}`, or start a "
            "new operation")
    if op.state is OpState.ROLLED_BACK:
        raise PhaseConflict(f"operation {op.id} is already rolled back", operation_id=op.id,
                            hint="start a new operation")
    raise PhaseConflict(
        f"operation {op.id} is completed; a completed operation cannot be changed",
        operation_id=op.id,
        hint="undo its effects with a new operation (after an upgrade: `gravity upgrade` "
        "with the previous image)")


def _dispatcher(engine: Engine, op: Operation, keeper: LeaseKeeper) -> Dispatcher | None:
    if engine.dispatch != "agents":
        return None
    return AgentDispatcher(engine.store, keeper.lease, workers=engine.max_parallel,
                           operation_id=op.id, state_dir=engine.state_dir,
                           operation_data=dict(op.data), after=engine.store.last_seq(op.id),
                           fence=keeper.fence)


def _maybe_finish(engine: Engine, op: Operation, action: Action, graph: PlanGraph) -> None:
    """Close the operation when every leaf is completed (or, after rollback, undone)."""
    view = plan_view(engine.store, op, graph)
    leaf_states = [view.derived[p] for p in view.graph.leaves]
    if action is Action.EXECUTE and all(s is State.COMPLETED for s in leaf_states):
        engine.store.finish_operation(op.id, OpState.COMPLETED, None)
    elif action is Action.ROLLBACK and leaf_states and all(
        s in (State.ROLLED_BACK, State.UNSTARTED) for s in leaf_states
    ) and any(s is State.ROLLED_BACK for s in leaf_states):
        engine.store.finish_operation(op.id, OpState.ROLLED_BACK, None)


def _raise_if_failed(op: Operation, result: RunResult, engine: Engine, verb: str) -> RunResult:
    if result.failed:
        pid, error = next(iter(result.failed.items()))
        first_line = error.splitlines()[0] if error else "failed"
        log = phase_log_path(engine.state_dir, op.id, pid)
        raise OperationFailed(
            f"phase {pid} failed: {first_line}\n  full output: {log}",
            operation_id=op.id, phase_id=pid,
            hint=f"fix the cause, then `gravity plan resume` (or `gravity plan execute "
            f"--phase {pid} --force`); to undo, `gravity rollback`",
        )
    if result.dropped:
        raise OperationFailed(
            f"the result of {len(result.dropped)} phase(s) was not recorded because another "
            f"process changed them while they ran: {', '.join(result.dropped[:5])}",
            operation_id=op.id, phase_id=result.dropped[0],
            hint="see what was recorded with `gravity plan` and `gravity events`; then "
            "`gravity plan resume`")
    if result.stopped:
        raise OperationFailed(f"{verb} stopped: {result.stopped}", operation_id=op.id,
                              hint="run `gravity plan resume` to continue")
    if result.blocked:
        raise PreconditionFailed(
            f"{len(result.blocked)} phase(s) could not run because phases they require are "
            f"not completed: {', '.join(result.blocked[:5])}",
            blockers=result.blocked, operation_id=op.id,
            hint="run the required phases first, or use --force",
        )
    return result


def dry_run_order(graph: PlanGraph, targets: list[str], backward: bool) -> list[str]:
    order = [p for p in graph.leaf_topological_order() if p in set(targets)]
    return list(reversed(order)) if backward else order


def execute_phase(engine: Engine, operation_id: str | None, phase_id: str, *,
                  force: bool = False, dry_run: bool = False) -> RunResult | list[str]:
    """`plan execute --phase`: run one leaf, or a composite's unfinished leaves in order."""
    op = resolve_operation(engine.store, operation_id)
    graph = load_graph(engine.store, op)
    pid = require_phase(graph, op, phase_id)
    view = plan_view(engine.store, op, graph)
    leaves = graph.leaves_under(pid)
    unmet = {p: view.derived[p] for p in graph.prerequisites(pid)
             if view.derived[p] is not State.COMPLETED}
    if graph.specs[pid].is_leaf:
        st = view.states.get(pid, PhaseState(pid))
        alive = lease_alive(engine.store, st.owner) is not None
        decision = fsm.check_execute(st, alive, unmet, force)
    else:
        decision = fsm.check_execute(PhaseState(pid), False, unmet, force)
        if all(view.derived[p] is State.COMPLETED for p in leaves) and not force:
            decision = fsm.Decision(fsm.Verdict.SKIP, f"phase {pid} is already completed")
    if decision.verdict is fsm.Verdict.REFUSE:
        cls = PhaseConflict if not decision.blockers else PreconditionFailed
        kwargs: dict[str, Any] = {"blockers": decision.blockers} if decision.blockers else {}
        first = decision.blockers[0] if decision.blockers else pid
        raise cls(decision.reason, operation_id=op.id, phase_id=pid,
                  hint=(f"execute {first} first, or pass --force to run anyway"
                        if decision.blockers else "wait for the running phase to finish"),
                  **kwargs)
    if decision.verdict is fsm.Verdict.SKIP:
        result = RunResult(skipped=[pid])
        return [] if dry_run else result
    targets = leaves if force else [p for p in leaves if view.derived[p] is not State.COMPLETED]
    if dry_run:
        return dry_run_order(graph, targets, backward=False)
    options = RunOptions(action=Action.EXECUTE, force=force, max_parallel=engine.max_parallel,
                         agent_timeout=engine.agent_timeout)
    result = _run(engine, op, targets, options, scope_label=pid, graph=graph)
    return _raise_if_failed(op, result, engine, f"execute {pid}")


def rollback_phase(engine: Engine, operation_id: str | None, phase_id: str | None, *,
                   force: bool = False, dry_run: bool = False) -> RunResult | list[str]:
    """`plan rollback --phase` (one phase or subtree) and `gravity rollback` (phase_id None)."""
    op = resolve_operation(engine.store, operation_id)
    graph = load_graph(engine.store, op)
    pid = require_phase(graph, op, phase_id) if phase_id else None
    view = plan_view(engine.store, op, graph)
    leaves = graph.leaves_under(pid) if pid else list(graph.leaves)
    if pid is not None:
        dependents = {p: view.derived[p] for p in graph.dependents([pid])}
        st = view.states.get(pid, PhaseState(pid)) if graph.specs[pid].is_leaf else None
        if st is not None:
            alive = lease_alive(engine.store, st.owner) is not None
            decision = fsm.check_rollback(st, alive, dependents, force)
        else:
            attempted = [p for p in leaves if view.derived[p] in fsm.ROLLBACK_CANDIDATES]
            proxy = PhaseState(pid, state=State.COMPLETED if attempted else State.UNSTARTED)
            decision = fsm.check_rollback(proxy, False, dependents, force)
        if decision.verdict is fsm.Verdict.REFUSE:
            cls = PreconditionFailed if decision.blockers else PhaseConflict
            kwargs: dict[str, Any] = {"blockers": decision.blockers} if decision.blockers else {}
            raise cls(decision.reason, operation_id=op.id, phase_id=pid,
                      hint=("roll back those phases first (or the whole operation with "
                            "`gravity rollback`), or pass --force"
                            if decision.blockers else "wait for the running phase to finish"),
                      **kwargs)
        if decision.verdict is fsm.Verdict.SKIP:
            return [] if dry_run else RunResult(skipped=[pid])
    targets = [p for p in leaves if view.derived[p] in fsm.ROLLBACK_CANDIDATES]
    if dry_run:
        return dry_run_order(graph, targets, backward=True)
    options = RunOptions(action=Action.ROLLBACK, force=force, max_parallel=engine.max_parallel,
                         agent_timeout=engine.agent_timeout)
    result = _run(engine, op, targets, options, scope_label=pid or "/", graph=graph)
    return _raise_if_failed(op, result, engine, f"rollback {pid or 'of the operation'}")


def resume(engine: Engine, operation_id: str | None, *, keep_going: bool = False,
           dry_run: bool = False) -> RunResult | list[str]:
    """`plan resume`: run every phase that is not completed, in dependency order."""
    op = resolve_operation(engine.store, operation_id)
    graph = load_graph(engine.store, op)
    view = plan_view(engine.store, op, graph)
    targets = [p for p in graph.leaves if view.derived[p] is not State.COMPLETED]
    if dry_run:
        return dry_run_order(graph, targets, backward=False)
    if not targets:
        if not op.state.finished:
            engine.store.finish_operation(op.id, OpState.COMPLETED, None)
        return RunResult()
    options = RunOptions(action=Action.EXECUTE, keep_going=keep_going,
                         max_parallel=engine.max_parallel, agent_timeout=engine.agent_timeout)
    result = _run(engine, op, targets, options, scope_label="/", graph=graph)
    return _raise_if_failed(op, result, engine, "resume")


def complete(engine: Engine, operation_id: str | None) -> Operation:
    """`plan complete`: close the operation (completed, or failed if any leaf is not)."""
    op = resolve_operation(engine.store, operation_id)
    if op.state.finished:
        return op
    holder = engine.store.lock_holder(coordinator_lock(op.id))
    if holder is not None and lease_alive(engine.store, holder.id) is not None:
        raise LockHeld(f"operation {op.id} is being driven by {holder.describe()}",
                       holder=holder.describe(), operation_id=op.id,
                       hint="wait for it to finish before completing the operation")
    view = plan_view(engine.store, op)
    outcome = fsm.operation_outcome(view.derived[p] for p in view.graph.leaves)
    if outcome is State.COMPLETED:
        return engine.store.finish_operation(op.id, OpState.COMPLETED, "completed manually")
    return engine.store.finish_operation(op.id, OpState.FAILED, "completed manually")
