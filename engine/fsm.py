"""The rules of phases, pure and exhaustive: derived composite state, may-execute, may-roll-back,
and the one validated function every state change goes through. No I/O here.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from engine.errors import PhaseConflict
from engine.model import Action, PhaseState, State, Transition

# Which stored states a leaf may move to, by action of the in-progress run.
ALLOWED: dict[State, frozenset[State]] = {
    State.UNSTARTED: frozenset({State.IN_PROGRESS}),
    State.IN_PROGRESS: frozenset({State.COMPLETED, State.FAILED, State.ROLLED_BACK}),
    State.COMPLETED: frozenset({State.IN_PROGRESS}),
    State.FAILED: frozenset({State.IN_PROGRESS}),
    State.ROLLED_BACK: frozenset({State.IN_PROGRESS}),
}

# States of a dependent that block rolling back what it depends on.
ROLLBACK_BLOCKING = frozenset({State.COMPLETED, State.FAILED, State.IN_PROGRESS})
# States of a leaf that have an effect worth undoing.
ROLLBACK_CANDIDATES = frozenset({State.COMPLETED, State.FAILED, State.IN_PROGRESS})


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


def is_interrupted(state: PhaseState, owner_alive: bool) -> bool:
    """An in-progress phase whose owner is gone was interrupted and may be re-run."""
    return state.state is State.IN_PROGRESS and not owner_alive


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
    if unmet and not force:
        names = sorted(unmet)
        listing = ", ".join(f"{p} ({unmet[p].value})" for p in names)
        return Decision(Verdict.REFUSE, f"phase {state.phase_id} requires phases that are not "
                        f"completed: {listing}", tuple(names))
    return Decision(Verdict.RUN)


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
    if state.state not in ROLLBACK_CANDIDATES:
        return Decision(Verdict.SKIP, f"phase {state.phase_id} is {state.state.value}: "
                        "nothing to roll back")
    blockers = sorted(p for p, s in dependents.items() if s in ROLLBACK_BLOCKING)
    if blockers and not force:
        listing = ", ".join(f"{p} ({dependents[p].value})" for p in blockers)
        return Decision(Verdict.REFUSE, f"phase {state.phase_id} cannot be rolled back before "
                        f"the phases that depend on it: {listing}", tuple(blockers))
    return Decision(Verdict.RUN)


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
    return Transition(expected=current.version, new=new, from_state=current.state)


def interrupt(current: PhaseState, who: str) -> Transition:
    """Mark an in-progress phase whose owner died as failed, so it can be re-run."""
    return transition(current, State.FAILED, error=f"interrupted: {who} lost",
                      note="interrupted")


def operation_outcome(leaf_states: Iterable[State]) -> State:
    """What `plan complete` records: completed only if every leaf completed."""
    return State.COMPLETED if all(s is State.COMPLETED for s in leaf_states) else State.FAILED
