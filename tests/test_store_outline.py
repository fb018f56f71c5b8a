"""`gravity plan --short` reads an Outline: the top-level phases and a tally of the leaves below
each, from each store's index, never the whole plan. Both backends must answer exactly what the
whole plan and its states say, for operations written with the index and without it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.fsm import derive
from engine.model import Operation, OpState, PhaseSpec, State, Transition
from engine.outline import outline_of, top_of
from engine.store import Store, open_store


@pytest.fixture(params=["sqlite", "etcd"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = (f"sqlite:///{tmp_path / 'gravity.db'}" if request.param == "sqlite"
           else request.getfixturevalue("etcd_url"))
    opened = open_store(url)
    try:
        yield opened
    finally:
        opened.close()


def make_op(op_id: str) -> Operation:
    now = time.time()
    return Operation(op_id, "install", "install.yaml", created=now, updated=now)


def composite(pid: str, *children: str, parent: str = "") -> PhaseSpec:
    return PhaseSpec(pid, parent, children=tuple(f"{pid}/{c}" for c in children))


def leaf(pid: str, parent: str = "") -> PhaseSpec:
    return PhaseSpec(pid, parent, executor="noop")


# Written order differs from sorted order (/z first), and some IDs sort between a composite and
# its own children (`/a.b` and `/a-b` come before `/a/...`; `:` is escaped in etcd keys).
SPECS = [
    composite("/z", "n1", "n2"),
    composite("/z/n1", "x", "y", parent="/z"),
    leaf("/z/n1/x", "/z/n1"), leaf("/z/n1/y", "/z/n1"),
    leaf("/z/n2", "/z"),
    composite("/a", "p", "q", "r"),
    leaf("/a/p", "/a"), leaf("/a/q", "/a"), leaf("/a/r", "/a"),
    leaf("/a.b"), leaf("/a-b"), leaf("/a:c"),
    composite("/m", "only"), leaf("/m/only", "/m"),
]


def move(store: Store, op_id: str, phase: str, *steps: tuple[State, dict[str, object]]) -> None:
    for to, changes in steps:
        cur = store.get_state(op_id, phase)
        store.apply(op_id, [Transition.of(cur, cur.advance(to, **changes))])


RUN = (State.IN_PROGRESS, {"owner": 7, "node": "node-1"})
DONE = (State.COMPLETED, {"owner": None})


def play(store: Store, op_id: str) -> None:
    """Every kind of state: completed, running, failed with and without an error (deep and at
    the top level, failed late in written order first), rolled back, and none at all."""
    move(store, op_id, "/a/q", RUN, (State.FAILED, {"error": "boom\nsecond line"}))
    move(store, op_id, "/z/n1/y", RUN, (State.FAILED, {"error": "first in written order"}))
    move(store, op_id, "/z/n1/x", RUN, DONE)
    move(store, op_id, "/z/n2", RUN)
    move(store, op_id, "/a/p", RUN, DONE)
    move(store, op_id, "/a.b", RUN, (State.FAILED, {"error": "top-level", "note":
                                                     "attempt 1 of 2 failed; retrying in 1s"}))
    move(store, op_id, "/a-b", RUN, (State.FAILED, {}))
    move(store, op_id, "/m/only", RUN, DONE, (State.IN_PROGRESS, {"owner": 8}),
         (State.ROLLED_BACK, {"owner": None}))


def test_the_outline_says_what_the_whole_plan_says(store: Store) -> None:
    store.create_operation(make_op("op-1"), SPECS)
    fresh = store.load_outline("op-1")
    assert [s.id for s in fresh.specs] == ["/z", "/a", "/a.b", "/a-b", "/a:c", "/m"]
    assert fresh.leaves == {"/z": 3, "/a": 3, "/a.b": 1, "/a-b": 1, "/a:c": 1, "/m": 1}
    assert {s.id: derive(fresh.below(s.id)) for s in fresh.specs} == dict.fromkeys(
        fresh.leaves, State.UNSTARTED)

    play(store, "op-1")
    whole = outline_of(store.load_specs("op-1"), store.load_states("op-1"))
    outline = store.load_outline("op-1")
    assert outline == whole
    assert outline.specs == tuple(s for s in SPECS if not s.parent)
    assert {s.id: derive(outline.below(s.id)) for s in outline.specs} == {
        "/z": State.FAILED, "/a": State.FAILED, "/a.b": State.FAILED, "/a-b": State.FAILED,
        "/a:c": State.UNSTARTED, "/m": State.ROLLED_BACK}
    assert outline.counts["/z"] == {State.FAILED: 1, State.COMPLETED: 1, State.IN_PROGRESS: 1}
    states = store.load_states("op-1")
    assert outline.updated["/a"] == max(states[p].updated for p in ("/a/p", "/a/q"))
    assert [st.phase_id for st in outline.failed] == ["/z/n1/y", "/a/q", "/a.b"]
    assert set(outline.states) == {"/a.b", "/a-b"}  # the top-level leaves with a state
    assert outline.states["/a.b"].note == "attempt 1 of 2 failed; retrying in 1s"


def test_a_copied_operation_has_its_outline_too(store: Store) -> None:
    store.create_operation(make_op("op-1"), SPECS)
    play(store, "op-1")
    store.finish_operation("op-1", OpState.FAILED, None)
    store.import_operation(make_op("op-2"), store.load_specs("op-1"),
                           list(store.load_states("op-1").values()), store.changelog("op-1"))
    assert store.load_outline("op-2") == store.load_outline("op-1")


def test_an_operation_written_without_the_index_reads_the_long_way(store: Store) -> None:
    """As one written by an earlier gravity: no index of top-level phases, no state columns."""
    store.create_operation(make_op("op-1"), SPECS)
    play(store, "op-1")
    expected = outline_of(store.load_specs("op-1"), store.load_states("op-1"))
    if store.url.startswith("sqlite"):
        db = store._conn()  # type: ignore[attr-defined]
        db.execute("UPDATE states SET state=NULL, updated=NULL WHERE phase_id='/a/p'")
        assert store.load_outline("op-1") == expected
        db.execute("DELETE FROM tops")
    else:
        keys = store.keys  # type: ignore[attr-defined]
        store._conn.call("dropping the index", lambda c: c.delete_prefix(  # type: ignore
            keys.tops("op-1")))
    assert store.load_outline("op-1") == expected


def test_etcd_counts_from_its_state_index_without_reading_the_states(etcd_url: str) -> None:
    """etcd keeps one index key per stored state (`ix/<top>/<state>/<leaf>`), moved in the
    transaction that moves the state, so `--short` counts keys instead of reading 100,000
    states; a copied operation gets its index with its states."""
    from engine.store.etcd import EtcdStore
    from engine.store.etcd_keys import span, unesc

    store = EtcdStore.from_url(etcd_url)
    try:
        store.create_operation(make_op("op-1"), SPECS)
        play(store, "op-1")
        store.finish_operation("op-1", OpState.FAILED, None)
        store.import_operation(make_op("op-2"), store.load_specs("op-1"),
                               list(store.load_states("op-1").values()), store.changelog("op-1"))
        for op_id in ("op-1", "op-2"):
            rows, _ = store._conn.scan("test", *span(store.keys.ixs(op_id)))
            index = {tuple(unesc(p) for p in key.decode().rsplit("/", 4)[1:]) for key, _ in rows}
            assert index == {(top_of(p), st.state.value, f"{10**19 - round(st.updated * 1e9):020d}",
                              p) for p, st in store.load_states(op_id).items()}
        scanned: list[bytes] = []
        scan = store._conn.scan

        def recorded(what: str, start: bytes, end: bytes, **how: bool) -> object:
            scanned.append(start)
            return scan(what, start, end, **how)

        store._conn.scan = recorded  # type: ignore[method-assign]
        whole = outline_of(store.load_specs("op-1"), store.load_states("op-1"))
        scanned.clear()
        assert store.load_outline("op-1") == whole
        assert store.keys.states("op-1") not in scanned and store.keys.specs("op-1") not in scanned
    finally:
        store.close()


def test_etcd_reads_every_state_when_its_index_is_missing_or_off(etcd_url: str) -> None:
    """An operation created before the state index (its top-level entries do not say `ix`),
    or an index that does not hold one key per stored state, is read the long way."""
    from engine.store.etcd import EtcdStore
    from engine.store.etcd_keys import decode, encode, span

    store = EtcdStore.from_url(etcd_url)
    try:
        store.create_operation(make_op("op-1"), SPECS)
        play(store, "op-1")
        expected = outline_of(store.load_specs("op-1"), store.load_states("op-1"))
        keys = store.keys
        # A key too many under /a (as a writer that did not move its index would leave).
        stray = keys.ix("op-1", "/a/r", State.COMPLETED, 1.0)
        store._conn.call("test", lambda c: c.put(stray, b"1.0"))
        assert store.load_outline("op-1") == expected
        store._conn.call("test", lambda c: c.delete(stray))
        rows, _ = store._conn.scan("test", *span(keys.tops("op-1")))
        for key, kv in rows:  # as written before the state index
            entry = {k: v for k, v in decode(kv.value).items() if k != "ix"}
            store._conn.call("test", lambda c, k=key, e=entry: c.put(k, encode(e)))
        store._conn.call("test", lambda c: c.delete_prefix(keys.ixs("op-1")))
        assert store.load_outline("op-1") == expected
    finally:
        store.close()


FAILING = """
kind: Plan
metadata: {name: short}
phases:
  - id: group
    phases:
      - {id: ok, executor: noop}
      - {id: broken, executor: command, data: {run: "echo 'disk full'; exit 3"}}
  - {id: after, executor: noop}
"""


def test_plan_short_shows_the_top_level_rows_and_failures_of_the_whole_plan(gravity) -> None:
    """The operator's short view, read from the index, is the whole view's top-level rows
    and its failure lines (with where the whole output is), line for line."""
    gravity.create(FAILING)
    gravity("plan", "resume", check=1)
    def words(text: str) -> list[str]:  # the columns are as wide as their widest cell
        return [" ".join(line.split()) for line in text.splitlines()
                if not line.startswith("-----")]

    whole = gravity("plan", check=0).stdout
    short = words(gravity("plan", "--short", check=0).stdout)
    nested = ("  * /", "  ✓ /", "  × /")  # a row indented under its top-level phase
    assert short == words("\n".join(line for line in whole.splitlines()
                                     if not line.startswith(nested)))
    assert any(line.startswith("× /group ") for line in short)
    assert "disk full" in short and any(line.startswith("full output:") for line in short)
