"""The operation records of the etcd store: creating, publishing, finishing and reopening an
operation, and the cluster lock that goes with it (mixed into EtcdStore).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pyetcd import MultiEndpointEtcd3Client
from pyetcd import transactions as tx

from engine.errors import EngineError, StoreUnavailable
from engine.model import Operation, OpState, PhaseSpec
from engine.names import check_new_operation
from engine.store.base import CLUSTER_LOCK, cluster_busy, no_operation, operation_exists
from engine.store.etcd_claim import Claim, claimed
from engine.store.etcd_conn import Connection
from engine.store.etcd_errors import CAUGHT
from engine.store.etcd_keys import Keys, decode, encode, span
from engine.store.etcd_limits import MAX_TXN_BYTES, SPEC_BATCH
from engine.store.etcd_outline import top_items
from engine.store.etcd_spans import batches

T = TypeVar("T")
Client = MultiEndpointEtcd3Client

# Optimistic loops (a concurrent writer moved a lock or a record) give up after this.
MAX_ROUNDS = 50
# Batches of a new operation's keys in flight at once (one fsync serves those that arrive
# together): 100,000 specs are 1,000 transactions.
WRITERS = 8


def _weigh_put(item: tuple[bytes, bytes]) -> int:
    return len(item[0]) + len(item[1]) + 16


def plan_items(keys: Keys, op_id: str, specs: Sequence[PhaseSpec]) -> list[tuple[bytes, bytes]]:
    """The keys of an operation's plan: its specs in written order, then the index of its
    top-level phases (a created operation's and a copied one's alike)."""
    items = [(keys.spec(op_id, i), encode(s.to_dict())) for i, s in enumerate(specs)]
    return items + top_items(keys, op_id, specs)


def _puts(items: Sequence[tuple[bytes, bytes]]) -> list[Any]:
    return [tx.Put(key, value) for key, value in items]


class OperationRecords:
    """The Store's operation methods for etcd. An operation's data keys are written first and
    its record last, so until `publish` commits nothing of it is visible."""

    keys: Keys
    _conn: Connection

    def _call(self, what: str, fn: Callable[[Client], T], *,
              patience: float | None = None) -> T:
        raise NotImplementedError  # provided by EtcdStore

    def _cluster_guard(self, client: Client) -> tuple[str | None, list[Any]]:
        """The active operation holding the cluster lock (None when free) and compares that
        fail if that view changes before our transaction commits."""
        lock = self.keys.lock(CLUSTER_LOCK)
        resp = client.get_response(lock)
        if not resp.kvs:
            return None, [tx.Version(lock) == 0]
        kv = resp.kvs[0]
        guard = [tx.Mod(lock) == kv.mod_revision]
        holder = str(decode(kv.value)["holder"])
        op_key = self.keys.op(holder)
        op_resp = client.get_response(op_key)
        if not op_resp.kvs:
            return None, [*guard, tx.Version(op_key) == 0]
        op_kv = op_resp.kvs[0]
        if OpState(decode(op_kv.value)["state"]).finished:
            return None, [*guard, tx.Mod(op_key) == op_kv.mod_revision]
        return holder, guard

    @staticmethod
    def _op_record(client: Client, op_key: bytes, operation_id: str) -> Any:
        """The operation record's kv; NotFound when there is none."""
        found = client.get_response(op_key)
        if not found.kvs:
            raise no_operation(operation_id)
        return found.kvs[0]

    def _check_new(self, client: Client, op_id: str) -> None:
        holder, _ = self._cluster_guard(client)
        if holder is not None:
            raise cluster_busy(holder)
        if client.get_response(self.keys.op(op_id)).kvs:
            raise operation_exists(op_id)

    def clear_unpublished(self, claim: Claim, *, patience: float | None = None) -> None:
        """Delete the data keys of an operation whose record was never written.

        Guarded by "no operation record" and by the creation's claim, so it can never touch a
        visible operation nor another creation's keys. Deletes key by key exactly the keys
        found, never a range: a key under `data/<op>/` that is not in our layout (another
        store nested there) is left alone.
        """
        op_id, guard = claim.op_id, claim.guard()
        start, end = span(self.keys.data(op_id))

        def clear(client: Client) -> None:
            rows, _ = self._conn.scan_with(client, start, end, keys_only=True)
            ours = [key for key, _ in rows if self.keys.owns(key)]
            for chunk in batches(ours, SPEC_BATCH, lambda k: len(k) + 16, MAX_TXN_BYTES):
                ok, _ = client.transaction(compare=guard,
                                           success=[tx.Delete(k) for k in chunk], failure=[])
                if not ok:
                    return  # published, or no longer ours: those keys are someone else's

        self._call(f"cleaning up the unfinished creation of {op_id}", clear, patience=patience)

    def write_unpublished(self, claim: Claim, items: Sequence[tuple[bytes, bytes]],
                          what: str, *, copying: bool = False, in_order: bool = False) -> None:
        """Put data keys of an operation not yet visible, in batches within etcd's limits.

        Every batch is guarded by "no operation record" and by the creation's claim, so an
        operation of that ID published meanwhile is never overwritten (OperationExists) and
        a creation that lost its claim writes nothing more. Up to WRITERS batches are in
        flight at once (one after another `in_order`, so their revisions follow the items'
        order); after a refused or failed one no other starts.
        """
        op_id, guard = claim.op_id, claim.guard()
        chunks = list(batches(items, SPEC_BATCH, _weigh_put, MAX_TXN_BYTES))
        stop = threading.Event()  # a batch was refused or failed: the others are not sent
        refused = threading.Event()

        def write(chunk: list[tuple[bytes, bytes]]) -> None:
            if stop.is_set():
                return
            try:
                ok, _ = self._call(what, lambda c: c.transaction(
                    compare=guard, success=_puts(chunk), failure=[]))
            except BaseException:
                stop.set()
                raise
            if not ok:
                refused.set()
                stop.set()

        if len(chunks) <= 1 or in_order:
            for chunk in chunks:
                write(chunk)
        else:
            # Independent batches in flight together: etcd syncs them to disk together.
            with ThreadPoolExecutor(min(WRITERS, len(chunks)),
                                    thread_name_prefix="gravity-write") as pool:
                futures = [pool.submit(write, chunk) for chunk in chunks]
            for future in futures:
                future.result()  # the first batch's error, as one at a time would raise
        if refused.is_set():
            if not self._call(what, claim.held):
                raise claim.lost()
            raise operation_exists(op_id, copying=copying)

    def create_operation(self, op: Operation, specs: Sequence[PhaseSpec]) -> None:
        check_new_operation(op.id, specs)
        what = f"creating operation {op.id}"
        self._call(what, lambda c: self._check_new(c, op.id))
        items = plan_items(self.keys, op.id, specs)
        with claimed(self, op.id, what) as claim:
            self.clear_unpublished(claim)  # what a creation of this ID that died left behind
            try:
                self.write_unpublished(claim, items, what)
                self.publish(op, claim, take_lock=True, what=what)
            except BaseException:
                with contextlib.suppress(EngineError):
                    self.clear_unpublished(claim, patience=5.0)
                raise

    def publish(self, op: Operation, claim: Claim, *, take_lock: bool, what: str) -> bool:
        """Write the operation record (and the cluster lock) last, in one transaction that
        also ends the creation's claim (and compares that it still holds it).

        Until this commits the operation is invisible. With `take_lock` (creating),
        refuses with LockHeld while another operation is active; otherwise (copying) takes
        the lock only if free and `op` is active. Returns whether the cluster lock was taken.
        """
        op_key, lock = self.keys.op(op.id), self.keys.lock(CLUSTER_LOCK)
        record = encode(op.to_dict())
        unsure = False

        def attempt(client: Client) -> bool:
            nonlocal unsure
            for _ in range(MAX_ROUNDS):
                found = client.get_response(op_key)
                if found.kvs:
                    if unsure and found.kvs[0].value == record:
                        return self._holder_is(client, op.id)  # our earlier try committed
                    raise operation_exists(op.id, copying=not take_lock)
                holder, guard = self._cluster_guard(client)
                if holder is not None and take_lock:
                    raise cluster_busy(holder)
                lock_it = holder is None and op.state is OpState.ACTIVE
                success = [tx.Put(op_key, record), tx.Delete(claim.key)]
                if lock_it:
                    success.append(tx.Put(lock, encode({"holder": op.id, "lease": None})))
                try:
                    ok, _ = client.transaction(
                        compare=[*guard, *claim.guard()],
                        success=success, failure=[])
                except CAUGHT:
                    unsure = True
                    raise
                if ok:
                    return lock_it
                if not claim.held(client):
                    raise claim.lost()
            raise StoreUnavailable(f"the cluster lock kept changing while {what}",
                                   hint="retry the command")

        return self._call(what, attempt)

    def _holder_is(self, client: Client, op_id: str) -> bool:
        resp = client.get_response(self.keys.lock(CLUSTER_LOCK))
        return bool(resp.kvs) and decode(resp.kvs[0].value).get("holder") == op_id

    def get_operation(self, operation_id: str) -> Operation:
        kv = self._conn.get(f"reading operation {operation_id}", self.keys.op(operation_id))
        if kv is None:
            raise no_operation(operation_id)
        return Operation.from_dict(decode(kv.value))

    def list_operations(self) -> list[Operation]:
        rows, _ = self._conn.scan("listing operations", *span(self.keys.ops()))
        ops = [Operation.from_dict(decode(kv.value)) for key, kv in rows if self.keys.owns(key)]
        return sorted(ops, key=lambda o: (o.created, o.id))

    def active_operation_id(self) -> str | None:
        return self._call("reading the cluster lock", lambda c: self._cluster_guard(c)[0])

    def release_guard(self, client: Client, op_id: str) -> tuple[list[Any], list[Any]]:
        """Compares that pin the cluster lock as read now, and the delete that frees it if
        `op_id` holds it (nothing otherwise): for a transaction that ends an operation."""
        lock = self.keys.lock(CLUSTER_LOCK)
        held = client.get_response(lock)
        if not held.kvs:
            return [tx.Version(lock) == 0], []
        mine = decode(held.kvs[0].value).get("holder") == op_id
        return [tx.Mod(lock) == held.kvs[0].mod_revision], [tx.Delete(lock)] if mine else []

    def finish_operation(self, operation_id: str, state: OpState, note: str | None) -> Operation:
        op_key = self.keys.op(operation_id)

        def attempt(client: Client) -> Operation:
            for _ in range(MAX_ROUNDS):
                found = self._op_record(client, op_key, operation_id)
                d = decode(found.value)
                d.update(state=state.value, updated=time.time(), note=note)
                guard, release = self.release_guard(client, operation_id)
                ok, _ = client.transaction(
                    compare=[tx.Mod(op_key) == found.mod_revision, *guard],
                    success=[tx.Put(op_key, encode(d)), *release], failure=[])
                if ok:
                    return Operation.from_dict(d)
            raise StoreUnavailable(f"operation {operation_id} kept changing while finishing it",
                                   operation_id=operation_id, hint="retry the command")

        return self._call(f"finishing operation {operation_id}", attempt)

    def reopen_operation(self, operation_id: str, note: str | None) -> Operation:
        op_key, lock = self.keys.op(operation_id), self.keys.lock(CLUSTER_LOCK)

        def attempt(client: Client) -> Operation:
            for _ in range(MAX_ROUNDS):
                found = self._op_record(client, op_key, operation_id)
                holder, guard = self._cluster_guard(client)
                if holder is not None and holder != operation_id:
                    raise cluster_busy(holder)
                d = decode(found.value)
                d.update(state=OpState.ACTIVE.value, updated=time.time(), note=note)
                compare = [*guard, tx.Mod(op_key) == found.mod_revision]
                success = [tx.Put(op_key, encode(d)),
                           tx.Put(lock, encode({"holder": operation_id, "lease": None}))]
                ok, _ = client.transaction(compare=compare, success=success, failure=[])
                if ok:
                    return Operation.from_dict(d)
            raise StoreUnavailable(f"operation {operation_id} kept changing while reopening it",
                                   operation_id=operation_id, hint="retry the command")

        return self._call(f"reopening operation {operation_id}", attempt)
