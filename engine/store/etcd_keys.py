"""The etcd key layout of the store (documented in docs/storage.md) and the JSON codec.
One key per operation record, phase spec, phase state and changelog record, under one prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from engine.store.etcd_conn import prefix_end

SPEC_WIDTH = 8  # spec/<index>: written order, up to 10^8 phases
SEQ_WIDTH = 12  # log/<seq>: key order is changelog order


def esc(text: str) -> str:
    """One key segment for an ID: '/' and every non-plain byte percent-encoded.

    So `/masters/node-1` becomes `%2Fmasters%2Fnode-1` and no ID can reach into
    another's range (op `a/state` never lands under op `a`).
    """
    return quote(text, safe="")


def unesc(segment: str) -> str:
    return unquote(segment)


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def decode(raw: bytes) -> dict[str, Any]:
    return json.loads(raw)


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix. Every range ends in '/' so `op-1` never matches `op-10`."""

    prefix: str

    def _k(self, *parts: str) -> bytes:
        return "/".join((self.prefix, *parts)).encode()

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

    def states(self, op_id: str) -> bytes:
        return self._k("data", esc(op_id), "state", "")

    def state(self, op_id: str, phase_id: str) -> bytes:
        return self._k("data", esc(op_id), "state", esc(phase_id))

    def logs(self, op_id: str) -> bytes:
        return self._k("data", esc(op_id), "log", "")

    def log(self, op_id: str, seq: int) -> bytes:
        return self._k("data", esc(op_id), "log", f"{seq:0{SEQ_WIDTH}d}")

    def seq(self, op_id: str) -> bytes:
        """The last changelog seq handed out for the operation (decimal text)."""
        return self._k("data", esc(op_id), "seq")

    # locks and leases
    def lock(self, name: str) -> bytes:
        return self._k("lock", esc(name))

    def lease(self, lease_id: int) -> bytes:
        return self._k("lease", str(lease_id))

    # small records (agents, stop requests); escaping keeps prefixes prefixes
    def kv(self, key: str) -> bytes:
        return self._k("kv", esc(key))


def span(prefix: bytes) -> tuple[bytes, bytes]:
    """(start, end) of the range holding every key under `prefix`."""
    return prefix, prefix_end(prefix)


__all__ = ["Keys", "decode", "encode", "esc", "span", "unesc"]
