"""`gravity store copy` moves operations SQLite -> etcd -> SQLite through the real CLI:
histories and states arrive intact, re-runs skip, diverged copies are refused unless --force.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import EXIT_INVALID, EXIT_REFUSED, OperationExists
from engine.model import Operation, OpState, PhaseSpec, PhaseState, State, Transition
from engine.store import Store, open_store
from engine.store.copy import history

ROOT = Path(__file__).resolve().parent.parent


def gravity(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GRAVITY_STATE_DIR=str(tmp_path / "state"))
    env.pop("GRAVITY_STORE", None)
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def step(store: Store, op_id: str, phase: str, to: State, **changes: object) -> None:
    cur = store.get_state(op_id, phase)
    store.apply(op_id, [Transition.of(cur, cur.advance(to, **changes))])


def seed(url: str) -> None:
    """A finished operation and an active one, with retries, failures and a batch write."""
    now = time.time()
    with open_store(url) as store:
        store.create_operation(Operation("op-old", "install", "install.yaml", created=now,
                                         updated=now),
                               [PhaseSpec(f"/old/{i}", "", executor="noop") for i in range(3)])
        for i in range(3):
            step(store, "op-old", f"/old/{i}", State.IN_PROGRESS, owner=11)
            step(store, "op-old", f"/old/{i}", State.COMPLETED)
        store.finish_operation("op-old", OpState.COMPLETED, "done")
        store.create_operation(
            Operation("op-new", "upgrade", "upgrade.yaml", created=now + 1, updated=now + 1,
                      data={"values": {"replicas": 3}}),
            [PhaseSpec("/masters", "", children=("/masters/a", "/masters/b")),
             PhaseSpec("/masters/a", "/masters", executor="noop", node="a"),
             PhaseSpec("/masters/b", "/masters", executor="noop", node="b"),
             PhaseSpec("/apps", "", executor="noop", requires=("/masters",))])
        store.apply("op-new", [
            Transition(0, PhaseState("/masters/a").advance(State.IN_PROGRESS), State.UNSTARTED),
            Transition(0, PhaseState("/masters/b").advance(State.IN_PROGRESS), State.UNSTARTED)])
        step(store, "op-new", "/masters/a", State.FAILED, error="timeout", attempt=1)
        step(store, "op-new", "/masters/a", State.IN_PROGRESS, attempt=2)
        step(store, "op-new", "/masters/a", State.COMPLETED)


def snapshot(url: str) -> dict[str, tuple[object, ...]]:
    """Everything a copy must carry, per operation, with store-assigned seqs left out."""
    with open_store(url) as store:
        return {op.id: (op, store.load_specs(op.id), store.load_states(op.id),
                        history(store.changelog(op.id)))
                for op in store.list_operations()}


def test_copy_sqlite_to_etcd_and_back(tmp_path: Path, etcd_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    back = f"sqlite:///{tmp_path / 'back.db'}"
    seed(source)

    out = gravity(tmp_path, "store", "copy", "--from", source, "--to", etcd_url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "copied op-old (3 phases, 6 changelog records)",
        "copied op-new (4 phases, 5 changelog records)",
    ]
    assert snapshot(etcd_url) == snapshot(source)

    again = gravity(tmp_path, "store", "copy", "--from", source, "--to", etcd_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["skipped op-old: already present",
                                         "skipped op-new: already present"]

    with open_store(etcd_url) as etcd:
        # The copy is live: it holds the cluster lock and its versions still CAS.
        assert etcd.active_operation_id() == "op-new"
        step(etcd, "op-new", "/masters/b", State.COMPLETED)
        assert etcd.get_state("op-new", "/masters/b").version == 2
        assert etcd.get_state("op-new", "/masters/a").version == 4

    out = gravity(tmp_path, "store", "copy", "--from", etcd_url, "--to", back)
    assert out.returncode == 0, out.stderr
    assert snapshot(back) == snapshot(etcd_url)
    with open_store(back) as sqlite:
        assert sqlite.active_operation_id() == "op-new"


def test_diverged_copy_is_refused_unless_forced(tmp_path: Path, etcd_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    seed(source)
    assert gravity(tmp_path, "store", "copy", "--from", source, "--to", etcd_url).returncode == 0
    with open_store(etcd_url) as etcd:
        step(etcd, "op-new", "/masters/b", State.COMPLETED)

    refused = gravity(tmp_path, "store", "copy", "--from", source, "--to", etcd_url,
                      "--operation-id", "op-new")
    assert refused.returncode == EXIT_REFUSED
    assert refused.stdout.startswith("refused op-new: the destination holds a different "
                                     "history (6 changelog records, the source 5)")
    assert "--force" in refused.stderr

    forced = gravity(tmp_path, "store", "copy", "--from", source, "--to", etcd_url, "--force")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.splitlines() == ["skipped op-old: already present",
                                          "copied op-new (4 phases, 5 changelog records)"]
    assert snapshot(etcd_url) == snapshot(source)
    with open_store(etcd_url) as etcd:
        assert etcd.active_operation_id() == "op-new"
        step(etcd, "op-new", "/masters/b", State.FAILED, error="again")


def test_copied_active_operation_leaves_a_busy_cluster_lock_alone(tmp_path: Path) -> None:
    source, dest = (f"sqlite:///{tmp_path / name}" for name in ("source.db", "dest.db"))
    seed(source)
    now = time.time()
    with open_store(dest) as store:
        store.create_operation(Operation("op-here", "install", "install.yaml", created=now,
                                         updated=now), [PhaseSpec("/x", "", executor="noop")])
    out = gravity(tmp_path, "store", "copy", "--from", source, "--to", dest,
                  "--operation-id", "op-new")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("copied op-new (4 phases, 5 changelog records); cluster lock "
                                  "left with op-here, which is active in the destination")
    with open_store(dest) as store:
        assert store.active_operation_id() == "op-here"


@pytest.mark.parametrize("kind", ["sqlite", "etcd"])
def test_importing_over_an_id_the_destination_holds_needs_replace(
        tmp_path: Path, request: pytest.FixtureRequest, kind: str) -> None:
    """`import_operation` is part of every Store: a taken ID is bad input (exit 2) naming
    `--force`, and nothing of the destination's own operation changes; replacing works."""
    source = f"sqlite:///{tmp_path / 'source.db'}"
    dest = (f"sqlite:///{tmp_path / 'dest.db'}" if kind == "sqlite"
            else request.getfixturevalue("etcd_url"))
    seed(source)
    with open_store(source) as src, open_store(dest) as dst:
        op = src.get_operation("op-old")
        parts = (src.load_specs(op.id), list(src.load_states(op.id).values()),
                 src.changelog(op.id))
        now = time.time()
        dst.create_operation(Operation("op-old", "plan", "theirs.yaml", created=now,
                                       updated=now), [PhaseSpec("/theirs", "", executor="noop")])
        step(dst, "op-old", "/theirs", State.IN_PROGRESS)
        theirs = dst.finish_operation("op-old", OpState.FAILED, "theirs")
        before = (dst.load_specs(op.id), dst.load_states(op.id), dst.changelog(op.id))

        with pytest.raises(OperationExists) as err:
            dst.import_operation(op, *parts)
        assert err.value.exit_code == EXIT_INVALID
        assert "gravity store copy --force" in (err.value.hint or "")
        assert dst.get_operation(op.id) == theirs
        assert (dst.load_specs(op.id), dst.load_states(op.id), dst.changelog(op.id)) == before

        assert dst.import_operation(op, *parts, replace=True) is False  # finished: no lock
        assert dst.get_operation(op.id) == op
        assert dst.load_specs(op.id) == parts[0]
        assert history(dst.changelog(op.id)) == history(parts[2])
        assert dst.active_operation_id() is None


@pytest.mark.parametrize("args", [
    ("--from", "etcd://host:port", "--to", "sqlite:///x.db"),
    ("--from", "sqlite:///x.db", "--to", "sqlite:///x.db"),
    ("--from", "sqlite:///x.db", "--to", "etcd://h:2379/a/../b"),
])
def test_bad_store_urls_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = gravity(tmp_path, "store", "copy", *args)
    assert out.returncode == EXIT_INVALID, out.stderr
    assert "error:" in out.stderr


def test_unknown_operation_exits_2(tmp_path: Path, etcd_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    seed(source)
    out = gravity(tmp_path, "store", "copy", "--from", source, "--to", etcd_url,
                  "--operation-id", "op-nope")
    assert out.returncode == EXIT_INVALID
    assert "op-nope" in out.stderr
