"""The embedded store: one SQLite file in WAL mode with synchronous=FULL, safe across processes.
Every write is one `BEGIN IMMEDIATE` transaction; driver errors become engine errors here.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.errors import (
    PhaseConflict,
    StoreConfigError,
)
from engine.model import (
    ChangeRecord,
    Operation,
    OpState,
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
    check_batch,
    cluster_busy,
    lease_gone,
    no_operation,
    operation_exists,
)
from engine.store.rows import transition_rows
from engine.store.sqlite_errors import Cause, diagnose, open_failure
from engine.store.sqlite_errors import translate as _translate
from engine.store.sqlite_locks import LeasesAndLocks
from engine.store.sqlite_outline import add_tally_index, read_outline, write_tops

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS operations(
    id TEXT PRIMARY KEY, created REAL NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS specs(
    op_id TEXT NOT NULL, idx INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY(op_id, idx));
CREATE TABLE IF NOT EXISTS tops(
    op_id TEXT NOT NULL, idx INTEGER NOT NULL, leaves INTEGER NOT NULL, PRIMARY KEY(op_id, idx));
CREATE TABLE IF NOT EXISTS states(
    op_id TEXT NOT NULL, phase_id TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL,
    state TEXT, updated REAL, PRIMARY KEY(op_id, phase_id));
CREATE TABLE IF NOT EXISTS changelog(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, op_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS changelog_by_op ON changelog(op_id, seq);
CREATE TABLE IF NOT EXISTS leases(
    id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, host TEXT NOT NULL,
    pid INTEGER NOT NULL, ttl REAL NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS locks(
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, lease_id INTEGER);
CREATE TABLE IF NOT EXISTS kv(
    key TEXT PRIMARY KEY, value TEXT NOT NULL, lease_id INTEGER);
"""

_raw_decode = json.JSONDecoder().raw_decode


def _decode(text: str) -> Any:
    """A row's JSON: what we write (nothing around it) without json.loads' per-call checks
    (a plan's 100,000 specs and states are read at once); anything else as json.loads has it."""
    try:
        value, end = _raw_decode(text)
        if end == len(text):
            return value
    except ValueError:
        pass
    return json.loads(text)
# How many rows one executemany batch carries; SQLite has no hard limit, this bounds memory.
BATCH = 2000
# One `apply` is one transaction of any size to SQLite; this bounds what one call holds in
# memory (a thousand of the largest states and records are ~15 MB).
MAX_TRANSITIONS = 1000


