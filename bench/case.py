"""One benchmark case in its own process: create the plan, run the engine, then the floor.
`python -m bench.case '<json spec>'` prints one JSON result line; the orchestrator reads it.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.agents import AgentPool, agent_starts, dispatch_latencies, percentile
from bench.plans import leaf_id, node_name, spread_groups, spread_plan
from engine import fsm
from engine.model import Action, OpState, PhaseState, Plan, State
from engine.planfile import plan_from_mapping
from engine.service import Engine, create_operation, resume
from engine.store import Store, open_store

BENCH_OP = "bench"
MAX_PARALLEL = 8  # the CLI's default --max-parallel
STALL_S = 60.0  # no transition for this long while the engine runs: it hangs


@dataclass(frozen=True)
class CaseSpec:
    """What one case runs: which store and dispatch mode, how many phases over how many nodes."""

    store: str  # sqlite | etcd
    mode: str  # local | agents
    phases: int
    nodes: int
    url: str
    workdir: str
    agent_ttl: float = 10.0
    profile: str | None = None  # write a cProfile of the engine run here


def peak_rss_mb() -> float:
    """This process's own peak resident set so far (VmHWM; ru_maxrss would include the
    bench process's, inherited through the fork that started this one)."""
    from bench.proc import own_peak_rss_mb

    return own_peak_rss_mb()


def floor_writes(store: Store, plan: Plan, operation_id: str) -> float:
    """Seconds for the bare durable writes the engine must make: two CAS transitions per
    phase (unstarted -> in_progress -> completed), one `apply` call each, nothing else."""
    create_operation(store, plan, operation_id=operation_id)
    started = time.perf_counter()
    for spec in plan.leaves:
        start = fsm.transition(PhaseState(spec.id), State.IN_PROGRESS, action=Action.EXECUTE,
                               owner=1, attempt=1)
        store.apply(operation_id, [start])
        store.apply(operation_id, [fsm.transition(start.new, State.COMPLETED)])
    elapsed = time.perf_counter() - started
    store.finish_operation(operation_id, OpState.COMPLETED, "floor measured")
    return elapsed


def previous_phase(phases: int, nodes: int) -> dict[str, str]:
    """Each phase -> the phase it waits for (the one before it on its node)."""
    out = {}
    for g, members in spread_groups(phases, nodes).items():
        for before, after in itertools.pairwise(members):
            out[leaf_id(g, after)] = leaf_id(g, before)
    return out


def run_engine(spec: CaseSpec, engine: Engine) -> float:
    started = time.perf_counter()
    if spec.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        resume(engine, BENCH_OP)
        profiler.disable()
        elapsed = time.perf_counter() - started
        profiler.dump_stats(spec.profile)
        return elapsed
    resume(engine, BENCH_OP)
    return time.perf_counter() - started


def run_watched(spec: CaseSpec, engine: Engine) -> tuple[float | None, str | None]:
    """Run the engine on a thread and watch its event log (one line per transition) grow:
    (wall seconds, None), or (None, a diagnosis) when no transition came for STALL_S.
    The log's size is a stat, so the watch puts no load on the store being measured."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def drive() -> None:
        try:
            box["wall"] = run_engine(spec, engine)
        except BaseException as exc:  # handed to the main thread
            box["error"] = exc
        finally:
            done.set()

    log = engine.state_dir / "logs" / f"{BENCH_OP}.jsonl"
    threading.Thread(target=drive, name="engine", daemon=True).start()
    size, last_change = -1, time.monotonic()
    while not done.wait(1.0):
        now = log.stat().st_size if log.exists() else 0
        if now != size:
            size, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            watcher = open_store(spec.url)
            try:
                return None, diagnose(watcher, spec)
            finally:
                watcher.close()
    if "error" in box:
        raise box["error"]
    return box["wall"], None


def diagnose(store: Store, spec: CaseSpec) -> str:
    """Why a run stalled: which node chains stopped after a completed phase."""
    states = store.load_states(BENCH_OP)
    counts = Counter(st.state.value for st in states.values())
    stuck = []
    for after, before in previous_phase(spec.phases, spec.nodes).items():
        done = states.get(before)
        if done is not None and done.state is State.COMPLETED and after not in states:
            stuck.append(f"{before} completed at {done.updated:.3f} but {after} was never "
                         "dispatched")
    return (f"no transition for {STALL_S:.0f}s; states {dict(counts)} of {spec.phases}; "
            + ("; ".join(stuck[:4]) or "no chain stopped after a completed phase"))


def run_case(spec: CaseSpec) -> dict[str, Any]:
    """Run one case end to end and return its figures (times in seconds)."""
    workdir = Path(spec.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    plan = plan_from_mapping(spread_plan(spec.phases, spec.nodes))
    store = open_store(spec.url)
    pool = None
    result: dict[str, Any] = asdict(spec)
    try:
        floors = [floor_writes(store, plan, "floor-1")]
        if spec.mode == "agents":
            nodes = [node_name(g) for g in spread_groups(spec.phases, spec.nodes)]
            pool = AgentPool(spec.url, workdir, nodes, ttl=spec.agent_ttl)
            pool.start(store)
        started = time.perf_counter()
        create_operation(store, plan, operation_id=BENCH_OP)
        result["create_s"] = time.perf_counter() - started
        if pool is not None:
            pool.wait_following(store, BENCH_OP)
        engine = Engine(store=store, state_dir=workdir, quiet=True, dispatch=spec.mode,
                        max_parallel=MAX_PARALLEL)
        agents_cpu = pool.cpu_seconds() if pool is not None else 0.0
        own_cpu = time.process_time()
        wall, stalled = run_watched(spec, engine)
        result["cpu_s"] = time.process_time() - own_cpu
        if pool is not None:
            result["agents_cpu_s"] = pool.cpu_seconds() - agents_cpu
        result["rss_mb"] = peak_rss_mb()
        if stalled is not None:
            result["stalled"] = stalled
            return result
        result["wall_s"] = wall
        op = store.get_operation(BENCH_OP)
        states = store.load_states(BENCH_OP)
        done = sum(1 for s in states.values() if s.state is State.COMPLETED)
        if op.state is not OpState.COMPLETED or done != spec.phases:
            raise RuntimeError(f"engine run ended {op.state.value} with {done}/{spec.phases} "
                               "phases completed")
        records = store.changelog(BENCH_OP)
        result["transitions"] = len(records)
        if pool is not None:
            pool.stop()
            starts = agent_starts(workdir, pool.nodes)
            lat = dispatch_latencies(records, starts, previous_phase(spec.phases, spec.nodes))
            for kind, values in lat.items():
                result[f"{kind}_samples"] = len(values)
                result[f"{kind}_p50_ms"] = _ms(percentile(values, 50))
                result[f"{kind}_p99_ms"] = _ms(percentile(values, 99))
            pool = None
        floors.append(floor_writes(store, plan, "floor-2"))
        result["floor_runs_s"] = floors
        result["floor_s"] = min(floors)
    finally:
        if pool is not None:
            pool.stop()
        store.close()
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def main(argv: list[str]) -> None:
    spec = CaseSpec(**json.loads(argv[0]))
    result = run_case(spec)
    print(json.dumps(result), flush=True)
    if "stalled" in result:
        os._exit(0)  # the engine thread is hung; nothing left to wait for


if __name__ == "__main__":
    main(sys.argv[1:])
