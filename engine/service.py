"""The engine's public verbs — create, execute, rollback, resume, complete — one function each.
Each asks the rules (fsm) about fresh store reads, then drives a Scheduler under a lease.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine import agent_protocol, fsm
from engine.dispatch import make_dispatcher
from engine.durations import env_duration
from engine.errors import (
    LockHeld,
    OperationFailed,
    PhaseConflict,
    PreconditionFailed,
    StoreError,
)
from engine.events import EventLog
from engine.graph import PlanGraph
from engine.leases import LeaseKeeper, lease_alive, lease_grace, wait_out_fencing
from engine.model import Action, Operation, OpState, PhaseState, Plan, State
from engine.names import names_whole_plan
from engine.scheduler import RunOptions, RunResult, Scheduler
from engine.serving import ServeOptions, serving
from engine.store.base import Store, coordinator_lock, this_host
from engine.views import (
    PlanView,
    derive_view,
    failure_message,
    load_graph,
    plan_view,
    require_phase,
    resolve_operation,
)


def lease_ttl() -> float:
    """Lease TTL in seconds (env GRAVITY_LEASE_TTL: 10s, 1m or seconds; default 10)."""
    return env_duration("GRAVITY_LEASE_TTL", 10.0, minimum=1.0)


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
    serve: ServeOptions = field(default_factory=ServeOptions)  # the image, for agents

    def event_log(self, operation_id: str) -> EventLog:
        console = None if self.quiet else (self.console or sys.stderr)
        listener = self.progress() if (self.progress and not self.quiet) else None
        return EventLog(self.state_dir / "logs", operation_id, console=console,
                        console_format=self.log_format, listener=listener)


# -- creating -------------------------------------------------------------------------------
def new_operation_id() -> str:
    import uuid

    return time.strftime("op-%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]


def operator() -> str:
    """Who starts an operation, as `gravity status history` shows it: user@host."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (a container)
        user = f"uid {os.getuid()}"
    return f"{user}@{this_host()}"


def create_operation(store: Store, plan: Plan, *, operation_id: str | None = None,
                     op_type: str = "plan", data: dict[str, Any] | None = None) -> Operation:
    """Persist a validated plan as a new active operation holding the cluster lock."""
    now = time.time()
    payload = dict(data or {})
    payload["parallel"] = plan.parallel
    payload.setdefault("created_by", operator())
    if plan.source:
        payload["source"] = plan.source
    op = Operation(id=operation_id or new_operation_id(), type=op_type, plan_name=plan.name,
                   state=OpState.ACTIVE, created=now, updated=now, data=payload)
    store.create_operation(op, plan.specs)
    return op


def finish(store: Store, op: Operation, to: OpState, note: str | None, *,
           action: Action | None = None) -> Operation:
    """Close an operation — or reopen a closed one to roll it back (`action`) — if the rules
    allow that move."""
    current = store.get_operation(op.id)
    fsm.check_operation_move(current.state, to, operation_id=op.id, note=current.note,
                             action=action)
    if to is OpState.ACTIVE:
        return store.reopen_operation(op.id, note)
    return store.finish_operation(op.id, to, note)


# -- driving --------------------------------------------------------------------------------
@contextmanager
def coordinating(engine: Engine, op: Operation) -> Iterator[LeaseKeeper]:
    """Hold the operation's coordinator lock under a kept-alive lease for the duration.

    The keeper fences this process when the lease cannot be renewed in time: its phase
    processes are killed and the scheduler stops recording (LeaseExpired)."""
    store = engine.store
    ttl, _ = lease_ttl(), lease_grace()  # both settings checked before anything is written
    lease = store.grant_lease(f"coordinator:{op.id}", ttl)
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


