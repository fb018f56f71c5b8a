"""The coordinator's side of image distribution: while it drives an operation with agents, it
serves the image's blobs over HTTP(S) on its address toward the store, token in the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import EngineError, StoreConfigError

if TYPE_CHECKING:  # the CLI imports ServeOptions on every command: keep this module light
    from engine.agent_protocol import Service
    from engine.events import EventLog
    from engine.model import Lease, Operation
    from engine.store.base import Store


@dataclass(frozen=True)
class ServeOptions:
    """How the coordinator serves the image: TLS files (the cluster's, as etcd's), the
    address agents reach it at (found from the route to the store unless given) and port."""

    cert: str | None = None
    key: str | None = None
    advertise: str | None = None
    port: int = 0


def advertised_host(store: Store, options: ServeOptions) -> str:
    """The address agents reach this coordinator at: `--advertise-addr`, else this host's
    address on the route toward the store (where agents come from too)."""
    from engine.blobs import advertise_address

    if options.advertise:
        return options.advertise
    peer = store.reach()
    if peer is None:
        raise StoreConfigError(
            "cannot tell which address agents reach this host at: the store is not shared",
            hint="pass --advertise-addr with an address the nodes can reach")
    return advertise_address(*peer)


@contextmanager
def serving(store: Store, op: Operation, lease: Lease, state_dir: Path,
            options: ServeOptions, events: EventLog) -> Iterator[Service | None]:
    """Serve the operation's image (if it has one) for as long as the run lasts, and tell
    agents where, bound to this coordinator's lease."""
    from engine import agent_protocol as proto
    from engine.agent_protocol import Service
    from engine.blobs import BlobCache, BlobServer, new_token, server_tls
    from engine.blobs.server import Served

    if "image" not in op.data:
        yield None
        return
    host = advertised_host(store, options)
    tls = server_tls(options.cert, options.key) if options.cert and options.key else None
    token = new_token()
    def served(req: Served) -> None:  # every request, in the operation's event log
        with suppress(EngineError):
            events.emit("blob served", quiet=True, path=req.path, status=req.status,
                        range=req.range, sent=req.sent, peer=req.peer)

    server = BlobServer(BlobCache(state_dir), host=host, port=options.port, tls=tls,
                        tokens=[token], on_request=served)
    server.start()
    service = Service(url=server.url_for(host), token=token)
    events.emit("serving the image", quiet=True, url=service.url, tls=tls is not None)
    if tls is None:
        events.emit("blob service on plain HTTP: etcd has no TLS, so neither does it; the "
                    "per-operation token still guards it", url=service.url)
    try:
        proto.publish_service(store, op.id, service, lease.id)
        yield service
    finally:
        with suppress(EngineError):  # bound to the lease: it goes when the lease does
            proto.withdraw_service(store, op.id)
        server.stop()


__all__ = ["ServeOptions", "advertised_host", "serving"]
