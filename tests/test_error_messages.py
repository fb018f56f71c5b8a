"""What an operator reads when something outside the plan goes wrong: a busy port, a mistyped
store URL, an out-of-range number, a full or read-only disk, a driver that died mid-retry.
Each ends in one clear message with the right exit code, never in a traceback.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

HELLO = """
kind: Plan
metadata: {name: hello}
phases:
  - id: init
    executor: command
    data: {run: "echo init"}
  - id: next
    executor: command
    data: {run: "echo next"}
"""


def one_line_error(proc) -> str:
    """The command's stderr, asserted to be exactly one line and no traceback."""
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


# -- the dashboard's address ----------------------------------------------------------------
@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another process is already listening on."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_dashboard_on_a_busy_port_says_so_in_one_line(gravity, busy_port) -> None:
    proc = gravity("dashboard", "--listen", f"127.0.0.1:{busy_port}", check=2)
    err = one_line_error(proc)
    assert f"cannot listen on 127.0.0.1:{busy_port}" in err
    assert "already in use" in err
    assert "--listen 127.0.0.1:PORT" in err


def test_dashboard_on_an_address_of_another_machine_says_so_in_one_line(gravity) -> None:
    # 192.0.2.0/24 is TEST-NET-1: documentation only, never an address of this machine.
    proc = gravity("dashboard", "--listen", "192.0.2.1:8470", check=2)
    err = one_line_error(proc)
    assert "cannot listen on 192.0.2.1:8470" in err
    assert "192.0.2.1 is not an address of this machine" in err


def test_dashboard_on_an_unknown_host_name_says_so_in_one_line(gravity) -> None:
    proc = gravity("dashboard", "--listen", "no-such-host.invalid:8470", check=2)
    err = one_line_error(proc)
    assert "cannot resolve the host name 'no-such-host.invalid'" in err


# -- the store URL ----------------------------------------------------------------------------
@pytest.mark.parametrize("url", [
    "etcd://[::1", "etcds://[::1", "etcd://::1]", "etcd://[", "etcd://]", "etcd://[[::1]]",
    "etcd://h1:2379,[::1", "sqlite://[::1/gravity.db",
])
def test_a_store_url_with_unbalanced_brackets_is_bad_input(gravity, url: str) -> None:
    proc = gravity("--store", url, "plan", check=2)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"error: {'etcd ' if url.startswith('etcd') else ''}"
                                  f"store URL {url!r}"), proc.stderr
    expected = "[IPv6]:port" if url.startswith("etcd") else "sqlite:///absolute/path"
    assert expected in proc.stderr
    assert "hint: use " in proc.stderr
    assert not gravity.state_dir.exists(), "a rejected URL must write nothing"
