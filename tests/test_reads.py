"""What a command reads from the store: `gravity plan resume` loads the plan and every phase
state once — for its checks, its run and the line it ends with — and reads the states again
under the coordinator lock only when the changelog moved since it looked.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine import fsm
from engine.cli.main import cli
from engine.errors import Refused
from engine.model import Action, State
from engine.store.sqlite import SQLiteStore
from tests.conftest import Gravity

PLAN = """
kind: Plan
metadata: {name: reads}
phases:
  - id: a
    phases:
      - {id: one, executor: noop}
      - {id: two, executor: noop}
  - {id: three, executor: command, data: {run: "echo ran >> three.ran"}}
"""


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the SQLite store's whole-plan reads in this process."""
    seen: Counter[str] = Counter()
    for name in ("load_specs", "load_states"):
        real = getattr(SQLiteStore, name)

        def counted(self: SQLiteStore, operation_id: str, _real=real, _name=name):
            seen[_name] += 1
            return _real(self, operation_id)

        monkeypatch.setattr(SQLiteStore, name, counted)
    return seen


def gravity_here(gravity: Gravity, *args: str) -> str:
    """`gravity ARGS` in this process (so its store reads are counted)."""
    result = CliRunner().invoke(cli, list(args), env=gravity.env(), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_resume_reads_the_plan_and_its_states_once(gravity: Gravity, reads) -> None:
    gravity.create(PLAN)
    out = gravity_here(gravity, "plan", "resume")
    assert "resumed: operation op1 is completed; 3/3 phases completed" in out
    assert reads == {"load_specs": 1, "load_states": 1}
    reads.clear()
    again = CliRunner().invoke(cli, ["plan", "resume"], env=gravity.env())
    assert isinstance(again.exception, Refused)  # finished: refused (exit 3) before the
    assert "op1 is already completed" in str(again.exception)  # plan is read
    assert reads == {}


def test_a_phase_moved_between_the_look_and_the_lock_is_seen_under_the_lock(
        gravity: Gravity, reads, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process finishes /three after `resume` looked at the plan but before it held
    the coordinator lock: the run starts from the fresh states, so /three is neither run
    again nor does its start collide with the store."""
    gravity.create(PLAN)
    acquire = SQLiteStore.acquire_lock

    def meanwhile(self: SQLiteStore, name: str, lease) -> None:
        st = self.get_state("op1", "/three")
        if st.state is State.UNSTARTED:
            started = fsm.transition(st, State.IN_PROGRESS, action=Action.EXECUTE,
                                     owner=lease.id, attempt=1)
            self.apply("op1", [started])
            self.apply("op1", [fsm.transition(started.new, State.COMPLETED)])
        acquire(self, name, lease)

    monkeypatch.setattr(SQLiteStore, "acquire_lock", meanwhile)
    gravity_here(gravity, "plan", "resume")
    assert reads["load_states"] == 2  # looked, then read again under the lock
    assert not gravity.node_file("local", "three.ran").exists()
    events = [json.loads(line) for line in
              (Path(gravity.state_dir) / "logs" / "op1.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["event"] == "transition dropped"]
    assert gravity.states() == {"/a/one": "completed", "/a/two": "completed",
                                "/three": "completed"}
