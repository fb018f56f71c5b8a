"""Translation of sqlite3 failures into `engine.errors` types for the embedded store.
Names the real cause — busy, disk full, I/O error, read-only, damaged — with its own next step.
"""

from __future__ import annotations

import enum
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from engine.errors import StoreConfigError, StoreError, StoreUnavailable

# SQLite's primary result codes (the low byte of an extended code) that name a cause.
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR = 5, 6, 8, 10
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 11, 13, 14, 26
# Less free space than this when SQLite reports an I/O error means the disk is full: SQLite
# says "disk I/O error" (SQLITE_IOERR_SHMSIZE) when it cannot grow its shared-memory file.
NEARLY_FULL = 1024 * 1024


class Cause(enum.Enum):
    """Why a SQLite call failed, as far as the error code and the file system tell."""

    BUSY = "busy"
    FULL = "disk full"
    READ_ONLY = "read-only"
    IO = "I/O error"
    DAMAGED = "damaged"
    OTHER = "other"


@dataclass(frozen=True)
class Diagnosis:
    """A failure's cause, with what the file system under the store said about itself."""

    cause: Cause
    read_only: bool = False
    free: int | None = None  # bytes this process may still write; None when unknown


def file_system(path: Path) -> tuple[bool, int | None]:
    """(read-only?, bytes this process may still write) for the file system holding `path`."""
    for candidate in (path, *path.parents):
        try:
            st = os.statvfs(candidate)
        except OSError:
            continue
        blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
        return bool(st.f_flag & os.ST_RDONLY), blocks * st.f_frsize
    return False, None


def diagnose(exc: sqlite3.Error, path: Path | None) -> Diagnosis:
    """Why `exc` happened: its SQLite result code, and for an I/O or open error whether the
    file system under `path` is full or read-only (SQLite cannot tell those apart there)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    read_only, free = file_system(path) if path is not None else (False, None)
    text = str(exc)
    if primary in (SQLITE_BUSY, SQLITE_LOCKED) or (
            primary is None and ("locked" in text or "busy" in text)):
        cause = Cause.BUSY
    elif primary == SQLITE_READONLY or (primary in (SQLITE_IOERR, SQLITE_CANTOPEN)
                                        and read_only):
        cause = Cause.READ_ONLY
    elif primary == SQLITE_FULL or (primary in (SQLITE_IOERR, SQLITE_CANTOPEN)
                                    and free is not None and free < NEARLY_FULL):
        cause = Cause.FULL
    elif primary == SQLITE_IOERR:
        cause = Cause.IO
    elif primary in (SQLITE_CORRUPT, SQLITE_NOTADB):
        cause = Cause.DAMAGED
    else:
        cause = Cause.OTHER
    return Diagnosis(cause, read_only, free)


def translate(exc: sqlite3.Error, what: str, path: Path | None = None) -> StoreError:
    """The engine error for a driver error met while doing `what` on the store at `path`.

    Busy or locked is transient (StoreUnavailable: another gravity process holds the
    database). A full disk, an I/O error, a read-only file or file system and a damaged
    file are not, and each says so with its own next step.
    """
    d = diagnose(exc, path)
    store = f"embedded store {path}" if path is not None else "embedded store"
    where = str(path.parent) if path is not None else "the store's directory"
    if d.cause is Cause.BUSY:
        return StoreUnavailable(f"{store} busy while {what}: {exc}",
                                hint="another gravity process holds the database; retry "
                                "when it is done")
    if d.cause is Cause.FULL:
        room = f"{d.free} bytes free under {where}; " if d.free is not None else ""
        return StoreError(f"{store}: the disk is full while {what} ({room}SQLite said: "
                          f"{exc}); nothing was written",
                          hint=f"free space on that file system (`df -h {where}`), then retry; "
                          "`gravity plan` shows where the operation stands")
    if d.cause is Cause.READ_ONLY:
        why = "its file system is mounted read-only" if d.read_only else str(exc)
        return StoreError(f"{store} is read-only while {what}: {why}; nothing was written",
                          hint=f"make {where} and the database file writable for this user "
                          "(or remount the file system read-write), or pass --store")
    if d.cause is Cause.IO:
        name = getattr(exc, "sqlite_errorname", "SQLITE_IOERR")
        return StoreError(f"{store}: disk I/O error while {what} ({name}: {exc})",
                          hint=f"check the disk under {where} (`dmesg`, `df -h {where}`), "
                          "then retry; `gravity plan` shows what was recorded")
    if d.cause is Cause.DAMAGED:
        return StoreError(f"{store} is damaged while {what}: {exc}",
                          hint="restore the database file from a backup, or start a new one "
                          "with --store sqlite:///new/path/gravity.db")
    return StoreError(f"{store} failed while {what}: {exc}")


def open_failure(exc: sqlite3.Error, path: Path) -> StoreError:
    """The error for a store that cannot be opened: the environment's fault (busy, disk
    full, read-only, I/O) is a StoreError (exit 1); anything else a wrong path (exit 2)."""
    if diagnose(exc, path).cause in (Cause.OTHER, Cause.DAMAGED):
        return StoreConfigError(f"cannot open the embedded store {path}: {exc}",
                                hint="check the path and its permissions, or pass --store")
    return translate(exc, "opening it", path)
