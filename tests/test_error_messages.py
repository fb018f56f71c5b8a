"""What an operator reads when something outside the plan goes wrong: a busy port, a mistyped
store URL, an out-of-range number, a full or read-only disk, a driver that died mid-retry.
Each ends in one clear message with the right exit code, never in a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import StoreUnavailable
from engine.store.sqlite import SQLiteStore
from engine.store.sqlite_errors import translate
from tests.helpers import wait_for
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


# -- the embedded store's disk ----------------------------------------------------------------
@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 4 MiB tmpfs of our own, so filling it harms nothing else; unmounted afterwards.

    Mounted under the system's temp dir rather than pytest's private one, so that another
    user can reach it too.
    """
    disk = Path(tempfile.mkdtemp(prefix="gravity-test-disk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0777", "tmpfs",
                              str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        disk.rmdir()
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
        disk.rmdir()


FILLS_THE_DISK = """
kind: Plan
metadata: {name: fill}
phases:
  - id: fill
    executor: command
    data: {run: "head -c 64m /dev/zero > \\"$DISK/filler\\" 2>/dev/null; echo filled"}
  - id: after
    executor: command
    data: {run: "echo after"}
"""


@pytest.mark.slow  # fills a disk and waits for it: out of --fast
def test_a_full_disk_is_named_and_the_store_reads_back_once_space_is_freed(
        gravity, write_plan, small_disk: Path) -> None:
    gravity.extra_env["GRAVITY_STORE"] = f"sqlite://{small_disk / 'gravity.db'}"
    gravity("operation", "create", "--plan",
            str(write_plan(FILLS_THE_DISK)), "--id", "op1", check=0)
    # The phase itself fills the disk: recording that it completed cannot be written.
    proc = gravity("plan", "resume", check=1, DISK=str(small_disk))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "the disk is full while recording" in proc.stderr
    assert "nothing was written" in proc.stderr
    assert f"hint: free space on that file system (`df -h {small_disk}`)" in proc.stderr
    assert "busy" not in proc.stderr and "another gravity process" not in proc.stderr
    # Any later command that writes says the same, and changes nothing.
    proc = gravity("plan", "resume", check=1)
    assert "the disk is full while" in proc.stderr, proc.stderr
    assert "busy" not in proc.stderr and "another gravity process" not in proc.stderr
    # Space freed: the store is intact and the operation finishes.
    (small_disk / "filler").unlink()
    assert gravity.states() == {"/fill": "in_progress", "/after": "unstarted"}
    gravity("plan", "resume", check=0, DISK=str(small_disk / "x"))
    assert gravity.states() == {"/fill": "completed", "/after": "completed"}


def test_a_new_store_on_a_nearly_full_disk_is_a_full_disk_not_a_bad_store(
        gravity, write_plan, small_disk: Path) -> None:
    filler = small_disk / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(bytes(4096))
    os.truncate(filler, filler.stat().st_size - 80 * 1024)  # room to open, not to set up
    gravity.extra_env["GRAVITY_STORE"] = f"sqlite://{small_disk / 'new.db'}"
    proc = gravity("operation", "create", "--plan", str(write_plan(HELLO)), check=1)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "the disk is full while" in proc.stderr
    assert "not a usable gravity store" not in proc.stderr
    filler.unlink()
    gravity("operation", "create", "--plan", str(write_plan(HELLO)), "--id", "op1", check=0)


def test_a_read_only_file_system_is_named(gravity, write_plan, small_disk: Path) -> None:
    gravity.extra_env["GRAVITY_STORE"] = f"sqlite://{small_disk / 'gravity.db'}"
    gravity("operation", "create", "--plan", str(write_plan(HELLO)),
            "--id", "op1", check=0)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        proc = gravity("plan", "execute", "--phase", "/init", check=1)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert (f"error: embedded store {small_disk / 'gravity.db'} is read-only while opening "
            "it: its file system is mounted read-only; nothing was written") in proc.stderr
    assert "remount the file system read-write" in proc.stderr
    assert gravity.states() == {"/init": "unstarted", "/next": "unstarted"}


def test_a_read_only_database_file_is_named(gravity, write_plan, small_disk: Path) -> None:
    """The database file is not writable for the user running gravity (SQLITE_READONLY)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run gravity as another user")
    state = small_disk / "state"
    env = gravity.env(GRAVITY_STATE_DIR=str(state))
    run = [sys.executable, "-m", "engine.cli.main"]
    subprocess.run([*run, "operation", "create", "--plan", str(write_plan(HELLO)), "--id",
                    "op1"], env=env, cwd=small_disk, check=True, capture_output=True)
    subprocess.run(["chmod", "-R", "a+rwX", str(state)], check=True)
    (state / "gravity.db").chmod(0o444)
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *run, "plan", "execute", "--phase", "/init"],
                          env=env, cwd=small_disk, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"embedded store {state / 'gravity.db'} is read-only while" in proc.stderr
    assert "attempt to write a readonly database" in proc.stderr
    assert "busy" not in proc.stderr


def test_a_database_held_by_another_process_is_busy_not_broken(tmp_path: Path) -> None:
    path = tmp_path / "gravity.db"
    SQLiteStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    store = SQLiteStore(path, busy_timeout=0.2)
    try:
        with pytest.raises(StoreUnavailable) as err:
            store.kv_put("x", {"a": 1})
    finally:
        store.close()
        holder.execute("ROLLBACK")
        holder.close()
    assert err.value.message.startswith(f"embedded store {path} busy while writing x")
    assert err.value.hint.startswith("another gravity process holds the database")


@pytest.mark.parametrize(("code", "name", "text", "expected"), [
    (5, "SQLITE_BUSY", "database is locked", "busy while writing x"),
    (6, "SQLITE_LOCKED", "database table is locked", "busy while writing x"),
    (13, "SQLITE_FULL", "database or disk is full", "the disk is full while writing x"),
    (8, "SQLITE_READONLY", "attempt to write a readonly database", "is read-only while"),
    (10 | (13 << 8), "SQLITE_IOERR_FSYNC", "disk I/O error", "disk I/O error while writing x"),
    (11, "SQLITE_CORRUPT", "database disk image is malformed", "is damaged while writing x"),
    (26, "SQLITE_NOTADB", "file is not a database", "is damaged while writing x"),
])
def test_every_sqlite_cause_has_its_own_message(
        tmp_path: Path, code: int, name: str, text: str, expected: str) -> None:
    """Only busy/locked blames another process (and is transient); the rest name their cause."""
    exc = sqlite3.OperationalError(text)
    exc.sqlite_errorcode, exc.sqlite_errorname = code, name
    err = translate(exc, "writing x", tmp_path / "gravity.db")
    assert expected in err.message
    busy = name in ("SQLITE_BUSY", "SQLITE_LOCKED")
    assert isinstance(err, StoreUnavailable) is busy
    assert ("another gravity process" in (err.hint or "")) is busy


# -- a retry that nobody will run ---------------------------------------------------------------
FLAKY = """
kind: Plan
metadata: {name: flaky}
phases:
  - id: flaky
    executor: command
    retry: {attempts: 3, initial: 10m, max: 10m}
    data: {run: "test -f fixed || { echo not yet; exit 1; }"}
  - id: after
    executor: command
    data: {run: "echo after"}
"""


def flaky_note(gravity) -> str | None:
    doc = gravity.plan_json()
    return next(p["note"] for p in doc["phases"] if p["id"] == "/flaky")


@pytest.mark.slow  # waits out a killed driver's lease
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["KILL", "INT"])
def test_a_retry_whose_driver_is_gone_shows_idle_with_the_command_to_resume(
        gravity, write_plan, sig: int) -> None:
    gravity("operation", "create", "--plan", str(write_plan(FLAKY)), "--id", "op1", check=0)
    driver = gravity.spawn("plan", "resume")
    try:
        wait_for(lambda: (flaky_note(gravity) or "").startswith("attempt 1 of 3 failed; "
                                                                 "retrying in"))
        assert "× /flaky  -            Failed (retrying)" in gravity("plan", check=0).stdout
        os.kill(driver.pid, sig)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.communicate()
    shown = gravity("plan", check=0).stdout
    assert "Failed (idle)" in shown and "retrying" not in shown, shown
    idle = ("attempt 1 of 3 failed; its retry will not run: the process driving the "
            "operation stopped; continue with `gravity plan resume`")
    assert f"({idle})" in shown
    doc = gravity.plan_json()
    assert (doc.get("driven"), flaky_note(gravity)) == (False, idle)
    # The dashboard shows the same document, and its stream says nobody drives it.
    dash = start_dashboard(gravity, "--listen", "127.0.0.1:0")
    try:
        page = dash.json("/api/plan?op=op1")
        assert (page["driven"], page["phases"][0]["note"]) == (False, idle)
        url = f"{dash.url}api/events?op=op1&after={page['last_seq']}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            event, op = read_event(resp)
        assert (event, op["driven"]) == ("operation", False)
    finally:
        dash.stop()
    # Showing the plan wrote nothing: the changelog still ends with the retry's note.
    assert gravity.changelog("op1")[-1]["note"].startswith("attempt 1 of 3 failed; retrying")
    # The command it names does the job.
    (gravity.node_file("local", "fixed")).write_text("")
    gravity("plan", "resume", check=0)
    assert gravity.states() == {"/flaky": "completed", "/after": "completed"}


def test_the_dashboard_page_updates_the_note_when_the_driver_dies(
        gravity, write_plan, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    gravity("operation", "create", "--plan", str(write_plan(FLAKY)), "--id", "op1", check=0)
    driver = gravity.spawn("plan", "resume")
    dash = None
    try:
        wait_for(lambda: "retrying in" in (flaky_note(gravity) or ""))
        dash = start_dashboard(gravity, "--listen", "127.0.0.1:0")
        wait = WebDriverWait(browser, 20)
        browser.get(dash.url)
        row = 'li.phase[data-phase="/flaky"] > .row'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row))
        wait.until(lambda d: d.find_element(By.ID, "conn").get_attribute("data-conn") == "live")
        browser.find_element(By.CSS_SELECTOR, row).click()
        fields = browser.find_element(By.ID, "d-fields")
        wait.until(lambda _d: "retrying in" in fields.text)
        driver.kill()
        driver.wait(timeout=30)
        # Open as it is, the page learns from its event stream that nobody drives the
        # operation any more, reloads the plan and shows the note that says what to do.
        wait.until(lambda _d: "its retry will not run" in fields.text)
        assert "continue with `gravity plan resume`" in fields.text
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.communicate()
        if dash is not None:
            dash.stop()


def test_a_retry_of_a_closed_operation_never_ran(gravity, write_plan) -> None:
    gravity("operation", "create", "--plan", str(write_plan(FLAKY)), "--id", "op1", check=0)
    driver = gravity.spawn("plan", "resume")
    try:
        wait_for(lambda: (flaky_note(gravity) or "").startswith("attempt 1 of 3 failed"))
        driver.kill()
        driver.wait(timeout=30)
    finally:
        driver.communicate()
    gravity("plan", "complete", check=0)
    shown = gravity("plan", check=0).stdout
    assert "× /flaky  -            Failed  " in shown and "retrying" not in shown, shown
    assert "(attempt 1 of 3 failed; its retry never ran: the operation is failed)" in shown
