"""The multi-host case: 4 hosts in network namespaces (tests/hosts.py's Lab), one agent each, and a
coordinator in the root namespaces driving 1,000 phases through an etcd (with fsync) on the bridge.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import proc
from bench.agents import agent_starts
from bench.cli_costs import gravity_argv
from bench.etcd_cases import latency_figures, ms
from bench.report import DISPATCH_P50_MS, DISPATCH_P99_MS, Check
from bench.user import create, plan_doc, resume, write_plan
from engine import agent_protocol as proto
from engine.store import open_store

HOSTS = 4
PHASES = 1000
TTL = "10"  # as the single-host agents (bench/agents.py)


def wait_agents(url: str, nodes: list[str], agents: list[subprocess.Popen],
                operation: str | None = None, timeout: float = 120.0) -> None:
    """Until every node's agent has announced itself (and follows `operation`, if given)."""
    store = open_store(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            infos = {n: r.to_dict() for n, r in proto.agents(store).items()}
            if all(n in infos and (operation is None or infos[n].get("operation") == operation)
                   for n in nodes):
                return
            dead = [p.pid for p in agents if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"agents on the hosts not ready (exited: {dead})")
            time.sleep(0.05)
    finally:
        store.close()


def start_fsync_etcd(lab: Any) -> None:
    """The lab's etcd on the bridge, as Lab.etcd() starts it but with fsync (like SQLite's
    synchronous=FULL and the single-host cases)."""
    from tests.hosts import LabEtcd

    data = lab.tmp / "lab-etcd" / "data"
    data.parent.mkdir(parents=True, exist_ok=True)
    lab.hide(data.parent)
    server = LabEtcd(data, lab)
    base_args = server.args
    server.args = lambda: [a for a in base_args() if a != "--unsafe-no-fsync"]  # type: ignore[method-assign]
    lab.server = server
    server.start()
    lab.store_url = f"{server.url}/lab{lab.id}"


def run(workdir: Path) -> dict[str, Any]:
    """The whole case in a lab of its own; the lab is torn down before this returns."""
    from tests.hosts import Lab

    workdir.mkdir(parents=True, exist_ok=True)
    coordinator = workdir / "coordinator"
    coordinator.mkdir(exist_ok=True)
    with Lab(workdir / "lab") as lab:
        start_fsync_etcd(lab)
        lab.hide(coordinator)  # nothing on a host may read the coordinator's state
        hosts = [lab.host(f"node-{i + 1}") for i in range(HOSTS)]
        nodes = [h.name for h in hosts]
        agents = [h.spawn([*gravity_argv(), "agent", "run", "--node", h.name, "--ttl", TTL],
                          env=h.gravity_env(GRAVITY_LEASE_TTL=TTL), label="gravity-agent")
                  for h in hosts]
        try:
            wait_agents(lab.store_url, nodes, agents)
            plan = write_plan(coordinator / "plan.yaml",
                              plan_doc(PHASES, nodes=HOSTS, parallel=HOSTS))
            made = create(lab.store_url, coordinator, plan, "hosts")
            wait_agents(lab.store_url, nodes, agents, operation="hosts")
            cpu_before = sum(proc.proc_cpu(a.pid) or 0.0 for a in agents)
            ran = resume(lab.store_url, coordinator, "hosts", "--max-parallel", str(HOSTS))
            agents_cpu = sum(proc.proc_cpu(a.pid) or 0.0 for a in agents) - cpu_before
            store = open_store(lab.store_url)
            try:
                records = store.changelog("hosts")
            finally:
                store.close()
        finally:
            for agent in agents:
                if agent.poll() is None:
                    agent.send_signal(signal.SIGTERM)
            for agent in agents:
                try:
                    agent.wait(30)
                except subprocess.TimeoutExpired:
                    agent.kill()
        starts: dict[str, float] = {}
        for host in hosts:
            starts.update(agent_starts(host.state_dir, [host.name]))
    return {"hosts": HOSTS, "phases": PHASES, "create_s": made.wall_s, "wall_s": ran.wall_s,
            "cpu_s": ran.cpu_s, "agents_cpu_s": agents_cpu, "rss_mb": ran.rss_mb,
            **latency_figures(records, starts, PHASES, HOSTS)}


def section(workdir: Path, results: dict[str, Any]) -> list[Check]:
    from tests.hosts import unavailable

    if reason := unavailable():
        results["hosts"] = {"skipped": reason}
        print(f"hosts: skipped: {reason}", flush=True)
        return []
    r = run(workdir)
    results["hosts"] = r
    p50 = Check(f"hosts {HOSTS} hosts dispatch p50", r["ready_p50_ms"], DISPATCH_P50_MS, "ms")
    p99 = Check(f"hosts {HOSTS} hosts dispatch p99", r["ready_p99_ms"], DISPATCH_P99_MS, "ms")
    single = results.get("user", {}).get("etcd_agents")
    beside = (f" | single host, {single['agents']} agent processes, {single['phases']} phases: "
              f"p50/p99 {ms(single['ready_p50_ms'])}/{ms(single['ready_p99_ms'])} ms, "
              f"per_phase_ms={single['wall_s'] / single['phases'] * 1000:.3f}"
              if single else "")
    print(f"hosts {HOSTS} hosts (network namespaces, one agent each) phases={r['phases']} "
          f"wall_s={r['wall_s']:.3f} per_phase_ms={r['wall_s'] / r['phases'] * 1000:.3f} "
          f"dispatch p50={p50.inline()} p99={p99.inline()} (coordinator->agent "
          f"{ms(r['dispatch_p50_ms'])}/{ms(r['dispatch_p99_ms'])} ms, {r['ready_samples']} "
          f"samples) cpu_s coordinator {r['cpu_s']:.2f} agents {r['agents_cpu_s']:.2f}{beside}",
          flush=True)
    return [p50, p99]
