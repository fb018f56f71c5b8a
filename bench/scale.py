"""Agent scale: 4, 16 and 32 `gravity agent run` processes on one etcd, 100 phases each, driven by
a whole `gravity plan resume`: dispatch latency, coordinator CPU per phase, and idle agents' CPU.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from bench.agents import AgentPool
from bench.cli_costs import gravity_argv
from bench.etcd_cases import agents_run, ms
from bench.plans import node_name
from bench.report import DISPATCH_P50_MS, DISPATCH_P99_MS, Check
from engine import agent_protocol as proto
from engine.store import open_store

COUNTS = (4, 16, 32)
PER_AGENT = 100
CPU_FLAT = 1.3  # coordinator CPU per phase at the most agents / at the fewest
IDLE_S = 10.0  # how long idle agents are watched
# "A waiting agent costs ~0", read as: at most 0.1 % of one core each (1 ms of CPU a second;
# a lease heartbeat every TTL/3 alone costs far less).
IDLE_CORE_PCT = 0.1


def idle_cpu(pool: AgentPool, url: str, seconds: float) -> dict[str, float]:
    """CPU seconds the pool's agents use over `seconds` with no active operation (after each
    has noticed that: its heartbeat names no operation)."""
    store = open_store(url)
    try:
        pool._wait(lambda infos: all(infos.get(n, {}).get("operation") is None
                                     for n in pool.nodes), store, 60.0,
                   "the agents to go idle")
        registered = len(proto.agents(store))
    finally:
        store.close()
    before, started = pool.cpu_seconds(), time.monotonic()
    time.sleep(seconds)  # the bench measures: nothing to wait for but the clock
    used, elapsed = pool.cpu_seconds() - before, time.monotonic() - started
    per_agent = used / len(pool.nodes)
    return {"agents": len(pool.nodes), "registered": registered, "seconds": elapsed,
            "cpu_s": used, "per_agent_cpu_s": per_agent,
            "per_agent_core_pct": per_agent / elapsed * 100}


def one_count(server_url: str, workdir: Path, agents: int, *, idle: bool) -> dict[str, Any]:
    url = f"{server_url}/s{uuid.uuid4().hex[:8]}"
    state = workdir / f"agents-{agents}"
    state.mkdir(parents=True, exist_ok=True)
    pool = AgentPool(url, state, [node_name(g) for g in range(agents)], gravity=gravity_argv())
    store = open_store(url)
    try:
        started = time.perf_counter()
        pool.start(store, timeout=300.0)
        start_s = time.perf_counter() - started
        r = agents_run(url, state, pool, PER_AGENT)
        r["agents_start_s"] = start_s
        if idle:
            r["idle"] = idle_cpu(pool, url, IDLE_S)
        return r
    finally:
        store.close()
        pool.stop()


def section(server_url: str, workdir: Path, results: dict[str, Any],
            counts: tuple[int, ...] = COUNTS) -> list[Check]:
    checks: list[Check] = []
    rows = []
    for n in counts:
        r = one_count(server_url, workdir, n, idle=n == max(counts))
        rows.append(r)
        per_phase_cpu = (r["run_cpu_s"] or r["cpu_s"]) / r["phases"] * 1000
        r["coordinator_cpu_ms_per_phase"] = per_phase_cpu
        p50 = Check(f"scale agents={n} dispatch p50", r["ready_p50_ms"], DISPATCH_P50_MS, "ms")
        p99 = Check(f"scale agents={n} dispatch p99", r["ready_p99_ms"], DISPATCH_P99_MS, "ms")
        checks += [p50, p99]
        print(f"scale agents={n} phases={r['phases']} (a chain of {PER_AGENT} per agent) "
              f"wall_s={r['wall_s']:.3f} dispatch p50={p50.inline()} p99={p99.inline()} "
              f"(coordinator->agent {ms(r['dispatch_p50_ms'])}/{ms(r['dispatch_p99_ms'])} ms, "
              f"{r['ready_samples']} samples) | coordinator cpu_s={r['cpu_s']:.2f} "
              f"(after its first transition {per_phase_cpu:.3f} ms/phase) agents "
              f"cpu_s={r['agents_cpu_s']:.2f} ({r['agents_cpu_s'] / r['phases'] * 1000:.3f} "
              f"ms/phase) | {n} agents announced in {r['agents_start_s']:.1f}s", flush=True)
    results["scale"] = rows
    if len(rows) >= 2:
        low, high = rows[0], rows[-1]
        flat = Check(f"scale coordinator CPU per phase agents={high['agents']} / "
                     f"agents={low['agents']}", high["coordinator_cpu_ms_per_phase"]
                     / low["coordinator_cpu_ms_per_phase"], CPU_FLAT, "x")
        checks.append(flat)
        print(f"scale coordinator CPU per phase {high['agents']} agents / {low['agents']}: "
              f"{flat.inline()}", flush=True)
    idle = rows[-1].get("idle") if rows else None
    if idle:
        check = Check(f"scale idle agents ({idle['agents']}) CPU per agent, % of a core",
                      idle["per_agent_core_pct"], IDLE_CORE_PCT, "%")
        checks.append(check)
        print(f"scale idle: {idle['agents']} agents, no operation, {idle['seconds']:.1f}s: "
              f"cpu_s={idle['cpu_s']:.3f} in all, {idle['per_agent_cpu_s']:.4f} each = "
              f"{check.inline()} of a core", flush=True)
    return checks
