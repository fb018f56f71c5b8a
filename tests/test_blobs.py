"""Image content by digest: publish the quickstart image, materialize it, serve it with a token
and fetch it onto a node's cache; corrupt and truncated blobs, refusals of the server, gc.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from engine.blobs import (
    BlobCache,
    BlobError,
    BlobInputError,
    BlobRef,
    advertise_address,
    fetch,
    fetch_tree,
    load_tree,
    materialize,
    publish_image,
)
from engine.blobs.tree import Tree
from tests.blobs_support import (
    IMAGE,
    MIB,
    TOKEN,
    get,
    leftovers,
    make_blob,
    snapshot,
)

# -- publishing and materializing -------------------------------------------------------------

def test_one_digest_names_the_quickstart_image_and_materializes_it_byte_for_byte(
        coord: BlobCache, tmp_path: Path) -> None:
    published = publish_image(coord, IMAGE)
    again = publish_image(BlobCache(tmp_path / "other"), IMAGE, link=False)
    assert again.ref == published.ref  # same content, same digest, linked or copied
    assert load_tree(coord, published.ref) == published.tree
    assert all(coord.has(blob) for blob in published.tree.blobs())

    dest = materialize(coord, published.ref, tmp_path / "out" / "image")
    assert snapshot(dest) == snapshot(IMAGE)
    assert stat.S_IMODE((dest / "upgrade").stat().st_mode) == 0o755

    inode = dest.stat().st_ino
    assert materialize(coord, published.ref, dest) == dest
    assert dest.stat().st_ino == inode  # still matching: left alone
    (dest / "app.yaml").write_text("edited on the node\n")
    materialize(coord, published.ref, dest)
    assert snapshot(dest) == snapshot(IMAGE)  # rebuilt, atomically beside it
    assert sorted(p.name for p in dest.parent.iterdir()) == [".image.lock", ".image.tree",
                                                             "image"]

    builders = [threading.Thread(target=materialize, args=(
        coord, published.ref, tmp_path / "twice")) for _ in range(2)]
    for t in builders:
        t.start()
    for t in builders:
        t.join()
    assert snapshot(tmp_path / "twice") == snapshot(IMAGE)

    pkg = materialize(coord, published.ref, tmp_path / "runtime", "packages/runtime/1.0.0")
    assert snapshot(pkg) == snapshot(IMAGE / "packages" / "runtime" / "1.0.0")
    with pytest.raises(BlobInputError, match="no directory 'packages/nope'"):
        materialize(coord, published.ref, tmp_path / "nope", "packages/nope")


def test_symlinks_inside_the_image_are_kept_and_escaping_ones_refused(
        coord: BlobCache, tmp_path: Path) -> None:
    image = tmp_path / "image"
    (image / "bin").mkdir(parents=True)
    (image / "bin" / "tool").write_text("#!/bin/sh\n")
    (image / "current").symlink_to("bin/tool")
    published = publish_image(coord, image)
    dest = materialize(coord, published.ref, tmp_path / "out")
    assert os.readlink(dest / "current") == "bin/tool"

    (image / "bin" / "escape").symlink_to("../../elsewhere")
    (image / "abs").symlink_to("/etc/passwd")
    with pytest.raises(BlobInputError) as err:
        publish_image(coord, image)
    text = err.value.render()
    assert "bin/escape" in text and "abs" in text and "leads outside the image" in text


def test_blob_refs_are_validated() -> None:
    ok = BlobRef.from_dict({"digest": "sha256:" + "a" * 64, "size": 3})
    assert ok.to_dict() == {"digest": "sha256:" + "a" * 64, "size": 3}
    for bad in ({"digest": "sha256:" + "A" * 64, "size": 3}, {"digest": "md5:abc", "size": 1},
                {"digest": "sha256:" + "a" * 64, "size": -1},
                {"digest": "sha256:" + "a" * 64, "size": True},
                {"digest": "sha256:" + "a" * 64, "size": 1, "extra": 0}, "sha256:x"):
        with pytest.raises(BlobInputError, match="malformed blob reference"):
            BlobRef.from_dict(bad, where="spec.package")


# -- fetching -------------------------------------------------------------------------------

def test_a_node_fetches_the_image_once_then_uses_its_cache(
        coord: BlobCache, node: BlobCache, serve, tmp_path: Path) -> None:
    published = publish_image(coord, IMAGE)
    server, seen = serve(coord)
    assert server.url.startswith("http://127.0.0.1:")  # no TLS given: plain HTTP
    tree = fetch_tree(published.ref, subpath="packages/runtime/1.0.0", base_url=server.url,
                      token=TOKEN, cache=node)
    assert len(seen) == 1 + len(tree.blobs())
    assert all(s.status == 200 for s in seen)
    dest = materialize(node, published.ref, tmp_path / "pkg", "packages/runtime/1.0.0")
    assert snapshot(dest) == snapshot(IMAGE / "packages" / "runtime" / "1.0.0")
    linked = materialize(node, published.ref, tmp_path / "linked", "/packages/runtime/1.0.0/",
                         link=True)
    assert snapshot(linked) == snapshot(dest)
    assert (linked / "bin" / "runtime.txt").stat().st_ino in {
        node.path(blob).stat().st_ino for blob in tree.blobs()}  # same mode: shares the inode

    before = len(seen)
    fetch_tree(published.ref, subpath="packages/runtime/1.0.0", base_url=server.url,
               token=TOKEN, cache=node)
    assert len(seen) == before  # verified in the cache: no request at all


def test_two_fetches_of_one_blob_at_once_download_it_once(
        coord: BlobCache, node: BlobCache, serve, tmp_path: Path) -> None:
    ref = make_blob(coord, tmp_path / "pkg.bin", 8 * MIB)
    server, seen = serve(coord)
    threads = [threading.Thread(target=fetch, args=(ref,), kwargs={
        "base_url": server.url, "token": TOKEN, "cache": node}) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert node.has(ref)
    assert [s.status for s in seen] == [200]


def test_a_corrupt_or_truncated_cached_blob_is_removed_and_fetched_again(
        coord: BlobCache, node: BlobCache, serve, tmp_path: Path) -> None:
    ref = make_blob(coord, tmp_path / "pkg.bin", 2 * MIB)
    server, seen = serve(coord)
    path = fetch(ref, base_url=server.url, token=TOKEN, cache=node)
    long_ago = time.time() - 3600
    os.utime(path, (long_ago, long_ago))
    assert node.has(ref)  # verified once; now remembered by this process

    with open(path, "r+b") as f:  # flip one byte in the node's copy
        f.seek(MIB)
        byte = f.read(1)
        f.seek(MIB)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert not node.has(ref) and not path.exists()
    assert node.discarded[-1][0] == ref.digest
    fetch(ref, base_url=server.url, token=TOKEN, cache=node)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ref.hex

    os.truncate(path, MIB)
    assert not node.has(ref) and not path.exists()
    fetch(ref, base_url=server.url, token=TOKEN, cache=node)
    assert node.has(ref) and [s.status for s in seen] == [200, 200, 200]


def test_a_partial_file_with_bad_bytes_is_dropped_and_the_blob_fetched_whole(
        coord: BlobCache, node: BlobCache, serve, tmp_path: Path) -> None:
    ref = make_blob(coord, tmp_path / "pkg.bin", 2 * MIB)
    server, seen = serve(coord)
    node.ensure_dirs()
    node.partial_path(ref).write_bytes(b"\0" * MIB)  # what a torn write could leave
    path = fetch(ref, base_url=server.url, token=TOKEN, cache=node)
    assert [(s.status, s.range) for s in seen] == [(206, f"bytes={MIB}-"), (200, None)]
    assert path.read_bytes() == (tmp_path / "pkg.bin").read_bytes()
    assert leftovers(node) == [ref.hex]


def test_a_malformed_tree_document_is_refused_with_the_field(
        coord: BlobCache, tmp_path: Path) -> None:
    blob = {"type": "file", "mode": "0644", "digest": "sha256:" + "a" * 64, "size": 1}
    for entries, field in (({"../x": blob}, "entries.../x"),
                           ({"a/b": blob}, "entries.a/b"),
                           ({"a": {**blob, "mode": "644"}}, "tree.entries.a.mode"),
                           ({"a": {"type": "fifo"}}, "tree.entries.a.type")):
        doc = json.dumps({"format": "gravity-tree/1", "entries": entries}).encode()
        with pytest.raises(BlobInputError, match="malformed tree") as err:
            Tree.from_json(doc)
        assert err.value.problems[0].field == field
    bad = coord.add_bytes(b"not json")
    with pytest.raises(BlobInputError, match="malformed tree document"):
        materialize(coord, bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_blob_changed_right_after_it_was_verified_is_not_trusted(coord: BlobCache) -> None:
    ref = coord.add_bytes(b"x" * 4096)
    assert coord.has(ref)
    path = coord.path(ref)
    with open(path, "r+b") as f:  # within the same clock tick, perhaps: mtime may not move
        f.write(b"y")
    assert not coord.has(ref) and not path.exists()


# -- the server's refusals ---------------------------------------------------------------------

def test_tokens_ranges_unknown_blobs_and_traversal(
        coord: BlobCache, node: BlobCache, serve, tmp_path: Path) -> None:
    ref = make_blob(coord, tmp_path / "pkg.bin", MIB)
    server, _ = serve(coord)
    path = f"/v1/blobs/sha256/{ref.hex}"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, got, body = get(server.url, path, **headers)
        assert (status, body, got["Content-Length"]) == (401, b"", "0")
    with pytest.raises(BlobError, match=r"sha256:[0-9a-f]{12} from http://127\.0\.0\.1:\d+: "
                                        r"token refused") as err:
        fetch(ref, base_url=server.url, token="wrong", cache=node)
    assert err.value.cause == "token refused" and leftovers(node) == []

    auth = {"Authorization": f"Bearer {TOKEN}"}
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("HEAD", path, headers=auth)
    head = conn.getresponse()
    assert (head.status, head.getheader("Content-Length"), head.read()) == (200, str(MIB), b"")
    conn.close()
    status, got, body = get(server.url, path, Range="bytes=1000-", **auth)
    assert status == 206 and got["Content-Range"] == f"bytes 1000-{MIB - 1}/{MIB}"
    assert body == (tmp_path / "pkg.bin").read_bytes()[1000:]
    assert get(server.url, path, Range=f"bytes={MIB}-", **auth)[0] == 416

    server.set_tokens(["rotated"])  # changed while running
    assert get(server.url, path, **auth)[0] == 401
    assert get(server.url, path, Authorization="Bearer rotated")[0] == 200
    server.set_tokens([TOKEN])

    unknown = "sha256:" + "0" * 64
    assert get(server.url, f"/v1/blobs/{unknown.replace(':', '/')}", **auth)[0] == 404
    with pytest.raises(BlobError, match="not published") as err:
        fetch(BlobRef(unknown, 5), base_url=server.url, token=TOKEN, cache=node)
    (coord.root / "secret").write_text("not a blob")
    for attempt in ("/v1/blobs/sha256/../../secret", "/v1/blobs/sha256/%2e%2e/%2e%2e/secret",
                    f"/v1/blobs/sha256/{ref.hex}/../../../secret", "/../../etc/passwd",
                    f"/v1/blobs/sha256/{ref.hex.upper()}", f"/v1/blobs/sha256/{ref.hex}?x=1",
                    "/v1/blobs/sha256/tmp"):
        status, _, body = get(server.url, attempt, **auth)
        assert status in (400, 404) and body == b"", attempt


# -- housekeeping ------------------------------------------------------------------------------

def test_gc_keeps_what_is_listed_and_removes_the_rest(coord: BlobCache, tmp_path: Path) -> None:
    a, b, c = (coord.add_bytes(bytes([n]) * 1000) for n in range(3))
    coord.ensure_dirs()
    stale, fresh = coord.tmp_dir / "x.partial", coord.tmp_dir / "y.partial"
    stale.write_bytes(b"s" * 10)
    fresh.write_bytes(b"f" * 10)
    os.utime(stale, (time.time() - 7 * 24 * 3600,) * 2)
    report = coord.gc({a, b.digest})
    assert (report.removed, report.kept, report.partials_removed, report.freed) == (
        1, 2, 1, 1000 + 10)
    assert coord.has(a) and coord.has(b) and not coord.path(c).exists()
    assert not stale.exists() and fresh.exists()


def test_the_advertised_address_is_the_one_toward_the_peer() -> None:
    assert advertise_address("127.0.0.1", 2379) == "127.0.0.1"
    assert advertise_address("127.0.0.5", 2379) == "127.0.0.1"
