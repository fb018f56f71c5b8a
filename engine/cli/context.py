"""What every command shares: the state dir, the store (opened on first use) and the log format.
Commands get it as `ctx.obj`; opening the store lazily keeps `--help` and bad-input paths cheap.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.serving import ServeOptions
from engine.store import Store, TLSConfig, default_url, open_store

if TYPE_CHECKING:
    from engine.blobs import BlobCache


def default_state_dir() -> Path:
    """Where the embedded store, logs and node working directories live by default."""
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "gravity"


DEBUG_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s [%(threadName)s] %(message)s"


class _AboveProgress(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record above the live progress block, when one is on the terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        from engine.cli.progress import print_above

        try:
            print_above(self.format(record), self.stream)
        except Exception:  # logging must never end the command
            self.handleError(record)


def debug_logging() -> None:
    """--debug: the engine's loggers (`gravity.store`, `gravity.scheduler`, `gravity.agent`,
    `gravity.blobs`) at DEBUG on stderr, times in UTC; stdout is left to the command."""
    handler = _AboveProgress(sys.stderr)
    formatter = logging.Formatter(DEBUG_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logger = logging.getLogger("gravity")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    logger.propagate = False


@dataclass
class CliContext:
    """Global options resolved once per invocation."""

    state_dir: Path
    state_dir_given: bool = False  # --state-dir or GRAVITY_STATE_DIR, not the default
    store_url: str | None = None
    log_format: str = "console"
    quiet: bool = False
    tls: TLSConfig = field(default_factory=TLSConfig)
    serve: ServeOptions = field(default_factory=ServeOptions)
    _store: Store | None = None

    @property
    def url(self) -> str:
        return self.store_url or default_url(self.state_dir)

    def store(self) -> Store:
        """The store named by --store (default: the embedded SQLite file)."""
        if self._store is None:
            self._store = open_store(self.url, tls=self.tls)
        return self._store

    def blobs(self) -> BlobCache:
        """This host's blob cache (image content published here, fetched by nodes)."""
        from engine.blobs import BlobCache

        return BlobCache(self.state_dir)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
