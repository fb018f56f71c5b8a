"""Content-addressed blobs: a verified cache, image trees named by one digest, an HTTP(S) blob
service with bearer tokens and Range resume, and a bounded-memory client (docs/blobs.md).

Each name is imported from its module when first used: a run that never fetches or serves a
blob does not pay for the HTTP client and server (http, ssl, email, tenacity, asyncio).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.blobs.cache import BlobCache, GcReport
    from engine.blobs.client import fetch, fetch_tree, upload
    from engine.blobs.errors import BlobError, BlobInputError
    from engine.blobs.publish import Published, load_tree, materialize, publish_image
    from engine.blobs.ref import BlobRef
    from engine.blobs.server import BlobServer, advertise_address, new_token, server_tls
    from engine.blobs.tree import Entry, Tree

_HOME = {
    "BlobCache": "cache", "GcReport": "cache",
    "fetch": "client", "fetch_tree": "client", "upload": "client",
    "BlobError": "errors", "BlobInputError": "errors",
    "Published": "publish", "load_tree": "publish", "materialize": "publish",
    "publish_image": "publish",
    "BlobRef": "ref",
    "BlobServer": "server", "advertise_address": "server", "new_token": "server",
    "server_tls": "server",
    "Entry": "tree", "Tree": "tree",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'engine.blobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"engine.blobs.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BlobCache",
    "BlobError",
    "BlobInputError",
    "BlobRef",
    "BlobServer",
    "Entry",
    "GcReport",
    "Published",
    "Tree",
    "advertise_address",
    "fetch",
    "fetch_tree",
    "load_tree",
    "materialize",
    "new_token",
    "publish_image",
    "server_tls",
    "upload",
]
