"""The etcd store: on a real cluster, etcd is the single source of truth for operations.
Every write is an etcd transaction guarded by compares; the key layout is in docs/storage.md.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pyetcd import MultiEndpointEtcd3Client
from pyetcd import transactions as tx
from pyetcd.events import PutEvent
from pyetcd.watch import WatchResponse

from engine.errors import (
    PhaseConflict,
    StoreError,
    StoreUnavailable,
)
from engine.model import (
    ChangeRecord,
    Operation,
    PhaseSpec,
    PhaseState,
    State,
    Transition,
)
from engine.names import check_new_operation
from engine.outline import Outline
from engine.store.base import (
    CLUSTER_LOCK,
    Capabilities,
    Store,
    TLSConfig,
    Watch,
    check_batch,
    lease_gone,
    no_operation,
)
from engine.store.etcd_conn import RPC_TIMEOUT, Connection, EtcdConfig, parse_url
from engine.store.etcd_errors import (
    CAUGHT,
    channel_gone,
    is_token_expired,
)
from engine.store.etcd_feed import Feed, wait
from engine.store.etcd_import import import_operation
from engine.store.etcd_keepalive import KeepAlive
from engine.store.etcd_keys import (
    SLOTS,
    Keys,
    decode,
    decode_many,
    ix_value,
    log_record,
    seq_floor,
    span,
)
from engine.store.etcd_limits import max_transitions
from engine.store.etcd_locks import LeasesAndLocks
from engine.store.etcd_ops import OperationRecords
from engine.store.etcd_outline import read_outline
from engine.store.etcd_root import open_root
from engine.store.etcd_watch import KeyWatch, open_watch
from engine.store.rows import etcd_values

T = TypeVar("T")
Client = MultiEndpointEtcd3Client


class EtcdStore(LeasesAndLocks, OperationRecords, Store):
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
        # One long-lived changelog watch per (operation, node, to_state) (see etcd_feed).
        self._feeds: dict[tuple[str, str | None, State | None], Feed] = {}
        self._feeds_lock = threading.Lock()
        self._watches: list[KeyWatch] = []
        self._granted = {}
        self._keepalive = KeepAlive(RPC_TIMEOUT)
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
            watches, self._watches = self._watches, []
        for watch in watches:
            watch.close()
        self._keepalive.close()
        self._end_feeds(feeds)
        self._conn.close()

    def forget_changes(self, operation_id: str) -> None:
        with self._feeds_lock:
            ours = [key for key in self._feeds if key[0] == operation_id]
            feeds = [self._feeds.pop(key) for key in ours]
        self._end_feeds(feeds)

    def _end_feeds(self, feeds: list[Feed]) -> None:
        """Cancel the feeds' watches; a wait still on one returns what it has."""
        for feed in feeds:
            with feed.cond:
                watch_id, feed.watch_id, feed.closed = feed.watch_id, None, True
                feed.cond.notify_all()
            self._cancel_watch(watch_id)
            feed.stack.close()

    def _call(self, what: str, fn: Callable[[Client], T], *,
              patience: float | None = None) -> T:
        return self._conn.call(what, fn, patience=patience)

    # -- plan -----------------------------------------------------------------------------
    def load_specs(self, operation_id: str) -> list[PhaseSpec]:
        return [PhaseSpec.from_dict(d) for d in self._documents(
            f"reading the plan of {operation_id}", self.keys.specs(operation_id))]

    def load_states(self, operation_id: str) -> dict[str, PhaseState]:
        documents = self._documents(f"reading phase states of {operation_id}",
                                    self.keys.states(operation_id))
        return {st.phase_id: st for st in map(PhaseState.from_dict, documents)}

    def _documents(self, what: str, prefix: bytes) -> list[dict[str, Any]]:
        """The decoded values of our keys under `prefix`, in key order."""
        rows, _ = self._conn.scan(what, *span(prefix), values=True)
        values = [value for _, value in self.keys.owned(rows)]
        del rows  # the keys go before the values are decoded
        return decode_many(values)

    def load_plan(self, operation_id: str) -> tuple[list[PhaseSpec], dict[str, PhaseState]]:
        """The states are read on a second thread while the specs are read and decoded, so
        etcd serves one range while this process decodes the other (100,000 phases: the two
        ranges took 0.4 – 1 s each on the 2-core machine)."""
        states: list[dict[str, PhaseState]] = []
        errors: list[BaseException] = []

        def read() -> None:
            try:
                states.append(self.load_states(operation_id))
            except BaseException as exc:  # handed to the caller's thread below
                errors.append(exc)

        reader = threading.Thread(target=read, name="gravity-load-states", daemon=True)
        reader.start()
        try:
            specs = self.load_specs(operation_id)
        finally:
            reader.join()
        if errors:
            raise errors[0]
        return specs, states[0]

    def load_outline(self, operation_id: str) -> Outline:
        """From the `top/` index; an operation written before it had one reads whole."""
        found = read_outline(self._conn, self.keys, operation_id)
        return found if found is not None else super().load_outline(operation_id)

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
        log_keys = [keys.log(op_id, t.new.node, t.phase_id, t.new.version, t.new.state)
                    for t in batch]
        encoded = [etcd_values(op_id, t, i) for i, t in enumerate(batch)]
        values = [record for _, record in encoded]
        compare = [tx.Version(op_key) > 0]
        compare += [tx.Version(k) == t.expected for k, t in zip(state_keys, batch, strict=True)]
        success = [tx.Put(k, state) for k, (state, _) in zip(state_keys, encoded, strict=True)]
        success += [tx.Put(k, v) for k, v in zip(log_keys, values, strict=True)]
        for t in batch:  # the state index moves with the state (a key put twice is refused)
            put = keys.ix(op_id, t.phase_id, t.new.state, t.new.updated)
            success.append(tx.Put(put, ix_value(t.new.updated)))
            old = keys.ix(op_id, t.phase_id, t.from_state, t.from_updated)
            if t.expected > 0 and old != put:
                success.append(tx.Delete(old))
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
                return [ChangeRecord.of(op_id, t, seq=revision * SLOTS + i)
                        for i, t in enumerate(batch)]
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

    def _log_range(self, op_id: str, node: str | None,
                   to_state: State | None) -> tuple[bytes, bytes]:
        """Where the records of `node` moving a phase to `to_state` lie: a node's dispatches
        under `log/<node>/`, anything else of a node anywhere in the log (read, then kept by
        node)."""
        dispatches = node is not None and to_state is State.IN_PROGRESS
        return span(self.keys.logs(op_id, node if dispatches else None))

    def _changelog_at(self, op_id: str, after: int, node: str | None = None,
                      to_state: State | None = None, *, patience: float | None = None
                      ) -> tuple[list[ChangeRecord], int]:
        """Records with seq > `after` (of phases on `node`, and to `to_state`, if given) in
        seq order, and the revision they were read at."""
        start, end = self._log_range(op_id, node, to_state)
        floor = seq_floor(after)

        def run(client: Client) -> tuple[list[ChangeRecord], int]:
            rows, revision = self._conn.scan_with(client, start, end, min_mod_revision=floor)
            records = [log_record(kv.value, kv.mod_revision) for key, kv in rows
                       if self.keys.owns(key)]
            records = [r for r in records if r.seq > after and (node is None or r.node == node)
                       and (to_state is None or r.to_state is to_state)]
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
                     node: str | None = None, to_state: State | None = None
                     ) -> list[ChangeRecord]:
        """Records past `after`, waiting on one long-lived etcd watch of the operation's log
        (with `node` and `to_state` in_progress, of `log/<node>/` only: an agent hears its
        node's dispatches and nothing else; with `node` or `to_state` otherwise, of the whole
        log, the feed keeping only those records and woken by nothing else).

        The watch is opened once per (operation, node, to_state) and kept, so etcd delivers
        each commit at once. If it is cut (etcd restarted), the records committed meanwhile
        are read back from the last revision seen and a new watch starts after it: nothing
        is missed or delivered twice.
        """
        deadline = time.monotonic() + timeout
        key = (operation_id, node, to_state)
        while True:
            feed = self._feeds.get(key)
            if feed is None or after < feed.base:
                records, revision = self._changelog_at(operation_id, after, node, to_state)
                if feed is None:
                    with self._feeds_lock:
                        feed = self._feeds.setdefault(key, Feed(after, to_state, node))
                    with feed.cond:
                        feed.add(records, revision)
                if records:
                    return records
            found = wait(feed, after, deadline,
                         lambda f: self._repair_feed(operation_id, node, f))
            if found is not None:
                return found  # else the feed dropped records this wait had not seen

    def wake(self, operation_id: str) -> None:
        with self._feeds_lock:
            feeds = [f for (op, *_), f in self._feeds.items() if op == operation_id]
        for feed in feeds:
            with feed.cond:
                feed.wakes += 1
                feed.cond.notify_all()

    def watch(self, on_change: Callable[[], None], *, kv_keys: Sequence[str] = (),
              active_operation: bool = False) -> Watch | None:
        """See Store.watch: one etcd watch per key (etcd_watch), on this store's stream."""
        keys = [self.keys.kv(k) for k in kv_keys]
        if active_operation:
            # Which operation is active changes with the cluster lock: creating an operation
            # takes it, finishing one releases it, in the same transaction.
            keys.append(self.keys.lock(CLUSTER_LOCK))
        watch = open_watch(self._conn, keys, on_change, self._cancel_watch,
                           relogin=bool(self.config.user))
        with self._feeds_lock:
            self._watches = [w for w in self._watches if not w.broken]
            if not watch.broken:
                self._watches.append(watch)
        return watch

    def _cancel_watch(self, watch_id: Any) -> None:
        if watch_id is not None:
            with contextlib.suppress(*CAUGHT, ValueError, StoreError), \
                    self._conn.using() as client:
                client.cancel_watch(watch_id)

    def _repair_feed(self, op_id: str, node: str | None, feed: Feed) -> bool:
        """Catch up from the feed's last seq and (re)open its watch; False while unreachable."""
        start, end = self._log_range(op_id, node, feed.to_state)
        with feed.cond:
            old, feed.watch_id = feed.watch_id, None
            stack, feed.stack = feed.stack, contextlib.ExitStack()
        self._cancel_watch(old)
        stack.close()
        try:
            records, revision = self._changelog_at(op_id, feed.last_seq, node, feed.to_state,
                                                   patience=0.0)
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
        check_new_operation(op.id, specs)
        return import_operation(self, op, specs, states, records, replace=replace)


__all__ = ["EtcdStore"]
