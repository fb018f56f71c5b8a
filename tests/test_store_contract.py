"""The Store contract, run against both backends: embedded SQLite and a real etcd server.
Every Store method is exercised the way the engine uses it; both backends must agree.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from freezegun import freeze_time

from engine.dispatch import dispatch_mode
from engine.errors import (
    EXIT_INVALID,
    EXIT_REFUSED,
    LeaseExpired,
    LockHeld,
    NotFound,
    OperationExists,
    PhaseConflict,
)
from engine.model import (
    MAX_ERROR_BYTES,
    MAX_NOTE_BYTES,
    ChangeRecord,
    Operation,
    OpState,
    PhaseSpec,
    PhaseState,
    RetryPolicy,
    State,
    Transition,
    json_size,
    replay,
)
from engine.names import MAX_OPERATION_ID, MAX_PHASE_ID, MAX_SEGMENT, phase_id_problem
from engine.store import Store, open_store
from engine.store.base import CLUSTER_LOCK, coordinator_lock, this_host, this_pid
from tests.helpers import wait_for


@pytest.fixture(params=["sqlite", "etcd"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gravity.db'}"
    else:
        url = request.getfixturevalue("etcd_url")
    opened = open_store(url)
    try:
        yield opened
    finally:
        opened.close()


def is_etcd(store: Store) -> bool:
    return store.url.startswith("etcd")


def make_op(op_id: str = "op-1", **changes: object) -> Operation:
    now = time.time()
    return Operation(op_id, "install", "install.yaml", created=now, updated=now,
                     **changes)  # type: ignore[arg-type]


def leaves(n: int, prefix: str = "/p") -> list[PhaseSpec]:
    return [PhaseSpec(f"{prefix}{i:05d}", "", executor="noop") for i in range(n)]


def step(store: Store, op_id: str, phase: str, to: State, **changes: object) -> ChangeRecord:
    """Move one phase on by one transition, the way the engine does: read, advance, CAS."""
    cur = store.get_state(op_id, phase)
    return store.apply(op_id, [Transition.of(cur, cur.advance(to, **changes))])[0]


@contextlib.contextmanager
def later(store: Store, seconds: float) -> Iterator[None]:
    """Let `seconds` pass: really for etcd (its clock is its own), frozen time for SQLite."""
    if is_etcd(store):
        time.sleep(seconds)
        yield
        return
    moment = datetime.datetime.fromtimestamp(time.time() + seconds, tz=datetime.UTC)
    with freeze_time(moment):
        yield


# -- operations ----------------------------------------------------------------------------
def test_created_operation_reads_back_and_holds_the_cluster_lock(store: Store) -> None:
    op = make_op(data={"values": {"a": 1}})
    store.create_operation(op, leaves(3))
    assert store.get_operation(op.id) == op
    assert store.list_operations() == [op]
    assert store.active_operation_id() == op.id


def test_unknown_operation_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as err:
        store.get_operation("op-missing")
    assert err.value.exit_code == EXIT_INVALID
    assert "op-missing" in str(err.value)
    with pytest.raises(NotFound):
        store.finish_operation("op-missing", OpState.COMPLETED, None)
    assert store.active_operation_id() is None
    assert store.list_operations() == []


def test_second_operation_is_refused_while_the_first_is_active(store: Store) -> None:
    first, second = make_op("op-a"), make_op("op-b")
    store.create_operation(first, leaves(2))
    with pytest.raises(LockHeld) as err:
        store.create_operation(second, leaves(4))
    assert err.value.holder == "op-a"
    assert err.value.exit_code == EXIT_REFUSED
    # Nothing of the refused operation is visible.
    with pytest.raises(NotFound):
        store.get_operation("op-b")
    assert store.load_specs("op-b") == []
    assert store.active_operation_id() == "op-a"

    done = store.finish_operation("op-a", OpState.COMPLETED, "all good")
    assert (done.state, done.note) == (OpState.COMPLETED, "all good")
    assert store.get_operation("op-a") == done
    assert store.active_operation_id() is None

    store.create_operation(second, leaves(4))
    assert store.active_operation_id() == "op-b"
    assert [o.id for o in store.list_operations()] == ["op-a", "op-b"]
    assert len(store.load_specs("op-b")) == 4


def test_operation_ids_are_unique(store: Store) -> None:
    store.create_operation(make_op("op-1"), leaves(1))
    first = store.finish_operation("op-1", OpState.FAILED, None)
    with pytest.raises(OperationExists, match="an operation with ID op-1 already exists") as err:
        store.create_operation(make_op("op-1"), leaves(3, "/other"))
    # The ID is taken for good: bad input (exit 2), not a lock that frees up; nothing written.
    assert err.value.exit_code == EXIT_INVALID and not isinstance(err.value, LockHeld)
    assert "choose another --id" in (err.value.hint or "")
    assert store.get_operation("op-1") == first
    assert store.load_specs("op-1") == leaves(1)
    assert store.active_operation_id() is None


def test_a_store_says_whether_agents_on_other_hosts_can_share_it(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAVITY_DISPATCH", raising=False)
    assert store.capabilities.shared is is_etcd(store)
    assert dispatch_mode(store) == ("agents" if is_etcd(store) else "local")
    for forced in ("agents", "local"):
        monkeypatch.setenv("GRAVITY_DISPATCH", forced)
        assert dispatch_mode(store) == forced


def test_finishing_an_operation_that_does_not_hold_the_lock_leaves_the_lock(store: Store) -> None:
    store.create_operation(make_op("op-1"), leaves(1))
    store.finish_operation("op-1", OpState.ROLLED_BACK, None)
    store.create_operation(make_op("op-2"), leaves(1))
    store.finish_operation("op-1", OpState.FAILED, "closed twice")
    assert store.active_operation_id() == "op-2"
    assert store.get_operation("op-1").state is OpState.FAILED


# -- plan ----------------------------------------------------------------------------------
def test_specs_come_back_exactly_and_in_written_order(store: Store) -> None:
    specs = [
        PhaseSpec("/masters", "", "Masters", children=("/masters/z", "/masters/a"), parallel=2),
        PhaseSpec("/masters/z", "/masters", executor="command", data={"argv": ["true"]},
                  node="node-1", retry=RetryPolicy(attempts=3, initial=0.5), timeout=30.0),
        PhaseSpec("/masters/a", "/masters", executor="noop", requires=("/masters/z",)),
        PhaseSpec("/apps", "", executor="noop"),
    ]
    store.create_operation(make_op(), specs)
    assert store.load_specs("op-1") == specs


def test_absent_state_is_unstarted_at_version_zero(store: Store) -> None:
    store.create_operation(make_op(), leaves(2))
    assert store.get_state("op-1", "/p00000") == PhaseState("/p00000")
    assert store.load_states("op-1") == {}


def test_apply_is_a_compare_and_swap(store: Store) -> None:
    store.create_operation(make_op(), leaves(2))
    start = PhaseState("/p00000")
    running = start.advance(State.IN_PROGRESS, owner=7, node="node-1")
    [rec] = store.apply("op-1", [Transition(0, running, State.UNSTARTED)])
    assert (rec.phase_id, rec.version, rec.from_state, rec.to_state) == (
        "/p00000", 1, State.UNSTARTED, State.IN_PROGRESS)
    assert rec.seq > 0 and rec.operation_id == "op-1"
    assert store.get_state("op-1", "/p00000") == running

    # A second writer still thinking version 0 loses and changes nothing.
    rival = start.advance(State.FAILED, error="late")
    with pytest.raises(PhaseConflict) as err:
        store.apply("op-1", [Transition(0, rival, State.UNSTARTED)])
    assert err.value.phase_id == "/p00000"
    assert "expected version 0, found 1" in str(err.value)
    assert store.get_state("op-1", "/p00000") == running
    assert store.changelog("op-1") == [rec]

    done = running.advance(State.COMPLETED, owner=None)
    store.apply("op-1", [Transition.of(running, done)])
    assert store.get_state("op-1", "/p00000").version == 2


def test_a_conflict_anywhere_in_a_batch_writes_nothing(store: Store) -> None:
    store.create_operation(make_op(), leaves(3))
    step(store, "op-1", "/p00001", State.IN_PROGRESS)
    before = store.load_states("op-1"), store.changelog("op-1")
    batch = [
        Transition(0, PhaseState("/p00000").advance(State.IN_PROGRESS), State.UNSTARTED),
        Transition(0, PhaseState("/p00001").advance(State.IN_PROGRESS), State.UNSTARTED),
        Transition(0, PhaseState("/p00002").advance(State.IN_PROGRESS), State.UNSTARTED),
    ]
    with pytest.raises(PhaseConflict) as err:
        store.apply("op-1", batch)
    assert err.value.phase_id == "/p00001"
    assert (store.load_states("op-1"), store.changelog("op-1")) == before
    assert store.get_state("op-1", "/p00000").state is State.UNSTARTED


# The largest transitions the engine can make: the longest operation ID, phase IDs of the most
# characters a key escapes to three bytes, the longest node name, error and note at their bounds.
LONG_OP = "o" * MAX_OPERATION_ID
LONG_NODE = "n" * 63
ERROR = "E" * MAX_ERROR_BYTES
NOTE = "N" * MAX_NOTE_BYTES


def widest_phase_id(index: int) -> str:
    """A valid phase ID of MAX_PHASE_ID characters, nearly all ':' (`%3A` in an etcd key)."""
    segment = "/a" + ":" * (MAX_SEGMENT - 1)
    body = segment * ((MAX_PHASE_ID - 8) // len(segment))
    last = f"/{index:05d}"
    phase_id = body + last + ":" * (MAX_PHASE_ID - len(body) - len(last))
    assert len(phase_id) == MAX_PHASE_ID and phase_id_problem(phase_id) is None
    return phase_id


def largest_step(cur: PhaseState, owner: int) -> Transition:
    new = cur.advance(State.FAILED if cur.state is State.IN_PROGRESS else State.IN_PROGRESS,
                      owner=owner, node=LONG_NODE, error=ERROR, note=NOTE)
    assert (new.error, new.note) == (ERROR, NOTE)  # at their bounds, not cut
    return Transition.of(cur, new)


def test_a_batch_of_the_most_transitions_a_store_takes_is_one_atomic_write(store: Store) -> None:
    n = store.capabilities.max_transitions
    specs = [PhaseSpec(widest_phase_id(i), "", executor="noop") for i in range(n)]
    store.create_operation(make_op(LONG_OP), specs)
    lease = store.grant_lease(f"coordinator:{LONG_OP}", ttl=60)
    batch = [largest_step(PhaseState(s.id), lease.id) for s in specs]

    # Another writer moved the last phase first: all n are refused, nothing is written.
    step(store, LONG_OP, specs[-1].id, State.IN_PROGRESS)
    before = store.load_states(LONG_OP), store.changelog(LONG_OP)
    with pytest.raises(PhaseConflict) as err:
        store.apply(LONG_OP, batch, fence=lease.id)
    assert err.value.phase_id == specs[-1].id
    assert (store.load_states(LONG_OP), store.changelog(LONG_OP)) == before

    batch[-1] = largest_step(store.get_state(LONG_OP, specs[-1].id), lease.id)
    records = store.apply(LONG_OP, batch, fence=lease.id)
    assert [r.phase_id for r in records] == [s.id for s in specs]
    # One write: consecutive seqs (on etcd, one revision with its records' places 0..n-1).
    seqs = [r.seq for r in records]
    assert seqs == list(range(seqs[0], seqs[0] + n))
    assert store.changelog(LONG_OP)[1:] == records
    assert store.load_states(LONG_OP) == {t.phase_id: t.new for t in batch}


def test_a_batch_over_the_limit_or_moving_a_phase_twice_is_refused_before_writing(
        store: Store) -> None:
    n = store.capabilities.max_transitions
    specs = leaves(n + 1)
    store.create_operation(make_op(), specs)
    starts = [Transition(0, PhaseState(s.id).advance(State.IN_PROGRESS), State.UNSTARTED)
              for s in specs]
    with pytest.raises(ValueError, match=f"got {n + 1} transitions; .* at most {n} "):
        store.apply("op-1", starts)
    first = starts[0].new
    with pytest.raises(ValueError, match="two transitions of /p00000"):
        store.apply("op-1", [starts[0], Transition(1, first.advance(State.COMPLETED),
                                                   State.IN_PROGRESS)])
    with pytest.raises(ValueError, match="exactly one step"):
        store.apply("op-1", [Transition(0, first.advance(State.COMPLETED), State.UNSTARTED)])
    assert store.load_states("op-1") == {} and store.changelog("op-1") == []

    # A caller whose transitions do not depend on each other may have them split.
    records = store.apply_in_parts("op-1", starts)
    assert [r.phase_id for r in records] == [s.id for s in specs]
    assert len({r.seq for r in records}) == n + 1 == len(store.load_states("op-1"))


def test_an_error_of_any_length_keeps_its_start_and_end_within_its_bound(store: Store) -> None:
    """A phase whose output is megabytes still records its failure: the message and the last
    lines survive, the middle is cut, and state and changelog agree."""
    store.create_operation(make_op(), leaves(1))
    step(store, "op-1", "/p00000", State.IN_PROGRESS)
    huge = "exit status 3\n" + "\x1b[31m\u00e9\U0001f600" * 100_000 + "\nthe last line"
    rec = step(store, "op-1", "/p00000", State.FAILED, error=huge, note="n" * 50_000)
    st = store.get_state("op-1", "/p00000")
    assert st.error is not None and st.note is not None
    assert st.error.startswith("exit status 3\n") and st.error.endswith("\nthe last line")
    assert "characters cut ...]" in st.error
    assert json_size(st.error) <= MAX_ERROR_BYTES and json_size(st.note) <= MAX_NOTE_BYTES
    assert (rec.error, rec.note) == (st.error, st.note)
    assert store.changelog("op-1")[-1] == rec


def test_changelog_orders_records_filters_by_seq_and_replays_to_the_states(store: Store) -> None:
    store.create_operation(make_op(), leaves(4))
    written = [step(store, "op-1", "/p00000", State.IN_PROGRESS)]
    written += store.apply("op-1", [
        Transition.of(cur := store.get_state("op-1", "/p00000"), cur.advance(State.COMPLETED)),
        Transition(0, PhaseState("/p00001").advance(State.IN_PROGRESS), State.UNSTARTED),
        Transition(0, PhaseState("/p00002").advance(State.IN_PROGRESS), State.UNSTARTED),
    ])
    written.append(step(store, "op-1", "/p00001", State.FAILED, error="boom", attempt=1))
    written.append(step(store, "op-1", "/p00001", State.IN_PROGRESS, attempt=2))

    log = store.changelog("op-1")
    assert log == written
    seqs = [r.seq for r in log]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert store.changelog("op-1", after=log[1].seq) == log[2:]
    assert store.changelog("op-1", after=log[-1].seq) == []
    assert replay(log) == store.load_states("op-1")
    assert [(r.phase_id, r.version) for r in log] == [
        ("/p00000", 1), ("/p00000", 2), ("/p00001", 1), ("/p00002", 1),
        ("/p00001", 2), ("/p00001", 3)]


def test_last_seq_is_where_a_reader_of_only_what_comes_next_starts(store: Store) -> None:
    store.create_operation(make_op(), leaves(3))
    empty = store.last_seq("op-1")
    assert store.changelog("op-1", after=empty) == []
    first = step(store, "op-1", "/p00000", State.IN_PROGRESS)
    assert first.seq > empty
    step(store, "op-1", "/p00000", State.COMPLETED)

    mark = store.last_seq("op-1")
    assert mark >= store.changelog("op-1")[-1].seq
    assert store.changelog("op-1", after=mark) == []
    later = step(store, "op-1", "/p00001", State.IN_PROGRESS)
    assert store.changelog("op-1", after=mark) == [later]
    assert store.wait_changes("op-1", after=mark, timeout=5) == [later]
    with pytest.raises(NotFound):
        store.last_seq("no-such-op")


def test_an_agent_reads_only_its_own_nodes_records(store: Store) -> None:
    store.create_operation(make_op(), leaves(4))
    mark = store.last_seq("op-1")
    a1 = step(store, "op-1", "/p00000", State.IN_PROGRESS, node="node-a")
    b1 = step(store, "op-1", "/p00001", State.IN_PROGRESS, node="node-b")
    a2 = step(store, "op-1", "/p00000", State.COMPLETED)  # keeps node-a
    step(store, "op-1", "/p00002", State.IN_PROGRESS, node="node-b/2")  # not a prefix match

    assert a2.node == "node-a"
    assert store.changelog("op-1", node="node-a") == [a1, a2]
    assert store.changelog("op-1", after=a1.seq, node="node-a") == [a2]
    assert store.changelog("op-1", node="node-b") == [b1]
    assert store.changelog("op-1", node="node-c") == []
    assert store.wait_changes("op-1", after=mark, timeout=5, node="node-b") == [b1]
    assert store.wait_changes("op-1", after=b1.seq, timeout=0.3, node="node-b") == []
    later = step(store, "op-1", "/p00003", State.IN_PROGRESS, node="node-b")
    assert store.wait_changes("op-1", after=b1.seq, timeout=5, node="node-b") == [later]
    assert len(store.changelog("op-1")) == 5


def test_an_agent_waiting_for_dispatches_is_not_handed_its_own_results(store: Store) -> None:
    """An agent waits with `to_state=IN_PROGRESS`: the result it records for a phase (same
    node, same key range) does not end its wait; the retry dispatched after it does."""
    store.create_operation(make_op(), leaves(2))
    mark = store.last_seq("op-1")
    first = step(store, "op-1", "/p00000", State.IN_PROGRESS, node="node-a")
    got = store.wait_changes("op-1", after=mark, timeout=5, node="node-a",
                             to_state=State.IN_PROGRESS)
    assert got == [first]
    waited: list[list[ChangeRecord]] = []
    calling = threading.Event()

    def agent() -> None:
        calling.set()
        waited.append(store.wait_changes("op-1", after=first.seq, timeout=60, node="node-a",
                                         to_state=State.IN_PROGRESS))

    waiter = threading.Thread(target=agent)
    waiter.start()
    assert calling.wait(10)
    failed = step(store, "op-1", "/p00000", State.FAILED, error="boom")  # its own result
    step(store, "op-1", "/p00001", State.IN_PROGRESS, node="node-b")  # another node's
    retry = step(store, "op-1", "/p00000", State.IN_PROGRESS)  # keeps node-a
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert waited == [[retry]]
    assert (retry.node, retry.version, failed.node) == ("node-a", 3, "node-a")
    # Read afresh (a new feed), the same: the result is skipped, not lost from the log.
    assert store.wait_changes("op-1", after=mark, timeout=5, node="node-a",
                              to_state=State.IN_PROGRESS) == [first, retry]
    assert store.changelog("op-1", node="node-a") == [first, failed, retry]


def test_an_agent_that_moves_on_forgets_the_old_operations_changes(store: Store) -> None:
    """`forget_changes` lets a waiter in progress go with what it has, drops what the process
    held for the operation (etcd: its watch), and a later wait reads afresh, missing nothing."""
    store.create_operation(make_op(), leaves(2))
    first = step(store, "op-1", "/p00000", State.IN_PROGRESS)
    assert store.wait_changes("op-1", 0, timeout=5) == [first]
    waited: list[list[ChangeRecord]] = []
    calling = threading.Event()

    def waiter() -> None:
        calling.set()
        waited.append(store.wait_changes("op-1", first.seq, timeout=60))

    thread = threading.Thread(target=waiter)
    thread.start()
    assert calling.wait(10)
    time.sleep(0.2)  # let it block (a wait that has not started yet returns as well)
    store.forget_changes("op-1")
    thread.join(timeout=30)
    assert not thread.is_alive() and waited == [[]]
    if hasattr(store, "_feeds"):  # etcd: nothing of op-1 is held or watched any more
        assert [key for key in store._feeds if key[0] == "op-1"] == []
    second = step(store, "op-1", "/p00001", State.IN_PROGRESS)
    assert store.wait_changes("op-1", 0, timeout=5) == [first, second]


def test_operations_whose_ids_share_a_prefix_do_not_mix(store: Store) -> None:
    store.create_operation(make_op("op-1"), leaves(2, "/a"))
    store.finish_operation("op-1", OpState.COMPLETED, None)
    store.create_operation(make_op("op-10"), leaves(3, "/b"))
    step(store, "op-1", "/a00000", State.IN_PROGRESS)
    step(store, "op-10", "/b00000", State.IN_PROGRESS)
    assert [s.id for s in store.load_specs("op-1")] == ["/a00000", "/a00001"]
    assert list(store.load_states("op-1")) == ["/a00000"]
    assert [r.phase_id for r in store.changelog("op-1")] == ["/a00000"]
    assert [o.id for o in store.list_operations()] == ["op-1", "op-10"]


def test_wake_ends_a_wait_in_another_thread_without_a_record(store: Store) -> None:
    """How a coordinator stops its changelog watcher: no waiting out the watcher's timeout."""
    store.create_operation(make_op(), leaves(2))
    mark = store.last_seq("op-1")
    got: list[list[ChangeRecord]] = []
    calling = threading.Event()

    def wait() -> None:
        calling.set()
        got.append(store.wait_changes("op-1", after=mark, timeout=60))

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert calling.wait(10)
    assert waiter.is_alive()
    # A wake ends the waits in progress; one sent before this wait took hold is not for it
    # (it would wait out its 60 s), so wake until it returns: within seconds, or fail.
    wait_for(lambda: store.wake("op-1") or not waiter.is_alive(), timeout=10,
             what="a wake to end the wait")
    waiter.join(timeout=10)  # a join that timed out leaves it alive: the assert below fails
    assert not waiter.is_alive() and got == [[]]
    assert store.changelog("op-1") == []


