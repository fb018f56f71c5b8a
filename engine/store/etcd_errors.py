"""Translation of pyetcd and gRPC failures into `engine.errors` types for the etcd store.
Decides which failures are transient (retry with patience) and which are permanent (fail fast).
"""

from __future__ import annotations

import grpc
from pyetcd import exceptions as etcd_exc

from engine.errors import EngineError, StoreConfigError, StoreError, StoreUnavailable

# Every driver exception the etcd store catches at its boundary; nothing else is caught.
CAUGHT: tuple[type[BaseException], ...] = (grpc.RpcError, etcd_exc.Etcd3Exception)

# pyetcd's own classes (it maps some gRPC codes to these and drops the details).
TRANSIENT_DRIVER = (
    etcd_exc.ConnectionFailedError,  # UNAVAILABLE: refused, leader lost, server stopping
    etcd_exc.ConnectionTimeoutError,  # DEADLINE_EXCEEDED
    etcd_exc.NoServerAvailableError,  # every endpoint failed recently
    etcd_exc.WatchTimedOut,  # the watch stream did not confirm in time
    etcd_exc.InternalServerError,  # INTERNAL: broken stream, server restarting
)

TRANSIENT_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,  # "Stream removed" when the server dies mid-call
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
})
PERMANENT_CONFIG_CODES = frozenset({
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
})
# Words in gRPC details that mean the TLS setup, not the network, is wrong.
TLS_WORDS = ("handshake", "ssl", "certificate", "tls", "security handshaker")
# A handshake cut short by the peer: a TLS/plain mismatch, or just a server going down.
# Retried like any outage; opening the store reports it as a TLS problem if it persists.
CUT_HANDSHAKE = ("handshake read failed", "handshake write failed")
# gRPC gave up on a connection's handshake (its connect deadline passed: a loaded machine or
# a slow server), on plain and TLS channels alike: an outage, never a TLS setup problem.
HANDSHAKE_TIMEOUT = ("handshaker shutdown",)
# etcd answers these while a leader is being elected or it is overloaded: worth waiting for.
TRANSIENT_TEXTS = ("not leader", "leader changed", "no leader", "too many requests",
                   "request timed out", "server stopped", "not capable")
# etcd (or gRPC in front of it) refusing a request over its size limits: the store keeps every
# request within etcd's defaults (etcd_limits), so a server started with lower ones says these.
OVER_LIMIT_TEXTS = ("too many operations in txn request", "request is too large",
                    "received message larger than max")


def rpc_error(exc: BaseException) -> grpc.RpcError | None:
    """The gRPC error behind `exc`: itself, or the one pyetcd replaced with its own class."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, grpc.RpcError) and hasattr(seen, "code"):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def code_and_details(exc: BaseException) -> tuple[grpc.StatusCode | None, str]:
    """The gRPC status code and server message behind a driver exception, when known."""
    rpc = rpc_error(exc)
    if rpc is None:
        return None, str(exc) or type(exc).__name__
    try:
        code = rpc.code()  # type: ignore[attr-defined]
        details = rpc.details() or ""  # type: ignore[attr-defined]
    except Exception:  # an RpcError without status accessors
        return None, str(rpc) or type(rpc).__name__
    return code, details


def is_lease_not_found(exc: BaseException) -> bool:
    """etcd says the lease named in a request no longer exists (expired or revoked)."""
    code, details = code_and_details(exc)
    return code is grpc.StatusCode.NOT_FOUND and "lease" in details.lower()


def is_permission_denied(exc: BaseException) -> bool:
    """etcd refused a key because the user's role does not cover it."""
    code, details = code_and_details(exc)
    return code is grpc.StatusCode.PERMISSION_DENIED or "permission denied" in details.lower()


def channel_gone(exc: BaseException) -> bool:
    """pyetcd or gRPC refused to use a channel that failed or was replaced: retry on a new one."""
    text = str(exc)
    return isinstance(exc, ValueError) and ("failed node" in text or "closed channel" in text)


def is_token_expired(exc: BaseException) -> bool:
    """The auth token timed out (etcd --auth-token-ttl) or belongs to another member."""
    code, details = code_and_details(exc)
    return code is grpc.StatusCode.UNAUTHENTICATED and "invalid auth token" in details.lower()


def is_compacted(exc: BaseException) -> bool:
    """A read or watch asked for a revision etcd has already compacted away."""
    if isinstance(exc, etcd_exc.RevisionCompactedError):
        return True
    code, details = code_and_details(exc)
    return code is grpc.StatusCode.OUT_OF_RANGE and "compacted" in details.lower()


