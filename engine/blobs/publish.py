"""Publish an image directory into a blob cache as one tree digest, and materialize a tree (or
one of its subdirectories) back into a directory from cached blobs, atomically and idempotently.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from engine.blobs.cache import BlobCache, io_error
from engine.blobs.errors import MISSING, BlobInputError, blob_error
from engine.blobs.ref import BlobRef
from engine.blobs.tree import DIR, FILE, SYMLINK, Entry, Tree
from engine.errors import Problem


@dataclass(frozen=True)
class Published:
    """An image in a cache: `ref` names the tree blob, which names every file's blob."""

    ref: BlobRef
    tree: Tree


def publish_image(cache: BlobCache, image_dir: Path | str, *, link: bool = True) -> Published:
    """Put every regular file of `image_dir` into `cache` (hard-linked when possible, else a
    streamed copy) and store the tree document; the same content always gives the same digest.

    Symlinks are kept as entries when they resolve inside the image; one that escapes it, and
    any special file (device, FIFO, socket), is refused with a BlobInputError.
    """
    root = Path(image_dir)
    if not root.is_dir():
        raise BlobInputError(f"image directory {root} does not exist",
                             [Problem("expected a directory", file=str(root))])
    real_root = os.path.realpath(root)
    entries: dict[str, Entry] = {}
    problems: list[Problem] = []
    for rel, full, st in _walk(root):
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(Problem("file names must be UTF-8", file=str(full)))
            continue
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            entries[rel] = Entry(DIR, mode=mode)
        elif stat.S_ISREG(st.st_mode):
            entries[rel] = Entry(FILE, mode=mode, blob=cache.add_file(full, link=link))
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(full)
            if os.path.isabs(target) or not _inside(os.path.realpath(full), real_root):
                problems.append(Problem(f"symlink to {target!r} leads outside the image",
                                        file=str(full)))
            else:
                entries[rel] = Entry(SYMLINK, target=target)
        else:
            problems.append(Problem("not a regular file, directory or symlink",
                                    file=str(full)))
    if problems:
        raise BlobInputError(f"image {root} cannot be published", problems,
                             hint="remove or replace the files named above")
    tree = Tree(entries)
    return Published(cache.add_bytes(tree.to_json()), tree)


def _walk(root: Path, prefix: str = "") -> list[tuple[str, Path, os.stat_result]]:
    """(relative path, full path, lstat) of everything under root, parents first; no symlink
    is followed."""
    out = []
    with os.scandir(root) as it:
        items = sorted(it, key=lambda e: e.name)
    for item in items:
        rel = f"{prefix}{item.name}"
        st = item.stat(follow_symlinks=False)
        out.append((rel, Path(item.path), st))
        if stat.S_ISDIR(st.st_mode):
            out.extend(_walk(Path(item.path), rel + "/"))
    return out


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def load_tree(cache: BlobCache, ref: BlobRef) -> Tree:
    """The tree a cached tree blob holds (verified first; BlobError 'missing' if absent)."""
    if not cache.has(ref):
        raise blob_error(MISSING, ref.digest, None, f"the tree is not in the cache {cache.root}")
    return Tree.from_json(cache.path(ref).read_bytes(), where=f"tree {ref.short}")