class SQLiteStore(LeasesAndLocks, Store):
    """Store backed by one SQLite file; each thread gets its own connection."""

    # One machine's file: phases run in the coordinator's process, not on node agents.
    capabilities = Capabilities(shared=False, max_transitions=MAX_TRANSITIONS)

    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.url = f"sqlite://{self.path}" if self.path.is_absolute() else f"sqlite:{self.path}"
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._wakes: dict[str, int] = {}  # per operation: `wake` calls, seen by polling waits
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreConfigError(
                f"cannot create the directory for the embedded store {self.path}: {exc}",
                hint="pass --state-dir or --store sqlite:///writable/path/gravity.db",
            ) from exc
        self._init_schema()

    # -- connection handling --------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, timeout=self._busy_timeout, isolation_level=None,
                    check_same_thread=False,
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            except sqlite3.Error as exc:
                raise open_failure(exc, self.path) from exc
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _init_schema(self) -> None:
        conn = self._conn()
        try:
            conn.executescript(SCHEMA)
            add_tally_index(conn)
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES('schema', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreConfigError(
                    f"embedded store {self.path} has schema {row[0]}, newer than this "
                    f"gravity understands ({SCHEMA_VERSION})",
                    hint="use the gravity release that created it",
                )
        except sqlite3.DatabaseError as exc:
            if diagnose(exc, self.path).cause not in (Cause.OTHER, Cause.DAMAGED):
                raise _translate(exc, "preparing its tables", self.path) from exc
            raise StoreConfigError(
                f"{self.path} is not a usable gravity store: {exc}",
                hint="point --store at a gravity database or a new path",
            ) from exc

    @contextlib.contextmanager
    def _tx(self, what: str) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken up front, so no upgrade deadlock."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(exc, what, self.path) from exc
        try:
            yield conn
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc, what, self.path) from exc
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise _translate(exc, what, self.path) from exc

    def _read(self, sql: str, args: Sequence[object], what: str) -> list[tuple]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, what, self.path) from exc

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._conns.clear()
        self._local = threading.local()

    # -- operations -----------------------------------------------------------------------
    def create_operation(self, op: Operation, specs: Sequence[PhaseSpec]) -> None:
        check_new_operation(op.id, specs)
        try:
            with self._tx(f"creating operation {op.id}") as db:
                holder = self._cluster_holder(db)
                if holder is not None:
                    raise cluster_busy(holder)
                if db.execute("SELECT 1 FROM operations WHERE id=?", (op.id,)).fetchone():
                    raise operation_exists(op.id)
                db.execute(
                    "INSERT INTO operations(id, created, data) VALUES(?, ?, ?)",
                    (op.id, op.created, json.dumps(op.to_dict())),
                )
                rows = [(op.id, i, json.dumps(s.to_dict())) for i, s in enumerate(specs)]
                for start in range(0, len(rows), BATCH):
                    db.executemany(
                        "INSERT INTO specs(op_id, idx, data) VALUES(?, ?, ?)",
                        rows[start : start + BATCH],
                    )
                write_tops(db, op.id, specs)
                db.execute(
                    "INSERT OR REPLACE INTO locks(name, holder, lease_id) VALUES(?, ?, NULL)",
                    (CLUSTER_LOCK, op.id),
                )
        except sqlite3.Error as exc:
            raise _translate(exc, f"creating operation {op.id}") from exc

    def _cluster_holder(self, db: sqlite3.Connection) -> str | None:
        row = db.execute("SELECT holder FROM locks WHERE name=?", (CLUSTER_LOCK,)).fetchone()
        if row is None:
            return None
        op_row = db.execute("SELECT data FROM operations WHERE id=?", (row[0],)).fetchone()
        if op_row is None or OpState(json.loads(op_row[0])["state"]).finished:
            return None
        return str(row[0])

    @staticmethod
    def _op_record(db: sqlite3.Connection, operation_id: str) -> dict[str, Any]:
        """The operation's JSON record inside a transaction; NotFound when there is none."""
        row = db.execute("SELECT data FROM operations WHERE id=?", (operation_id,)).fetchone()
        if row is None:
            raise no_operation(operation_id)
        return dict(json.loads(row[0]))

    def get_operation(self, operation_id: str) -> Operation:
        rows = self._read("SELECT data FROM operations WHERE id=?", (operation_id,),
                          f"reading operation {operation_id}")
        if not rows:
            raise no_operation(operation_id)
        return Operation.from_dict(json.loads(rows[0][0]))

    def list_operations(self) -> list[Operation]:
        rows = self._read("SELECT data FROM operations ORDER BY created, id", (),
                          "listing operations")
        return [Operation.from_dict(json.loads(r[0])) for r in rows]

    def active_operation_id(self) -> str | None:
        conn = self._conn()
        try:
            return self._cluster_holder(conn)
        except sqlite3.Error as exc:
            raise _translate(exc, "reading the cluster lock", self.path) from exc

    def finish_operation(self, operation_id: str, state: OpState, note: str | None) -> Operation:
        try:
            with self._tx(f"finishing operation {operation_id}") as db:
                d = self._op_record(db, operation_id)
                d.update(state=state.value, updated=time.time(), note=note)
                db.execute("UPDATE operations SET data=? WHERE id=?",
                           (json.dumps(d), operation_id))
                db.execute("DELETE FROM locks WHERE name=? AND holder=?",
                           (CLUSTER_LOCK, operation_id))
                return Operation.from_dict(d)
        except sqlite3.Error as exc:
            raise _translate(exc, f"finishing operation {operation_id}") from exc

    def reopen_operation(self, operation_id: str, note: str | None) -> Operation:
        what = f"reopening operation {operation_id}"
        try:
            with self._tx(what) as db:
                d = self._op_record(db, operation_id)
                holder = self._cluster_holder(db)
                if holder is not None and holder != operation_id:
                    raise cluster_busy(holder)
                d.update(state=OpState.ACTIVE.value, updated=time.time(), note=note)
                db.execute("UPDATE operations SET data=? WHERE id=?",
                           (json.dumps(d), operation_id))
                db.execute("INSERT OR REPLACE INTO locks(name, holder, lease_id) "
                           "VALUES(?, ?, NULL)", (CLUSTER_LOCK, operation_id))
                return Operation.from_dict(d)
        except sqlite3.Error as exc:
            raise _translate(exc, what) from exc

    # -- plan -----------------------------------------------------------------------------
    def load_specs(self, operation_id: str) -> list[PhaseSpec]:
        rows = self._read("SELECT data FROM specs WHERE op_id=? ORDER BY idx", (operation_id,),
                          f"reading the plan of {operation_id}")
        return [PhaseSpec.from_dict(_decode(r[0])) for r in rows]

    def load_states(self, operation_id: str) -> dict[str, PhaseState]:
        rows = self._read("SELECT data FROM states WHERE op_id=?", (operation_id,),
                          f"reading phase states of {operation_id}")
        out = {}
        for (data,) in rows:
            st = PhaseState.from_dict(_decode(data))
            out[st.phase_id] = st
        return out

    def load_outline(self, operation_id: str) -> Outline:
        """From the `tops` index; an operation written before it had one reads whole."""
        try:
            found = read_outline(self._conn(), operation_id)
        except sqlite3.Error as exc:
            raise _translate(exc, f"reading the plan of {operation_id}", self.path) from exc
        return found if found is not None else super().load_outline(operation_id)

    def get_state(self, operation_id: str, phase_id: str) -> PhaseState:
        rows = self._read("SELECT data FROM states WHERE op_id=? AND phase_id=?",
                          (operation_id, phase_id), f"reading the state of {phase_id}")
        return PhaseState.from_dict(json.loads(rows[0][0])) if rows else PhaseState(phase_id)

    def apply(self, operation_id: str, transitions: Sequence[Transition], *,
              fence: int | None = None) -> list[ChangeRecord]:
        check_batch(transitions, MAX_TRANSITIONS)
        if not transitions:
            return []
        what = f"recording {len(transitions)} transition(s) of {operation_id}"
        try:
            with self._tx(what) as db:
                if fence is not None:
                    row = db.execute("SELECT expires FROM leases WHERE id=?",
                                     (fence,)).fetchone()
                    if row is None or row[0] <= time.time():
                        raise lease_gone(fence)
                ids = [t.phase_id for t in transitions]
                current: dict[str, int] = {}
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    current.update(db.execute(
                        f"SELECT phase_id, version FROM states WHERE op_id=? "
                        f"AND phase_id IN ({marks})", (operation_id, *chunk)).fetchall())
                for t in transitions:
                    found = current.get(t.phase_id, 0)
                    if found != t.expected:
                        raise PhaseConflict(
                            f"phase {t.phase_id} changed under us (expected version "
                            f"{t.expected}, found {found}); someone else is acting on it",
                            operation_id=operation_id, phase_id=t.phase_id,
                            hint="check `gravity plan` and retry",
                        )
                first = db.execute("SELECT COALESCE(MAX(seq), 0) FROM changelog").fetchone()[0]
                states, log = [], []
                for seq, t in enumerate(transitions, start=first + 1):
                    state, record = transition_rows(operation_id, t, seq)
                    states.append((operation_id, t.phase_id, t.new.version, state,
                                   t.new.state.value, t.new.updated))
                    log.append((seq, operation_id, record))
                db.executemany(
                    "INSERT OR REPLACE INTO states(op_id, phase_id, version, data, state, "
                    "updated) VALUES(?, ?, ?, ?, ?, ?)", states)
                db.executemany("INSERT INTO changelog(seq, op_id, data) VALUES(?, ?, ?)", log)
                return [ChangeRecord.of(operation_id, t, seq=seq)
                        for seq, t in enumerate(transitions, start=first + 1)]
        except sqlite3.Error as exc:
            raise _translate(exc, what) from exc

    def changelog(self, operation_id: str, after: int = 0, node: str | None = None
                  ) -> list[ChangeRecord]:
        rows = self._read("SELECT data FROM changelog WHERE op_id=? AND seq>? ORDER BY seq",
                          (operation_id, after), f"reading the changelog of {operation_id}")
        records = [ChangeRecord.from_dict(_decode(r[0])) for r in rows]
        return records if node is None else [r for r in records if r.node == node]

    def last_seq(self, operation_id: str) -> int:
        rows = self._read("SELECT (SELECT COUNT(*) FROM operations WHERE id=?), "
                          "COALESCE(MAX(seq), 0) FROM changelog WHERE op_id=?",
                          (operation_id, operation_id),
                          f"reading the changelog of {operation_id}")
        if not rows[0][0]:
            raise no_operation(operation_id)
        return int(rows[0][1])

    def wake(self, operation_id: str) -> None:
        with self._conns_lock:
            self._wakes[operation_id] = self._wakes.get(operation_id, 0) + 1

    def forget_changes(self, operation_id: str) -> None:
        self.wake(operation_id)  # a wait polls the database: it holds nothing but this count

    def wait_changes(self, operation_id: str, after: int, timeout: float,
                     node: str | None = None, to_state: State | None = None
                     ) -> list[ChangeRecord]:
        deadline = time.monotonic() + timeout
        woken = self._wakes.get(operation_id, 0)
        while True:
            records = self.changelog(operation_id, after, node)
            if to_state is not None:
                records = [r for r in records if r.to_state is to_state]
            if records or time.monotonic() >= deadline:
                return records
            if self._wakes.get(operation_id, 0) != woken:
                return []
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    # -- copying between stores (engine.store.copy) ---------------------------------------
    def import_operation(self, op: Operation, specs: Sequence[PhaseSpec],
                         states: Sequence[PhaseState], records: Sequence[ChangeRecord], *,
                         replace: bool = False) -> bool:
        """See Store.import_operation. One transaction; changelog seqs are renumbered after
        this file's last one (seq is global here), in the same order."""
        check_new_operation(op.id, specs)
        what = f"importing operation {op.id}"
        try:
            with self._tx(what) as db:
                if db.execute("SELECT 1 FROM operations WHERE id=?", (op.id,)).fetchone():
                    if not replace:
                        raise operation_exists(op.id, copying=True)
                    for table in ("specs", "tops", "states", "changelog"):
                        db.execute(f"DELETE FROM {table} WHERE op_id=?", (op.id,))
                    db.execute("DELETE FROM operations WHERE id=?", (op.id,))
                    db.execute("DELETE FROM locks WHERE name=? AND holder=?",
                               (CLUSTER_LOCK, op.id))
                db.execute("INSERT INTO operations(id, created, data) VALUES(?, ?, ?)",
                           (op.id, op.created, json.dumps(op.to_dict())))
                db.executemany("INSERT INTO specs(op_id, idx, data) VALUES(?, ?, ?)",
                               [(op.id, i, json.dumps(s.to_dict())) for i, s in enumerate(specs)])
                write_tops(db, op.id, specs)
                db.executemany(
                    "INSERT INTO states(op_id, phase_id, version, data, state, updated) "
                    "VALUES(?, ?, ?, ?, ?, ?)",
                    [(op.id, s.phase_id, s.version, json.dumps(s.to_dict()), s.state.value,
                      s.updated) for s in states])
                first = db.execute("SELECT COALESCE(MAX(seq), 0) FROM changelog").fetchone()[0]
                rows = []
                for i, rec in enumerate(sorted(records, key=lambda r: r.seq), start=1):
                    d = rec.to_dict()
                    d.update(seq=first + i, operation_id=op.id)
                    rows.append((first + i, op.id, json.dumps(d)))
                db.executemany("INSERT INTO changelog(seq, op_id, data) VALUES(?, ?, ?)", rows)
                took = op.state is OpState.ACTIVE and self._cluster_holder(db) is None
                if took:
                    db.execute("INSERT OR REPLACE INTO locks(name, holder, lease_id) "
                               "VALUES(?, ?, NULL)", (CLUSTER_LOCK, op.id))
                return took
        except sqlite3.Error as exc:
            raise _translate(exc, what) from exc
