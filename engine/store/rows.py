"""The JSON a store writes for each transition — the phase's new state and its changelog record —
built field by field, each text escaped once for both: the bytes `json.dumps` of `to_dict()` makes.
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring_ascii as json_str

from engine.model import PhaseState, Transition


def json_text(value: str | None) -> str:
    """A JSON string (ASCII, as `json.dumps` escapes it) or null."""
    return "null" if value is None else json_str(value)


def json_int(value: int | None) -> str:
    return "null" if value is None else int.__repr__(value)


def json_float(value: float) -> str:
    """A number as `json.dumps` writes it: a float's repr, but NaN / Infinity / -Infinity."""
    if value.__class__ is float and math.isfinite(value):
        return float.__repr__(value)
    return json.dumps(value)


def state_json(st: PhaseState) -> str:
    """`json.dumps(st.to_dict())` (SQLite's `states.data`)."""
    return (f'{{"phase_id": {json_str(st.phase_id)}, "state": "{st.state.value}", '
            f'"version": {json_int(st.version)}, "attempt": {json_int(st.attempt)}, '
            f'"action": "{st.action.value}", "owner": {json_int(st.owner)}, '
            f'"node": {json_text(st.node)}, "error": {json_text(st.error)}, '
            f'"note": {json_text(st.note)}, "updated": {json_float(st.updated)}}}')


def _escaped(n: PhaseState) -> tuple[str, ...]:
    """A new phase state's fields as JSON texts, once for both its state and its record:
    phase, version, attempt, action, owner, node, error, note, updated time, state."""
    return (json_str(n.phase_id), json_int(n.version), json_int(n.attempt), n.action.value,
            json_int(n.owner), json_text(n.node), json_text(n.error), json_text(n.note),
            json_float(n.updated), n.state.value)


def transition_rows(operation: str, t: Transition, seq: int) -> tuple[str, str]:
    """The phase's new state and its changelog record (seq `seq`) as SQLite stores them:
    `json.dumps` of `t.new.to_dict()` and of `ChangeRecord.of(operation, t, seq).to_dict()`,
    sharing the escaped texts (tests/test_store_rows.py holds them equal)."""
    phase_id, version, attempt, action, owner, node, error, note, at, to = _escaped(t.new)
    state = (f'{{"phase_id": {phase_id}, "state": "{to}", "version": {version}, '
             f'"attempt": {attempt}, "action": "{action}", "owner": {owner}, "node": {node}, '
             f'"error": {error}, "note": {note}, "updated": {at}}}')
    record = (f'{{"seq": {json_int(seq)}, "operation_id": {json_str(operation)}, '
              f'"phase_id": {phase_id}, "version": {version}, "from_state": '
              f'"{t.from_state.value}", "to_state": "{to}", "action": "{action}", '
              f'"attempt": {attempt}, "owner": {owner}, "node": {node}, "error": {error}, '
              f'"note": {note}, "at": {at}}}')
    return state, record


def etcd_values(operation: str, t: Transition, index: int) -> tuple[bytes, bytes]:
    """The phase's new state and its changelog record as etcd stores them (compact, keys
    sorted; the record without its seq, with its `index` in the transaction): etcd_keys'
    `encode(t.new.to_dict())` and `log_value(ChangeRecord.of(operation, t), index)`."""
    phase_id, version, attempt, action, owner, node, error, note, at, to = _escaped(t.new)
    state = (f'{{"action":"{action}","attempt":{attempt},"error":{error},"node":{node},'
             f'"note":{note},"owner":{owner},"phase_id":{phase_id},"state":"{to}",'
             f'"updated":{at},"version":{version}}}')
    record = (f'{{"action":"{action}","at":{at},"attempt":{attempt},"error":{error},'
              f'"from_state":"{t.from_state.value}","index":{json_int(index)},"node":{node},'
              f'"note":{note},"operation_id":{json_str(operation)},"owner":{owner},'
              f'"phase_id":{phase_id},"to_state":"{to}","version":{version}}}')
    return state.encode(), record.encode()


__all__ = ["etcd_values", "json_float", "json_int", "json_text", "state_json",
           "transition_rows"]
