"""The embedded store's index of top-level phases (`tops`) and the Outline read from it: the
specs of the top-level phases alone, the leaf states tallied inside SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from engine.model import PhaseSpec, PhaseState, State
from engine.outline import Outline, Tally, spec_ranges, top_leaves, top_of

# How many stored states below one top-level composite are in one state, and the newest
# update among them: phase IDs in [`/a/`, `/a0`) ('0' follows '/'), counted from the index
# below without reading the states' rows.
_RANGE = ("SELECT COUNT(*), MAX(updated) FROM states WHERE op_id=? AND state=? "
          "AND phase_id>? AND phase_id<?")
_UNKNOWN = "SELECT COUNT(*) FROM states WHERE op_id=? AND state IS NULL"
_FAILED = "SELECT data FROM states WHERE op_id=? AND state='failed'"
_CHUNK = 500  # phase IDs per `IN (...)`


def add_tally_index(db: sqlite3.Connection) -> None:
    """The `state` and `updated` columns of `states` (copies of the JSON's, added to a file
    made before them) and the index that tallies them. Rows written by a gravity without
    them have NULLs there; an Outline is then read the long way."""
    have = {row[1] for row in db.execute("PRAGMA table_info(states)")}
    for column, kind in (("state", "TEXT"), ("updated", "REAL")):
        if column not in have:
            try:
                db.execute(f"ALTER TABLE states ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another process added it first
                    raise
    db.execute("CREATE INDEX IF NOT EXISTS states_tally "
               "ON states(op_id, state, phase_id, updated)")


def write_tops(db: sqlite3.Connection, operation_id: str, specs: Sequence[PhaseSpec]) -> None:
    """Index the operation's top-level phases (spec index, leaves below) as it is written."""
    db.executemany("INSERT INTO tops(op_id, idx, leaves) VALUES(?, ?, ?)",
                   [(operation_id, idx, leaves) for idx, leaves in top_leaves(specs)])


def read_outline(db: sqlite3.Connection, operation_id: str) -> Outline | None:
    """The operation's Outline, or None when it has no index (written by an older gravity)."""
    rows = db.execute("SELECT t.idx, t.leaves, s.data FROM tops t JOIN specs s "
                      "ON s.op_id=t.op_id AND s.idx=t.idx WHERE t.op_id=? ORDER BY t.idx",
                      (operation_id,)).fetchall()
    specs = [PhaseSpec.from_dict(json.loads(data)) for _, _, data in rows]
    if not specs or any(s.parent for s in specs):
        return None
    starts = {s.id: idx for s, (idx, _, _) in zip(specs, rows, strict=True)}
    leaves = {s.id: n for s, (_, n, _) in zip(specs, rows, strict=True)}
    if db.execute(_UNKNOWN, (operation_id,)).fetchone()[0]:
        return None  # states written without the columns
    tally = Tally(leaves)
    composites = [s.id for s in specs if s.children]
    for state in State:
        for top in composites:
            n, updated = db.execute(_RANGE, (operation_id, state.value, top + "/",
                                             top + "0")).fetchone()
            if n:
                tally.count(top, state, updated or 0.0, n)
    kept = [PhaseState.from_dict(json.loads(data))
            for (data,) in db.execute(_FAILED, (operation_id,)).fetchall()]
    single = [s.id for s in specs if not s.children]
    for start in range(0, len(single), _CHUNK):
        chunk = single[start:start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        for (data,) in db.execute(f"SELECT data FROM states WHERE op_id=? AND phase_id IN "
                                  f"({marks})", (operation_id, *chunk)).fetchall():
            st = PhaseState.from_dict(json.loads(data))
            tally.count(st.phase_id, st.state, st.updated)  # a top-level leaf
            if st.state is not State.FAILED:
                kept.append(st)
    for st in kept:
        tally.keep(st)
    return tally.outline(specs, leaves, _ranks(db, operation_id, starts, tally.failed))


def _ranks(db: sqlite3.Connection, operation_id: str, starts: dict[str, int],
           failed: list[PhaseState]) -> dict[str, int]:
    """The spec index of each failed phase: read from its top-level phase's rows alone."""
    ranges = spec_ranges(starts)
    rank: dict[str, int] = {}
    for top in {top_of(st.phase_id) for st in failed}:
        start, end = ranges[top]
        rank.update((json.loads(data)["id"], idx) for idx, data in db.execute(
            "SELECT idx, data FROM specs WHERE op_id=? AND idx>=? AND idx<?",
            (operation_id, start, 2**62 if end is None else end)))
    return rank


__all__ = ["add_tally_index", "read_outline", "write_tops"]
