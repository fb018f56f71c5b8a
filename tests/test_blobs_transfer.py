"""Blob transfers that go wrong: a fetching process killed mid-download, a cut connection, a
200 MB blob in bounded memory, a lying server, no server, a full disk, TLS with the cluster CA.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.agent_protocol import Service
from engine.blobs import BlobCache, BlobError, BlobRef, fetch, publish_image, server_tls
from engine.blobs.server import BlobHandler
from engine.executors.content import ServedContent
from tests.blobs_support import (
    CHILD,
    MIB,
    ROOT,
    TOKEN,
    leftovers,
    make_blob,
)
from tests.helpers import wait_for


class GatedHandler(BlobHandler):
    """The first full download stops after GATE bytes until the test opens the gate."""

    GATE = 3 * MIB
    gate = threading.Event()
    gated = threading.Event()

    def send_body(self, f, start, length):  # type: ignore[no-untyped-def]
        if start == 0 and not self.gated.is_set():
            self.gated.set()
            self.wfile.write(f.read(self.GATE))
            self.gate.wait(60)
            raise OSError("cut by the test")
        return super().send_body(f, start, length)


def test_a_killed_download_resumes_where_its_partial_file_ended(
        coord: BlobCache, node: BlobCache, serve, tmp_path: Path) -> None:
    ref = make_blob(coord, tmp_path / "pkg.bin", 8 * MIB)
    server, seen = serve(coord, GatedHandler)
    argv = [sys.executable, "-c", CHILD, ref.digest, str(ref.size), server.url, TOKEN,
            str(node.root)]
    child = subprocess.Popen(argv, cwd=ROOT)
    partial = node.partial_path(ref)
    try:
        wait_for(lambda: partial.exists() and partial.stat().st_size >= GatedHandler.GATE,
                 "the partial file to grow")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        GatedHandler.gate.set()
    had = partial.stat().st_size
    assert 0 < had < ref.size

    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert seen[-1].range == f"bytes={had}-" and seen[-1].status == 206
    assert seen[-1].sent == ref.size - had
    assert node.has(ref) and not partial.exists()
    assert node.path(ref).read_bytes() == (tmp_path / "pkg.bin").read_bytes()


class CutOnceHandler(BlobHandler):
    """Closes the connection after CUT bytes, once."""

    CUT = 2 * MIB
    done = threading.Event()

    def send_body(self, f, start, length):  # type: ignore[no-untyped-def]
        if not self.done.is_set():
            self.done.set()
            self.wfile.write(f.read(self.CUT))
            self.connection.shutdown(socket.SHUT_RDWR)
            raise OSError("cut by the test")
        return super().send_body(f, start, length)


def test_a_cut_connection_is_resumed_within_one_fetch(
        coord: BlobCache, node: BlobCache, serve, tmp_path: Path) -> None:
    ref = make_blob(coord, tmp_path / "pkg.bin", 5 * MIB)
    server, seen = serve(coord, CutOnceHandler)
    path = fetch(ref, base_url=server.url, token=TOKEN, cache=node, backoff=0.01)
    assert [(s.status, s.range) for s in seen] == [
        (200, None), (206, f"bytes={CutOnceHandler.CUT}-")]
    assert path.read_bytes() == (tmp_path / "pkg.bin").read_bytes()


@pytest.mark.slow  # over ~2.5 s: out of --fast
def test_fetching_200_mb_keeps_the_process_under_150_mb(
        coord: BlobCache, node: BlobCache, serve, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    ref = make_blob(coord, big, 200 * MIB)
    server, _ = serve(coord)
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, ref.digest, str(ref.size),
                               server.url, TOKEN, str(node.root)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        peak_kib = int(done.stdout.split()[-1])
        print(f"peak RSS fetching {ref.size} bytes: {peak_kib // 1024} MiB")
        assert peak_kib < 150 * 1024
        assert node.has(ref)
    finally:
        big.unlink()
        node.gc(set())
        coord.gc(set())


class LyingHandler(BlobHandler):
    """Serves every blob with its bytes flipped."""

    def send_body(self, f, start, length):  # type: ignore[no-untyped-def]
        self.wfile.write(bytes(b ^ 0x5A for b in f.read(length)))
        return length


def test_a_lying_server_leaves_nothing_in_the_cache(
        coord: BlobCache, node: BlobCache, serve, tmp_path: Path) -> None:
    ref = make_blob(coord, tmp_path / "pkg.bin", MIB)
    server, _ = serve(coord, LyingHandler)
    with pytest.raises(BlobError, match=f"blob {ref.short} from {server.url}: digest mismatch"):
        fetch(ref, base_url=server.url, token=TOKEN, cache=node)
    assert not node.path(ref).exists() and leftovers(node) == []


def test_an_unreachable_server_is_named(node: BlobCache) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ref = BlobRef("sha256:" + "1" * 64, 10)
    with pytest.raises(BlobError, match=f"from http://127.0.0.1:{port}: unreachable") as err:
        fetch(ref, base_url=f"http://127.0.0.1:{port}", token=TOKEN, cache=node, attempts=2,
              backoff=0.01)
    assert "blob service" in (err.value.hint or "")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: the node's disk, full after 1 MiB."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_on_the_node_is_named_and_leaves_nothing(
        coord: BlobCache, serve, tmp_path: Path, tiny_disk: Path) -> None:
    ref = make_blob(coord, tmp_path / "pkg.bin", 3 * MIB)
    server, _ = serve(coord)
    node = BlobCache(tiny_disk)
    with pytest.raises(BlobError, match=f"blob {ref.short} from {server.url}: no space") as err:
        fetch(ref, base_url=server.url, token=TOKEN, cache=node)
    assert err.value.cause == "no space"
    assert leftovers(node) == []


# -- TLS -------------------------------------------------------------------------------------

def make_ca(tmp: Path, name: str) -> tuple[Path, Path]:
    key, cert = tmp / f"{name}.key", tmp / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def make_server_cert(tmp: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, cert, ext = (tmp / "srv.key", tmp / "srv.csr", tmp / "srv.crt", tmp / "srv.ext")
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=blobs",
                    "-keyout", key, "-out", csr], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
                    "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def test_https_verifies_the_server_against_the_cluster_ca(
        coord: BlobCache, node: BlobCache, serve, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "cluster-ca")
    other = make_ca(tmp_path, "other-ca")
    cert, key = make_server_cert(tmp_path, ca)
    ref = make_blob(coord, tmp_path / "pkg.bin", 2 * MIB)
    server, seen = serve(coord, tls=server_tls(str(cert), str(key)))
    assert server.url.startswith("https://127.0.0.1:")

    with pytest.raises(BlobError, match=r"tls: the server's certificate did not verify "
                                        r"against .*other-ca.crt: unable to get local issuer"
                       ) as err:
        fetch(ref, base_url=server.url, token=TOKEN, cache=node, ca_file=str(other[0]))
    assert err.value.cause == "tls" and leftovers(node) == []
    with pytest.raises(BlobError, match=r"tls: .* against .*cluster-ca.crt: .*mismatch"):
        fetch(ref, base_url=server.url_for("localhost"), token=TOKEN, cache=node,
              ca_file=str(ca[0]))
    assert seen == []  # no request got past the handshake

    path = fetch(ref, base_url=server.url, token=TOKEN, cache=node, ca_file=str(ca[0]))
    assert path.read_bytes() == (tmp_path / "pkg.bin").read_bytes()
    assert [s.status for s in seen] == [200]




@pytest.mark.parametrize("fault", ["token refused", "digest mismatch", "no service"])
def test_a_phase_on_a_node_names_the_node_the_blob_and_the_cause(
        coord: BlobCache, node: BlobCache, serve, tmp_path: Path, fault: str) -> None:
    """How a package or hook phase on an agent sees a failed fetch (engine.executors.content):
    the node first, then the blob, its server and why; nothing half-written stays."""
    image = tmp_path / "image"
    (image / "packages" / "app" / "1.0").mkdir(parents=True)
    (image / "packages" / "app" / "1.0" / "bin").write_bytes(b"x" * MIB)
    ref = publish_image(coord, image, link=False).ref
    server, _ = serve(coord, LyingHandler if fault == "digest mismatch" else BlobHandler)
    service = None if fault == "no service" else Service(
        server.url, "not-the-token" if fault == "token refused" else TOKEN)
    content = ServedContent(node, "node-7", lambda: service)
    with pytest.raises(BlobError) as raised:
        content.materialize(ref, tmp_path / "out", "packages/app/1.0")
    message = raised.value.message
    assert message.startswith("on node node-7: blob sha256:")
    if fault == "no service":
        assert "no blob service is published" in message
        assert "gravity plan resume" in (raised.value.hint or "")
    else:
        assert f"from {server.url}: {fault}" in message
    assert not (tmp_path / "out").exists() and leftovers(node) == []
