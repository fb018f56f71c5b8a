"""Pure data of the engine: phase specs, phase states, operations, changelog records, leases.
Nothing here does I/O; stores serialize these with `to_dict`/`from_dict`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from json.encoder import encode_basestring_ascii
from typing import Any

LOCAL_NODE = "local"  # where a phase without a `node` (on it or an ancestor) runs


class State(enum.StrEnum):
    """A phase's state. Leaves store it; a composite's is derived from its children."""

    UNSTARTED = "unstarted"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


class Action(enum.StrEnum):
    """What an in-progress phase is doing: running its effect or undoing it."""

    EXECUTE = "execute"
    ROLLBACK = "rollback"


_STATES = {s.value: s for s in State}
_ACTIONS = {a.value: a for a in Action}


class OpState(enum.StrEnum):
    """An operation's lifecycle. Only `active` operations hold the cluster lock."""

    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"

    @property
    def finished(self) -> bool:
        return self is not OpState.ACTIVE


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed phase is retried: exponential backoff with jitter.

    attempts: total tries including the first (1 = no retry).
    initial: delay before the 2nd try, seconds. factor: growth per try.
    max: cap on one delay, seconds. jitter: extra random delay, up to this
    fraction of the computed delay.
    """

    attempts: int = 1
    initial: float = 1.0
    factor: float = 2.0
    max: float = 60.0
    jitter: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


NO_RETRY = RetryPolicy()
"""The policy of a phase without `retry` (frozen: one instance serves them all)."""


@dataclass(frozen=True)
class PhaseSpec:
    """One phase of a plan as written: where it sits, what it runs, what it waits for.

    `id` is the absolute path (`/masters/node-1/drain`); `parent` is the parent's
    ID ("" for top-level phases); `children` lists child IDs in written order.
    A leaf has an `executor`; a composite has children.
    """

    id: str
    parent: str
    description: str = ""
    children: tuple[str, ...] = ()
    executor: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    node: str | None = None
    parallel: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def depth(self) -> int:
        return self.id.count("/") - 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "parent": self.parent}
        if self.description:
            out["description"] = self.description
        if self.children:
            out["children"] = list(self.children)
        if self.executor is not None:
            out["executor"] = self.executor
        if self.data:
            out["data"] = dict(self.data)
        if self.requires:
            out["requires"] = list(self.requires)
        if self.node is not None:
            out["node"] = self.node
        if self.parallel != 1:
            out["parallel"] = self.parallel
        if self.retry is not NO_RETRY and self.retry != NO_RETRY:
            out["retry"] = self.retry.to_dict()
        if self.timeout is not None:
            out["timeout"] = self.timeout
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PhaseSpec:
        return cls(
            id=d["id"],
            parent=d["parent"],
            description=d.get("description", ""),
            children=tuple(d.get("children", ())),
            executor=d.get("executor"),
            data=d.get("data", {}),
            requires=tuple(d.get("requires", ())),
            node=d.get("node"),
            parallel=d.get("parallel", 1),
            retry=RetryPolicy(**d["retry"]) if "retry" in d else NO_RETRY,
            timeout=d.get("timeout"),
        )


@dataclass(frozen=True)
class Plan:
    """A validated plan: its name, top-level parallelism and specs in written (pre-)order."""

    name: str
    specs: tuple[PhaseSpec, ...]
    parallel: int = 1
    source: str | None = None

    def by_id(self) -> dict[str, PhaseSpec]:
        return {s.id: s for s in self.specs}

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.specs if s.parent == "")

    @property
    def leaves(self) -> tuple[PhaseSpec, ...]:
        return tuple(s for s in self.specs if s.is_leaf)


# A phase state's and a changelog record's texts are bounded, so one state or record has a
# known largest size and a store can promise how many transitions fit in one atomic write
# (see engine/store/etcd_limits.py). Counted in bytes of their JSON form, as both stores write
# it (ASCII, non-ASCII escaped): an error keeps its message and the last lines of output.
MAX_ERROR_BYTES = 4096
MAX_NOTE_BYTES = 1024
_WIDEST = 12  # JSON bytes of one character at most (an astral one: two \uXXXX escapes)


def json_size(text: str) -> int:
    """Bytes `text` takes inside a JSON string as the stores write it (quotes not counted)."""
    return len(encode_basestring_ascii(text)) - 2


def clip(text: str | None, limit: int) -> str | None:
    """`text` if its JSON form fits in `limit` bytes, else its start and (longer) end with
    a marker saying how many characters were cut between them, within `limit`."""
    if text is None or len(text) * _WIDEST <= limit or json_size(text) <= limit:
        return text
    marker = f"\n[... {len(text)} characters cut ...]\n"
    room = limit - json_size(marker)
    head = _fit(text, room // 4, from_end=False)
    tail = _fit(text, room - json_size(head), from_end=True)
    cut = len(text) - len(head) - len(tail)
    return f"{head}\n[... {cut} characters cut ...]\n{tail}"


def _fit(text: str, room: int, *, from_end: bool) -> str:
    """The longest start (or end) of `text` whose JSON form fits in `room` bytes."""
    def part(n: int) -> str:
        return (text[len(text) - n:] if n else "") if from_end else text[:n]

    low, high = 0, min(len(text), max(room, 0))  # a character is at least one byte
    while low < high:
        mid = (low + high + 1) // 2
        if json_size(part(mid)) <= room:
            low = mid
        else:
            high = mid - 1
    return part(low)


def _clip_texts(obj: PhaseState | ChangeRecord) -> None:
    """Hold a frozen state's or record's error and note to their bounds (see `clip`)."""
    error, note = obj.error, obj.note
    if error is not None and len(error) * _WIDEST > MAX_ERROR_BYTES:
        object.__setattr__(obj, "error", clip(error, MAX_ERROR_BYTES))
    if note is not None and len(note) * _WIDEST > MAX_NOTE_BYTES:
        object.__setattr__(obj, "note", clip(note, MAX_NOTE_BYTES))


@dataclass(frozen=True)
class PhaseState:
    """The stored state of one leaf phase. `version` increases by one per transition.

    An absent row means unstarted at version 0. `owner` is the lease ID of the
    process running it (set while in progress); `action` says whether that run
    executes or rolls back.
    """

    phase_id: str
    state: State = State.UNSTARTED
    version: int = 0
    attempt: int = 0
    action: Action = Action.EXECUTE
    owner: int | None = None
    node: str | None = None
    error: str | None = None
    note: str | None = None
    updated: float = 0.0

    def __post_init__(self) -> None:
        _clip_texts(self)

    def to_dict(self) -> dict[str, Any]:
        # Written out (not dataclasses.asdict): this runs for every transition.
        return {"phase_id": self.phase_id, "state": self.state.value, "version": self.version,
                "attempt": self.attempt, "action": self.action.value, "owner": self.owner,
                "node": self.node, "error": self.error, "note": self.note,
                "updated": self.updated}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PhaseState:
        state, action = d["state"], d.get("action", "execute")
        return cls(
            phase_id=d["phase_id"],
            state=_STATES.get(state) or State(state),  # a dict lookup: 100,000 states a plan
            version=int(d["version"]),
            attempt=int(d.get("attempt", 0)),
            action=_ACTIONS.get(action) or Action(action),
            owner=d.get("owner"),
            node=d.get("node"),
            error=d.get("error"),
            note=d.get("note"),
            updated=float(d.get("updated", 0.0)),
        )

    def advance(self, state: State, **changes: Any) -> PhaseState:
        """The next version of this state (the caller CASes on `self.version`)."""
        changes.setdefault("updated", time.time())
        return replace(self, state=state, version=self.version + 1, **changes)


@dataclass(frozen=True)
class Transition:
    """One compare-and-swap: move `phase_id` from version `expected` to `new`.

    `from_state` and `from_updated` are the state and update time stored at `expected` (a
    store's index keys name them: etcd deletes the old index key by them; see `of`).
    """

    expected: int
    new: PhaseState
    from_state: State
    from_updated: float = 0.0

    @classmethod
    def of(cls, current: PhaseState, new: PhaseState) -> Transition:
        """The transition from the stored `current` to `new`."""
        return cls(current.version, new, current.state, current.updated)

    @property
    def phase_id(self) -> str:
        return self.new.phase_id


@dataclass(frozen=True)
class ChangeRecord:
    """One changelog entry, written atomically with the transition it records.

    `seq` orders the log within an operation (assigned by the store).
    """

    seq: int
    operation_id: str
    phase_id: str
    version: int
    from_state: State
    to_state: State
    action: Action
    attempt: int
    owner: int | None
    node: str | None
    error: str | None
    note: str | None
    at: float

    def __post_init__(self) -> None:
        _clip_texts(self)

    @classmethod
    def of(cls, operation_id: str, t: Transition, seq: int = 0) -> ChangeRecord:
        n = t.new
        return cls(
            seq=seq,
            operation_id=operation_id,
            phase_id=n.phase_id,
            version=n.version,
            from_state=t.from_state,
            to_state=n.state,
            action=n.action,
            attempt=n.attempt,
            owner=n.owner,
            node=n.node,
            error=n.error,
            note=n.note,
            at=n.updated,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "operation_id": self.operation_id, "phase_id": self.phase_id,
                "version": self.version, "from_state": self.from_state.value,
                "to_state": self.to_state.value, "action": self.action.value,
                "attempt": self.attempt, "owner": self.owner, "node": self.node,
                "error": self.error, "note": self.note, "at": self.at}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChangeRecord:
        return cls(
            seq=int(d["seq"]),
            operation_id=d["operation_id"],
            phase_id=d["phase_id"],
            version=int(d["version"]),
            from_state=State(d["from_state"]),
            to_state=State(d["to_state"]),
            action=Action(d.get("action", "execute")),
            attempt=int(d.get("attempt", 0)),
            owner=d.get("owner"),
            node=d.get("node"),
            error=d.get("error"),
            note=d.get("note"),
            at=float(d["at"]),
        )

    def state_after(self) -> PhaseState:
        """The phase state this record leaves behind (used to rebuild state from the log)."""
        return PhaseState(
            phase_id=self.phase_id,
            state=self.to_state,
            version=self.version,
            attempt=self.attempt,
            action=self.action,
            owner=self.owner,
            node=self.node,
            error=self.error,
            note=self.note,
            updated=self.at,
        )


@dataclass(frozen=True)
class Operation:
    """An operation record: identity, kind, lifecycle state and free-form data (values…)."""

    id: str
    type: str
    plan_name: str
    state: OpState = OpState.ACTIVE
    created: float = 0.0
    updated: float = 0.0
    note: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        d["data"] = dict(self.data)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Operation:
        return cls(
            id=d["id"],
            type=d["type"],
            plan_name=d["plan_name"],
            state=OpState(d["state"]),
            created=float(d["created"]),
            updated=float(d["updated"]),
            note=d.get("note"),
            data=d.get("data") or {},
        )


@dataclass(frozen=True)
class Lease:
    """A liveness token: held by a process, alive while renewed before `expires`."""

    id: int
    name: str  # who holds it, e.g. coordinator:<op> (stored as `owner`)
    host: str
    pid: int
    ttl: float
    expires: float

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid} on {self.host}, lease {self.id})"


def replay(records: list[ChangeRecord]) -> dict[str, PhaseState]:
    """Rebuild every phase's current state from the changelog alone."""
    states: dict[str, PhaseState] = {}
    for rec in sorted(records, key=lambda r: r.seq):
        prev = states.get(rec.phase_id)
        if prev is None or rec.version > prev.version:
            states[rec.phase_id] = rec.state_after()
    return states