def _recover(engine: Engine, op: Operation, view: PlanView, scope: list[str],
             events: EventLog, keeper: LeaseKeeper) -> list[str]:
    """What a previous run left in progress: phases of a dead owner become failed
    (interrupted) and retryable; phases a live agent still runs are adopted (returned)."""
    transitions, adopted, gone = [], [], []
    for phase_id in scope:
        st = view.state(phase_id)
        live = lease_alive(engine.store, st.owner) if st.state is State.IN_PROGRESS else None
        verdict = fsm.recovery(st, owner_alive=live is not None,
                               owner_is_agent=live is not None and agent_protocol.is_agent(live),
                               can_adopt=engine.dispatch == "agents")
        if verdict is fsm.Recovery.ADOPT:
            adopted.append(phase_id)
        elif verdict is fsm.Recovery.REFUSE:
            raise PhaseConflict(
                f"phase {phase_id} is being run by lease {st.owner}; --force does not override "
                "a live owner", operation_id=op.id, phase_id=phase_id,
                hint="wait for it to finish, or stop that process and retry")
        elif verdict is fsm.Recovery.INTERRUPT:
            who = (f"agent on {st.node}" if st.node and st.node != "local"
                   else f"owner (lease {st.owner}) of {phase_id}")
            transitions.append(fsm.interrupt(st, who))
            if st.owner is not None:
                gone.append(st.owner)
    if transitions:
        # Their owners' guards stopped them before the leases ran out; wait out the kill.
        wait_out_fencing(gone, lambda msg: events.emit("waiting for fencing", detail=msg))
        events.transitions((rec, None) for rec in engine.store.apply_in_parts(
            op.id, transitions, fence=keeper.lease.id))
        for t in transitions:
            view.states[t.phase_id] = t.new
    return adopted


@dataclass(frozen=True)
class Seen:
    """A view read before a run, and the changelog position read just before its states:
    if nothing was logged after `seq`, its states are still the store's."""

    view: PlanView
    seq: int


def _look(engine: Engine, op: Operation, graph: PlanGraph) -> Seen:
    seq = engine.store.last_seq(op.id)
    return Seen(plan_view(engine.store, op, graph), seq)


def _under_lock(engine: Engine, op: Operation, seen: Seen) -> PlanView:
    """The states a run starts from, read under the coordinator lock: those seen before it
    unless the changelog moved since (every state change appends to it in the same write)."""
    if engine.store.changelog(op.id, after=seen.seq):
        return plan_view(engine.store, op, seen.view.graph)
    return seen.view


def _run(engine: Engine, op: Operation, targets: list[str], options: RunOptions,
         *, scope_label: str, seen: Seen) -> RunResult:
    graph = seen.view.graph
    if op.state.finished:
        op = finish(engine.store, op, OpState.ACTIVE, "reopened to roll back",
                    action=options.action)
    events = engine.event_log(op.id)
    try:
        with coordinating(engine, op) as keeper, ExitStack() as stack:
            view = _under_lock(engine, op, seen)
            adopted = _recover(engine, op, view, targets, events, keeper)
            if options.action is Action.ROLLBACK:
                targets = fsm.rollback_targets({p: view.state(p).state for p in targets})
            events.emit("run started", quiet=True, scope=scope_label,
                        action=options.action.value, phases=len(targets))
            if engine.dispatch == "agents":
                stack.enter_context(serving(engine.store, op, keeper.lease, engine.state_dir,
                                            engine.serve, events))
            dispatcher = make_dispatcher(
                engine.dispatch, engine.store, keeper.lease, workers=engine.max_parallel,
                operation_id=op.id, state_dir=engine.state_dir, operation_data=dict(op.data),
                agent_timeout=engine.agent_timeout, fence=keeper.fence)
            sched = Scheduler(engine.store, op.id, graph, view.states, keeper=keeper,
                              events=events, options=options, dispatcher=dispatcher,
                              adopted=adopted)
            result = sched.run(targets)
            result.view = _maybe_finish(engine, op, options.action, graph, sched.states)
            events.emit("run finished", quiet=True, scope=scope_label,
                        completed=len(result.completed), failed=len(result.failed),
                        blocked=len(result.blocked))
            return result
    finally:
        events.close()


