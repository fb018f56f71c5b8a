"""User-level cases: whole `gravity` processes, as an operator runs them, against the raw floor
(bench/floors.py) and Luigi measured in the same run, on the same disk; plus start-up and display.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench import proc, report
from bench.plans import chain_plan, spread_plan
from bench.report import Check

ROOT = Path(__file__).resolve().parent.parent
NODES = 100  # 100 composites (one per node), `parallel: 10`: 10,000 phases = 100 of 100
PARALLEL = 10
RESUME_RATIO = {10000: 1.5, 1000: 2.0}  # whole `gravity plan resume` / whole floor process
LUIGI_TIMES = 10.0  # gravity's chain at least this many times cheaper per task than Luigi's
PLAN_S = report.PLAN_S  # `gravity plan` on 10,000 phases
STARTUP_ONE_S = 0.25  # `gravity plan resume` of a 1-phase operation
STARTUP_DONE_S = 0.3  # `gravity plan resume` of a finished 1,000-phase operation


def plan_doc(phases: int, nodes: int = NODES, parallel: int = PARALLEL) -> dict[str, Any]:
    """The bench's spread plan (nodes composites of phases/nodes, in order) with `parallel`."""
    doc = spread_plan(phases, min(nodes, phases))
    doc["parallel"] = min(parallel, doc["parallel"])
    return doc


