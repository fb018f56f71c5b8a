"""An operator hands `gravity operation create` a broken plan: every problem is named with the
file and field path, the exit code is 2, and the store is left exactly as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.durations import format_duration, parse_duration
from engine.errors import PlanError
from engine.planfile import plan_from_mapping

GOOD = """
kind: Plan
metadata: {name: good}
phases:
  - id: a
    executor: noop
"""

CASES = {
    "duplicate-ids": ("""
        kind: Plan
        metadata: {name: dup}
        phases:
          - id: a
            executor: noop
          - id: a
            executor: noop
        """, ["phases[1].id", "phase /a: duplicate phase ID (first defined at phases[0])"]),
    "unknown-requires": ("""
        kind: Plan
        metadata: {name: req}
        phases:
          - id: a
            executor: noop
            requires: [/nope]
        """, ["phases[0].requires", "phase /a: unknown phase /nope"]),
    "cycle": ("""
        kind: Plan
        metadata: {name: cyc}
        parallel: 2
        phases:
          - id: a
            executor: noop
            requires: [/b]
          - id: b
            executor: noop
            requires: [/a]
        """, ["dependency cycle:", "/a -> /b -> /a"]),
    "requires-own-parent": ("""
        kind: Plan
        metadata: {name: cyc2}
        phases:
          - id: group
            phases:
              - id: x
                executor: noop
                requires: [/group]
        """, ["dependency cycle:", "/group"]),
    "leaf-without-executor": ("""
        kind: Plan
        metadata: {name: leaf}
        phases:
          - id: a
            description: nothing to run
        """, ["phases[0].executor", "a leaf phase needs an executor"]),
    "unknown-executor": ("""
        kind: Plan
        metadata: {name: ex}
        phases:
          - id: a
            executor: teleport
        """, ["phases[0].executor", "unknown executor 'teleport'"]),
    "bad-timeout": ("""
        kind: Plan
        metadata: {name: to}
        phases:
          - id: a
            executor: noop
            timeout: 5 minutes
        """, ["phases[0].timeout", "expected a duration like 30s"]),
    "bad-retry": ("""
        kind: Plan
        metadata: {name: rt}
        phases:
          - id: a
            executor: noop
            retry: {attempts: 0, initial: soon, factor: 0.5, jitter: 2}
        """, ["phases[0].retry.attempts", "phases[0].retry.initial", "phases[0].retry.factor",
              "phases[0].retry.jitter"]),
    "command-without-run": ("""
        kind: Plan
        metadata: {name: cmd}
        phases:
          - id: a
            executor: command
            data: {rollback: "true"}
        """, ["phases[0].data", "`run` must be a non-empty shell command"]),
    "nested-field-path": ("""
        kind: Plan
        metadata: {name: nested}
        phases:
          - id: group
            phases:
              - id: ok
                executor: noop
              - id: bad
                executor: noop
                parallel: 0
        """, ["phases[0].phases[1].parallel", "expected a whole number >= 1"]),
    "both-phases-and-executor": ("""
        kind: Plan
        metadata: {name: both}
        phases:
          - id: a
            executor: noop
            phases:
              - id: b
                executor: noop
        """, ["either `phases` (composite) or `executor`"]),
    "bad-kind-and-name": ("""
        kind: Plann
        phases:
          - id: a
            executor: noop
        """, ["kind: expected `Plan`", "metadata.name"]),
    "not-yaml": ("""
        kind: Plan
        phases: [unclosed
        """, ["is not valid YAML", "line"]),
    "bad-segment": ("""
        kind: Plan
        metadata: {name: seg}
        phases:
          - id: a/b
            executor: noop
        """, ["phases[0].id", "no '/'"]),
}


def _snapshot(state_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(state_dir.glob("gravity.db*"))}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_plan_is_rejected_with_file_and_field_and_nothing_written(
        gravity, write_plan, case: str) -> None:
    # An earlier, finished operation makes the store exist; it must stay byte-identical.
    good = write_plan(GOOD, "good.yaml")
    gravity("operation", "create", "--plan", str(good), "--id", "before", check=0)
    gravity("plan", "resume", check=0)
    before = _snapshot(gravity.state_dir)

    text, expected = CASES[case]
    path = write_plan(text, f"{case}.yaml")
    proc = gravity("operation", "create", "--plan", str(path), check=2)
    assert str(path) in proc.stderr
    for fragment in expected:
        assert fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert _snapshot(gravity.state_dir) == before
    listing = gravity("operation", "list", "-o", "json", check=0).stdout
    assert '"id": "before"' in listing and listing.count('"id"') == 1


def test_every_problem_is_reported_at_once() -> None:
    doc = {
        "kind": "Plan", "metadata": {"name": "many"},
        "phases": [
            {"id": "a", "executor": "teleport"},
            {"id": "b", "executor": "noop", "timeout": "forever", "requires": ["/zzz"]},
            {"id": "c"},
        ],
    }
    with pytest.raises(PlanError) as err:
        plan_from_mapping(doc, file="many.yaml")
    fields = [p.field for p in err.value.problems]
    assert sorted(fields) == ["phases[0].executor", "phases[1].requires",
                              "phases[1].timeout", "phases[2].executor"]
    assert all(p.file == "many.yaml" for p in err.value.problems)


def test_requires_as_a_plain_string_is_a_one_item_list() -> None:
    as_string = plan_from_mapping({"kind": "Plan", "metadata": {"name": "s"}, "phases": [
        {"id": "a", "executor": "noop"}, {"id": "b", "executor": "noop", "requires": "/a"}]})
    as_list = plan_from_mapping({"kind": "Plan", "metadata": {"name": "s"}, "phases": [
        {"id": "a", "executor": "noop"}, {"id": "b", "executor": "noop", "requires": ["/a"]}]})
    assert [s.requires for s in as_string.specs] == [(), ("/a",)]
    assert as_string.specs == as_list.specs


def test_missing_plan_file_is_exit_2(gravity, tmp_path: Path) -> None:
    proc = gravity("operation", "create", "--plan", str(tmp_path / "absent.yaml"), check=2)
    assert "cannot read plan" in proc.stderr
    assert not gravity.db.exists()


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), (12, 12), (1.5, 1.5),
    ("2m5s", 125),
])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "m5", "-1s", "1d", True, None, [], -3])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(0.25, "250ms"), (30, "30s"), (90, "1m30s"),
                                               (3600, "1h"), (0, "0ms")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
