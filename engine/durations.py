"""Durations as operators write and read them: `30s`, `5m`, `1h30m`, `250ms` or plain seconds.
Used by plan files, CLI options and messages alike; no I/O and no engine imports.
"""

from __future__ import annotations

import math
import os
import re

from engine.errors import InputError

DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
PLAIN_SECONDS = re.compile(r"\d+(\.\d+)?")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from `30s`, `5m`, `1h30m`, `250ms` or a plain number of seconds.

    Raises ValueError with the expected form when the value does not parse.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 1h30m or a number of seconds")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"expected a finite, non-negative duration, got {value!r}")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        pos, total = 0, 0.0
        for m in DURATION.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * UNITS[m.group(2)]
            pos = m.end()
        if text and pos == len(text):
            return total
    raise ValueError(
        f"expected a duration like 30s, 5m, 1h30m or a number of seconds, got {value!r}"
    )


def format_duration(seconds: float) -> str:
    """Short human form used in messages ("timed out after 2m30s")."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    parts = [f"{h}h" if h else "", f"{m}m" if m else "", f"{s}s" if s or not (h or m) else ""]
    frac = seconds - whole
    text = "".join(parts)
    return text if frac < 0.05 else f"{seconds:.1f}s"


def parse_seconds(text: str) -> float:
    """An operator's time from an option or the environment: a plain number of seconds (as
    they always took) or a duration (`90s`, `2m`, `1h30m`). ValueError otherwise."""
    text = text.strip()
    return float(text) if PLAIN_SECONDS.fullmatch(text) else parse_duration(text)


def env_duration(name: str, default: float, *, minimum: float = 0.0) -> float:
    """The duration in environment variable `name` (`10s`, `2m` or seconds), else `default`.
    A value that does not parse, or is under `minimum`, is bad input (exit 2) naming the
    variable and the forms it takes."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        seconds = parse_seconds(text)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds < max(minimum, 0.0):
        least = f" of at least {format_duration(minimum)}" if minimum else ""
        raise InputError(f"environment variable {name}={text!r} is not a duration{least}",
                         hint=f"write it like {name}=10s, 2m, 1h30m or a number of seconds, "
                         "or unset it for the default")
    return seconds

__all__ = ["env_duration", "format_duration", "parse_duration", "parse_seconds"]
