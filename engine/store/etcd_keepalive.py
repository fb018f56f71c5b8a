"""Lease renewals on one long-lived etcd LeaseKeepAlive stream: a renewal is one message on it,
not a new stream and request thread each time (~0.2 ms of CPU against ~0.9 ms, every TTL/3).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from pyetcd import MultiEndpointEtcd3Client, etcdrpc
from pyetcd import exceptions as etcd_exc

from engine.store.etcd_errors import CAUGHT


class _Stream:
    """One open LeaseKeepAlive call on one client, its replies read by a daemon thread."""

    def __init__(self, client: MultiEndpointEtcd3Client) -> None:
        self.client = client
        self.requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.replies: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.ended = False
        self.call = client.leasestub.LeaseKeepAlive(
            iter(self.requests.get, None), credentials=client.call_credentials,
            metadata=client.metadata)
        threading.Thread(target=self._read, name="lease-keepalive", daemon=True).start()

    def _read(self) -> None:
        try:
            for reply in self.call:
                self.replies.put(reply)
        except CAUGHT as exc:
            self.replies.put(exc)
        except ValueError as exc:  # the channel was closed under it
            self.replies.put(exc)
        else:
            self.replies.put(None)
        self.ended = True

    def close(self) -> None:
        self.ended = True
        self.requests.put(None)
        self.call.cancel()


class KeepAlive:
    """Renews leases over one stream per client, one renewal at a time. A stream that ends,
    errs or does not answer in time is dropped and the error raised (the connection's retry
    loop translates it and tries again, on a new stream)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._stream: _Stream | None = None

    def renew(self, client: MultiEndpointEtcd3Client, lease_id: int) -> int:
        """The lease's new TTL in seconds (0 or less: etcd no longer has it)."""
        with self._lock:
            stream = self._stream
            if stream is None or stream.ended or stream.client is not client:
                if stream is not None:
                    stream.close()
                stream = self._stream = _Stream(client)
            stream.requests.put(etcdrpc.LeaseKeepAliveRequest(ID=lease_id))
            try:
                while True:
                    reply = stream.replies.get(timeout=self.timeout)
                    if reply is None or isinstance(reply, BaseException):
                        break
                    if lease_id == reply.ID:  # not a late reply to a renewal that timed out
                        return int(reply.TTL)
            except queue.Empty:
                reply = etcd_exc.ConnectionTimeoutError("no reply to a lease renewal")
            stream.close()
            self._stream = None
            if reply is None:
                raise etcd_exc.ConnectionFailedError("the lease keep-alive stream ended")
            raise reply

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None


__all__ = ["KeepAlive"]
