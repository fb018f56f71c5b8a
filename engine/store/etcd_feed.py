"""A long-lived etcd watch per operation's changelog, so `wait_changes` wakes within a round trip.
A watch opened afresh on every call starts from history and etcd serves it from its 100 ms sync
loop; one watch kept open stays "synced" and delivers each commit at once.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from engine.model import ChangeRecord, State

# Records a feed holds at most: beyond it the older half is dropped. A long operation's feed
# (200,000 records for 100,000 phases) would otherwise grow for as long as its process runs.
KEEP = 10_000


class Feed:
    """The changelog records of one operation as the watch delivers them, in seq order.

    `base` is the seq the feed started after, or the newest one it dropped (`trimmed`):
    records at or below it are not held here.
    With `to_state` and `node`, only records moving a phase to that state, and of phases on
    that node, are held (and wake a wait).
    `broken` means the watch ended (etcd restarted, the channel was cut): the owner must
    catch up by reading from `last_seq` and open a new watch from `revision` + 1.
    """

    def __init__(self, base: int, to_state: State | None = None,
                 node: str | None = None) -> None:
        self.cond = threading.Condition()
        self.base = base
        self.trimmed = 0  # the newest seq dropped to bound the feed (0: none)
        self.to_state = to_state
        self.node = node
        self.seqs: list[int] = []
        self.records: list[ChangeRecord] = []
        self.revision = 0
        self.broken = True
        self.closed = False  # forgotten or its store closed: waits return, nothing reopens it
        self.wakes = 0  # bumped by `wake`: every wait in progress returns at once
        self.watch_id: Any = None
        self.stack = contextlib.ExitStack()

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else self.base

    def add(self, records: list[ChangeRecord], revision: int) -> None:
        """Append records newer than what the feed holds, of its `to_state` if it has one,
        and wake the waits only if there were any (callers hold `cond`)."""
        last = self.last_seq
        wanted, node = self.to_state, self.node
        added = False
        for rec in sorted(records, key=lambda r: r.seq):
            if rec.seq > last and (wanted is None or rec.to_state is wanted) and (
                    node is None or rec.node == node):
                self.seqs.append(rec.seq)
                self.records.append(rec)
                last = rec.seq
                added = True
        self.revision = max(self.revision, revision)
        if len(self.seqs) > KEEP:  # the older half goes; a wait still behind it rereads
            cut = len(self.seqs) - KEEP // 2
            self.trimmed = self.seqs[cut - 1]
            self.base = max(self.base, self.trimmed)
            del self.seqs[:cut], self.records[:cut]
        if added:
            self.cond.notify_all()

    def after(self, seq: int) -> list[ChangeRecord]:
        """Records with seq > `seq` (callers hold `cond`)."""
        return self.records[bisect.bisect_right(self.seqs, seq):]


def wait(feed: Feed, after: int, deadline: float, repair: Callable[[Feed], bool]
         ) -> list[ChangeRecord] | None:
    """Block until the feed holds records past `after` or the deadline passes; None when the
    feed dropped records past `after` that this wait had not seen (read them from the store).

    `repair` re-reads what a broken watch may have missed and opens a new one; it returns
    False while the store is unreachable, and is retried with backoff until the deadline.
    """
    pause = 0.05
    with feed.cond:
        woken = feed.wakes
    while True:
        with feed.cond:
            while not feed.broken:
                if after < feed.trimmed:
                    return None
                found = feed.after(after)
                if found or feed.wakes != woken or feed.closed:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                feed.cond.wait(remaining)
            if feed.closed:
                return feed.after(after)
        if repair(feed):
            pause = 0.05
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            with feed.cond:
                return feed.after(after)
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 1.0)
