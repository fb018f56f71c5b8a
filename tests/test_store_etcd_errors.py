"""Every pyetcd and gRPC failure the etcd store catches becomes an `engine.errors` type:
transient ones StoreUnavailable (retried), bad setup StoreConfigError, the rest StoreError.
"""

from __future__ import annotations

import inspect

import grpc
import pytest
from pyetcd import exceptions as etcd_exc
from pyetcd import transactions as tx

from engine.errors import EngineError, StoreConfigError, StoreError, StoreUnavailable
from engine.store.etcd import EtcdStore
from engine.store.etcd_errors import CAUGHT, channel_gone, translate

URL = "etcd://127.0.0.1:2379/gravity"


class StatusError(grpc.RpcError, grpc.Call):
    """A gRPC failure with a status, as the channel raises it (code + server details)."""

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    # grpc.Call's other abstract methods: never used by the translation.
    def initial_metadata(self) -> None: ...
    def trailing_metadata(self) -> None: ...
    def is_active(self) -> bool: return False
    def time_remaining(self) -> None: ...
    def cancel(self) -> bool: return False
    def add_callback(self, callback: object) -> bool: return False


def wrapped(driver: type[etcd_exc.Etcd3Exception], cause: StatusError) -> BaseException:
    """What pyetcd raises: its own class, with the gRPC error only as __context__."""
    try:
        try:
            raise cause
        except grpc.RpcError:
            raise driver() from None
    except etcd_exc.Etcd3Exception as exc:
        exc.__context__ = cause
        return exc