def _maybe_finish(engine: Engine, op: Operation, action: Action, graph: PlanGraph,
                  states: dict[str, PhaseState]) -> PlanView:
    """Close the operation when the rules say the run ended it; the view it ended with.

    The run's own states are the store's — under the coordinator lock only this run and the
    agents running its phases write them — unless a phase is still in progress (an agent's
    result may have landed since): then they are read again."""
    view = derive_view(op, graph, states)
    if any(s is State.IN_PROGRESS for s in view.leaf_states().values()):
        view = plan_view(engine.store, op, graph)
    end = fsm.operation_end(action, view.leaf_states().values())
    if end is not None:
        view = replace(view, operation=finish(engine.store, op, end, None))
    return view


def _raise_if_failed(op: Operation, result: RunResult, engine: Engine, verb: str) -> RunResult:
    if result.failed:
        phase_id, error = next(iter(result.failed.items()))
        message = failure_message(engine.store, engine.state_dir, op.id, phase_id, error)
        others = [p for p in result.failed if p != phase_id]
        if others:
            message += f"\n  also failed: {', '.join(others[:5])}" + \
                (f" and {len(others) - 5} more" if len(others) > 5 else "") + \
                " (see `gravity plan`)"
        raise OperationFailed(
            message,
            operation_id=op.id, phase_id=phase_id,
            hint=f"fix the cause, then `gravity plan resume` (or `gravity plan execute "
            f"--phase {phase_id} --force`); to undo, `gravity rollback`",
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


def _decide(engine: Engine, view: PlanView, phase_id: str, *, rollback: bool,
            force: bool) -> fsm.Decision:
    """Ask the rules whether `phase_id` (a leaf, with its owner, or a subtree) may run now."""
    graph = view.graph
    if rollback:
        related = {p: view.derived[p] for p in graph.dependents([phase_id])}
    else:
        related = {p: view.derived[p] for p in graph.prerequisites(phase_id)
                   if view.derived[p] is not State.COMPLETED}
    if graph.specs[phase_id].is_leaf:
        st = view.state(phase_id)
        alive = lease_alive(engine.store, st.owner) is not None
        leaf_check = fsm.check_rollback if rollback else fsm.check_execute
        return leaf_check(st, alive, related, force)
    subtree_check = fsm.check_rollback_subtree if rollback else fsm.check_execute_subtree
    return subtree_check(phase_id, view.leaf_states(phase_id), related, force)


def _gate(decision: fsm.Decision, op: Operation, phase_id: str, *, rollback: bool) -> bool:
    """Raise the refusal the operator reads, with the next command; False for a no-op."""
    if decision.verdict is fsm.Verdict.SKIP:
        return False
    if decision.verdict is fsm.Verdict.RUN:
        return True
    if not decision.blockers:
        raise PhaseConflict(decision.reason, operation_id=op.id, phase_id=phase_id,
                            hint="wait for the running phase to finish")
    hint = ("roll back those phases first (or the whole operation with `gravity rollback`), "
            "or pass --force" if rollback else
            f"execute {decision.blockers[0]} first, or pass --force to run anyway")
    raise PreconditionFailed(decision.reason, blockers=decision.blockers, operation_id=op.id,
                             phase_id=phase_id, hint=hint)


def execute_phase(engine: Engine, operation_id: str | None, phase_id: str, *,
                  force: bool = False, dry_run: bool = False) -> RunResult | list[str]:
    """`plan execute --phase`: run one leaf, or a composite's unfinished leaves in order;
    `--phase /` runs the whole plan (as Gravity's), like `plan resume` but one phase at a
    time from the operator's point of view: --force re-runs completed phases too."""
    op = resolve_operation(engine.store, operation_id)
    graph = load_graph(engine.store, op)
    whole = names_whole_plan(phase_id)
    phase_id = "/" if whole else require_phase(graph, op, phase_id)
    seen = _look(engine, op, graph)
    view = seen.view
    decision = (fsm.check_execute_subtree(phase_id, view.leaf_states(), {}, force) if whole
                else _decide(engine, view, phase_id, rollback=False, force=force))
    if not _gate(decision, op, phase_id, rollback=False):
        return [] if dry_run else RunResult(skipped=[phase_id])
    leaves = view.leaf_states(None if whole else phase_id)
    targets = [p for p, s in leaves.items() if force or s is not State.COMPLETED]
    if dry_run:
        return dry_run_order(graph, targets, backward=False)
    options = RunOptions(action=Action.EXECUTE, force=force, max_parallel=engine.max_parallel)
    result = _run(engine, op, targets, options, scope_label=phase_id, seen=seen)
    return _raise_if_failed(op, result, engine, f"execute {phase_id}")


def rollback_phase(engine: Engine, operation_id: str | None, phase_id: str | None, *,
                   force: bool = False, dry_run: bool = False) -> RunResult | list[str]:
    """`plan rollback --phase` (one phase or subtree) and `gravity rollback` (phase_id None)."""
    op = resolve_operation(engine.store, operation_id)
    graph = load_graph(engine.store, op)
    phase_id = require_phase(graph, op, phase_id) if phase_id else None
    seen = _look(engine, op, graph)
    view = seen.view
    if phase_id is not None and not _gate(
            _decide(engine, view, phase_id, rollback=True, force=force), op, phase_id,
            rollback=True):
        return [] if dry_run else RunResult(skipped=[phase_id])
    targets = fsm.rollback_targets(view.leaf_states(phase_id))
    if dry_run:
        return dry_run_order(graph, targets, backward=True)
    options = RunOptions(action=Action.ROLLBACK, force=force, max_parallel=engine.max_parallel)
    result = _run(engine, op, targets, options, scope_label=phase_id or "/", seen=seen)
    return _raise_if_failed(op, result, engine, f"rollback {phase_id or 'of the operation'}")


def resume(engine: Engine, operation_id: str | None, *, keep_going: bool = False,
           dry_run: bool = False) -> RunResult | list[str]:
    """`plan resume`: run every phase that is not completed, in dependency order. Refused
    (dry run too) once the operation is finished."""
    op = resolve_operation(engine.store, operation_id)
    fsm.check_active(op.state, operation_id=op.id, note=op.note, verb="resume")
    graph = load_graph(engine.store, op)
    seen = _look(engine, op, graph)
    targets = [p for p, s in seen.view.leaf_states().items() if s is not State.COMPLETED]
    if dry_run:
        return dry_run_order(graph, targets, backward=False)
    if not targets:  # every phase completed: close it, unless a racing driver just did
        current = engine.store.get_operation(op.id)
        fsm.check_active(current.state, operation_id=op.id, note=current.note, verb="resume")
        op = finish(engine.store, op, OpState.COMPLETED, None)
        return RunResult(view=replace(seen.view, operation=op))
    options = RunOptions(action=Action.EXECUTE, keep_going=keep_going,
                         max_parallel=engine.max_parallel)
    result = _run(engine, op, targets, options, scope_label="/", seen=seen)
    return _raise_if_failed(op, result, engine, "resume")


def complete(engine: Engine, operation_id: str | None) -> Operation:
    """`plan complete`: close the active operation (completed, or failed if any leaf is not);
    refused once it is finished."""
    op = resolve_operation(engine.store, operation_id)
    fsm.check_active(op.state, operation_id=op.id, note=op.note, verb="complete")
    holder = engine.store.lock_holder(coordinator_lock(op.id))
    if holder is not None and lease_alive(engine.store, holder.id) is not None:
        raise LockHeld(f"operation {op.id} is being driven by {holder.describe()}",
                       holder=holder.describe(), operation_id=op.id,
                       hint="wait for it to finish before completing the operation")
    view = plan_view(engine.store, op)
    outcome = fsm.operation_outcome(view.leaf_states().values())
    return finish(engine.store, op, outcome, "completed manually")


__all__ = [
    "Engine",
    "PhaseState",
    "PlanView",
    "complete",
    "create_operation",
    "execute_phase",
    "finish",
    "load_graph",
    "plan_view",
    "resolve_operation",
    "resume",
    "rollback_phase",
]
