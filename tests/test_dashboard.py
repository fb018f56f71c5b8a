"""The dashboard as an operator meets it: a real `gravity dashboard` process, its JSON API and
event stream over HTTP, its refusals, its clean stop, and the page in a real headless browser.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from engine.presentation import when
from engine.views import IDLE
from tests.conftest import ROOT, leaf_states
from tests.helpers import chain_plan, run, wait_for

PLAN = chain_plan("dash", init=run("echo init-output-line"), drain=run("echo drained-node-1"),
                  upgrade=run("echo upgraded"), app=run("echo app"))



@dataclass
class Dashboard:
    url: str
    proc: subprocess.Popen[str]

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path.lstrip("/"), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path: str) -> dict:
        status, _headers, body = self.get(path)
        assert status == 200, body
        return json.loads(body)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


def start_dashboard(gravity, *args: str) -> Dashboard:
    proc = gravity.spawn("dashboard", *args)
    line = proc.stdout.readline()
    if not line.startswith("dashboard: http://"):
        proc.kill()
        raise AssertionError(f"dashboard did not start: {line!r}\n{proc.communicate()}")
    return Dashboard(line.split()[1], proc)


@pytest.fixture
def dashboards(gravity) -> Iterator[Callable[[], Dashboard]]:
    """Starts a dashboard on a free loopback port when called; all are stopped at the end."""
    started: list[Dashboard] = []

    def start() -> Dashboard:
        started.append(start_dashboard(gravity, "--listen", "127.0.0.1:0"))
        return started[-1]

    yield start
    for dash in started:
        if dash.proc.poll() is None:
            dash.stop()


@pytest.fixture
def dashboard(gravity) -> Iterator[Dashboard]:
    """Operation op1 with /init completed, and a dashboard on a free loopback port."""
    gravity.create(PLAN)
    gravity("plan", "execute", "--phase", "/init", check=0)
    dash = start_dashboard(gravity, "--listen", "127.0.0.1:0")
    yield dash
    if dash.proc.poll() is None:
        dash.stop()


def test_json_api_lists_operations_plan_and_phase_logs(dashboard, gravity) -> None:
    assert dashboard.url.startswith("http://127.0.0.1:")
    ops = dashboard.json("/api/operations")
    assert ops["active"] == "op1"
    assert [(o["id"], o["state"], o["active"]) for o in ops["operations"]] == [
        ("op1", "active", True)]
    plan = dashboard.json("/api/plan?op=op1")
    assert plan == dict(gravity.plan_json(), last_seq=gravity.changelog("op1")[-1]["seq"],
                        idle=None)
    assert leaf_states(dashboard.json("/api/plan")) == {
        "/init": "completed", "/masters/node-1/drain": "unstarted",
        "/masters/node-1/upgrade": "unstarted", "/app": "unstarted"}
    log = dashboard.json("/api/log?op=op1&phase=/init")
    assert "init-output-line" in log["text"]
    assert (log["state"], log["exists"], log["truncated"]) == ("completed", True, False)
    assert Path(log["path"]) == gravity.state_dir.resolve() / "logs" / "op1" / "init.log"
    assert dashboard.json("/api/log?op=op1&phase=/app")["exists"] is False


def test_bad_requests_are_refused_without_touching_files(dashboard) -> None:
    for phase in ("/../../../etc/passwd", "/init/..", "/masters//drain", ""):
        status, _h, body = dashboard.get(f"/api/log?op=op1&phase={phase}")
        assert status == 400, (phase, body)
    status, _h, body = dashboard.get("/api/log?op=op1&phase=/nope")
    assert (status, json.loads(body)["error"]) == (404, "operation op1 has no phase /nope")
    assert dashboard.get("/api/plan?op=missing")[0] == 404
    assert dashboard.get("/static/../server.py")[0] == 404
    assert dashboard.get("/nowhere")[0] == 404


def test_only_get_is_allowed_and_only_for_loopback_host_names(dashboard) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        req = urllib.request.Request(dashboard.url + "api/operations", method=method,
                                     data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 405, method
        assert err.value.headers["Allow"] == "GET"
    # A page on another origin that rebinds its DNS name to 127.0.0.1 is refused.
    assert dashboard.get("/api/operations", Host="attacker.example:80")[0] == 403
    status, headers, body = dashboard.get("/")
    assert status == 200
    assert b'<script src="/static/app.js" defer></script>' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]


def read_event(resp, only: str | None = None) -> tuple[str, dict]:
    """The next server-sent event (of type `only`, if given), skipping comments and the
    retry hint."""
    event, data = "message", None
    while True:
        line = resp.readline().decode()
        assert line, "event stream ended"
        line = line.rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and data is not None:
            if only is None or event == only:
                return event, data
            event, data = "message", None


def test_event_stream_sends_transitions_as_they_happen(dashboard, gravity) -> None:
    last = dashboard.json("/api/plan")["last_seq"]
    req = urllib.request.Request(f"{dashboard.url}api/events?op=op1&after={last}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        event, op = read_event(resp)
        assert (event, op["id"], op["state"]) == ("operation", "op1", "active")
        gravity("plan", "execute", "--phase", "/masters/node-1/drain", check=0)
        # `operation` events may come between them: its driver came and went.
        changes = [read_event(resp, only="change") for _ in range(2)]
    assert [(e, r["phase"], r["from"], r["to"]) for e, r in changes] == [
        ("change", "/masters/node-1/drain", "unstarted", "in_progress"),
        ("change", "/masters/node-1/drain", "in_progress", "completed")]
    # The event log's own form: what `gravity events -o json` prints for those records.
    assert [r for _e, r in changes] == gravity.changelog("op1")[-2:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_stops_cleanly_on_a_signal_even_with_a_page_open(dashboard, sig) -> None:
    with urllib.request.urlopen(dashboard.url + "api/events?op=op1", timeout=30) as resp:
        read_event(resp)  # a live stream is being served
        code, _out, err = dashboard.stop(sig)
    assert code == 0, err
    assert "dashboard: stopped" in err
    assert "Traceback" not in err


def test_listen_beyond_loopback_warns(gravity) -> None:
    gravity.create(PLAN)
    dash = start_dashboard(gravity, "--listen", "0.0.0.0:0")
    code, _out, err = dash.stop()
    assert code == 0
    assert "warning: listening on 0.0.0.0, not loopback" in err


def test_bad_listen_address_is_bad_input(gravity) -> None:
    proc = gravity("dashboard", "--listen", "localhost", check=2)
    assert "expected HOST:PORT" in proc.stderr


def phase_ids(phases: list[dict]) -> list[str]:
    """Every phase ID of a plan document's tree, composites too, in written order."""
    return [phase_id for p in phases for phase_id in [p["id"], *phase_ids(p.get("phases", []))]]


