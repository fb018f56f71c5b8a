"""The raw durable floor as a standalone script: the same writes the engine makes per phase, done
with nothing but sqlite3 or pyetcd, so a whole `python floors.py` process compares with `gravity`.

    python bench/floors.py sqlite DB PHASES NODES setup|run
    python bench/floors.py etcd HOST:PORT PREFIX PHASES NODES setup|run

`setup` writes what `operation create` would (the operation, one state row per phase for SQLite);
`run` makes two transitions per phase (unstarted -> in_progress -> completed), each its own
durable transaction: SQLite `BEGIN IMMEDIATE; UPDATE states … WHERE version=?; INSERT INTO
changelog …; COMMIT` (WAL, synchronous=FULL); etcd one transaction comparing the operation
record's and the state key's versions, putting the state and a `log/<node>/<phase>/<version>`
record. Prints one JSON line: {"writes_s": seconds of the writes alone, "transitions": N}.
Imports nothing of the engine (its start-up is Python's, sqlite3's or pyetcd's only).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any
from urllib.parse import quote

OP = "floor"
SCHEMA = """
CREATE TABLE IF NOT EXISTS operations(id TEXT PRIMARY KEY, created REAL NOT NULL,
    data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS states(op_id TEXT NOT NULL, phase_id TEXT NOT NULL,
    version INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY(op_id, phase_id));
CREATE TABLE IF NOT EXISTS changelog(seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS changelog_by_op ON changelog(op_id, seq);
"""
STEPS = (("unstarted", "in_progress"), ("in_progress", "completed"))


def phases(count: int, nodes: int) -> list[tuple[str, str]]:
    """(phase ID, node) of the bench's spread plan: phase i on node i mod nodes."""
    return [(f"/n{i % nodes:04d}/p{i:05d}", f"node-{i % nodes + 1}") for i in range(count)]


def state_doc(phase_id: str, node: str, state: str, version: int) -> str:
    """A state value as the engine writes it (~190 bytes), formatted, not encoded: the floor
    pays for the bytes, not for building them."""
    return (f'{{"phase_id": "{phase_id}", "state": "{state}", "version": {version}, "attempt": 1, '
            f'"action": "execute", "owner": 1, "node": "{node}", "error": null, '
            f'"note": null, "updated": {time.time()!r}}}')


def record_doc(phase_id: str, node: str, before: str, after: str, version: int) -> str:
    """A changelog value as the engine writes it (~250 bytes)."""
    return (f'{{"operation_id": "{OP}", "phase_id": "{phase_id}", "version": {version}, '
            f'"from_state": "{before}", "to_state": "{after}", "action": "execute", '
            f'"attempt": 1, "owner": 1, "node": "{node}", "error": null, "note": null, '
            f'"at": {time.time()!r}}}')


def sqlite_connect(path: str) -> Any:
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def sqlite_setup(path: str, count: int, nodes: int) -> None:
    db = sqlite_connect(path)
    db.executescript(SCHEMA)
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO operations VALUES(?, ?, ?)", (OP, time.time(), "{}"))
    db.executemany("INSERT INTO states VALUES(?, ?, 0, ?)",
                   [(OP, phase_id, state_doc(phase_id, node, "unstarted", 0))
                    for phase_id, node in phases(count, nodes)])
    db.execute("COMMIT")
    db.close()


def sqlite_run(path: str, count: int, nodes: int) -> float:
    db = sqlite_connect(path)
    started = time.perf_counter()
    for phase_id, node in phases(count, nodes):
        for version, (before, after) in enumerate(STEPS):
            db.execute("BEGIN IMMEDIATE")
            cur = db.execute("UPDATE states SET version=?, data=? WHERE op_id=? AND "
                             "phase_id=? AND version=?",
                             (version + 1, state_doc(phase_id, node, after, version + 1), OP,
                              phase_id, version))
            if cur.rowcount != 1:
                raise SystemExit(f"floor: {phase_id} was not at version {version}")
            db.execute("INSERT INTO changelog(op_id, data) VALUES(?, ?)",
                       (OP, record_doc(phase_id, node, before, after, version + 1)))
            db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def etcd_client(endpoint: str) -> Any:
    import pyetcd

    host, _, port = endpoint.rpartition(":")
    return pyetcd.client(host=host, port=int(port), timeout=30)


def etcd_keys(prefix: str, phase_id: str, node: str, version: int,
              to_state: str) -> tuple[str, str]:
    """The state key and the log record key, laid out as the engine's (docs/storage.md: a
    dispatch under `log/<node>/`, any other record under `log/<node>=/`)."""
    base = f"{prefix}/data/{OP}"
    segment = node if to_state == "in_progress" else f"{node}="
    return (f"{base}/state/{quote(phase_id, safe='')}",
            f"{base}/log/{segment}/{quote(phase_id, safe='')}/{version:08d}")


def etcd_setup(endpoint: str, prefix: str) -> None:
    client = etcd_client(endpoint)
    client.put(f"{prefix}/op/{OP}", json.dumps({"id": OP, "state": "active"}))
    client.close()


def etcd_run(endpoint: str, prefix: str, count: int, nodes: int) -> float:
    from pyetcd import transactions as tx

    client = etcd_client(endpoint)
    op_key = f"{prefix}/op/{OP}"
    started = time.perf_counter()
    for phase_id, node in phases(count, nodes):
        for version, (before, after) in enumerate(STEPS):
            state_key, log_key = etcd_keys(prefix, phase_id, node, version + 1, after)
            ok, _ = client.transaction(
                compare=[tx.Version(op_key) > 0, tx.Version(state_key) == version],
                success=[tx.Put(state_key, state_doc(phase_id, node, after, version + 1)),
                         tx.Put(log_key, record_doc(phase_id, node, before, after, version + 1))],
                failure=[tx.Get(op_key), tx.Get(state_key)])
            if not ok:
                raise SystemExit(f"floor: {phase_id} was not at version {version}")
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[0] == "sqlite":
        _, path, count, nodes, step = argv
        if step == "setup":
            sqlite_setup(path, int(count), int(nodes))
            print(json.dumps({"setup": True}))
            return 0
        writes = sqlite_run(path, int(count), int(nodes))
    elif len(argv) == 6 and argv[0] == "etcd":
        _, endpoint, prefix, count, nodes, step = argv
        if step == "setup":
            etcd_setup(endpoint, prefix)
            print(json.dumps({"setup": True}))
            return 0
        writes = etcd_run(endpoint, prefix, int(count), int(nodes))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps({"writes_s": writes, "transitions": 2 * int(count)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
