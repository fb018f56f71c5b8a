"""Pure helpers for shaping etcd requests: the end of the range under a key prefix, and writes
split into batches that fit etcd's per-transaction limits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix`."""
    s = bytearray(prefix)
    for i in reversed(range(len(s))):
        if s[i] < 0xFF:
            s[i] += 1
            return bytes(s[: i + 1])
    return b"\0"


def batches(items: Sequence[T], size: int, weigh: Callable[[T], int],
            max_bytes: int) -> Iterator[list[T]]:
    """Split `items` into runs of at most `size` items and about `max_bytes` bytes."""
    run: list[T] = []
    used = 0
    for item in items:
        w = weigh(item)
        if run and (len(run) >= size or used + w > max_bytes):
            yield run
            run, used = [], 0
        run.append(item)
        used += w
    if run:
        yield run


__all__ = ["batches", "prefix_end"]
