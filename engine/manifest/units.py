"""Value types with a textual spelling in the manifest: byte sizes, transfer rates, ports, modes.
Each parser returns the typed value or raises ValueError with what was expected (callers record it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Units are matched case-insensitively. Decimal units multiply by powers of 1000 (as
# go-humanize, which Gravity used, does: "GB" is 10^9 bytes); the "i" units by powers of 1024.
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
SIZE_EXAMPLE = '"32GB", "512MB", "4GiB" or a number of bytes'
_SIZE_RE = re.compile(r"\s*([0-9]{1,30}(?:\.[0-9]{1,30})?)\s*([A-Za-z]*)\s*", re.ASCII)
_MAX_BYTES = 2**63 - 1

# SemVer 2.0.0 as specified on semver.org: numeric identifiers have no leading zeros.
_NUM = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER_RE = re.compile(
    rf"{_NUM}\.{_NUM}\.{_NUM}(?:-{_PRE_ID}(?:\.{_PRE_ID})*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?",
    re.ASCII,
)
_NAME_RE = re.compile(r"[A-Za-z0-9]+", re.ASCII)
_PORT_RANGE_RE = re.compile(r"\s*([0-9]{1,9})\s*(?:-\s*([0-9]{1,9})\s*)?", re.ASCII)
_OCTAL_RE = re.compile(r"0?[0-7]{1,4}", re.ASCII)


def shown(value: object) -> str:
    """A value for an error message: short scalars as written, anything else by its type.

    Never repr() a whole YAML subtree: anchors can make one exponentially large.
    """
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, list | dict):
        return "a list" if isinstance(value, list) else "a mapping"
    return f"a {type(value).__name__}"


def is_semver(text: str) -> bool:
    """True when `text` is a SemVer 2.0.0 version (no leading "v"): image versions must sort."""
    return _SEMVER_RE.fullmatch(text) is not None


def is_single_word(text: str) -> bool:
    """True when `text` is one ASCII alphanumeric word, the rule for image names."""
    return _NAME_RE.fullmatch(text) is not None


@dataclass(frozen=True)
class ByteSize:
    """An amount of bytes as written in the manifest ("32GB") and its value, for comparisons."""

    bytes: int
    text: str

    def manifest_value(self) -> str | int:
        return self.text


@dataclass(frozen=True)
class TransferRate:
    """A rate such as "50MB/s"; `bytes_per_second` is what a preflight check compares."""

    bytes_per_second: int
    text: str

    def manifest_value(self) -> str:
        return self.text


@dataclass(frozen=True)
class PortRange:
    """An inclusive port range; a single port has start == end."""

    start: int
    end: int

    def manifest_value(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}-{self.end}"

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port <= self.end


@dataclass(frozen=True)
class FileMode:
    """Unix permission bits, written as an octal string ("0755") in the manifest."""

    value: int

    def manifest_value(self) -> str:
        return f"{self.value:04o}"


def parse_size(value: object) -> ByteSize:
    """Parse a byte size: an integer (bytes) or a number with an optional unit, e.g. "32GB"."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a size like {SIZE_EXAMPLE}")
    if isinstance(value, int):
        if not 0 <= value <= _MAX_BYTES:
            raise ValueError("expected a non-negative number of bytes")
        return ByteSize(bytes=value, text=str(value))
    match = _SIZE_RE.fullmatch(value)
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size like {SIZE_EXAMPLE}, got {shown(value)}")
    number, unit = match.groups()
    multiplier = _SIZE_UNITS[unit.lower()]
    if "." in number:
        whole, frac = number.split(".")
        amount = int(whole) * multiplier + int(frac) * multiplier // 10 ** len(frac)
    else:
        amount = int(number) * multiplier
    if amount > _MAX_BYTES:
        raise ValueError(f"size {shown(value)} is too large")
    return ByteSize(bytes=amount, text=value)


def parse_rate(value: object) -> TransferRate:
    """Parse a transfer rate: a size followed by "/s", e.g. "50MB/s"."""
    if not isinstance(value, str) or not value.rstrip().endswith("/s"):
        raise ValueError(f'expected a transfer rate like "50MB/s", got {shown(value)}')
    try:
        size = parse_size(value.rstrip()[:-2])
    except ValueError:
        raise ValueError(f'expected a transfer rate like "50MB/s", got {shown(value)}') from None
    return TransferRate(bytes_per_second=size.bytes, text=value)


def parse_port_range(value: object) -> PortRange:
    """Parse "8080" or "10000-10005" (an integer is accepted too); ports are 1-65535."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f'expected a port or a range like "10000-10005", got {shown(value)}')
    match = _PORT_RANGE_RE.fullmatch(str(value))
    if match is None:
        raise ValueError(f'expected a port or a range like "10000-10005", got {shown(value)}')
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) is not None else start
    for port in (start, end):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is out of range: expected 1-65535")
    if start > end:
        raise ValueError(f"range {shown(value)} starts after it ends: expected start <= end")
    return PortRange(start=start, end=end)


def parse_mode(value: object) -> FileMode:
    """Parse Unix permission bits: an octal string such as "0755".

    An unquoted YAML 1.1 `0755` arrives as the integer 493 and is accepted as that number;
    an unquoted `755` is the decimal 755, which is why the docs ask for quotes.
    """
    if isinstance(value, bool):
        raise ValueError('expected an octal mode like "0755"')
    if isinstance(value, int):
        if not 0 <= value <= 0o7777:
            raise ValueError(f'expected an octal mode like "0755", got {value}')
        return FileMode(value)
    if isinstance(value, str) and _OCTAL_RE.fullmatch(value.strip()):
        return FileMode(int(value.strip(), 8))
    raise ValueError(f'expected an octal mode like "0755", got {shown(value)}')
