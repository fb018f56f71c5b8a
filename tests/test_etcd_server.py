"""The tests' own etcd server: parallel test workers each start one, so a port picked as free
may be taken by another before etcd binds it; the server then picks others. Restarts keep theirs.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from engine.store import open_store
from tests.etcd_server import EtcdServer


@pytest.mark.etcd
def test_a_port_taken_before_etcd_binds_it_is_exchanged_for_a_free_one(tmp_path: Path) -> None:
    server = EtcdServer(tmp_path / "data")
    with socket.create_server(("127.0.0.1", 0)) as other:
        taken = other.getsockname()[1]
        server.client_port = taken  # another worker's server got there first
        with server:
            assert server.client_port != taken
            assert "address already in use" in server.log_path.read_text()
            with open_store(f"{server.url}/t") as store:
                assert store.list_operations() == []
            ports = (server.client_port, server.peer_port)
            server.stop()
            server.start()
            assert (server.client_port, server.peer_port) == ports
            with open_store(f"{server.url}/t") as store:
                assert store.list_operations() == []
