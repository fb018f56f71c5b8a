"""Property tests: any --set text parses or raises ValuesError; escaped keys and values
round-trip through the grammar; merging never mutates its inputs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import EngineError, ValuesError
from engine.values import deep_merge, infer_type, load_values_file, merge_values, parse_set

GRAMMAR_CHARS = "=,.[]{}\\ab01-+ "


@given(text=st.text(alphabet=GRAMMAR_CHARS, max_size=30) | st.text(max_size=30))
def test_any_set_text_parses_or_raises_values_error(text: str) -> None:
    for kind in ("set", "set-string"):
        try:
            result = parse_set(text, kind=kind)
        except ValuesError as exc:
            assert "at position" in exc.message
            assert exc.message.startswith(f'--{kind} "')
        else:
            assert isinstance(result, dict)


def escape(text: str) -> str:
    """Escape every character the grammar treats specially."""
    return "".join("\\" + ch if ch in "\\,.=[]{}" else ch for ch in text)


names = st.text(min_size=1, max_size=8)
plain_values = st.text(max_size=10).filter(lambda v: not v.startswith("{"))


@given(path=st.lists(names, min_size=1, max_size=4), value=plain_values)
def test_escaped_paths_and_values_round_trip(path: list[str], value: str) -> None:
    text = ".".join(escape(p) for p in path) + "=" + escape(value)
    expected: Any = value
    for key in reversed(path):
        expected = {key: expected}
    assert parse_set(text, kind="set-string") == expected
    typed: Any = infer_type(value)
    for key in reversed(path):
        typed = {key: typed}
    assert parse_set(text) == typed


@given(items=st.lists(st.text(max_size=6), min_size=1, max_size=5), index=st.integers(0, 20))
def test_lists_and_indexes(items: list[str], index: int) -> None:
    listed = parse_set("l={" + ",".join(escape(i) for i in items) + "}", kind="set-string")
    # "{}" is the empty list, so a list holding one empty string cannot be written.
    assert listed == {"l": [] if items == [""] else items}
    indexed = parse_set(f"l[{index}]=x", kind="set-string")
    assert indexed == {"l": [None] * index + ["x"]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=15,
)
maps = st.dictionaries(st.text(max_size=3), json_values, max_size=4)


@given(base=maps, override=maps)
def test_deep_merge_keeps_inputs_and_override_wins(
    base: dict[str, Any], override: dict[str, Any]
) -> None:
    before = copy.deepcopy((base, override))
    merged = deep_merge(base, override)
    assert (base, override) == before
    for key, value in override.items():
        if value is None:
            assert key not in merged
        elif not isinstance(value, dict):
            assert merged[key] == value
    for key in base:
        if key not in override:
            assert merged[key] == base[key]


@given(text=st.text(max_size=80) | json_values.map(yaml.safe_dump))
def test_any_values_file_loads_or_raises_values_error(text: str, tmp_path_factory: Any) -> None:
    path: Path = tmp_path_factory.mktemp("v") / "values.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        loaded = load_values_file(path)
        merged = merge_values([path, path], [])
    except EngineError as exc:
        assert isinstance(exc, ValuesError)
        assert str(path) in exc.message
    else:
        assert isinstance(loaded, dict) and isinstance(merged, dict)
