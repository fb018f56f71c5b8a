"""The event log's transition lines are written out field by field (a run writes one per
transition); whatever a record holds, each is the very line `json.dumps` makes of its event.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.events import EventLog, _console_line, _json, transition_fields, transition_line
from engine.model import Action, ChangeRecord, State

texts = st.one_of(st.none(), st.text(max_size=40))
records = st.builds(
    ChangeRecord, seq=st.integers(1, 10**9), operation_id=st.just("op"),
    phase_id=st.text(min_size=1, max_size=30), version=st.integers(1, 10**6),
    from_state=st.sampled_from(State), to_state=st.sampled_from(State),
    action=st.sampled_from(Action), attempt=st.integers(0, 10**6),
    owner=st.one_of(st.none(), st.integers(0, 2**62)), node=texts, error=texts, note=texts,
    at=st.floats(0, 4e9))
durations = st.one_of(st.none(), st.floats(0, 1e6), st.floats(allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(rec=records, duration=durations, operation=st.text(min_size=1, max_size=20))
def test_a_transition_line_is_the_json_of_its_event(rec: ChangeRecord, duration: float | None,
                                                    operation: str) -> None:
    ts = "2026-11-30T01:02:03.456Z"
    event = {**transition_fields(rec, duration), "operation": operation,
             "event": "transition", "ts": ts}
    line = transition_line(rec, duration, json.dumps(operation), ts)
    assert line == _json(event)
    assert json.loads(line) == event


def test_a_batch_of_transitions_is_one_block_in_the_file_and_on_the_console(
        tmp_path: Path) -> None:
    """What an operator reads: one JSON line per transition in the file, in order, and the
    same readable line on the console as any single event gets."""
    class Console:
        def __init__(self) -> None:
            self.writes: list[str] = []

        def write(self, text: str) -> None:
            self.writes.append(text)

        def flush(self) -> None:
            pass

    console = Console()
    log = EventLog(tmp_path, "op", console=console)  # type: ignore[arg-type]
    recs = [ChangeRecord(i, "op", f"/p{i}", 1, State.UNSTARTED, State.IN_PROGRESS,
                         Action.EXECUTE, 1, 7, "node-1", None, None, 1.0) for i in (1, 2)]
    done = ChangeRecord(3, "op", "/p0", 2, State.IN_PROGRESS, State.FAILED, Action.EXECUTE,
                        1, 7, None, "boom\nmore", "attempt 1 of 2 failed", 2.0)
    log.transitions([(done, 1.23456), (recs[0], None), (recs[1], None)])
    log.close()
    lines = (tmp_path / "op.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["phase"] for e in events] == ["/p0", "/p1", "/p2"]
    assert events[0]["duration"] == 1.235 and "node" not in events[0]
    assert len(console.writes) == 1  # one write for the batch
    shown = console.writes[0].splitlines()
    assert shown == [_console_line(dict(e)) for e in events]
    assert shown[0].endswith("/p0: in_progress -> failed (execute, node -, attempt 1) in "
                             "1.235s error: boom [attempt 1 of 2 failed]")
