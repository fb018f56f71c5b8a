"""Turning the typed manifest back into plain data with the manifest's own camelCase keys.
Used by `Manifest.to_dict()` and so by `gravity manifest show`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from enum import Enum

from engine.manifest.hooks import Hook


def camel(name: str) -> str:
    """`create_if_missing` -> `createIfMissing`: dataclass field names to manifest keys."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def to_plain(value: object) -> object:
    """Turn a manifest dataclass tree into plain YAML/JSON data with the manifest's keys.

    None values and empty collections are left out (they are the defaults), except an
    optional section that was given empty (`network: {}`): its default is None, so leaving it
    out would read back as a different manifest. A tuple of hooks becomes
    `{name: {job: <text>}}`; sizes, rates, ports and modes keep their manifest spelling.
    """
    if hasattr(value, "manifest_value"):
        return value.manifest_value()
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, object] = {}
        for f in fields(value):
            item = getattr(value, f.name)
            plain = None if item is None else to_plain(item)
            present_section = f.default is None and is_dataclass(item)
            if plain is None or (isinstance(plain, list | dict) and not plain
                                 and not present_section):
                continue
            out[camel(f.name)] = plain
        return out
    if isinstance(value, tuple | list):
        if value and all(isinstance(v, Hook) for v in value):
            return {h.name.value: {"job": h.source} for h in value}
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value
