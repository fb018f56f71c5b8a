"""Fetch blobs from a blob service into a local cache: streamed in bounded chunks into a locked
partial file, resumed with Range after a crash or a cut connection, verified, then renamed.
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tenacity

from engine.blobs.cache import CHUNK, BlobCache, Partial, io_error
from engine.blobs.errors import (
    MISMATCH,
    NOT_PUBLISHED,
    PROTOCOL,
    REFUSED,
    TLS,
    UNREACHABLE,
    BlobError,
    blob_error,
)
from engine.blobs.publish import load_tree
from engine.blobs.ref import BlobRef
from engine.blobs.tree import Tree

DEFAULT_TIMEOUT = 30.0  # seconds for connecting and for each read: a stalled server is retried
ATTEMPTS = 5  # consecutive attempts that bring no new byte before a fetch gives up
BACKOFF = 0.5  # first wait between attempts (seconds), doubling up to MAX_BACKOFF
MAX_BACKOFF = 8.0


@dataclass(frozen=True)
class Endpoint:
    """Where and how to ask for blobs: the service's base URL, its token and its CA."""

    base_url: str
    token: str
    ca_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def connect(self, digest: str) -> http.client.HTTPConnection:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise blob_error(PROTOCOL, digest, self.base_url,
                             "the blob service URL must be http://HOST:PORT or https://HOST:PORT")
        if parts.scheme == "http":
            return http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise blob_error(TLS, digest, self.base_url,
                             f"cannot load the CA file {self.ca_file}: {exc}") from exc
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=self.timeout,
                                           context=ctx)

    def path(self, ref: BlobRef) -> str:
        return f"{urlsplit(self.base_url).path.rstrip('/')}/v1/blobs/sha256/{ref.hex}"


def _tls_fatal(exc: BaseException) -> bool:
    """A TLS failure that another attempt would repeat (not a connection cut under TLS)."""
    return isinstance(exc, ssl.SSLError) and not isinstance(
        exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError)


class _Transient(Exception):
    """An attempt failed in a way another attempt may not (connection cut, 5xx, timeout)."""

    def __init__(self, error: BlobError) -> None:
        super().__init__(error.message)
        self.error = error


def fetch(ref: BlobRef, *, base_url: str, token: str, cache: BlobCache,
          ca_file: str | None = None, timeout: float = DEFAULT_TIMEOUT,
          attempts: int = ATTEMPTS, backoff: float = BACKOFF) -> Path:
    """The blob's path in `cache`, downloading it first unless the cache has it verified.

    Memory stays at one CHUNK whatever the blob's size. A partial file left by a killed process
    or a cut connection is resumed with `Range: bytes=N-`; up to `attempts` consecutive
    attempts without progress are made (with exponential backoff) before giving up. Every
    failure is a BlobError naming the blob, the server and the cause; a download that does not
    verify, or that the disk cannot hold, is discarded.
    """
    endpoint = Endpoint(base_url, token, ca_file, timeout)
    for retry_whole in (True, False):
        if cache.has(ref):
            return cache.path(ref)
        resumed = False
        try:
            with cache.partial(ref) as part:
                if cache.has(ref):  # another writer finished while we waited for the lock
                    return cache.path(ref)
                download = _Download(ref, part, endpoint, attempts, backoff)
                resumed = download.resumed
                return download.run()
        except OSError as exc:  # reading back a partial file
            raise io_error(exc, ref.digest, f"reading {cache.partial_path(ref)}") from exc
        except BlobError as exc:
            if exc.cause == MISMATCH and retry_whole and resumed:
                continue  # the partial a crash left was bad: start once more from byte 0
            if exc.url is None:
                raise blob_error(exc.cause, ref.digest, base_url, exc.detail) from exc
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def fetch_tree(tree_ref: BlobRef, *, subpath: str | None = None, base_url: str, token: str,
               cache: BlobCache, ca_file: str | None = None, timeout: float = DEFAULT_TIMEOUT,
               attempts: int = ATTEMPTS, backoff: float = BACKOFF) -> Tree:
    """Fetch a tree blob and every blob of its files (only under `subpath` if given) and
    return that (sub)tree; then `materialize(cache, tree_ref, dest, subpath)` builds it."""
    kwargs: dict[str, Any] = {"base_url": base_url, "token": token, "cache": cache,
                              "ca_file": ca_file, "timeout": timeout, "attempts": attempts,
                              "backoff": backoff}
    fetch(tree_ref, **kwargs)
    tree = load_tree(cache, tree_ref)
    if subpath:
        tree = tree.subtree(subpath)[0]
    for blob in sorted(tree.blobs(), key=lambda b: b.digest):
        fetch(blob, **kwargs)
    return tree


