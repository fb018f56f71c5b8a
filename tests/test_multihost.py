"""Nodes are separate machines: each node's agent runs on a host of its own (a network and a
mount namespace), reaches only etcd and the coordinator's blob service over the lab's network,
and cannot see the coordinator's state dir or the image. The quickstart image is installed on
three hosts, expanded to a fourth, upgraded with ./upgrade --values/--set and rolled back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hosts import Host, Lab

pytestmark = [pytest.mark.hosts, pytest.mark.etcd, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Coordinator:
    """The operator's host: the root namespaces, its own state dir, the image directories."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab = lab
        self.state_dir = tmp / "coordinator" / "state"
        self.images = tmp / "coordinator" / "images"
        self.state_dir.mkdir(parents=True)
        for version in ("v1", "v2"):
            shutil.copytree(QUICKSTART / version, self.images / version)
        lab.hide(self.state_dir, self.images)  # nothing on a node may read them

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVITY_")}
        env.update(GRAVITY_STATE_DIR=str(self.state_dir), GRAVITY_STORE=self.lab.store_url,
                   GRAVITY_LEASE_TTL="3", GRAVITY_AGENT_TIMEOUT="60")
        env.update(extra)
        return env

    def __call__(self, *args: str, check: int | None = 0, timeout: float = 300,
                 **env: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "engine.cli.main", *args],
                              capture_output=True, text=True, env=self.env(**env),
                              timeout=timeout, cwd=self.state_dir.parent)
        if check is not None:
            assert proc.returncode == check, (
                f"gravity {' '.join(args)} exited {proc.returncode}, expected {check}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def agents_online(self, *nodes: str) -> bool:
        rows = json.loads(self("agent", "status", "-o", "json").stdout)
        online = {r["node"] for r in rows if r["status"] == "Online"}
        return set(nodes) <= online


def start_agent(host: Host, coordinator: Coordinator) -> subprocess.Popen:
    proc = host.spawn_gravity("agent", "run", "--node", host.name, "--ttl", "3")
    wait_for(lambda: coordinator.agents_online(host.name), f"the agent on {host.name}")
    return proc


def node_file(host: Host, *parts: str) -> Path:
    return host.state_dir.joinpath("nodes", host.name, *parts)


def inventory(tmp: Path, hosts: list[Host]) -> Path:
    roles = ["master"] + ["node"] * (len(hosts) - 1)
    lines = ["nodes:"] + [
        f"  - {{name: {h.name}, address: {h.address}, "
        f"profile: {'master' if role == 'master' else 'worker'}, role: {role}}}"
        for h, role in zip(hosts, roles, strict=True)]
    path = tmp / "nodes.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_install_expand_upgrade_rollback_on_hosts_that_share_nothing(
        lab: Lab, tmp_path: Path) -> None:
    lab.etcd()
    coordinator = Coordinator(lab, tmp_path)
    hosts = [lab.host(f"node-{i}") for i in (1, 2, 3, 4)]
    for host in hosts[:3]:
        start_agent(host, coordinator)
    nodes = inventory(tmp_path, hosts[:3])

    # Install: every node's packages and the hooks' files land on that node's own host.
    coordinator("install", str(coordinator.images / "v1"), "--nodes", str(nodes),
                "--set", "greeting=hello", "--id", "install-1")
    for host in hosts[:3]:
        current = node_file(host, "packages", "runtime", "current")
        assert os.readlink(current) == "versions/1.0.0"
        assert (current / "bin" / "runtime.txt").exists()
        # the image came as verified blobs into the host's own cache
        assert any((host.state_dir / "blobs" / "sha256").iterdir())
    assert node_file(hosts[0], "app", "version").read_text() == "1.0.0\n"
    assert "greeting: hello" in node_file(hosts[0], "app", "values.yaml").read_text()
    assert not (coordinator.state_dir / "nodes" / "node-2").exists()  # nothing ran here
    status = coordinator("status").stdout
    assert "runtime 1.0.0" in status and "node-3" in status

    # Expand onto a fourth host.
    start_agent(hosts[3], coordinator)
    coordinator("expand", "--node", "node-4", "--address", hosts[3].address,
                "--profile", "worker", "--id", "expand-1")
    assert os.readlink(node_file(hosts[3], "packages", "runtime", "current")) == \
        "versions/1.0.0"

    # Upgrade with the image's own ./upgrade script, values file and --set.
    values = tmp_path / "v.yaml"
    values.write_text("greeting: hi\nreplicas: 2\n")
    upgrade = subprocess.run(
        [str(coordinator.images / "v2" / "upgrade"), "--values", str(values),
         "--set", "greeting=howdy", "--id", "upgrade-1"],
        capture_output=True, text=True, timeout=300,
        env=coordinator.env(GRAVITY=str(Path(sys.executable).parent / "gravity")))
    assert upgrade.returncode == 0, upgrade.stderr
    for host in hosts:
        assert os.readlink(node_file(host, "packages", "runtime", "current")) == \
            "versions/2.0.0", host.name
    assert "greeting: howdy" in node_file(hosts[0], "app", "values.yaml").read_text()
    assert "runtime 2.0.0" in coordinator("status").stdout

    # Roll the completed upgrade back is refused; a fresh upgrade to v1 would be the way.
    # Instead, roll back a second upgrade that is stopped half-way (--manual, then by hand).
    coordinator("upgrade", str(coordinator.images / "v1"), "--manual", "--id", "back-1",
                "--force")
    coordinator("plan", "execute", "--phase", "/masters")
    assert os.readlink(node_file(hosts[0], "packages", "runtime", "current")) == \
        "versions/1.0.0"
    coordinator("rollback", "--operation-id", "back-1")
    for host in hosts:
        assert os.readlink(node_file(host, "packages", "runtime", "current")) == \
            "versions/2.0.0", host.name
    assert coordinator("plan", "-o", "json", "--operation-id", "back-1").stdout.count(
        '"rolled_back"') > 0