def test_wait_changes_wakes_on_a_write_from_another_thread(store: Store) -> None:
    store.create_operation(make_op(), leaves(2))
    first = step(store, "op-1", "/p00000", State.IN_PROGRESS)

    def writer() -> None:
        time.sleep(0.4)
        step(store, "op-1", "/p00001", State.IN_PROGRESS)

    thread = threading.Thread(target=writer)
    started = time.monotonic()
    thread.start()
    got = store.wait_changes("op-1", after=first.seq, timeout=20)
    elapsed = time.monotonic() - started
    thread.join()
    assert [r.phase_id for r in got] == ["/p00001"]
    assert 0.3 < elapsed < 10
    # Records already there come back at once; nothing new means [] after the timeout.
    assert store.wait_changes("op-1", after=0, timeout=5) == store.changelog("op-1")
    started = time.monotonic()
    assert store.wait_changes("op-1", after=got[-1].seq, timeout=0.5) == []
    assert 0.45 < time.monotonic() - started < 5


# -- leases and locks ----------------------------------------------------------------------
def test_lease_grant_renew_revoke(store: Store) -> None:
    lease = store.grant_lease("coordinator:op-1", ttl=30)
    assert (lease.name, lease.host, lease.pid) == ("coordinator:op-1", this_host(), this_pid())
    assert lease.ttl >= 30 and lease.expires > time.time() + 25
    assert store.get_lease(lease.id).name == "coordinator:op-1"
    renewed = store.keepalive(lease.id)
    assert renewed.id == lease.id and renewed.expires >= lease.expires - 1
    store.revoke_lease(lease.id)
    assert store.get_lease(lease.id) is None
    store.revoke_lease(lease.id)  # already gone: no error
    with pytest.raises(LeaseExpired):
        store.keepalive(lease.id)