def materialize(cache: BlobCache, tree_ref: BlobRef, dest: Path | str,
                subpath: str | None = None, *, link: bool = False) -> Path:
    """Build `dest` as the tree (or its directory `subpath`) from cached blobs and return it.

    The new directory is built beside `dest` and renamed over it, so `dest` is never partly
    built: it is the old content, the whole new one, or (after a crash between the two renames
    that replace an old one) absent until the next call. One builder at a time per `dest`
    (a lock file beside it). Calling again is a no-op while `dest` still matches the tree
    (types, sizes, modes and symlink targets; checked by stat, not by hashing). Files are copies
    unless `link` is set: then a file whose blob already has the wanted mode is hard-linked to
    the cache (saves the space; writing to it would corrupt the cached blob, which the cache
    then detects and discards).
    """
    dest = Path(dest)
    tree = load_tree(cache, tree_ref)
    root_mode = 0o755
    if subpath:
        subpath = subpath.strip("/")
        tree, root_mode = tree.subtree(subpath)
    missing = [b for b in sorted(tree.blobs(), key=lambda b: b.digest) if not cache.has(b)]
    if missing:
        raise blob_error(MISSING, missing[0].digest, None,
                         f"{len(missing)} blob(s) of tree {tree_ref.short} are not in the "
                         f"cache {cache.root}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(dest.parent / f".{dest.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise io_error(exc, tree_ref.digest, f"materializing {dest}") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder of `dest` at a time
        _replace(cache, tree, root_mode, dest, f"{tree_ref.digest} {subpath or '.'}\n",
                 link=link, digest=tree_ref.digest)
    finally:
        os.close(lock)
    return dest


def _replace(cache: BlobCache, tree: Tree, root_mode: int, dest: Path, stamp: str, *,
             link: bool, digest: str) -> None:
    """Unless `dest` already matches: build beside it, then swap it in and write the stamp."""
    marker = dest.parent / f".{dest.name}.tree"
    with contextlib.suppress(OSError):
        if marker.read_text() == stamp and _matches(tree, root_mode, dest):
            return
    _clean_leftovers(dest)
    tmp = dest.parent / f".{dest.name}.tmp-{secrets.token_hex(6)}"
    try:
        _build(cache, tree, root_mode, tmp, link=link)
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
        if dest.exists() or dest.is_symlink():
            old = dest.parent / f".{dest.name}.old-{secrets.token_hex(6)}"
            os.rename(dest, old)
            os.rename(tmp, dest)
            _remove(old)
        else:
            os.rename(tmp, dest)
        marker_tmp = marker.with_name(marker.name + ".tmp")
        marker_tmp.write_text(stamp)
        os.rename(marker_tmp, marker)
    except OSError as exc:
        _remove(tmp)
        raise io_error(exc, digest, f"materializing {dest}") from exc
    except BaseException:
        _remove(tmp)
        raise


def _build(cache: BlobCache, tree: Tree, root_mode: int, top: Path, *, link: bool) -> None:
    top.mkdir(mode=0o700)
    dirs: list[tuple[Path, int]] = [(top, root_mode)]
    for rel, entry in tree:
        path = top / rel
        if entry.type == DIR:
            path.mkdir(mode=0o700)  # the real mode once its children are in (it may be 0555)
            dirs.append((path, entry.mode))
        elif entry.type == SYMLINK:
            assert entry.target is not None
            os.symlink(entry.target, path)
        else:
            assert entry.blob is not None
            blob = cache.path(entry.blob)
            if link and stat.S_IMODE(os.stat(blob).st_mode) == entry.mode:
                try:
                    os.link(blob, path)
                    continue
                except OSError:
                    pass
            shutil.copyfile(blob, path)  # streamed (sendfile), never whole in memory
            os.chmod(path, entry.mode)
    real_top = os.path.realpath(top)
    for rel, entry in tree:
        if entry.type == SYMLINK and not _inside(os.path.realpath(top / rel), real_top):
            raise BlobInputError("a symlink of the tree leads outside the directory built",
                                 [Problem(f"symlink to {entry.target!r}", field=rel)])
    for path, mode in reversed(dirs):
        os.chmod(path, mode)


def _matches(tree: Tree, root_mode: int, dest: Path) -> bool:
    """Does `dest` hold exactly the tree (by stat: type, size, mode, symlink target)?"""
    try:
        st = os.lstat(dest)
        if not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) != root_mode:
            return False
        if {rel for rel, _, _ in _walk(dest)} != set(tree.entries):
            return False
        return all(_entry_matches(entry, dest / rel) for rel, entry in tree)
    except OSError:
        return False


def _entry_matches(entry: Entry, path: Path) -> bool:
    st = os.lstat(path)
    if entry.type == SYMLINK:
        return stat.S_ISLNK(st.st_mode) and os.readlink(path) == entry.target
    if stat.S_IMODE(st.st_mode) != entry.mode:
        return False
    if entry.type == DIR:
        return stat.S_ISDIR(st.st_mode)
    return stat.S_ISREG(st.st_mode) and entry.blob is not None and \
        st.st_size == entry.blob.size


def _clean_leftovers(dest: Path) -> None:
    """Remove temp and old directories a crashed materialize left beside `dest`."""
    with contextlib.suppress(OSError), os.scandir(dest.parent) as it:
        for item in it:
            if item.name.startswith((f".{dest.name}.tmp-", f".{dest.name}.old-")):
                _remove(Path(item.path))


def _remove(path: Path) -> None:
    """Remove a directory built by materialize, even one with read-only directories inside."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:
                with contextlib.suppress(OSError):
                    full = os.path.join(dirpath, name)
                    if not os.path.islink(full):
                        os.chmod(full, 0o700)
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()

