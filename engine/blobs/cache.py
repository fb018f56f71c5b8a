"""Content-addressed blob cache: `<root>/blobs/sha256/<hex>`, each blob written through a locked
partial file in `<root>/blobs/tmp/` that is fsynced, verified and renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import stat
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.blobs.errors import CORRUPT, MISMATCH, NO_SPACE, WRITE_ERROR, BlobError, blob_error
from engine.blobs.ref import HEX_RE, BlobRef, as_hex

CHUNK = 1 << 20  # bytes read or written at a time: the memory a transfer needs, whatever its size
PARTIAL_AGE = 24 * 3600.0  # gc removes unlocked partial files older than this (seconds)


def io_error(exc: OSError, digest: str | None, doing: str) -> BlobError:
    """An OSError writing the cache as a BlobError; ENOSPC/EDQUOT are named 'no space'."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return blob_error(NO_SPACE, digest, None, f"no space left on the node's disk {doing}")
    return blob_error(WRITE_ERROR, digest, None, f"{doing}: {exc.strerror or exc}")


# Blobs whose digest this process has checked: (st_dev, st_ino) -> (hex, size, mtime_ns, when).
# A file whose size or mtime changed since is hashed again. As in git's "racy clean" rule, a
# file modified less than RACY_NS before it was hashed is not trusted (a write in the same clock
# tick would leave its mtime unchanged), so it is hashed again until it is older.
_VERIFIED: dict[tuple[int, int], tuple[str, int, int, int]] = {}
_VERIFIED_LOCK = threading.Lock()
RACY_NS = 2_000_000_000


def _remember(st: os.stat_result, hex_: str, hashed_at_ns: int) -> None:
    with _VERIFIED_LOCK:
        _VERIFIED[(st.st_dev, st.st_ino)] = (hex_, st.st_size, st.st_mtime_ns, hashed_at_ns)


def _known(st: os.stat_result, hex_: str) -> bool:
    with _VERIFIED_LOCK:
        seen = _VERIFIED.get((st.st_dev, st.st_ino))
    return seen is not None and seen[:3] == (hex_, st.st_size, st.st_mtime_ns) and \
        st.st_mtime_ns < seen[3] - RACY_NS


def hash_fd(fd: int, hasher: Any = None, start: int = 0, end: int | None = None) -> Any:
    """Feed bytes [start, end) of an open file to a sha256 (new unless given), CHUNK at a time."""
    hasher = hasher or hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    pos = start
    while end is None or pos < end:
        want = CHUNK if end is None else min(CHUNK, end - pos)
        n = os.preadv(fd, [view[:want]], pos)
        if n == 0:
            break
        hasher.update(view[:n])
        pos += n
    return hasher


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class GcReport:
    """What `BlobCache.gc` did: blobs removed and kept, partials removed, bytes freed (a blob
    still hard-linked elsewhere, e.g. to the image it was published from, frees nothing)."""

    removed: int
    kept: int
    partials_removed: int
    freed: int