def write_plan(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yaml.dump(doc, f, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)
    return path


def sqlite_url(state_dir: Path) -> str:
    return f"sqlite://{(state_dir / 'gravity.db').resolve()}"


def create(url: str, state_dir: Path, plan: Path, op_id: str, *,
           sizes: Path | None = None) -> proc.Run:
    state_dir.mkdir(parents=True, exist_ok=True)
    return proc.gravity(["operation", "create", "--plan", str(plan), "--id", op_id], url,
                        state_dir, sizes=sizes)


def resume(url: str, state_dir: Path, op_id: str, *extra: str, sizes: Path | None = None,
           **env: str) -> proc.Run:
    """`gravity plan resume` (console output on, into a file), its first transition watched."""
    return proc.gravity(["plan", "resume", "--operation-id", op_id, *extra], url, state_dir,
                        watch=state_dir / "logs" / f"{op_id}.jsonl", sizes=sizes, **env)


def sqlite_floor(where: Path, phases: int, nodes: int = NODES) -> dict[str, float]:
    """The raw floor on a fresh database: whole process and the writes alone."""
    where.mkdir(parents=True, exist_ok=True)
    db = str(where / "floor.db")
    proc.floor("sqlite", db, str(phases), str(nodes), "setup")
    done = proc.floor("sqlite", db, str(phases), str(nodes), "run")
    return {"process_s": done.wall_s, "writes_s": done.json()["writes_s"], "cpu_s": done.cpu_s}


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per figure, the lowest of repeated runs: noise on a shared machine only adds time."""
    return {k: min(r[k] for r in runs) for k in runs[0]}


def gravity_resume(workdir: Path, phases: int, plan: Path) -> dict[str, float]:
    """Create an operation of `plan` in a fresh state dir and time its `plan resume`."""
    state = workdir / f"g-{uuid.uuid4().hex[:6]}"
    url = sqlite_url(state)
    made = create(url, state, plan, "bench")
    ran = resume(url, state, "bench", GRAVITY_DISPATCH="local")
    shutil.rmtree(state, ignore_errors=True)
    return {"create_s": made.wall_s, "wall_s": ran.wall_s, "cpu_s": ran.cpu_s,
            "rss_mb": ran.rss_mb, "first_s": ran.first_s or 0.0,
            "run_cpu_s": ran.run_cpu_s or 0.0}


def resume_vs_floor(workdir: Path, phases: int, repeat: int) -> dict[str, Any]:
    """Floor and gravity alternately, `repeat` times each, on fresh databases; best of each."""
    plan = write_plan(workdir / f"plan-{phases}.yaml", plan_doc(phases))
    floors, runs = [], []
    for i in range(repeat):
        floors.append(sqlite_floor(workdir / f"floor-{phases}-{i}", phases))
        runs.append(gravity_resume(workdir, phases, plan))
    g, f = best(runs), best(floors)
    return {"phases": phases, **g, "floor_process_s": f["process_s"],
            "floor_writes_s": f["writes_s"], "floor_cpu_s": f["cpu_s"],
            "gravity_runs_s": [r["wall_s"] for r in runs],
            "floor_runs_s": [r["process_s"] for r in floors]}


def luigi_chain(workdir: Path, tasks: int) -> dict[str, float]:
    """Luigi's chain as a whole process (`python -m bench.peers --child luigi chain …`)."""
    where = workdir / f"luigi-{uuid.uuid4().hex[:6]}"
    done = proc.run([sys.executable, "-m", "bench.peers", "--child", "luigi", "chain",
                     str(tasks), str(where)], cwd=ROOT)
    row = done.json()
    shutil.rmtree(where, ignore_errors=True)
    if "error" in row:
        raise RuntimeError(f"luigi: {row['error']}")
    return {"process_s": done.wall_s, "build_s": row["wall_s"]}


def chain_vs_luigi(workdir: Path, tasks: int, repeat: int) -> dict[str, Any]:
    plan = write_plan(workdir / f"chain-{tasks}.yaml", chain_plan(tasks))
    ours, theirs = [], []
    for _ in range(repeat):
        ours.append(gravity_resume(workdir, tasks, plan))
        theirs.append(luigi_chain(workdir, tasks))
    g, luigi = best(ours), best(theirs)
    return {"tasks": tasks, "gravity_s": g["wall_s"], "gravity_first_s": g["first_s"],
            "luigi_process_s": luigi["process_s"], "luigi_build_s": luigi["build_s"]}


def median_of(runs: int, once: Callable[[], proc.Run]) -> proc.Run:
    """The run of median wall time among `runs` (after one warm-up run)."""
    once()
    done = sorted((once() for _ in range(runs)), key=lambda r: r.wall_s)
    return done[len(done) // 2]


def startup(workdir: Path, runs: int) -> dict[str, float]:
    """`plan resume` of a 1-phase operation (a new one each run) and of a finished 1,000-phase
    one; `gravity plan` of that 1,000-phase one too."""
    one = write_plan(workdir / "plan-1.yaml", plan_doc(1))
    state = workdir / "startup"
    url = sqlite_url(state)
    counter = iter(range(10**6))

    def one_phase() -> proc.Run:
        op_id = f"one-{next(counter)}"
        create(url, state, one, op_id)
        return resume(url, state, op_id, GRAVITY_DISPATCH="local")

    one_run = median_of(runs, one_phase)
    thousand = write_plan(workdir / "plan-1000.yaml", plan_doc(1000))
    create(url, state, thousand, "done-1000")
    resume(url, state, "done-1000", GRAVITY_DISPATCH="local")
    # A finished operation is refused (exit 3) before its plan is read: what it costs to hear so.
    done_run = median_of(runs, lambda: proc.gravity(
        ["plan", "resume", "--operation-id", "done-1000"], url, state, expect=3,
        GRAVITY_DISPATCH="local"))
    return {"one_phase_s": one_run.wall_s, "one_phase_rss_mb": one_run.rss_mb,
            "finished_1000_s": done_run.wall_s}


def plan_display(workdir: Path, phases: int, runs: int) -> dict[str, float]:
    """Median `gravity plan` and `gravity plan --short` on a created `phases` operation."""
    state = workdir / f"display-{phases}"
    url = sqlite_url(state)
    create(url, state, write_plan(workdir / f"plan-{phases}.yaml", plan_doc(phases)), "show")
    full = median_of(runs, lambda: proc.gravity(["plan", "--operation-id", "show"], url, state))
    short = median_of(runs, lambda: proc.gravity(["plan", "--short", "--operation-id", "show"],
                                                 url, state))
    return {"plan_s": full.wall_s, "plan_rss_mb": full.rss_mb, "short_s": short.wall_s}


def resume_line(r: dict[str, Any], check: Check) -> str:
    n = r["phases"]
    return (f"user sqlite `gravity plan resume` phases={n} (100 composites, parallel 10) "
            f"wall_s={r['wall_s']:.3f} per_phase_ms={r['wall_s'] / n * 1000:.3f} "
            f"start-up to first transition={r['first_s']:.3f}s cpu_s={r['cpu_s']:.2f} "
            f"rss_mb={r['rss_mb']:.0f} | floor process_s={r['floor_process_s']:.3f} "
            f"(writes alone {r['floor_writes_s']:.3f}) | over the floor process "
            f"{check.inline()}, over its writes alone "
            f"{r['wall_s'] / r['floor_writes_s']:.2f}x | CPU {r['cpu_s'] / n * 1000:.3f} ms/phase"
            f" vs the floor's {r['floor_cpu_s'] / n * 1000:.3f} | create_s={r['create_s']:.3f}")


def section(workdir: Path, results: dict[str, Any], *, repeat: int = 2,
            sizes: tuple[int, ...] = (1000, 10000)) -> list[Check]:
    """Every user-level SQLite case; prints a line per case, returns the checks."""
    checks: list[Check] = []
    user: dict[str, Any] = results.setdefault("user", {})
    user["sqlite_resume"] = []
    for n in sizes:
        r = resume_vs_floor(workdir / "resume", n, repeat)
        user["sqlite_resume"].append(r)
        if n in RESUME_RATIO:
            check = Check(f"user sqlite plan resume phases={n} / floor process",
                          r["wall_s"] / r["floor_process_s"], RESUME_RATIO[n], "x")
            checks.append(check)
        else:
            check = Check(f"phases={n}", r["wall_s"] / r["floor_process_s"], float("inf"), "x")
        print(resume_line(r, check), flush=True)
    c = chain_vs_luigi(workdir / "chain", 1000, repeat)
    user["chain"] = c
    times = c["luigi_process_s"] / c["gravity_s"]
    check = Check("user chain of 1000: Luigi process / gravity process", times, LUIGI_TIMES,
                  "x", at_least=True)
    checks.append(check)
    print(f"user chain of {c['tasks']}: gravity `plan resume` process "
          f"{c['gravity_s'] / c['tasks'] * 1000:.3f} ms/task (start-up {c['gravity_first_s']:.3f}s)"
          f" | Luigi process {c['luigi_process_s'] / c['tasks'] * 1000:.3f} ms/task "
          f"(luigi.build alone {c['luigi_build_s'] / c['tasks'] * 1000:.3f}) | gravity cheaper "
          f"by {check.inline()}; by {c['luigi_build_s'] / c['gravity_s']:.1f}x against "
          "luigi.build alone", flush=True)
    s = startup(workdir / "startup", runs=5)
    user["startup"] = s
    for name, value, target in (("1-phase operation", s["one_phase_s"], STARTUP_ONE_S),
                                ("finished 1000-phase operation", s["finished_1000_s"],
                                 STARTUP_DONE_S)):
        check = Check(f"user start-up: plan resume of a {name}", value, target, "s")
        checks.append(check)
        print(f"user start-up `gravity plan resume` of a {name}: median wall "
              f"{check.inline()}", flush=True)
    d = plan_display(workdir / "display", 10000, runs=3)
    user["display_10000"] = d
    check = Check("user gravity plan phases=10000", d["plan_s"], PLAN_S, "s")
    checks.append(check)
    print(f"user `gravity plan` phases=10000: median wall {check.inline()} rss_mb="
          f"{d['plan_rss_mb']:.0f}; `gravity plan --short` {d['short_s']:.3f}s", flush=True)
    return checks