def test_a_fenced_write_commits_only_while_the_writers_lease_lives(store: Store) -> None:
    store.create_operation(make_op(), leaves(2))
    lease = store.grant_lease("coordinator:op-1", ttl=30)
    cur = store.get_state("op-1", "/p00000")
    start = Transition.of(cur, cur.advance(State.IN_PROGRESS, owner=lease.id))
    assert store.apply("op-1", [start], fence=lease.id)[0].to_state is State.IN_PROGRESS
    store.revoke_lease(lease.id)  # as when it expires: its holder may record nothing more
    cur = store.get_state("op-1", "/p00000")
    done = Transition.of(cur, cur.advance(State.COMPLETED, owner=None))
    with pytest.raises(LeaseExpired):
        store.apply("op-1", [done], fence=lease.id)
    assert store.get_state("op-1", "/p00000") == cur
    assert [r.to_state for r in store.changelog("op-1")] == [State.IN_PROGRESS]


def test_a_lease_counts_its_ttl_from_when_it_was_granted_not_asked_for(store: Store) -> None:
    asked = time.time()
    lease = store.grant_lease("coordinator:op-1", ttl=5)
    assert asked + 4 <= lease.expires <= time.time() + 6
    renewed = store.keepalive(lease.id)
    assert renewed.expires >= asked + 4


