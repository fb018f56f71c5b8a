"""Helm-style values: --values files, --set / --set-string / --set-file expressions, merging.
The merged result is what install and upgrade hooks read from their mounted values.yaml.

Precedence: values files in the order given (later wins), then every override in command-line
order. Maps merge deeply, lists are replaced whole, and a null removes the key. `--set` follows
Helm's strvals grammar (see docs/values.md); the deliberate differences from Helm are:

- overrides of all three kinds apply in the order they were given (Helm applies every --set,
  then every --set-string, then every --set-file);
- null removes the key from the merged result instead of being left for chart coalescing;
- mistakes Helm silently ignores are errors: an empty key (`.a=1`, `a..b=1`, `=1`), a key
  without a value after an index (`a[0]`), text after a list's `}`, a trailing lone backslash;
- `{}` is an empty list (Helm yields a list holding one empty string).
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from engine import yamlinput
from engine.errors import EngineError, ValuesError

SET = "set"
SET_STRING = "set-string"
SET_FILE = "set-file"
KINDS = (SET, SET_STRING, SET_FILE)
"""The override kinds, named after their command-line flags."""

MAX_INDEX = 65536  # Helm's limit on a list index in --set
MAX_DEPTH = 30  # Helm's limit on dotted nesting; we apply it to [] nesting as well
_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_INT64 = (-(2**63), 2**63 - 1)
_SET_HINT = "escape a literal , . = [ or \\ with a backslash; see docs/values.md for the grammar"


def infer_type(text: str) -> Any:
    """Helm's typing of a --set value: booleans and null in any letter case, and decimal
    integers in the int64 range that do not start with 0 (except "0" itself); else the text.

    So "1e3", "1.5", "007" and "0x1F" stay strings, "-5" and "+5" become integers.
    """
    folded = text.casefold()
    if folded == "true":
        return True
    if folded == "false":
        return False
    if folded == "null":
        return None
    if text == "0":
        return 0
    if text and text[0] != "0" and len(text) <= 20 and _INT_RE.fullmatch(text):
        number = int(text)
        if _INT64[0] <= number <= _INT64[1]:
            return number
    return text


def _describe(value: object) -> str:
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number")):
        if isinstance(value, kind):
            return name
    for kind, name in ((str, "a string"), (list, "a list"), (dict, "a mapping")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


@dataclass(frozen=True)
class _Key:
    name: str
    pos: int


@dataclass(frozen=True)
class _Index:
    index: int
    pos: int


_Step = _Key | _Index


def _render_path(steps: Sequence[_Step]) -> str:
    out = ""
    for step in steps:
        if isinstance(step, _Index):
            out += f"[{step.index}]"
        else:
            name = re.sub(r"([\\.=\[,])", r"\\\1", step.name)
            out += f".{name}" if out else name
    return out


class _SetParser:
    """One --set expression applied into `dest` (a dict it may modify in place)."""

    def __init__(self, text: str, kind: str, dest: dict[str, Any]) -> None:
        if kind not in KINDS:
            raise ValuesError(f"unknown override kind {kind!r}: expected one of {', '.join(KINDS)}")
        self.text = text
        self.kind = kind
        self.dest = dest
        self.pos = 0

    def fail(self, reason: str, pos: int, *, hint: str | None = _SET_HINT) -> NoReturn:
        raise ValuesError(f'--{self.kind} "{self.text}": {reason} at position {pos}', hint=hint)

    def until(self, stops: str) -> tuple[str, str | None]:
        """Read up to (and consume) the first unescaped stop character; None at the end."""
        buf: list[str] = []
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in stops:
                self.pos += 1
                return "".join(buf), ch
            if ch == "\\":
                if self.pos + 1 >= len(text):
                    self.fail("a trailing backslash escapes nothing", self.pos)
                buf.append(text[self.pos + 1])
                self.pos += 2
                continue
            buf.append(ch)
            self.pos += 1
        return "".join(buf), None

    def parse(self) -> None:
        while self.pos < len(self.text):
            steps = self.key_path()
            value = self.value()
            self.apply(steps, value)

    def key(self, name: str, start: int) -> _Key:
        if not name:
            self.fail("expected a key name", start)
        return _Key(name, start)

    def key_path(self) -> list[_Step]:
        """`name(.name|[n])*=`: the path up to and including the "=" (consumed)."""
        start = self.pos
        name, stop = self.until("=[,.")
        steps: list[_Step] = [self.key(name, start)]
        while True:
            if stop is None or stop == ",":
                at = self.pos if stop is None else self.pos - 1
                self.fail(f'key "{_render_path(steps)}" has no value: expected "="', at)
            if stop == "=":
                return steps
            if len(steps) > MAX_DEPTH:
                self.fail(f"the key is nested deeper than {MAX_DEPTH} levels", self.pos - 1)
            if stop == ".":
                start = self.pos
                name, stop = self.until("=[,.")
                steps.append(self.key(name, start))
                continue
            # stop == "[": a list index; ".", "[" or "=" must follow the "]" directly.
            inside = self.pos
            digits, close = self.until("]")
            if close is None or not re.fullmatch(r"[0-9]+", digits, re.ASCII):
                self.fail("expected a number inside []", inside)
            if len(digits) > 9 or int(digits) > MAX_INDEX:
                shown = digits if len(digits) <= 12 else digits[:12] + "..."
                self.fail(f"index {shown} is larger than the maximum {MAX_INDEX}", inside)
            index = int(digits)
            steps.append(_Index(index, inside - 1))
            after = self.pos
            name, stop = self.until("=[,.")
            if name:
                self.fail(f'unexpected "{name}" after "]": expected ".", "[" or "="', after)

    def value(self) -> Any:
        text = self.text
        if self.pos < len(text) and text[self.pos] == "{":
            open_pos = self.pos
            self.pos += 1
            items: list[Any] = []
            if text.startswith("}", self.pos):
                self.pos += 1
            else:
                while True:
                    start = self.pos
                    raw, stop = self.until(",}")
                    if stop is None:
                        self.fail(
                            f"the list opened at position {open_pos} must end with '}}'", self.pos
                        )
                    items.append(self.convert(raw, start))
                    if stop == "}":
                        break
            if self.pos < len(text):
                if text[self.pos] != ",":
                    self.fail("expected ',' after the list's closing '}'", self.pos)
                self.pos += 1
            return items
        start = self.pos
        raw, _ = self.until(",")
        return self.convert(raw, start)

    def convert(self, raw: str, pos: int) -> Any:
        if self.kind == SET:
            return infer_type(raw)
        if self.kind == SET_STRING:
            return raw
        if not raw:
            self.fail("expected a file path after '='", pos)
        try:
            return Path(raw).read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.fail(f"cannot read file {raw!r}: {reason}", pos, hint=None)

    def apply(self, steps: list[_Step], value: Any) -> None:
        container: Any = self.dest
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            if isinstance(step, _Key):
                slot: Any = step.name
            else:
                while len(container) <= step.index:
                    container.append(None)
                slot = step.index
            if last:
                container[slot] = value
                return
            following = steps[i + 1]
            want: type = dict if isinstance(following, _Key) else list
            existing = container.get(slot) if isinstance(container, dict) else container[slot]
            if not isinstance(existing, want):
                # Like Helm, a list item that is not a map becomes one; other clashes are errors.
                replace = existing is None or (isinstance(step, _Index) and want is dict)
                if not replace:
                    expected = "a mapping" if want is dict else "a list"
                    self.fail(
                        f'cannot set "{_render_path(steps)}": "{_render_path(steps[: i + 1])}" '
                        f"is {_describe(existing)}, not {expected}",
                        following.pos,
                    )
                existing = want()
                container[slot] = existing
            container = existing


def parse_set(text: str, *, kind: str = SET) -> dict[str, Any]:
    """Parse one --set / --set-string / --set-file expression into a new dict.

    Nulls are kept here (`a=null` gives {"a": None}); merging turns them into removals.
    Raises ValuesError naming the expression and the 0-based character position.
    """
    result: dict[str, Any] = {}
    _SetParser(text, kind, result).parse()
    return result


def apply_set(values: Mapping[str, Any], text: str, *, kind: str = SET) -> dict[str, Any]:
    """A copy of `values` with one --set expression applied the way Helm applies it:
    into the existing tree, so `a[1]=x` changes one item of an existing list `a`.
    """
    result = copy.deepcopy(dict(values))
    _SetParser(text, kind, result).parse()
    return result


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `override` onto `base` with Helm's rules and return a new dict.

    Maps merge key by key, recursively; lists and scalars from `override` replace; a null
    in `override` removes the key. Neither input is modified.
    """
    if not isinstance(base, Mapping) or not isinstance(override, Mapping):
        raise ValuesError("values to merge must be mappings of keys to values")
    result = {k: copy.deepcopy(v) for k, v in base.items()}
    for key, value in override.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            current = result.get(key)
            result[key] = deep_merge(current if isinstance(current, Mapping) else {}, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _key_text(key: object) -> str:
    if isinstance(key, bool) or key is None:
        return str(key).lower() if key is not None else "null"
    if isinstance(key, _dt.date):
        return key.isoformat()
    return str(key)


def _normalize(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """Keys become text the way Helm's YAML-to-JSON conversion spells them (1, true, null).

    Shared subtrees (YAML anchors) stay shared, so an alias bomb cannot blow up here.
    """
    memo = {} if memo is None else memo
    if not isinstance(value, dict | list):
        return value
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, dict):
        out: Any = {}
        memo[id(value)] = out
        out.update({_key_text(k): _normalize(v, memo) for k, v in value.items()})
    else:
        out = []
        memo[id(value)] = out
        out.extend(_normalize(v, memo) for v in value)
    return out


def load_values_file(path: Path | str) -> dict[str, Any]:
    """Read one --values file: a YAML mapping (an empty file is an empty mapping)."""
    try:
        text = yamlinput.read(path).decode("utf-8-sig")
        data = _normalize(yamlinput.load(text))
    except OSError as exc:
        raise ValuesError(f"values file {path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValuesError(f"values file {path}: not UTF-8 text ({exc.reason})") from exc
    except yamlinput.TooLarge as exc:
        raise ValuesError(f"values file {path}: too large: {exc}",
                          hint="write the repeated values out (see Limits in docs/values.md); "
                          "nothing was written") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ValuesError(f"values file {path}: invalid YAML{at}: {reason}") from exc
    except RecursionError as exc:
        raise ValuesError(f"values file {path}: nested too deeply") from exc
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValuesError(f"values file {path}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValuesError(
            f"values file {path}: the top level must be a mapping of keys to values, "
            f"got {_describe(data)}"
        )
    return data


def _prune_nulls(values: dict[str, Any]) -> dict[str, Any]:
    """Drop null map entries (the removals) recursively; list items are left as they are."""
    return {
        k: _prune_nulls(v) if isinstance(v, dict) else v for k, v in values.items() if v is not None
    }


def merge_values(
    files: Sequence[Path | str], overrides: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """The values hooks see: `files` merged in order, then `overrides` applied in order.

    `overrides` are (kind, text) pairs in command-line order, kind one of KINDS.
    Raises ValuesError for an unreadable or malformed file or expression.
    """
    try:
        result: dict[str, Any] = {}
        for path in files:
            result = deep_merge(result, load_values_file(path))
        for kind, text in overrides:
            _SetParser(text, kind, result).parse()
        return _prune_nulls(result)
    except RecursionError as exc:
        raise ValuesError("values are nested too deeply to merge") from exc


class _Dumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings as literal blocks (certificates, scripts stay legible)."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(data: object) -> str:
    """YAML as gravity prints and writes it: block style, key order kept, literal text blocks."""
    return yaml.dump(
        data, Dumper=_Dumper, default_flow_style=False, sort_keys=False, allow_unicode=True
    )


def write_values_file(path: Path, values: Mapping[str, Any]) -> None:
    """Write `values` as YAML atomically (temp file, fsync, rename) with mode 0600.

    Hooks mount this file, so a crash must leave either the old or the new file, never half.
    Parent directories are created.
    """
    path = Path(path)
    try:
        text = to_yaml(dict(values))
    except (yaml.YAMLError, TypeError, ValueError, RecursionError) as exc:
        raise ValuesError(f"cannot write values to {path}: {exc}") from exc
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise EngineError(f"cannot write values file {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise EngineError(f"cannot write values file {path}: {exc.strerror or exc}") from exc
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
