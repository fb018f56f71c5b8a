"""Reading the YAML files users hand us (plans, --values, --nodes inventories, manifests) within
bounds: the file's size, its aliases, and the size of the document once aliases are expanded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# A YAML alias refers to an earlier node, so a few hundred bytes of nested aliases describe a
# document of billions of nodes (an "alias bomb"). PyYAML shares the aliased objects, so the
# load itself is quick, but everything after it (validation, JSON for the store, rendering)
# walks the expanded tree. `load` measures that tree on the composed nodes before building
# anything and raises TooLarge; each caller reports it with its own error type and file name.

MAX_FILE_BYTES = 64 * 2**20
"""A YAML input file may hold at most 64 MiB."""
MAX_ALIASES = 1_000_000
"""At most this many aliases (`*name`, `<<: *name`) in one file."""
MAX_NODES = 10_000_000
"""At most this many nodes (scalars, lists, mappings) once every alias is expanded: about what
a 64 MiB file holds written out (a 100,000-phase plan with a description, a command, a retry
policy and a timeout on every phase is 22 MB and 2,500,000 nodes)."""
MAX_GROWTH = 10
"""Aliases may grow a document to at most 10 times the nodes written in the file..."""
GROWTH_FLOOR = 100_000
"""...or to 100,000 nodes, whichever is more: a small hand-written file may reuse anchors freely."""

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~5x faster on big files


class TooLarge(yaml.YAMLError):
    """A YAML input over one of the bounds above; the text names the bound."""


def read(path: Path | str) -> bytes:
    """The file's bytes, refusing more than MAX_FILE_BYTES without reading them all.

    OSError propagates as from `open`; a file over the bound raises TooLarge.
    """
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise TooLarge(f"the file is larger than {MAX_FILE_BYTES // 2**20} MiB, the limit for "
                       "a YAML input")
    return data


def load(text: str) -> Any:
    """Parse one YAML document safely (plain data only), within the bounds of this module.

    Raises TooLarge for a document over a bound and yaml.YAMLError for bad YAML (a value
    PyYAML cannot construct, such as a date in a 13th month, included).
    """
    if len(text) > MAX_FILE_BYTES:
        raise TooLarge(f"the text is longer than {MAX_FILE_BYTES // 2**20} MiB, the limit "
                       "for a YAML input")
    try:
        return _assemble(text)
    except _Unusual:
        # Anchors, aliases, merge keys, explicit tags...: PyYAML's composer builds it.
        return compose_and_construct(text)


def compose_and_construct(text: str) -> Any:
    """The general path of `load`: PyYAML's node tree, measured when it has aliases, then
    PyYAML's safe constructor."""
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if "*" in text:  # no alias without a `*`: an ordinary file skips the measuring
            measure(node)
        try:
            return loader.construct_document(node)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # PyYAML's constructors raise these for odd scalars (a 13th month in a date).
            raise yaml.constructor.ConstructorError(
                None, None, str(exc), None) from exc
    finally:
        loader.dispose()


class _Unusual(Exception):
    """The document uses what `_assemble` leaves to PyYAML's composer and constructor."""


_STR = "tag:yaml.org,2002:str"
_PLAIN = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null",
                    "tag:yaml.org,2002:timestamp"})


