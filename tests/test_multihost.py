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
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.hosts import Host, Lab

pytestmark = [pytest.mark.hosts, pytest.mark.etcd, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"


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


def planet_of(host: Host) -> str | None:
    """The service user's `uid:gid` in the host's own /etc/passwd."""
    for line in (host.system("etc") / "passwd").read_text().splitlines():
        if line.startswith("planet:"):
            return ":".join(line.split(":")[2:4])
    return None


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
    # Each host's own /etc got the service user, with the IDs the first master picked; the
    # machine's /etc did not. The profile's volume is on the host's own /var/lib.
    planet = {h.name: planet_of(h) for h in hosts[:3]}
    assert len(set(planet.values())) == 1 and None not in planet.values()
    assert "planet:" not in Path("/etc/passwd").read_text()
    assert (hosts[0].system("var-lib") / "quickstart").is_dir()
    status = coordinator("status").stdout
    assert "runtime 1.0.0" in status and "node-3" in status

    # Expand onto a fourth host.
    start_agent(hosts[3], coordinator)
    coordinator("expand", "--node", "node-4", "--address", hosts[3].address,
                "--profile", "worker", "--id", "expand-1")
    assert os.readlink(node_file(hosts[3], "packages", "runtime", "current")) == \
        "versions/1.0.0"
    assert planet_of(hosts[3]) == planet["node-1"]  # a node that joins gets the same user

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
                "--force", "--skip-version-check")
    for phase in ("/init", "/checks", "/bootstrap", "/masters"):
        coordinator("plan", "execute", "--phase", phase)
    assert os.readlink(node_file(hosts[0], "packages", "runtime", "current")) == \
        "versions/1.0.0"
    coordinator("rollback", "--operation-id", "back-1", "--confirm")
    for host in hosts:
        assert os.readlink(node_file(host, "packages", "runtime", "current")) == \
            "versions/2.0.0", host.name
    assert coordinator("plan", "-o", "json", "--operation-id", "back-1").stdout.count(
        '"rolled_back"') > 0