class BlobCache:
    """Blobs under `<root>/blobs/`; `has(ref)` is true only for a complete, verified blob."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "blobs" / "sha256"
        self.tmp_dir = self.root / "blobs" / "tmp"
        self.discarded: deque[tuple[str, str]] = deque(maxlen=100)  # (digest, why), newest last

    def ensure_dirs(self) -> None:
        try:
            self.blob_dir.mkdir(parents=True, exist_ok=True)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise io_error(exc, None, f"creating {self.blob_dir}") from exc

    def path(self, ref: BlobRef | str) -> Path:
        """Where the blob lives when complete (whether or not it is there)."""
        return self.blob_dir / as_hex(ref)

    def partial_path(self, ref: BlobRef) -> Path:
        return self.tmp_dir / f"{ref.hex}.partial"

    # -- reading -------------------------------------------------------------------------------

    def has(self, ref: BlobRef) -> bool:
        """True when the blob is complete and verified; a wrong-sized or corrupt one is removed.

        The size is checked on every call (one stat); the digest is computed the first time
        this process sees the file, and again whenever its size or mtime changed.
        """
        found = self._verified_stat(ref.hex, ref.size)
        return found is not None

    def lookup(self, hex_: str) -> tuple[Path, int] | None:
        """The verified path and size of a blob named by its hex digest, or None (the server's
        view: it knows only the name). A corrupt file is removed and reported missing."""
        if not HEX_RE.fullmatch(hex_):
            return None
        st = self._verified_stat(hex_, None)
        return None if st is None else (self.blob_dir / hex_, st.st_size)

    def _verified_stat(self, hex_: str, size: int | None) -> os.stat_result | None:
        path = self.blob_dir / hex_
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if size is not None and st.st_size != size:
            self._discard(path, hex_, f"size {st.st_size} instead of {size}")
            return None
        if _known(st, hex_):
            return st
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        hashed_at = time.time_ns()
        try:
            st = os.fstat(fd)
            got = hash_fd(fd, end=st.st_size).hexdigest()
        except OSError as exc:
            self._discard(path, hex_, f"unreadable: {exc.strerror}")
            return None
        finally:
            os.close(fd)
        if got != hex_:
            self._discard(path, hex_, f"content hashes to sha256:{got[:12]}")
            return None
        _remember(st, hex_, hashed_at)
        return st

    def _discard(self, path: Path, hex_: str, why: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.discarded.append((f"sha256:{hex_}", why))

    def check(self, ref: BlobRef) -> Path:
        """The blob's path if `has(ref)`, else a BlobError (cause 'corrupt' if one was removed)."""
        if self.has(ref):
            return self.path(ref)
        raise blob_error(CORRUPT, ref.digest, None, f"not in the cache at {self.path(ref)}")

    # -- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def partial(self, ref: BlobRef) -> Iterator[Partial]:
        """The blob's partial file, created if missing, locked against every other writer of
        the same blob (threads or processes) until the block ends."""
        self.ensure_dirs()
        path = self.partial_path(ref)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise io_error(exc, ref.digest, f"creating {path}") from exc
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder committed or discarded it: open the new one
        try:
            yield Partial(self, ref, fd, path)
        finally:
            os.close(fd)

    def add_file(self, src: Path, *, link: bool = True) -> BlobRef:
        """Put a file into the cache (hard link when allowed and on the same file system,
        else a streamed copy) and return its name."""
        self.ensure_dirs()
        tmp = self.tmp_dir / f"add-{secrets.token_hex(8)}.partial"
        hashed_at = time.time_ns()
        try:
            linked = False
            if link:
                with contextlib.suppress(OSError):
                    os.link(src, tmp, follow_symlinks=False)
                    linked = True
            if linked:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    hex_ = hash_fd(fd).hexdigest()
                    st = os.fstat(fd)
                finally:
                    os.close(fd)
            else:
                hex_, st = self._copy_in(src, tmp)
            ref = BlobRef(f"sha256:{hex_}", st.st_size)
            self._install(tmp, ref, hashed_at)
            return ref
        except OSError as exc:
            raise io_error(exc, None, f"adding {src} to the cache at {self.root}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _copy_in(self, src: Path, tmp: Path) -> tuple[str, os.stat_result]:
        hasher = hashlib.sha256()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        with open(src, "rb", buffering=0) as fin:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                while n := fin.readinto(buf):
                    hasher.update(view[:n])
                    _write_all(out, view[:n])
                os.fsync(out)
                return hasher.hexdigest(), os.fstat(out)
            finally:
                os.close(out)

    def add_bytes(self, data: bytes) -> BlobRef:
        """Store a small in-memory document (a tree) as a blob."""
        ref = BlobRef.of_bytes(data)
        if self.has(ref):
            return ref
        self.ensure_dirs()
        tmp = self.tmp_dir / f"add-{secrets.token_hex(8)}.partial"
        hashed_at = time.time_ns()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                _write_all(fd, memoryview(data))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._install(tmp, ref, hashed_at)
            return ref
        except OSError as exc:
            raise io_error(exc, ref.digest, f"writing {tmp}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _install(self, tmp: Path, ref: BlobRef, hashed_at: int) -> None:
        """Rename a temp file hashed (from `hashed_at` on) to the blob's name, unless a good
        copy is there already."""
        if self.has(ref):
            return
        final = self.path(ref)
        os.rename(tmp, final)
        fsync_dir(self.blob_dir)
        _remember(os.stat(final), ref.hex, hashed_at)

    # -- garbage collection --------------------------------------------------------------------

    def gc(self, keep: Iterable[BlobRef | str], *, partial_age: float = PARTIAL_AGE,
           now: float | None = None) -> GcReport:
        """Remove every blob not in `keep`, and partial files older than `partial_age` seconds
        that no writer holds. Run it when no fetch that needs other blobs is in flight."""
        keep_hex = {as_hex(k) for k in keep}
        removed = kept = partials = freed = 0
        now = time.time() if now is None else now
        for entry in _scan(self.blob_dir):
            if entry.name in keep_hex:
                kept += 1
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed += 1
            freed += st.st_size if st.st_nlink == 1 else 0
        for entry in _scan(self.tmp_dir):
            if not entry.name.endswith(".partial"):
                continue
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat(follow_symlinks=False)
                if now - st.st_mtime < partial_age or not _unlock_free(entry.path):
                    continue
                os.unlink(entry.path)
                partials += 1
                freed += st.st_size if st.st_nlink == 1 else 0
        return GcReport(removed=removed, kept=kept, partials_removed=partials, freed=freed)


def _scan(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _unlock_free(path: str) -> bool:
    """True when no writer holds the partial file's lock."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


class Partial:
    """A locked partial download of one blob; appended to, then committed or discarded."""

    def __init__(self, cache: BlobCache, ref: BlobRef, fd: int, path: Path) -> None:
        self.cache, self.ref, self.fd, self.path = cache, ref, fd, path
        self.opened_at = time.time_ns()  # before this process hashed any of its bytes

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def reset(self) -> None:
        """Start over from byte 0."""
        os.ftruncate(self.fd, 0)

    def hash_so_far(self) -> Any:
        """A sha256 fed with the bytes already in the partial file (read once, CHUNK at a time)."""
        return hash_fd(self.fd, end=self.size())

    def append(self, data: memoryview | bytes) -> None:
        """Write at the end, unbuffered, so the file's length is what was received."""
        try:
            os.lseek(self.fd, 0, os.SEEK_END)
            _write_all(self.fd, memoryview(data))
        except OSError as exc:
            self.discard()
            raise io_error(exc, self.ref.digest, f"writing {self.path}") from exc

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def commit(self, hasher: Any) -> Path:
        """fsync, check size and digest (`hasher` has seen every byte), rename into place."""
        ref = self.ref
        try:
            os.fsync(self.fd)
            size = self.size()
        except OSError as exc:
            self.discard()
            raise io_error(exc, ref.digest, f"syncing {self.path}") from exc
        got = hasher.hexdigest()
        if size != ref.size or got != ref.hex:
            self.discard()
            raise blob_error(MISMATCH, ref.digest, None,
                             f"received {size} bytes hashing to sha256:{got[:12]}, expected "
                             f"{ref.size} bytes; the download was discarded")
        final = self.cache.path(ref)
        try:
            os.rename(self.path, final)
            fsync_dir(self.cache.blob_dir)
        except OSError as exc:
            self.discard()
            raise io_error(exc, ref.digest, f"renaming {self.path} to {final}") from exc
        _remember(os.fstat(self.fd), ref.hex, self.opened_at)
        return final