def test_lease_expires_after_its_ttl_unless_renewed(store: Store) -> None:
    lease = store.grant_lease("agent:node-1", ttl=1)
    with later(store, 3.0):
        assert store.get_lease(lease.id) is None
        with pytest.raises(LeaseExpired):
            store.keepalive(lease.id)


def test_lock_is_exclusive_reentrant_and_freed_by_revoking_the_lease(store: Store) -> None:
    name = coordinator_lock("op-1")
    mine = store.grant_lease("coordinator:op-1", ttl=30)
    theirs = store.grant_lease("coordinator:op-1", ttl=30)
    assert store.lock_holder(name) is None
    store.acquire_lock(name, mine)
    store.acquire_lock(name, mine)  # the same lease again: fine
    assert store.lock_holder(name).id == mine.id
    with pytest.raises(LockHeld) as err:
        store.acquire_lock(name, theirs)
    assert err.value.holder == mine.describe()
    assert f"lease {mine.id}" in str(err.value) and this_host() in str(err.value)

    store.release_lock(name, theirs.id)  # not theirs to release: nothing happens
    assert store.lock_holder(name).id == mine.id
    store.release_lock(name, mine.id)
    assert store.lock_holder(name) is None
    store.acquire_lock(name, theirs)
    store.revoke_lease(theirs.id)
    assert store.lock_holder(name) is None
    store.acquire_lock(name, mine)
    assert store.lock_holder(name).id == mine.id


