"""What an operator reads when something outside the plan goes wrong: a busy port, a mistyped
store URL, an out-of-range number, a full or read-only disk, a driver that died mid-retry.
Each ends in one clear message with the right exit code, never in a traceback.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.test_dashboard import read_event, start_dashboard

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


# -- sequence numbers past what a store can hold ----------------------------------------------
TOO_BIG = "99999999999999999999"
MAX_SEQ = 2**63 - 1  # a signed 64-bit integer: SQLite's INTEGER, etcd's revision


@pytest.mark.parametrize("since", [TOO_BIG, str(MAX_SEQ + 1)])
def test_events_since_a_sequence_number_out_of_range_is_bad_input(
        gravity, write_plan, since: str) -> None:
    gravity("operation", "create", "--plan", str(write_plan(HELLO)), "--id", "op1", check=0)
    proc = gravity("events", "--since", since, check=2)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert (f"Invalid value for '--since': a sequence number must be 0 to {MAX_SEQ}, "
            f"got {since}") in proc.stderr
    # The largest valid one is fine: nothing comes after it.
    assert gravity("events", "--since", str(MAX_SEQ), check=0).stdout == ""


@pytest.fixture
def dashboard(gravity, write_plan):
    gravity("operation", "create", "--plan", str(write_plan(HELLO)), "--id", "op1", check=0)
    gravity("plan", "execute", "--phase", "/init", check=0)
    dash = start_dashboard(gravity, "--listen", "127.0.0.1:0")
    yield dash
    dash.stop()


@pytest.mark.parametrize(("query", "headers", "source"), [
    (f"after={TOO_BIG}", {}, "the after parameter"),
    (f"after={MAX_SEQ + 1}", {}, "the after parameter"),
    ("after=-1", {}, "the after parameter"),
    ("after=soon", {}, "the after parameter"),
    ("after=0", {"Last-Event-ID": TOO_BIG}, "the Last-Event-ID header"),
], ids=["huge", "max+1", "negative", "word", "last-event-id"])
def test_event_stream_from_a_bad_position_is_a_400_before_the_stream(
        dashboard, query: str, headers: dict[str, str], source: str) -> None:
    req = urllib.request.Request(f"{dashboard.url}api/events?op=op1&{query}", headers=headers)
    try:  # only the status line and headers: a stream that did start is never read
        with urllib.request.urlopen(req, timeout=30) as resp:
            pytest.fail(f"the stream started: {resp.status} {resp.headers['Content-Type']}")
    except urllib.error.HTTPError as exc:
        status, got, body = exc.code, exc.headers, exc.read()
    assert status == 400, body
    assert got["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["status"] == 400
    assert doc["error"].startswith(
        f"{source} must be a changelog sequence number from 0 to {MAX_SEQ}")


def test_event_stream_from_the_largest_position_streams(dashboard) -> None:
    req = urllib.request.Request(f"{dashboard.url}api/events?op=op1&after={MAX_SEQ}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        event, op = read_event(resp)
    assert (event, op["id"]) == ("operation", "op1")
