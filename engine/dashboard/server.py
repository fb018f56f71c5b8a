"""The dashboard's HTTP server: static page, JSON API and a server-sent-events stream, GET only.
Stdlib `http.server` with a bounded worker pool, so per-thread store connections stay bounded.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from engine import agent_protocol as proto
from engine.errors import EngineError, InputError, NotFound, StoreUnavailable
from engine.events import Durations, transition_event
from engine.executors.runtime import phase_log_path, read_tail
from engine.presentation import idle_note, operation_dict, plan_document
from engine.store.base import MAX_SEQ, Store, parse_seq
from engine.views import operation_driver, plan_view, resolve_operation

# Default and largest tail of a phase log the API returns, in bytes.
LOG_TAIL = 64 * 1024
LOG_TAIL_MAX = 1024 * 1024
# How long one store wait of the event stream lasts; also how fast a stream notices shutdown.
STREAM_POLL = 1.0
# Concurrent event streams (one per open page); more are refused with 503 and retried.
MAX_STREAMS = 16
# Worker threads. The SQLite store keeps one connection per thread until it is closed, so a
# thread-per-request server would leak a connection per request; a pool reuses them.
WORKERS = MAX_STREAMS + 8
STATIC_NAME = re.compile(r"^[a-z0-9_-]+\.(html|js|css)$")
CONTENT_TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
                 "css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class BadRequest(InputError):
    """A malformed API request (a missing parameter, a phase ID that is not a plain path)."""


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (loopback) into (host, port); ValueError if not."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8470, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


# -- the API, as functions of the store ------------------------------------------------------
def operations_doc(store: Store) -> dict[str, Any]:
    """Every operation, newest first, marking the one holding the cluster lock; values
    redacted (the dashboard never serves them)."""
    active = store.active_operation_id()
    ops = [dict(operation_dict(op), active=op.id == active)
           for op in reversed(store.list_operations())]
    return {"active": active, "operations": ops}


def plan_doc(store: Store, operation_id: str | None) -> dict[str, Any]:
    """`presentation.plan_document` plus `last_seq`, where the page's event stream picks up,
    and `idle`, the line saying nothing moves a failed operation now (or null).

    `last_seq` is read before the states, so no transition falls between the two; one that
    is both in the document and streamed again carries a version the page already has.
    """
    op = resolve_operation(store, operation_id)
    last_seq = store.last_seq(op.id)
    view = plan_view(store, op, with_driver=True)
    doc = plan_document(view)
    doc["last_seq"] = last_seq
    doc["idle"] = idle_note(view)
    return doc


def clean_phase_id(asked: str | None) -> str:
    """A phase ID safe to turn into a path: absolute, plain segments, no `..`."""
    if not asked:
        raise BadRequest("the phase parameter is required, e.g. phase=/init")
    phase_id = asked if asked.startswith("/") else "/" + asked
    segments = phase_id.split("/")[1:]
    if any(seg in ("", ".", "..") or "\\" in seg or "\x00" in seg for seg in segments):
        raise BadRequest(f"not a phase ID: {asked!r}")
    return phase_id


def log_doc(store: Store, state_dir: Path, operation_id: str | None, asked: str | None,
            limit: int = LOG_TAIL) -> dict[str, Any]:
    """The tail of one phase's output log, with its state and error.

    Only phases of the operation's plan are served, and the resolved file must lie under
    `<state-dir>/logs/`, so no request can read any other file. A phase an agent ran on
    another host is read from the tail its node shipped to the store.
    """
    phase_id = clean_phase_id(asked)
    op = resolve_operation(store, operation_id)
    if phase_id not in {s.id for s in store.load_specs(op.id)}:
        raise NotFound(f"operation {op.id} has no phase {phase_id}", operation_id=op.id,
                       phase_id=phase_id)
    logs = (state_dir / "logs").resolve()
    path = phase_log_path(state_dir, op.id, phase_id).resolve()
    if not path.is_relative_to(logs):
        raise BadRequest(f"not a phase ID: {asked!r}")
    state = store.get_state(op.id, phase_id)
    doc: dict[str, Any] = {"operation": op.id, "phase": phase_id, "path": str(path),
                           "state": state.state.value, "error": state.error,
                           "exists": False, "size": 0, "truncated": False, "text": ""}
    found = read_tail(path, limit)
    if found is not None:
        text, size, truncated = found
        doc.update(exists=True, size=size, truncated=truncated, text=text)
        return doc
    shipped = proto.shipped_output(store, op.id, phase_id)
    if shipped is not None:  # ran on another host: what its node sent back
        text = shipped.tail[-limit:]
        doc.update(exists=True, path=shipped.where, size=shipped.size,
                   truncated=shipped.truncated or len(text) < len(shipped.tail), text=text)
    return doc


def stream_start(last_event_id: str | None, after: str | None) -> int:
    """Where an event stream starts: the browser's Last-Event-ID, else `after=`, else 0.

    Anything but a sequence number from 0 to MAX_SEQ is a BadRequest (400), answered
    before the stream's headers go out.
    """
    source, text = (("the Last-Event-ID header", last_event_id) if last_event_id
                    else ("the after parameter", after or "0"))
    seq = parse_seq(text.strip())
    if seq is None:
        raise BadRequest(f"{source} must be a changelog sequence number from 0 to {MAX_SEQ}, "
                         f"got {text[:40]!r}")
    return seq


# -- HTTP -------------------------------------------------------------------------------------
class DashboardServer(HTTPServer):
    """Serves the dashboard from a shared Store; each request runs on a pooled worker thread."""

    def __init__(self, address: tuple[str, int], store: Store, state_dir: Path,
                 default_operation: str | None = None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.store = store
        self.state_dir = state_dir
        self.default_operation = default_operation
        self.loopback = is_loopback(address[0])
        self.stopping = threading.Event()
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="dashboard")
        # Last: a failed bind calls server_close(), which needs everything above.
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return url_of(str(host), int(port))

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._work, request, client_address)

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # one bad request must not stop the server
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def stop(self) -> None:
        """End event streams and the serve loop; call from any thread but the serving one."""
        self.stopping.set()
        self.shutdown()

    def server_close(self) -> None:
        self.stopping.set()
        super().server_close()
        self.pool.shutdown(wait=True, cancel_futures=True)


class Handler(BaseHTTPRequestHandler):
    """Routes GET requests; every other method is answered 405, the dashboard changes nothing."""

    server: DashboardServer
    server_version = "gravity-dashboard"
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the dashboard prints no access log."""

    # -- plumbing ---------------------------------------------------------------------------
    def _headers(self, status: int, content_type: str, length: int | None = None,
                 extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str,
              extra: dict[str, str] | None = None) -> None:
        self._headers(status, content_type, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: Any) -> None:
        body = json.dumps(doc, ensure_ascii=False).encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _error(self, status: HTTPStatus, message: str, hint: str | None = None) -> None:
        self._json(status, {"error": message, "hint": hint, "status": int(status)})

    def _host_allowed(self) -> bool:
        """On loopback, only loopback Host names: a DNS-rebinding page cannot read the API."""
        if not self.server.loopback:
            return True
        host = self.headers.get("Host")
        if not host:
            return True
        return (urlsplit("//" + host).hostname or "") in LOOPBACK_NAMES

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED,
                   b'{"error": "the dashboard is read-only: only GET is allowed"}',
                   "application/json", {"Allow": "GET"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _refuse

    # -- routes -----------------------------------------------------------------------------
    def do_GET(self) -> None:
        if not self._host_allowed():
            self._error(HTTPStatus.FORBIDDEN, "unexpected Host header; open the dashboard "
                        "at the address it printed")
            return
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        routes: dict[str, Callable[[dict[str, str]], None]] = {
            "/": lambda q: self._static("index.html"),
            "/index.html": lambda q: self._static("index.html"),
            "/api/operations": lambda q: self._json(200, operations_doc(self.server.store)),
            "/api/plan": lambda q: self._json(200, plan_doc(self.server.store, self._op(q))),
            "/api/log": self._log,
            "/api/events": self._events,
        }
        try:
            if url.path.startswith("/static/"):
                self._static(url.path.removeprefix("/static/"))
            elif url.path in routes:
                routes[url.path](query)
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")
        except (BrokenPipeError, ConnectionResetError):
            raise
        except NotFound as exc:
            self._error(HTTPStatus.NOT_FOUND, exc.message, exc.hint)
        except InputError as exc:
            self._error(HTTPStatus.BAD_REQUEST, exc.message, exc.hint)
        except StoreUnavailable as exc:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, exc.message, exc.hint)
        except EngineError as exc:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, exc.message, exc.hint)
        except Exception as exc:  # a bug: answer 500 and log it, rather than drop the socket
            self.server.handle_error(self.request, self.client_address)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {exc!r}")

    def _op(self, query: dict[str, str]) -> str | None:
        return query.get("op") or self.server.default_operation

    def _static(self, name: str) -> None:
        if not STATIC_NAME.match(name):
            self._error(HTTPStatus.NOT_FOUND, f"no such file: {name}")
            return
        item = resources.files("engine.dashboard").joinpath("static", name)
        if not item.is_file():
            self._error(HTTPStatus.NOT_FOUND, f"no such file: {name}")
            return
        extra = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}
        self._send(200, item.read_bytes(), CONTENT_TYPES[name.rsplit(".", 1)[1]], extra)

    def _log(self, query: dict[str, str]) -> None:
        limit = query.get("limit", "")
        size = min(int(limit), LOG_TAIL_MAX) if limit.isdigit() else LOG_TAIL
        self._json(200, log_doc(self.server.store, self.server.state_dir, self._op(query),
                                query.get("phase"), size))

    def _events(self, query: dict[str, str]) -> None:
        """Server-sent events: `change` per changelog record, `operation` when it changes.

        Resumes after `after=SEQ` or the browser's Last-Event-ID. Ends with `end` once the
        operation is finished (nothing can change any more).
        """
        store = self.server.store
        op = resolve_operation(store, self._op(query))
        after = stream_start(self.headers.get("Last-Event-ID"), query.get("after"))
        if not self.server.streams.acquire(blocking=False):
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "too many open dashboard pages")
            return
        try:
            self._headers(200, "text/event-stream; charset=utf-8")
            self._stream(store, op.id, after)
        except EngineError:
            pass  # headers are out; the browser reconnects with Last-Event-ID
        finally:
            self.server.streams.release()

    def _stream(self, store: Store, operation_id: str, after: int) -> None:
        self.wfile.write(b"retry: 2000\n\n")
        seen: tuple[Any, ...] | None = None
        durations = Durations()  # of the attempts whose start this stream sent
        while not self.server.stopping.is_set():
            chunks = []
            for rec in store.wait_changes(operation_id, after, timeout=STREAM_POLL):
                after = rec.seq
                # The event log's own form (`gravity events -o json`, the JSONL file).
                event = transition_event(rec, durations.of(rec))
                chunks.append(f"id: {rec.seq}\nevent: change\ndata: "
                              f"{json.dumps(event, ensure_ascii=False)}\n\n")
            current = store.get_operation(operation_id)
            # Whether anyone drives it: a plan whose driver died reads differently (a
            # failed phase's retry will not come), so the page reloads it on a change.
            driven = operation_driver(store, operation_id) is not None
            if (current.state, current.updated, current.note, driven) != seen:
                seen = (current.state, current.updated, current.note, driven)
                doc = dict(operation_dict(current), driven=driven)
                chunks.append(f"event: operation\ndata: {json.dumps(doc)}\n\n")
            if current.state.finished and not store.changelog(operation_id, after):
                chunks.append("event: end\ndata: {}\n\n")
                self.wfile.write("".join(chunks).encode())
                return
            # A comment line when idle: finds closed pages within a poll, frees the slot.
            self.wfile.write(("".join(chunks) or ": idle\n\n").encode())
