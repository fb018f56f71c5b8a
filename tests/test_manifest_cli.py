"""`gravity manifest validate|show` through real subprocesses: the seed samples round-trip,
an invalid manifest exits 2 with every problem, warnings go to stderr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from engine.manifest import load_manifest

if TYPE_CHECKING:
    from conftest import Gravity

FIXTURES = Path(__file__).parent / "fixtures" / "manifests"


def test_validate_cluster_sample(gravity: Gravity) -> None:
    proc = gravity("manifest", "validate", str(FIXTURES / "cluster"), check=0)
    assert proc.stdout == (
        f"manifest {FIXTURES / 'cluster' / 'app.yaml'} is valid: Cluster MyCluster "
        "1.2.3-alpha.1 (2 profiles, 2 flavors, hooks: install, postInstall)\n"
    )
    assert proc.stderr == ""


def test_validate_bundle_sample_by_file(gravity: Gravity) -> None:
    proc = gravity("manifest", "validate", str(FIXTURES / "bundle" / "app.yaml"), check=0)
    assert "is valid: Bundle ApplicationName 0.0.1-alpha.1 (2 profiles, 2 flavors" in proc.stdout


def test_show_yaml_round_trips_both_samples(gravity: Gravity, tmp_path: Path) -> None:
    for name in ("cluster", "bundle"):
        shown = gravity("manifest", "show", str(FIXTURES / name), check=0).stdout
        data = yaml.safe_load(shown)
        original = load_manifest(FIXTURES / name).manifest
        assert data == original.to_dict()
        # Hook jobs are printed as readable literal blocks, not escaped one-liners.
        assert "    job: |\n      apiVersion: batch/v1\n" in shown
        # The printed manifest is itself a valid manifest describing the same image.
        copy = tmp_path / name / "app.yaml"
        copy.parent.mkdir()
        copy.write_text(shown)
        gravity("manifest", "validate", "--strict", str(copy), check=0)
        assert load_manifest(copy).manifest == original


def test_show_json(gravity: Gravity) -> None:
    proc = gravity("manifest", "show", "-o", "json", str(FIXTURES / "cluster"), check=0)
    data = json.loads(proc.stdout)
    assert data["metadata"] == {
        "name": "MyCluster",
        "resourceVersion": "1.2.3-alpha.1",
        "description": "Description of the Cluster Image\n",
        "author": "Alice <alice@example.com>",
    }
    assert data["logo"] == "http://example.com/logo.png"
    assert data["releaseNotes"] == (FIXTURES / "cluster" / "notes.html").read_text()
    assert data["nodeProfiles"][0]["requirements"]["network"]["ports"][0]["ranges"] == [
        "8080",
        "10000-10005",
    ]
    assert sorted(data["hooks"]) == ["install", "postInstall"]


def test_validate_reports_every_problem_and_exits_2(gravity: Gravity, tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(
        "metadata:\n  name: bad-name\n  resourceVersion: one\n"
        "installer:\n  setupEndpoints: [Nowhere]\n"
        "nodeProfiles:\n  - name: a\n    requirements:\n      ram: {min: 3 cups}\n"
        "  - name: a\n"
        "surprise: true\n"
    )
    proc = gravity("manifest", "validate", str(path), check=2)
    assert proc.stdout == ""
    err = proc.stderr.splitlines()
    assert err[0] == f"warning: {path}: surprise: unknown field"
    assert err[1] == f"error: manifest {path} is invalid (5 problems)"
    assert err[2:7] == [
        f"  - {path}: metadata.name: expected a single alphanumeric word (A-Z, a-z, 0-9), "
        "got 'bad-name'",
        f"  - {path}: metadata.resourceVersion: expected a SemVer 2.0 version like 1.2.3 or "
        "1.2.3-alpha.1, got 'one'",
        f'  - {path}: nodeProfiles[0].requirements.ram.min: expected a size like "32GB", '
        '"512MB", "4GiB" or a number of bytes, got \'3 cups\'',
        f"  - {path}: nodeProfiles[1].name: duplicate profile name 'a': already defined at "
        "nodeProfiles[0]",
        f"  - {path}: installer.setupEndpoints[0]: endpoint 'Nowhere' is not defined in "
        "endpoints; none are defined",
    ]
    assert err[7].startswith("  hint: ")


def test_strict_turns_unknown_fields_into_exit_2(gravity: Gravity, tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text("metadata: {name: Ok, resourceVersion: 1.0.0, team: x}\n")
    ok = gravity("manifest", "validate", str(path), check=0)
    assert ok.stderr == f"warning: {path}: metadata.team: unknown field\n"
    strict = gravity("manifest", "validate", "--strict", str(path), check=2)
    assert f"  - {path}: metadata.team: unknown field" in strict.stderr
    gravity("manifest", "show", "--strict", str(path), check=2)


def test_missing_manifest_exits_2(gravity: Gravity, tmp_path: Path) -> None:
    proc = gravity("manifest", "validate", str(tmp_path), check=2)
    assert f"error: no manifest in {tmp_path}" in proc.stderr