def test_values_are_never_served_not_even_their_password(gravity, dashboards,
                                                         tmp_path) -> None:
    images = tmp_path / "quickstart"
    shutil.copytree(ROOT / "examples" / "quickstart", images, symlinks=True)
    gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"),
            "--id", "install", "--set", "db.password=s3cret,replicas=3", check=0)
    dash = dashboards()
    phases = phase_ids(dash.json("/api/plan")["phases"])
    paths = ["/", "/index.html", "/static/app.js", "/static/style.css",
             "/api/operations", "/api/plan", "/api/plan?op=install",
             "/api/events?op=install&after=0", "/api/plan?op=nope",
             "/api/log?op=install&phase=/nope",
             *[f"/api/log?op=install&phase={phase_id}" for phase_id in phases]]
    bodies = {path: dash.get(path)[2] for path in paths}
    assert "/app/quickstart" in phases  # the hooks, which read the values, have run
    assert [path for path, body in bodies.items() if b"s3cret" in body] == []
    # Which keys are set is shown; what they are set to is not.
    redacted = {"db": {"password": "***"}, "replicas": "***"}
    assert [o["data"]["values"] for o in json.loads(bodies["/api/operations"])["operations"]] \
        == [redacted]
    assert json.loads(bodies["/api/plan"])["operation"]["data"]["values"] == redacted
    stream = bodies["/api/events?op=install&after=0"].decode()
    operation_events = [json.loads(block.split("data: ", 1)[1]) for block in stream.split("\n\n")
                        if block.startswith("event: operation")]
    assert [e["data"]["values"] for e in operation_events] == [redacted]


