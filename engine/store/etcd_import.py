"""Raw import of a whole operation into etcd, for `gravity store copy` (engine.store.copy).
Keeps versions and changelog order; the operation record is written last, so a partial import
is invisible.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

from pyetcd import transactions as tx

from engine.errors import EngineError, StoreError, StoreUnavailable
from engine.model import ChangeRecord, Operation, PhaseSpec, PhaseState
from engine.store.base import operation_exists
from engine.store.etcd_claim import Claim, claimed
from engine.store.etcd_keys import encode, ix_items, log_value
from engine.store.etcd_limits import MAX_TXN_BYTES
from engine.store.etcd_ops import OperationRecords, plan_items
from engine.store.etcd_spans import batches

# Compares + puts of one state round must stay under etcd's --max-txn-ops (128).
STATE_BATCH = 100
# Changelog records per transaction: well inside --max-txn-ops and (records being bounded in
# size, engine.model.MAX_ERROR_BYTES) the bytes limit.
LOG_BATCH = 50


def import_operation(store: OperationRecords, op: Operation, specs: Sequence[PhaseSpec],
                     states: Sequence[PhaseState], records: Sequence[ChangeRecord], *,
                     replace: bool = False) -> bool:
    """Write `op` with its specs, states and changelog; returns whether it took the lock.

    A state at version N must sit on a key whose etcd version is N (that is what
    `apply` compares), so states are written in rounds: round k puts version k of
    every state that reached it, taken from the changelog (the state that record
    left behind) or, if the log lacks it, the final state relabelled as version k.
    Each round compares the key's etcd version, so a retried round never bumps a
    key twice. Records keep their order, written in batches of LOG_BATCH, so their seqs
    (etcd revision, then place in the batch) follow the source's.
    """
    keys = store.keys
    what = f"importing operation {op.id}"
    ordered = sorted(records, key=lambda r: r.seq)
    if len({r.seq for r in ordered}) != len(ordered) or any(r.seq <= 0 for r in ordered):
        raise ValueError(f"changelog of {op.id} has duplicate or non-positive seqs")
    if len({(r.phase_id, r.version) for r in ordered}) != len(ordered):
        raise ValueError(f"changelog of {op.id} records one phase version twice")
    if store._conn.get(what, keys.op(op.id)) is not None and not replace:
        raise operation_exists(op.id, copying=True)
    with claimed(store, op.id, what) as claim:
        if store._conn.get(what, keys.op(op.id)) is not None:
            _remove(store, op.id, what)
        store.clear_unpublished(claim)
        return _write(store, claim, op, specs, states, ordered, what)


def _write(store: OperationRecords, claim: Claim, op: Operation, specs: Sequence[PhaseSpec],
           states: Sequence[PhaseState], ordered: list[ChangeRecord], what: str) -> bool:
    """The import's writes under its claim, the record last; on failure, none visible."""
    keys = store.keys
    items = plan_items(keys, op.id, specs) + ix_items(keys, op.id, states)
    log_batches = [
        [(keys.log(op.id, r.node, r.phase_id, r.version, r.to_state),
          log_value(dataclasses.replace(r, operation_id=op.id), i)) for i, r in enumerate(run)]
        for run in batches(ordered, LOG_BATCH, lambda r: 1, LOG_BATCH)
    ]
    history = {(r.phase_id, r.version): r.state_after() for r in ordered}
    try:
        store.write_unpublished(claim, items, what, copying=True)
        for log_items in log_batches:  # one transaction each, so one revision each
            store.write_unpublished(claim, log_items, what, copying=True, in_order=True)
        top = max((s.version for s in states), default=0)
        for k in range(1, top + 1):
            round_items = []
            for s in states:
                if s.version < k:
                    continue
                step = s if s.version == k else history.get((s.phase_id, k))
                if step is None:
                    step = dataclasses.replace(s, version=k)
                round_items.append((keys.state(op.id, s.phase_id), encode(step.to_dict())))
            _put_round(store, claim, round_items, k, what)
        return store.publish(op, claim, take_lock=False, what=what)
    except BaseException:
        with contextlib.suppress(EngineError):
            store.clear_unpublished(claim, patience=5.0)
        raise


def _put_round(store: OperationRecords, claim: Claim, items: list[tuple[bytes, bytes]],
               version: int, what: str) -> None:
    """Move every key in `items` from etcd version `version - 1` to `version`."""
    op_id, guard = claim.op_id, claim.op_key
    for chunk in batches(items, STATE_BATCH, lambda i: len(i[0]) + len(i[1]) + 16,
                         MAX_TXN_BYTES):
        def attempt(client: Any, chunk: list[tuple[bytes, bytes]] = chunk) -> None:
            ok, responses = client.transaction(
                compare=[*claim.guard(),
                         *(tx.Version(key) == version - 1 for key, _ in chunk)],
                success=[tx.Put(key, value) for key, value in chunk],
                failure=[tx.Get(guard), *(tx.Get(key) for key, _ in chunk)],
            )
            if ok:
                return
            if responses[0]:
                raise operation_exists(op_id, copying=True)
            if not claim.held(client):
                raise claim.lost()
            if all(kvs and kvs[0][1].version == version for kvs in responses[1:]):
                return  # an earlier try committed and its reply was lost
            raise StoreError(f"phase states of {op_id} changed while importing it",
                             operation_id=op_id, hint="run the copy again")

        store._call(what, attempt)


def _remove(store: OperationRecords, op_id: str, what: str) -> None:
    """Unpublish an operation (delete its record, and the cluster lock if it holds it) for
    --force; the caller's `clear_unpublished` then deletes its data keys, ours alone."""
    keys = store.keys

    def attempt(client: Any) -> None:
        for _ in range(20):
            guard, release = store.release_guard(client, op_id)
            ok, _ = client.transaction(
                compare=guard, success=[tx.Delete(keys.op(op_id)), *release], failure=[])
            if ok:
                return
        raise StoreUnavailable(f"the cluster lock kept changing while {what}",
                               hint="run the copy again")

    store._call(what, attempt)


__all__ = ["import_operation"]
