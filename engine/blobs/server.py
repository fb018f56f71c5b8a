"""The blob service: `GET`/`HEAD /v1/blobs/sha256/<hex>` served from a cache over HTTP(S) with
`Range` for resumed downloads, `PUT` to hand a blob back; a bearer token required; own threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO

from engine.blobs.cache import CHUNK, BlobCache
from engine.blobs.errors import UNREACHABLE, BlobError, blob_error
from engine.blobs.ref import BlobRef

log = logging.getLogger("gravity.blobs")

BLOB_PATH = re.compile(r"/v1/blobs/sha256/([0-9a-f]{64})")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
HANDSHAKE_TIMEOUT = 30.0
MAX_UPLOAD = 1 << 40  # a PUT larger than this (1 TiB) is refused before reading it


@dataclass(frozen=True)
class Served:
    """One request as the server answered it (for the caller's log and for tests)."""

    method: str
    path: str
    status: int
    range: str | None
    sent: int
    peer: str


def new_token() -> str:
    """A fresh random bearer token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def server_tls(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or newer) from a certificate chain and its key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """`Range` as an inclusive (start, end) within `size`; None to serve the whole blob (no or
    unsupported header, e.g. several ranges); False when unsatisfiable (416)."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if not match or not (match[1] or match[2]):
        return None
    if match[1]:
        start = int(match[1])
        end = min(int(match[2]), size - 1) if match[2] else size - 1
        if match[2] and int(match[2]) < start:
            return None  # not a valid range: ignored, as RFC 9110 asks
        if start >= size:
            return False
        return start, end
    suffix = int(match[2])
    if suffix == 0 or size == 0:
        return False
    return max(0, size - suffix), size - 1


class BlobHandler(BaseHTTPRequestHandler):
    """Answers blob requests; `send_body` is the one place bytes of a blob leave the server."""

    protocol_version = "HTTP/1.1"
    server_version = "gravity-blobs/1"
    sys_version = ""
    timeout = 60  # seconds a connection may stay idle or stalled
    server: _Server

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_PUT(self) -> None:
        """A node hands a blob back (a backup, a report's logs): stored under its digest,
        which the bytes must match; 201 when stored, 200 when already there."""
        blobs = self.server.blobs
        if not blobs.accepts(self.headers.get("Authorization")):
            self.close_connection = True
            self._empty(401, {"WWW-Authenticate": 'Bearer realm="gravity-blobs"'})
            return
        match = BLOB_PATH.fullmatch(self.path)
        length = self.headers.get("Content-Length", "")
        if match is None or not length.isdigit() or int(length) > MAX_UPLOAD:
            self.close_connection = True
            self._empty(400)
            return
        ref = BlobRef(f"sha256:{match[1]}", int(length))
        cache = blobs.cache
        if cache.has(ref):
            self._drain(ref.size)
            self._empty(200)
            return
        try:
            with cache.partial(ref) as part:
                part.reset()
                hasher = hashlib.sha256()
                left = ref.size
                while left:
                    chunk = self.rfile.read(min(CHUNK, left))
                    if not chunk:
                        raise OSError("the upload ended early")
                    hasher.update(chunk)
                    part.append(chunk)
                    left -= len(chunk)
                part.commit(hasher)
        except BlobError:  # the bytes do not match the name, or the disk refused them
            self.close_connection = True
            self._empty(400)
            return
        except OSError:
            self.close_connection = True
            self._empty(400)
            return
        self._empty(201)

    def _drain(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)

    def _answer(self, *, body: bool) -> None:
        blobs = self.server.blobs
        range_header = self.headers.get("Range")
        if not blobs.accepts(self.headers.get("Authorization")):
            self._empty(401, {"WWW-Authenticate": 'Bearer realm="gravity-blobs"'})
            return
        match = BLOB_PATH.fullmatch(self.path)
        found = blobs.cache.lookup(match[1]) if match else None
        if found is None:
            self._empty(404)
            return
        path, size = found
        try:
            f = open(path, "rb", buffering=0)  # noqa: SIM115 (closed below)
        except FileNotFoundError:  # removed by gc since the lookup
            self._empty(404)
            return
        with f:
            span = parse_range(range_header, size)
            if span is False:
                self._empty(416, {"Content-Range": f"bytes */{size}"})
                return
            start, end = (0, size - 1) if span is None else span
            status = 200 if span is None else 206
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"sha256:{match[1]}"')  # type: ignore[index]
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            sent = 0
            if body:
                try:
                    sent = self.send_body(f, start, end - start + 1)
                except OSError:  # the client went away; it resumes with Range
                    self.close_connection = True
            self._record(status, range_header, sent)

    def send_body(self, f: BinaryIO, start: int, length: int) -> int:
        """Send `length` bytes of the open blob from `start`, CHUNK at a time; bytes sent."""
        f.seek(start)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        sent = 0
        while sent < length:
            n = f.readinto(view[: min(CHUNK, length - sent)])  # type: ignore[attr-defined]
            if not n:
                raise OSError("the blob file is shorter than it was")
            self.wfile.write(view[:n])
            sent += n
        return sent

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self._record(status, self.headers.get("Range"), 0)

    def _record(self, status: int, range_header: str | None, sent: int) -> None:
        self.server.blobs.record(Served(self.command, self.path, status, range_header, sent,
                                        self.client_address[0]))

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # every node of a cluster may connect at once

    def __init__(self, blobs: BlobServer, host: str, port: int) -> None:
        self.blobs = blobs
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), blobs.handler_class)

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn = request
        try:
            if self.blobs.tls is not None:
                request.settimeout(HANDSHAKE_TIMEOUT)
                conn = self.blobs.tls.wrap_socket(request, server_side=True)
            self.blobs.track(conn, True)
            super().finish_request(conn, client_address)
        except (OSError, ssl.SSLError) as exc:
            log.debug("blob service: connection from %s: %s", client_address[0], exc)
        finally:
            self.blobs.track(conn, False)
            if conn is not request:
                with contextlib.suppress(OSError):
                    conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("blob service: error serving %s", client_address[0], exc_info=True)


