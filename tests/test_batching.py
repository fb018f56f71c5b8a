"""Transitions that fall due together share one store write: a phase completing and the next
one starting are one transaction, so a chain of N phases costs N+1 writes, not 2N.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engine.model import ChangeRecord, Transition
from engine.planfile import plan_from_mapping
from engine.service import Engine, create_operation, resume
from engine.store.sqlite import SQLiteStore


class CountingStore(SQLiteStore):
    """The real embedded store, counting its atomic writes of transitions."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[int] = []

    def apply(self, operation_id: str, transitions: Sequence[Transition], *,
              fence: int | None = None) -> list[ChangeRecord]:
        self.writes.append(len(transitions))
        return super().apply(operation_id, transitions, fence=fence)


def test_a_chain_of_n_phases_takes_n_plus_one_writes(tmp_path: Path) -> None:
    n = 40
    plan = plan_from_mapping({"kind": "Plan", "metadata": {"name": "chain"},
                              "phases": [{"id": f"p{i}", "executor": "noop"} for i in range(n)]})
    store = CountingStore(tmp_path / "g.db")
    op = create_operation(store, plan, operation_id="chain")
    resume(Engine(store=store, state_dir=tmp_path, quiet=True), op.id)
    assert sum(store.writes) == 2 * n
    assert len(store.writes) == n + 1
    assert store.writes == [1] + [2] * (n - 1) + [1]
    assert [r.seq for r in store.changelog(op.id)] == list(range(1, 2 * n + 1))
    store.close()
