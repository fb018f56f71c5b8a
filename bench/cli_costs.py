"""What an operator feels from the real `gravity` CLI: start-up, `gravity plan` on a big
operation, and a coordinator process (`gravity plan resume`) with its peak RSS.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

# The virtualenv whose `gravity` the whole-process cases run (bench/uservenv.py sets it);
# unset: the one running the bench.
VENV: dict[str, Path] = {}


def gravity_python() -> str:
    """The Python of that virtualenv (for `-m engine.cli.main`, cProfile, the floor scripts)."""
    return str(VENV["path"] / "bin" / "python") if "path" in VENV else sys.executable


def gravity_argv() -> list[str]:
    """The installed console script of that virtualenv (what users run), else `-m`."""
    script = Path(gravity_python()).parent / "gravity"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [gravity_python(), "-m", "engine.cli.main"]


def cli_env(url: str | None, state_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GRAVITY_STORE", None)
    env["GRAVITY_STATE_DIR"] = str(state_dir)
    if url:
        env["GRAVITY_STORE"] = url
    return env


def timed_run(args: list[str], env: dict[str, str], *, cwd: Path | None = None,
              out: Path | None = None) -> dict[str, Any]:
    """Run `gravity ARGS` once: wall time and the child's own peak RSS (bench/proc.py: VmHWM,
    not wait4's ru_maxrss, which a forked child inherits from a large parent)."""
    from bench import proc

    done = proc.run([*gravity_argv(), *args], env, cwd=cwd)
    if out is not None:
        out.write_text(done.out)
    return {"wall_s": done.wall_s, "rss_mb": done.rss_mb}


def median_wall(args: list[str], env: dict[str, str], runs: int) -> float:
    return statistics.median(timed_run(args, env)["wall_s"] for _ in range(runs))


def help_startup(state_dir: Path, runs: int = 7) -> float:
    """Median wall time of `gravity --help` (one warm-up run first, as an operator's shell
    has the files cached)."""
    env = cli_env(None, state_dir)
    timed_run(["--help"], env)
    return median_wall(["--help"], env, runs)


def plan_display(url: str, state_dir: Path, operation_id: str, runs: int = 3
                 ) -> dict[str, float]:
    """Median wall time of `gravity plan` (text) and `gravity plan -o json` on an operation."""
    env = cli_env(url, state_dir)
    base = ["plan", "--operation-id", operation_id]
    timed_run(base, env)  # warm the page cache like an operator's second look
    return {"text": median_wall(base, env, runs),
            "json": median_wall([*base, "-o", "json"], env, runs)}


def coordinator(url: str, state_dir: Path, plan_doc: dict[str, Any], *,
                operation_id: str = "cli") -> dict[str, float]:
    """`gravity operation create` then `gravity plan resume` as real processes: their wall
    times and the coordinator's peak RSS."""
    state_dir.mkdir(parents=True, exist_ok=True)
    plan_file = state_dir / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(plan_doc, sort_keys=False))
    env = cli_env(url, state_dir)
    env["GRAVITY_DISPATCH"] = "local"
    create = timed_run(["operation", "create", "--plan", str(plan_file), "--id", operation_id],
                       env, out=state_dir / "create.out")
    run = timed_run(["plan", "resume", "--operation-id", operation_id], env,
                    out=state_dir / "resume.out")
    return {"create_s": create["wall_s"], "create_rss_mb": create["rss_mb"],
            "resume_s": run["wall_s"], "rss_mb": run["rss_mb"]}
