"""The etcd connection under EtcdStore: URL parsing, TLS and auth, retries with patience, paging.
Only this module and its siblings (engine/store/etcd*.py) talk to pyetcd and gRPC directly.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from pyetcd import Endpoint, MultiEndpointEtcd3Client, etcdrpc
from pyetcd import transactions as tx

from engine.errors import StoreConfigError, StoreError, StoreUnavailable
from engine.store.etcd_errors import (
    CAUGHT,
    channel_gone,
    code_and_details,
    is_cut_handshake,
    is_handshake_timeout,
    is_token_expired,
    translate,
)

T = TypeVar("T")

DEFAULT_PREFIX = "/gravity"
DEFAULT_PORT = 2379
DEFAULT_PATIENCE = 60.0
# How long opening the store retries a refused connection before saying so.
OPEN_PATIENCE = 5.0
# One RPC's deadline; a longer outage is ridden out by the retry loop, not by one call.
RPC_TIMEOUT = 10.0
# Waits between attempts of a call that met a transient failure: the first, the longest, and
# the random jitter added to each.
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
RETRY_JITTER = 0.1
# Keys per range request: the first page of a scan holds PAGE; each later one as many as
# fill about PAGE_BYTES at the sizes seen so far, up to MAX_PAGE. etcd counts the whole rest
# of the range for every page, so the fewer pages the better: 100,000 state keys took 1.7 s
# in pages of 1,000, 0.37 s in pages of 20,000 and 0.22 s in one. PAGE_BYTES is half of
# gRPC's message limit (below), so a page of values twice the first page's average fits.
PAGE = 500
MAX_PAGE = 250_000
PAGE_BYTES = 32 * 2**20
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_.~-]+$")
# Reconnect fast after an etcd restart (gRPC's default backoff grows to two minutes).
GRPC_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
# gRPC's Python wakes every thread that waits on a stream (our watches, the lease keep-alive)
# every 0.1 s, so that a main thread could take a signal (grpc/grpc#19464): ~0.06 % of a core
# per stream, most of what an idle agent cost. Streams are read on daemon threads here, which
# never take signals (no main thread waits on one). (Read by grpc at every wait.)
STREAM_WAKE = 5.0
_grpc_common = getattr(grpc, "_common", None)
if _grpc_common is not None and getattr(_grpc_common, "MAXIMUM_WAIT_TIMEOUT", 0) < STREAM_WAKE:
    _grpc_common.MAXIMUM_WAIT_TIMEOUT = STREAM_WAKE


@dataclass(frozen=True)
class EtcdConfig:
    """Everything needed to reach one etcd cluster, parsed and checked before connecting.

    `patience` is how long transient failures (refused connection, leader
    election, timeouts) are retried before StoreUnavailable is raised.
    """

    url: str
    endpoints: tuple[tuple[str, int], ...]
    prefix: str = DEFAULT_PREFIX
    secure: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = None
    patience: float = DEFAULT_PATIENCE


def _bad(url: str, why: str) -> StoreConfigError:
    return StoreConfigError(
        f"etcd store URL {url!r}: {why}",
        hint="use etcd://host:2379[,host2:2379][/prefix] (etcds:// for TLS)",
    )


def parse_url(url: str, *, cacert: str | None = None, cert: str | None = None,
              key: str | None = None, env: dict[str, str] | None = None) -> EtcdConfig:
    """Check and split an `etcd://` / `etcds://` URL; StoreConfigError says what is wrong."""
    env = dict(os.environ) if env is None else env
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("etcd", "etcds"):
        raise _bad(url, "the scheme must be etcd:// or etcds://")
    if "?" in rest or "#" in rest:
        raise _bad(url, "query strings and fragments are not supported")
    if "@" in rest:
        raise StoreConfigError(
            f"etcd store URL {url!r} carries credentials",
            hint="put them in GRAVITY_ETCD_USER and GRAVITY_ETCD_PASSWORD instead",
        )
    hosts, slash, path = rest.partition("/")
    endpoints = tuple(_parse_endpoint(url, h) for h in hosts.split(","))
    if len(set(endpoints)) != len(endpoints):
        raise _bad(url, "an endpoint is listed twice")
    prefix = _parse_prefix(url, "/" + path if slash else "")
    secure = scheme == "etcds"
    if not secure and (cacert or cert or key):
        raise StoreConfigError(
            f"TLS files were given but {url!r} is a plain etcd:// URL",
            hint="use etcds:// to talk TLS, or drop --etcd-cacert/--etcd-cert/--etcd-key",
        )
    if bool(cert) != bool(key):
        raise StoreConfigError("--etcd-cert and --etcd-key must be given together",
                               hint="pass both files of the client key pair, or neither")
    user, password = env.get("GRAVITY_ETCD_USER") or None, env.get("GRAVITY_ETCD_PASSWORD")
    if bool(user) != (password is not None):
        raise StoreConfigError(
            "GRAVITY_ETCD_USER and GRAVITY_ETCD_PASSWORD must be set together",
            hint="export both, or neither for an etcd without authentication",
        )
    patience = _parse_patience(env.get("GRAVITY_ETCD_PATIENCE"))
    return EtcdConfig(url=url, endpoints=endpoints, prefix=prefix, secure=secure,
                      cacert=cacert, cert=cert, key=key, user=user, password=password,
                      patience=patience)


def _parse_endpoint(url: str, text: str) -> tuple[str, int]:
    if not text:
        raise _bad(url, "an endpoint is empty (expected host:port)")
    if text.startswith("[") or "]" in text:
        host, closed, port_text = text.partition("]")
        if not text.startswith("[") or not closed or "[" in host[1:]:
            raise _bad(url, f"endpoint {text!r} has unbalanced brackets (expected host:port "
                       "or [IPv6]:port, e.g. [::1]:2379)")
        host += "]"
        if port_text and not port_text.startswith(":"):
            raise _bad(url, f"endpoint {text!r} is not host:port")
        port_text = port_text[1:]
        has_port = bool(port_text) or text.endswith(":")
    else:
        host, colon, port_text = text.partition(":")
        has_port = bool(colon)
    if not _HOST.match(host):
        raise _bad(url, f"endpoint {text!r} has no valid host name")
    if not has_port:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _bad(url, f"endpoint {text!r} has port {port_text!r}; expected 1-65535")
    return host, int(port_text)


def _parse_prefix(url: str, path: str) -> str:
    if path in ("", "/"):
        return DEFAULT_PREFIX
    segments = path[1:].split("/")
    for seg in segments:
        if seg in ("", ".", ".."):
            raise _bad(url, f"prefix {path!r} must be a clean absolute path "
                       "(no empty, '.' or '..' segments, no trailing slash)")
        if not _SEGMENT.match(seg):
            raise _bad(url, f"prefix segment {seg!r} may only hold letters, digits and . _ ~ -")
    return path


def _parse_patience(text: str | None) -> float:
    if text is None or text == "":
        return DEFAULT_PATIENCE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise StoreConfigError(f"GRAVITY_ETCD_PATIENCE={text!r} is not a number of seconds",
                               hint="e.g. GRAVITY_ETCD_PATIENCE=60")
    return value


class LeaseCompare(tx.BaseCompare):
    """Compare on the lease a key is bound to (pyetcd lacks this etcd target)."""

    def build_compare(self, compare: Any) -> None:
        compare.target = etcdrpc.Compare.LEASE
        compare.lease = int(self.value)


class Connection:
    """A pyetcd client plus the retry policy, re-login and paging the store needs."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self.url = config.url
        self._lock = threading.Lock()
        self._client: MultiEndpointEtcd3Client | None = None
        self._users: dict[int, int] = {}  # id(client) -> calls using it now
        self._retired: list[MultiEndpointEtcd3Client] = []
        self._closed = False

    # -- setup ----------------------------------------------------------------------------
    def _credentials(self) -> grpc.ChannelCredentials | None:
        cfg = self.config
        if not cfg.secure:
            return None
        files: list[bytes | None] = []
        for flag, path in (("--etcd-cacert", cfg.cacert), ("--etcd-key", cfg.key),
                           ("--etcd-cert", cfg.cert)):
            if path is None:
                files.append(None)
                continue
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise StoreConfigError(f"cannot read {flag} file {path}: {exc}",
                                       hint="check the path and its permissions") from exc
            if b"-----BEGIN" not in data:
                raise StoreConfigError(f"{flag} file {path} is not PEM",
                                       hint="pass the PEM file etcd's TLS setup uses")
            files.append(data)
        return grpc.ssl_channel_credentials(*files)

    def _build(self) -> MultiEndpointEtcd3Client:
        creds = self._credentials()
        endpoints = [
            Endpoint(host, port, secure=self.config.secure, creds=creds, time_retry=0.5,
                     opts=GRPC_OPTIONS)
            for host, port in self.config.endpoints
        ]
        client = MultiEndpointEtcd3Client(endpoints=endpoints, timeout=RPC_TIMEOUT,
                                          failover=True)
        if self.config.user:
            # Log in ourselves: pyetcd's call credentials need a TLS channel, while the
            # token as plain metadata works on both kinds.
            request = etcdrpc.AuthenticateRequest(name=self.config.user,
                                                  password=self.config.password or "")
            try:
                response = client.authstub.Authenticate(request, RPC_TIMEOUT)
            except grpc.RpcError as exc:
                if "authentication is not enabled" in code_and_details(exc)[1]:
                    return client  # like etcdctl: credentials for an open etcd are unused
                client.close()
                raise
            client.metadata = (("token", response.token),)
        return client

    @contextlib.contextmanager
    def using(self) -> Iterator[MultiEndpointEtcd3Client]:
        """The current client, kept open while in use.

        A replaced or closed client is closed only once nobody uses it any more:
        gRPC crashes the process when a stub is made on a closed channel.
        """
        with self._lock:
            if self._closed:
                raise StoreError(f"the etcd store {self.url} is closed",
                                 hint="open the store again")
            if self._client is None:
                self._client = self._build()
            client = self._client
            self._users[id(client)] = self._users.get(id(client), 0) + 1
        try:
            yield client
        finally:
            with self._lock:
                left = self._users.pop(id(client)) - 1
                if left:
                    self._users[id(client)] = left
            self._reap()

    def _reap(self) -> None:
        with self._lock:
            idle = [c for c in self._retired if id(c) not in self._users]
            self._retired = [c for c in self._retired if id(c) in self._users]
        for client in idle:
            client.close()

    def relogin(self) -> None:
        """Drop the client so the next call logs in again (the auth token expired)."""
        with self._lock:
            if self._client is not None:
                self._retired.append(self._client)
                self._client = None
        self._reap()

    def open(self, probe: Callable[[MultiEndpointEtcd3Client], T]) -> T:
        """Run `probe` (one cheap linearizable read) as the first call, waiting at most
        OPEN_PATIENCE, so bad credentials, TLS or no server fail fast."""
        try:
            return self.call("connecting", probe,
                             patience=min(OPEN_PATIENCE, self.config.patience))
        except StoreUnavailable as exc:
            if is_handshake_timeout(exc.message) and self.config.patience > OPEN_PATIENCE:
                # slow, not wrong: the server is there but busy; wait as for any outage
                return self.call("connecting", probe, patience=self.config.patience)
            if not is_cut_handshake(exc.message):
                raise
            raise StoreConfigError(
                f"etcd at {self.url} keeps cutting the TLS handshake: {exc.message}",
                hint="use etcds:// only for a TLS server and etcd:// for a plain one; "
                "check --etcd-cacert/--etcd-cert/--etcd-key",
            ) from exc

    def close(self) -> None:
        """Close the connection; a call still running finishes on it first."""
        with self._lock:
            self._closed = True
            if self._client is not None:
                self._retired.append(self._client)
                self._client = None
        self._reap()

    # -- retries --------------------------------------------------------------------------
    def call(self, what: str, fn: Callable[[MultiEndpointEtcd3Client], T], *,
             patience: float | None = None) -> T:
        """Run `fn(client)`, retrying transient failures for `patience` seconds.

        Driver errors become engine errors here; StoreUnavailable escapes only
        when patience runs out. `fn` must be safe to run again (or detect that an
        earlier attempt with an unknown outcome did commit, as `apply` does). Between
        attempts it waits 50 ms, doubling up to 2 s, plus up to 100 ms of jitter. A plain
        loop: every store call of every agent and coordinator comes through here, and
        building tenacity's retry state per call cost more than the rest of this method.
        """
        limit = self.config.patience if patience is None else patience
        started = time.monotonic()
        failures = 0
        while True:
            try:
                return self._once(what, fn)
            except StoreUnavailable as exc:
                waited = time.monotonic() - started
                if waited >= limit:
                    raise StoreUnavailable(
                        f"{exc.message} (gave up after {waited:.0f}s)",
                        hint=(exc.hint or "") + f"; set GRAVITY_ETCD_PATIENCE (now "
                        f"{limit:g}s) to wait longer",
                    ) from exc
                failures += 1
                time.sleep(min(RETRY_FIRST * 2 ** (failures - 1), RETRY_MAX)
                           + random.uniform(0, RETRY_JITTER))

    def _once(self, what: str, fn: Callable[[MultiEndpointEtcd3Client], T]) -> T:
        try:
            with self.using() as client:
                return fn(client)
        except (*CAUGHT, ValueError) as exc:
            if isinstance(exc, ValueError) and not channel_gone(exc):
                raise
            if is_token_expired(exc) and self.config.user:
                self.relogin()
            raise translate(exc, what, self.url) from exc

    # -- reads ----------------------------------------------------------------------------
    def range_page(self, client: MultiEndpointEtcd3Client, start: bytes, end: bytes, *,
                   revision: int | None = None, limit: int = PAGE,
                   min_mod_revision: int = 0, keys_only: bool = False) -> Any:
        """One range request (linearizable unless pinned to `revision`)."""
        kwargs: dict[str, Any] = {"limit": limit, "keys_only": keys_only}
        if revision is not None:
            kwargs["revision"] = revision
        if min_mod_revision > 0:
            kwargs["min_mod_revision"] = min_mod_revision
        return client.get_range_response(start, end, **kwargs)

    def scan_with(self, client: MultiEndpointEtcd3Client, start: bytes, end: bytes, *,
                  min_mod_revision: int = 0, keys_only: bool = False, values: bool = False
                  ) -> tuple[list[tuple[bytes, Any]], int]:
        """Every (key, kv) in [start, end) as one consistent snapshot, and its revision;
        with `min_mod_revision`, only keys written at that revision or later; with
        `keys_only`, the kvs carry no values; with `values`, (key, value) bytes instead of
        kvs, so no page's response outlives it (100,000 kvs kept ~100 MB more alive).

        The first page is a linearizable read; later pages are pinned to its
        revision so the result is the store at one instant, however many pages.
        """
        out: list[tuple[bytes, Any]] = []
        resp = self.range_page(client, start, end, min_mod_revision=min_mod_revision,
                               keys_only=keys_only)
        revision = int(resp.header.revision)
        limit = PAGE
        while True:
            out.extend((kv.key, kv.value) if values else (kv.key, kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return out, revision
            if len(out) == len(resp.kvs):  # after the first page: its sizes set the rest's
                limit = max(PAGE, min(MAX_PAGE, PAGE_BYTES * len(out) // resp.ByteSize()))
            while True:  # a page over gRPC's message limit (values larger than the first's)
                try:  # is asked again at half the size
                    resp = self.range_page(client, resp.kvs[-1].key + b"\0", end,
                                           revision=revision, min_mod_revision=min_mod_revision,
                                           keys_only=keys_only, limit=limit)
                    break
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or limit <= PAGE:
                        raise
                    limit //= 2

    def scan(self, what: str, start: bytes, end: bytes, *, values: bool = False
             ) -> tuple[list[tuple[bytes, Any]], int]:
        """`scan_with` under the retry policy."""
        return self.call(what, lambda c: self.scan_with(c, start, end, values=values))

    def get(self, what: str, key: bytes) -> Any | None:
        """The kv at `key` (linearizable), or None."""
        resp = self.call(what, lambda c: c.get_response(key))
        return resp.kvs[0] if resp.kvs else None

    def txn(self, client: MultiEndpointEtcd3Client, compare: Sequence[Any],
            success: Sequence[Any], failure: Sequence[Any] = ()) -> tuple[bool, list[Any]]:
        """One etcd transaction (no retry: callers decide what a retry means)."""
        return client.transaction(compare=list(compare), success=list(success),
                                  failure=list(failure))


__all__ = ["Connection", "EtcdConfig", "LeaseCompare", "parse_url"]
