"""What an upgrade carries over and what it shows first: the release notes before anything runs,
the version only forward (unless asked), Helm 3's rules for the last release's values, an expand
that never touches them, and the endpoints after install.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.operations.releases import Reuse, upgrade_values, version_key
from tests.conftest import Gravity

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"


@pytest.fixture
def installed(gravity: Gravity, tmp_path: Path) -> Path:
    for version in ("v1", "v2"):
        shutil.copytree(QUICKSTART / version, tmp_path / version)
    proc = gravity("install", str(tmp_path / "v1"), "--nodes", str(QUICKSTART / "nodes.yaml"),
                   "--set", "greeting=hello", "--set", "db.user=app", "--id", "install-1",
                   check=0)
    assert "Endpoints:\n  Web (service quickstart-web): The quickstart's page" in proc.stdout
    return tmp_path


def master_values(g: Gravity) -> str:
    return g.node_file("node-1", "app/values.yaml").read_text()


def ops(g: Gravity) -> list[str]:
    return [r["id"] for r in json.loads(g("operation", "list", "-o", "json", check=0).stdout)]


@pytest.mark.slow  # a whole cluster installed, then changed
def test_release_notes_come_first_and_a_dry_run_writes_nothing(
        gravity: Gravity, installed: Path) -> None:
    before = ops(gravity)
    dry = gravity("upgrade", str(installed / "v2"), "--dry-run", check=0)
    assert dry.stdout.startswith("Release notes of quickstart 2.0.0:\nquickstart 2.0.0: "
                                 "runtime 2.0.0 and a new application bundle.\n")
    assert "values: the last values (from install-1), reused" in dry.stdout
    assert "nothing was written" in dry.stdout and ops(gravity) == before
    run = gravity("upgrade", str(installed / "v2"), "--id", "upgrade-1", check=0)
    assert run.stdout.index("Release notes") < run.stdout.index("created operation")
    assert "Web (service quickstart-web)" in gravity("status", check=0).stdout


@pytest.mark.slow  # a whole cluster installed, then changed
def test_the_version_only_goes_forward_unless_asked(gravity: Gravity, installed: Path) -> None:
    same = gravity("upgrade", str(installed / "v1"), check=3)
    assert "the image is version 1.0.0 and the cluster runs 1.0.0: the installed version" \
        in same.stderr and "--skip-version-check" in same.stderr
    gravity("upgrade", str(installed / "v2"), "--id", "upgrade-1", check=0)
    down = gravity("upgrade", str(installed / "v1"), check=3)
    assert "the image is version 1.0.0 and the cluster runs 2.0.0: a downgrade" in down.stderr
    assert ops(gravity) == ["install-1", "upgrade-1"]
    gravity("upgrade", str(installed / "v1"), "--skip-version-check", "--id", "back",
            check=0)


@pytest.mark.slow  # a whole cluster installed, then changed
def test_values_follow_helm_3_across_upgrades_and_expand_keeps_them(
        gravity: Gravity, installed: Path) -> None:
    assert "greeting: hello" in master_values(gravity)
    # expand: the new node's hooks get the current values; the master's file is untouched
    before = master_values(gravity)
    gravity("expand", "--node", "node-4", "--address", "10.0.0.4", "--profile", "worker",
            check=0)
    assert master_values(gravity) == before
    # nothing given: the last values are reused
    reused = gravity("upgrade", str(installed / "v2"), "--id", "u1", check=0)
    assert "values: the last values (from install-1), reused" in reused.stdout
    assert "greeting: hello" in master_values(gravity)
    # something given: only that (the last ones are not reused)
    (installed / "v3").mkdir()
    shutil.copytree(installed / "v2", installed / "v3", dirs_exist_ok=True)
    app = installed / "v3" / "app.yaml"
    app.write_text(app.read_text().replace("resourceVersion: 2.0.0", "resourceVersion: 3.0.0"))
    only = gravity("upgrade", str(installed / "v3"), "--set", "color=blue", "--id", "u2",
                   check=0)
    assert "values: only the values given (pass --reuse-values" in only.stdout
    assert "greeting" not in master_values(gravity) and "color: blue" in master_values(gravity)
    # --reuse-values: merged over the last ones
    app.write_text(app.read_text().replace("resourceVersion: 3.0.0", "resourceVersion: 3.1.0"))
    merged = gravity("upgrade", str(installed / "v3"), "--set", "size=2", "--reuse-values",
                     "--id", "u3", check=0)
    assert "values: the last values (from u2), with the given ones merged over them" \
        in merged.stdout
    assert "color: blue" in master_values(gravity) and "size: 2" in master_values(gravity)
    clash = gravity("upgrade", str(installed / "v3"), "--reuse-values", "--reset-values",
                    check=2)
    assert "at most one of" in clash.stderr


@pytest.mark.parametrize(("given_any", "mode", "expected"), [
    (False, Reuse.DEFAULT, {"a": 1, "b": {"c": 2}}),
    (True, Reuse.DEFAULT, {"b": {"d": 3}}),
    (True, Reuse.REUSE, {"a": 1, "b": {"c": 2, "d": 3}}),
    (True, Reuse.RESET_THEN_REUSE, {"a": 1, "b": {"c": 2, "d": 3}}),
    (False, Reuse.RESET, {}),
])
def test_the_values_rules(given_any: bool, mode: Reuse, expected: dict) -> None:
    previous = {"a": 1, "b": {"c": 2}}
    given = {"b": {"d": 3}} if given_any else {}
    values, _ = upgrade_values(previous, given, given_any, mode, "op-1")
    assert values == expected


@pytest.mark.parametrize(("older", "newer"), [
    ("1.0.0", "1.0.1"), ("1.9.0", "1.10.0"), ("2.0.0-rc.1", "2.0.0"),
    ("2.0.0-alpha", "2.0.0-beta"), ("2.0.0-rc.2", "2.0.0-rc.10"), ("1.0", "1.0.1"),
])
def test_versions_sort_as_semver(older: str, newer: str) -> None:
    assert version_key(older) < version_key(newer)
