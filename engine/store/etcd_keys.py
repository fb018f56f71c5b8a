"""The etcd key layout of the store (documented in docs/storage.md) and the JSON codec.
One key per operation record, phase spec, phase state and changelog record, under one prefix.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from engine.model import ChangeRecord, PhaseState, State
from engine.outline import top_of
from engine.store.etcd_spans import prefix_end

T = TypeVar("T")
# A state index key's age (`ix/<top>/<state>/<age>/<leaf>`): 10^19 minus the state's update
# time in whole nanoseconds, so the newest state is the first key of a range.
AGE_WIDTH = 20
_AGE_BASE = 10**19
SPEC_WIDTH = 8  # spec/<index>: written order, up to 10^8 phases
VERSION_WIDTH = 8  # log/<node>/<phase>/<version>
# A changelog record's seq is `mod_revision * SLOTS + index`: the etcd revision of the
# transaction that wrote it, then its place among that transaction's records.
SLOTS = 1000
# The key that marks a prefix as one store's root: `<prefix>/.gravity-store` (etcd_root).
MARKER = ".gravity-store"

# Every key a store writes, relative to `<prefix>/`. An escaped ID is one segment of letters,
# digits, `_.~-` and `%XX`; anything else under the prefix was written by someone else (a store
# nested in ours, or another program) and is never read as ours nor deleted.
_SEG = r"[A-Za-z0-9_.~%-]+"
LAYOUT = re.compile(
    rf"op/{_SEG}"
    rf"|data/{_SEG}/spec/[0-9]{{{SPEC_WIDTH},}}"
    rf"|data/{_SEG}/top/[0-9]{{{SPEC_WIDTH},}}"
    rf"|data/{_SEG}/state/{_SEG}"
    rf"|data/{_SEG}/ix/{_SEG}/[a-z_]+/[0-9]{{{AGE_WIDTH}}}/{_SEG}"
    rf"|data/{_SEG}/log/{_SEG}=?/{_SEG}/[0-9]{{{VERSION_WIDTH},}}"
    rf"|lock/{_SEG}|lease/[0-9]+|kv/{_SEG}|claim/{_SEG}")


_LAYOUT_BYTES = re.compile(LAYOUT.pattern.encode("ascii"))  # the same, on a key's bytes


def in_layout(rest: str) -> bool:
    """Whether `rest` (a key with its `<prefix>/` cut off) is a key the layout names."""
    return LAYOUT.fullmatch(rest) is not None


@functools.lru_cache(maxsize=1 << 16)  # every key names its operation; a phase, a few times
def esc(text: str) -> str:
    """One key segment for an ID: '/' and every non-plain byte percent-encoded.

    So `/masters/node-1` becomes `%2Fmasters%2Fnode-1` and no ID can reach into
    another's range (op `a/state` never lands under op `a`).
    """
    return quote(text, safe="")


def unesc(segment: str) -> str:
    return unquote(segment)


def node_segment(node: str | None) -> str:
    """The key segment of a record's node; `-` for a record that names none."""
    return esc(node) if node else "-"


_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)  # made once, not per call


def encode(data: dict[str, Any]) -> bytes:
    return _ENCODER.encode(data).encode()


_DECODE = json.JSONDecoder().raw_decode


def decode(raw: bytes) -> dict[str, Any]:
    """A stored JSON value. What we write (UTF-8, nothing around it) is decoded without
    json.loads' detection of the encoding (a plan's 100,000 specs and states are read at
    once); anything else goes to json.loads, which accepts or refuses it as ever."""
    try:
        text = raw.decode()
        value, end = _DECODE(text)
        if end == len(text):
            return value  # type: ignore[no-any-return]
    except ValueError:
        pass
    return json.loads(raw)  # type: ignore[no-any-return]


