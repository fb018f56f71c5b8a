"""The invariants, checked after a trial from the store (Store API) and the effect files:
changelog ⇔ states, legal moves, fencing, no concurrent or repeated runs, nothing left behind.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from chaos.effects import Attempt, Effects, read_effects
from engine import agent_protocol as proto
from engine import fsm
from engine.model import ChangeRecord, OpState, PhaseState, State, replay
from engine.store.base import Store, coordinator_lock

# Why the engine may record an attempt as failed although its command ran to the end: its
# owner was declared lost, it overran its deadline, or its own process's lease guard stopped
# it (a frozen agent thawing: the command may have finished just before the guard's kill).
# Such an attempt may be run again.
LOST_MARKERS = ("interrupted", "timed out", "stopped: this process lost its lease")


@dataclass(frozen=True)
class Expect:
    """How the trial should end: completed, or failed exactly at `failed_phase`."""

    outcome: OpState = OpState.COMPLETED
    failed_phase: str | None = None
    never_run: tuple[str, ...] = ()  # phases past a permanent fault: no record, no effect


@dataclass
class Verdict:
    """What the checker found. `ok` means the expected end and no finding of any kind."""

    outcome: str = ""
    expected: bool = False
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    concurrent: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.expected and not (self.lost or self.duplicated or self.concurrent
                                      or self.stuck or self.violations)

    def findings(self) -> list[str]:
        return ([f"lost: {x}" for x in self.lost] + [f"duplicated: {x}" for x in self.duplicated]
                + [f"concurrent: {x}" for x in self.concurrent]
                + [f"stuck: {x}" for x in self.stuck] + [f"violation: {x}" for x in
                                                           self.violations])


def check_changelog(records: list[ChangeRecord], states: dict[str, PhaseState],
                    v: Verdict) -> None:
    """Replay equals stored state; every record is a legal move stepping its version by 1."""
    seqs = [r.seq for r in records]
    if seqs != sorted(set(seqs)):
        v.violations.append(f"changelog seqs are not strictly increasing: {seqs[:20]}…")
    rebuilt = replay(records)
    for phase_id in sorted(set(rebuilt) | set(states)):
        a, b = rebuilt.get(phase_id), states.get(phase_id)
        if a is None or b is None:
            v.violations.append(f"{phase_id}: in {'states' if a is None else 'the changelog'} only")
        elif (a.state, a.version, a.attempt) != (b.state, b.version, b.attempt):
            v.violations.append(f"{phase_id}: changelog replays to {a.state.value} v{a.version} "
                                f"attempt {a.attempt}, store holds {b.state.value} "
                                f"v{b.version} attempt {b.attempt}")
    last: dict[str, ChangeRecord] = {}
    for rec in records:
        prev = last.get(rec.phase_id)
        from_state = prev.to_state if prev else State.UNSTARTED
        version = prev.version if prev else 0
        where = f"{rec.phase_id} seq {rec.seq}"
        if rec.from_state is not from_state:
            v.violations.append(f"{where}: recorded from {rec.from_state.value}, but the "
                                f"phase was {from_state.value}")
        if rec.to_state not in fsm.ALLOWED[rec.from_state]:
            v.violations.append(f"{where}: illegal move {rec.from_state.value} -> "
                                f"{rec.to_state.value}")
        if rec.version != version + 1:
            v.violations.append(f"{where}: version {rec.version} after {version}")
        if rec.to_state is State.IN_PROGRESS:
            if rec.owner is None:
                v.violations.append(f"{where}: in progress without an owner")
            if prev is not None and rec.attempt <= prev.attempt:
                v.violations.append(f"{where}: attempt {rec.attempt} after {prev.attempt}")
        elif prev is not None and rec.attempt != prev.attempt:
            v.violations.append(f"{where}: ends attempt {rec.attempt}, but attempt "
                                f"{prev.attempt} was running")
        last[rec.phase_id] = rec


def _attempt_end(att: Attempt, recs: list[ChangeRecord]) -> float | None:
    """When an attempt was over: its end line, else the record that closed its claim."""
    if att.ended is not None:
        return att.ended
    for i, rec in enumerate(recs):
        if rec.to_state is State.IN_PROGRESS and rec.attempt == att.attempt:
            return recs[i + 1].at if i + 1 < len(recs) else None
    return None


def pid_running(pid: int) -> bool:
    """Is there a live (non-zombie) process with this pid?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def check_effects(eff: Effects, recs: list[ChangeRecord], v: Verdict) -> None:
    """One phase's effects against its changelog: no phantom, concurrent or repeated run,
    no completion without its effect."""
    phase_id = eff.phase_id
    v.violations.extend(eff.problems)
    v.concurrent.extend(eff.overlaps)
    started = {r.attempt for r in recs if r.to_state is State.IN_PROGRESS}
    closing = {}
    for i, rec in enumerate(recs):
        if rec.to_state is State.IN_PROGRESS and i + 1 < len(recs):
            closing[rec.attempt] = recs[i + 1]
    seen: set[int] = set()
    for att in eff.attempts:
        if att.attempt in seen:
            v.duplicated.append(f"{phase_id}: attempt {att.attempt} ran twice")
        seen.add(att.attempt)
        if att.attempt not in started:
            v.violations.append(f"{phase_id}: attempt {att.attempt} ran but was never recorded "
                                "in progress")
        if att.ended is None and pid_running(att.pid):
            v.stuck.append(f"{phase_id}: attempt {att.attempt} (pid {att.pid}) is still running")
    completed = [r for r in recs if r.to_state is State.COMPLETED]
    for rec in completed:
        att = next((a for a in eff.attempts if a.attempt == rec.attempt), None)
        if att is None or att.ended is None:
            v.lost.append(f"{phase_id}: recorded completed (attempt {rec.attempt}) but its effect "
                          "did not finish")
    if completed:
        first = completed[0]
        again = [r for r in recs if r.seq > first.seq and r.to_state is State.IN_PROGRESS]
        if again:
            v.duplicated.append(f"{phase_id}: completed at seq {first.seq}, then started again "
                                f"(attempt {again[0].attempt})")
        later = [a for a in eff.attempts if a.attempt > first.attempt]
        if later and not again:
            v.duplicated.append(f"{phase_id}: ran attempt {later[0].attempt} after completing")
    finished = eff.finished
    for att in finished:
        close = closing.get(att.attempt)
        if close is None or close.to_state is State.COMPLETED:
            continue
        if not (close.error or "").startswith(LOST_MARKERS):
            v.duplicated.append(f"{phase_id}: attempt {att.attempt} ran to its end but was "
                                f"recorded {close.to_state.value}: {close.error!r}")
    ordered = sorted(eff.attempts, key=lambda a: a.started)
    for a, b in itertools.pairwise(ordered):
        end = _attempt_end(a, recs)
        if end is None or b.started < end:
            v.concurrent.append(f"{phase_id}: attempt {b.attempt} started at {b.started:.3f} while "
                                f"attempt {a.attempt} was still running (until "
                                f"{'?' if end is None else f'{end:.3f}'})")


