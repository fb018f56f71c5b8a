"""The etcd store against an etcd with authentication and one with TLS, each its own server:
right credentials work (and survive token expiry), wrong ones fail fast as StoreConfigError.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import EXIT_INVALID, StoreConfigError
from engine.model import Operation, PhaseSpec, PhaseState, State, Transition
from engine.store import TLSConfig, open_store
from engine.store.etcd import EtcdStore
from tests.etcd_server import EtcdServer

pytestmark = pytest.mark.etcd  # every test here starts an etcd server of its own


def make_op() -> Operation:
    now = time.time()
    return Operation("op-1", "install", "install.yaml", created=now, updated=now)


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """etcd with auth on: user `gravity` may read and write under /allowed only, user
    `narrow` under /allowed/narrow only. Tokens live one second, so an idle client must log
    in again."""
    server = EtcdServer(tmp_path_factory.mktemp("auth") / "data",
                        extra_args=("--auth-token-ttl", "1"))
    server.start()
    for args in (("user", "add", "root:rootpw"), ("user", "add", "gravity:gpw"),
                 ("role", "add", "gravity"),
                 ("role", "grant-permission", "gravity", "--prefix=true", "readwrite",
                  "/allowed/"),
                 ("user", "grant-role", "gravity", "gravity"),
                 ("user", "add", "narrow:npw"), ("role", "add", "narrow"),
                 ("role", "grant-permission", "narrow", "--prefix=true", "readwrite",
                  "/allowed/narrow/"),
                 ("user", "grant-role", "narrow", "narrow"), ("auth", "enable")):
        server.etcdctl(*args)
    yield server
    server.stop()


def login(monkeypatch: pytest.MonkeyPatch, user: str | None, password: str | None) -> None:
    for name, value in (("GRAVITY_ETCD_USER", user), ("GRAVITY_ETCD_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def test_right_credentials_work_and_outlive_the_token(auth_etcd: EtcdServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    login(monkeypatch, "gravity", "gpw")
    with EtcdStore.from_url(f"{auth_etcd.url}/allowed/g{time.time_ns()}") as store:
        store.create_operation(make_op(), [PhaseSpec("/a", "", executor="noop")])
        lease = store.grant_lease("coordinator:op-1", ttl=30)
        store.acquire_lock("coordinator/op-1", lease)
        time.sleep(2.5)  # the token expires while idle
        rec = store.apply("op-1", [Transition(
            0, PhaseState("/a").advance(State.IN_PROGRESS), State.UNSTARTED)])[0]
        assert store.wait_changes("op-1", after=0, timeout=5) == [rec]
        assert store.lock_holder("coordinator/op-1").id == lease.id


def test_a_role_limited_to_the_prefix_may_claim_it(auth_etcd: EtcdServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening checks the outer prefixes for another store's marker; one the user's role
    cannot read (/allowed here) is not a reason to refuse the prefix it may use."""
    login(monkeypatch, "narrow", "npw")
    with EtcdStore.from_url(f"{auth_etcd.url}/allowed/narrow") as store:
        store.create_operation(make_op(), [PhaseSpec("/a", "", executor="noop")])
    with EtcdStore.from_url(f"{auth_etcd.url}/allowed/narrow") as store:
        assert [op.id for op in store.list_operations()] == ["op-1"]


@pytest.mark.parametrize(("user", "password", "prefix"), [
    ("gravity", "wrong", "/allowed/x"),
    ("nobody", "gpw", "/allowed/x"),
    (None, None, "/allowed/x"),
    ("gravity", "gpw", "/forbidden"),
])
def test_bad_credentials_or_permissions_fail_fast(
        auth_etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch, user: str | None,
        password: str | None, prefix: str) -> None:
    login(monkeypatch, user, password)
    started = time.monotonic()
    with pytest.raises(StoreConfigError) as err:
        open_store(f"{auth_etcd.url}{prefix}")
    assert err.value.exit_code == EXIT_INVALID
    assert time.monotonic() - started < 5
    assert "GRAVITY_ETCD_USER" in (err.value.hint or "")


# -- TLS -------------------------------------------------------------------------------------
def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EtcdServer, Path]]:
    """etcd serving TLS with a certificate for 127.0.0.1 from a throwaway CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("tls")
    for name in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=gravity-test-{name}", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    server = EtcdServer(d / "data", extra_args=(f"--cert-file={d / 'server.pem'}",
                                                f"--key-file={d / 'server.key'}"))
    server.start()
    yield server, d
    server.stop()


def test_tls_with_the_right_ca_works(tls_etcd: tuple[EtcdServer, Path]) -> None:
    server, d = tls_etcd
    assert server.url.startswith("etcds://")
    with open_store(f"{server.url}/tls", tls=TLSConfig(cacert=str(d / "ca.pem"))) as store:
        store.create_operation(make_op(), [PhaseSpec("/a", "", executor="noop")])
        assert store.active_operation_id() == "op-1"


def test_tls_with_a_foreign_ca_is_a_config_error(tls_etcd: tuple[EtcdServer, Path]) -> None:
    server, d = tls_etcd
    started = time.monotonic()
    with pytest.raises(StoreConfigError, match="TLS"):
        open_store(f"{server.url}/tls", tls=TLSConfig(cacert=str(d / "other-ca.pem")))
    assert time.monotonic() - started < 3  # a certificate problem is not retried


def test_tls_client_against_a_plain_server_is_a_config_error(
        tls_etcd: tuple[EtcdServer, Path], etcd_server: EtcdServer) -> None:
    _, d = tls_etcd
    with pytest.raises(StoreConfigError, match="TLS handshake") as err:
        open_store(f"etcds://{etcd_server.endpoint}/x", tls=TLSConfig(cacert=str(d / "ca.pem")))
    assert "etcds://" in (err.value.hint or "")
