"""Each etcd store owns its prefix alone: a prefix inside or around another store's is refused
(exit 2, both prefixes named) and no store ever reads or deletes keys another one wrote.
"""

from __future__ import annotations

import json
import threading

import pytest

from engine.errors import EXIT_INVALID, StoreConfigError
from engine.store.etcd import EtcdStore
from tests.conftest import Gravity, leaf_states
from tests.etcd_server import EtcdServer

PLAN = """
kind: Plan
metadata: {name: two}
phases:
  - {id: a, executor: noop}
  - {id: b, executor: noop}
"""
MARKER = ".gravity-store"


def prefix_of(url: str) -> str:
    """`etcd://127.0.0.1:PORT/tabc` -> `/tabc`."""
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def keys_under(server: EtcdServer, prefix: str) -> dict[str, str]:
    """Every key under `prefix/` with its value, as etcdctl shows them."""
    lines = server.etcdctl("get", "--prefix", prefix + "/").splitlines()
    return dict(zip(lines[0::2], lines[1::2], strict=True))


def put(server: EtcdServer, key: str, value: str) -> None:
    server.etcdctl("put", key, value)


def relocate(server: EtcdServer, src: str, dst: str) -> None:
    """Move a store's keys from `src` to `dst` without its marker: what a gravity from
    before the marker existed left behind at `dst`."""
    for key, value in keys_under(server, src).items():
        if key != f"{src}/{MARKER}":
            put(server, dst + key[len(src):], value)
    server.etcdctl("del", "--prefix", src + "/")


def run_op(gravity: Gravity, url: str, op_id: str, write_plan) -> None:
    """Create `op_id` in the store at `url` and run it to the end."""
    plan = str(write_plan(PLAN))
    gravity("--store", url, "operation", "create", "--plan", plan, "--id", op_id, check=0)
    gravity("--store", url, "plan", "resume", "--operation-id", op_id, check=0)


def states(gravity: Gravity, url: str, op_id: str | None = None) -> dict[str, str]:
    """Leaf phase ID -> state, as `gravity plan -o json` shows them for the store at `url`."""
    args = ("--operation-id", op_id) if op_id else ()
    return leaf_states(json.loads(gravity("--store", url, "plan", "-o", "json", *args,
                                          check=0).stdout))


def assert_refused(proc, prefix: str, other: str) -> None:
    """Exit 2 naming both prefixes, with the hint to choose one neither inside nor around."""
    assert proc.returncode == EXIT_INVALID, proc.stderr
    assert "Traceback" not in proc.stderr
    first = proc.stderr.splitlines()[0]
    assert f"prefix {prefix} " in first and f"prefix {other} " in first, proc.stderr
    assert f"neither inside nor around {other}" in proc.stderr


@pytest.fixture
def gravity_local(gravity: Gravity) -> Gravity:
    gravity.extra_env.update(GRAVITY_DISPATCH="local", GRAVITY_QUIET="1")
    return gravity


# -- the two reported cases, in both orders ---------------------------------------------------
def test_a_store_around_anothers_prefix_is_refused_and_deletes_nothing(
        gravity_local: Gravity, write_plan, etcd_url: str, etcd_server: EtcdServer) -> None:
    outer_url, inner_url = etcd_url, f"{etcd_url}/data/victim"
    outer, inner = prefix_of(outer_url), prefix_of(inner_url)
    run_op(gravity_local, inner_url, "a1", write_plan)
    before = keys_under(etcd_server, inner)
    assert f"{inner}/op/a1" in before and len(before) > 5

    # Creating operation `victim` in the outer store used to delete every key of the inner.
    plan = str(write_plan(PLAN))
    created = gravity_local("--store", outer_url, "operation", "create", "--plan", plan,
                            "--id", "victim")
    assert_refused(created, outer, inner)
    assert keys_under(etcd_server, inner) == before
    assert keys_under(etcd_server, outer) == before  # nothing written for the outer store
    assert states(gravity_local, inner_url) == {"/a": "completed", "/b": "completed"}


