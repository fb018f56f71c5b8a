"""Where the time goes in whole `gravity` processes: py-spy samples (cProfile when py-spy is not
installed) summarised per function, and `-X importtime` for start-up; printed and kept as JSON.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench import proc
from bench.cli_costs import cli_env, gravity_argv, gravity_python
from bench.user import create, plan_doc, sqlite_url, write_plan

RATE = 250  # py-spy samples per second
TOP = 25
_LINE = re.compile(r":\d+\)$")
# Frames every stack has (the entry point, click's dispatch): never the answer to "where".
PLUMBING = ("<module> (gravity", "main (engine/cli/main.py", "click/", "<frozen importlib",
            "_call_with_frames_removed", "new_func (click", "run (threading.py",
            "_bootstrap (threading.py", "_bootstrap_inner (threading.py")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def frame_label(frame: str) -> str:
    """`SQLiteStore.apply (engine/store/sqlite.py:312)` -> without the line number."""
    return _LINE.sub(")", frame)


def summarize_raw(raw: Path, thread: str | None = None) -> dict[str, Any]:
    """py-spy's collapsed stacks (recorded with --threads) -> samples, and per function its
    cumulative and own share of them; with `thread` ("MainThread"), that thread's only."""
    cumulative: Counter[str] = Counter()
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    main_tid = None
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        head, _, rest = stack.partition(";")
        tid = head.split("(", 1)[1].split(")", 1)[0] if head.startswith("thread (") else head
        if thread and thread in head:
            main_tid = tid
        threads[tid] += int(count)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        head, _, rest = stack.partition(";")
        if not rest or (thread and main_tid and f"({main_tid})" not in head):
            continue
        n = int(count)
        total += n
        frames = [frame_label(f) for f in rest.split(";")]
        for label in set(frames):
            cumulative[label] += n
        own[frames[-1]] += n
    return {"samples": total, "rate": RATE, "threads": len(threads),
            "cumulative": _top(cumulative, total), "self": _top(own, total)}


def _top(counter: Counter[str], total: int) -> list[tuple[str, float]]:
    rows = [(label, n / total * 100) for label, n in counter.most_common()
            if not any(p in label for p in PLUMBING)]
    return rows[:TOP]


