"""An operation's top-level phases with a tally of the leaves below each: what `gravity plan
--short` shows, read from a store's index without loading or building the whole plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from engine.model import PhaseSpec, PhaseState, State


def top_of(phase_id: str) -> str:
    """The top-level phase a phase ID lies under (`/a/b/c` -> `/a`; `/a` -> `/a`)."""
    cut = phase_id.find("/", 1)
    return phase_id if cut < 0 else phase_id[:cut]


@dataclass(frozen=True)
class Outline:
    """The top-level phases of a plan, each with what is known of the leaves below it.

    specs: the top-level phases' specs in written order. leaves: per top-level phase, how
    many leaves it holds (1 for a leaf). counts: per top-level phase, its leaves' stored
    states counted by state (a leaf without a stored state is unstarted and not counted).
    updated: per top-level phase, the newest update among its leaves' stored states.
    states: the stored states of the top-level leaves. failed: the stored states of every
    failed leaf with an error, in written order.
    """

    specs: tuple[PhaseSpec, ...]
    leaves: Mapping[str, int]
    counts: Mapping[str, Mapping[State, int]] = field(default_factory=dict)
    updated: Mapping[str, float] = field(default_factory=dict)
    states: Mapping[str, PhaseState] = field(default_factory=dict)
    failed: tuple[PhaseState, ...] = ()

    def below(self, phase_id: str) -> set[State]:
        """The states of a top-level phase's leaves, each once (what `fsm.derive` takes)."""
        counts = self.counts.get(phase_id, {})
        seen = {s for s, n in counts.items() if n}
        if sum(counts.values()) < self.leaves[phase_id]:
            seen.add(State.UNSTARTED)
        return seen


class Tally:
    """Builds an Outline's counts, updated times and states from stored leaf states."""

    def __init__(self, tops: Iterable[str]) -> None:
        self.tops = set(tops)
        self.counts: dict[str, dict[State, int]] = {}
        self.updated: dict[str, float] = {}
        self.states: dict[str, PhaseState] = {}
        self.failed: list[PhaseState] = []

    def count(self, top: str, state: State, updated: float, n: int = 1) -> None:
        per = self.counts.setdefault(top, {})
        per[state] = per.get(state, 0) + n
        if updated > self.updated.get(top, 0.0):
            self.updated[top] = updated

    def add(self, st: PhaseState) -> None:
        """One stored leaf state: counted, kept when it is a top-level leaf's or failed."""
        top = top_of(st.phase_id)
        self.count(top, st.state, st.updated)
        self.keep(st)

    def keep(self, st: PhaseState) -> None:
        if st.phase_id in self.tops:
            self.states[st.phase_id] = st
        if st.state is State.FAILED and st.error:
            self.failed.append(st)

    def outline(self, specs: Sequence[PhaseSpec], leaves: Mapping[str, int],
                rank: Mapping[str, int]) -> Outline:
        """The Outline; `rank` orders the failed states (written order of their phases)."""
        failed = sorted(self.failed, key=lambda st: rank[st.phase_id])
        return Outline(tuple(specs), leaves, self.counts, self.updated, self.states,
                       tuple(failed))


def outline_of(specs: Sequence[PhaseSpec], states: Mapping[str, PhaseState]) -> Outline:
    """The Outline of a whole plan and its stored states (what a store without an index of
    its top-level phases answers, and what one with an index must answer alike)."""
    tops = [s for s in specs if not s.parent]
    leaves: dict[str, int] = {}
    for s in specs:
        if not s.children:
            top = top_of(s.id)
            leaves[top] = leaves.get(top, 0) + 1
    tally = Tally(s.id for s in tops)
    for st in states.values():
        tally.add(st)
    rank = {s.id: i for i, s in enumerate(specs)}
    return tally.outline(tops, leaves, rank)


def spec_ranges(starts: Mapping[str, int]) -> dict[str, tuple[int, int | None]]:
    """Where each top-level phase's specs lie, from where each starts (in written order): from
    its own index to the next one's (None: to the end of the plan)."""
    ends: list[int | None] = [*list(starts.values())[1:], None]
    return {top: (start, end) for (top, start), end in zip(starts.items(), ends, strict=True)}


def top_leaves(specs: Sequence[PhaseSpec]) -> list[tuple[int, int]]:
    """(index in `specs`, leaves below it) of every top-level phase: the index a store
    writes when it creates an operation."""
    out: list[tuple[int, int]] = []
    for i, s in enumerate(specs):
        if not s.parent:
            out.append((i, 0))
        if not s.children and out:
            out[-1] = (out[-1][0], out[-1][1] + 1)
    return out


__all__ = ["Outline", "Tally", "outline_of", "spec_ranges", "top_leaves", "top_of"]