def big_image(coordinator: Coordinator, size: int) -> Path:
    """The quickstart image with one more package: a single large file."""
    image = coordinator.images / "big"
    shutil.copytree(coordinator.images / "v1", image)
    blob = image / "packages" / "big" / "1.0.0" / "data.bin"
    blob.parent.mkdir(parents=True)
    with open(blob, "wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(os.urandom(1 << 20))
    return image


def one_node(tmp: Path, host: Host) -> Path:
    path = tmp / "one.yaml"
    path.write_text(f"nodes:\n  - {{name: {host.name}, address: {host.address}, "
                    "profile: master, role: master}\n")
    return path


def served(coordinator: Coordinator, op_id: str) -> list[dict]:
    log = coordinator.state_dir / "logs" / f"{op_id}.jsonl"
    return [e for e in map(json.loads, log.read_text().splitlines())
            if e["event"] == "blob served"]


def test_an_agent_killed_mid_download_resumes_where_it_stopped(
        lab: Lab, tmp_path: Path) -> None:
    lab.etcd()
    coordinator = Coordinator(lab, tmp_path)
    host = lab.host("node-1")
    image = big_image(coordinator, 200 << 20)
    agent = start_agent(host, coordinator)
    install = subprocess.Popen(
        [sys.executable, "-m", "engine.cli.main", "install", str(image), "--nodes",
         str(one_node(tmp_path, host)), "--flavor", "one", "--id", "big-1"],
        env=coordinator.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partials = host.state_dir / "blobs" / "tmp"

    def downloading() -> bool:
        return any(p.stat().st_size > (20 << 20) for p in partials.glob("*.partial"))

    wait_for(downloading, "the large blob to be half-way down", timeout=120)
    agent.kill()  # kill -9 mid-download
    agent.wait(10)
    start_agent(host, coordinator)
    _out, err = install.communicate(timeout=300)
    assert install.returncode == 0, err
    data = node_file(host, "packages", "big", "current", "data.bin")
    assert data.read_bytes() == (image / "packages/big/1.0.0/data.bin").read_bytes()
    # The restarted agent asked only for the rest of the blob.
    resumed = [r for r in served(coordinator, "big-1")
               if r.get("range", "") and r["range"] != "bytes=0-" and r["status"] == 206]
    assert resumed, "no Range request resumed the download"
    assert not list(partials.glob("*.partial"))  # nothing half-written left


def test_a_host_cut_off_past_its_lease_is_fenced_and_its_phase_runs_once(
        lab: Lab, tmp_path: Path) -> None:
    lab.etcd()
    coordinator = Coordinator(lab, tmp_path)
    host = lab.host("node-1")
    start_agent(host, coordinator)
    ticks = host.state_dir / "ticks"
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"""
kind: Plan
metadata: {{name: cut}}
phases:
  - id: tick
    node: node-1
    executor: command
    retry: {{attempts: 3, initial: 0.5}}
    data:
      run: 'for i in $(seq 1 80); do echo "$$ $(date +%s.%N)" >> {ticks}; sleep 0.05; done'
""")
    coordinator("operation", "create", "--plan", str(plan), "--id", "cut-1")
    driver = subprocess.Popen([sys.executable, "-m", "engine.cli.main", "plan", "resume"],
                              env=coordinator.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    wait_for(lambda: ticks.exists() and len(ticks.read_text().splitlines()) >= 3,
             "the phase to run on the host")
    host.cut()
    try:
        wait_for(lambda: "interrupted" in coordinator("events").stdout,
                 "the coordinator to declare the cut-off agent lost", timeout=60)
    finally:
        host.restore()
    _out, err = driver.communicate(timeout=180)
    assert driver.returncode == 0, err
    spans: dict[str, list[float]] = {}
    for line in ticks.read_text().splitlines():
        pid, at = line.split()
        spans.setdefault(pid, []).append(float(at))
    runs = sorted((min(v), max(v)) for v in spans.values())
    assert len(runs) == 2, runs
    assert runs[0][1] < runs[1][0], f"the two runs overlapped: {runs}"
    states = [json.loads(x)["to"] for x in
              coordinator("events", "-o", "json").stdout.splitlines()]
    assert states == ["in_progress", "failed", "in_progress", "completed"]


def failed_phase(coordinator: Coordinator, op_id: str, phase: str) -> str:
    doc = json.loads(coordinator("plan", "-o", "json", "--operation-id", op_id).stdout)

    def walk(phases: list[dict]) -> dict | None:
        for p in phases:
            if p["id"] == phase:
                return p
            found = walk(p.get("phases", []))
            if found:
                return found
        return None

    found = walk(doc["phases"])
    assert found is not None and found["state"] == "failed", found
    return str(found.get("error"))


def test_an_unreachable_blob_service_fails_the_phase_naming_node_blob_and_cause(
        lab: Lab, tmp_path: Path) -> None:
    lab.etcd()
    coordinator = Coordinator(lab, tmp_path)
    host = lab.host("node-1")
    start_agent(host, coordinator)
    # Advertised where the node cannot reach it: its own loopback.
    proc = coordinator("--advertise-addr", "127.0.0.1", "install",
                       str(coordinator.images / "v1"), "--nodes", str(one_node(tmp_path, host)),
                       "--flavor", "one", "--id", "unreachable-1", check=1)
    assert "phase /pull/node-1 failed" in proc.stderr
    error = failed_phase(coordinator, "unreachable-1", "/pull/node-1")
    assert "on node node-1" in error and "blob sha256:" in error and "unreachable" in error
    attempts = [json.loads(x) for x in coordinator(
        "events", "-o", "json", "--operation-id", "unreachable-1").stdout.splitlines()]
    assert sum(1 for r in attempts if r["phase"] == "/pull/node-1"
               and r["to"] == "in_progress") == 3  # the retry policy applied
    assert not list((host.state_dir / "blobs" / "tmp").glob("*.partial"))


def test_a_full_disk_on_the_node_fails_the_phase_and_leaves_nothing_half_written(
        lab: Lab, tmp_path: Path) -> None:
    lab.etcd()
    coordinator = Coordinator(lab, tmp_path)
    host = lab.host("node-1")
    cache = host.state_dir / "blobs"
    cache.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(cache)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        image = big_image(coordinator, 4 << 20)
        start_agent(host, coordinator)
        proc = coordinator("install", str(image), "--nodes", str(one_node(tmp_path, host)),
                           "--flavor", "one", "--id", "full-1", check=1)
        assert "phase /pull/node-1 failed" in proc.stderr
        error = failed_phase(coordinator, "full-1", "/pull/node-1")
        assert "on node node-1" in error and "no space" in error
        assert not list((cache / "tmp").glob("*.partial"))
        landed = [b.stat().st_size for b in (cache / "sha256").iterdir()]
        assert landed, "the image's small blobs fit and were cached"
        assert max(landed) < (4 << 20)  # the big one never landed, not even in part
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)


def test_a_failed_phase_on_a_host_is_explained_from_the_coordinator(
        lab: Lab, tmp_path: Path) -> None:
    lab.etcd()
    coordinator = Coordinator(lab, tmp_path)
    host = lab.host("node-1")
    start_agent(host, coordinator)
    plan = tmp_path / "plan.yaml"
    plan.write_text("""
kind: Plan
metadata: {name: noisy}
phases:
  - id: noisy
    node: node-1
    executor: command
    data:
      run: 'for i in $(seq 1 3000); do echo "line $i of the output"; done;
            echo "echoo: not found" >&2; exit 127'
""")
    coordinator("operation", "create", "--plan", str(plan), "--id", "noisy-1")
    proc = coordinator("plan", "resume", check=1)
    log = node_file(host).parent.parent / "logs" / "noisy-1" / "noisy.log"
    where = f"{log} on node node-1 (node-1)"
    assert f"full output: {where}" in proc.stderr
    shown = coordinator("plan").stdout
    assert "echoo: not found" in shown and f"full output: {where}" in shown
    # The dashboard's log API serves the tail the node shipped: the last 64 KiB, from a line.
    from engine.dashboard.server import log_doc
    from engine.store import open_store

    with open_store(lab.store_url) as store:
        doc = log_doc(store, coordinator.state_dir, "noisy-1", "/noisy", limit=1 << 20)
    assert doc["exists"] and doc["path"] == where and doc["truncated"]
    assert doc["text"].endswith("echoo: not found\n")
    assert doc["text"].startswith("line ") and len(doc["text"]) <= 64 * 1024
    assert doc["size"] == log.stat().st_size  # the whole log stays on the node


def test_a_whole_lifecycle_through_agents_on_separate_hosts(lab: Lab, tmp_path: Path) -> None:
    """The order of every hook across install, expand, leave, a failed upgrade rolled back,
    the application's own hooks, backup/restore, report and uninstall — with each node's
    agent on a host of its own (backups and logs travel back to the coordinator by digest)."""
    from tests.test_lifecycle import LIFECYCLE

    lab.etcd()
    coordinator = Coordinator(lab, tmp_path)
    hosts = [lab.host(f"node-{i}") for i in (1, 2, 3, 4)]
    agents = {h.name: start_agent(h, coordinator) for h in hosts[:3]}
    coordinator("install", str(coordinator.images / "v1"), "--nodes",
                str(inventory(tmp_path, hosts[:3])), "--id", "install-1")
    agents["node-4"] = start_agent(hosts[3], coordinator)
    coordinator("expand", "--node", "node-4", "--address", hosts[3].address, "--profile",
                "worker")
    # `gravity leave` on the node itself (its state dir knows which node it is).
    hosts[3].gravity("leave", "--confirm", "--id", "leave-1", check=0, timeout=300)
    assert not node_file(hosts[3], "packages").exists()
    wait_for(lambda: agents["node-4"].poll() is not None, "the left node's agent to stop")
    master = node_file(hosts[0], "app")
    (master / "maintenance").touch()
    coordinator("upgrade", str(coordinator.images / "v2"), "--id", "upgrade-1", check=1)
    coordinator("rollback", "--operation-id", "upgrade-1", "--confirm")
    (master / "maintenance").unlink()
    assert "quickstart 1.0.0: running" in coordinator("app", "status").stdout
    coordinator("app", "stop")
    coordinator("app", "start")
    archive = tmp_path / "backup.tar.gz"
    coordinator("backup", str(archive))
    (master / "version").write_text("broken\n")
    coordinator("restore", str(archive))
    assert (master / "version").read_text() == "1.0.0\n"
    report = tmp_path / "report.tar.gz"
    coordinator("report", "--file", str(report))
    import tarfile

    with tarfile.open(report) as tar:
        names = tar.getnames()
    assert {f"report/nodes/node-{i}-logs.tar.gz" for i in (1, 2, 3)} <= set(names)
    # A node whose agent is down: refused, then removed with --force (its part skipped).
    agents["node-3"].kill()
    agents["node-3"].wait(10)
    wait_for(lambda: not coordinator.agents_online("node-3"), "node-3 to be offline")
    down = coordinator("remove", "node-3", "--confirm", check=3)
    assert "node node-3 is offline" in down.stderr
    coordinator("remove", "node-3", "--confirm", "--force", "--id", "remove-3")
    assert "skipped: node node-3 is offline" in coordinator(
        "plan", "--operation-id", "remove-3").stdout
    coordinator("uninstall", "--confirm")
    expected = [h for h in LIFECYCLE if h not in ("preUninstall", "uninstall")]
    expected += ["preNodeRemove", "postNodeRemove", "preUninstall", "uninstall"]
    log = hosts[0].state_dir / "hooks.log"
    hooks = log.read_text().split()
    # `dump` ran for the report; everything else in the lifecycle's order.
    assert [h for h in hooks if h != "dump"] == expected
    assert "Cluster:    none installed" in coordinator("status").stdout
