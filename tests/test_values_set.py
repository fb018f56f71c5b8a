"""The --set grammar as a table: every case checked against Helm's strvals rules (and our
documented differences), plus malformed input naming the offending text and position."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.errors import ValuesError
from engine.values import apply_set, infer_type, parse_set

# (expression, expected result of `--set expression`)
SET_CASES: list[tuple[str, dict[str, Any]]] = [
    # Basics from Helm's documentation.
    ("name=value", {"name": "value"}),
    ("a=b,c=d", {"a": "b", "c": "d"}),
    ("outer.inner=value", {"outer": {"inner": "value"}}),
    ("outer.inner1=a,outer.inner2=b", {"outer": {"inner1": "a", "inner2": "b"}}),
    ("a.b.c.d=deep", {"a": {"b": {"c": {"d": "deep"}}}}),
    ("name={a, b, c}", {"name": ["a", " b", " c"]}),  # spaces are kept, as in Helm
    ("name={a,b,c}", {"name": ["a", "b", "c"]}),
    ("list={1,true,x},next=2", {"list": [1, True, "x"], "next": 2}),
    ("servers[0].port=80", {"servers": [{"port": 80}]}),
    ("servers[0].port=80,servers[0].host=example", {"servers": [{"port": 80, "host": "example"}]}),
    ("servers[1].port=81", {"servers": [None, {"port": 81}]}),  # auto-extends with nulls
    ("a[2]=x", {"a": [None, None, "x"]}),
    ("a[0]=x,a[1]=y", {"a": ["x", "y"]}),
    ("a[0][1]=x", {"a": [[None, "x"]]}),
    ("a[0]={1,2}", {"a": [[1, 2]]}),
    ("a.b[0].c[1].d=v", {"a": {"b": [{"c": [None, {"d": "v"}]}]}}),
    ("a[0]=1,a[0].b=2", {"a": [{"b": 2}]}),  # a list item that is not a map becomes one
    # Escapes.
    ("name=value1\\,value2", {"name": "value1,value2"}),
    (
        "nodeSelector.kubernetes\\.io/role=master",
        {"nodeSelector": {"kubernetes.io/role": "master"}},
    ),
    ("a\\=b=c", {"a=b": "c"}),
    ("a=b\\=c", {"a": "b=c"}),  # "=" in a value needs no escape, but one is accepted
    ("a=b=c", {"a": "b=c"}),
    ("a\\[0\\]=x", {"a[0]": "x"}),
    ("a=\\{x\\}", {"a": "{x}"}),
    ("a={x\\,y,z}", {"a": ["x,y", "z"]}),
    ("a={x\\}y}", {"a": ["x}y"]}),
    ("a=c:\\\\temp", {"a": "c:\\temp"}),
    ('key="quoted"', {"key": '"quoted"'}),  # quotes are literal characters
    ("a=x]y", {"a": "x]y"}),
    ("a]=1", {"a]": 1}),
    ("a b=c d", {"a b": "c d"}),
    ("ключ=значение", {"ключ": "значение"}),
    # Empty values and separators.
    ("a=", {"a": ""}),
    ("a=,b=1", {"a": "", "b": 1}),
    ("a=1,", {"a": 1}),
    ("", {}),
    ("a={}", {"a": []}),  # Helm gives [""]; we give an empty list (documented)
    ("a={,}", {"a": ["", ""]}),
    ("a={x},b=1", {"a": ["x"], "b": 1}),
    # Type inference (Helm's typedVal).
    ("a=true,b=false,c=TRUE,d=False", {"a": True, "b": False, "c": True, "d": False}),
    ("a=null,b=NULL,c=Null", {"a": None, "b": None, "c": None}),
    ("a=0", {"a": 0}),
    ("a=42,b=-7,c=+7,d=-0", {"a": 42, "b": -7, "c": 7, "d": 0}),
    ("a=007,b=0x1F,c=00", {"a": "007", "b": "0x1F", "c": "00"}),
    ("a=1.5,b=1e3,c=.5,d=1_000", {"a": "1.5", "b": "1e3", "c": ".5", "d": "1_000"}),
    ("a=9223372036854775807", {"a": 9223372036854775807}),
    ("a=9223372036854775808", {"a": "9223372036854775808"}),  # beyond int64: a string
    ("a=-9223372036854775808", {"a": -9223372036854775808}),
    ("a=" + "9" * 5000, {"a": "9" * 5000}),  # far beyond int64 (and Python's int() limit)
    ("a=yes,b=no,c=on,d=~", {"a": "yes", "b": "no", "c": "on", "d": "~"}),  # not YAML 1.1
    ("a= 1,b=1 ", {"a": " 1", "b": "1 "}),
    ("a=truex", {"a": "truex"}),
    # Later assignments in one expression win.
    ("a=1,a=2", {"a": 2}),
    ("a.b=1,a=2", {"a": 2}),
]


@pytest.mark.parametrize(("text", "expected"), SET_CASES)
def test_set(text: str, expected: dict[str, Any]) -> None:
    assert parse_set(text) == expected


# (expression, expected result of `--set-string expression`)
SET_STRING_CASES: list[tuple[str, dict[str, Any]]] = [
    ("a=1,b=true,c=null,d=007", {"a": "1", "b": "true", "c": "null", "d": "007"}),
    ("a={1,false}", {"a": ["1", "false"]}),
    ("a[1]=0", {"a": [None, "0"]}),
    ("a.b=x\\,y", {"a": {"b": "x,y"}}),
]


@pytest.mark.parametrize(("text", "expected"), SET_STRING_CASES)
def test_set_string(text: str, expected: dict[str, Any]) -> None:
    assert parse_set(text, kind="set-string") == expected


def test_set_file_reads_content_as_a_string(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN-----\n123\n")
    other = tmp_path / "n.txt"
    other.write_text("true")
    assert parse_set(f"tls.cert={cert},flag={other}", kind="set-file") == {
        "tls": {"cert": "-----BEGIN-----\n123\n"},
        "flag": "true",  # file content is never typed
    }
    assert parse_set(f"both={{{cert},{other}}}", kind="set-file") == {
        "both": ["-----BEGIN-----\n123\n", "true"]
    }


# (expression, kind, expected error message)
ERROR_CASES: list[tuple[str, str, str]] = [
    ("a[x]=1", "set", '--set "a[x]=1": expected a number inside [] at position 2'),
    ("a[]=1", "set", '--set "a[]=1": expected a number inside [] at position 2'),
    ("a[-1]=1", "set", '--set "a[-1]=1": expected a number inside [] at position 2'),
    ("a[1", "set", '--set "a[1": expected a number inside [] at position 2'),
    ("a[65537]=1", "set", '--set "a[65537]=1": index 65537 is larger than the maximum 65536 '
     "at position 2"),
    ("a[" + "1" * 5000 + "]=1", "set", '--set "a[' + "1" * 5000 + ']=1": index 111111111111... '
     "is larger than the maximum 65536 at position 2"),
    ("a", "set", '--set "a": key "a" has no value: expected "=" at position 1'),
    ("a.b", "set", '--set "a.b": key "a.b" has no value: expected "=" at position 3'),
    ("a,b=1", "set", '--set "a,b=1": key "a" has no value: expected "=" at position 1'),
    ("b=1,a", "set", '--set "b=1,a": key "a" has no value: expected "=" at position 5'),
    ("a[0]", "set", '--set "a[0]": key "a[0]" has no value: expected "=" at position 4'),
    ("a[0],b=1", "set", '--set "a[0],b=1": key "a[0]" has no value: expected "=" at position 4'),
    (",a=1", "set", '--set ",a=1": expected a key name at position 0'),
    ("=1", "set", '--set "=1": expected a key name at position 0'),
    (".a=1", "set", '--set ".a=1": expected a key name at position 0'),
    ("a..b=1", "set", '--set "a..b=1": expected a key name at position 2'),
    ("a.=1", "set", '--set "a.=1": expected a key name at position 2'),
    ("a=1,,b=2", "set", '--set "a=1,,b=2": expected a key name at position 4'),
    ("a[0]x=1", "set", '--set "a[0]x=1": unexpected "x" after "]": expected ".", "[" or "=" '
     "at position 4"),
    ("a={x", "set", "--set \"a={x\": the list opened at position 2 must end with '}' "
     "at position 4"),
    ("a={x}y", "set", "--set \"a={x}y\": expected ',' after the list's closing '}' at position 5"),
    ("a=\\", "set", '--set "a=\\": a trailing backslash escapes nothing at position 2'),
    ("a=1,a.b=2", "set", '--set "a=1,a.b=2": cannot set "a.b": "a" is an integer, not a mapping '
     "at position 6"),
    ("a.b=1,a[0]=2", "set", '--set "a.b=1,a[0]=2": cannot set "a[0]": "a" is a mapping, '
     "not a list at position 7"),
    ("a[0]=x,a[0][0]=y", "set", '--set "a[0]=x,a[0][0]=y": cannot set "a[0][0]": "a[0]" is a '
     "string, not a list at position 11"),
    ("a", "set-string", '--set-string "a": key "a" has no value: expected "=" at position 1'),
    ("a=", "set-file", "--set-file \"a=\": expected a file path after '=' at position 2"),
    ("a=/nonexistent/file", "set-file", "--set-file \"a=/nonexistent/file\": cannot read file "
     "'/nonexistent/file': No such file or directory at position 2"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "kind", "message"), ERROR_CASES)
def test_malformed_expressions(text: str, kind: str, message: str) -> None:
    with pytest.raises(ValuesError) as raised:
        parse_set(text, kind=kind)
    assert raised.value.message == message
    assert raised.value.exit_code == 2


def test_nesting_is_limited_like_helm() -> None:
    thirty = ".".join(f"k{i}" for i in range(31))  # 30 dots: Helm's maximum
    assert parse_set(f"{thirty}=1")
    with pytest.raises(ValuesError, match="nested deeper than 30 levels"):
        parse_set(f"{thirty}.k31=1")
    with pytest.raises(ValuesError, match="nested deeper than 30 levels"):
        parse_set("a" + "[0]" * 40 + "=1")


def test_unknown_kind_is_a_values_error() -> None:
    with pytest.raises(ValuesError, match="unknown override kind 'set-json'"):
        parse_set("a=1", kind="set-json")


def test_apply_set_edits_existing_values_like_helm() -> None:
    base = {"list": ["p", "q", "r"], "map": {"keep": 1}, "items": [{"name": "x", "port": 1}]}
    assert apply_set(base, "list[1]=Q,map.add=2,items[0].port=2") == {
        "list": ["p", "Q", "r"],
        "map": {"keep": 1, "add": 2},
        "items": [{"name": "x", "port": 2}],
    }
    assert base == {
        "list": ["p", "q", "r"],
        "map": {"keep": 1},
        "items": [{"name": "x", "port": 1}],
    }
    with pytest.raises(ValuesError, match='"map" is a mapping, not a list'):
        apply_set(base, "map[0]=1")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("tRuE", True),
        ("FALSE", False),
        ("nuLL", None),
        ("0", 0),
        ("10", 10),
        ("-10", -10),
        ("01", "01"),
        ("0.0", "0.0"),
        ("", ""),
        ("+", "+"),
        ("١٢", "١٢"),  # non-ASCII digits are text
    ],
)
def test_infer_type(text: str, value: Any) -> None:
    assert infer_type(text) == value
    assert type(infer_type(text)) is type(value)