def leftovers(store: Store, operation_id: str, agent_nodes: Iterable[str],
              settle: float) -> list[str]:
    """Locks and registrations still held once `settle` seconds have passed."""
    deadline = time.monotonic() + settle
    while True:
        found = []
        holder = store.lock_holder(coordinator_lock(operation_id))
        if holder is not None:
            found.append(f"coordinator lock still held by {holder.describe()}")
        for key in store.kv_list(proto.RECORDS):
            found.append(f"agent registration {key} left behind")
        for node in agent_nodes:
            holder = store.lock_holder(proto.lock_name(node))
            if holder is not None:
                found.append(f"agent lock of {node} still held by {holder.describe()}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def check_trial(store: Store, operation_id: str, leaves: Iterable[str], state_dir: Path,
                expect: Expect, *, agent_nodes: Iterable[str] = (),
                settle: float = 0.0) -> Verdict:
    """Every invariant of one finished trial. Call after the agents were stopped.

    `settle`: how long a lock or registration held by a lease may take to go away — a
    process killed with -9 holds its lease until the TTL runs out, by design.
    """
    v = Verdict()
    leaves = list(leaves)
    op = store.get_operation(operation_id)
    states = store.load_states(operation_id)
    records = store.changelog(operation_id)
    v.outcome = op.state.value
    check_changelog(records, states, v)
    by_phase: dict[str, list[ChangeRecord]] = {}
    for rec in records:
        by_phase.setdefault(rec.phase_id, []).append(rec)
    state_of = {p: states.get(p, PhaseState(p)).state for p in leaves}
    if expect.outcome is OpState.COMPLETED:
        v.expected = op.state is OpState.COMPLETED and all(
            s is State.COMPLETED for s in state_of.values())
    else:
        v.expected = (op.state is expect.outcome
                      and state_of.get(expect.failed_phase or "") is State.FAILED
                      and [p for p, s in state_of.items() if s is State.FAILED]
                      == [expect.failed_phase])
    for phase_id, st in sorted(state_of.items()):
        if st is State.IN_PROGRESS:
            v.stuck.append(f"{phase_id}: left in progress")
    if op.state is OpState.ACTIVE:
        v.stuck.append(f"operation {operation_id} is still active")
    if store.active_operation_id() is not None:
        v.stuck.append(f"cluster lock still held by {store.active_operation_id()}")
    v.stuck.extend(leftovers(store, operation_id, agent_nodes, settle))
    effects = read_effects(state_dir, leaves)
    for phase_id in leaves:
        check_effects(effects[phase_id], by_phase.get(phase_id, []), v)
    for phase_id in expect.never_run:
        if by_phase.get(phase_id) or effects[phase_id].attempts:
            v.violations.append(f"{phase_id}: ran although a phase it requires failed for good")
    return v