def test_lock_of_an_expired_lease_can_be_taken(store: Store) -> None:
    name = coordinator_lock("op-1")
    old = store.grant_lease("coordinator:op-1", ttl=1)
    store.acquire_lock(name, old)
    with later(store, 3.0):
        assert store.lock_holder(name) is None
        new = store.grant_lease("coordinator:op-1", ttl=30)
        store.acquire_lock(name, new)
        assert store.lock_holder(name).id == new.id


def test_cluster_lock_is_not_a_lease_lock(store: Store) -> None:
    store.create_operation(make_op(), leaves(1))
    assert store.lock_holder(CLUSTER_LOCK) is None
    assert store.active_operation_id() == "op-1"


# -- scale ---------------------------------------------------------------------------------
def test_ten_thousand_phase_plan_is_created_and_its_states_read(store: Store) -> None:
    specs = leaves(10_000)
    store.create_operation(make_op(), specs)
    assert store.load_specs("op-1") == specs
    size = store.capabilities.max_transitions
    for start in range(0, len(specs), size):
        store.apply("op-1", [
            Transition(0, PhaseState(s.id).advance(State.IN_PROGRESS), State.UNSTARTED)
            for s in specs[start : start + size]])
    states = store.load_states("op-1")
    assert len(states) == 10_000
    assert {s.version for s in states.values()} == {1}
    assert len(store.changelog("op-1", after=0)) == 10_000