def decode_many(raws: Sequence[bytes]) -> list[Any]:
    """Stored JSON values, read at once: parsed as one JSON array when they join into one with
    exactly their number of objects (a plan's 200,000 values in one C call, not 200,000 Python
    ones); else each on its own through `decode`, which accepts or refuses it as ever."""
    try:
        joined = b",".join(raws).decode()
        values, end = _DECODE("[" + joined + "]")
        if end == len(joined) + 2 and len(values) == len(raws) and \
                all(type(v) is dict for v in values):
            return values  # type: ignore[no-any-return]
    except ValueError:
        pass
    return [decode(raw) for raw in raws]


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix. Every range ends in '/' so `op-1` never matches `op-10`."""

    prefix: str

    def _k(self, *parts: str) -> bytes:
        return "/".join((self.prefix, *parts)).encode()

    # the store's whole range, and the marker that says the store owns it
    def root(self) -> bytes:
        return self._k("")

    def marker(self) -> bytes:
        return self._k(MARKER)

    @cached_property
    def _head(self) -> bytes:
        return self.root()

    @cached_property
    def _layout_many(self) -> re.Pattern[bytes]:
        one = re.escape(self._head) + b"(?:" + _LAYOUT_BYTES.pattern + b")"
        return re.compile(one + b"(?:\n" + one + b")*")

    def owned(self, rows: list[tuple[bytes, T]]) -> list[tuple[bytes, T]]:
        """The (key, value) rows whose key `owns`: checked in one match over all the keys
        joined by newlines (a scan of 100,000 keys), key by key when any is not ours."""
        joined = b"\n".join([key for key, _ in rows])
        if joined.count(b"\n") == len(rows) - 1 and self._layout_many.fullmatch(joined):
            return rows
        return [row for row in rows if self.owns(row[0])]

    def owns(self, key: bytes) -> bool:
        """Whether `key` is one this store writes: under its prefix and in its layout.
        Reads skip every other key and deletes never touch one."""
        head = self._head
        if not key.startswith(head):
            return False
        return _LAYOUT_BYTES.fullmatch(key, len(head)) is not None

    # operation records only: listing reads nothing else
    def ops(self) -> bytes:
        return self._k("op", "")

    def op(self, op_id: str) -> bytes:
        return self._k("op", esc(op_id))

    # everything that belongs to one operation
    def data(self, op_id: str) -> bytes:
        return self._k("data", esc(op_id), "")

    def specs(self, op_id: str) -> bytes:
        return self._k("data", esc(op_id), "spec", "")

    def spec(self, op_id: str, index: int) -> bytes:
        return self._k("data", esc(op_id), "spec", f"{index:0{SPEC_WIDTH}d}")

    def tops(self, op_id: str) -> bytes:
        return self._k("data", esc(op_id), "top", "")

    def top(self, op_id: str, index: int) -> bytes:
        """The index entry of a top-level phase: its spec's index, the leaves below it."""
        return self._k("data", esc(op_id), "top", f"{index:0{SPEC_WIDTH}d}")

    def states(self, op_id: str) -> bytes:
        return self._k("data", esc(op_id), "state", "")

    def state(self, op_id: str, phase_id: str) -> bytes:
        return self._k("data", esc(op_id), "state", esc(phase_id))

    def ixs(self, op_id: str, top: str | None = None, state: State | None = None) -> bytes:
        """The state index of an operation: `ix/<top>/<state>/<age>/<leaf>`, one key per
        stored leaf state, moved with it in the transaction that moves the state. `--short`
        asks, per top-level phase and state, for the first key alone: the answer holds the
        count of keys and the newest one. Narrowed to one top-level phase, and to one state
        under it."""
        parts = ["data", esc(op_id), "ix"]
        if top is not None:
            parts.append(esc(top))
            if state is not None:
                parts.append(state.value)
        return self._k(*parts, "")

    def ix(self, op_id: str, phase_id: str, state: State, updated: float) -> bytes:
        age = _AGE_BASE - max(0, round(updated * 1e9))  # distinct floats: distinct ages
        return self._k("data", esc(op_id), "ix", esc(top_of(phase_id)), state.value,
                       f"{max(age, 0):0{AGE_WIDTH}d}", esc(phase_id))

    def logs(self, op_id: str, node: str | None = None) -> bytes:
        """The operation's whole changelog; with `node`, the dispatches to it: the records
        that move its phases to in_progress, what its agent watches for (see `log`)."""
        if node is None:
            return self._k("data", esc(op_id), "log", "")
        return self._k("data", esc(op_id), "log", node_segment(node), "")

    def log(self, op_id: str, node: str | None, phase_id: str, version: int,
            to_state: State) -> bytes:
        """The record of the transition that took `phase_id` (running on `node`) to `version`:
        unique because that transition compare-and-swapped the state key from `version - 1`.
        The node comes first so an agent can watch its own node's records alone, and only
        dispatches (to in_progress) sit under `log/<node>/`: every other record of the node
        sits under `log/<node>=/` (`=` is never in an escaped segment), so an agent's watch
        does not carry back the results it records itself."""
        segment = node_segment(node) + ("" if to_state is State.IN_PROGRESS else "=")
        return self._k("data", esc(op_id), "log", segment, esc(phase_id),
                       f"{version:0{VERSION_WIDTH}d}")

    # locks and leases
    def claim(self, op_id: str) -> bytes:
        """Held by the one process creating (or copying) `op_id` until it publishes it."""
        return self._k("claim", esc(op_id))

    def lock(self, name: str) -> bytes:
        return self._k("lock", esc(name))

    def lease(self, lease_id: int) -> bytes:
        return self._k("lease", str(lease_id))

    # small records (agents, stop requests); escaping keeps prefixes prefixes
    def kv(self, key: str) -> bytes:
        return self._k("kv", esc(key))


def ix_value(updated: float) -> bytes:
    """A state index key's value: its state's update time, exactly."""
    return repr(updated).encode()


def ix_updated(value: bytes) -> float:
    return float(value)


def log_value(record: ChangeRecord, index: int) -> bytes:
    """A changelog record as stored: without its seq (etcd assigns the revision), with its
    `index` among the records of its transaction."""
    if not 0 <= index < SLOTS:
        raise ValueError(f"a transaction holds at most {SLOTS} changelog records")
    d = record.to_dict()
    del d["seq"]
    d["index"] = index
    return encode(d)


def log_record(value: bytes, mod_revision: int) -> ChangeRecord:
    """The record stored as `value` at `mod_revision`, its seq filled in."""
    d = decode(value)
    d["seq"] = int(mod_revision) * SLOTS + int(d.pop("index"))
    return ChangeRecord.from_dict(d)


def seq_floor(seq: int) -> int:
    """The lowest etcd revision that can hold a record with a seq above `seq`."""
    return max(seq, 0) // SLOTS


def ix_items(keys: Keys, op_id: str, states: Sequence[PhaseState]) -> list[tuple[bytes, bytes]]:
    """The state index keys of stored states (an imported operation's, written with them)."""
    return [(keys.ix(op_id, st.phase_id, st.state, st.updated), ix_value(st.updated))
            for st in states]


def span(prefix: bytes) -> tuple[bytes, bytes]:
    """(start, end) of the range holding every key under `prefix`."""
    return prefix, prefix_end(prefix)


__all__ = ["AGE_WIDTH", "MARKER", "SLOTS", "Keys", "decode", "decode_many", "encode", "esc",
           "in_layout", "ix_items", "ix_updated", "ix_value", "log_record", "log_value",
           "node_segment", "seq_floor", "span", "unesc"]
