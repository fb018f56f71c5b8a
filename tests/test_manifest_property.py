"""Property tests: whatever YAML arrives, the loader either returns a manifest or raises an
EngineError (never a KeyError, TypeError …); a manifest it returns survives to_dict and reload.

How many examples run and whether they are random comes from the hypothesis profile chosen in
tests/conftest.py (`ci` by default: derandomized; HYPOTHESIS_PROFILE=fuzz: many random ones).
"""

from __future__ import annotations

import copy
import urllib.error
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import EngineError, ManifestError
from engine.manifest import parse_manifest

SAMPLE_DIR = Path(__file__).parent / "fixtures" / "manifests" / "cluster"
SAMPLE = yaml.safe_load((SAMPLE_DIR / "app.yaml").read_text())

FIELD_NAMES = [
    "apiVersion", "kind", "metadata", "name", "resourceVersion", "nodeProfiles", "requirements",
    "ram", "min", "cpu", "volumes", "path", "capacity", "mode", "devices", "permissions",
    "network", "ports", "ranges", "protocol", "installer", "flavors", "items", "nodes",
    "profile", "count", "default", "hooks", "install", "job", "setupEndpoints", "endpoints",
    "customChecks", "script", "expandPolicy", "logo", "releaseNotes", "eula", "source",
]  # fmt: skip
INTERESTING = [
    "", "file://notes.html", "file://missing.txt", "file:///", "file://", "0755", "0999",
    "32GB", "1.5GiB", "50MB/s", "8080", "10000-10005", "10-5", "0", "65536", "fixed",
    "fixed-instance", "tcp", "udp", "batch/v1", "Job", "Cluster", "Bundle", "1.0.0",
    "1.2.3-alpha.1", "small", "db", "worker", "rwm", "url(data:image/png;base64,AA==)",
    "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\n"
    "spec: {template: {spec: {containers: [{name: c, image: i}]}}}\n",
    "a: [1", "- x\n- y\n", "http://example.invalid/x",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(INTERESTING)
)
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=8)
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


def _no_network(*args: Any, **kwargs: Any) -> Any:
    raise urllib.error.URLError("network disabled in property tests")


def check(text: str, tmp: Path) -> None:
    """Load `text`; on success, the normalized form must load back to an equal manifest."""
    with mock.patch("urllib.request.urlopen", _no_network):
        try:
            loaded = parse_manifest(text, path=tmp / "app.yaml", base_dir=SAMPLE_DIR)
        except ManifestError as exc:
            assert exc.problems, "a ManifestError must say what is wrong"
            assert all(p.message for p in exc.problems)
            return
        except EngineError:
            return
        again = parse_manifest(
            yaml.safe_dump(loaded.manifest.to_dict()), path=tmp / "again.yaml", base_dir=tmp
        )
        assert again.manifest == loaded.manifest


@given(tree=trees)
def test_random_trees_never_crash(tree: object, tmp_path_factory: Any) -> None:
    check(yaml.safe_dump(tree), tmp_path_factory.mktemp("m"))


@given(text=st.text(max_size=200))
def test_random_text_never_crashes(text: str, tmp_path_factory: Any) -> None:
    check(text, tmp_path_factory.mktemp("t"))


def _slots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key-or-index) pair in the tree, so one can be mutated."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        out.append((node, key))
        if isinstance(value, dict | list):
            _slots(value, out)
    return out


@pytest.mark.slow
@given(data=st.data())
def test_mutated_sample_never_crashes(data: st.DataObject, tmp_path_factory: Any) -> None:
    manifest = copy.deepcopy(SAMPLE)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="mutations")):
        slots = _slots(manifest, [])
        container, key = slots[data.draw(st.integers(0, len(slots) - 1), label="slot")]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]), label="action")
        if action == "replace":
            container[key] = data.draw(trees, label="value")
        elif action == "delete":
            del container[key]
        elif isinstance(container, dict):
            container[data.draw(keys, label="key")] = data.draw(trees, label="value")
        else:
            container.append(data.draw(trees, label="value"))
    check(yaml.safe_dump(manifest), tmp_path_factory.mktemp("s"))


def _set(tree: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    node: Any = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


# An optional section given but empty used to be left out by to_dict and so read back as
# absent: a different manifest. The first case is the one CI met (nodeProfiles[0]'s network
# replaced with {}, and an apiVersion key added in it, which only warns).
EMPTY_SECTIONS = [
    (("nodeProfiles", 0, "requirements", "network"), {}),
    (("nodeProfiles", 0, "requirements", "network"), {"apiVersion": "v1"}),
    (("nodeProfiles", 0, "providers"), {}),
    (("nodeProfiles", 0, "providers"), {"aws": {}}),
    (("nodeProfiles", 0, "systemOptions"), {}),
    (("providers", "aws"), {}),
    (("providers", "aws"), {"terraform": {}}),
    (("systemOptions", "runtime"), {}),
]


@pytest.mark.parametrize(("path", "value"), EMPTY_SECTIONS,
                         ids=[".".join(map(str, p)) + f"={v}" for p, v in EMPTY_SECTIONS])
def test_an_empty_optional_section_survives_to_dict_and_reload(
        path: tuple[str | int, ...], value: object, tmp_path: Path) -> None:
    manifest = _set(copy.deepcopy(SAMPLE), path, copy.deepcopy(value))
    loaded = parse_manifest(yaml.safe_dump(manifest), path=tmp_path / "app.yaml",
                            base_dir=SAMPLE_DIR)
    check(yaml.safe_dump(manifest), tmp_path)
    # And the normalized form says what was given: the section, present and empty.
    node: Any = loaded.manifest.to_dict()
    for key in path:
        node = node[key]
    assert node == {k: v for k, v in value.items() if k != "apiVersion"}
