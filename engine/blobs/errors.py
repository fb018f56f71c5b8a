"""Errors of the blob layer: one type for every failure to store, serve or fetch a blob, and
input errors for a malformed blob reference, tree document or image directory.

    EngineError
    ├── InputError                   exit 2
    │   └── BlobInputError                   malformed BlobRef / tree document / image content
    └── BlobError                    exit 1  (a blob could not be stored, fetched or served)
                                             `.cause` is one of CAUSES below
"""

from __future__ import annotations

from engine.errors import EngineError, InputError

UNREACHABLE = "unreachable"    # connection refused / reset / timed out, retries exhausted
REFUSED = "token refused"      # 401: the server did not accept our token
NOT_PUBLISHED = "not published"  # 404: the server has no such blob
MISMATCH = "digest mismatch"   # the bytes received do not hash to the name (or wrong size)
NO_SPACE = "no space"          # ENOSPC / EDQUOT on the node's disk
WRITE_ERROR = "write error"    # any other OSError writing the cache
TLS = "tls"                    # certificate verification or handshake failed
PROTOCOL = "protocol"          # the server answered something we cannot use
CORRUPT = "corrupt"            # a cached blob no longer matches its name
MISSING = "missing"            # a blob materialize needs is not in the local cache
CAUSES = (UNREACHABLE, REFUSED, NOT_PUBLISHED, MISMATCH, NO_SPACE, WRITE_ERROR, TLS, PROTOCOL,
          CORRUPT, MISSING)

_HINTS = {
    UNREACHABLE: "check that the blob service is running and reachable from this node "
                 "(the coordinator's advertised address, --advertise-addr), then retry",
    REFUSED: "the operation's blob token changed or is wrong: check the token the agent "
             "reads from the store, then retry",
    NOT_PUBLISHED: "the image was not published on this blob service: re-create the "
                   "operation or restart the coordinator so it publishes the image again",
    MISMATCH: "the server sent bytes that do not match the digest; the download was "
              "discarded: check the image on the coordinator, then retry",
    NO_SPACE: "free space on the node (gravity's state dir holds the blob cache), then retry",
    WRITE_ERROR: "check that the node's state dir is writable, then retry",
    TLS: "check --ca-file: it must be the CA that signed the blob service's certificate, "
         "and the certificate must name the address the node connects to",
    PROTOCOL: "check that the URL points at a gravity blob service",
    CORRUPT: "the cached blob was removed; fetch it again",
    MISSING: "fetch the tree's blobs into this cache first (engine.blobs.client.fetch_tree)",
}


class BlobInputError(InputError):
    """A blob reference, a tree document or an image directory is malformed."""


class BlobError(EngineError):
    """A blob could not be stored, served or fetched; names the blob, the server and why."""

    def __init__(self, message: str, *, cause: str, digest: str | None = None,
                 url: str | None = None, detail: str | None = None, hint: str | None = None,
                 **kwargs: object) -> None:
        if cause not in CAUSES:
            raise ValueError(f"unknown blob error cause {cause!r}")
        super().__init__(message, hint=hint or _HINTS[cause], **kwargs)  # type: ignore[arg-type]
        self.cause = cause
        self.digest = digest
        self.url = url
        self.detail = detail if detail is not None else message


def short(digest: str) -> str:
    """`sha256:0123456789ab` — enough of a digest to name a blob in a message."""
    return digest[: len("sha256:") + 12]


def blob_error(cause: str, digest: str | None, url: str | None, detail: str) -> BlobError:
    """A BlobError whose message reads `blob sha256:… from URL: cause: detail`."""
    subject = f"blob {short(digest)}" if digest else "blob"
    where = f" from {url}" if url else ""
    return BlobError(f"{subject}{where}: {cause}: {detail}", cause=cause, digest=digest,
                     url=url, detail=detail)
