"""The run's user-level summary: every target as a Markdown table row, and the chart of per-phase
cost against plan size for both stores, their raw floors, agents, hosts and the peers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import save_chart


def user_table(results: dict[str, Any]) -> str:
    """| target | measured | verdict | — one row per check of the run, in order."""
    rows = ["| target | measured (target) | verdict |", "|---|---|---|"]
    for c in results.get("checks", []):
        value = c["value"]
        shown = "-" if value is None else (f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}")
        sign = ">=" if c.get("at_least") else "<="
        rows.append(f"| {c['name']} | {shown}{c['unit']} ({sign} {c['target']:g}{c['unit']}) | "
                    f"{c['verdict']} |")
    return "\n".join(rows) + "\n"


def series(results: dict[str, Any]) -> list[tuple[str, dict[str, Any], list[tuple[int, float]]]]:
    """(label, line style, [(phases, ms per phase)]) for every measured line of the chart."""
    user = results.get("user", {})
    big = {r["store"]: r for r in results.get("big", [])}
    out: list[tuple[str, dict[str, Any], list[tuple[int, float]]]] = []

    def per(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
        return sorted((r["phases"], r[key] / r["phases"] * 1000) for r in rows if key in r)

    sq, et = user.get("sqlite_resume", []), user.get("etcd_local", [])
    sq_big = [{"phases": big["sqlite"]["phases"], "wall_s": big["sqlite"]["resume_s"]}] \
        if "sqlite" in big else []
    et_big = [{"phases": big["etcd"]["phases"], "wall_s": big["etcd"]["resume_s"]}] \
        if "etcd" in big else []
    blue, orange = "tab:blue", "tab:orange"
    out.append(("gravity plan resume, SQLite", {"color": blue, "marker": "o"},
                per(sq + sq_big, "wall_s")))
    out.append(("raw floor, SQLite (whole process)", {"color": blue, "linestyle": "--"},
                per(sq, "floor_process_s")))
    out.append(("gravity plan resume --local, etcd", {"color": orange, "marker": "s"},
                per(et + et_big, "wall_s")))
    out.append(("raw floor, etcd / pyetcd (whole process)",
                {"color": orange, "linestyle": "--"}, per(et, "floor_process_s")))
    agents = user.get("etcd_agents")
    if agents:
        out.append((f"gravity on {agents['agents']} agents, etcd", {"color": "tab:red",
                                                                    "marker": "D"},
                    per([agents], "wall_s")))
    scale = results.get("scale", [])
    if scale:
        out.append(("agents 4 / 16 / 32 (100 phases each)",
                    {"color": "tab:purple", "marker": "v"}, per(scale, "wall_s")))
    hosts = results.get("hosts", {})
    if "wall_s" in hosts:
        out.append((f"{hosts['hosts']} hosts in namespaces, agents",
                    {"color": "tab:brown", "marker": "P"}, per([hosts], "wall_s")))
    chain = user.get("chain")
    if chain:
        n = chain["tasks"]
        out.append(("gravity chain (whole process)", {"color": "tab:green", "marker": "*"},
                    [(n, chain["gravity_s"] / n * 1000)]))
        out.append(("Luigi chain (whole process)", {"color": "tab:gray", "marker": "*"},
                    [(n, chain["luigi_process_s"] / n * 1000)]))
    for row in results.get("peers", {}).get("rows", []):
        if row.get("system") != "gravity" and "per_task_ms" in row:
            out.append((f"{row['system']} {row['shape']} (in-process)",
                        {"color": "tab:gray" if row["system"] == "luigi" else "tab:olive",
                         "marker": "x" if row["shape"] == "chain" else "+"},
                        [(row["tasks"], row["per_task_ms"])]))
    return [s for s in out if s[2]]


def chart(results: dict[str, Any], path: Path) -> None:
    """Per-phase cost (ms, log) against phases in the plan (log), one line per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for label, style, points in series(results):
        ax.plot([p for p, _ in points], [ms for _, ms in points], label=label,
                markersize=7, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("phases in the plan (tasks for the peers)")
    ax.set_ylabel("wall time per phase, ms (whole process unless marked)")
    when = results.get("machine", {}).get("when", "")
    ax.set_title(f"gravity as a user runs it, against the raw floors and peers ({when})",
                 fontsize=10)
    save_chart(fig, ax, path)
