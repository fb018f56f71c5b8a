"""Merging values the way hooks will see them: files in order, overrides in command-line
order, deep map merges, list replacement, null removal; values files and atomic writes."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.errors import EngineError, ValuesError
from engine.redact import redact_values
from engine.values import (
    deep_merge,
    load_values_file,
    merge_values,
    write_values_file,
)


def vfile(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# (base, override, expected deep_merge result)
MERGE_CASES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
    ({"a": 1}, {"a": 2}, {"a": 2}),
    ({"m": {"x": 1, "y": 2}}, {"m": {"y": 3, "z": 4}}, {"m": {"x": 1, "y": 3, "z": 4}}),
    ({"m": {"n": {"x": 1}}}, {"m": {"n": {"y": 2}}}, {"m": {"n": {"x": 1, "y": 2}}}),
    ({"l": [1, 2, 3]}, {"l": [9]}, {"l": [9]}),  # lists are replaced, not merged
    ({"l": [{"a": 1}]}, {"l": [{"b": 2}]}, {"l": [{"b": 2}]}),
    ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),  # null removes
    ({"m": {"x": 1, "y": 2}}, {"m": {"x": None}}, {"m": {"y": 2}}),
    ({"a": 1}, {"missing": None}, {"a": 1}),
    ({"m": {"x": 1}}, {"m": 5}, {"m": 5}),  # a scalar replaces a map
    ({"m": 5}, {"m": {"x": 1}}, {"m": {"x": 1}}),  # and a map replaces a scalar
    ({"m": 5}, {"m": {"x": None, "y": 1}}, {"m": {"y": 1}}),
    ({}, {"a": {"b": None}}, {"a": {}}),
    ({"a": {"b": 1}}, {}, {"a": {"b": 1}}),
]


@pytest.mark.parametrize(("base", "override", "expected"), MERGE_CASES)
def test_deep_merge(
    base: dict[str, Any], override: dict[str, Any], expected: dict[str, Any]
) -> None:
    before = (yaml.safe_dump(base), yaml.safe_dump(override))
    merged = deep_merge(base, override)
    assert merged == expected
    assert (yaml.safe_dump(base), yaml.safe_dump(override)) == before  # inputs untouched


def test_deep_merge_result_shares_nothing_with_inputs() -> None:
    base = {"m": {"l": [1]}, "k": {"x": 1}}
    merged = deep_merge(base, {"k": {"y": 2}})
    merged["m"]["l"].append(2)
    merged["k"]["x"] = 9
    assert base == {"m": {"l": [1]}, "k": {"x": 1}}


def test_deep_merge_rejects_non_mappings() -> None:
    with pytest.raises(ValuesError, match="must be mappings"):
        deep_merge({"a": 1}, ["not", "a", "map"])  # type: ignore[arg-type]


def test_precedence_files_then_overrides_in_order(tmp_path: Path) -> None:
    first = vfile(
        tmp_path,
        "first.yaml",
        """\
        image: {repo: nginx, tag: "1.9"}
        replicas: 1
        ports: [80, 443]
        debug: true
        extra: {keep: me}
        """,
    )
    second = vfile(
        tmp_path,
        "second.yaml",
        """\
        image: {tag: "1.11"}
        ports: [8080]
        debug: null
        """,
    )
    cert = vfile(tmp_path, "cert.pem", "PEM\n")
    merged = merge_values(
        [first, second],
        [
            ("set", "replicas=3,image.tag=2.0"),
            ("set-string", "replicas=4"),
            ("set", "ports[1]=9090"),
            ("set-file", f"tls={cert}"),
            ("set", "extra=null"),
        ],
    )
    assert merged == {
        "image": {"repo": "nginx", "tag": "2.0"},  # --set types 2.0 as a string
        "replicas": "4",  # the later --set-string wins over the earlier --set
        "ports": [8080, 9090],  # later file replaced the list; --set edited one item
        "tls": "PEM\n",
    }


def test_order_of_overrides_matters(tmp_path: Path) -> None:
    assert merge_values([], [("set", "a=1"), ("set-string", "a=2")]) == {"a": "2"}
    assert merge_values([], [("set-string", "a=2"), ("set", "a=1")]) == {"a": 1}


def test_set_null_removes_a_key_from_files(tmp_path: Path) -> None:
    path = vfile(tmp_path, "v.yaml", "a: {b: 1, c: 2}\nd: 3\n")
    assert merge_values([path], [("set", "a.b=null,d=null")]) == {"a": {"c": 2}}
    assert merge_values([], [("set", "gone=null")]) == {}


def test_nulls_inside_lists_are_kept(tmp_path: Path) -> None:
    assert merge_values([], [("set", "a[2]=x")]) == {"a": [None, None, "x"]}


def test_set_after_null_builds_fresh_map() -> None:
    assert merge_values([], [("set", "a=null"), ("set", "a.b=1")]) == {"a": {"b": 1}}


def test_set_conflicting_with_file_value_is_an_error(tmp_path: Path) -> None:
    path = vfile(tmp_path, "v.yaml", "image: nginx\n")
    with pytest.raises(ValuesError) as raised:
        merge_values([path], [("set", "image.tag=1.2")])
    assert raised.value.message == (
        '--set "image.tag=1.2": cannot set "image.tag": "image" is a string, not a mapping '
        "at position 6"
    )


def test_values_file_keys_become_text(tmp_path: Path) -> None:
    path = vfile(tmp_path, "v.yaml", "2: two\ntrue: yes\nnull: nothing\n2020-01-02: day\n")
    assert load_values_file(path) == {
        "2": "two",
        "true": True,
        "null": "nothing",
        "2020-01-02": "day",
    }


@pytest.mark.parametrize("text", ["", "# only a comment\n", "~\n"])
def test_empty_values_file_is_empty(tmp_path: Path, text: str) -> None:
    assert load_values_file(vfile(tmp_path, "v.yaml", text)) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "the top level must be a mapping of keys to values, got a list"),
        ("just text\n", "the top level must be a mapping of keys to values, got a string"),
        ("a: 1\n  b: 2\n", "invalid YAML at line 2, column 4: mapping values are not allowed"),
        ("a: [1, 2\n", "invalid YAML at line 2, column 1"),
        ("a: !!python/object:os.system x\n", "invalid YAML at line 1, column 4"),
        ("when: 2020-02-30\n", "invalid YAML: day is out of range for month"),
    ],
)
def test_malformed_values_files(tmp_path: Path, text: str, message: str) -> None:
    path = vfile(tmp_path, "bad.yaml", text)
    with pytest.raises(ValuesError) as raised:
        merge_values([path], [])
    assert raised.value.message.startswith(f"values file {path}: ")
    assert message in raised.value.message


def test_missing_values_file(tmp_path: Path) -> None:
    with pytest.raises(ValuesError, match=r"values file .*absent\.yaml: cannot read: No such file"):
        merge_values([tmp_path / "absent.yaml"], [])


def test_write_values_file_is_private_atomic_and_readable_back(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "values.yaml"
    values = {
        "image": {"tag": "1.2"},
        "replicas": 3,
        "list": [1, None, "x"],
        "flag": True,
        "cert": "-----BEGIN-----\nabc\n-----END-----\n",
    }
    write_values_file(target, values)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert yaml.safe_load(target.read_text()) == values
    assert "cert: |\n" in target.read_text()  # multi-line text stays a readable block
    assert load_values_file(target) == values
    write_values_file(target, {"replaced": 1})
    assert yaml.safe_load(target.read_text()) == {"replaced": 1}
    assert sorted(os.listdir(target.parent)) == ["values.yaml"]  # no temp files left behind


def test_write_values_file_refuses_unserializable_values(tmp_path: Path) -> None:
    with pytest.raises(ValuesError):
        write_values_file(tmp_path / "v.yaml", {"obj": object()})
    assert not (tmp_path / "v.yaml").exists()


def test_write_values_file_reports_os_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(EngineError, match="cannot write values file"):
        write_values_file(blocker / "values.yaml", {"a": 1})


def test_redacted_values_keep_their_keys_and_hide_every_value() -> None:
    values = {"db": {"password": "s3cret", "port": 5432, "tls": None},
              "hosts": ["a", {"name": "b"}], "empty": {}, "none": []}
    assert redact_values(values) == {
        "db": {"password": "***", "port": "***", "tls": "***"},
        "hosts": ["***", {"name": "***"}], "empty": {}, "none": []}
    assert values["db"]["password"] == "s3cret"  # pure: the values themselves are untouched