def upload(path: Path, *, base_url: str, token: str, ca_file: str | None = None,
           timeout: float = DEFAULT_TIMEOUT, attempts: int = ATTEMPTS,
           backoff: float = BACKOFF) -> BlobRef:
    """Hand a file to the blob service (`PUT`, streamed): the server keeps it under its
    digest, which it checks. Retried like a fetch; returns the blob's name."""
    try:
        with path.open("rb") as f:
            hasher, size = hashlib.sha256(), 0
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise io_error(exc, None, f"reading {path}") from exc
    ref = BlobRef(f"sha256:{hasher.hexdigest()}", size)
    endpoint = Endpoint(base_url, token, ca_file, timeout)
    for attempt in range(1, attempts + 1):
        try:
            conn = endpoint.connect(ref.digest)
            with path.open("rb") as body:
                conn.request("PUT", endpoint.path(ref), body=body, headers={
                    "Authorization": f"Bearer {token}", "Content-Length": str(size),
                    "Content-Type": "application/octet-stream"})
                resp = conn.getresponse()
                resp.read()
            conn.close()
        except (OSError, http.client.HTTPException) as exc:
            if attempt == attempts:
                raise blob_error(UNREACHABLE, ref.digest, base_url, _reason(exc)) from exc
            time.sleep(min(MAX_BACKOFF, backoff * 2 ** (attempt - 1)))
            continue
        if resp.status in (200, 201):
            return ref
        if resp.status == 401:
            raise blob_error(REFUSED, ref.digest, base_url, "the upload's token was refused")
        raise blob_error(PROTOCOL, ref.digest, base_url,
                         f"the service answered {resp.status} to the upload")
    raise AssertionError("unreachable")  # pragma: no cover


class _Download:
    """One blob's transfer into its locked partial file, over as many attempts as it takes."""

    def __init__(self, ref: BlobRef, part: Partial, endpoint: Endpoint, attempts: int,
                 backoff: float) -> None:
        self.ref, self.part, self.endpoint = ref, part, endpoint
        self.attempts, self.backoff = attempts, backoff
        self.stalls = 0
        self.have = part.size()
        if self.have > ref.size:
            part.reset()
            self.have = 0
        self.resumed = self.have > 0
        self.hasher = part.hash_so_far() if self.have else hashlib.sha256()

    def run(self) -> Path:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=lambda _state: self.stalls >= self.attempts,
            wait=tenacity.wait_exponential(multiplier=self.backoff, max=MAX_BACKOFF),
            reraise=True)
        try:
            try:
                for attempt in retrying:
                    with attempt:
                        self._attempt()
            except _Transient as exc:
                raise exc.error from None
            return self.part.commit(self.hasher)
        except BlobError as exc:
            # Only a transfer cut short is worth resuming later; anything else leaves nothing.
            if exc.cause != UNREACHABLE or self.have == 0:
                self.part.discard()
            raise

    def _attempt(self) -> None:
        before = self.have
        try:
            self._transfer()
        except _Transient:
            self.stalls = 0 if self.have > before else self.stalls + 1
            raise

    def _restart(self) -> None:
        self.part.reset()
        self.have = 0
        self.hasher = hashlib.sha256()

    def _fail(self, cause: str, detail: str) -> BlobError:
        return blob_error(cause, self.ref.digest, self.endpoint.base_url, detail)

    def _transfer(self) -> None:
        ref = self.ref
        if self.have == ref.size:
            return
        conn = self.endpoint.connect(ref.digest)
        headers = {"Authorization": f"Bearer {self.endpoint.token}",
                   "User-Agent": "gravity-blobs/1"}
        if self.have:
            headers["Range"] = f"bytes={self.have}-"
        try:
            try:
                conn.request("GET", self.endpoint.path(ref), headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, ssl.SSLCertVerificationError):
                    ca = self.endpoint.ca_file or "the system's CAs"
                    raise self._fail(TLS, f"the server's certificate did not verify against "
                                          f"{ca}: {exc.verify_message}") from exc
                if _tls_fatal(exc):
                    raise self._fail(TLS, f"the TLS handshake failed: {exc}") from exc
                raise _Transient(self._fail(UNREACHABLE, _reason(exc))) from exc
            self._check_status(resp)
            self._stream(resp)
        finally:
            conn.close()
        if self.have < ref.size:
            raise _Transient(self._fail(UNREACHABLE, f"the connection ended after {self.have} "
                                                     f"of {ref.size} bytes"))

    def _check_status(self, resp: http.client.HTTPResponse) -> None:
        status = resp.status
        if status == 401:
            raise self._fail(REFUSED, "the server refused the token (401)")
        if status == 404:
            raise self._fail(NOT_PUBLISHED, "the server has no such blob (404)")
        if status == 416 or (status == 200 and self.have):
            self._restart()  # the server cannot or will not resume: take it from the start
            if status == 416:
                raise _Transient(self._fail(PROTOCOL, "the server refused the resume (416)"))
        elif status == 206:
            want = f"bytes {self.have}-{self.ref.size - 1}/{self.ref.size}"
            if resp.getheader("Content-Range") != want:
                self.part.discard()
                raise self._fail(MISMATCH, f"the server answered Content-Range "
                                           f"{resp.getheader('Content-Range')!r}, not {want!r}")
        elif status >= 500:
            raise _Transient(self._fail(UNREACHABLE, f"the server answered {status}"))
        elif status != 200:
            raise self._fail(PROTOCOL, f"unexpected answer {status} {resp.reason}")
        length = resp.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) != self.ref.size - self.have:
            self.part.discard()
            raise self._fail(MISMATCH, f"the server offers {length} bytes from byte {self.have}, "
                                       f"the blob has {self.ref.size}; nothing was kept")

    def _stream(self, resp: http.client.HTTPResponse) -> None:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            try:
                n = resp.readinto(view)
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(self._fail(UNREACHABLE, _reason(exc))) from exc
            if not n:
                return
            if self.have + n > self.ref.size:
                self.part.discard()
                raise self._fail(MISMATCH, f"the server sent more than {self.ref.size} bytes; "
                                           "nothing was kept")
            self.part.append(view[:n])  # a write error discards the partial and raises
            self.hasher.update(view[:n])
            self.have += n


def _reason(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection was cut mid-transfer"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
