"""Pytest fixtures for a real etcd: one server per test session (per xdist worker), a fresh
prefix per test. Registered from tests/conftest.py with `pytest_plugins = ["tests.fixtures_etcd"]`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcd_server import EtcdServer


def require_etcd_mark(request: pytest.FixtureRequest) -> None:
    """Fail a test that starts or uses etcd without the `etcd` mark (`--fast` would run it)."""
    if request.node.get_closest_marker("etcd") is None:
        pytest.fail(f"{request.node.nodeid} uses a real etcd but is not marked `etcd`: add "
                    "@pytest.mark.etcd (tests/conftest.py marks users of the etcd fixtures)")


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A shared etcd server; tests isolate themselves with their own key prefix. Under
    pytest-xdist each worker process has a session, and so a server, of its own."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd_url(etcd_server: EtcdServer, request: pytest.FixtureRequest) -> str:
    """`etcd://127.0.0.1:PORT/t<random>`: the shared server under a prefix of this test's own."""
    require_etcd_mark(request)
    return f"{etcd_server.url}/t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def private_etcd(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EtcdServer]:
    """An etcd server of this test's own, for tests that stop, restart or reconfigure it."""
    require_etcd_mark(request)
    server = EtcdServer(tmp_path / "etcd-data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
