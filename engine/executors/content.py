"""What a phase reads besides its spec, wherever it runs: the image's content by digest (from
this host's blob cache, fetched from the coordinator's blob service if needed) and node facts.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import agent_protocol as proto
from engine.agent_protocol import Service

if TYPE_CHECKING:  # loaded when a phase needs content, not with every command
    from engine.blobs import BlobCache, BlobRef
    from engine.store.base import Store


class Content(ABC):
    """The image's files, named by the digest of its tree and a path inside it."""

    @abstractmethod
    def materialize(self, image: BlobRef, dest: Path, subpath: str | None = None) -> Path:
        """Build `dest` as the image (or its directory `subpath`), atomically; idempotent."""

    @abstractmethod
    def fetch(self, blob: BlobRef) -> Path:
        """One blob (a backup archive, say), verified, in this node's cache."""

    @abstractmethod
    def upload(self, path: Path) -> BlobRef:
        """Hand a file this node made back to the coordinator (a backup, logs); its name."""

    def collect(self, image: BlobRef) -> int:
        """Drop this node's cached blobs other than `image`'s; the bytes freed."""
        return 0


class CachedContent(Content):
    """The image's blobs are in this host's cache already (the coordinator published them;
    what it published it keeps: `collect` frees nothing here)."""

    def __init__(self, cache: BlobCache) -> None:
        self.cache = cache

    def materialize(self, image: BlobRef, dest: Path, subpath: str | None = None) -> Path:
        from engine.blobs import materialize

        return materialize(self.cache, image, dest, subpath)

    def fetch(self, blob: BlobRef) -> Path:
        return self.cache.check(blob)

    def upload(self, path: Path) -> BlobRef:
        return self.cache.add_file(path, link=False)


class ServedContent(Content):
    """Fetch what is missing from the operation's blob service into this node's own cache,
    then build from the cache. Errors name the node, the blob and the cause."""

    def __init__(self, cache: BlobCache, node: str, locate: Callable[[], Service | None],
                 ca_file: str | None = None) -> None:
        self.cache, self.node, self.locate, self.ca_file = cache, node, locate, ca_file

    def _service(self, blob: BlobRef) -> Service:
        from engine.blobs import BlobError

        service = self.locate()
        if service is None:
            raise BlobError(
                f"blob {blob.short}: no blob service is published for this operation",
                cause="unreachable", digest=blob.digest,
                hint="the coordinator serves the image while it drives the operation: "
                "run `gravity plan resume` on the host that has the image")
        return service

    @contextmanager
    def _on_node(self) -> Iterator[None]:
        """A blob failure as the operator reads it: which node, then which blob and why."""
        from engine.blobs import BlobError

        try:
            yield
        except BlobError as exc:
            raise BlobError(f"on node {self.node}: {exc.message}", cause=exc.cause,
                            digest=exc.digest, url=exc.url, detail=exc.detail,
                            hint=exc.hint) from exc

    def materialize(self, image: BlobRef, dest: Path, subpath: str | None = None) -> Path:
        from engine.blobs import fetch_tree, materialize

        with self._on_node():
            service = self._service(image)
            fetch_tree(image, subpath=subpath, base_url=service.url, token=service.token,
                       cache=self.cache, ca_file=self.ca_file)
            return materialize(self.cache, image, dest, subpath)

    def fetch(self, blob: BlobRef) -> Path:
        from engine.blobs import fetch

        with self._on_node():
            service = self._service(blob)
            return fetch(blob, base_url=service.url, token=service.token, cache=self.cache,
                         ca_file=self.ca_file)

    def upload(self, path: Path) -> BlobRef:
        from engine.blobs import BlobRef, upload

        with self._on_node():
            service = self._service(BlobRef("sha256:" + "0" * 64, 0))
            return upload(path, base_url=service.url, token=service.token,
                          ca_file=self.ca_file)

    def collect(self, image: BlobRef) -> int:
        from engine.blobs import load_tree

        if not self.cache.has(image):
            return 0
        keep = {image, *load_tree(self.cache, image).blobs()}
        return self.cache.gc(keep=keep).freed


class Facts:
    """Small facts a node publishes about itself (its packages), read by phases on any node
    and by `gravity status`; kept in the store under `facts/<node>/<name>`."""

    PREFIX = "facts/"

    def __init__(self, store: Store, node: str) -> None:
        self.store, self.node = store, node

    def publish(self, name: str, value: Any) -> None:
        self.store.kv_put(f"{self.PREFIX}{self.node}/{name}", {"value": value,
                                                                "at": time.time()})

    def get(self, node: str, name: str) -> Any:
        found = self.store.kv_get(f"{self.PREFIX}{node}/{name}")
        return found.get("value") if found is not None else None

    def forget(self, node: str) -> bool:
        """`node` left the cluster: delete what it published and ask its agent to stop
        (through the store); True when an agent was running there."""
        for key in list(self.store.kv_list(f"{self.PREFIX}{node}/")):
            self.store.kv_delete(key)
        if proto.agent(self.store, node) is None:
            return False
        proto.request_stop(self.store, node)
        return True

    @classmethod
    def all_of(cls, store: Store, name: str) -> dict[str, Any]:
        """Every node's fact `name`, by node."""
        out: dict[str, Any] = {}
        for key, record in store.kv_list(cls.PREFIX).items():
            node, _, fact = key[len(cls.PREFIX):].rpartition("/")
            if fact == name and isinstance(record, Mapping):
                out[node] = record.get("value")
        return out


__all__ = ["CachedContent", "Content", "Facts", "ServedContent"]
