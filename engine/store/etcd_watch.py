"""Watches of single etcd keys for `EtcdStore.watch` (an agent's stop request, the cluster lock), so
a waiter blocks until one of them changes instead of reading the store on a timer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pyetcd.watch import WatchResponse

from engine.errors import StoreError
from engine.store.etcd_conn import Connection
from engine.store.etcd_errors import CAUGHT, channel_gone, is_token_expired


class KeyWatch:
    """One etcd watch per key, all on the connection's watch stream. `broken` once the stream
    ended (or the watch could not be opened): the owner reads again and opens a new one."""

    def __init__(self, cancel: Callable[[Any], None]) -> None:
        self._cancel = cancel
        self._lock = threading.Lock()
        self._broken = False
        self._closed = False
        self.ids: list[Any] = []
        self.stack = contextlib.ExitStack()  # keeps the client the watches live on open

    @property
    def broken(self) -> bool:
        return self._broken or self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            ids, self.ids = self.ids, []
        for watch_id in ids:
            self._cancel(watch_id)
        self.stack.close()


def open_watch(conn: Connection, keys: Sequence[bytes], on_change: Callable[[], None],
               cancel: Callable[[Any], None], *, relogin: bool) -> KeyWatch:
    """Watch `keys`, calling `on_change` on every event and once when the stream breaks.
    A watch that cannot be opened now (etcd unreachable) comes back broken, not raised:
    the caller falls back to reading until a later attempt succeeds."""
    watch = KeyWatch(cancel)

    def on_event(item: Any) -> None:
        if not isinstance(item, WatchResponse):
            watch._broken = True  # the stream ended: error or None
        on_change()

    try:
        client = watch.stack.enter_context(conn.using())
        for key in keys:
            watch.ids.append(client.add_watch_callback(key, on_event))
    except (*CAUGHT, ValueError, StoreError) as exc:
        watch.close()
        if isinstance(exc, ValueError) and not channel_gone(exc):
            raise
        if not isinstance(exc, StoreError) and is_token_expired(exc) and relogin:
            conn.relogin()
    return watch


__all__ = ["KeyWatch", "open_watch"]
