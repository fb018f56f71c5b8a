"""The root marker of an etcd store: the key `<prefix>/.gravity-store` says one store owns that
prefix. Opening claims the prefix once, refusing one inside or around another store's.
"""

from __future__ import annotations

import re
import time
from typing import Any

from pyetcd import MultiEndpointEtcd3Client
from pyetcd import transactions as tx

from engine.errors import StoreConfigError, StoreUnavailable
from engine.store.etcd_conn import Connection
from engine.store.etcd_errors import CAUGHT, is_permission_denied
from engine.store.etcd_keys import MARKER, Keys, decode, encode, in_layout, span

Client = MultiEndpointEtcd3Client
# The key layout a marker records (docs/storage.md); a store marked by a newer one is refused.
FORMAT = 1
# Claims that lost a race (a key appeared under the prefix meanwhile) are tried again this often.
CLAIM_ROUNDS = 20
# Keys of an unmarked outer prefix's `op/` range looked at for an operation record.
PEEK = 50
_PREFIX = re.compile(r"(/[A-Za-z0-9_.~-]+)+")


def ancestors(prefix: str) -> list[str]:
    """`/a/b/c` -> [`/a`, `/a/b`]: every prefix a store around this one could have."""
    parts = prefix.split("/")[1:]
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def marker_value(prefix: str) -> bytes:
    return encode({"store": "gravity", "format": FORMAT, "prefix": prefix,
                   "created": time.time()})


def is_marker(value: bytes, prefix: str) -> bool:
    """Whether `value` (found at `<prefix>/.gravity-store`) is a store's root marker rather
    than, say, another store's record. Its `prefix` is where it was first written and may
    differ (a store mirrored elsewhere). StoreConfigError when a newer gravity wrote it:
    this one would misread that layout."""
    try:
        d = decode(value)
    except ValueError:
        return False
    if not isinstance(d, dict) or d.get("store") != "gravity":
        return False
    fmt = d.get("format")
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise StoreConfigError(
            f"the gravity store at etcd prefix {prefix} has key layout format {fmt!r}; "
            f"this gravity reads format {FORMAT}",
            hint="use the gravity release that wrote this store (or a newer one)")
    return True


def owner_of(key: bytes, prefix: str) -> str | None:
    """The prefix of the other gravity store that wrote `key` (found under `prefix`, not in
    its layout): the one whose marker it is, else the shortest whose layout names it."""
    text = key.decode("ascii", errors="replace")
    if text.endswith("/" + MARKER):
        head = text[: -len(MARKER) - 1]
        if head != prefix and _PREFIX.fullmatch(head):
            return head
    cut = 0
    while (cut := text.find("/", cut + 1)) > 0:
        head, rest = text[:cut], text[cut + 1:]
        if head != prefix and _PREFIX.fullmatch(head) and in_layout(rest):
            return head
    return None


def _nested(prefix: str, other: str, relation: str) -> StoreConfigError:
    return StoreConfigError(
        f"etcd prefix {prefix} {relation} the prefix {other} of another gravity store; "
        "a store must own its prefix alone",
        hint=f"choose a prefix that is neither inside nor around {other} (e.g. a sibling "
        f"of it), or use {other} itself if that is the store you mean")


def inside(prefix: str, outer: str) -> StoreConfigError:
    return _nested(prefix, outer, "is inside")


def around(prefix: str, inner: str) -> StoreConfigError:
    return _nested(prefix, inner, "contains")


def foreign(prefix: str, key: bytes) -> StoreConfigError:
    """The refusal for a key under `prefix` that this store would not have written."""
    owner = owner_of(key, prefix)
    if owner is not None:
        return around(prefix, owner) if owner.startswith(prefix + "/") else inside(prefix, owner)
    shown = key.decode("ascii", errors="replace")
    return StoreConfigError(
        f"etcd prefix {prefix} holds key {shown}, which no gravity store writes; a store "
        "must own its prefix alone",
        hint="choose a prefix that holds no other data (e.g. a new one under which etcdctl "
        "get --prefix shows nothing)")


def open_root(conn: Connection, keys: Keys) -> None:
    """Open the store at `keys.prefix`: one read of its marker, and the first time (no
    marker yet) claim the prefix. Refuses (StoreConfigError) a prefix another store owns,
    inside or around it, and one holding keys no gravity store writes."""
    resp = conn.open(lambda c: c.get_response(keys.marker()))
    if resp.kvs and is_marker(resp.kvs[0].value, keys.prefix):
        return
    conn.call(f"claiming etcd prefix {keys.prefix}", lambda c: _claim(conn, c, keys))


def _readable(client: Client, read: Any) -> Any | None:
    """`read(client)`, or None when the user's role does not cover those keys: a store
    there would be another user's, which etcd keeps apart from ours anyway."""
    try:
        return read(client)
    except CAUGHT as exc:
        if is_permission_denied(exc):
            return None
        raise


def _claim(conn: Connection, client: Client, keys: Keys) -> None:
    """Write the marker in one transaction that holds only if no outer prefix has a marker
    and no key appeared under ours since we checked them all: either a fresh prefix, or one
    an older gravity wrote (every key in our layout), which is adopted."""
    prefix, marker = keys.prefix, keys.marker()
    start, end = span(keys.root())
    for _ in range(CLAIM_ROUNDS):
        guards = [tx.Version(marker) == 0]
        for outer in ancestors(prefix):
            outer_marker = Keys(outer).marker()
            found = _readable(client, lambda c, k=outer_marker: c.get_response(k))
            if found is None:
                continue
            if found.kvs:
                raise inside(prefix, outer)
            if _has_operations(client, Keys(outer), start, end):
                raise inside(prefix, outer)
            guards.append(tx.Version(outer_marker) == 0)
        rows, revision = conn.scan_with(client, start, end, keys_only=True)
        for key, _ in rows:
            if key == marker:
                mine = client.get_response(marker)
                if mine.kvs and is_marker(mine.kvs[0].value, prefix):
                    return  # another process claimed it meanwhile
            if not keys.owns(key):
                raise foreign(prefix, key)
        ok, _ = client.transaction(
            compare=[*guards, tx.Create(start, end) < revision + 1],
            success=[tx.Put(marker, marker_value(prefix))], failure=[])
        if ok:
            return
    raise StoreUnavailable(f"keys under etcd prefix {prefix} kept changing while claiming it",
                           hint="retry the command")


def _has_operations(client: Client, outer: Keys, start: bytes, end: bytes) -> bool:
    """Whether the unmarked `outer` prefix holds an operation record outside our range
    [start, end): a store an older gravity wrote, which ours would sit inside. The marker
    of a sibling store at `<outer>/op` looks like one and is not."""
    op_start, op_end = span(outer.ops())
    sibling = Keys(outer.prefix + "/op").marker()
    for lo, hi in ((op_start, min(op_end, start)), (max(op_start, end), op_end)):
        if lo >= hi:
            continue
        resp = _readable(client, lambda c, lo=lo, hi=hi: c.get_range_response(
            lo, hi, limit=PEEK, keys_only=True))
        if resp is not None and any(kv.key != sibling and outer.owns(kv.key)
                                    for kv in resp.kvs):
            return True
    return False


__all__ = ["FORMAT", "ancestors", "is_marker", "open_root", "owner_of"]
