"""Values are secrets: `--set` and values files may carry passwords, so everything that shows an
operation's data shows its values redacted — keys kept, every value `***` — unless asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MASK = "***"


def redact_values(values: Any) -> Any:
    """A values tree with its structure kept and every leaf replaced by MASK."""
    if isinstance(values, Mapping):
        return {key: redact_values(value) for key, value in values.items()}
    if isinstance(values, list | tuple):
        return [redact_values(item) for item in values]
    return MASK


def public_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """An operation's data as it may be shown: its `values` redacted."""
    out = dict(data)
    if "values" in out:
        out["values"] = redact_values(out["values"])
    return out


__all__ = ["MASK", "public_data", "redact_values"]
