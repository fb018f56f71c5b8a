"""`python -m bench`: whole `gravity` processes against the raw floor, etcd, agents at scale, hosts
in namespaces, profiles, the in-process matrix, the CLI costs and the peers; PASS/MISS per target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import cli_costs, proc, report, summary
from bench.case import BENCH_OP, CaseSpec
from bench.plans import spread_plan

ROOT = Path(__file__).resolve().parent.parent
FULL_PHASES = (100, 1000, 10000)
FULL_NODES = (1, 100, 1000)
QUICK_CASES = ((100, 1), (100, 100))
AGENTS = 4  # agent processes in mode=agents; their plans use exactly these 4 nodes
# The sections, in the order they run. `big` (100,000 phases) runs only when asked.
SECTIONS = ("user", "etcd", "scale", "hosts", "big", "profile", "matrix", "cli", "peers")
DEFAULT = tuple(s for s in SECTIONS if s != "big")


@dataclass(frozen=True)
class Selection:
    """What `--cases` picked: section names, and PHASESxNODES cases of the matrix."""

    sections: tuple[str, ...]
    matrix: tuple[tuple[int, int], ...] = ()


def parse_cases(text: str) -> Selection:
    """`user,etcd` -> those sections; `100x1,1000x100` -> the matrix with those (phases x
    nodes) cases only; both may be mixed."""
    names: list[str] = []
    pairs: list[tuple[int, int]] = []
    for raw in text.split(","):
        item = raw.strip()
        if item in SECTIONS:
            names.append(item)
            continue
        phases, _, nodes = item.partition("x")
        if not phases.isdigit() or not (nodes or "1").isdigit():
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected a section ({', '.join(SECTIONS)}) or PHASESxNODES")
        pairs.append((int(phases), int(nodes or 1)))
    if pairs and "matrix" not in names:
        names.append("matrix")
    return Selection(tuple(names), tuple(pairs))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="small plans only (CI smoke): 100 phases, no peers")
    p.add_argument("--cases", type=parse_cases, default=None,
                   help="comma list of sections (" + ", ".join(SECTIONS) + "; default: all but "
                   "big) and/or PHASESxNODES cases of the matrix (default: every N in "
                   "100,1000,10000 with every M in 1,100,1000)")
    p.add_argument("--big", action="store_true",
                   help="also run the 100,000-phase cases (and profile `gravity plan` there)")
    p.add_argument("--repeat", type=int, default=2,
                   help="runs of each user-level case and its floor, alternated; the best "
                   "of each counts (default 2)")
    p.add_argument("--stores", default="sqlite,etcd", help="comma list of sqlite, etcd")
    p.add_argument("--venv", choices=("user", "dev"), default="user",
                   help="whose `gravity` the whole-process cases run: `user` (default) a venv "
                   "with gravity installed as a user has it, no test or bench extras "
                   "(bench/.venv-user, reinstalled from this checkout each run), or `dev` "
                   "this venv (faster to set up; its extras slow gravity's start-up)")
    p.add_argument("--no-agents", action="store_true", help="skip mode=agents on etcd")
    p.add_argument("--no-peers", action="store_true", help="skip Luigi/Prefect")
    p.add_argument("--no-cli", action="store_true", help="skip the CLI timings")
    p.add_argument("--etcd-no-fsync", action="store_true",
                   help="run etcd with --unsafe-no-fsync (default: fsync, like SQLite's "
                   "synchronous=FULL)")
    p.add_argument("--out", type=Path, help="write every figure as JSON here")
    p.add_argument("--plot", type=Path, help="save the matrix's per-phase cost plot (PNG) here")
    p.add_argument("--chart", type=Path,
                   help="save the user-level chart (per-phase cost against plan size, both "
                   "stores, floors and peers; PNG) here")
    p.add_argument("--markdown", type=Path, help="write the case table (Markdown) here")
    p.add_argument("--profile", type=Path,
                   help="directory for a cProfile of each case's engine run")
    p.add_argument("--workdir", type=Path, help="keep state here (default: a temp dir, removed)")
    return p.parse_args(argv)


def case_matrix(args: argparse.Namespace, stores: list[str]) -> list[tuple[str, str, int, int]]:
    """(store, mode, phases, nodes) in the order they run."""
    chosen = args.cases.matrix if args.cases else ()
    pairs = list(chosen) or (list(QUICK_CASES) if args.quick else
                             [(n, m) for n in FULL_PHASES for m in FULL_NODES])
    out = [(store, "local", n, m) for store in stores for n, m in pairs]
    if "etcd" in stores and not args.no_agents:
        for n in dict.fromkeys(n for n, _ in pairs):
            out.append(("etcd", "agents", n, AGENTS))
    return out


def run_case(spec: CaseSpec) -> dict[str, Any]:
    """One case in a fresh Python process (so RSS and caches are its own). A case that
    crashes is reported with its error instead of stopping the whole run."""
    proc = subprocess.run([sys.executable, "-m", "bench.case", json.dumps(asdict(spec))],
                          capture_output=True, text=True, cwd=ROOT, timeout=3600)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {**asdict(spec), "error": tail[0], "stderr": proc.stderr[-4000:]}
    return json.loads(lines[-1])


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def selected(args: argparse.Namespace) -> tuple[str, ...]:
    """The sections this run makes, in order."""
    if args.quick:
        wanted: tuple[str, ...] = ("matrix", "cli")
    elif args.cases:
        wanted = args.cases.sections
    else:
        wanted = DEFAULT
    if args.big:
        wanted = (*wanted, "big")
    skip = {"peers"} if args.no_peers else set()
    skip |= {"cli"} if args.no_cli else set()
    return tuple(s for s in SECTIONS if s in wanted and s not in skip)


def needs_etcd(sections: tuple[str, ...], stores: list[str]) -> bool:
    return "etcd" in stores and bool({"etcd", "scale", "big", "matrix"} & set(sections))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    sections = selected(args)
    started = time.perf_counter()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gravity-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.venv == "user" and set(sections) - {"matrix", "peers"}:
        from bench import uservenv

        cli_costs.VENV["path"] = uservenv.ensure()
    etcd = (proc.start_etcd(workdir, fsync=not args.etcd_no_fsync)
            if needs_etcd(sections, stores) else None)
    results: dict[str, Any] = {"machine": machine(), "sections": list(sections), "cases": [],
                               "cli": {}, "checks": []}
    checks: list[report.Check] = []
    try:
        print(f"# gravity bench on {results['machine']['cpus']} cores, "
              f"Python {results['machine']['python']}, load average "
              f"{results['machine']['load']}; sections {', '.join(sections)}; gravity "
              f"{' '.join(cli_costs.gravity_argv())}; state in {workdir}", flush=True)
        for name in sections:
            began = time.perf_counter()
            checks.extend(run_section(name, args, stores, workdir, etcd, results))
            results.setdefault("section_s", {})[name] = time.perf_counter() - began
            print(f"# section {name}: {time.perf_counter() - began:.0f}s", flush=True)
    finally:
        if etcd is not None:
            etcd.stop()
    results["checks"] = [c.to_dict() for c in checks]
    results["bench_wall_s"] = time.perf_counter() - started
    missed = [c for c in checks if c.verdict == "MISS"]
    print(f"targets: {sum(c.verdict == 'PASS' for c in checks)} PASS, {len(missed)} MISS"
          + "".join(f"\n  MISS {c.name}: {c.inline()}" for c in missed), flush=True)
    print(f"bench wall time: {results['bench_wall_s']:.1f}s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    if args.markdown:
        args.markdown.write_text(summary.user_table(results) + "\n"
                                 + report.markdown_table(results["cases"]))
    if args.plot and results["cases"]:
        report.plot(results["cases"], args.plot)
    if args.chart:
        summary.chart(results, args.chart)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run_section(name: str, args: argparse.Namespace, stores: list[str], workdir: Path,
                etcd: Any, results: dict[str, Any]) -> list[report.Check]:
    """One section; a section that fails is reported (one MISS) and the run goes on."""
    from bench import big, etcd_cases, hosts_case, profile, scale, user

    where = workdir / name
    if name in ("etcd", "scale") and etcd is None:
        print(f"section {name}: skipped (etcd is not in --stores)", flush=True)
        return []
    try:
        if name == "user":
            return user.section(where, results, repeat=args.repeat)
        if name == "etcd":
            return etcd_cases.section(etcd.url, where, results, repeat=args.repeat)
        if name == "scale":
            return scale.section(etcd.url, where, results)
        if name == "hosts":
            return hosts_case.section(where, results)
        if name == "big":
            return big.section(etcd.url if etcd else None, where, results,
                               stores=tuple(stores))
        if name == "profile":
            return profile.section(where, results, big=args.big)
        if name == "matrix":
            return matrix_section(args, stores, workdir, etcd, results)
        if name == "cli":
            return cli_section(results, workdir, etcd)
        if name == "peers":
            results["peers"] = peers_section(workdir)
        return []
    except Exception as exc:  # one broken section must not lose the others' figures
        print(f"section {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
        results.setdefault("failed", {})[name] = f"{type(exc).__name__}: {exc}"
        return [report.Check(f"section {name} finished", 1.0, 0.0)]


def matrix_section(args: argparse.Namespace, stores: list[str], workdir: Path, etcd: Any,
                   results: dict[str, Any]) -> list[report.Check]:
    """The in-process matrix (bench/case.py): each case in its own Python process."""
    checks: list[report.Check] = []
    for store, mode, phases, nodes in case_matrix(args, stores):
        case_dir = workdir / f"{store}-{mode}-{phases}x{nodes}"
        url = (f"sqlite://{(case_dir / 'gravity.db').resolve()}" if store == "sqlite"
               else f"{etcd.url}/b{uuid.uuid4().hex[:8]}")
        profile = None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            profile = str(args.profile.resolve() / f"{case_dir.name}.prof")
        spec = CaseSpec(store=store, mode=mode, phases=phases, nodes=nodes, url=url,
                        workdir=str(case_dir), profile=profile)
        case = run_case(spec)
        results["cases"].append(case)
        checks.extend(report.case_checks(case))
        print(report.case_line(case), flush=True)
    for check in report.scaling_checks(results["cases"]):
        checks.append(check)
        print(f"scaling {check.name}={check.inline()}", flush=True)
    return checks


def cli_section(results: dict[str, Any], workdir: Path, etcd: Any) -> list[report.Check]:
    """`gravity --help`, `gravity plan` on the biggest local case of each store, and a real
    `gravity plan resume` coordinator process on that size (its peak RSS)."""
    checks = []
    help_s = cli_costs.help_startup(workdir / "cli-help")
    results["cli"]["help_s"] = help_s
    check = report.Check("gravity --help", help_s, report.HELP_S, "s")
    checks.append(check)
    print(f"cli gravity --help wall_s={check.inline()}", flush=True)
    for store in ("sqlite", "etcd"):
        local = [c for c in results["cases"] if c["store"] == store and c["mode"] == "local"]
        if not local:
            continue
        biggest = max(local, key=lambda c: (c["phases"], c["nodes"] == 100))
        n = biggest["phases"]
        shown = cli_costs.plan_display(biggest["url"], Path(biggest["workdir"]), BENCH_OP)
        results["cli"][f"{store}_plan"] = {"phases": n, **shown}
        for kind, seconds in shown.items():
            target = report.PLAN_S if n >= 10000 else float("inf")
            check = report.Check(f"store={store} gravity plan ({kind}) phases={n}", seconds,
                                 target, "s")
            if n >= 10000:
                checks.append(check)
            print(f"cli store={store} gravity plan -o {kind} phases={n} wall_s="
                  + (check.inline() if n >= 10000 else f"{seconds:.3f}s (target is for 10000)"),
                  flush=True)
        url = (f"sqlite://{(workdir / f'cli-{store}' / 'gravity.db').resolve()}"
               if store == "sqlite" else f"{etcd.url}/cli{uuid.uuid4().hex[:8]}")
        coord = cli_costs.coordinator(url, workdir / f"cli-{store}", spread_plan(n, 100))
        results["cli"][f"{store}_coordinator"] = {"phases": n, **coord}
        check = report.Check(f"store={store} gravity plan resume rss_mb phases={n}",
                             coord["rss_mb"], report.RSS_MB)
        checks.append(check)
        print(f"cli store={store} phases={n} nodes=100 `gravity operation create` "
              f"wall_s={coord['create_s']:.3f} `gravity plan resume` "
              f"wall_s={coord['resume_s']:.3f} coordinator rss_mb={check.inline()}",
              flush=True)
    return checks


def peers_section(workdir: Path) -> dict[str, Any]:
    """Luigi and Prefect on the same chain and fan-out, printed side by side with ours."""
    proc = subprocess.run([sys.executable, "-m", "bench.peers", "--workdir",
                           str(workdir / "peers"), "--json"], capture_output=True, text=True,
                          cwd=ROOT, timeout=3600)
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(line, flush=True)
    if proc.returncode != 0 or not lines:
        print(f"peers: failed: {proc.stderr[-2000:]}", flush=True)
        return {"error": proc.stderr[-2000:]}
    return json.loads(lines[-1])


if __name__ == "__main__":
    sys.exit(main())