def _assemble(text: str) -> Any:
    """The document built straight from libyaml's events, as PyYAML's composer and safe
    constructor would build it, without their node tree (4 times faster on a 100,000-phase
    plan): each plain scalar's tag from PyYAML's resolver, a non-string scalar from PyYAML's
    constructor. Raises _Unusual at the first anchor, alias, explicit tag, merge key,
    unhashable key, second document or scalar PyYAML cannot construct (PyYAML reports a
    parse error later in the file first), which it leaves to the general path; without
    aliases the document is no larger than the file, so it needs no measuring."""
    events = yaml.events
    scalar, start_map, start_seq = events.ScalarEvent, events.MappingStartEvent, \
        events.SequenceStartEvent
    ends = (events.MappingEndEvent, events.SequenceEndEvent)
    loader = _LOADER(text)
    resolve, node_of, get_event = loader.resolve, yaml.ScalarNode, loader.get_event
    constructors = loader.yaml_constructors
    tags: dict[tuple[str, Any], str] = {}  # (value, implicit) -> resolved tag
    stack: list[Any] = []  # open collections
    keys: list[Any] = []  # per open mapping: its pending key (a 1-tuple), else None
    documents = 0
    root: Any = None
    try:
        while True:
            event = get_event()
            kind = event.__class__
            if kind is scalar:
                if event.anchor is not None:
                    raise _Unusual
                tag = event.tag
                value = event.value
                if tag is None or tag == "!":
                    seen = (value, event.implicit)
                    tag = tags.get(seen)
                    if tag is None:
                        tag = tags[seen] = resolve(node_of, value, event.implicit)
                elif tag != _STR:
                    raise _Unusual
                if tag != _STR:
                    if tag not in _PLAIN:
                        raise _Unusual
                    try:
                        value = constructors[tag](loader, node_of(tag, value))
                    except (ValueError, TypeError, OverflowError) as exc:
                        raise _Unusual from exc
            elif kind is start_map or kind is start_seq:
                if event.anchor is not None or event.tag not in (None, "!"):
                    raise _Unusual
                stack.append({} if kind is start_map else [])
                keys.append(None)
                continue
            elif kind in ends:
                value = stack.pop()
                keys.pop()
            elif kind is events.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _Unusual
                continue
            elif kind is events.StreamEndEvent:
                return root
            elif kind is events.AliasEvent:
                raise _Unusual
            else:  # stream start, document end
                continue
            if not stack:
                root = value
                continue
            top = stack[-1]
            if top.__class__ is list:
                top.append(value)
            elif keys[-1] is None:
                if value.__class__ is dict or value.__class__ is list:
                    raise _Unusual  # PyYAML names the unhashable key
                keys[-1] = (value,)
            else:
                top[keys[-1][0]] = value
                keys[-1] = None
    finally:
        loader.dispose()


def measure(root: yaml.Node) -> int:
    """The number of nodes `root` expands to, counting every alias as a copy of its target.

    Linear in the composed (shared) node graph. Raises TooLarge past MAX_ALIASES,
    MAX_NODES or MAX_GROWTH, or when an alias refers to a node that contains it (an
    endless document).
    """
    sizes: dict[int, int] = {}  # id(collection node) -> expanded size, once complete
    open_ids: set[int] = set()  # collections being measured: the path from the root
    seen_scalars: set[int] = set()
    aliases = 0
    # Depth-first, without recursion: each frame is [node, children, next index, total].
    stack: list[list[Any]] = []

    def enter(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        else:
            kids = node.value
        open_ids.add(id(node))
        stack.append([node, kids, 0, 1])

    if isinstance(root, yaml.ScalarNode):
        return 1
    enter(root)
    while True:
        frame = stack[-1]
        kids = frame[1]
        i = frame[2]
        total = frame[3]
        while i < len(kids):
            kid = kids[i]
            i += 1
            if isinstance(kid, yaml.ScalarNode):
                key = id(kid)
                if key in seen_scalars:
                    aliases += 1
                else:
                    seen_scalars.add(key)
                total += 1
                continue
            key = id(kid)
            if key in sizes:
                aliases += 1
                total += sizes[key]
                if total > MAX_NODES:
                    raise _too_many_nodes()
                continue
            if key in open_ids:
                raise TooLarge("an alias refers to a node that contains it, so the document "
                               "never ends")
            frame[2], frame[3] = i, total
            enter(kid)
            break
        else:
            if aliases > MAX_ALIASES:
                raise TooLarge(f"more than {MAX_ALIASES:,} aliases, the limit for a YAML "
                               "input")
            node = stack.pop()[0]
            open_ids.discard(id(node))
            sizes[id(node)] = total
            if not stack:
                written = len(sizes) + len(seen_scalars)
                if total > max(GROWTH_FLOOR, MAX_GROWTH * written):
                    raise TooLarge(f"aliases expand its {written:,} nodes to {total:,}; the "
                                   f"limit is {MAX_GROWTH} times the nodes written in the file "
                                   f"or {GROWTH_FLOOR:,}, whichever is more")
                return total
            stack[-1][3] += total
            if stack[-1][3] > MAX_NODES:
                raise _too_many_nodes()
            continue


def _too_many_nodes() -> TooLarge:
    return TooLarge(f"aliases expand it to more than {MAX_NODES:,} nodes, the limit for a "
                    "YAML input")
