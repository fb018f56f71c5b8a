"""The cluster's condition as `gravity status` states it — active, updating, degraded, stopped —
with the reasons, from the installed cluster, what the nodes report and the operations. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from engine.model import Operation, OpState
from engine.views import IDLE

PREFLIGHT_FAILED = "preflight failed"  # the note of an operation closed before any change


class ClusterState(StrEnum):
    """What the cluster is doing, as an operator asks at 3am."""

    ACTIVE = "active"  # installed, every node on its versions, nothing running
    UPDATING = "updating"  # an operation is changing it
    DEGRADED = "degraded"  # nodes on mixed versions, or an operation failed
    STOPPED = "stopped"  # the application was stopped (`gravity app stop`)


@dataclass(frozen=True)
class Condition:
    """The state and why: each reason a line an operator can act on."""

    state: ClusterState
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActiveRun:
    """The operation holding the cluster lock, as the store shows it now."""

    operation: Operation
    driven: bool  # a live process drives it
    failed: tuple[str, ...] = ()  # its failed phases
    running: bool = False  # a phase is in progress


def differing_nodes(expected: Mapping[str, str], reported: Mapping[str, Mapping[str, str]],
                    nodes: Sequence[str]) -> dict[str, dict[str, str]]:
    """Per node, the packages whose current version is not the cluster's (what it runs)."""
    out: dict[str, dict[str, str]] = {}
    for node in nodes:
        have = reported.get(node) or {}
        off = {pkg: have.get(pkg, "none") for pkg, version in expected.items()
               if have.get(pkg) != version}
        if off:
            out[node] = off
    return out


def condition(expected: Mapping[str, str], reported: Mapping[str, Mapping[str, str]],
              nodes: Sequence[str], *, stopped: bool, active: ActiveRun | None,
              last: Operation | None) -> Condition:
    """The cluster's state: an operation that runs (or could go on) makes it `updating`; one
    that failed and is idle, a node on other versions than the cluster's or a last operation
    closed as failed (not a failed preflight, which changed nothing) make it `degraded`; a
    stopped application `stopped`; else `active`."""
    reasons: list[str] = []
    if active is not None:
        op = active.operation
        what = f"operation {op.id} ({op.type})"
        if active.failed and not active.driven and not active.running:
            reasons.append(f"{what} failed at {', '.join(active.failed[:3])}: {IDLE}")
        elif active.driven or active.running:
            reasons.append(f"{what} is running")
        else:
            reasons.append(f"{what} is active: {IDLE}")
    for node, packages in differing_nodes(expected, reported, nodes).items():
        runs = ", ".join(f"{pkg} {version}" for pkg, version in packages.items())
        cluster = ", ".join(f"{pkg} {expected[pkg]}" for pkg in packages)
        reasons.append(f"node {node} runs {runs} (the cluster: {cluster})")
    if active is not None:
        failed_idle = active.failed and not active.driven and not active.running
        state = ClusterState.DEGRADED if failed_idle else ClusterState.UPDATING
        return Condition(state, tuple(reasons))
    if reasons:
        return Condition(ClusterState.DEGRADED, tuple(reasons))
    if last is not None and last.state is OpState.FAILED and last.note != PREFLIGHT_FAILED:
        return Condition(ClusterState.DEGRADED, (
            f"the last operation, {last.id} ({last.type}), was closed as failed"
            + (f" ({last.note})" if last.note else ""),))
    if stopped:
        return Condition(ClusterState.STOPPED, ("the application is stopped; `gravity app "
                                                "start` starts it",))
    return Condition(ClusterState.ACTIVE)


__all__ = ["IDLE", "ActiveRun", "ClusterState", "Condition", "condition", "differing_nodes"]
