"""The etcd store's index of top-level phases (`data/<op>/top/<index>`, written with the specs)
and the Outline read from it and from the state index (`data/<op>/ix/...`), without the plan.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pyetcd import etcdrpc

from engine.model import PhaseSpec, PhaseState, State
from engine.outline import Outline, Tally, spec_ranges, top_leaves, top_of
from engine.store.etcd_keys import Keys, decode, encode, ix_updated, span, unesc

if TYPE_CHECKING:
    from engine.store.etcd_conn import Connection

GETS = 100  # reads in one transaction (etcd's --max-txn-ops is 128)
BY_GETS = 1000  # above this many top-level phases, the whole plan is read in ranges instead
# Up to this many top-level phases, their leaves are counted from the state index (5 range
# requests each); above it every state is read.
BY_COUNTS = 500
_STATES = {s.value.encode(): s for s in State}
_ESCAPED = re.compile(rb"[A-Za-z0-9_.~%-]+")  # etcd_keys' escaped ID segment


def top_items(keys: Keys, op_id: str, specs: Sequence[PhaseSpec]) -> list[tuple[bytes, bytes]]:
    """The index keys of an operation's top-level phases, written with its specs. `ix` says
    that the operation's states were indexed (`Keys.ixs`) from the start."""
    return [(keys.top(op_id, idx), encode({"leaves": leaves, "ix": 1}))
            for idx, leaves in top_leaves(specs)]


def read_outline(conn: Connection, keys: Keys, op_id: str) -> Outline | None:
    """The operation's Outline from its index, or None when it has none (written before)."""
    what = f"reading the plan of {op_id}"
    rows, _ = conn.scan(what, *span(keys.tops(op_id)))
    entries = [(int(key.rsplit(b"/", 1)[1]), decode(kv.value)) for key, kv in rows
               if keys.owns(key)]
    if not entries:
        return None
    index = [(idx, entry["leaves"]) for idx, entry in entries]
    indexed = all(entry.get("ix") == 1 for _, entry in entries)
    specs = _top_specs(conn, keys, op_id, [idx for idx, _ in index], what)
    if specs is None or any(s.parent for s in specs):
        return None
    starts = {s.id: idx for s, (idx, _) in zip(specs, index, strict=True)}
    leaves = {s.id: n for s, (_, n) in zip(specs, index, strict=True)}
    if indexed and len(specs) <= BY_COUNTS:
        tally = conn.call(what, lambda client: _count(client, keys, op_id, specs, leaves))
        if tally is not None:
            return tally.outline(specs, leaves, _ranks(conn, keys, op_id, starts, tally.failed))
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


def _count(client: Any, keys: Keys, op_id: str, specs: list[PhaseSpec],
           leaves: dict[str, int]) -> Tally | None:
    """The tally from the state index, read at one revision: per top-level phase and state,
    the first index key alone (its answer counts the keys; the first is the newest), then the
    stored states of the failed leaves and of each top-level leaf. None when the index does
    not hold one key per stored state (the caller then reads every state)."""
    head = _ranges(client, [_range(keys.states(op_id), count_only=True)])[0]
    rev, stored = head.header.revision, head.count
    answers = iter(_ranges(client, [_range(keys.ixs(op_id, spec.id, state), rev, limit=1)
                                    for spec in specs for state in State]))
    tally = Tally(leaves)
    look: list[bytes] = []  # the state keys to read: failed leaves, top-level leaves
    for spec in specs:
        found = {state: next(answers) for state in State}
        counts = {state: answer.count for state, answer in found.items() if answer.count}
        updated = max((ix_updated(a.kvs[0].value) for a in found.values() if a.kvs), default=0.0)
        for state, n in counts.items():
            tally.count(spec.id, state, updated, n)
        stored -= sum(counts.values())
        if counts.get(State.FAILED):
            failed = _ranges(client, [_range(keys.ixs(op_id, spec.id, State.FAILED), rev,
                                             keys_only=True)])[0].kvs
            look += [keys.state(op_id, unesc(kv.key.rsplit(b"/", 1)[1].decode("ascii")))
                     for kv in failed]
        elif spec.is_leaf and counts:
            look.append(keys.state(op_id, spec.id))
    if stored:
        return None
    for answer in _ranges(client, [_range(key, rev) for key in look]):
        for kv in answer.kvs:
            tally.keep(PhaseState.from_dict(decode(kv.value)))
    return tally


def _range(key: bytes, revision: int = 0, **fields: Any) -> etcdrpc.RangeRequest:
    """A range request for every key under `key` (a prefix ending in '/'), or the key alone
    when it names one; at `revision` (0: the newest)."""
    end = span(key)[1] if key.endswith(b"/") else b""
    return etcdrpc.RangeRequest(key=key, range_end=end, revision=revision, **fields)


def _ranges(client: Any, asks: Sequence[etcdrpc.RangeRequest]) -> list[Any]:
    """The answers to range requests, GETS to one read-only transaction."""
    out: list[Any] = []
    for start in range(0, len(asks), GETS):
        txn = etcdrpc.TxnRequest(success=[etcdrpc.RequestOp(request_range=r)
                                          for r in asks[start:start + GETS]])
        resp = client.kvstub.Txn(txn, client.timeout, credentials=client.call_credentials,
                                 metadata=client.metadata)
        out += [r.response_range for r in resp.responses]
    return out


def _top_specs(conn: Connection, keys: Keys, op_id: str, indexes: list[int],
               what: str) -> list[PhaseSpec] | None:
    """The specs at `indexes`: a few transactions of reads, or the whole plan when many."""
    if len(indexes) > BY_GETS:
        rows, _ = conn.scan(what, *span(keys.specs(op_id)))
        by_key = {key: kv.value for key, kv in rows}
        values = [by_key.get(keys.spec(op_id, idx)) for idx in indexes]
    else:
        asks = [_range(keys.spec(op_id, idx)) for idx in indexes]
        values = [answer.kvs[0].value if answer.kvs else None
                  for answer in conn.call(what, lambda client: _ranges(client, asks))]
    if any(v is None for v in values):
        return None
    return [PhaseSpec.from_dict(decode(v)) for v in values]


def _ranks(conn: Connection, keys: Keys, op_id: str, starts: dict[str, int],
           failed: list[PhaseState]) -> dict[str, int]:
    """The spec index of each failed phase: read from its top-level phase's specs alone."""
    ranges = spec_ranges(starts)
    rank: dict[str, int] = {}
    for top in {top_of(st.phase_id) for st in failed}:
        first, after = ranges[top]
        end = keys.spec(op_id, after) if after is not None else span(keys.specs(op_id))[1]
        rows, _ = conn.scan(f"reading the plan of {op_id}", keys.spec(op_id, first), end)
        rank.update((decode(kv.value)["id"], int(key.rsplit(b"/", 1)[1]))
                    for key, kv in rows if keys.owns(key))
    return rank


__all__ = ["read_outline", "top_items"]
