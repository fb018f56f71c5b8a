"""The targets of issue 7 and how figures are checked, printed, tabulated and plotted.
Targets are judged here, from measured figures — never by timed assertions in tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RATIO_LOCAL = 2.0  # engine / floor, SQLite and etcd with in-process dispatch
RATIO_AGENTS = 3.0  # engine / floor with agents
SCALING = 1.3  # per-phase cost at 10,000 phases / at 1,000
PLAN_S = 0.5  # `gravity plan` on 10,000 phases (issue 18; was 1.0)
HELP_S = 0.3  # `gravity --help`
RSS_MB = 200.0  # the coordinator's peak RSS
DISPATCH_P50_MS = 20.0
DISPATCH_P99_MS = 100.0


@dataclass(frozen=True)
class Check:
    """One figure against its target: `value <= target`, or `value >= target` with
    `at_least` (a speed-up that must reach a factor)."""

    name: str
    value: float | None
    target: float
    unit: str = ""
    at_least: bool = False

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        met = self.value >= self.target if self.at_least else self.value <= self.target
        return "PASS" if met else "MISS"

    def inline(self) -> str:
        """`1.23 (<=2.0 PASS)` — the figure next to its target."""
        value = "-" if self.value is None else _number(self.value)
        target = f"{self.target:.0f}" if self.target >= 100_000 else f"{self.target:g}"
        sign = ">=" if self.at_least else "<="
        return f"{value}{self.unit} ({sign}{target}{self.unit} {self.verdict})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "target": self.target,
                "unit": self.unit, "at_least": self.at_least, "verdict": self.verdict}


def _digits(value: float) -> int:
    return 3 if abs(value) < 10 else 1


def _number(value: float) -> str:
    """3 decimals under 10, 1 above; whole numbers (byte counts) as they are."""
    if isinstance(value, int):
        return str(value)
    return f"{value:.{_digits(value)}f}"


def per_phase_ms(case: dict[str, Any]) -> float:
    return case["wall_s"] / case["phases"] * 1000


def floor_ms(case: dict[str, Any]) -> float:
    return case["floor_s"] / case["phases"] * 1000


def case_label(case: dict[str, Any]) -> str:
    return (f"store={case['store']} mode={case['mode']} phases={case['phases']} "
            f"nodes={case['nodes']}")


def case_checks(case: dict[str, Any]) -> list[Check]:
    """Ratio and RSS for every case; dispatch latency for agent cases. A case that did not
    finish (stalled or crashed) is one MISS: `unfinished 1 (<=0)`."""
    label = case_label(case)
    if "wall_s" not in case or "floor_s" not in case:
        return [Check(f"{label} unfinished", 1.0, 0.0)]
    limit = RATIO_AGENTS if case["mode"] == "agents" else RATIO_LOCAL
    checks = [Check(f"{label} ratio", case["wall_s"] / case["floor_s"], limit),
              Check(f"{label} rss_mb", case["rss_mb"], RSS_MB)]
    if case["mode"] == "agents":
        checks.append(Check(f"{label} dispatch_p50", case.get("ready_p50_ms"),
                            DISPATCH_P50_MS, "ms"))
        checks.append(Check(f"{label} dispatch_p99", case.get("ready_p99_ms"),
                            DISPATCH_P99_MS, "ms"))
    return checks


def case_line(case: dict[str, Any]) -> str:
    """The one line per case: figures, each target next to its figure."""
    checks = case_checks(case)
    if len(checks) == 1:
        why = case.get("stalled") or case.get("error") or "no result"
        return f"{case_label(case)} UNFINISHED ({checks[0].inline()}): {why}"
    line = (f"{case_label(case)} create_s={case['create_s']:.3f} wall_s={case['wall_s']:.3f} "
            f"per_phase_ms={per_phase_ms(case):.3f} floor_ms={floor_ms(case):.3f} "
            f"ratio={checks[0].inline()} rss_mb={checks[1].inline()}")
    if case["mode"] == "agents":
        line += (f" dispatch_p50={checks[2].inline()} dispatch_p99={checks[3].inline()}"
                 f" (coordinator->agent p50={_fmt(case.get('dispatch_p50_ms'))}ms"
                 f" p99={_fmt(case.get('dispatch_p99_ms'))}ms,"
                 f" {case.get('ready_samples', 0)} samples)"
                 f" cpu_s coordinator={_fmt(case.get('cpu_s'), 2)}"
                 f" agents={_fmt(case.get('agents_cpu_s'), 2)}")
    return line


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def finished(cases: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in cases if "wall_s" in c and "floor_s" in c]


def scaling_checks(cases: Iterable[dict[str, Any]]) -> list[Check]:
    """Per-phase cost at 10,000 phases over the cost at 1,000, per store, mode and nodes."""
    by_key: dict[tuple[str, str, int], dict[int, dict[str, Any]]] = {}
    for case in finished(cases):
        by_key.setdefault((case["store"], case["mode"], case["nodes"]), {})[case["phases"]] = case
    out = []
    for (store, mode, nodes), sizes in sorted(by_key.items()):
        if 1000 in sizes and 10000 in sizes:
            value = per_phase_ms(sizes[10000]) / per_phase_ms(sizes[1000])
            out.append(Check(f"store={store} mode={mode} nodes={nodes} per-phase 10000/1000",
                             value, SCALING))
    return out


def markdown_table(cases: list[dict[str, Any]]) -> str:
    """The per-case table for docs/performance.md."""
    head = ("| store | mode | phases | nodes | create s | wall s | per phase ms | floor ms | "
            "ratio | RSS MB | dispatch p50/p99 ms |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    rows = []
    for c in cases:
        if c not in finished([c]):
            rows.append(f"| {c['store']} | {c['mode']} | {c['phases']} | {c['nodes']} | "
                        f"{c.get('create_s', 0):.3f} | did not finish ✗ | | | | "
                        f"{c.get('rss_mb', 0):.0f} | |")
            continue
        ratio = c["wall_s"] / c["floor_s"]
        limit = RATIO_AGENTS if c["mode"] == "agents" else RATIO_LOCAL
        mark = "" if ratio <= limit else " ✗"
        lat = (f"{_fmt(c.get('ready_p50_ms'))} / {_fmt(c.get('ready_p99_ms'))}"
               if c["mode"] == "agents" else "")
        rows.append(f"| {c['store']} | {c['mode']} | {c['phases']} | {c['nodes']} | "
                    f"{c['create_s']:.3f} | {c['wall_s']:.3f} | {per_phase_ms(c):.3f} | "
                    f"{floor_ms(c):.3f} | {ratio:.2f}{mark} | {c['rss_mb']:.0f} | {lat} |")
    return head + "\n".join(rows) + "\n"


def plot(cases: list[dict[str, Any]], path: Path) -> None:
    """Per-phase cost against plan size, one line per store/mode/nodes, floors dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    series: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    floors: dict[str, dict[int, list[float]]] = {}
    for c in finished(cases):
        series.setdefault((c["store"], c["mode"], c["nodes"]), []).append(c)
        floors.setdefault(c["store"], {}).setdefault(c["phases"], []).append(floor_ms(c))
    colors = {"sqlite": "tab:blue", "etcd": "tab:orange"}
    markers = {1: "o", 4: "D", 100: "s", 1000: "^"}
    for (store, mode, nodes), points in sorted(series.items()):
        points.sort(key=lambda c: c["phases"])
        color = "tab:red" if mode == "agents" else colors.get(store, "gray")
        ax.plot([c["phases"] for c in points], [per_phase_ms(c) for c in points],
                marker=markers.get(nodes, "x"), color=color,
                alpha=1.0 if nodes != 1000 else 0.7,
                label=f"{store} {mode}, {nodes} node{'s' if nodes != 1 else ''}")
    for store, sizes in sorted(floors.items()):
        xs = sorted(sizes)
        ax.plot(xs, [min(sizes[x]) for x in xs], linestyle="--", color=colors.get(store, "gray"),
                label=f"{store} floor (2 bare writes/phase)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("phases in the plan")
    ax.set_ylabel("wall time per phase (ms)")
    ax.set_title("gravity engine: per-phase cost against plan size (2 cores)")
    save_chart(fig, ax, path)


def save_chart(fig: Any, ax: Any, path: Path) -> None:
    """Grid, the legend outside the axes, written to `path` (its directory made) and closed."""
    import matplotlib.pyplot as plt

    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
