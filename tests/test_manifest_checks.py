"""Every validation rule has a failing manifest: `gravity manifest validate` exits 2 and names
the exact field path; a manifest breaking all rules gets every problem reported at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.cli.main import main
from engine.errors import ManifestError
from engine.manifest import load_manifest


def base() -> dict[str, Any]:
    """A small valid manifest touching every cross-referenced section."""
    return {
        "apiVersion": "cluster.gravitational.io/v2",
        "kind": "Cluster",
        "metadata": {"name": "Shop", "resourceVersion": "1.0.0"},
        "endpoints": [{"name": "Setup", "serviceName": "setup"}],
        "installer": {
            "setupEndpoints": ["Setup"],
            "flavors": {
                "default": "one",
                "items": [
                    {
                        "name": "one",
                        "nodes": [{"profile": "node", "count": 1}, {"profile": "db", "count": 1}],
                    }
                ],
            },
        },
        "nodeProfiles": [
            {
                "name": "node",
                "requirements": {
                    "cpu": {"min": 2},
                    "ram": {"min": "1GB"},
                    "volumes": [{"path": "/data", "capacity": "10GB"}],
                    "network": {
                        "minTransferRate": "10MB/s",
                        "ports": [{"protocol": "tcp", "ranges": ["80", "8000-8010"]}],
                    },
                },
            },
            {"name": "db"},
        ],
        "hooks": {
            "install": {
                "job": yaml.safe_dump(
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "metadata": {"name": "install"},
                        "spec": {
                            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}
                        },
                    }
                )
            }
        },
    }


def run(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the real CLI entry point in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def save(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting a dotted path with [i] indexes, e.g. nodeProfiles[0].name."""

    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        parts = path.replace("]", "").replace("[", ".").split(".")
        for part in parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target[part]
        last = parts[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.pop(key)


def _append_profile(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["nodeProfiles"].append({"name": name})


def _append_flavor(name: str) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["installer"]["flavors"]["items"].append(
            {"name": name, "nodes": [{"profile": "db", "count": 1}]}
        )

    return mutate


PORTS = "nodeProfiles[0].requirements.network.ports[0]"
JOB = "hooks.install.job"

# (id, mutation, exact field path expected, fragment of the message)
CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("metadata-missing", _delete("metadata"), "metadata", "is required"),
    ("name-dash", _set("metadata.name", "my-shop"), "metadata.name", "alphanumeric"),
    ("name-space", _set("metadata.name", "my shop"), "metadata.name", "alphanumeric"),
    ("name-missing", _set("metadata.name", None), "metadata.name", "is required"),
    ("semver-short", _set("metadata.resourceVersion", "1.2"), "metadata.resourceVersion", "SemVer"),
    ("semver-v", _set("metadata.resourceVersion", "v1.2.3"), "metadata.resourceVersion", "SemVer"),
    (
        "semver-zero",
        _set("metadata.resourceVersion", "01.2.3"),
        "metadata.resourceVersion",
        "SemVer",
    ),
    ("kind", _set("kind", "Pod"), "kind", "expected Cluster or Bundle"),
    ("api-version", _set("apiVersion", "v1"), "apiVersion", "cluster.gravitational.io/v2"),
    ("kind-mismatch", _set("kind", "Bundle"), "kind", "expected Cluster"),
    (
        "flavor-default",
        _set("installer.flavors.default", "two"),
        "installer.flavors.default",
        "flavor 'two' is not defined; expected one of: one",
    ),
    (
        "flavor-profile",
        _set("installer.flavors.items[0].nodes[1].profile", "ghost"),
        "installer.flavors.items[0].nodes[1].profile",
        "profile 'ghost' is not defined",
    ),
    (
        "flavor-profile-twice",
        _set("installer.flavors.items[0].nodes[1].profile", "node"),
        "installer.flavors.items[0].nodes[1].profile",
        "listed twice",
    ),
    (
        "flavor-count",
        _set("installer.flavors.items[0].nodes[0].count", 0),
        "installer.flavors.items[0].nodes[0].count",
        "from 1 to",
    ),
    (
        "flavor-duplicate",
        _append_flavor("one"),
        "installer.flavors.items[1].name",
        "duplicate flavor name 'one'",
    ),
    (
        "flavor-empty",
        _set("installer.flavors.items", []),
        "installer.flavors.items",
        "at least one flavor",
    ),
    (
        "setup-endpoint",
        _set("installer.setupEndpoints", ["Setup", "Wizard"]),
        "installer.setupEndpoints[1]",
        "endpoint 'Wizard' is not defined",
    ),
    (
        "endpoint-duplicate",
        lambda d: d["endpoints"].append({"name": "Setup"}),
        "endpoints[1].name",
        "duplicate endpoint name 'Setup'",
    ),
    (
        "profile-duplicate",
        _append_profile("node"),
        "nodeProfiles[2].name",
        "duplicate profile name 'node': already defined at nodeProfiles[0]",
    ),
    ("profile-unnamed", _set("nodeProfiles[1].name", ""), "nodeProfiles[1].name", "empty"),
    ("port-zero", _set(f"{PORTS}.ranges", ["0"]), f"{PORTS}.ranges[0]", "expected 1-65535"),
    ("port-high", _set(f"{PORTS}.ranges", ["80", "65536"]), f"{PORTS}.ranges[1]", "1-65535"),
    ("port-reversed", _set(f"{PORTS}.ranges", ["9-5"]), f"{PORTS}.ranges[0]", "start <= end"),
    ("port-text", _set(f"{PORTS}.ranges", ["http"]), f"{PORTS}.ranges[0]", "expected a port"),
    ("port-protocol", _set(f"{PORTS}.protocol", "sctp"), f"{PORTS}.protocol", "tcp, udp"),
    (
        "ram-unit",
        _set("nodeProfiles[0].requirements.ram.min", "1 parsec"),
        "nodeProfiles[0].requirements.ram.min",
        "expected a size",
    ),
    (
        "ram-missing",
        _set("nodeProfiles[0].requirements.ram", {"max": "1GB"}),
        "nodeProfiles[0].requirements.ram.min",
        "is required",
    ),
    (
        "capacity-unit",
        _set("nodeProfiles[0].requirements.volumes[0].capacity", "lots"),
        "nodeProfiles[0].requirements.volumes[0].capacity",
        "expected a size",
    ),
    (
        "rate-unit",
        _set("nodeProfiles[0].requirements.network.minTransferRate", "10MB"),
        "nodeProfiles[0].requirements.network.minTransferRate",
        '"50MB/s"',
    ),
    (
        "cpu-type",
        _set("nodeProfiles[0].requirements.cpu.min", "many"),
        "nodeProfiles[0].requirements.cpu.min",
        "expected an integer",
    ),
    (
        "expand-policy",
        _set("nodeProfiles[0].expandPolicy", "elastic"),
        "nodeProfiles[0].expandPolicy",
        "fixed, fixed-instance",
    ),
    (
        "volume-mode",
        _set("nodeProfiles[0].requirements.volumes[0].mode", "0999"),
        "nodeProfiles[0].requirements.volumes[0].mode",
        "octal",
    ),
    (
        "volume-path",
        _set("nodeProfiles[0].requirements.volumes[0]", {"name": "x"}),
        "nodeProfiles[0].requirements.volumes[0].path",
        "is required",
    ),
    (
        "device-permissions",
        _set("nodeProfiles[0].requirements.devices", [{"path": "/d", "permissions": "rwx"}]),
        "nodeProfiles[0].requirements.devices[0].permissions",
        "r (read), w (write) and m",
    ),
    (
        "check-script",
        _set("nodeProfiles[0].requirements.customChecks", [{"description": "x"}]),
        "nodeProfiles[0].requirements.customChecks[0].script",
        "is required",
    ),
    (
        "check-file",
        _set("nodeProfiles[0].requirements.customChecks", [{"script": "file://no.sh"}]),
        "nodeProfiles[0].requirements.customChecks[0].script",
        "cannot read file://no.sh",
    ),
    (
        "release-notes-file",
        _set("releaseNotes", "file://absent.html"),
        "releaseNotes",
        "No such file",
    ),
    (
        "uri-scheme",
        _set("releaseNotes", "ftp://host/notes"),
        "releaseNotes",
        "unsupported URI scheme 'ftp'",
    ),
    ("hook-not-job", _set(f"{JOB}", "just text"), JOB, "expected a Kubernetes Job"),
    ("hook-yaml", _set(f"{JOB}", "a: [1"), JOB, "not valid YAML"),
    (
        "hook-kind",
        _set(f"{JOB}", "apiVersion: batch/v1\nkind: Pod\nmetadata: {name: x}\n"),
        f"{JOB}.kind",
        "expected 'Job'",
    ),
    (
        "hook-containers",
        _set(f"{JOB}", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\n"),
        f"{JOB}.spec.template.spec.containers",
        "at least one container",
    ),
    (
        "hook-image",
        _set(
            f"{JOB}",
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\n"
            "spec: {template: {spec: {containers: [{name: c}]}}}\n",
        ),
        f"{JOB}.spec.template.spec.containers[0].image",
        "is required",
    ),
    (
        "hook-restart",
        _set(
            f"{JOB}",
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\n"
            "spec: {template: {spec: {restartPolicy: Always, "
            "containers: [{name: c, image: i}]}}}\n",
        ),
        f"{JOB}.spec.template.spec.restartPolicy",
        "OnFailure or Never",
    ),
    ("hook-file", _set(f"{JOB}", "file://hook.yaml"), JOB, "cannot read file://hook.yaml"),
    ("bool-type", _set("license", {"enabled": "yes please"}), "license.enabled", "true or false"),
    ("not-a-list", _set("endpoints", {"name": "x"}), "endpoints", "expected a list"),
    ("not-a-mapping", _set("installer", ["x"]), "installer", "expected a mapping"),
]


def test_base_manifest_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run("manifest", "validate", str(save(tmp_path, base())), capsys=capsys)
    assert (code, err) == (0, "")
    assert "is valid: Cluster Shop 1.0.0 (2 profiles, 1 flavors, hooks: install)" in out


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_rule_fails_with_its_field_path(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mutate: Callable[[dict[str, Any]], None],
    field: str,
    fragment: str,
) -> None:
    data = base()
    mutate(data)
    path = save(tmp_path, data)
    code, out, err = run("manifest", "validate", str(path), capsys=capsys)
    assert code == 2, err
    assert out == ""
    lines = [line for line in err.splitlines() if line.startswith("  - ")]
    matching = [line for line in lines if line.startswith(f"  - {path}: {field}: ")]
    assert matching, f"no problem at {field!r} in:\n{err}"
    assert any(fragment in line for line in matching), err
    # The API reports the same problem with the same file and field.
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    assert any(p.field == field and p.file == str(path) for p in raised.value.problems)


def test_all_problems_are_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Independent mistakes in different sections are all listed in one run."""
    picked = [
        "name-dash",
        "flavor-default",
        "flavor-profile",
        "setup-endpoint",
        "profile-duplicate",
        "port-reversed",
        "ram-unit",
        "rate-unit",
        "expand-policy",
        "hook-image",
        "bool-type",
    ]
    data = base()
    expected = []
    for case_id, mutate, field, _ in CASES:
        if case_id in picked:
            mutate(data)
            expected.append(field)
    data["installer"]["flavors"]["items"].append(
        {"name": "one", "nodes": [{"profile": "db", "count": 1}]}
    )
    expected.append("installer.flavors.items[1].name")
    path = save(tmp_path, data)
    code, _, err = run("manifest", "validate", str(path), capsys=capsys)
    assert code == 2
    reported = [line for line in err.splitlines() if line.startswith("  - ")]
    for field in expected:
        assert any(line.startswith(f"  - {path}: {field}: ") for line in reported), (field, err)
    assert f"manifest {path} is invalid ({len(reported)} problems)" in err
    assert len(reported) >= len(expected)


def test_unknown_fields_warn_and_fail_when_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = base()
    data["colour"] = "blue"
    data["nodeProfiles"][0]["requirements"]["gpu"] = {"min": 1}
    data["hooks"]["preInstall"] = {"job": "x"}
    path = save(tmp_path, data)
    code, out, err = run("manifest", "validate", str(path), capsys=capsys)
    assert code == 0
    assert "is valid" in out
    warnings = sorted(line for line in err.splitlines() if line.startswith("warning: "))
    assert warnings == sorted(
        f"warning: {path}: {field}: unknown field"
        for field in ("colour", "nodeProfiles[0].requirements.gpu", "hooks.preInstall")
    )
    loaded = load_manifest(path)
    assert {w.field for w in loaded.warnings} == {
        "colour",
        "nodeProfiles[0].requirements.gpu",
        "hooks.preInstall",
    }
    code, out, err = run("manifest", "validate", "--strict", str(path), capsys=capsys)
    assert code == 2 and out == ""
    assert f"manifest {path} is invalid (3 problems)" in err
    assert f"  - {path}: nodeProfiles[0].requirements.gpu: unknown field" in err


def test_warnings_are_shown_even_when_the_manifest_is_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = base()
    data["colour"] = "blue"
    data["metadata"]["name"] = "bad name"
    code, _, err = run("manifest", "validate", str(save(tmp_path, data)), capsys=capsys)
    assert code == 2
    assert "warning: " in err and "colour: unknown field" in err
    assert "metadata.name: expected a single alphanumeric word" in err


def test_empty_hooks_are_not_defined(tmp_path: Path) -> None:
    data = base()
    data["hooks"].update({"uninstall": None, "update": {}, "status": {"job": ""}})
    m = load_manifest(save(tmp_path, data)).manifest
    assert [h.name.value for h in m.hooks] == ["install"]
    assert m.hook("uninstall") is None and m.hook("update") is None and m.hook("status") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "got an empty document"),
        ("- a\n- b\n", "got a list"),
        ("a: [1\n", "invalid YAML at line 2, column 1"),
        ("when: 2020-02-30\n", "invalid YAML"),
    ],
)
def test_documents_that_are_not_manifests(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    assert any(message in p.message for p in raised.value.problems), raised.value.render()
