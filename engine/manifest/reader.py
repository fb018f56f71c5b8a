"""Typed, problem-collecting access to the raw YAML tree of a manifest.
Every getter records what was wrong (file, field path, expectation) and returns a safe default.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

from engine.errors import Problem
from engine.manifest.units import shown

E = TypeVar("E", bound=Enum)
T = TypeVar("T")

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)
MAX_INT = 2**31 - 1


def child(path: str, key: object) -> str:
    """The field path of `key` under `path`: `a.b`, or `a["odd key"]` when not a plain word."""
    text = str(key)
    if _PLAIN_KEY.fullmatch(text):
        return f"{path}.{text}" if path else text
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'{path}["{quoted}"]'


def index(path: str, i: int) -> str:
    """The field path of the `i`th list item under `path`: `nodeProfiles[1]`."""
    return f"{path}[{i}]"


def describe(value: object) -> str:
    """A short, user-facing name for the YAML type of `value` ("a list", "a boolean" …)."""
    if value is None:
        return "null"
    names: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "a mapping"),
        ((_dt.date, _dt.datetime), "a date"),
        (bytes, "binary data"),
    ]
    for kinds, name in names:
        if isinstance(value, kinds):
            return name
    return type(value).__name__


@dataclass
class Collector:
    """Accumulates problems and warnings so a load reports everything wrong in one go."""

    file: str
    strict: bool = False
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(message=message, file=self.file, field=path or None))

    def warn(self, path: str, message: str) -> None:
        """A warning; in strict mode every warning is an error."""
        problem = Problem(message=message, file=self.file, field=path or None)
        (self.problems if self.strict else self.warnings).append(problem)


def as_string(c: Collector, value: object, path: str, *, nonempty: bool = False) -> str | None:
    """Read a scalar where text is expected; integers are spelled out, floats with a warning."""
    if isinstance(value, str):
        if nonempty and not value.strip():
            c.error(path, "must not be empty")
            return None
        return value
    if isinstance(value, bool) or value is None:
        c.error(path, f"expected a string, got {describe(value)} (quote it if it is text)")
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        c.warn(path, f"the number {value!r} was read as text; quote it to keep its exact spelling")
        return repr(value)
    c.error(path, f"expected a string, got {describe(value)}")
    return None


class Fields:
    """One mapping of the manifest being read; remembers which keys were consumed.

    `finish()` reports the keys nobody asked for as unknown fields (warnings, errors when strict).
    A missing or null mapping reads as empty; a non-mapping is reported and reads as empty.
    """

    def __init__(self, c: Collector, raw: object, path: str) -> None:
        self.c = c
        self.path = path
        self.used: set[object] = set()
        self.present = isinstance(raw, dict)
        if raw is None or isinstance(raw, dict):
            self.data: dict[object, object] = raw or {}
        else:
            c.error(path, f"expected a mapping, got {describe(raw)}")
            self.data = {}

    @classmethod
    def item(cls, c: Collector, raw: object, path: str) -> Fields:
        """A list item that must be a mapping: unlike a missing section, null is an error."""
        if raw is None:
            c.error(path, "expected a mapping, got null")
        return cls(c, raw, path)

    def at(self, key: str) -> str:
        return child(self.path, key)

    def raw(self, key: str) -> object:
        self.used.add(key)
        return self.data.get(key)

    def has(self, key: str) -> bool:
        """True when `key` is present with a non-null value."""
        return self.data.get(key) is not None

    def require(self, key: str, what: str = "") -> bool:
        if self.has(key):
            return True
        self.used.add(key)
        self.c.error(self.at(key), f"is required{': ' + what if what else ''}")
        return False

    def string(self, key: str, *, required: bool = False, nonempty: bool = False) -> str | None:
        value = self.raw(key)
        if value is None:
            if required:
                self.c.error(self.at(key), "is required")
            return None
        return as_string(self.c, value, self.at(key), nonempty=nonempty or required)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.c.error(self.at(key), f"expected true or false, got {describe(value)}")
            return default
        return value

    def integer(
        self,
        key: str,
        *,
        default: int | None = None,
        minimum: int = 0,
        maximum: int = MAX_INT,
        required: bool = False,
    ) -> int | None:
        value = self.raw(key)
        if value is None:
            if required:
                self.c.error(self.at(key), "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.c.error(self.at(key), f"expected an integer, got {describe(value)}")
            return default
        if not minimum <= value <= maximum:
            self.c.error(
                self.at(key), f"expected an integer from {minimum} to {maximum}, got {value}"
            )
            return default
        return value

    def items(self, key: str) -> list[tuple[object, str]]:
        """The items of a list with their field paths; null reads as an empty list."""
        value = self.raw(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.c.error(self.at(key), f"expected a list, got {describe(value)}")
            return []
        return [(item, index(self.at(key), i)) for i, item in enumerate(value)]

    def strings(self, key: str) -> tuple[str, ...]:
        out: list[str] = []
        for item, path in self.items(key):
            text = as_string(self.c, item, path)
            if text is not None:
                out.append(text)
        return tuple(out)

    def string_map(self, key: str) -> dict[str, str]:
        """A free-form mapping of text to text (labels, selectors); keys are not checked."""
        value = self.raw(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.c.error(self.at(key), f"expected a mapping, got {describe(value)}")
            return {}
        out: dict[str, str] = {}
        for k, v in value.items():
            path = child(self.at(key), k)
            if not isinstance(k, str):
                self.c.error(path, f"expected a text key, got {describe(k)}")
                continue
            text = as_string(self.c, v, path)
            if text is not None:
                out[k] = text
        return out

    def mapping(self, key: str) -> Fields:
        return Fields(self.c, self.raw(key), self.at(key))

    def read(self, key: str, build: Callable[[Fields], T]) -> T:
        """What `build` makes of the mapping at `key` (missing or null reads as empty); then
        its keys that `build` never read are reported as unknown fields."""
        section = self.mapping(key)
        value = build(section)
        section.finish()
        return value

    def section(self, key: str, build: Callable[[Fields], T]) -> T | None:
        """`read` for an optional section: None when `key` is missing or null."""
        return self.read(key, build) if self.has(key) else None

    def choice(self, key: str, kind: type[E]) -> E | None:
        """One of an enum's values; null or an empty string reads as unset."""
        value = self.raw(key)
        if value is None or value == "":
            return None
        allowed = [str(member.value) for member in kind]
        if isinstance(value, str):
            for member in kind:
                if member.value == value:
                    return member
        self.c.error(self.at(key), f"expected one of {', '.join(allowed)}, got {shown(value)}")
        return None

    def parsed(self, key: str, parse: Callable[[object], T]) -> T | None:
        """Run a ValueError-raising parser (sizes, rates, modes) on a present value."""
        value = self.raw(key)
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            self.c.error(self.at(key), str(exc))
            return None

    def finish(self) -> None:
        """Report every key that was never read as an unknown field."""
        for key in self.data:
            if key not in self.used:
                self.c.warn(child(self.path, key), "unknown field")
