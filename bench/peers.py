"""The same chain and fan-out of 1,000 no-op tasks on our engine, Luigi and Prefect 3.
`python -m bench.peers` runs each system in a child process and prints per-task cost side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("gravity", "luigi", "prefect")
SHAPES = ("chain", "fanout")


def run_gravity(shape: str, tasks: int, workdir: Path) -> dict[str, Any]:
    """Our engine on the embedded SQLite store, in-process dispatch, create excluded."""
    from bench.plans import chain_plan, fanout_plan
    from engine.planfile import plan_from_mapping
    from engine.service import Engine, create_operation, resume
    from engine.store import open_store

    doc = chain_plan(tasks) if shape == "chain" else fanout_plan(tasks)
    store = open_store(f"sqlite://{(workdir / 'gravity.db').resolve()}")
    create_operation(store, plan_from_mapping(doc), operation_id=shape)
    started = time.perf_counter()
    resume(Engine(store=store, state_dir=workdir, quiet=True), shape)
    return {"wall_s": time.perf_counter() - started,
            "note": "SQLite WAL synchronous=FULL, 2 durable transitions per task, 8 workers"}


def run_luigi(shape: str, tasks: int, workdir: Path) -> dict[str, Any]:
    """Luigi's local scheduler, one worker; each task's output is a LocalTarget file."""
    import logging

    import luigi

    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    last = tasks - 1

    class Noop(luigi.Task):  # type: ignore[misc]
        index = luigi.IntParameter()

        def requires(self) -> list[luigi.Task]:
            if shape == "chain":
                return [Noop(index=self.index - 1)] if self.index > 0 else []
            if self.index == 0:
                return []
            if self.index == last:
                return [Noop(index=i) for i in range(1, last)]
            return [Noop(index=0)]

        def output(self) -> luigi.LocalTarget:
            return luigi.LocalTarget(str(workdir / shape / f"{self.index:05d}"))

        def run(self) -> None:
            with self.output().open("w") as out:
                out.write("done\n")

    started = time.perf_counter()
    ok = luigi.build([Noop(index=last)], local_scheduler=True, workers=1,
                     log_level="WARNING")
    wall = time.perf_counter() - started
    if not ok:
        raise RuntimeError("luigi.build reported failure")
    written = len(list((workdir / shape).iterdir()))
    if written != tasks:
        raise RuntimeError(f"luigi wrote {written} of {tasks} targets")
    return {"wall_s": wall, "note": "local scheduler, 1 worker, a LocalTarget file per task "
            "(atomic rename, no fsync)"}


def run_prefect(shape: str, tasks: int, workdir: Path) -> dict[str, Any]:
    """Prefect 3 with its ephemeral local API server (SQLite); server start-up excluded."""
    home = workdir / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      PREFECT_LOGGING_LEVEL="ERROR",
                      PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    from prefect import flow, task

    @task
    def noop(index: int, previous: int | None = None) -> int:
        return index

    @flow
    def warm_up() -> int:
        return noop(0)

    @flow
    def chain() -> int:
        value = None
        for i in range(tasks):
            value = noop(i, value)
        return value or 0

    @flow
    def fanout() -> int:
        source = noop.submit(0)
        middle = [noop.submit(i, wait_for=[source]) for i in range(1, tasks - 1)]
        return noop.submit(tasks - 1, wait_for=middle).result()

    started = time.perf_counter()
    warm_up()
    startup = time.perf_counter() - started
    started = time.perf_counter()
    (chain if shape == "chain" else fanout)()
    return {"wall_s": time.perf_counter() - started, "startup_s": startup,
            "note": "ephemeral API server on SQLite, default thread-pool task runner; "
            "server start-up excluded"}


RUNNERS = {"gravity": run_gravity, "luigi": run_luigi, "prefect": run_prefect}


def child(system: str, shape: str, tasks: int, workdir: Path) -> dict[str, Any]:
    """Run one system on one shape in this process; errors become `not available`."""
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"system": system, "shape": shape, "tasks": tasks}
    try:
        out.update(RUNNERS[system](shape, tasks, workdir))
    except ImportError as exc:
        out["error"] = f"not installed ({exc.name}); pip install -e '.[bench]'"
    except Exception as exc:  # a peer's own failure is reported, not raised
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if "wall_s" in out:
        out["per_task_ms"] = out["wall_s"] / tasks * 1000
    return out


def run_all(tasks: int, workdir: Path) -> list[dict[str, Any]]:
    """Each system and shape in its own child process of this one (same process tree)."""
    rows = []
    for system in SYSTEMS:
        for shape in SHAPES:
            where = workdir / f"{system}-{shape}"
            proc = subprocess.run(
                [sys.executable, "-m", "bench.peers", "--child", system, shape, str(tasks),
                 str(where)], capture_output=True, text=True, cwd=ROOT, timeout=1800)
            lines = proc.stdout.strip().splitlines()
            try:
                row = json.loads(lines[-1])
            except (IndexError, json.JSONDecodeError):
                tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
                row = {"system": system, "shape": shape, "tasks": tasks, "error": tail[0]}
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Side by side: one line per system, per-task cost for each shape."""
    lines = []
    for system in SYSTEMS:
        mine = {r["shape"]: r for r in rows if r["system"] == system}
        errors = {r.get("error") for r in mine.values() if "error" in r}
        if errors and len(errors) == len(mine):
            lines.append(f"peer {system}: not available: {sorted(errors)[0]}")
            continue
        cells = []
        for shape in SHAPES:
            r = mine.get(shape, {})
            cells.append(f"{shape}_per_task_ms=" + (f"{r['per_task_ms']:.3f}" if "per_task_ms"
                                                    in r else f"n/a ({r.get('error')})"))
        extra = next((r.get("note") for r in mine.values() if r.get("note")), "")
        startup = next((r["startup_s"] for r in mine.values() if "startup_s" in r), None)
        if startup is not None:
            extra += f"; server start-up {startup:.1f}s"
        lines.append(f"peer {system} tasks={rows[0]['tasks']} {' '.join(cells)}  [{extra}]")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json", action="store_true", help="also print all rows as one JSON line")
    p.add_argument("--child", nargs=4, metavar=("SYSTEM", "SHAPE", "TASKS", "DIR"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        system, shape, tasks, where = args.child
        print(json.dumps(child(system, shape, int(tasks), Path(where))), flush=True)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gravity-peers-"))
    rows = run_all(args.tasks, workdir)
    for line in table(rows):
        print(line, flush=True)
    if args.json:
        print(json.dumps({"rows": rows}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
