"""The rules, table-driven over every state x action, with no store: what may execute, what may
roll back, how a composite's state is derived, and which moves `transition` allows.
"""

from __future__ import annotations

import itertools

import pytest

from engine import fsm
from engine.errors import PhaseConflict
from engine.fsm import Verdict
from engine.model import Action, PhaseState, State

U, P, C, F, R = (State.UNSTARTED, State.IN_PROGRESS, State.COMPLETED, State.FAILED,
                 State.ROLLED_BACK)
RUN, SKIP, REFUSE = Verdict.RUN, Verdict.SKIP, Verdict.REFUSE

# (state, owner alive) -> {(unmet requirements?, --force?): verdict}
EXECUTE_TABLE = {
    (U, False): {(False, False): RUN, (True, False): REFUSE, (False, True): RUN, (True, True): RUN},
    (P, True): {(False, False): REFUSE, (True, False): REFUSE, (False, True): REFUSE,
                (True, True): REFUSE},
    (P, False): {(False, False): RUN, (True, False): REFUSE, (False, True): RUN,
                 (True, True): RUN},
    (C, False): {(False, False): SKIP, (True, False): SKIP, (False, True): RUN, (True, True): RUN},
    (F, False): {(False, False): RUN, (True, False): REFUSE, (False, True): RUN, (True, True): RUN},
    (R, False): {(False, False): RUN, (True, False): REFUSE, (False, True): RUN, (True, True): RUN},
}

# (state, owner alive) -> {(blocking dependents?, --force?): verdict}
ROLLBACK_TABLE = {
    (U, False): {(False, False): SKIP, (True, False): SKIP, (False, True): SKIP,
                 (True, True): SKIP},
    (P, True): {(False, False): REFUSE, (True, False): REFUSE, (False, True): REFUSE,
                (True, True): REFUSE},
    (P, False): {(False, False): RUN, (True, False): REFUSE, (False, True): RUN,
                 (True, True): RUN},
    (C, False): {(False, False): RUN, (True, False): REFUSE, (False, True): RUN,
                 (True, True): RUN},
    (F, False): {(False, False): RUN, (True, False): REFUSE, (False, True): RUN,
                 (True, True): RUN},
    (R, False): {(False, False): SKIP, (True, False): SKIP, (False, True): SKIP,
                 (True, True): SKIP},
}


def _phase(state: State) -> PhaseState:
    return PhaseState("/a", state=state, version=3, owner=7 if state is P else None)


@pytest.mark.parametrize(("key", "case"), [
    (key, case) for key, row in EXECUTE_TABLE.items() for case in row
])
def test_execute_rules(key: tuple[State, bool], case: tuple[bool, bool]) -> None:
    state, alive = key
    unmet, force = case
    decision = fsm.check_execute(_phase(state), alive, {"/req": U} if unmet else {}, force)
    assert decision.verdict is EXECUTE_TABLE[key][case]
    if decision.verdict is REFUSE and unmet and not (state is P and alive):
        assert decision.blockers == ("/req",)
        assert "/req (unstarted)" in decision.reason


@pytest.mark.parametrize(("key", "case"), [
    (key, case) for key, row in ROLLBACK_TABLE.items() for case in row
])
def test_rollback_rules(key: tuple[State, bool], case: tuple[bool, bool]) -> None:
    state, alive = key
    blocking, force = case
    dependents = {"/dep": C, "/later": U, "/undone": R} if blocking else {"/later": U,
                                                                          "/undone": R}
    decision = fsm.check_rollback(_phase(state), alive, dependents, force)
    assert decision.verdict is ROLLBACK_TABLE[key][case]
    if decision.verdict is REFUSE and blocking and not (state is P and alive):
        assert decision.blockers == ("/dep",), "only completed/failed/running dependents block"


@pytest.mark.parametrize("blocking_state", [C, F, P])
def test_rollback_blocked_by_each_active_dependent_state(blocking_state: State) -> None:
    decision = fsm.check_rollback(_phase(C), False, {"/dep": blocking_state}, False)
    assert decision.verdict is REFUSE
    assert f"/dep ({blocking_state.value})" in decision.reason


def test_every_state_is_in_both_tables() -> None:
    assert {s for s, _ in EXECUTE_TABLE} == set(State)
    assert {s for s, _ in ROLLBACK_TABLE} == set(State)


@pytest.mark.parametrize(("children", "expected"), [
    ([], U),
    ([U, U], U), ([C, C, C], C), ([F], F), ([P, P], P), ([R, R], R),
    ([C, F], F), ([U, F, R], F), ([P, F], F),
    ([C, P], P), ([U, P], P), ([R, P], P),
    ([U, R], R), ([R, U, U], R),
    ([C, U], P), ([C, R], P), ([C, R, U], P),
])
def test_composite_state_is_derived(children: list[State], expected: State) -> None:
    assert fsm.derive(children) is expected


ALLOWED_MOVES = {(U, P), (P, C), (P, F), (P, R), (C, P), (F, P), (R, P)}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(State, State)))
def test_transition_allows_only_the_table(src: State, dst: State) -> None:
    cur = PhaseState("/a", state=src, version=4, owner=1 if src is P else None,
                     action=Action.ROLLBACK if dst is R else Action.EXECUTE)
    if (src, dst) not in ALLOWED_MOVES:
        with pytest.raises(PhaseConflict):
            fsm.transition(cur, dst, action=Action.EXECUTE, owner=9)
        return
    t = fsm.transition(cur, dst, action=Action.EXECUTE, owner=9, error="e" if dst is F else None)
    assert t.expected == 4
    assert t.new.version == 5
    assert t.from_state is src
    assert t.new.state is dst
    assert t.new.owner == (9 if dst is P else None)


def test_leaving_in_progress_must_match_the_action() -> None:
    executing = PhaseState("/a", state=P, version=1, owner=1, action=Action.EXECUTE)
    rolling_back = PhaseState("/a", state=P, version=1, owner=1, action=Action.ROLLBACK)
    with pytest.raises(PhaseConflict, match="was executing"):
        fsm.transition(executing, R)
    with pytest.raises(PhaseConflict, match="was rolling back"):
        fsm.transition(rolling_back, C)
    assert fsm.transition(rolling_back, F, error="x").new.state is F


def test_interrupt_marks_a_dead_owners_phase_failed() -> None:
    st = PhaseState("/a", state=P, version=2, owner=5)
    assert fsm.is_interrupted(st, owner_alive=False)
    assert not fsm.is_interrupted(st, owner_alive=True)
    t = fsm.interrupt(st, "owner (lease 5) of /a")
    assert t.new.state is F
    assert t.new.error == "interrupted: owner (lease 5) of /a lost"
    assert t.new.owner is None


@pytest.mark.parametrize(("leaves", "expected"), [
    ([C, C], C), ([C, F], F), ([C, U], F), ([R], F), ([], C),
])
def test_complete_outcome(leaves: list[State], expected: State) -> None:
    assert fsm.operation_outcome(leaves) is expected
