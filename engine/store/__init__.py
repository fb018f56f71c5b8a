"""Store backends behind one contract: `open_store(url)` picks SQLite (default) or etcd.
The engine never imports a backend module directly; it asks for a Store here.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from engine.errors import StoreConfigError
from engine.store.base import Capabilities, Store, TLSConfig

# Phase processes are fork()ed (preexec_fn sets PR_SET_PDEATHSIG, so no vfork). With gRPC's fork
# support on, its fork handlers restart gRPC's epoll poller in the child; the child then closes
# its descriptors before exec, the poller sees EBADF and abort()s: the phase "exited with status
# -6" before its command ran (grpc/grpc#43055). Nothing here uses gRPC across a fork, so turn
# the handlers off before grpc is first imported (every etcd module lives in this package).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")


def default_url(state_dir: Path) -> str:
    """The embedded store under the state dir: works with zero setup."""
    return f"sqlite://{(state_dir / 'gravity.db').resolve()}"


SQLITE_FORM = "use sqlite:///absolute/path/gravity.db"


def _scheme(url: str) -> str:
    """The URL's scheme, read without parsing the rest (which may not parse)."""
    return url.partition(":")[0].lower() if ":" in url else ""


def _sqlite_path(url: str) -> str | None:
    """The file of a `sqlite:` URL: sqlite:///abs/path.db (absolute) or sqlite:rel/path.db
    (relative to the cwd); None for any other scheme; StoreConfigError if it does not parse."""
    if _scheme(url) != "sqlite":
        return None
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # unbalanced [ ] in the host part
        raise StoreConfigError(f"store URL {url!r} does not parse: {exc}",
                               hint=SQLITE_FORM) from None
    return parts.path if not parts.netloc else f"/{parts.netloc}{parts.path}"


def would_create(url: str) -> bool:
    """Opening `url` would create a store that is not there yet (an embedded file that does
    not exist): what shell completion must not do as a side effect of pressing TAB."""
    try:
        path = _sqlite_path(url)
    except StoreConfigError:
        return False  # opening it fails before creating anything
    return path is not None and (not path or not Path(path).is_file())


def _opened(store: Store) -> Store:
    from engine.store.calllog import opened

    opened(store.url)
    return store


def open_store(url: str, *, tls: TLSConfig | None = None) -> Store:
    """Open the store named by `url`; StoreConfigError (exit 2) for a URL we cannot use."""
    scheme = _scheme(url)
    if scheme == "sqlite":
        path = _sqlite_path(url) or ""
        if not path or path.endswith("/"):
            raise StoreConfigError(f"store URL {url!r} names no database file",
                                   hint=SQLITE_FORM)
        from engine.store.sqlite import SQLiteStore

        return _opened(SQLiteStore(Path(path)))
    if scheme in ("etcd", "etcds"):
        try:
            from engine.store.etcd import EtcdStore
        except ImportError as exc:
            raise StoreConfigError(
                f"the etcd store needs the etcd client library: {exc}",
                hint="pip install 'gravity-engine[etcd]'",
            ) from exc
        return _opened(EtcdStore.from_url(url, tls=tls or TLSConfig()))
    raise StoreConfigError(
        f"unsupported store URL {url!r}",
        hint="use sqlite:///path/gravity.db or etcd://host:2379[,host2:2379][/prefix]",
    )


__all__ = ["Capabilities", "Store", "TLSConfig", "default_url", "open_store", "would_create"]
