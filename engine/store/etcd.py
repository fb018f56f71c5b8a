"""The etcd store: on a real cluster, etcd is the single source of truth for operations.
Every write is an etcd transaction guarded by compares; the key layout is in docs/storage.md.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pyetcd import MultiEndpointEtcd3Client
from pyetcd import transactions as tx
from pyetcd.events import PutEvent
from pyetcd.watch import WatchResponse

from engine.errors import (
    EngineError,
    PhaseConflict,
    StoreError,
    StoreUnavailable,
)
from engine.model import (
    ChangeRecord,
    Operation,
    OpState,
    PhaseSpec,
    PhaseState,
    Transition,
)
from engine.names import check_new_operation
from engine.store.base import (
    CLUSTER_LOCK,
    Capabilities,
    Store,
    check_batch,
    cluster_busy,
    lease_gone,
    no_operation,
    operation_exists,
)
from engine.store.etcd_conn import Connection, EtcdConfig, batches, parse_url
from engine.store.etcd_errors import (
    CAUGHT,
    channel_gone,
    is_token_expired,
)
from engine.store.etcd_feed import Feed, wait
from engine.store.etcd_keys import (
    SLOTS,
    Keys,
    decode,
    encode,
    log_record,
    log_value,
    seq_floor,
    span,
)
from engine.store.etcd_limits import MAX_TXN_BYTES, SPEC_BATCH, max_transitions
from engine.store.etcd_locks import LeasesAndLocks
from engine.store.etcd_root import open_root

if TYPE_CHECKING:
    from engine.store import TLSConfig

T = TypeVar("T")
Client = MultiEndpointEtcd3Client

# Optimistic loops (a concurrent writer moved a lock or a record) give up after this.
MAX_ROUNDS = 50


def _weigh_put(item: tuple[bytes, bytes]) -> int:
    return len(item[0]) + len(item[1]) + 16


def _puts(items: Sequence[tuple[bytes, bytes]]) -> list[Any]:
    return [tx.Put(key, value) for key, value in items]


class EtcdStore(LeasesAndLocks, Store):
    """Store backed by etcd; see docs/storage.md for keys, batching and retry rules.

    Transient failures (etcd restarting, leader election, timeouts) are retried
    for `config.patience` seconds, so a restart of etcd pauses the engine
    instead of failing it; permanent ones (auth, TLS, permissions) fail fast.
    """

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self.url = config.url
        self.keys = Keys(config.prefix)
        # Shared by every host that reaches etcd; one `apply` is one transaction (etcd_limits).
        self.capabilities = Capabilities(shared=True,
                                         max_transitions=max_transitions(config.prefix))
        self._conn = Connection(config)
        # One long-lived changelog watch per (operation, node or None) (see etcd_feed).
        self._feeds: dict[tuple[str, str | None], Feed] = {}
        self._feeds_lock = threading.Lock()
        try:
            open_root(self._conn, self.keys)
        except BaseException:
            self._conn.close()
            raise

    def reach(self) -> tuple[str, int] | None:
        return self.config.endpoints[0] if self.config.endpoints else None

    @classmethod
    def from_url(cls, url: str, *, tls: TLSConfig | None = None) -> EtcdStore:
        """Open `etcd://host:port[,host:port][/prefix]` (etcds:// for TLS) and check it works."""
        return cls(parse_url(url, cacert=tls.cacert if tls else None,
                             cert=tls.cert if tls else None, key=tls.key if tls else None))

    def close(self) -> None:
        with self._feeds_lock:
            feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            with feed.cond:
                watch_id, feed.watch_id, feed.broken = feed.watch_id, None, True
            self._cancel_watch(watch_id)
            feed.stack.close()
        self._conn.close()

    def _call(self, what: str, fn: Callable[[Client], T], *,
              patience: float | None = None) -> T:
        return self._conn.call(what, fn, patience=patience)

    # -- operations -----------------------------------------------------------------------
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

    def clear_unpublished(self, op_id: str, *, patience: float | None = None) -> None:
        """Delete the data keys of an operation whose record was never written.

        Guarded by "no operation record", so it can never touch a visible operation. Deletes
        key by key exactly the spec, state and log keys found, never a range: a key under
        `data/<op>/` that is not in our layout (another store nested there) is left alone.
        """
        guard = tx.Version(self.keys.op(op_id)) == 0
        start, end = span(self.keys.data(op_id))

        def clear(client: Client) -> None:
            rows, _ = self._conn.scan_with(client, start, end, keys_only=True)
            ours = [key for key, _ in rows if self.keys.owns(key)]
            for chunk in batches(ours, SPEC_BATCH, lambda k: len(k) + 16, MAX_TXN_BYTES):
                ok, _ = client.transaction(compare=[guard],
                                           success=[tx.Delete(k) for k in chunk], failure=[])
                if not ok:
                    return  # published meanwhile: those keys are a live operation's now

        self._call(f"cleaning up the unfinished creation of {op_id}", clear, patience=patience)

    def write_unpublished(self, op_id: str, items: Sequence[tuple[bytes, bytes]],
                          what: str, *, copying: bool = False) -> None:
        """Put data keys of an operation not yet visible, in batches within etcd's limits.

        Every batch is guarded by "no operation record", so a concurrent creation of
        the same ID that published first is never overwritten (OperationExists).
        """
        guard = self.keys.op(op_id)
        for chunk in batches(items, SPEC_BATCH, _weigh_put, MAX_TXN_BYTES):
            ok, _ = self._call(what, lambda c, chunk=chunk: c.transaction(
                compare=[tx.Version(guard) == 0], success=_puts(chunk), failure=[]))
            if not ok:
                raise operation_exists(op_id, copying=copying)

    def create_operation(self, op: Operation, specs: Sequence[PhaseSpec]) -> None:
        check_new_operation(op.id, specs)
        what = f"creating operation {op.id}"
        self._call(what, lambda c: self._check_new(c, op.id))
        self.clear_unpublished(op.id)
        items = [(self.keys.spec(op.id, i), encode(s.to_dict())) for i, s in enumerate(specs)]
        try:
            self.write_unpublished(op.id, items, what)
            self.publish(op, take_lock=True, what=what)
        except BaseException:
            with contextlib.suppress(EngineError):
                self.clear_unpublished(op.id, patience=5.0)
            raise

    def publish(self, op: Operation, *, take_lock: bool, what: str) -> bool:
        """Write the operation record (and the cluster lock) last, in one transaction.

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
                success = [tx.Put(op_key, record)]
                if lock_it:
                    success.append(tx.Put(lock, encode({"holder": op.id, "lease": None})))
                try:
                    ok, _ = client.transaction(
                        compare=[*guard, tx.Version(op_key) == 0], success=success, failure=[])
                except CAUGHT:
                    unsure = True
                    raise
                if ok:
                    return lock_it
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

    # -- plan -----------------------------------------------------------------------------
    def load_specs(self, operation_id: str) -> list[PhaseSpec]:
        rows, _ = self._conn.scan(f"reading the plan of {operation_id}",
                                  *span(self.keys.specs(operation_id)))
        return [PhaseSpec.from_dict(decode(kv.value)) for key, kv in rows if self.keys.owns(key)]

    def load_states(self, operation_id: str) -> dict[str, PhaseState]:
        rows, _ = self._conn.scan(f"reading phase states of {operation_id}",
                                  *span(self.keys.states(operation_id)))
        out = {}
        for key, kv in rows:
            if not self.keys.owns(key):
                continue
            st = PhaseState.from_dict(decode(kv.value))
            out[st.phase_id] = st
        return out

    def get_state(self, operation_id: str, phase_id: str) -> PhaseState:
        kv = self._conn.get(f"reading the state of {phase_id}",
                            self.keys.state(operation_id, phase_id))
        return PhaseState.from_dict(decode(kv.value)) if kv is not None else PhaseState(phase_id)

    def apply(self, operation_id: str, transitions: Sequence[Transition], *,
              fence: int | None = None) -> list[ChangeRecord]:
        """CAS transitions: one etcd transaction, so the whole batch commits or none of it.

        Compares every state key's version (and that the operation exists, and with
        `fence` that the writer's lease record does), then puts the new states and one
        `log/<node>/<phase>/<version>` record each; the records' seqs come from the
        transaction's revision. A phase's PhaseState.version equals its state key's etcd
        version, so the CAS is `version(key) == expected`; writers of different phases never
        compare the same key, so they never retry each other. At most
        `capabilities.max_transitions` (etcd_limits) per call, so it fits etcd's limits.
        """
        check_batch(transitions, self.capabilities.max_transitions)
        if not transitions:
            return []
        op_id, batch = operation_id, list(transitions)
        keys = self.keys
        op_key = keys.op(op_id)
        state_keys = [keys.state(op_id, t.phase_id) for t in batch]
        log_keys = [keys.log(op_id, t.new.node, t.phase_id, t.new.version) for t in batch]
        values = [log_value(ChangeRecord.of(op_id, t), i) for i, t in enumerate(batch)]
        compare = [tx.Version(op_key) > 0]
        compare += [tx.Version(k) == t.expected for k, t in zip(state_keys, batch, strict=True)]
        success = [tx.Put(k, encode(t.new.to_dict()))
                   for k, t in zip(state_keys, batch, strict=True)]
        success += [tx.Put(k, v) for k, v in zip(log_keys, values, strict=True)]
        failure = [tx.Get(op_key), *(tx.Get(k) for k in state_keys)]
        if fence is not None:  # the writer's lease record lives exactly as long as its lease
            compare.append(tx.Version(keys.lease(fence)) > 0)
            failure.append(tx.Get(keys.lease(fence)))
        unsure = False  # an attempt whose commit we never heard back on

        def attempt(client: Client) -> list[ChangeRecord]:
            nonlocal unsure
            try:
                ok, responses = client.transaction(compare=compare, success=success,
                                                   failure=failure)
            except CAUGHT:
                unsure = True
                raise
            if ok:
                revision = int(responses[0].response_put.header.revision)
                if revision <= 0:  # not every etcd fills inner headers: read it back
                    revision = int(client.get_response(log_keys[0]).kvs[0].mod_revision)
                return [log_record(v, revision) for v in values]
            if not responses[0]:
                raise no_operation(op_id)
            if unsure:  # an earlier attempt may have committed after all
                done = self._committed(client, log_keys, values)
                if done is not None:
                    return done
            if fence is not None and not responses[-1]:
                raise lease_gone(fence)
            for t, kvs in zip(batch, responses[1:len(batch) + 1], strict=True):
                found = int(decode(kvs[0][0])["version"]) if kvs else 0
                if found == t.expected:
                    continue
                raise PhaseConflict(
                    f"phase {t.phase_id} changed under us (expected version "
                    f"{t.expected}, found {found}); someone else is acting on it",
                    operation_id=op_id, phase_id=t.phase_id,
                    hint="check `gravity plan` and retry",
                )
            raise StoreUnavailable(f"etcd refused the transition of {op_id} without a reason",
                                   operation_id=op_id, hint="retry the command")

        return self._call(f"recording {len(batch)} transition(s) of {op_id}", attempt)

    @staticmethod
    def _committed(client: Client, log_keys: Sequence[bytes], values: Sequence[bytes]
                   ) -> list[ChangeRecord] | None:
        """Our records, if an earlier attempt whose reply was lost did commit them.

        Each log key can only have been written by the transition that moved its phase to
        that version; the value (stamped with our time) tells whether that was us.
        """
        out = []
        for key, value in zip(log_keys, values, strict=True):
            kvs = client.get_response(key).kvs
            if not kvs or decode(kvs[0].value) != decode(value):
                return None
            out.append(log_record(kvs[0].value, kvs[0].mod_revision))
        return out

    def _changelog_at(self, op_id: str, after: int, node: str | None = None, *,
                      patience: float | None = None) -> tuple[list[ChangeRecord], int]:
        """Records with seq > `after` (of phases on `node`, if given) in seq order, and the
        revision they were read at."""
        start, end = span(self.keys.logs(op_id, node))
        floor = seq_floor(after)

        def run(client: Client) -> tuple[list[ChangeRecord], int]:
            rows, revision = self._conn.scan_with(client, start, end, min_mod_revision=floor)
            records = [log_record(kv.value, kv.mod_revision) for key, kv in rows
                       if self.keys.owns(key)]
            records = [r for r in records if r.seq > after]
            records.sort(key=lambda r: r.seq)
            return records, revision

        return self._call(f"reading the changelog of {op_id}", run, patience=patience)

    def changelog(self, operation_id: str, after: int = 0, node: str | None = None
                  ) -> list[ChangeRecord]:
        return self._changelog_at(operation_id, after, node)[0]

    def last_seq(self, operation_id: str) -> int:
        """The last seq the revision read now could hold: every record written before has
        a seq at or below it, every later one above it (one read, whatever the log's size)."""
        def run(client: Client) -> int:
            resp = client.get_response(self.keys.op(operation_id))
            if not resp.kvs:
                raise no_operation(operation_id)
            return int(resp.header.revision) * SLOTS + SLOTS - 1

        return self._call(f"reading the changelog of {operation_id}", run)

    def wait_changes(self, operation_id: str, after: int, timeout: float,
                     node: str | None = None) -> list[ChangeRecord]:
        """Records past `after`, waiting on one long-lived etcd watch of the operation's log
        (with `node`, of `log/<node>/` only: an agent hears nothing of other nodes' phases).

        The watch is opened once per (operation, node) and kept, so etcd delivers each
        commit at once. If it is cut (etcd restarted), the records committed meanwhile are
        read back from the last seq seen and a new watch starts from the last revision
        seen: nothing is missed or delivered twice.
        """
        deadline = time.monotonic() + timeout
        feed = self._feeds.get((operation_id, node))
        if feed is None or after < feed.base:
            records, revision = self._changelog_at(operation_id, after, node)
            if feed is None:
                with self._feeds_lock:
                    feed = self._feeds.setdefault((operation_id, node), Feed(after))
                with feed.cond:
                    feed.add(records, revision)
            if records:
                return records
        return wait(feed, after, deadline,
                    lambda f: self._repair_feed(operation_id, node, f))

    def wake(self, operation_id: str) -> None:
        with self._feeds_lock:
            feeds = [f for (op, _), f in self._feeds.items() if op == operation_id]
        for feed in feeds:
            with feed.cond:
                feed.wakes += 1
                feed.cond.notify_all()

    def _cancel_watch(self, watch_id: Any) -> None:
        if watch_id is not None:
            with contextlib.suppress(*CAUGHT, ValueError, StoreError), \
                    self._conn.using() as client:
                client.cancel_watch(watch_id)

    def _repair_feed(self, op_id: str, node: str | None, feed: Feed) -> bool:
        """Catch up from the feed's last seq and (re)open its watch; False while unreachable."""
        start, end = span(self.keys.logs(op_id, node))
        with feed.cond:
            old, feed.watch_id = feed.watch_id, None
            stack, feed.stack = feed.stack, contextlib.ExitStack()
        self._cancel_watch(old)
        stack.close()
        try:
            records, revision = self._changelog_at(op_id, feed.last_seq, node, patience=0.0)
        except StoreUnavailable:
            return False
        with feed.cond:
            feed.add(records, revision)
            revision = feed.revision

        def on_event(item: Any) -> None:
            with feed.cond:
                if not isinstance(item, WatchResponse):
                    feed.broken = True  # the stream ended: error or None
                    feed.cond.notify_all()
                    return
                found = [log_record(ev.value, ev.mod_revision) for ev in item.events
                         if isinstance(ev, PutEvent) and self.keys.owns(ev.key)]
                feed.add(found, item.header.revision)

        new_stack = contextlib.ExitStack()
        try:
            client = new_stack.enter_context(self._conn.using())
            watch_id = client.add_watch_callback(start, on_event, range_end=end,
                                                 start_revision=revision + 1)
        except (*CAUGHT, ValueError, StoreError) as exc:
            new_stack.close()
            if isinstance(exc, ValueError) and not channel_gone(exc):
                raise
            if not isinstance(exc, StoreError) and is_token_expired(exc) and self.config.user:
                self._conn.relogin()
            return False
        with feed.cond:
            feed.watch_id, feed.stack, feed.broken = watch_id, new_stack, False
        return True

    # -- copying between stores -----------------------------------------------------------
    def import_operation(self, op: Operation, specs: Sequence[PhaseSpec],
                         states: Sequence[PhaseState], records: Sequence[ChangeRecord], *,
                         replace: bool = False) -> bool:
        """See Store.import_operation; how etcd does it is in etcd_import."""
        from engine.store.etcd_import import import_operation

        check_new_operation(op.id, specs)
        return import_operation(self, op, specs, states, records, replace=replace)


__all__ = ["EtcdStore"]
