"""Shared fixtures: run the real `gravity` CLI as a subprocess against a temp state dir,
write plan files, read back what the store and the nodes' files show, drive a real browser;
and the markers `etcd` and `browser`, set from the fixtures a test uses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent

# Property tests (every @given) take their settings from one profile, chosen here before any
# test module is imported, so a test's own @settings inherits it:
# - `ci` (the default, and what ./run-tests and CI use): the same 200 examples per test on
#   every run and every machine (derandomized, no example database), so a failure reproduces
#   exactly and a green run stays green;
# - `fuzz` (HYPOTHESIS_PROFILE=fuzz): 5,000 fresh random examples per test, saved failures
#   replayed first, for hunting locally; keep what it finds as an explicit test.
_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=200, derandomize=True, database=None,
                          deadline=None, print_blob=True, suppress_health_check=_SLOW_IS_FINE)
settings.register_profile("fuzz", max_examples=5000, deadline=None, print_blob=True,
                          suppress_health_check=_SLOW_IS_FINE)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "ci")

# Ctrl-C and hang-up as a terminal delivers them: a suite started in the background of a
# script (`./run-tests &`, nohup) inherits SIGINT and SIGHUP ignored, and so would every gravity
# process a test starts — the tests of what those signals do would then see nothing happen.
# Ignored is inherited through exec; a handler is not (the children start with the default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
    signal.signal(signal.SIGHUP, lambda *_: None)

pytest_plugins = ["tests.fixtures_etcd", "tests.hosts", "tests.blobs_support"]

# A test that uses one of these fixtures talks to a real etcd server: it is marked `etcd`.
ETCD_FIXTURES = frozenset({"etcd_server", "etcd_url", "private_etcd"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `etcd` each test that uses a real etcd: through one of ETCD_FIXTURES, or run with
    the parameter value "etcd" (the `any_store` fixture, a `store` or `backend` parameter).
    Tests that reach etcd another way carry the mark themselves; `etcd_url` and
    `private_etcd` fail a test that uses them without it, so `--fast` never needs etcd.
    Mark `browser` each test using the `browser` fixture (`hosts`: see tests/hosts.py)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        spec = getattr(item, "callspec", None)
        params = spec.params.values() if spec is not None else ()
        if ETCD_FIXTURES & names or any(isinstance(v, str) and v == "etcd" for v in params):
            item.add_marker(pytest.mark.etcd)
        if "browser" in names:
            item.add_marker(pytest.mark.browser)


def leaf_states(doc: dict) -> dict[str, str]:
    """Leaf phase ID -> state from a plan document (`gravity plan -o json`, `/api/plan`)."""
    out: dict[str, str] = {}

    def walk(phases: list[dict]) -> None:
        for p in phases:
            if "phases" in p:
                walk(p["phases"])
            else:
                out[p["id"]] = p["state"]

    walk(doc["phases"])
    return out


@dataclass
class Gravity:
    """Runs `gravity` in a subprocess with its own state dir, like an operator's shell."""

    state_dir: Path
    tmp: Path
    extra_env: dict[str, str]

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("GRAVITY_STORE", None)
        env["GRAVITY_STATE_DIR"] = str(self.state_dir)
        env.setdefault("GRAVITY_LEASE_TTL", "3")
        env.update(self.extra_env)
        env.update(extra)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "engine.cli.main", *args]

    def __call__(self, *args: str, check: int | None = None, timeout: float = 120,
                 **env: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True,
                              env=self.env(**env), timeout=timeout, cwd=self.tmp)
        if check is not None:
            assert proc.returncode == check, (
                f"gravity {' '.join(args)} exited {proc.returncode}, expected {check}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def spawn(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env(**env),
                                cwd=self.tmp)

    def create(self, plan_text: str, op_id: str = "op1", name: str = "plan.yaml") -> str:
        """Write `plan_text` to `name` and create operation `op_id` from it."""
        path = self.tmp / name
        path.write_text(textwrap.dedent(plan_text))
        out = self("operation", "create", "--plan", str(path), "--id", op_id, check=0).stdout
        assert out.strip() == op_id
        return op_id

    def plan_json(self, *args: str) -> dict:
        return json.loads(self("plan", "-o", "json", *args, check=0).stdout)

    def states(self, *args: str) -> dict[str, str]:
        """Leaf phase ID -> state, from `gravity plan -o json`."""
        return leaf_states(self.plan_json(*args))

    def node_file(self, node: str, name: str) -> Path:
        return self.state_dir / "nodes" / node / name

    @property
    def db(self) -> Path:
        return self.state_dir / "gravity.db"

    def changelog(self, op_id: str) -> list[dict]:
        """The changelog in order, as `gravity events -o json` prints it (any store)."""
        out = self("events", "--operation-id", op_id, "-o", "json", check=0).stdout
        return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def gravity(tmp_path: Path) -> Gravity:
    state = tmp_path / "state"
    return Gravity(state_dir=state, tmp=tmp_path, extra_env={})


@pytest.fixture(params=["sqlite", "etcd"])
def any_store(request: pytest.FixtureRequest, gravity: Gravity) -> str:
    """Run a test once on the embedded store and once on a real etcd (phases in-process)."""
    if request.param == "etcd":
        gravity.extra_env.update(GRAVITY_STORE=request.getfixturevalue("etcd_url"),
                                 GRAVITY_DISPATCH="local")
    return str(request.param)


@pytest.fixture
def write_plan(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(text: str, name: str = "plan.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture
def browser(tmp_path: Path):
    """Headless Debian chromium driven by Selenium through Debian's chromedriver."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = (f"the dashboard browser test needs {', '.join(missing)}: run ./run-tests, "
                   "which installs chromium, chromium-driver (apt, as root) and selenium")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1400,900",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


QUICKSTART = ROOT / "examples" / "quickstart"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A private copy of the quickstart images (v1, v2) and their inventory (nodes.yaml)."""
    dest = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, dest, symlinks=True)
    return dest
