"""A tree names a whole directory by one digest: relative path -> file (blob, mode), dir (mode)
or symlink (target), serialized as canonical JSON and stored as a blob itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.blobs.errors import BlobInputError
from engine.blobs.ref import BlobRef
from engine.errors import Problem

FORMAT = "gravity-tree/1"
MAX_DOCUMENT = 64 << 20  # a tree document larger than this is refused (it is held in memory)
FILE, DIR, SYMLINK = "file", "dir", "symlink"
_MODE_RE = re.compile(r"0[0-7]{3,4}")


@dataclass(frozen=True)
class Entry:
    """One path of a tree: a file (blob + mode), a directory (mode) or a symlink (target)."""

    type: str
    mode: int = 0
    blob: BlobRef | None = None
    target: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.type == SYMLINK:
            return {"type": SYMLINK, "target": self.target}
        doc: dict[str, Any] = {"type": self.type, "mode": f"{self.mode:04o}"}
        if self.blob is not None:
            doc.update(self.blob.to_dict())
        return doc

    @classmethod
    def from_dict(cls, data: object, where: str) -> Entry:
        if not isinstance(data, dict):
            raise _bad(where, f"expected a mapping, got {data!r}")
        kind = data.get("type")
        keys = {FILE: {"type", "mode", "digest", "size"}, DIR: {"type", "mode"},
                SYMLINK: {"type", "target"}}.get(kind)  # type: ignore[call-overload]
        if keys is None:
            raise _bad(f"{where}.type", f"expected file, dir or symlink, got {kind!r}")
        if set(data) != keys:
            raise _bad(where, f"a {kind} entry has exactly the keys {sorted(keys)}, "
                              f"got {sorted(data)}")
        if kind == SYMLINK:
            target = data["target"]
            if not isinstance(target, str) or not target or "\0" in target:
                raise _bad(f"{where}.target", f"expected a non-empty string, got {target!r}")
            return cls(SYMLINK, target=target)
        mode = data["mode"]
        if not isinstance(mode, str) or not _MODE_RE.fullmatch(mode):
            raise _bad(f"{where}.mode", f"expected an octal mode like '0644', got {mode!r}")
        blob = None
        if kind == FILE:
            blob = BlobRef.from_dict({"digest": data["digest"], "size": data["size"]},
                                     where=where)
        return cls(kind, mode=int(mode, 8), blob=blob)


@dataclass(frozen=True)
class Tree:
    """Entries by relative POSIX path; every parent of an entry is a `dir` entry."""

    entries: Mapping[str, Entry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        for path, entry in self.entries.items():
            why = path_problem(path)
            if why is None and "/" in path and (parent := self.entries.get(
                    path.rsplit("/", 1)[0])) is not None and parent.type != DIR:
                why = f"its parent is a {parent.type}, not a dir"
            elif why is None and "/" in path and path.rsplit("/", 1)[0] not in self.entries:
                why = "its parent directory has no entry"
            if why:
                problems.append(Problem(why, field=f"entries.{path}"))
            if entry.type == FILE and entry.blob is None:
                problems.append(Problem("a file entry needs a blob", field=f"entries.{path}"))
        if problems:
            raise BlobInputError("malformed tree", problems)
        object.__setattr__(self, "entries", dict(sorted(self.entries.items())))

    def __iter__(self) -> Iterator[tuple[str, Entry]]:
        return iter(self.entries.items())

    def blobs(self) -> set[BlobRef]:
        """Every blob the tree's files need."""
        return {e.blob for e in self.entries.values() if e.blob is not None}

    def size(self) -> int:
        """Bytes of file content (each file counted, shared blobs too)."""
        return sum(e.blob.size for e in self.entries.values() if e.blob is not None)

    def subtree(self, subpath: str) -> tuple[Tree, int]:
        """The entries under directory `subpath`, re-rooted there, and that directory's mode."""
        subpath = subpath.strip("/")
        why = path_problem(subpath)
        top = self.entries.get(subpath)
        if why or top is None or top.type != DIR:
            raise BlobInputError(f"no directory {subpath!r} in the tree", [Problem(
                why or "expected a directory of the image, e.g. packages/NAME/VERSION",
                field="subpath")])
        prefix = subpath + "/"
        return (Tree({p[len(prefix):]: e for p, e in self.entries.items()
                      if p.startswith(prefix)}), top.mode)

    def to_json(self) -> bytes:
        """Canonical form: sorted keys, no spaces, UTF-8; one tree has exactly one digest."""
        doc = {"format": FORMAT, "entries": {p: e.to_dict() for p, e in self.entries.items()}}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, *, where: str = "tree") -> Tree:
        if len(data) > MAX_DOCUMENT:
            raise _bad(where, f"a tree document is at most {MAX_DOCUMENT} bytes")
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _bad(where, f"not a JSON document: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or set(doc) != {
                "format", "entries"} or not isinstance(doc["entries"], dict):
            raise _bad(where, f"expected {{'format': '{FORMAT}', 'entries': {{…}}}}")
        return cls({p: Entry.from_dict(e, f"{where}.entries.{p}")
                    for p, e in doc["entries"].items()})


def path_problem(path: str) -> str | None:
    """Why `path` cannot name an entry (absolute, empty or dot components, NUL), or None."""
    if not isinstance(path, str) or not path:
        return "a path is a non-empty string"
    if path.startswith("/") or "\0" in path:
        return "a path is relative and has no NUL byte"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "a path has no empty, '.' or '..' component"
    return None


def _bad(where: str, message: str) -> BlobInputError:
    return BlobInputError("malformed tree document", [Problem(message, field=where)])
