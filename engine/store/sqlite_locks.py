"""Leases, locks and small key-value records of the embedded store (mixed into SQLiteStore).
A lock or record bound to a lease is gone once the lease expires, as with etcd's leases.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from engine.errors import LockHeld
from engine.model import Lease
from engine.store.base import lease_gone, this_host, this_pid
from engine.store.sqlite_errors import translate as _translate


class LeasesAndLocks:
    """The Store's lease, lock and key-value methods for SQLite; every write is one
    `BEGIN IMMEDIATE` transaction of SQLiteStore."""

    def _tx(self, what: str) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # provided by SQLiteStore

    def _read(self, sql: str, args: Sequence[object], what: str) -> list[tuple]:
        raise NotImplementedError  # provided by SQLiteStore

    # -- leases and locks -----------------------------------------------------------------
    def grant_lease(self, name: str, ttl: float) -> Lease:
        host, pid = this_host(), this_pid()
        try:
            with self._tx("granting a lease") as db:
                # Counted from here, under the write lock: a grant that waited for another
                # process's transaction must not start out already (nearly) expired.
                expires = time.time() + ttl
                cur = db.execute(
                    "INSERT INTO leases(owner, host, pid, ttl, expires) VALUES(?, ?, ?, ?, ?)",
                    (name, host, pid, ttl, expires),
                )
                lease_id = int(cur.lastrowid or 0)
        except sqlite3.Error as exc:
            raise _translate(exc, "granting a lease") from exc
        return Lease(lease_id, name, host, pid, ttl, expires)

    def keepalive(self, lease_id: int) -> Lease:
        try:
            with self._tx("renewing a lease") as db:
                now = time.time()  # under the write lock, like the grant
                row = db.execute("SELECT owner, host, pid, ttl, expires FROM leases WHERE id=?",
                                 (lease_id,)).fetchone()
                if row is None or row[4] <= now:
                    db.execute("DELETE FROM leases WHERE id=?", (lease_id,))
                    db.execute("DELETE FROM locks WHERE lease_id=?", (lease_id,))
                    db.execute("DELETE FROM kv WHERE lease_id=?", (lease_id,))
                    raise lease_gone(lease_id)
                db.execute("UPDATE leases SET expires=? WHERE id=?", (now + row[3], lease_id))
        except sqlite3.Error as exc:
            raise _translate(exc, "renewing a lease") from exc
        return Lease(lease_id, row[0], row[1], row[2], row[3], now + row[3])

    def revoke_lease(self, lease_id: int) -> None:
        try:
            with self._tx("revoking a lease") as db:
                db.execute("DELETE FROM leases WHERE id=?", (lease_id,))
                db.execute("DELETE FROM locks WHERE lease_id=?", (lease_id,))
                db.execute("DELETE FROM kv WHERE lease_id=?", (lease_id,))
        except sqlite3.Error as exc:
            raise _translate(exc, "revoking a lease") from exc

    def get_lease(self, lease_id: int) -> Lease | None:
        rows = self._read("SELECT owner, host, pid, ttl, expires FROM leases WHERE id=?",
                          (lease_id,), "reading a lease")
        if not rows or rows[0][4] <= time.time():
            return None
        name, host, pid, ttl, expires = rows[0]
        return Lease(lease_id, name, host, pid, ttl, expires)

    def acquire_lock(self, name: str, lease: Lease) -> None:
        try:
            with self._tx(f"taking lock {name}") as db:
                row = db.execute("SELECT lease_id FROM locks WHERE name=?", (name,)).fetchone()
                if row is not None and row[0] != lease.id:
                    holder = db.execute(
                        "SELECT owner, host, pid, ttl, expires FROM leases WHERE id=?",
                        (row[0],)).fetchone()
                    if holder is not None and holder[4] > time.time():
                        desc = Lease(row[0], *holder).describe()
                        raise LockHeld(f"{name} is held by {desc}", holder=desc)
                db.execute("INSERT OR REPLACE INTO locks(name, holder, lease_id) VALUES(?, ?, ?)",
                           (name, lease.name, lease.id))
        except sqlite3.Error as exc:
            raise _translate(exc, f"taking lock {name}") from exc

    def release_lock(self, name: str, lease_id: int) -> None:
        try:
            with self._tx(f"releasing lock {name}") as db:
                db.execute("DELETE FROM locks WHERE name=? AND lease_id=?", (name, lease_id))
        except sqlite3.Error as exc:
            raise _translate(exc, f"releasing lock {name}") from exc

    # -- small key-value records (agents, stop requests) ----------------------------------
    def kv_put(self, key: str, value: Mapping[str, Any], lease_id: int | None = None) -> None:
        try:
            with self._tx(f"writing {key}") as db:
                db.execute("INSERT OR REPLACE INTO kv(key, value, lease_id) VALUES(?, ?, ?)",
                           (key, json.dumps(dict(value)), lease_id))
        except sqlite3.Error as exc:
            raise _translate(exc, f"writing {key}") from exc

    def kv_get(self, key: str) -> dict[str, Any] | None:
        rows = self._read(
            "SELECT k.value FROM kv k LEFT JOIN leases l ON k.lease_id = l.id "
            "WHERE k.key=? AND (k.lease_id IS NULL OR l.expires > ?)",
            (key, time.time()), f"reading {key}")
        return json.loads(rows[0][0]) if rows else None

    def kv_list(self, prefix: str) -> dict[str, dict[str, Any]]:
        rows = self._read(
            "SELECT k.key, k.value FROM kv k LEFT JOIN leases l ON k.lease_id = l.id "
            "WHERE substr(k.key, 1, ?)=? AND (k.lease_id IS NULL OR l.expires > ?) "
            "ORDER BY k.key", (len(prefix), prefix, time.time()), f"listing {prefix}")
        return {k: json.loads(v) for k, v in rows}

    def kv_delete(self, key: str) -> None:
        try:
            with self._tx(f"deleting {key}") as db:
                db.execute("DELETE FROM kv WHERE key=?", (key,))
        except sqlite3.Error as exc:
            raise _translate(exc, f"deleting {key}") from exc

    def lock_holder(self, name: str) -> Lease | None:
        rows = self._read("SELECT lease_id FROM locks WHERE name=?", (name,), "reading a lock")
        if not rows or rows[0][0] is None:
            return None
        return self.get_lease(int(rows[0][0]))
