"""Every rule of the engine, pure: derived composite state, may a phase or a subtree execute or
roll back, recover or adopt, how a result becomes a transition, when an operation ends. No I/O.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from engine.errors import PhaseConflict, Refused
from engine.model import Action, OpState, PhaseState, State, Transition

# Which stored states a leaf may move to, by action of the in-progress run.
ALLOWED: dict[State, frozenset[State]] = {
    State.UNSTARTED: frozenset({State.IN_PROGRESS}),
    State.IN_PROGRESS: frozenset({State.COMPLETED, State.FAILED, State.ROLLED_BACK}),
    State.COMPLETED: frozenset({State.IN_PROGRESS}),
    State.FAILED: frozenset({State.IN_PROGRESS}),
    State.ROLLED_BACK: frozenset({State.IN_PROGRESS}),
}

# States of a leaf that was attempted: it has an effect worth undoing, and while it holds one,
# what it depends on may not be rolled back before it.
ATTEMPTED = frozenset({State.COMPLETED, State.FAILED, State.IN_PROGRESS})

# How an operation's own state may change. A failed (closed) operation may be reopened only
# to be rolled back; completed and rolled-back operations are final.
OP_ALLOWED: dict[OpState, frozenset[OpState]] = {
    OpState.ACTIVE: frozenset({OpState.COMPLETED, OpState.FAILED, OpState.ROLLED_BACK}),
    OpState.FAILED: frozenset({OpState.ACTIVE}),
    OpState.COMPLETED: frozenset(),
    OpState.ROLLED_BACK: frozenset(),
}


def derive(states: Iterable[State]) -> State:
    """A composite's state from its leaves' states.

    All the same -> that state; any failed -> failed; any in progress -> in
    progress; none completed and some rolled back -> rolled back; any other mix
    -> in progress (partly done).
    """
    seen = set(states)
    if not seen:
        return State.UNSTARTED
    if len(seen) == 1:
        return next(iter(seen))
    if State.FAILED in seen:
        return State.FAILED
    if State.IN_PROGRESS in seen:
        return State.IN_PROGRESS
    if State.COMPLETED not in seen and State.ROLLED_BACK in seen:
        return State.ROLLED_BACK
    return State.IN_PROGRESS


class Verdict(enum.StrEnum):
    """What the engine should do with a phase that was asked to execute or roll back."""

    RUN = "run"
    SKIP = "skip"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Decision:
    """A verdict with the reason an operator reads and the phases in the way, if any."""

    verdict: Verdict
    reason: str = ""
    blockers: tuple[str, ...] = ()


def _requirements(phase_id: str, unmet: Mapping[str, State], force: bool) -> Decision:
    """Unmet requirements refuse (naming them) unless forced."""
    if unmet and not force:
        names = sorted(unmet)
        listing = ", ".join(f"{p} ({unmet[p].value})" for p in names)
        return Decision(Verdict.REFUSE, f"phase {phase_id} requires phases that are not "
                        f"completed: {listing}", tuple(names))
    return Decision(Verdict.RUN)


def _dependents(phase_id: str, dependents: Mapping[str, State], force: bool) -> Decision:
    """Attempted dependents refuse a rollback (naming them) unless forced."""
    blockers = sorted(p for p, s in dependents.items() if s in ATTEMPTED)
    if blockers and not force:
        listing = ", ".join(f"{p} ({dependents[p].value})" for p in blockers)
        return Decision(Verdict.REFUSE, f"phase {phase_id} cannot be rolled back before "
                        f"the phases that depend on it: {listing}", tuple(blockers))
    return Decision(Verdict.RUN)


def check_execute(
    state: PhaseState,
    owner_alive: bool,
    unmet: Mapping[str, State],
    force: bool,
) -> Decision:
    """May this leaf execute now? `unmet` maps required leaves that are not completed.

    A live owner is never overridden, not even by --force; a completed phase is
    a no-op unless forced; unmet requirements refuse unless forced.
    """
    if state.state is State.IN_PROGRESS and owner_alive:
        return Decision(Verdict.REFUSE, f"phase {state.phase_id} is already running "
                        f"(lease {state.owner}); --force does not override a live owner")
    if state.state is State.COMPLETED and not force:
        return Decision(Verdict.SKIP, f"phase {state.phase_id} is already completed")
    return _requirements(state.phase_id, unmet, force)


def check_rollback(
    state: PhaseState,
    owner_alive: bool,
    dependents: Mapping[str, State],
    force: bool,
) -> Decision:
    """May this leaf roll back now? `dependents` maps leaves that depend on it to their states.

    Only attempted phases (completed, failed, interrupted) roll back; dependents
    that are completed, failed or running block it unless forced.
    """
    if state.state is State.IN_PROGRESS and owner_alive:
        return Decision(Verdict.REFUSE, f"phase {state.phase_id} is running (lease "
                        f"{state.owner}); wait for it to finish before rolling it back")
    if state.state not in ATTEMPTED:
        return Decision(Verdict.SKIP, f"phase {state.phase_id} is {state.state.value}: "
                        "nothing to roll back")
    return _dependents(state.phase_id, dependents, force)


def check_execute_subtree(
    phase_id: str,
    leaf_states: Mapping[str, State],
    unmet: Mapping[str, State],
    force: bool,
) -> Decision:
    """May a composite execute now? When every leaf under it is completed it is a no-op
    unless forced; unmet requirements refuse unless forced. (Each leaf is checked again,
    with its owner, when the run recovers what was left in progress.)"""
    if leaf_states and all(s is State.COMPLETED for s in leaf_states.values()) and not force:
        return Decision(Verdict.SKIP, f"phase {phase_id} is already completed")
    return _requirements(phase_id, unmet, force)


def check_rollback_subtree(
    phase_id: str,
    leaf_states: Mapping[str, State],
    dependents: Mapping[str, State],
    force: bool,
) -> Decision:
    """May a composite roll back now? Nothing under it was attempted: nothing to do;
    attempted dependents outside it block it unless forced."""
    if not any(s in ATTEMPTED for s in leaf_states.values()):
        return Decision(Verdict.SKIP, f"phase {phase_id} is unstarted: nothing to roll back")
    return _dependents(phase_id, dependents, force)


def rollback_targets(leaf_states: Mapping[str, State]) -> list[str]:
    """The leaves a rollback undoes: those that were attempted."""
    return [p for p, s in leaf_states.items() if s in ATTEMPTED]


class Recovery(enum.StrEnum):
    """What a new driver does with a leaf it finds, before it runs anything."""

    NOTHING = "nothing"  # not in progress
    ADOPT = "adopt"  # a live agent still runs it: wait for its result
    INTERRUPT = "interrupt"  # its owner is gone: record it failed, then it may run again
    REFUSE = "refuse"  # another live process runs it


def recovery(state: PhaseState, *, owner_alive: bool, owner_is_agent: bool,
             can_adopt: bool) -> Recovery:
    """A phase left in progress: adopted when a live agent runs it and this driver can wait
    for agents; refused when any other live process runs it; interrupted when its owner is
    gone (--force never overrides a live owner)."""
    if state.state is not State.IN_PROGRESS:
        return Recovery.NOTHING
    if not owner_alive:
        return Recovery.INTERRUPT
    if owner_is_agent and can_adopt:
        return Recovery.ADOPT
    return Recovery.REFUSE


def settled(state: State, *, targeted: bool, backward: bool, force: bool) -> bool:
    """Is a leaf already where this run wants it, so its dependents need not wait for it?

    A targeted leaf is settled only when executing and already completed (unless forced);
    an untargeted one when it is completed (executing) or holds no effect (rolling back).
    Forcing treats every untargeted leaf as settled."""
    if targeted:
        return not backward and state is State.COMPLETED and not force
    if force:
        return True
    return state not in ATTEMPTED if backward else state is State.COMPLETED


def result_transition(current: PhaseState, *, error: str | None, note: str | None = None,
                      now: float | None = None) -> Transition:
    """How an attempt's end is recorded, by whoever ran it: completed (or rolled back) on
    success, failed with its error otherwise (an undo's error says so)."""
    if error is None:
        to = State.ROLLED_BACK if current.action is Action.ROLLBACK else State.COMPLETED
        return transition(current, to, note=note, now=now)
    if current.action is Action.ROLLBACK and not error.startswith("rollback failed"):
        error = f"rollback failed: {error}"
    return transition(current, State.FAILED, error=error, note=note, now=now)


def transition(
    current: PhaseState,
    to: State,
    *,
    action: Action | None = None,
    owner: int | None = None,
    attempt: int | None = None,
    node: str | None = None,
    error: str | None = None,
    note: str | None = None,
    now: float | None = None,
) -> Transition:
    """The only way to change a phase: validates the move and returns the CAS to apply.

    Entering in_progress sets the owner and action; leaving it must match the
    action (execute -> completed/failed, rollback -> rolled_back/failed) and
    clears the owner.
    """
    if to not in ALLOWED[current.state]:
        raise PhaseConflict(
            f"phase {current.phase_id} cannot go from {current.state.value} to {to.value}",
            phase_id=current.phase_id,
        )
    if to is State.IN_PROGRESS:
        if action is None or owner is None:
            raise ValueError("entering in_progress needs an action and an owner")
        new_action, new_owner = action, owner
    else:
        new_action, new_owner = current.action, None
        if current.state is State.IN_PROGRESS:
            if to is State.COMPLETED and current.action is not Action.EXECUTE:
                raise PhaseConflict(f"phase {current.phase_id} was rolling back; it cannot "
                                    "complete", phase_id=current.phase_id)
            if to is State.ROLLED_BACK and current.action is not Action.ROLLBACK:
                raise PhaseConflict(f"phase {current.phase_id} was executing; it cannot be "
                                    "marked rolled back", phase_id=current.phase_id)
    new = current.advance(
        to,
        action=new_action,
        owner=new_owner,
        attempt=current.attempt if attempt is None else attempt,
        node=node if node is not None else current.node,
        error=error,
        note=note,
        updated=time.time() if now is None else now,
    )
    return Transition.of(current, new)


def interrupt(current: PhaseState, who: str) -> Transition:
    """Mark an in-progress phase whose owner died as failed, so it can be re-run."""
    return transition(current, State.FAILED, error=f"interrupted: {who} lost",
                      note="interrupted")


def operation_outcome(leaf_states: Iterable[State]) -> OpState:
    """What `plan complete` records: completed only if every leaf completed."""
    return (OpState.COMPLETED if all(s is State.COMPLETED for s in leaf_states)
            else OpState.FAILED)


def operation_end(action: Action, leaf_states: Iterable[State]) -> OpState | None:
    """Whether a run ended its operation: every leaf completed (executing), or every
    attempted leaf undone (rolling back). None: the operation stays active."""
    states = list(leaf_states)
    if action is Action.EXECUTE:
        return OpState.COMPLETED if all(s is State.COMPLETED for s in states) else None
    if states and all(s in (State.ROLLED_BACK, State.UNSTARTED) for s in states) and \
            any(s is State.ROLLED_BACK for s in states):
        return OpState.ROLLED_BACK
    return None


def preflight_failed(leaf_states: Mapping[str, State], preflight: Iterable[str]) -> bool:
    """Only phases under the `preflight` subtrees were attempted and one failed: nothing
    changed on the cluster, so the operation may be closed as failed."""
    roots = tuple(preflight)
    attempted = {p: s for p, s in leaf_states.items() if s is not State.UNSTARTED}
    inside = all(any(p == r or p.startswith(r + "/") for r in roots) for p in attempted)
    return bool(attempted) and inside and State.FAILED in attempted.values()


def check_active(current: OpState, *, operation_id: str, verb: str,
                 note: str | None = None) -> None:
    """Raise Refused unless the operation is still active. `gravity plan resume` and `gravity
    plan complete` (`verb`) act on an active operation only, as Gravity's do: on a finished one
    they would do nothing, and exiting 0 would tell automation they had done something."""
    if current is OpState.ACTIVE:
        return
    if current is OpState.FAILED:
        state = f"closed as failed ({note or 'completed manually'})"
        hint = (f"roll it back with `gravity rollback --operation-id {operation_id}`, or "
                "start a new operation")
    elif current is OpState.ROLLED_BACK:
        state = "rolled back"
        hint = ("to try again, start a new operation (the same `gravity upgrade`, "
                "`gravity install` or `gravity operation create` again)")
    else:
        state = current.value
        hint = (f"nothing is left to do (see it with `gravity plan --operation-id "
                f"{operation_id}`); to undo its effects, start a new operation (after an "
                "upgrade: `gravity upgrade` with the previous image)")
    raise Refused(f"operation {operation_id} is already {state}; `gravity plan {verb}` works "
                  "on an active operation only", operation_id=operation_id, hint=hint)


def check_operation_move(current: OpState, to: OpState, *, operation_id: str,
                         note: str | None = None, action: Action | None = None) -> None:
    """Raise PhaseConflict, with what the operator can do instead, unless an operation may
    go from `current` to `to` (OP_ALLOWED). Reopening (to active) is for `action` rollback
    only: a failed operation is never run forward again."""
    reopening_forward = to is OpState.ACTIVE and action is not Action.ROLLBACK
    if to in OP_ALLOWED[current] and not reopening_forward:
        return
    if current is OpState.FAILED:
        raise PhaseConflict(
            f"operation {operation_id} was closed as failed ({note or 'completed manually'}); "
            "it cannot run again", operation_id=operation_id,
            hint=f"roll it back with `gravity rollback --operation-id {operation_id}`, or "
            "start a new operation")
    if current is OpState.ROLLED_BACK:
        raise PhaseConflict(f"operation {operation_id} is already rolled back",
                            operation_id=operation_id, hint="start a new operation")
    if current is OpState.COMPLETED:
        raise PhaseConflict(
            f"operation {operation_id} is completed; a completed operation cannot be changed",
            operation_id=operation_id,
            hint="undo its effects with a new operation (after an upgrade: `gravity upgrade` "
            "with the previous image)")
    raise PhaseConflict(f"operation {operation_id} cannot go from {current.value} to "
                        f"{to.value}", operation_id=operation_id)
