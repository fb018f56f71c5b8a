"""Pytest fixtures for a real etcd: one server per test session, a fresh prefix per test.
Registered from tests/conftest.py with `pytest_plugins = ["tests.fixtures_etcd"]`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcd_server import EtcdServer


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A shared etcd server; tests isolate themselves with their own key prefix."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd_url(etcd_server: EtcdServer) -> str:
    """`etcd://127.0.0.1:PORT/t<random>`: the shared server under a prefix of this test's own."""
    return f"{etcd_server.url}/t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd server of this test's own, for tests that stop, restart or reconfigure it."""
    server = EtcdServer(tmp_path / "etcd-data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
