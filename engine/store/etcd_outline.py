"""The etcd store's index of top-level phases (`data/<op>/top/<index>`, written with the specs)
and the Outline read from it: the top-level specs alone, and every state tallied without decoding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pyetcd import transactions as tx

from engine.model import PhaseSpec, PhaseState, State
from engine.outline import Outline, Tally, top_leaves, top_of
from engine.store.etcd_keys import Keys, decode, encode, span, unesc

if TYPE_CHECKING:
    from engine.store.etcd_conn import Connection

GETS = 100  # reads in one transaction (etcd's --max-txn-ops is 128)
BY_GETS = 1000  # above this many top-level phases, the whole plan is read in ranges instead
_STATES = {s.value.encode(): s for s in State}
_ESCAPED = re.compile(rb"[A-Za-z0-9_.~%-]+")  # etcd_keys' escaped ID segment


def top_items(keys: Keys, op_id: str, specs: Sequence[PhaseSpec]) -> list[tuple[bytes, bytes]]:
    """The index keys of an operation's top-level phases, written with its specs."""
    return [(keys.top(op_id, idx), encode({"leaves": leaves}))
            for idx, leaves in top_leaves(specs)]


def read_outline(conn: Connection, keys: Keys, op_id: str) -> Outline | None:
    """The operation's Outline from its index, or None when it has none (written before)."""
    what = f"reading the plan of {op_id}"
    rows, _ = conn.scan(what, *span(keys.tops(op_id)))
    index = [(int(key.rsplit(b"/", 1)[1]), decode(kv.value)["leaves"]) for key, kv in rows
             if keys.owns(key)]
    if not index:
        return None
    specs = _top_specs(conn, keys, op_id, [idx for idx, _ in index], what)
    if specs is None or any(s.parent for s in specs):
        return None
    starts = {s.id: idx for s, (idx, _) in zip(specs, index, strict=True)}
    leaves = {s.id: n for s, (_, n) in zip(specs, index, strict=True)}
    tally = Tally(leaves)
    rows, _ = conn.scan(f"reading phase states of {op_id}", *span(keys.states(op_id)))
    head = len(keys.states(op_id))
    seen: dict[tuple[bytes, bytes], list[Any]] = {}  # (escaped top, state) -> [n, newest]
    ours = _ESCAPED.fullmatch  # the rest of a state key of ours: one escaped ID
    for key, kv in rows:
        if ours(key, head) is None:
            continue
        value = kv.value
        cut = key.find(b"%2F", head + 3)  # an escaped ID starts with `%2F` (its `/`)
        at = value.find(b',"state":"') + 10
        end = value.find(b'"', at)
        state = value[at:end]
        if cut < 0 or at < 10 or state == b"failed" or state not in _STATES:
            # a top-level leaf, a failed one, or a value not in encode's form: decoded
            tally.add(PhaseState.from_dict(decode(value)))
            continue
        at = value.find(b',"updated":', end) + 11
        try:
            updated = float(value[at:value.find(b",", at)])
        except ValueError:
            tally.add(PhaseState.from_dict(decode(value)))
            continue
        slot = seen.get((key[head:cut], state))
        if slot is None:
            seen[(key[head:cut], state)] = [1, updated]
        else:
            slot[0] += 1
            if updated > slot[1]:
                slot[1] = updated
    for (segment, state), (n, updated) in seen.items():
        tally.count(unesc(segment.decode("ascii")), _STATES[state], updated, n)
    return tally.outline(specs, leaves, _ranks(conn, keys, op_id, starts, tally.failed))


def _top_specs(conn: Connection, keys: Keys, op_id: str, indexes: list[int],
               what: str) -> list[PhaseSpec] | None:
    """The specs at `indexes`: a few transactions of reads, or the whole plan when many."""
    if len(indexes) > BY_GETS:
        rows, _ = conn.scan(what, *span(keys.specs(op_id)))
        by_key = {key: kv.value for key, kv in rows}
        values = [by_key.get(keys.spec(op_id, idx)) for idx in indexes]
    else:
        values = []
        for start in range(0, len(indexes), GETS):
            chunk = [keys.spec(op_id, idx) for idx in indexes[start:start + GETS]]

            def read(client: Any, chunk: list[bytes] = chunk) -> list[Any]:
                _, responses = client.transaction(compare=[], success=[tx.Get(k) for k in chunk],
                                                  failure=[])
                return responses

            values += [found[0][0] if found else None for found in conn.call(what, read)]
    if any(v is None for v in values):
        return None
    return [PhaseSpec.from_dict(decode(v)) for v in values]


def _ranks(conn: Connection, keys: Keys, op_id: str, starts: dict[str, int],
           failed: list[PhaseState]) -> dict[str, int]:
    """The spec index of each failed phase: read from its top-level phase's specs alone."""
    ends = dict(zip(starts, [*list(starts.values())[1:], None], strict=True))
    rank: dict[str, int] = {}
    for top in {top_of(st.phase_id) for st in failed}:
        start = keys.spec(op_id, starts[top])
        end = keys.spec(op_id, ends[top]) if ends[top] is not None else \
            span(keys.specs(op_id))[1]
        rows, _ = conn.scan(f"reading the plan of {op_id}", start, end)
        rank.update((decode(kv.value)["id"], int(key.rsplit(b"/", 1)[1]))
                    for key, kv in rows if keys.owns(key))
    return rank


__all__ = ["read_outline", "top_items"]
