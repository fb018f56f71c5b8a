"""What only the etcd store has to prove: URL checks, failing fast, riding out an etcd restart,
and never applying a transition twice when a commit's reply is lost.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import (
    EXIT_INVALID,
    LeaseExpired,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
)
from engine.model import Operation, OpState, PhaseSpec, PhaseState, State, Transition
from engine.store import Capabilities, TLSConfig, open_store
from engine.store.etcd import EtcdStore
from engine.store.etcd_conn import DEFAULT_PATIENCE, parse_url
from engine.store.etcd_limits import MAX_TXN_OPS, max_transitions
from tests.etcd_server import EtcdServer, dead_port
from tests.helpers import wait_for
from tests.test_store_contract import LONG_OP, largest_step, widest_phase_id


def make_op(op_id: str = "op-1") -> Operation:
    now = time.time()
    return Operation(op_id, "install", "install.yaml", created=now, updated=now)


def leaves(n: int) -> list[PhaseSpec]:
    return [PhaseSpec(f"/p{i:05d}", "", executor="noop") for i in range(n)]


def start(phase: str) -> Transition:
    return Transition(0, PhaseState(phase).advance(State.IN_PROGRESS), State.UNSTARTED)


def count_failed_tries(store: EtcdStore) -> list[BaseException]:
    """The errors of the store's tries at reaching etcd from now on (each try is one
    `_once`; the retry loop around it decides whether to try again)."""
    failed: list[BaseException] = []
    once = store._conn._once

    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            return once(*args, **kwargs)
        except Exception as exc:
            failed.append(exc)
            raise

    store._conn._once = counted  # type: ignore[method-assign]
    return failed


def watching(store: EtcdStore, op_id: str) -> bool:
    """Whether the store has an unbroken watch open on the operation's changelog."""
    feed = store._feeds.get((op_id, None, None))
    return feed is not None and feed.watch_id is not None and not feed.broken


@pytest.fixture
def store(etcd_url: str) -> Iterator[EtcdStore]:
    s = EtcdStore.from_url(etcd_url)
    yield s
    s.close()


# -- the URL -------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [
    "etcd://",
    "etcd://:2379",
    "etcd://host:",
    "etcd://host:port",
    "etcd://host:0",
    "etcd://host:99999",
    "etcd://host:2379,,other:2379",
    "etcd://host:2379,host:2379",
    "etcd://ho st:2379",
    "etcd://host:2379//gravity",
    "etcd://host:2379/a//b",
    "etcd://host:2379/a/../b",
    "etcd://host:2379/a/./b",
    "etcd://host:2379/a/",
    "etcd://host:2379/a b",
    "etcd://user:secret@host:2379",
    "etcd://host:2379?timeout=1",
    "etcd://host:2379#x",
    "etcdx://host:2379",
])
def test_bad_urls_are_refused_before_connecting(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(StoreConfigError) as err:
        open_store(url)
    assert err.value.exit_code == EXIT_INVALID
    assert time.monotonic() - started < 1


def test_good_urls_parse_into_endpoints_and_prefix() -> None:
    cfg = parse_url("etcd://10.0.0.1:2379,node-2.example:12379,[::1]:2380/clusters/prod",
                    env={})
    assert cfg.endpoints == (("10.0.0.1", 2379), ("node-2.example", 12379), ("[::1]", 2380))
    assert (cfg.prefix, cfg.secure, cfg.patience) == ("/clusters/prod", False, DEFAULT_PATIENCE)
    plain = parse_url("etcds://etcd", env={"GRAVITY_ETCD_USER": "u",
                                           "GRAVITY_ETCD_PASSWORD": "p",
                                           "GRAVITY_ETCD_PATIENCE": "5"})
    assert plain.endpoints == (("etcd", 2379),) and plain.prefix == "/gravity"
    assert (plain.secure, plain.user, plain.password, plain.patience) == (True, "u", "p", 5.0)


@pytest.mark.parametrize(("url", "tls", "env"), [
    ("etcd://h:2379", TLSConfig(cacert="/ca.pem"), {}),
    ("etcds://h:2379", TLSConfig(cert="/c.pem"), {}),
    ("etcd://h:2379", TLSConfig(), {"GRAVITY_ETCD_USER": "gravity"}),
    ("etcd://h:2379", TLSConfig(), {"GRAVITY_ETCD_PATIENCE": "soon"}),
    ("etcd://h:2379", TLSConfig(), {"GRAVITY_ETCD_PATIENCE": "-1"}),
])
def test_inconsistent_tls_or_credentials_are_refused(
        url: str, tls: TLSConfig, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRAVITY_ETCD_USER", "GRAVITY_ETCD_PASSWORD", "GRAVITY_ETCD_PATIENCE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StoreConfigError):
        open_store(url, tls=tls)


def test_unreadable_tls_files_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match="cannot read --etcd-cacert"):
        open_store("etcds://127.0.0.1:2379", tls=TLSConfig(cacert=str(tmp_path / "none.pem")))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(StoreConfigError, match="not PEM"):
        open_store("etcds://127.0.0.1:2379", tls=TLSConfig(cacert=str(junk)))


