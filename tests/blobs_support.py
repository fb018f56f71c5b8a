"""Helpers for the blob tests: a loopback blob server per test, pseudo-random blobs, snapshots
of directory trees, the child process that fetches like an agent, and their fixtures (a plugin).
"""

from __future__ import annotations

import http.client
import os
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.blobs import BlobCache, BlobRef, BlobServer
from engine.blobs.server import BlobHandler, Served

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "examples" / "quickstart" / "v1"
TOKEN = "s3cret-token"
MIB = 1 << 20

# The agent's side in its own process: fetch one blob and print the peak RSS in KiB.
CHILD = textwrap.dedent("""
    import resource, sys
    from engine.blobs import BlobCache, BlobRef, fetch
    digest, size, url, token, root = sys.argv[1:6]
    fetch(BlobRef(digest, int(size)), base_url=url, token=token, cache=BlobCache(root),
          backoff=0.01)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


class Servers:
    """Starts blob servers on loopback (stopped by `stop_all`); each records its requests."""

    def __init__(self) -> None:
        self.started: list[BlobServer] = []

    def __call__(self, cache: BlobCache, handler: type[BlobHandler] = BlobHandler,
                 **kwargs: object) -> tuple[BlobServer, list[Served]]:
        seen: list[Served] = []
        server = BlobServer(cache, "127.0.0.1", tokens=[TOKEN], on_request=seen.append,
                            **kwargs)  # type: ignore[arg-type]
        server.handler_class = handler
        server.start()
        self.started.append(server)
        return server, seen

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Everything under root: relative path -> (kind, mode, content or link target)."""
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = str(full.relative_to(root))
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), full.read_bytes())
    return out


def leftovers(cache: BlobCache) -> list[str]:
    """Files in the cache's blob and temp dirs."""
    return sorted(p.name for d in (cache.blob_dir, cache.tmp_dir) if d.exists()
                  for p in d.iterdir())


def make_blob(cache: BlobCache, path: Path, size: int) -> BlobRef:
    """A file of `size` pseudo-random bytes, added to `cache` (hard-linked)."""
    block = os.urandom(MIB)
    with open(path, "wb") as f:
        for i in range(0, size, MIB):
            f.write(i.to_bytes(8, "big") + block[8: min(MIB, size - i)])
    return cache.add_file(path)


def get(url: str, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


# -- fixtures (registered from tests/conftest.py's pytest_plugins) -----------------------------


@pytest.fixture
def coord(tmp_path: Path) -> BlobCache:
    return BlobCache(tmp_path / "coord")


@pytest.fixture
def node(tmp_path: Path) -> BlobCache:
    return BlobCache(tmp_path / "node")


@pytest.fixture
def serve() -> Iterator[Servers]:
    servers = Servers()
    yield servers
    servers.stop_all()