CASES: list[tuple[str, BaseException, type[EngineError]]] = [
    ("connection failed", etcd_exc.ConnectionFailedError(), StoreUnavailable),
    ("connection timeout", etcd_exc.ConnectionTimeoutError(), StoreUnavailable),
    ("no server", etcd_exc.NoServerAvailableError("all failed"), StoreUnavailable),
    ("watch timed out", etcd_exc.WatchTimedOut(), StoreUnavailable),
    ("internal", etcd_exc.InternalServerError(), StoreUnavailable),
    ("precondition", etcd_exc.PreconditionFailedError(), StoreError),
    ("compacted", etcd_exc.RevisionCompactedError(42), StoreError),
    ("base", etcd_exc.Etcd3Exception("odd"), StoreError),
    ("not leader", wrapped(etcd_exc.PreconditionFailedError, StatusError(
        grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: not leader")), StoreUnavailable),
    ("tls behind pyetcd", wrapped(etcd_exc.ConnectionFailedError, StatusError(
        grpc.StatusCode.UNAVAILABLE, "ipv4:127.0.0.1:2379: Handshake failed")), StoreConfigError),
    ("closed channel", ValueError("Cannot invoke RPC on closed channel!"), StoreUnavailable),
    ("failed node", ValueError("Trying to use a failed node"), StoreUnavailable),
    ("refused", StatusError(grpc.StatusCode.UNAVAILABLE, "Connection refused"), StoreUnavailable),
    ("deadline", StatusError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline"), StoreUnavailable),
    ("stream removed", StatusError(grpc.StatusCode.UNKNOWN, "Stream removed"), StoreUnavailable),
    ("cancelled", StatusError(grpc.StatusCode.CANCELLED, "Channel closed"), StoreUnavailable),
    ("aborted", StatusError(grpc.StatusCode.ABORTED, "aborted"), StoreUnavailable),
    ("leader changed", StatusError(grpc.StatusCode.UNAVAILABLE,
                                   "etcdserver: leader changed"), StoreUnavailable),
    ("too many requests", StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                      "etcdserver: too many requests"), StoreUnavailable),
    ("token expired", StatusError(grpc.StatusCode.UNAUTHENTICATED,
                                  "etcdserver: invalid auth token"), StoreUnavailable),
    ("unauthenticated", StatusError(grpc.StatusCode.UNAUTHENTICATED, "no token"),
     StoreConfigError),
    ("permission", StatusError(grpc.StatusCode.PERMISSION_DENIED,
                               "etcdserver: permission denied"), StoreConfigError),
    ("bad password", StatusError(grpc.StatusCode.INVALID_ARGUMENT,
                                 "etcdserver: authentication failed, invalid user ID or password"),
     StoreConfigError),
    ("no user", StatusError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: user name is empty"),
     StoreConfigError),
    ("unimplemented", StatusError(grpc.StatusCode.UNIMPLEMENTED, "not etcd v3"),
     StoreConfigError),
    ("tls", StatusError(grpc.StatusCode.UNAVAILABLE, "Ssl handshake failed: CERTIFICATE_VERIFY"),
     StoreConfigError),
    ("cut handshake", StatusError(grpc.StatusCode.UNAVAILABLE,
                                  "Handshake read failed (Socket closed)"), StoreUnavailable),
    ("handshake timeout", StatusError(  # a plain channel whose connect deadline passed
        grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: UNKNOWN: "
        "ipv4:127.0.0.1:47407: handshaker shutdown"), StoreUnavailable),
    ("too many ops", StatusError(grpc.StatusCode.INVALID_ARGUMENT,
                                 "etcdserver: too many operations in txn request"), StoreError),
    ("too large", StatusError(grpc.StatusCode.INVALID_ARGUMENT,
                              "etcdserver: request is too large"), StoreError),
    ("over grpc's max", StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    "grpc: received message larger than max (3051343 vs. "
                                    "2097152)"), StoreError),
    ("no space", StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             "etcdserver: mvcc: database space exceeded"), StoreError),
    ("lease gone", StatusError(grpc.StatusCode.NOT_FOUND,
                               "etcdserver: requested lease not found"), StoreError),
    ("compacted rev", StatusError(grpc.StatusCode.OUT_OF_RANGE,
                                  "etcdserver: mvcc: required revision has been compacted"),
     StoreError),
    ("data loss", StatusError(grpc.StatusCode.DATA_LOSS, "etcdserver: corrupt cluster"),
     StoreError),
]


@pytest.mark.parametrize(("exc", "expected"), [(e, t) for _, e, t in CASES],
                         ids=[name for name, _, _ in CASES])
def test_driver_error_is_translated(exc: BaseException, expected: type[EngineError]) -> None:
    assert isinstance(exc, CAUGHT) or channel_gone(exc)
    err = translate(exc, "doing something", URL)
    assert type(err) is expected
    assert "doing something" in err.message and URL in err.message


def test_every_pyetcd_exception_class_is_covered() -> None:
    classes = {c for _, c in inspect.getmembers(etcd_exc, inspect.isclass)
               if issubclass(c, etcd_exc.Etcd3Exception)}
    covered = {type(e) for _, e, _ in CASES}
    assert classes <= covered


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_every_grpc_status_maps_to_an_engine_error(code: grpc.StatusCode) -> None:
    err = translate(StatusError(code, "something"), "reading", URL)
    assert isinstance(err, StoreError | StoreConfigError)


def test_a_real_refusal_from_etcd_surfaces_as_a_store_error(etcd_url: str) -> None:
    with EtcdStore.from_url(etcd_url) as store:
        puts = [tx.Put(f"/x/{i}", "v") for i in range(200)]
        with pytest.raises(StoreError, match="too many operations") as err:
            store._call("writing too much", lambda c: c.transaction(
                compare=[], success=puts, failure=[]))
        assert "--max-txn-ops 128" in (err.value.hint or "")


@pytest.mark.parametrize(("details", "said"), [
    ("etcdserver: request is too large", "over its size limits"),
    ("grpc: received message larger than max (3051343 vs. 2097152)", "over its size limits"),
    ("etcdserver: mvcc: database space exceeded", "out of space or quota"),
])
def test_a_request_over_etcds_limits_is_not_called_a_full_disk(details: str, said: str) -> None:
    code = (grpc.StatusCode.INVALID_ARGUMENT if "too large" in details
            else grpc.StatusCode.RESOURCE_EXHAUSTED)
    err = translate(StatusError(code, details), "recording", URL)
    assert said in err.message
    assert ("--max-request-bytes" in (err.hint or "")) is (said == "over its size limits")