def test_a_store_inside_anothers_prefix_is_refused(
        gravity_local: Gravity, write_plan, etcd_url: str, etcd_server: EtcdServer) -> None:
    outer_url, inner_url = etcd_url, f"{etcd_url}/data/victim"
    outer, inner = prefix_of(outer_url), prefix_of(inner_url)
    run_op(gravity_local, outer_url, "victim", write_plan)
    before = keys_under(etcd_server, outer)

    plan = str(write_plan(PLAN))
    created = gravity_local("--store", inner_url, "operation", "create", "--plan", plan,
                            "--id", "a1")
    assert_refused(created, inner, outer)
    assert keys_under(etcd_server, outer) == before
    assert states(gravity_local, outer_url) == {"/a": "completed", "/b": "completed"}


@pytest.mark.parametrize("first", ["outer", "inner"])
@pytest.mark.slow
def test_a_store_at_op_of_another_is_refused_and_the_first_keeps_working(
        gravity_local: Gravity, write_plan, etcd_url: str, etcd_server: EtcdServer,
        first: str) -> None:
    """`/rt` and `/rt/op`: the second one opened is refused; every command of the first still
    works (it used to crash with KeyError: 'type' on the other's keys under `/rt/op/`)."""
    urls = {"outer": f"{etcd_url}/rt", "inner": f"{etcd_url}/rt/op"}
    second = "inner" if first == "outer" else "outer"
    run_op(gravity_local, urls[first], "x1", write_plan)
    before = keys_under(etcd_server, prefix_of(urls["outer"]))

    for args in (("operation", "list"), ("plan",), ("status",)):
        refused = gravity_local("--store", urls[second], *args)
        assert_refused(refused, prefix_of(urls[second]), prefix_of(urls[first]))
    assert keys_under(etcd_server, prefix_of(urls["outer"])) == before
    for args in (("operation", "list"), ("plan",), ("status",), ("events",)):
        gravity_local("--store", urls[first], *args, check=0)


@pytest.mark.slow
def test_sibling_stores_do_not_block_each_other(gravity_local: Gravity, write_plan,
                                                etcd_url: str) -> None:
    """`/x/op` (a cluster named `op`) and `/x/prod` share a parent but not a prefix: both
    open, though the first one's marker lies where `/x`'s operation records would."""
    for name in ("op", "data", "prod"):
        run_op(gravity_local, f"{etcd_url}/{name}", f"op-{name}", write_plan)
        listed = gravity_local("--store", f"{etcd_url}/{name}", "operation", "list", check=0)
        assert f"op-{name}" in listed.stdout


