"""Content-addressed blobs: a verified cache, image trees named by one digest, an HTTP(S) blob
service with bearer tokens and Range resume, and a bounded-memory client (docs/blobs.md).
"""

from engine.blobs.cache import BlobCache, GcReport
from engine.blobs.client import fetch, fetch_tree, upload
from engine.blobs.errors import BlobError, BlobInputError
from engine.blobs.publish import Published, load_tree, materialize, publish_image
from engine.blobs.ref import BlobRef
from engine.blobs.server import BlobServer, advertise_address, new_token, server_tls
from engine.blobs.tree import Entry, Tree

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
