"""Plans, values and manifests are read by building the document straight from libyaml's events;
whatever the file holds, the result (or the error) is what PyYAML's safe loader gives.

How many examples run and whether they are random comes from the hypothesis profile chosen in
tests/conftest.py (`ci` by default: derandomized; HYPOTHESIS_PROFILE=fuzz: many random ones).
"""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from engine import yamlinput

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=False), st.text(max_size=20),
                    st.sampled_from(["yes", "No", "on", "~", "null", "0x1f", "0o17", "1_000",
                                     "1:30", "2001-12-14", "2001-12-14t21:59:43.10-05:00",
                                     ".inf", "-.Inf", "1e3", "=", "<<", "!x", "&a", "*a", ""]))
keys = st.one_of(st.text(max_size=10), st.integers(-5, 5), st.booleans(), st.none())
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=25)


# Pieces of YAML syntax, joined at random: mostly broken documents, some odd valid ones.
pieces = st.sampled_from([*"ab1:-[]{},'\"&*!?|>#\n \t.~", "2001-13-14", "2001-12-14", "<<",
                          "!!str", "!!int", "---", "...", "0x1f", "yes", "\n  ", "\n- ",
                          "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "=", "1e3", "2001-12-14 1:2:3"])


def pyyaml(text: str) -> object:
    """What PyYAML's composer and safe constructor make of `text` (engine.yamlinput's general
    path, which also bounds aliases)."""
    try:
        return ("value", yamlinput.compose_and_construct(text))
    except Exception as exc:  # PyYAML raises IndexError for `!!int` alone
        return ("error", type(exc).__name__, str(exc))


def ours(text: str) -> object:
    try:
        return ("value", yamlinput.load(text))
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))


def same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(
            same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(doc=documents, flow=st.sampled_from([None, True, False]),
       style=st.sampled_from([None, '"', "'", "|"]))
def test_any_dumped_document_loads_as_pyyaml_loads_it(doc: object, flow: bool | None,
                                                      style: str | None) -> None:
    text = yaml.safe_dump(doc, default_flow_style=flow, default_style=style,
                          allow_unicode=True, sort_keys=False)
    assert same(ours(text), pyyaml(text)), text


@given(text=st.lists(pieces, max_size=40).map("".join))
def test_any_jumble_of_yaml_syntax_loads_or_fails_as_pyyaml(text: str) -> None:
    assert same(ours(text), pyyaml(text)), text


@pytest.mark.parametrize("text", [
    "[2001-13-14", "a: [2001-12-32]\nc: 2001-13-01\n", "a: 2001-13-14\nb: [\n",
    "", "---\n", "--- \n...\n", "a: 1\n---\nb: 2\n", "a: &x [1, 2]\nb: *x\n",
    "base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n", "m:\n  <<: {x: 1}\n  y: 2\n",
    "a: !!str 12\n", "a: !!int '12'\n", "a: !!binary aGVsbG8=\n", "a: !!set {x, y}\n",
    "a: !custom 1\n", "? [1, 2]\n: x\n", "? {a: 1}\n: x\n", "a: 1\na: 2\n",
    "t: 2001-13-14\n", "t: 2001-12-14 21:59:43.10 -5\n", "x: =\n", "a: [1, 2\n",
    "a: b: c\n", "'unterminated\n", "a:\n\t- tab\n", "- !!map {a: 1}\n- !!seq [1]\n",
    "phases:\n  - {id: a, executor: command, data: {run: 'a && b | c > d'}}\n",
    "k: 'it''s'\nl: \"tab\\there\"\nm: |\n  block\n  text\nn: >\n  folded\n  text\n",
    "!!map {a: 1}\n", "&root {a: 1}\n", "? a\n", "[a, b]: c\n", "{a: 1}: b\n",
])
def test_edge_cases_load_as_pyyaml_loads_them(text: str) -> None:
    assert same(ours(text), pyyaml(text))


def test_an_alias_bomb_is_still_refused() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n"
        for i in range(7))
    with pytest.raises(yamlinput.TooLarge):
        yamlinput.load(bomb)