def open_all_at_once(urls: list[str]) -> list[tuple[str, str]]:
    """Open a store at each URL, all threads released together: (url, opened | refused)."""
    barrier = threading.Barrier(len(urls))
    results: list[tuple[str, str]] = []

    def open_at(url: str) -> None:
        barrier.wait()
        try:
            EtcdStore.from_url(url).close()
            results.append((url, "opened"))
        except StoreConfigError:
            results.append((url, "refused"))

    threads = [threading.Thread(target=open_at, args=(url,)) for url in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_racing_openers_of_nested_prefixes_leave_one_store(etcd_url: str) -> None:
    """Stores opened at the same instant inside and around each other: one side wins, its
    other openers share the store, every opener of the other side is refused."""
    for round_ in range(5):
        outer, inner = f"{etcd_url}/r{round_}", f"{etcd_url}/r{round_}/data/x"
        results = open_all_at_once([outer, inner] * 4)
        seen = {url: {r for u, r in results if u == url} for url in (outer, inner)}
        assert seen in ({outer: {"opened"}, inner: {"refused"}},
                        {outer: {"refused"}, inner: {"opened"}}), seen


# -- stores written before the marker existed -----------------------------------------------
def test_an_unmarked_store_is_adopted(gravity_local: Gravity, write_plan, etcd_url: str,
                                      etcd_server: EtcdServer) -> None:
    staging, old = f"{etcd_url}/staging", f"{etcd_url}/old"
    run_op(gravity_local, staging, "x1", write_plan)
    relocate(etcd_server, prefix_of(staging), prefix_of(old))
    before = keys_under(etcd_server, prefix_of(old))
    assert f"{prefix_of(old)}/{MARKER}" not in before

    assert states(gravity_local, old) == {"/a": "completed", "/b": "completed"}
    after = keys_under(etcd_server, prefix_of(old))
    assert f"{prefix_of(old)}/{MARKER}" in after
    assert {k: v for k, v in after.items() if not k.endswith(MARKER)} == before


def test_unmarked_nested_stores_are_refused_not_read(
        gravity_local: Gravity, write_plan, etcd_url: str, etcd_server: EtcdServer) -> None:
    """Both written by an older gravity, `/rt` and `/rt/op`: neither opens (exit 2 naming
    both) instead of crashing, and opening them deletes nothing."""
    outer, inner = f"{etcd_url}/rt", f"{etcd_url}/rt/op"
    for name, target in (("s1", outer), ("s2", inner)):
        run_op(gravity_local, f"{etcd_url}/{name}", f"op-{name}", write_plan)
        relocate(etcd_server, f"{prefix_of(etcd_url)}/{name}", prefix_of(target))
    before = keys_under(etcd_server, prefix_of(outer))

    assert_refused(gravity_local("--store", outer, "operation", "list"),
                   prefix_of(outer), prefix_of(inner))
    assert_refused(gravity_local("--store", inner, "operation", "list"),
                   prefix_of(inner), prefix_of(outer))
    assert keys_under(etcd_server, prefix_of(outer)) == before


def test_a_new_store_inside_an_unmarked_one_with_operations_is_refused(
        gravity_local: Gravity, write_plan, etcd_url: str, etcd_server: EtcdServer) -> None:
    staging, old = f"{etcd_url}/staging", f"{etcd_url}/old"
    run_op(gravity_local, staging, "x1", write_plan)
    relocate(etcd_server, prefix_of(staging), prefix_of(old))
    before = keys_under(etcd_server, prefix_of(old))

    plan = str(write_plan(PLAN))
    created = gravity_local("--store", f"{old}/data/victim", "operation", "create",
                            "--plan", plan, "--id", "a1")
    assert_refused(created, f"{prefix_of(old)}/data/victim", prefix_of(old))
    assert keys_under(etcd_server, prefix_of(old)) == before


# -- keys another program wrote under a store's prefix --------------------------------------
def test_keys_written_under_a_store_later_are_neither_read_nor_deleted(
        gravity_local: Gravity, write_plan, etcd_url: str, etcd_server: EtcdServer) -> None:
    """A gravity from before the marker (or any other program) writes into a store's prefix
    after it was claimed: reads skip those keys, creating and force-copying delete none."""
    p = prefix_of(etcd_url)
    run_op(gravity_local, etcd_url, "x1", write_plan)
    foreign = {f"{p}/op/x/op/y": '{"id": "y"}',
               f"{p}/data/victim/op/a1": '{"id": "a1"}',
               f"{p}/data/victim/{MARKER}": '{"store": "gravity"}',
               f"{p}/data/victim/spec/junk": "not json"}
    for key, value in foreign.items():
        put(etcd_server, key, value)

    listed = gravity_local("--store", etcd_url, "operation", "list", check=0)
    assert "x1" in listed.stdout and "y" not in listed.stdout.split()
    plan = str(write_plan(PLAN))
    gravity_local("--store", etcd_url, "operation", "create", "--plan", plan, "--id", "victim",
                  check=0)
    assert states(gravity_local, etcd_url, "victim") == {
        "/a": "unstarted", "/b": "unstarted"}

    sqlite = f"sqlite:///{gravity_local.tmp / 'copy.db'}"
    gravity_local("--store", sqlite, "operation", "create", "--plan", plan, "--id", "victim",
                  check=0)
    gravity_local("store", "copy", "--from", sqlite, "--to", etcd_url, "--operation-id",
                  "victim", "--force", check=0)
    after = keys_under(etcd_server, p)
    assert {k: after.get(k) for k in foreign} == foreign


def test_a_marker_of_a_newer_layout_is_refused(gravity_local: Gravity, etcd_url: str,
                                               etcd_server: EtcdServer) -> None:
    p = prefix_of(etcd_url)
    put(etcd_server, f"{p}/{MARKER}", f'{{"store": "gravity", "format": 99, "prefix": "{p}"}}')
    out = gravity_local("--store", etcd_url, "operation", "list")
    assert out.returncode == EXIT_INVALID, out.stderr
    assert "format 99" in out.stderr and "Traceback" not in out.stderr
