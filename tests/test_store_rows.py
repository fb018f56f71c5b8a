"""What the stores write per transition is built field by field; whatever a phase state holds,
the bytes are those `json.dumps` makes of its `to_dict()`, in each store's own form.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.model import Action, ChangeRecord, PhaseState, State, Transition
from engine.store.etcd_keys import encode, log_value
from engine.store.rows import etcd_values, state_json, transition_rows

texts = st.one_of(st.none(), st.text(max_size=40))
states = st.builds(
    PhaseState, phase_id=st.text(min_size=1, max_size=30), state=st.sampled_from(State),
    version=st.integers(0, 10**9), attempt=st.integers(0, 10**6),
    action=st.sampled_from(Action), owner=st.one_of(st.none(), st.integers(0, 2**62)),
    node=texts, error=texts, note=texts,
    updated=st.one_of(st.floats(0, 4e9), st.floats(), st.integers(0, 2**40)))
transitions = st.builds(Transition, expected=st.integers(0, 10**9), new=states,
                        from_state=st.sampled_from(State))
operations = st.text(min_size=1, max_size=20)


@settings(max_examples=400, deadline=None)
@given(t=transitions, operation=operations, seq=st.integers(1, 2**62))
def test_sqlite_rows_are_json_dumps_of_the_state_and_record(t: Transition, operation: str,
                                                            seq: int) -> None:
    state, record = transition_rows(operation, t, seq)
    assert state == json.dumps(t.new.to_dict()) == state_json(t.new)
    assert record == json.dumps(ChangeRecord.of(operation, t, seq=seq).to_dict())


@settings(max_examples=400, deadline=None)
@given(t=transitions, operation=operations, index=st.integers(0, 999))
def test_etcd_values_are_its_compact_sorted_encoding(t: Transition, operation: str,
                                                     index: int) -> None:
    state, record = etcd_values(operation, t, index)
    assert state == encode(t.new.to_dict())
    assert record == log_value(ChangeRecord.of(operation, t), index)