def summarize_pstats(path: Path) -> dict[str, Any]:
    """cProfile's output in the same shape (cumulative and own time as % of the total)."""
    import pstats

    stats = pstats.Stats(str(path))
    total = max(stats.total_tt, 1e-9)  # type: ignore[attr-defined]
    cumulative: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for (file, _, name), (_, _, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = file.split("site-packages/")[-1].split("wt-bench/")[-1]
        label = f"{name} ({short})"
        cumulative[label] += ct
        own[label] += tt
    return {"samples": None, "total_s": total,
            "cumulative": [(k, v / total * 100) for k, v in cumulative.most_common(TOP * 2)
                           if not any(p in k for p in PLUMBING)][:TOP],
            "self": [(k, v / total * 100) for k, v in own.most_common(TOP)]}


def profile(args: list[str], url: str, state_dir: Path, out: Path, *, gil: bool = False,
            **env: str) -> dict[str, Any]:
    """Run `gravity ARGS` once under py-spy (or cProfile) and summarise where it spent time:
    the main thread's wall time (every sample, waiting included), or with `gil` the CPU spent
    in Python (only the thread holding the GIL is sampled, whichever it is)."""
    full = cli_env(url, state_dir)
    full.update(env)
    spy = py_spy()
    if spy:
        raw = out.with_suffix(".gil.raw" if gil else ".raw")
        mode = ["--gil"] if gil else ["--idle"]
        argv = [spy, "record", "-r", str(RATE), "--threads", *mode, "-f", "raw", "-o", str(raw),
                "--", *gravity_argv(), *args]
        done = proc.run(argv, full, cwd=state_dir)
        summary = summarize_raw(raw, None if gil else "MainThread")
        summary["tool"] = ("py-spy --gil: Python CPU, any thread" if gil else
                           "py-spy --idle: the main thread's wall time, waits included")
    else:
        prof = out.with_suffix(".prof")
        done = proc.run([gravity_python(), "-m", "cProfile", "-o", str(prof), "-m",
                         "engine.cli.main", *args], full, cwd=state_dir)
        summary = summarize_pstats(prof)
        summary["tool"] = "cProfile (the main thread only)"
    summary["wall_s"] = done.wall_s
    return summary


def call_counts(args: list[str], url: str, state_dir: Path, out: Path, per: int,
                **env: str) -> dict[str, Any]:
    """cProfile (the main thread: the scheduler) of `gravity ARGS`: for the functions with the
    most own time, calls and microseconds per `per` (a transition)."""
    import pstats

    full = cli_env(url, state_dir)
    full.update(env)
    prof = out.with_suffix(".prof")
    done = proc.run([gravity_python(), "-m", "cProfile", "-o", str(prof), "-m",
                     "engine.cli.main", *args], full, cwd=state_dir)
    stats = pstats.Stats(str(prof))
    rows = []
    for (file, _, name), (_, calls, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = file.split("site-packages/")[-1].split("/engine/", 1)[-1]
        rows.append({"function": f"{name} ({short})", "calls_per": calls / per,
                     "own_us_per": tt / per * 1e6, "cum_us_per": ct / per * 1e6})
    rows.sort(key=lambda r: -r["own_us_per"])
    return {"wall_s": done.wall_s, "per": per, "top": rows[:TOP]}


def import_times(args: list[str], url: str, state_dir: Path, **env: str) -> dict[str, Any]:
    """`python -X importtime`: the modules a command imports and what each costs (µs)."""
    full = cli_env(url, state_dir)
    full.update(env)
    full["PYTHONPROFILEIMPORTTIME"] = "1"
    done = subprocess.run([*gravity_argv(), *args], env=full, cwd=state_dir,
                          capture_output=True, text=True, timeout=600)
    packages: Counter[str] = Counter()
    total = 0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, _, name = (part.strip() for part in line[len("import time:"):].split("|", 2))
        total += int(own)
        packages[name.split(".")[0]] += int(own)
    return {"total_ms": total / 1000,
            "packages_ms": [(k, v / 1000) for k, v in packages.most_common(15)]}


def encoders(rounds: int = 20000) -> dict[str, float]:
    """µs to encode one transition's three JSON documents (its state row, its changelog record,
    its event-log line) with the standard library and with orjson, when installed."""
    import json
    import timeit

    from engine import fsm
    from engine.model import Action, ChangeRecord, PhaseState, State

    start = fsm.transition(PhaseState("/n0001/p00001", node="node-2"), State.IN_PROGRESS,
                           action=Action.EXECUTE, owner=1, attempt=1)
    rec = ChangeRecord.of("bench", start, seq=1)
    event = {"phase": rec.phase_id, "node": rec.node, "attempt": 1, "action": "execute",
             "from": "unstarted", "to": "in_progress", "operation": "bench",
             "event": "transition", "ts": "2026-01-01T00:00:00.000Z"}
    docs = (start.new.to_dict(), rec.to_dict(), event)
    out = {"to_dict_us": timeit.timeit(lambda: (start.new.to_dict(), rec.to_dict()),
                                       number=rounds) / rounds * 1e6,
           "json_us": timeit.timeit(lambda: [json.dumps(d) for d in docs],
                                    number=rounds) / rounds * 1e6}
    try:
        import orjson
    except ImportError:
        return out
    out["orjson_us"] = timeit.timeit(lambda: [orjson.dumps(d) for d in docs],
                                     number=rounds) / rounds * 1e6
    return out


def print_summary(title: str, summary: dict[str, Any], top: int = 15) -> None:
    print(f"profile {title}: wall {summary['wall_s']:.2f}s, {summary['tool']}"
          + (f", {summary['samples']} samples" if summary.get("samples") else ""), flush=True)
    for label, pct in summary["cumulative"][:top]:
        print(f"  cum {pct:5.1f}%  {label}", flush=True)
    print("  by own time:", flush=True)
    for label, pct in summary["self"][:10]:
        print(f"  own {pct:5.1f}%  {label}", flush=True)


def section(workdir: Path, results: dict[str, Any], *, big: bool = False) -> list[Any]:
    """Profiles of `plan resume` (10,000 phases: the main thread's wall, Python CPU, calls per
    transition), the imports of its start-up, and `gravity plan` (10,000; 100,000 with big).
    Nothing is judged here: the figures and their targets are the other sections'."""
    out: dict[str, Any] = {}
    workdir.mkdir(parents=True, exist_ok=True)
    for n in (10_000, 100_000) if big else (10_000,):
        state = workdir / f"state-{n}"
        url = sqlite_url(state)
        plan = write_plan(workdir / f"plan-{n}.yaml", plan_doc(n))

        def fresh(state: Path = state, url: str = url, plan: Path = plan) -> None:
            shutil.rmtree(state, ignore_errors=True)
            create(url, state, plan, "prof")

        fresh()
        if n == 10_000:
            resume = ["plan", "resume", "--operation-id", "prof"]
            for gil in (False, True):
                s = profile(resume, url, state, workdir / "resume-10000", gil=gil,
                            GRAVITY_DISPATCH="local")
                out["resume_10000_gil" if gil else "resume_10000"] = s
                print_summary("`gravity plan resume`, 10,000 phases, SQLite", s)
                fresh()
            counts = call_counts(resume, url, state, workdir / "resume-10000", 2 * n,
                                 GRAVITY_DISPATCH="local")
            out["resume_10000_calls"] = counts
            print(f"profile cProfile of the main (scheduler) thread of `gravity plan resume`, "
                  f"per transition ({2 * n}), wall {counts['wall_s']:.1f}s under cProfile:",
                  flush=True)
            for row in counts["top"][:15]:
                print(f"  {row['calls_per']:6.2f} calls {row['own_us_per']:7.1f} us own "
                      f"{row['cum_us_per']:7.1f} us cum  {row['function']}", flush=True)
            imports = import_times(resume, url, state, GRAVITY_DISPATCH="local")
            out["imports_resume"] = imports
            print(f"profile imports of `gravity plan resume` (a finished operation), -X "
                  f"importtime: {imports['total_ms']:.0f} ms in all; by package: "
                  + ", ".join(f"{k} {v:.0f}" for k, v in imports["packages_ms"][:10]),
                  flush=True)
            enc = encoders()
            out["encoders"] = enc
            print(f"profile encoding one transition's 3 JSON documents (state, record, event): "
                  f"json {enc['json_us']:.1f} us"
                  + (f", orjson {enc['orjson_us']:.1f} us" if "orjson_us" in enc else "")
                  + f"; building the 2 dicts (to_dict) {enc['to_dict_us']:.1f} us", flush=True)
        s = profile(["plan", "--operation-id", "prof"], url, state, workdir / f"plan-{n}")
        out[f"plan_{n}"] = s
        print_summary(f"`gravity plan`, {n:,} phases, SQLite", s)
        shutil.rmtree(state, ignore_errors=True)
    results["profile"] = out
    return []
