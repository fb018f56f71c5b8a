"""etcd at user level: whole `gravity plan resume` processes (phases in-process, and on agents)
against the raw pyetcd floor (bench/floors.py) on the same etcd server, with fsync, in one run.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

from bench import proc
from bench.agents import AgentPool, agent_starts, dispatch_latencies, percentile
from bench.case import previous_phase
from bench.cli_costs import gravity_argv
from bench.plans import node_name
from bench.report import Check
from bench.user import best, create, plan_doc, resume, write_plan
from engine.store import open_store

LOCAL_RATIO = 1.5  # whole `gravity plan resume --local` / whole floor process
AGENTS_RATIO = 3.0  # with agents
AGENT_NODES = 4


def endpoint(url: str) -> str:
    """`etcd://127.0.0.1:2379/...` -> `127.0.0.1:2379`."""
    return url.split("://", 1)[1].split("/", 1)[0]


def etcd_floor(server_url: str, phases: int, nodes: int) -> dict[str, float]:
    """The raw pyetcd floor under a fresh prefix: whole process and the writes alone."""
    prefix = f"/floor{uuid.uuid4().hex[:8]}"
    proc.floor("etcd", endpoint(server_url), prefix, str(phases), str(nodes), "setup")
    done = proc.floor("etcd", endpoint(server_url), prefix, str(phases), str(nodes), "run")
    return {"process_s": done.wall_s, "writes_s": done.json()["writes_s"], "cpu_s": done.cpu_s}


def local_resume(server_url: str, workdir: Path, plan: Path) -> dict[str, float]:
    """`gravity operation create` then `gravity plan resume --local`, under a fresh prefix."""
    state = workdir / f"g-{uuid.uuid4().hex[:6]}"
    url = f"{server_url}/b{uuid.uuid4().hex[:8]}"
    made = create(url, state, plan, "bench")
    ran = resume(url, state, "bench", "--local")
    shutil.rmtree(state, ignore_errors=True)
    return {"create_s": made.wall_s, "wall_s": ran.wall_s, "cpu_s": ran.cpu_s,
            "rss_mb": ran.rss_mb, "first_s": ran.first_s or 0.0,
            "run_cpu_s": ran.run_cpu_s or 0.0}


def local_vs_floor(server_url: str, workdir: Path, phases: int, repeat: int) -> dict[str, Any]:
    plan = write_plan(workdir / f"plan-{phases}.yaml", plan_doc(phases))
    floors, runs = [], []
    for _ in range(repeat):
        floors.append(etcd_floor(server_url, phases, 100))
        runs.append(local_resume(server_url, workdir, plan))
    g, f = best(runs), best(floors)
    return {"phases": phases, **g, "floor_process_s": f["process_s"],
            "floor_writes_s": f["writes_s"], "floor_cpu_s": f["cpu_s"]}


def latency_figures(records: list[Any], starts: dict[str, float], phases: int,
                    nodes: int) -> dict[str, Any]:
    """Dispatch p50/p99 (ready -> started, and coordinator's in_progress -> started), ms."""
    lat = dispatch_latencies(records, starts, previous_phase(phases, nodes))
    out: dict[str, Any] = {}
    for kind, values in lat.items():
        out[f"{kind}_samples"] = len(values)
        for q in (50, 99):
            value = percentile(values, q)
            out[f"{kind}_p{q}_ms"] = None if value is None else value * 1000
    return out


def agents_run(url: str, state: Path, pool: AgentPool, phases_per_node: int,
               op_id: str = "bench") -> dict[str, Any]:
    """One operation of `phases_per_node` chained phases on each of the pool's nodes, driven
    by a whole `gravity plan resume` process (agents dispatch) with max-parallel = nodes.
    The pool is running and announced; returns wall, CPU and dispatch latency figures."""
    nodes = len(pool.nodes)
    phases = phases_per_node * nodes
    plan = write_plan(state / f"plan-{op_id}.yaml", plan_doc(phases, nodes=nodes, parallel=nodes))
    store = open_store(url)
    try:
        made = create(url, state, plan, op_id)
        pool.wait_following(store, op_id)
        agents_cpu = pool.cpu_seconds()
        ran = resume(url, state, op_id, "--max-parallel", str(nodes))
        agents_cpu = pool.cpu_seconds() - agents_cpu
        records = store.changelog(op_id)
    finally:
        store.close()
    starts = agent_starts(state, pool.nodes)
    return {"phases": phases, "agents": nodes, "create_s": made.wall_s, "wall_s": ran.wall_s,
            "cpu_s": ran.cpu_s, "run_cpu_s": ran.run_cpu_s, "first_s": ran.first_s,
            "rss_mb": ran.rss_mb, "agents_cpu_s": agents_cpu,
            **latency_figures(records, starts, phases, nodes)}


def agents_vs_floor(server_url: str, workdir: Path, phases: int, repeat: int
                    ) -> dict[str, Any]:
    """4 agent processes (one per node) and a `gravity plan resume` driving them."""
    floors, runs = [], []
    for i in range(repeat):
        floors.append(etcd_floor(server_url, phases, AGENT_NODES))
        url = f"{server_url}/a{uuid.uuid4().hex[:8]}"
        state = workdir / f"agents-{i}"
        state.mkdir(parents=True, exist_ok=True)
        pool = AgentPool(url, state, [node_name(g) for g in range(AGENT_NODES)],
                         gravity=gravity_argv())
        store = open_store(url)
        try:
            pool.start(store)
            runs.append(agents_run(url, state, pool, phases // AGENT_NODES))
        finally:
            store.close()
            pool.stop()
    f = best(floors)
    g = min(runs, key=lambda r: r["wall_s"])
    return {**g, "floor_process_s": f["process_s"], "floor_writes_s": f["writes_s"],
            "floor_cpu_s": f["cpu_s"]}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def section(server_url: str, workdir: Path, results: dict[str, Any], *, repeat: int = 2,
            sizes: tuple[int, ...] = (1000, 10000), agent_phases: int = 1000) -> list[Check]:
    checks = []
    out: dict[str, Any] = results.setdefault("user", {})
    out["etcd_local"] = []
    for n in sizes:
        r = local_vs_floor(server_url, workdir / "local", n, repeat)
        out["etcd_local"].append(r)
        check = Check(f"user etcd plan resume --local phases={n} / floor process",
                      r["wall_s"] / r["floor_process_s"], LOCAL_RATIO, "x")
        checks.append(check)
        print(f"user etcd `gravity plan resume --local` phases={n} wall_s={r['wall_s']:.3f} "
              f"per_phase_ms={r['wall_s'] / n * 1000:.3f} start-up={r['first_s']:.3f}s "
              f"cpu_s={r['cpu_s']:.2f} rss_mb={r['rss_mb']:.0f} | pyetcd floor process_s="
              f"{r['floor_process_s']:.3f} (writes alone {r['floor_writes_s']:.3f}) | "
              f"ratio {check.inline()} | CPU {r['cpu_s'] / n * 1000:.3f} ms/phase vs the "
              f"floor's {r['floor_cpu_s'] / n * 1000:.3f} | create_s={r['create_s']:.3f}",
              flush=True)
    a = agents_vs_floor(server_url, workdir / "agents", agent_phases, repeat)
    out["etcd_agents"] = a
    check = Check(f"user etcd plan resume with {AGENT_NODES} agents phases={a['phases']} / "
                  "floor process", a["wall_s"] / a["floor_process_s"], AGENTS_RATIO, "x")
    checks.append(check)
    print(f"user etcd `gravity plan resume` on {AGENT_NODES} agents phases={a['phases']} "
          f"wall_s={a['wall_s']:.3f} per_phase_ms={a['wall_s'] / a['phases'] * 1000:.3f} "
          f"| floor process_s={a['floor_process_s']:.3f} | ratio {check.inline()} | dispatch "
          f"p50/p99 {ms(a['ready_p50_ms'])}/{ms(a['ready_p99_ms'])} ms (coordinator->agent "
          f"{ms(a['dispatch_p50_ms'])}/{ms(a['dispatch_p99_ms'])}) | cpu_s coordinator "
          f"{a['cpu_s']:.2f} agents {a['agents_cpu_s']:.2f} floor {a['floor_cpu_s']:.2f}",
          flush=True)
    return checks
