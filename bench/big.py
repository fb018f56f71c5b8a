"""100,000 phases on SQLite and on etcd (with fsync), as whole `gravity` processes: create, resume,
`gravity plan` and `--short`, peak RSS, and on etcd the largest request and value sent.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from bench import proc
from bench.report import Check
from bench.user import create, median_of, plan_doc, resume, sqlite_url, write_plan

PHASES = 100_000
REFERENCE = 10_000  # per-phase cost of resume compared with this size's
CREATE_S = 10.0
SCALING = 1.3
PLAN_S = 3.0
SHORT_S = 0.5
RSS_MB = 500.0
ETCD_REQUEST_BYTES = 1_572_864  # etcd's default --max-request-bytes (1.5 MiB)


def resume_env(store: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """Phases in-process on both stores (`--local` on etcd), as the 10,000-phase reference."""
    return (("--local",), {}) if store == "etcd" else ((), {"GRAVITY_DISPATCH": "local"})


def one_store(store: str, server_url: str | None, workdir: Path, phases: int,
              reference: float | None) -> dict[str, Any]:
    """Create, resume, display `phases` on `store`; `reference`: the per-phase resume cost
    (ms) at 10,000 phases measured earlier in this run (None: measured here first)."""
    where = workdir / store
    where.mkdir(parents=True, exist_ok=True)
    extra, env = resume_env(store)

    def url_for(name: str) -> str:
        return (sqlite_url(where / name) if store == "sqlite"
                else f"{server_url}/{name}{uuid.uuid4().hex[:6]}")

    if reference is None:
        small = where / "reference"
        ref_url = url_for("reference")
        create(ref_url, small, write_plan(where / "plan-ref.yaml", plan_doc(REFERENCE)), "ref")
        ran = resume(ref_url, small, "ref", *extra, **env)
        reference = ran.wall_s / REFERENCE * 1000
        shutil.rmtree(small, ignore_errors=True)
    state = where / "big"
    url = url_for("big")
    sizes = where / "sizes.json" if store == "etcd" else None
    plan = write_plan(where / "plan.yaml", plan_doc(phases))
    made = create(url, state, plan, "big", sizes=sizes)
    create_sizes = json.loads(sizes.read_text()) if sizes else {}
    ran = resume(url, state, "big", *extra, sizes=sizes, **env)
    resume_sizes = json.loads(sizes.read_text()) if sizes else {}
    shown = median_of(3, lambda: proc.gravity(["plan", "--operation-id", "big"], url, state))
    short = median_of(3, lambda: proc.gravity(["plan", "--short", "--operation-id", "big"],
                                              url, state))
    out = {"store": store, "phases": phases, "create_s": made.wall_s,
           "create_rss_mb": made.rss_mb, "resume_s": ran.wall_s, "resume_rss_mb": ran.rss_mb,
           "resume_first_s": ran.first_s, "resume_cpu_s": ran.cpu_s,
           "per_phase_ms": ran.wall_s / phases * 1000, "reference_per_phase_ms": reference,
           "plan_s": shown.wall_s, "plan_rss_mb": shown.rss_mb, "short_s": short.wall_s}
    if sizes:
        out["max_request_bytes"] = max(create_sizes["max_request"], resume_sizes["max_request"])
        out["largest_request"] = (create_sizes if create_sizes["max_request"]
                                  >= resume_sizes["max_request"] else resume_sizes)["largest"]
        out["max_value_bytes"] = max(create_sizes["max_value"], resume_sizes["max_value"])
    shutil.rmtree(state, ignore_errors=True)
    return out


def section(server_url: str | None, workdir: Path, results: dict[str, Any], *,
            stores: tuple[str, ...] = ("sqlite", "etcd"), phases: int = PHASES) -> list[Check]:
    """Each store in turn; the 10,000-phase reference comes from the user-level cases of this
    run when they ran (SQLite `plan resume`, etcd `plan resume --local`)."""
    user = results.get("user", {})
    refs = {"sqlite": user.get("sqlite_resume", []), "etcd": user.get("etcd_local", [])}
    checks: list[Check] = []
    rows = []
    for store in stores:
        if store == "etcd" and server_url is None:
            continue
        ref = next((r["wall_s"] / r["phases"] * 1000 for r in refs[store]
                    if r["phases"] == REFERENCE), None)
        r = one_store(store, server_url, workdir, phases, ref)
        rows.append(r)
        label = f"big {store} phases={phases}"
        rss = max(r["create_rss_mb"], r["resume_rss_mb"], r["plan_rss_mb"])
        mine = [Check(f"{label} operation create", r["create_s"], CREATE_S, "s"),
                Check(f"{label} resume per phase / at {REFERENCE}",
                      r["per_phase_ms"] / r["reference_per_phase_ms"], SCALING, "x"),
                Check(f"{label} gravity plan", r["plan_s"], PLAN_S, "s"),
                Check(f"{label} gravity plan --short", r["short_s"], SHORT_S, "s"),
                Check(f"{label} peak RSS", rss, RSS_MB, "MB")]
        line = (f"big {store} phases={phases}: `operation create` {mine[0].inline()} | "
                f"`plan resume`{' --local' if store == 'etcd' else ''} wall_s={r['resume_s']:.1f} "
                f"per_phase_ms={r['per_phase_ms']:.3f} vs {r['reference_per_phase_ms']:.3f} at "
                f"{REFERENCE}: {mine[1].inline()} (start-up {r['resume_first_s'] or 0:.2f}s) | "
                f"`gravity plan` {mine[2].inline()} | `--short` {mine[3].inline()} | peak RSS "
                f"{mine[4].inline()} (create {r['create_rss_mb']:.0f}, resume "
                f"{r['resume_rss_mb']:.0f}, plan {r['plan_rss_mb']:.0f})")
        if "max_request_bytes" in r:
            size = Check(f"{label} largest etcd request", r["max_request_bytes"],
                         ETCD_REQUEST_BYTES, " B")
            mine.append(size)
            line += (f" | largest etcd request {size.inline()} ({r['largest_request']}), "
                     f"largest value {r['max_value_bytes']} B")
        checks += mine
        print(line, flush=True)
    results["big"] = rows
    return checks
