"""Click parameter types the commands share: a duration (`3s`, `90s`, `2m`, `1h30m` or seconds).
Every option that takes a time uses it, so each accepts the same forms and rejects the same way.
"""

from __future__ import annotations

from typing import Any

import click

from engine.durations import format_duration, parse_seconds

FORMS = "a duration like 30s, 2m, 1h30m or a number of seconds"


class Duration(click.ParamType):
    """Seconds (a float) from `30s`, `2m`, `1h30m`, `250ms` or a plain number of seconds, at
    least `minimum`. Bad input fails as click's usage error: exit 2, naming the option."""

    name = "DURATION"

    def __init__(self, minimum: float = 0.0) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float | int) and not isinstance(value, bool) \
                and value >= self.minimum:
            return float(value)
        text = str(value).strip()
        try:
            seconds = parse_seconds(text)
        except ValueError:
            self.fail(f"expected {FORMS}, got {value!r}", param, ctx)
        if seconds < self.minimum:
            self.fail(f"expected at least {format_duration(self.minimum)}, got {value!r}",
                      param, ctx)
        return seconds

    def __repr__(self) -> str:
        return "DURATION"


# `-o yaml|json` of the commands that print a document (manifest show, values show).
YAML_OR_JSON = click.option("-o", "--output", type=click.Choice(["yaml", "json"]),
                            default="yaml", show_default=True, help="Output format.")


__all__ = ["FORMS", "YAML_OR_JSON", "Duration"]
