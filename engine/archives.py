"""Backup archives: a tar.gz of the backup hook's files with a manifest of their digests, written
on the node and verified before a restore hands it to the restore hook. No engine state here.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from engine.errors import InputError, Problem

FORMAT = "gravity-backup/1"
MANIFEST = "manifest.json"
DATA = "data"
CHUNK = 1 << 20


def _digest(path: Path) -> tuple[str, int]:
    hasher, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


def write_backup(source: Path, dest: Path, about: Mapping[str, Any]) -> dict[str, Any]:
    """Archive every regular file under `source` as `data/…`, after a `manifest.json` that
    names each file's size and sha256 (and `about`: app, version, operation). Returns the
    manifest. Written beside `dest` and renamed, so `dest` is whole or absent."""
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink())
    entries = []
    for path in files:
        digest, size = _digest(path)
        entries.append({"path": f"{DATA}/{path.relative_to(source).as_posix()}",
                        "size": size, "sha256": digest})
    manifest = {"format": FORMAT, "created": time.time(), **about, "files": entries}
    raw = json.dumps(manifest, indent=2, sort_keys=True).encode()
    tmp = dest.with_name(f".{dest.name}.tmp")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tmp, "w:gz") as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(raw), int(manifest["created"]), 0o644
        tar.addfile(info, io.BytesIO(raw))
        for path, entry in zip(files, entries, strict=True):
            tar.add(path, arcname=entry["path"], recursive=False)
    tmp.replace(dest)
    return manifest


def _bad(path: Path, why: str) -> InputError:
    return InputError(f"{path} is not a usable gravity backup", [Problem(why, file=str(path))],
                      hint="use the FILE `gravity backup FILE` wrote, whole and unchanged; "
                      "nothing was written")


def verify_backup(path: Path, extract_to: Path | None = None) -> dict[str, Any]:
    """Check a backup archive whole — a readable tar.gz, its manifest first, every file
    present with the size and digest the manifest names, nothing else, no path leaving the
    archive — and, if `extract_to` is given, extract its files there. InputError otherwise."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise _bad(path, f"expected {MANIFEST} as the first entry")
            handle = tar.extractfile(first)
            assert handle is not None
            try:
                manifest = json.loads(handle.read())
            except ValueError as exc:
                raise _bad(path, f"{MANIFEST} is not JSON: {exc}") from exc
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise _bad(path, f"expected format {FORMAT!r} in {MANIFEST}")
            wanted = {e["path"]: e for e in manifest.get("files", [])
                      if isinstance(e, dict) and isinstance(e.get("path"), str)}
            seen: set[str] = set()
            for member in tar:
                if member.offset == first.offset:
                    continue  # the manifest, read above
                _check_member(path, member, wanted)
                if member.name in seen:
                    raise _bad(path, f"{member.name} appears twice")
                data = tar.extractfile(member)
                assert data is not None
                hasher, size = hashlib.sha256(), 0
                out = None
                if extract_to is not None:
                    target = extract_to / PurePosixPath(member.name).relative_to(DATA)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    out = target.open("wb")
                try:
                    while chunk := data.read(CHUNK):
                        hasher.update(chunk)
                        size += len(chunk)
                        if out is not None:
                            out.write(chunk)
                finally:
                    if out is not None:
                        out.close()
                entry = wanted[member.name]
                if size != entry.get("size") or hasher.hexdigest() != entry.get("sha256"):
                    raise _bad(path, f"{member.name} does not match its digest in {MANIFEST} "
                               f"(expected {entry.get('size')} bytes, sha256 "
                               f"{str(entry.get('sha256'))[:12]}…)")
                seen.add(member.name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _bad(path, f"cannot be read whole ({exc}); it may be truncated") from exc
    missing = sorted(set(wanted) - seen)
    if missing:
        raise _bad(path, f"files named in {MANIFEST} are missing: {', '.join(missing[:5])}")
    return manifest


def _check_member(path: Path, member: tarfile.TarInfo, wanted: Mapping[str, Any]) -> None:
    name = PurePosixPath(member.name)
    if (not member.isfile() or name.is_absolute() or ".." in name.parts
            or not name.parts or name.parts[0] != DATA):
        raise _bad(path, f"unexpected entry {member.name!r}: only files under {DATA}/")
    if member.name not in wanted:
        raise _bad(path, f"{member.name} is not named in {MANIFEST}")


__all__ = ["FORMAT", "verify_backup", "write_backup"]
