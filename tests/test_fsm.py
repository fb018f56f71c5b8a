"""The rules, table-driven over every state x action, with no store: what may execute, what may
roll back, how a composite's state is derived, and which moves `transition` allows.
"""

from __future__ import annotations

import itertools

import pytest

from engine import fsm
from engine.errors import PhaseConflict, Refused
from engine.fsm import Verdict
from engine.model import Action, OpState, PhaseState, State

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
    t = fsm.interrupt(st, "owner (lease 5) of /a")
    assert t.new.state is F
    assert t.new.error == "interrupted: owner (lease 5) of /a lost"
    assert t.new.owner is None


@pytest.mark.parametrize(("leaves", "expected"), [
    ([C, C], OpState.COMPLETED), ([C, F], OpState.FAILED), ([C, U], OpState.FAILED),
    ([R], OpState.FAILED), ([], OpState.COMPLETED),
])
def test_complete_outcome(leaves: list[State], expected: OpState) -> None:
    assert fsm.operation_outcome(leaves) is expected


# (state, owner alive, owner is an agent, this driver can wait for agents) -> what recovery does
@pytest.mark.parametrize(("state", "alive", "agent", "can_adopt", "expected"), [
    (s, alive, agent, adopt,
     fsm.Recovery.NOTHING if s is not P else
     fsm.Recovery.INTERRUPT if not alive else
     fsm.Recovery.ADOPT if agent and adopt else fsm.Recovery.REFUSE)
    for s, alive, agent, adopt in itertools.product(State, (False, True), (False, True),
                                                    (False, True))
])
def test_recovery_of_whatever_a_previous_run_left(state: State, alive: bool, agent: bool,
                                                  can_adopt: bool,
                                                  expected: fsm.Recovery) -> None:
    st = PhaseState("/a", state=state, version=1, owner=7 if state is P else None)
    assert fsm.recovery(st, owner_alive=alive, owner_is_agent=agent,
                        can_adopt=can_adopt) is expected


@pytest.mark.parametrize(("state", "targeted", "backward", "force", "expected"), [
    # executing: a targeted leaf is settled only when already completed and not forced
    (C, True, False, False, True), (C, True, False, True, False), (F, True, False, False, False),
    (U, True, False, False, False),
    # rolling back: a targeted leaf is never settled
    (C, True, True, False, False), (R, True, True, False, False),
    # untargeted leaves: forced runs wait for none of them
    (U, False, False, True, True), (F, False, True, True, True),
    (C, False, False, False, True), (F, False, False, False, False),
    (R, False, True, False, True), (U, False, True, False, True), (C, False, True, False, False),
    (P, False, True, False, False), (F, False, True, False, False),
])
def test_settled_leaves_hold_nobody_up(state: State, targeted: bool, backward: bool,
                                       force: bool, expected: bool) -> None:
    assert fsm.settled(state, targeted=targeted, backward=backward, force=force) is expected


@pytest.mark.parametrize(("action", "error", "to", "recorded_error"), [
    (Action.EXECUTE, None, C, None),
    (Action.ROLLBACK, None, R, None),
    (Action.EXECUTE, "exit 1", F, "exit 1"),
    (Action.ROLLBACK, "exit 1", F, "rollback failed: exit 1"),
    (Action.ROLLBACK, "rollback failed: exit 1", F, "rollback failed: exit 1"),
])
def test_a_result_becomes_one_transition(action: Action, error: str | None, to: State,
                                         recorded_error: str | None) -> None:
    running = PhaseState("/a", state=P, version=3, owner=9, action=action, attempt=2)
    t = fsm.result_transition(running, error=error, note="n", now=5.0)
    assert (t.expected, t.new.state, t.new.error, t.new.note) == (3, to, recorded_error, "n")
    assert (t.new.owner, t.new.attempt, t.new.updated) == (None, 2, 5.0)


@pytest.mark.parametrize(("action", "leaves", "expected"), [
    (Action.EXECUTE, [C, C], OpState.COMPLETED),
    (Action.EXECUTE, [C, F], None),
    (Action.EXECUTE, [C, U], None),
    (Action.ROLLBACK, [R, U], OpState.ROLLED_BACK),
    (Action.ROLLBACK, [R, R], OpState.ROLLED_BACK),
    (Action.ROLLBACK, [U, U], None),
    (Action.ROLLBACK, [R, F], None),
    (Action.ROLLBACK, [R, C], None),
    (Action.ROLLBACK, [], None),
])
def test_when_a_run_ends_its_operation(action: Action, leaves: list[State],
                                       expected: OpState | None) -> None:
    assert fsm.operation_end(action, leaves) is expected


