"""Leases and locks of the etcd store: real etcd leases, lock keys bound to them.
A lock is taken with `create_revision == 0` and vanishes with its holder's lease.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pyetcd import MultiEndpointEtcd3Client
from pyetcd import transactions as tx

from engine.errors import LeaseExpired, LockHeld, StoreUnavailable
from engine.model import Lease
from engine.store.base import lease_gone, this_host, this_pid
from engine.store.etcd_conn import LeaseCompare
from engine.store.etcd_errors import CAUGHT, is_lease_not_found
from engine.store.etcd_keepalive import KeepAlive
from engine.store.etcd_keys import Keys, decode, encode, unesc
from engine.store.etcd_spans import prefix_end

T = TypeVar("T")
Client = MultiEndpointEtcd3Client
MAX_ROUNDS = 50


class LeasesAndLocks:
    """The Store's lease and lock methods for etcd (mixed into EtcdStore)."""

    keys: Keys
    # Leases this store granted: a renewal need not read their record back (an agent renews
    # every TTL/3 for its whole life; one read fewer each time).
    _granted: dict[int, Lease]
    _keepalive: KeepAlive  # renewals on one long-lived stream

    def _call(self, what: str, fn: Callable[[Client], T], *,
              patience: float | None = None) -> T:
        raise NotImplementedError  # provided by EtcdStore

    def grant_lease(self, name: str, ttl: float) -> Lease:
        seconds = max(1, math.ceil(ttl))
        sent = time.time()  # etcd counts the TTL from when it got the request: no earlier
        grant = self._call("granting a lease", lambda c: c.lease(seconds))
        granted = float(grant.ttl or seconds)
        meta = {"owner": name, "host": this_host(), "pid": this_pid(), "ttl": granted}

        def put(client: Client) -> None:
            try:
                client.put(self.keys.lease(grant.id), encode(meta), lease=grant.id)
            except CAUGHT as exc:
                if is_lease_not_found(exc):
                    raise self._expired(grant.id) from exc
                raise

        self._call("granting a lease", put)
        lease = Lease(grant.id, name, meta["host"], meta["pid"], granted, sent + granted)
        self._granted[lease.id] = lease
        return lease

    # -- small key-value records, optionally bound to a lease --------------------------------
    def kv_put(self, key: str, value: Mapping[str, Any], lease_id: int | None = None) -> None:
        raw = encode(dict(value))

        def put(client: Client) -> None:
            try:
                client.put(self.keys.kv(key), raw, lease=lease_id)
            except CAUGHT as exc:
                if lease_id is not None and is_lease_not_found(exc):
                    raise self._expired(lease_id) from exc
                raise

        self._call(f"writing {key}", put)

    def kv_get(self, key: str) -> dict[str, Any] | None:
        resp = self._call(f"reading {key}", lambda c: c.get_response(self.keys.kv(key)))
        return decode(resp.kvs[0].value) if resp.kvs else None

    def kv_list(self, prefix: str) -> dict[str, dict[str, Any]]:
        start = self.keys.kv(prefix)
        end = prefix_end(start)
        resp = self._call(f"listing {prefix}", lambda c: c.get_response(start, range_end=end))
        base = len(self.keys.kv(""))
        return {unesc(kv.key[base:].decode()): decode(kv.value) for kv in resp.kvs
                if self.keys.owns(kv.key)}

    def kv_delete(self, key: str) -> None:
        self._call(f"deleting {key}", lambda c: c.delete(self.keys.kv(key)))

    @staticmethod
    def _expired(lease_id: int) -> LeaseExpired:
        return lease_gone(lease_id)

    def _lease_meta(self, client: Client, lease_id: int, remaining: float,
                    since: float | None = None) -> Lease | None:
        resp = client.get_response(self.keys.lease(lease_id))
        if not resp.kvs:
            return None
        m = decode(resp.kvs[0].value)
        return Lease(lease_id, m["owner"], m["host"], int(m["pid"]), float(m["ttl"]),
                     (time.time() if since is None else since) + remaining)

    def keepalive(self, lease_id: int) -> Lease:
        def renew(client: Client) -> Lease:
            sent = time.time()  # the renewed TTL runs from etcd's receipt: never earlier
            ttl = self._keepalive.renew(client, lease_id)
            known = self._granted.get(lease_id)
            if ttl > 0 and known is not None:  # its record lives as long as the lease
                return dataclasses.replace(known, expires=sent + ttl)
            lease = self._lease_meta(client, lease_id, ttl, sent) if ttl > 0 else None
            if lease is None:
                self._granted.pop(lease_id, None)
                raise self._expired(lease_id)
            return lease

        return self._call("renewing a lease", renew)

    def revoke_lease(self, lease_id: int) -> None:
        self._granted.pop(lease_id, None)

        def revoke(client: Client) -> None:
            try:
                client.revoke_lease(lease_id)
            except CAUGHT as exc:
                if not is_lease_not_found(exc):
                    raise

        self._call("revoking a lease", revoke)

    def _live_lease(self, client: Client, lease_id: int) -> Lease | None:
        info = client.get_lease_info(lease_id)
        if info.TTL < 0:
            return None
        # etcd reports whole seconds rounded down: the truth lies within the next second.
        return self._lease_meta(client, lease_id, min(info.TTL + 0.5, info.grantedTTL))

    def get_lease(self, lease_id: int) -> Lease | None:
        return self._call("reading a lease", lambda c: self._live_lease(c, lease_id))

    def acquire_lock(self, name: str, lease: Lease) -> None:
        key = self.keys.lock(name)
        value = encode({"holder": lease.name, "lease": lease.id})

        def take(client: Client) -> None:
            for _ in range(MAX_ROUNDS):
                try:
                    ok, responses = client.transaction(
                        compare=[tx.Create(key) == 0],
                        success=[tx.Put(key, value, lease=lease.id)],
                        failure=[tx.Get(key)])
                except CAUGHT as exc:
                    if is_lease_not_found(exc):
                        raise self._expired(lease.id) from exc
                    raise
                if ok:
                    return
                if not responses[0]:
                    continue  # released meanwhile
                raw, meta = responses[0][0]
                if meta.lease_id == lease.id:
                    return
                if meta.lease_id == 0:
                    holder = str(decode(raw).get("holder"))
                    raise LockHeld(f"{name} is held by {holder}", holder=holder)
                live = self._live_lease(client, meta.lease_id)
                if live is not None:
                    desc = live.describe()
                    raise LockHeld(f"{name} is held by {desc}", holder=desc)
            raise StoreUnavailable(f"lock {name} kept changing hands", hint="retry the command")

        self._call(f"taking lock {name}", take)

    def release_lock(self, name: str, lease_id: int) -> None:
        key = self.keys.lock(name)
        self._call(f"releasing lock {name}", lambda c: c.transaction(
            compare=[LeaseCompare(key) == lease_id], success=[tx.Delete(key)], failure=[]))

    def lock_holder(self, name: str) -> Lease | None:
        def read(client: Client) -> Lease | None:
            resp = client.get_response(self.keys.lock(name))
            if not resp.kvs or not resp.kvs[0].lease:
                return None
            return self._live_lease(client, resp.kvs[0].lease)

        return self._call("reading a lock", read)


__all__ = ["LeasesAndLocks"]