def is_tls_problem(details: str) -> bool:
    """The details name a TLS failure that retrying cannot fix (bad certificate, CA, files)."""
    text = details.lower()
    return (not is_cut_handshake(text) and not is_handshake_timeout(text)
            and any(word in text for word in TLS_WORDS))


def is_handshake_timeout(details: str) -> bool:
    """gRPC abandoned the connection's handshake (deadline): transient, plain or TLS."""
    text = details.lower()
    return any(word in text for word in HANDSHAKE_TIMEOUT)


def is_cut_handshake(details: str) -> bool:
    """A TLS handshake the peer cut off: transient, or a TLS/plain mismatch if it persists."""
    text = details.lower()
    return any(word in text for word in CUT_HANDSHAKE)


def translate(exc: BaseException, what: str, url: str) -> EngineError:
    """The engine error for a driver failure while doing `what` against the store at `url`.

    StoreUnavailable means "retry may help" (the store's retry loop keys on it);
    StoreConfigError means the URL, credentials, TLS files or permissions are
    wrong; StoreError is anything else etcd refused.
    """
    code, details = code_and_details(exc)
    low = details.lower()
    if is_tls_problem(details):
        return StoreConfigError(
            f"TLS with etcd at {url} failed while {what}: {details}",
            hint="check --etcd-cacert/--etcd-cert/--etcd-key and that the URL scheme is "
            "etcds:// for a TLS server and etcd:// for a plain one",
        )
    if is_token_expired(exc):
        return StoreUnavailable(f"etcd at {url} rejected the auth token while {what}",
                                hint="gravity logs in again and retries")
    if code in PERMANENT_CONFIG_CODES or (
        code is grpc.StatusCode.INVALID_ARGUMENT
        and ("authentication" in low or "user name" in low or "password" in low)
    ):
        return StoreConfigError(
            f"etcd at {url} refused access while {what}: {details}",
            hint="set GRAVITY_ETCD_USER and GRAVITY_ETCD_PASSWORD to a user whose role "
            "may read and write the store prefix",
        )
    if channel_gone(exc):
        return StoreUnavailable(f"etcd at {url} is unavailable while {what}: {details}",
                                hint="gravity reconnects and retries")
    if is_handshake_timeout(details):
        return StoreUnavailable(
            f"etcd at {url} did not finish connecting while {what}: {details}",
            hint="etcd or this machine may be overloaded; gravity retries")
    if is_cut_handshake(details):
        return StoreUnavailable(
            f"etcd at {url} cut the TLS handshake while {what}: {details}",
            hint="etcd may be restarting; if this persists, check that the URL scheme "
            "matches the server (etcds:// for TLS) and the --etcd-* files",
        )
    if isinstance(exc, TRANSIENT_DRIVER) or code in TRANSIENT_CODES or any(
        t in low for t in TRANSIENT_TEXTS
    ):
        return StoreUnavailable(
            f"etcd at {url} is unavailable while {what}: {details}",
            hint=f"check that etcd is running and reachable: etcdctl --endpoints "
            f"{endpoints_hint(url)} endpoint health",
        )
    if any(t in low for t in OVER_LIMIT_TEXTS):
        return StoreError(
            f"etcd at {url} refused a request over its size limits while {what}: {details}",
            hint="gravity keeps every request within etcd's default limits; start etcd with "
            "at least --max-txn-ops 128 and --max-request-bytes 1572864 (1.5 MiB)",
        )
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return StoreError(
            f"etcd at {url} is out of space or quota while {what}: {details}",
            hint="compact and defragment etcd, then `etcdctl alarm disarm`",
        )
    if is_compacted(exc):
        return StoreError(f"etcd at {url} compacted the history needed while {what}",
                          hint="retry the command; it reads the current state again")
    return StoreError(f"etcd at {url} failed while {what}: {details}")


def endpoints_hint(url: str) -> str:
    """`etcd://a:1,b:2/p` -> `http://a:1,http://b:2` for an etcdctl command line."""
    scheme, _, rest = url.partition("://")
    hosts = rest.split("/", 1)[0]
    proto = "https" if scheme == "etcds" else "http"
    return ",".join(f"{proto}://{h}" for h in hosts.split(",") if h)


__all__ = [
    "CAUGHT",
    "channel_gone",
    "code_and_details",
    "is_compacted",
    "is_cut_handshake",
    "is_handshake_timeout",
    "is_lease_not_found",
    "is_permission_denied",
    "is_token_expired",
    "translate",
]