def test_a_failed_operation_nobody_drives_is_idle_with_the_commands_to_run(
        gravity, dashboards) -> None:
    gravity.create(yaml.safe_dump({"kind": "Plan", "metadata": {"name": "idle"}, "phases": [
        {"id": "init", "retry": {"attempts": 2, "initial": "60s", "max": "60s"},
         "executor": "command", "data": run("echo broken >&2; exit 3")},
        {"id": "app", "executor": "command", "data": run("true")}]}))
    dash = dashboards()
    assert dash.json("/api/plan")["idle"] is None  # nothing failed yet
    driver = gravity.spawn("plan", "resume")
    # The first attempt failed; its driver waits to retry it: not idle.
    waiting = wait_for(lambda: (d := dash.json("/api/plan"))["progress"]["failed"] and d,
                       "/init's first attempt to fail", proc=driver)
    assert (waiting["driven"], waiting["idle"]) == (True, None)
    driver.kill()  # the SSH session went, and the driver with it
    driver.communicate()
    gone = dash.json("/api/plan")
    assert (gone["driven"], gone["idle"]) == (False, IDLE)
    assert IDLE == "idle — nothing is running; `gravity plan resume` or `gravity rollback`"


# -- in a real browser (the `browser` fixture is in tests/conftest.py) ------------------------
def test_page_shows_the_tree_and_updates_a_phase_live(dashboard, gravity, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def state(phase_id: str) -> str | None:
        rows = browser.find_elements(By.CSS_SELECTOR, f'li.phase[data-phase="{phase_id}"]')
        return rows[0].get_attribute("data-state") if rows else None

    wait = WebDriverWait(browser, 15)
    browser.get(dashboard.url)
    wait.until(lambda _d: state("/init") == "completed")
    assert state("/masters/node-1/drain") == "unstarted"
    assert state("/masters") == "unstarted"
    assert browser.find_element(By.ID, "op-title").text == "op1 — active"
    wait.until(lambda d: d.find_element(By.ID, "conn").get_attribute("data-conn") == "live")
    browser.execute_script("window.notReloaded = true;")

    gravity("plan", "execute", "--phase", "/masters/node-1/drain", check=0)
    wait.until(lambda _d: state("/masters/node-1/drain") == "completed")
    # Composites follow their leaves: drain done, upgrade not yet -> in progress.
    wait.until(lambda _d: state("/masters/node-1") == "in_progress")
    assert browser.execute_script("return window.notReloaded === true;")
    row = browser.find_element(By.CSS_SELECTOR,
                               'li.phase[data-phase="/masters/node-1/drain"] .state')
    assert row.text == "completed"
    assert "2/4 phases completed" in browser.find_element(By.ID, "progress").text

    # The phase's output log opens in the detail panel.
    browser.find_element(By.CSS_SELECTOR,
                         'li.phase[data-phase="/masters/node-1/drain"] > .row').click()
    wait.until(lambda d: "drained-node-1" in d.find_element(By.ID, "d-log").text)
    assert browser.find_element(By.ID, "d-title").text == "/masters/node-1/drain"

    # A composite has no node of its own unless it declares one, as in `gravity plan`.
    nodes = {phase_id: browser.find_element(By.CSS_SELECTOR,
                                       f'li.phase[data-phase="{phase_id}"] > .row .node').text
             for phase_id in ("/init", "/masters", "/masters/node-1", "/masters/node-1/drain")}
    assert nodes == {"/init": "local", "/masters": "-", "/masters/node-1": "node-1",
                     "/masters/node-1/drain": "node-1"}


def test_page_times_are_the_clis_utc_and_updated_follows_the_last_transition(
        dashboard, gravity, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # A browser far from UTC, with a 12-hour clock: the page still shows the CLI's times.
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Pacific/Honolulu"})
    browser.execute_cdp_cmd("Emulation.setLocaleOverride", {"locale": "en-US"})
    wait = WebDriverWait(browser, 15)
    op = dashboard.json("/api/operations")["operations"][0]
    browser.get(dashboard.url)
    meta = wait.until(lambda d: "created" in (t := d.find_element(By.ID, "op-meta").text) and t)
    assert f"created {when(op['created'])} · " in meta
    wait.until(lambda d: d.find_element(By.ID, "conn").get_attribute("data-conn") == "live")

    # The next transition falls in a later second than the operation's own record.
    wait_for(lambda: int(time.time()) > int(op["updated"]), "the clock to pass that second")
    gravity("plan", "execute", "--phase", "/masters/node-1/drain", check=0)
    last = gravity.changelog("op1")[-1]
    at = datetime.fromisoformat(last["ts"]).timestamp()
    status = gravity("status", check=0).stdout
    assert f"Updated:    {when(at)}\n" in status
    # Live, without a reload: the operation's "updated" is its last transition's, as status.
    wait.until(lambda d: f"updated {when(at)}" in d.find_element(By.ID, "op-meta").text)
    assert when(at) != when(op["updated"])
    newest = browser.find_element(By.CSS_SELECTOR, "#event-list li").text
    assert newest.startswith(f"{when(at)} /masters/node-1/drain: in_progress → "
                             "completed"), newest

    browser.find_element(By.CSS_SELECTOR, 'li.phase[data-phase="/init"] > .row').click()
    wait.until(lambda d: d.find_element(By.ID, "d-title").text == "/init")
    fields = browser.find_elements(By.CSS_SELECTOR, "#d-fields > *")
    shown = dict(zip([f.text for f in fields[::2]], [f.text for f in fields[1::2]], strict=True))
    init = next(p for p in gravity.plan_json()["phases"] if p["id"] == "/init")
    assert shown["updated"] == when(init["updated"])


@pytest.mark.slow  # 5 s: three commands and a browser
def test_page_says_a_failed_operation_nobody_drives_is_idle(gravity, dashboards,
                                                             browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    gravity.create(chain_plan("idle", init=run("echo broken >&2; exit 3"), drain=run("true"),
                              upgrade=run("true"), app=run("true")))
    dash = dashboards()
    wait = WebDriverWait(browser, 15)
    browser.get(dash.url)
    wait.until(lambda d: d.find_element(By.ID, "conn").get_attribute("data-conn") == "live")
    idle = browser.find_element(By.ID, "op-idle")
    assert not idle.is_displayed()  # nothing failed

    gravity("plan", "execute", "--phase", "/init", check=1)  # fails; its driver ends with it
    wait.until(lambda _d: idle.is_displayed())
    assert idle.text == "idle — nothing is running; gravity plan resume or gravity rollback"
    assert [c.text for c in idle.find_elements(By.TAG_NAME, "code")] == [
        "gravity plan resume", "gravity rollback"]

    gravity("plan", "complete", check=0)  # closed: nothing is left to resume
    wait.until(lambda d: d.find_element(By.ID, "op-title").text == "op1 — failed")
    wait.until(lambda _d: not idle.is_displayed())


def long_plan(count: int, holds: dict[int, Path]) -> str:
    """`count` phases /p00, /p01, … in order; those in `holds` run until their file exists."""
    phases = [{"id": f"p{i:02d}", "executor": "command",
               "data": run(f"while [ ! -e {holds[i]} ]; do sleep 0.05; done" if i in holds
                           else "true")} for i in range(count)]
    return yaml.safe_dump({"kind": "Plan", "metadata": {"name": "long"}, "phases": phases})


@pytest.mark.slow  # 6 s: 60 phases and a browser
def test_page_scrolls_the_running_phase_into_view(gravity, dashboards, browser,
                                                  tmp_path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    def shows(phase_id: str) -> bool:
        """Whether the phase's row is in progress and wholly inside the window."""
        return browser.execute_script(
            "const li = document.querySelector(`li.phase[data-phase='${arguments[0]}']`);"
            "if (!li || li.dataset.state !== 'in_progress') return false;"
            "const r = li.querySelector(':scope > .row').getBoundingClientRect();"
            "return r.top >= 0 && r.bottom <= window.innerHeight;", phase_id)

    go = {30: tmp_path / "go-30", 55: tmp_path / "go-55"}
    gravity.create(long_plan(60, go))
    driver = gravity.spawn("plan", "resume")
    try:
        dash = dashboards()
        wait_for(lambda: leaf_states(dash.json("/api/plan"))["/p30"] == "in_progress",
                 "/p30 to run", proc=driver)
        wait = WebDriverWait(browser, 15)
        browser.get(dash.url)
        wait.until(lambda _d: shows("/p30"))  # far down the plan, yet on screen at once
        browser.execute_script("window.scrollTo(0, 0);")
        assert not shows("/p30")  # the page is longer than the window

        go[30].touch()
        wait.until(lambda _d: shows("/p55"))  # the next running phase came into view by itself
    finally:
        for hold in go.values():
            hold.touch()
        assert driver.wait(timeout=60) == 0