class BlobServer:
    """Serves a cache's blobs to holders of an accepted token; `start()` returns the URL.

    Plain HTTP when `tls` is None (the caller should log that), HTTPS with the given server
    context otherwise. Tokens can be replaced while it runs (`set_tokens`).
    """

    handler_class: type[BlobHandler] = BlobHandler

    def __init__(self, cache: BlobCache, host: str = "0.0.0.0", port: int = 0,
                 tls: ssl.SSLContext | None = None, *, tokens: Iterable[str] = (),
                 on_request: Callable[[Served], None] | None = None) -> None:
        self.cache, self.host, self.port, self.tls = cache, host, port, tls
        self.on_request = on_request
        self._tokens: tuple[bytes, ...] = ()
        self.set_tokens(tokens)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[Any] = set()
        self._lock = threading.Lock()

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def url(self) -> str:
        """The URL of the bound address (with port 0 resolved once started)."""
        return self.url_for(self.host)

    def url_for(self, host: str) -> str:
        """The URL under which clients reach this server at `host` (an advertised address)."""
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{shown}:{self.port}"

    # -- tokens --------------------------------------------------------------------------------

    def set_tokens(self, tokens: Iterable[str]) -> None:
        """Replace the accepted tokens (takes effect for the next request)."""
        items = tuple(t.encode() for t in tokens)
        if any(not t or any(c <= 32 or c >= 127 for c in t) for t in items):
            raise ValueError("a blob token is non-empty printable ASCII without spaces")
        self._tokens = items

    def add_token(self, token: str) -> None:
        self.set_tokens([*(t.decode() for t in self._tokens), token])

    def remove_token(self, token: str) -> None:
        self.set_tokens(t.decode() for t in self._tokens if t != token.encode())

    def accepts(self, authorization: str | None) -> bool:
        """Constant-time check of an `Authorization: Bearer <token>` header value."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        given = authorization[len("Bearer "):].strip().encode("latin-1", "replace")
        ok = False
        for token in self._tokens:  # compare against every token: no early exit
            ok |= hmac.compare_digest(given, token)
        return ok

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> str:
        """Bind and serve in a background thread; returns the bound URL."""
        if self._server is not None:
            return self.url
        try:
            self._server = _Server(self, self.host, self.port)
        except OSError as exc:
            raise blob_error(UNREACHABLE, None, f"{self.scheme}://{self.host}:{self.port}",
                             f"cannot listen: {exc.strerror or exc}") from exc
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="gravity-blob-server", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop accepting, cut the connections in flight (clients resume elsewhere), close."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> BlobServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def track(self, conn: Any, live: bool) -> None:
        with self._lock:
            (self._conns.add if live else self._conns.discard)(conn)

    def record(self, served: Served) -> None:
        if self.on_request is not None:
            self.on_request(served)


def advertise_address(peer_host: str, peer_port: int) -> str:
    """The local IP address this machine uses to reach `peer_host` (no packet is sent: a UDP
    socket is connected, which only picks the route and source address)."""
    try:
        infos = socket.getaddrinfo(peer_host, peer_port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            return str(sock.getsockname()[0])
    except OSError as exc:
        raise BlobError(f"cannot find the address to advertise toward {peer_host}:{peer_port}: "
                        f"{exc.strerror or exc}", cause=UNREACHABLE,
                        url=f"{peer_host}:{peer_port}",
                        hint="give the blob service's address with --advertise-addr") from exc