@pytest.mark.parametrize(("states", "expected"), [
    ({"/init/a": F, "/checks/b": U, "/install": U}, True),
    ({"/init/a": C, "/checks/b": F, "/install": U}, True),
    ({"/init/a": C, "/checks/b": C, "/install": F}, False),  # past preflight: keep it open
    ({"/init/a": C, "/checks/b": U, "/install": U}, False),  # nothing failed
    ({"/init/a": U, "/install": U}, False),  # nothing attempted
    ({"/initial": F}, False),  # only a name that starts like a preflight phase
])
def test_a_failed_preflight_may_close_its_operation(states: dict[str, State],
                                                    expected: bool) -> None:
    assert fsm.preflight_failed(states, ("/init", "/checks")) is expected


@pytest.mark.parametrize(("current", "to", "action"), list(itertools.product(
    OpState, OpState, (None, Action.EXECUTE, Action.ROLLBACK))))
def test_operation_moves_follow_their_table(current: OpState, to: OpState,
                                            action: Action | None) -> None:
    allowed = to in fsm.OP_ALLOWED[current] and (to is not OpState.ACTIVE
                                                 or action is Action.ROLLBACK)
    if allowed:
        fsm.check_operation_move(current, to, operation_id="op1", action=action)
        return
    with pytest.raises(PhaseConflict) as raised:
        fsm.check_operation_move(current, to, operation_id="op1", action=action)
    assert raised.value.operation_id == "op1"
    assert "op1" in raised.value.message


@pytest.mark.parametrize("current", list(OpState))
@pytest.mark.parametrize("verb", ["resume", "complete"])
def test_resume_and_complete_act_on_an_active_operation_only(current: OpState,
                                                             verb: str) -> None:
    if current is OpState.ACTIVE:
        fsm.check_active(current, operation_id="op1", verb=verb)
        return
    with pytest.raises(Refused) as raised:
        fsm.check_active(current, operation_id="op1", verb=verb, note="preflight failed")
    error = raised.value
    assert error.exit_code == 3 and error.operation_id == "op1"
    assert error.message.startswith("operation op1 is already ")
    assert f"`gravity plan {verb}` works on an active operation only" in error.message
    assert error.hint and "gravity" in error.hint  # names the next command
    if current is OpState.FAILED:
        assert "closed as failed (preflight failed)" in error.message
        assert "gravity rollback --operation-id op1" in error.hint


def test_only_a_failed_operation_reopens_and_only_to_roll_back() -> None:
    reopenable = [(c, a) for c in OpState for a in Action
                  if OpState.ACTIVE in fsm.OP_ALLOWED[c] and a is Action.ROLLBACK]
    assert reopenable == [(OpState.FAILED, Action.ROLLBACK)]
    with pytest.raises(PhaseConflict, match="closed as failed"):
        fsm.check_operation_move(OpState.FAILED, OpState.ACTIVE, operation_id="op1",
                                 action=Action.EXECUTE)


@pytest.mark.parametrize(("leaves", "unmet", "force", "expected"), [
    ({"/g/a": C, "/g/b": C}, {}, False, SKIP),
    ({"/g/a": C, "/g/b": C}, {"/x": U}, False, SKIP),  # all done: nothing to run, say so
    ({"/g/a": C, "/g/b": C}, {}, True, RUN),
    ({"/g/a": C, "/g/b": U}, {}, False, RUN),
    ({"/g/a": C, "/g/b": U}, {"/x": F}, False, REFUSE),
    ({"/g/a": C, "/g/b": U}, {"/x": F}, True, RUN),
])
def test_a_subtree_executes_when_its_requirements_are_met(
        leaves: dict[str, State], unmet: dict[str, State], force: bool,
        expected: Verdict) -> None:
    decision = fsm.check_execute_subtree("/g", leaves, unmet, force)
    assert decision.verdict is expected
    if expected is REFUSE:
        assert decision.blockers == ("/x",)


@pytest.mark.parametrize(("leaves", "dependents", "force", "expected"), [
    ({"/g/a": U, "/g/b": R}, {}, False, SKIP),
    ({"/g/a": C, "/g/b": U}, {}, False, RUN),
    ({"/g/a": F}, {"/z": C}, False, REFUSE),
    ({"/g/a": F}, {"/z": C}, True, RUN),
    ({"/g/a": C}, {"/z": R}, False, RUN),
    ({"/g/a": P}, {"/z": U}, False, RUN),
])
def test_a_subtree_rolls_back_before_nothing_that_depends_on_it(
        leaves: dict[str, State], dependents: dict[str, State], force: bool,
        expected: Verdict) -> None:
    assert fsm.check_rollback_subtree("/g", leaves, dependents, force).verdict is expected
    targets = fsm.rollback_targets(leaves)
    assert targets == [p for p, s in leaves.items() if s in (C, F, P)]