@pytest.mark.slow  # waits out the connect patience: out of --fast
def test_nothing_listening_fails_fast_naming_the_url() -> None:
    with dead_port() as port:
        url = f"etcd://127.0.0.1:{port}/gravity"
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as err:
            open_store(url)
    assert time.monotonic() - started < 15
    assert url in err.value.message
    assert "etcdctl --endpoints http://127.0.0.1:" in (err.value.hint or "")


def test_a_dead_endpoint_fails_over_to_a_live_one(etcd_server: EtcdServer) -> None:
    with dead_port() as port:
        url = f"etcd://127.0.0.1:{port},{etcd_server.endpoint}/failover{time.time_ns()}"
        for _ in range(3):  # the first endpoint tried is picked at random
            with EtcdStore.from_url(url) as store:
                store.create_operation(make_op(f"op-{time.time_ns()}"), leaves(1))
                assert store.active_operation_id() is not None
                store.finish_operation(store.active_operation_id() or "", OpState.COMPLETED,
                                       None)


# -- batching --------------------------------------------------------------------------------
def test_past_the_limit_etcd_itself_refuses_the_transaction(store: EtcdStore) -> None:
    """`max_transitions` is what etcd's default limits allow, not a guess: with the check
    lifted, a quarter more of the largest transitions is a request etcd refuses as too large,
    and 33 small ones that each move a stored state (4 operations each: the state, its record,
    its index key put and the old one deleted) one with too many operations; 32 commit."""
    n = store.capabilities.max_transitions
    assert n == max_transitions(store.keys.prefix) <= MAX_TXN_OPS // 4
    specs = [PhaseSpec(widest_phase_id(i), "", executor="noop") for i in range(n + n // 4)]
    store.create_operation(make_op(LONG_OP), specs)
    store.capabilities = Capabilities(shared=True, max_transitions=10_000)
    with pytest.raises(StoreError, match="request is too large"):
        store.apply(LONG_OP, [largest_step(PhaseState(s.id), 1) for s in specs])
    assert store.load_states(LONG_OP) == {} and store.changelog(LONG_OP) == []

    store.finish_operation(LONG_OP, OpState.FAILED, None)
    store.create_operation(make_op(), leaves(33))
    running = [r.state_after() for r in store.apply_in_parts("op-1", [start(f"/p{i:05d}")
                                                                 for i in range(33)])]
    done = [Transition.of(st, st.advance(State.COMPLETED)) for st in running]
    with pytest.raises(StoreError, match="too many operations"):
        store.apply("op-1", done)
    assert len(store.changelog("op-1")) == 33
    assert len(store.apply("op-1", done[:32])) == 32
    assert store.load_outline("op-1").counts == {"/p00032": {State.IN_PROGRESS: 1}, **{
        f"/p{i:05d}": {State.COMPLETED: 1} for i in range(32)}}


def test_store_state_survives_reopening(etcd_url: str) -> None:
    with EtcdStore.from_url(etcd_url) as first:
        first.create_operation(make_op(), leaves(2))
        earlier = first.apply("op-1", [start("/p00000")])[0]
    with EtcdStore.from_url(etcd_url) as second:
        assert second.active_operation_id() == "op-1"
        rec = second.apply("op-1", [start("/p00001")])[0]
        assert rec.seq > earlier.seq  # etcd's revision, not this process's memory, orders
        assert second.changelog("op-1") == [earlier, rec]


# -- outages ---------------------------------------------------------------------------------
def test_apply_during_an_etcd_restart_completes_exactly_once(private_etcd: EtcdServer) -> None:
    store = EtcdStore.from_url(f"{private_etcd.url}/restart")
    store.create_operation(make_op(), leaves(2))
    store.apply("op-1", [start("/p00000")])
    private_etcd.stop()
    outcome: dict[str, object] = {}
    failed_tries = count_failed_tries(store)

    def run() -> None:
        try:
            outcome["records"] = store.apply("op-1", [start("/p00001")])
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    # It met the outage and tried again: waiting for etcd, not failed.
    wait_for(lambda: len(failed_tries) >= 3 or not thread.is_alive(),
             what="the apply to retry while etcd is down")
    assert thread.is_alive(), outcome  # still waiting for etcd, not failed
    private_etcd.start()
    thread.join(60)
    assert "error" not in outcome, outcome
    records = outcome["records"]
    log = store.changelog("op-1")
    assert [r for r in log if r.phase_id == "/p00001"] == records
    assert store.get_state("op-1", "/p00001").version == 1
    store.close()


def test_patience_runs_out_with_store_unavailable(private_etcd: EtcdServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAVITY_ETCD_PATIENCE", "1.5")
    with EtcdStore.from_url(f"{private_etcd.url}/patience") as store:
        private_etcd.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="gave up") as err:
            store.get_operation("op-1")
        assert 1.0 < time.monotonic() - started < 10
        assert "GRAVITY_ETCD_PATIENCE" in (err.value.hint or "")


def test_wait_changes_resumes_its_watch_after_an_etcd_restart(private_etcd: EtcdServer) -> None:
    url = f"{private_etcd.url}/watch"
    waiter, writer = EtcdStore.from_url(url), EtcdStore.from_url(url)
    writer.create_operation(make_op(), leaves(2))
    first = writer.apply("op-1", [start("/p00000")])[0]
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.extend(
        waiter.wait_changes("op-1", after=first.seq, timeout=40)))
    thread.start()
    # The waiter's watch is open, then cut by the outage, before etcd comes back.
    wait_for(lambda: watching(waiter, "op-1"), what="the waiter's watch to open")
    private_etcd.stop()
    wait_for(lambda: not watching(waiter, "op-1"), what="the waiter to see its watch cut")
    private_etcd.start()
    second = writer.apply("op-1", [start("/p00001")])[0]
    thread.join(45)
    assert got == [second]
    waiter.close()
    writer.close()


def test_a_watch_reports_its_keys_and_the_active_operation_and_breaks_with_etcd(
        private_etcd: EtcdServer) -> None:
    """What an idle agent blocks on: a put or delete of a watched kv record, an operation
    created or finished (the cluster lock), each reported; other keys not. An etcd restart
    breaks the watch (reported too), and a new one works again."""
    url = f"{private_etcd.url}/keywatch"
    store, writer = EtcdStore.from_url(url), EtcdStore.from_url(url)
    changed = threading.Event()
    watch = store.watch(changed.set, kv_keys=["agent-stop/n1"], active_operation=True)
    assert watch is not None and not watch.broken
    writer.kv_put("agent-stop/n2", {"at": 1.0})  # not watched
    writer.kv_put("agent-stop/n1", {"at": 1.0})
    wait_for(changed.is_set, what="the put of a watched key to be reported")
    changed.clear()
    assert not changed.is_set()
    writer.create_operation(make_op(), leaves(1))
    wait_for(changed.is_set, what="the new active operation to be reported")
    changed.clear()
    writer.finish_operation("op-1", OpState.COMPLETED, None)
    wait_for(changed.is_set, what="the finished operation to be reported")
    changed.clear()
    private_etcd.stop()
    wait_for(lambda: watch.broken and changed.is_set(), what="the cut watch to be reported")
    private_etcd.start()
    changed.clear()
    watches = [watch]

    def reopened() -> bool:  # as the agent does: a broken watch is opened again
        if watches[-1].broken:
            new = store.watch(changed.set, kv_keys=["agent-stop/n1"], active_operation=True)
            assert new is not None
            watches.append(new)
        return not watches[-1].broken

    wait_for(reopened, what="a new watch to open")
    changed.clear()
    writer.kv_delete("agent-stop/n1")
    wait_for(changed.is_set, what="the delete to be reported on the new watch")
    store.close()
    assert watches[-1].broken  # closed with its store
    writer.close()


def test_lease_renewals_share_one_stream_that_survives_an_etcd_restart(
        private_etcd: EtcdServer) -> None:
    """Renewals go over one long-lived keep-alive stream (not a stream and a thread each);
    when etcd restarts the next renewal opens a new one."""
    store = EtcdStore.from_url(f"{private_etcd.url}/renew")
    lease = store.grant_lease("agent:n1", 30)
    for _ in range(5):
        assert store.keepalive(lease.id).expires > time.time()
    streams = [t for t in threading.enumerate() if t.name == "lease-keepalive"]
    assert len(streams) == 1
    private_etcd.stop()
    private_etcd.start()
    renewed = store.keepalive(lease.id)  # waits out the restart on a new stream
    assert renewed.name == "agent:n1" and renewed.expires > time.time()
    store.revoke_lease(lease.id)
    with pytest.raises(LeaseExpired):
        store.keepalive(lease.id)
    store.close()


class ReplyCutter:
    """A TCP relay in front of etcd that, when armed, lets requests through but drops the
    replies and then cuts the connection: the write commits, the client never hears back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.dropped = 0
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if replies and self.armed.is_set():
                    self.dropped += len(data)
                    threading.Timer(0.5, self._cut, args=(src, dst)).start()
                    continue
                dst.sendall(data)
        self._cut(src, dst)

    def _cut(self, *socks: socket.socket) -> None:
        self.armed.clear()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.listener.close()
        self._cut(*self.socks)


def test_a_commit_whose_reply_was_lost_is_not_applied_twice(etcd_server: EtcdServer) -> None:
    relay = ReplyCutter(etcd_server.client_port)
    store = EtcdStore.from_url(f"etcd://127.0.0.1:{relay.port}/lostreply{time.time_ns()}")
    try:
        store.create_operation(make_op(), leaves(2))
        store.apply("op-1", [start("/p00000")])  # warms the connection
        relay.armed.set()
        records = store.apply("op-1", [start("/p00001")])
        assert relay.dropped > 0  # the first reply really was lost
        log = store.changelog("op-1")
        assert [r for r in log if r.phase_id == "/p00001"] == records
        assert len(log) == 2
        assert store.get_state("op-1", "/p00001").version == 1
    finally:
        store.close()
        relay.close()


# -- reading a whole plan ----------------------------------------------------------------------
def test_a_plan_too_large_for_one_message_is_read_in_smaller_pages(
        etcd_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page sized from the first page's values can exceed gRPC's message limit when later
    values are larger; the scan asks for that page again at half the size, until it fits."""
    import engine.store.etcd_conn as conn

    monkeypatch.setattr(conn, "GRPC_OPTIONS", [*(o for o in conn.GRPC_OPTIONS
                                                 if o[0] != "grpc.max_receive_message_length"),
                                               ("grpc.max_receive_message_length", 256 * 1024)])
    monkeypatch.setattr(conn, "PAGE_BYTES", 64 * 2**20)  # every later page: all the rest
    s = EtcdStore.from_url(etcd_url)
    try:
        specs = [PhaseSpec(f"/p{i:05d}", "", executor="noop",
                           data={"blob": "x" * (10 if i < 600 else 400)}) for i in range(1500)]
        s.create_operation(make_op(), specs)
        tries = count_failed_tries(s)
        assert s.load_specs("op-1") == specs  # 900 of 400+ bytes: over 256 KiB in one page
        assert tries == []  # no retry of the whole call: the page itself was asked again
    finally:
        s.close()


def test_load_plan_reads_specs_and_states_together_and_says_what_failed(store: EtcdStore) -> None:
    specs = leaves(3)
    store.create_operation(make_op(), specs)
    store.apply("op-1", [start("/p00001")])
    got_specs, got_states = store.load_plan("op-1")
    assert got_specs == specs == store.load_specs("op-1")
    assert got_states == store.load_states("op-1")
    assert got_states["/p00001"].state is State.IN_PROGRESS and len(got_states) == 1
    store.close()  # the states' reader thread hits the closed store: its error is raised here
    with pytest.raises(StoreError):
        store.load_plan("op-1")


def test_many_values_decode_at_once_or_each_on_its_own() -> None:
    from engine.store.etcd_keys import decode, decode_many

    ours = [b'{"a":1}', b'{"b":[2,3]}', b'{"c":"\\u00e9"}']
    assert decode_many(ours) == [decode(v) for v in ours] == [{"a": 1}, {"b": [2, 3]}, {"c": "é"}]
    # Values that would join into a different list are decoded one by one (and refused as ever).
    assert decode_many([b'{"a":1}', b' {"b":2} ']) == [{"a": 1}, {"b": 2}]
    with pytest.raises(ValueError):
        decode_many([b'{"a":1},{"b":2}', b'{"c":3}'])
    assert decode_many([]) == []


def test_keys_of_others_are_skipped_in_a_scan_of_ours() -> None:
    from engine.store.etcd_keys import Keys

    keys = Keys("/gravity")
    ours = [(keys.state("op-1", f"/p{i}"), i) for i in range(5)]
    foreign = (b"/gravity/data/op-1/state/not ours/x", 99)
    smuggled = (keys.state("op-1", "/p9") + b"\n" + keys.state("op-1", "/p8"), 98)
    assert keys.owned(ours) == ours
    assert keys.owned([*ours[:2], foreign, *ours[2:]]) == ours
    assert keys.owned([*ours, smuggled]) == ours  # a newline inside one key is not two keys
    assert keys.owned([]) == []


# -- one creator per operation ID ---------------------------------------------------------------
def test_two_creations_of_one_id_at_once_publish_one_plan_whole(etcd_url: str) -> None:
    """Two processes create op-1 at the same moment with different plans: one is refused, and
    the operation holds exactly the other's plan (before claims, their unpublished specs could
    interleave and the winner publish a mix)."""
    from engine.errors import LockHeld, OperationExists

    stores = [EtcdStore.from_url(etcd_url) for _ in range(2)]
    plans = [[PhaseSpec(f"/{name}{i:04d}", "", executor="noop") for i in range(1500)]
             for name in ("a", "b")]
    ready = threading.Barrier(2)
    outcome: dict[int, BaseException | None] = {}

    def create(i: int) -> None:
        ready.wait()
        try:
            stores[i].create_operation(make_op(), plans[i])
            outcome[i] = None
        except (LockHeld, OperationExists) as exc:
            outcome[i] = exc

    try:
        threads = [threading.Thread(target=create, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, exc in outcome.items() if exc is None]
        assert len(winners) == 1, outcome
        assert stores[0].load_specs("op-1") == plans[winners[0]]
        assert stores[0].load_outline("op-1").leaves == {s.id: 1 for s in plans[winners[0]]}
    finally:
        for s in stores:
            s.close()


def test_a_creation_in_progress_holds_its_id_and_a_dead_one_frees_it(store: EtcdStore) -> None:
    from engine.errors import LockHeld
    from engine.store.etcd_claim import claimed
    from engine.store.etcd_keys import encode

    with claimed(store, "op-1", "test") as claim:
        leftovers = [(store.keys.spec("op-1", i), encode(s.to_dict()))
                     for i, s in enumerate(leaves(10))]
        store.write_unpublished(claim, leftovers, "test")
        with pytest.raises(LockHeld, match="op-1 is being created by another process") as err:
            store.create_operation(make_op(), leaves(3))
        assert err.value.exit_code == 3 and "gravity operation list" in (err.value.hint or "")
        store.revoke_lease(claim.lease_id)  # the creator dies: its lease (and claim) ends
        with pytest.raises(StoreError, match="lost its claim"):
            store.write_unpublished(claim, leftovers, "test")  # it would write nothing more
        store.create_operation(make_op(), leaves(3))  # the next creation clears the leftovers
    assert store.load_specs("op-1") == leaves(3)
    assert store._conn.get("test", store.keys.claim("op-1")) is None


def test_an_agent_watches_only_the_dispatches_to_its_node(store: EtcdStore) -> None:
    """Dispatches (to in_progress) sit under log/<node>/, every other record of the node under
    log/<node>=/: the agent's range holds nothing it wrote itself, while the node's whole
    history still reads back (and a node whose name extends another's stays apart)."""
    from engine.store.etcd_keys import span

    store.create_operation(make_op(), leaves(3))
    lease = store.grant_lease("agent:node-a", ttl=30)
    run = store.apply("op-1", [Transition(0, PhaseState("/p00000").advance(
        State.IN_PROGRESS, node="node-a", owner=lease.id), State.UNSTARTED)])[0]
    done = store.apply("op-1", [Transition.of(cur := run.state_after(), cur.advance(
        State.COMPLETED, owner=None))])[0]
    other = store.apply("op-1", [Transition(0, PhaseState("/p00001").advance(
        State.IN_PROGRESS, node="node-a2"), State.UNSTARTED)])[0]
    rows, _ = store._conn.scan("test", *span(store.keys.logs("op-1", "node-a")))
    assert [key.rsplit(b"/", 3)[1:] for key, _ in rows] == [[b"node-a", b"%2Fp00000",
                                                             b"00000001"]]
    assert store.changelog("op-1", node="node-a") == [run, done]
    assert store.changelog("op-1", node="node-a2") == [other]
    assert store.changelog("op-1") == [run, done, other]
    assert store.wait_changes("op-1", 0, timeout=1, node="node-a",
                              to_state=State.IN_PROGRESS) == [run]
    assert store.wait_changes("op-1", 0, timeout=1, node="node-a") == [run, done]


def test_a_feed_stays_bounded_and_a_waiter_behind_it_misses_nothing(
        store: EtcdStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long operation's feed drops its older records past KEEP; a wait for records it
    dropped (asked after, or already waiting when they went) reads them from the store."""
    import engine.store.etcd_feed as feeds

    monkeypatch.setattr(feeds, "KEEP", 4)
    store.create_operation(make_op(), leaves(30))
    first = store.apply("op-1", [start(f"/p{i:05d}") for i in range(3)])
    assert store.wait_changes("op-1", 0, timeout=5) == first  # the feed starts here
    got: list[list[Any]] = []
    waiting = threading.Event()

    def behind() -> None:
        waiting.set()
        got.append(store.wait_changes("op-1", first[-1].seq, timeout=30))

    waiter = threading.Thread(target=behind)
    waiter.start()
    assert waiting.wait(10)
    wait_for(lambda: watching(store, "op-1"), what="the waiter's watch to be open")
    burst = store.apply("op-1", [start(f"/p{i:05d}") for i in range(3, 13)])  # one event
    waiter.join(timeout=30)
    assert got == [burst]
    feed = store._feeds[("op-1", None, None)]
    assert len(feed.records) <= 4 and feed.trimmed >= burst[5].seq
    assert store.wait_changes("op-1", first[0].seq, timeout=5) == [*first[1:], *burst]
    assert store.changelog("op-1") == [*first, *burst]
