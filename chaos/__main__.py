"""`python -m chaos`: run every fault scenario for N seeded trials against real processes and a
real etcd, check the invariants after each, and close with one summary line.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chaos.checker import Verdict, check_trial
from chaos.scenarios import OP, SCENARIOS, TrialError
from chaos.world import TTL, Trial, TrialSkipped, World

# 0 done, 1 a phase failed (resumable), 3 refused (another driver), -9 killed by the scenario,
# 143 stopped by the scenario's SIGTERM; -15 that SIGTERM landing while the process was already
# exiting, its work done (Python's finalization restores the default action, which kills it:
# seen in log_readonly when the run finished at the moment the signal came).
EXPECTED_EXITS = (0, 1, 3, -9, -15, 143)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    p.add_argument("--trials", type=int, default=3, help="trials per scenario (default 3)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of every random choice (default: a new one, printed)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma list of: {', '.join(SCENARIOS)}")
    p.add_argument("--first", type=int, default=0,
                   help="index of the first trial (to replay one: --first K --trials 1)")
    p.add_argument("--workdir", type=Path, help="where trials live (default: a temp dir)")
    p.add_argument("--keep", action="store_true",
                   help="keep every trial's directory (failed ones are always kept)")
    p.add_argument("--json", type=Path, help="write every trial's verdict here")
    args = p.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def run_trial(world: World, scenario: str, index: int) -> tuple[Trial, Verdict]:
    """One trial: stage the fault, stop the agents, check every invariant."""
    trial = Trial(world, scenario, index)
    try:
        staged = SCENARIOS[scenario](trial)
        trial.stop_agents()
        verdict = check_trial(trial.store, OP, staged.leaves, trial.state_dir, staged.expect,
                              agent_nodes=staged.agent_nodes, settle=TTL * 1.5 + 1)
        verdict.violations.extend(staged.violations)
    except TrialSkipped as exc:
        verdict = Verdict(outcome="skipped", stuck=[str(exc)])
    except (TrialError, TimeoutError, RuntimeError, subprocess.SubprocessError, OSError) as exc:
        verdict = Verdict(outcome="error", stuck=[f"the trial could not run: {exc}"])
    finally:
        world.etcd.start()  # a scenario that failed mid-restart must not leave etcd down
        trial.close()
    return trial, verdict


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    scenarios = args.scenarios.split(",")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="gravity-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"# chaos seed={seed} trials={args.trials} per scenario, scenarios={scenarios}, "
          f"dir={root}", flush=True)
    totals = {"trials": 0, "completed": 0, "lost": 0, "duplicated": 0, "concurrent": 0,
              "stuck": 0, "violations": 0, "skipped": 0}
    rows: list[dict[str, Any]] = []
    odd_exits = 0
    with World(root, seed) as world:
        for index in range(args.first, args.first + args.trials):
            for scenario in scenarios:
                trial, verdict = run_trial(world, scenario, index)
                if verdict.outcome == "skipped":
                    totals["skipped"] += 1
                    print(f"skip {scenario} trial={index}: {verdict.stuck[0]}", flush=True)
                    continue
                totals["trials"] += 1
                totals["completed"] += int(verdict.expected)
                totals["lost"] += len(verdict.lost)
                totals["duplicated"] += len(verdict.duplicated)
                totals["concurrent"] += len(verdict.concurrent)
                totals["stuck"] += len(verdict.stuck)
                totals["violations"] += len(verdict.violations)
                row = {**trial.describe(), "outcome": verdict.outcome,
                       "expected": verdict.expected, "findings": verdict.findings()}
                rows.append(row)
                mark = "ok  " if verdict.ok else "FAIL"
                print(f"{mark} {scenario} trial={index} dispatch={trial.dispatch} "
                      f"outcome={verdict.outcome} exits={trial.codes} "
                      f"{'; '.join(trial.notes)}", flush=True)
                for finding in verdict.findings():
                    print(f"     {finding}", flush=True)
                odd = [c for c in trial.codes if c not in EXPECTED_EXITS]
                if odd:
                    odd_exits += len(odd)
                    print(f"     note: unexpected exit codes {odd} (see the .out files)",
                          flush=True)
                if not verdict.ok or odd:
                    print(f"     kept {trial.dir}; replay with --seed {seed} --scenarios "
                          f"{scenario} --first {index} --trials 1", flush=True)
                elif not args.keep:
                    shutil.rmtree(trial.dir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"seed": seed, "totals": totals, "trials": rows},
                                        indent=2))
    print(f"# chaos wall time {time.monotonic() - started:.1f}s; unexpected exit codes: "
          f"{odd_exits}", flush=True)
    print(" ".join(f"{k}={v}" for k, v in totals.items()), flush=True)
    if not args.workdir and not args.keep and totals["completed"] == totals["trials"] and \
            not any(totals[k] for k in ("lost", "duplicated", "concurrent", "stuck", "violations")):
        shutil.rmtree(root, ignore_errors=True)
    bad = totals["completed"] != totals["trials"] or any(
        totals[k] for k in ("lost", "duplicated", "concurrent", "stuck", "violations"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
