"""Generated plans for the benchmarks: N no-op phases spread over M nodes, a chain and a fan-out.
Plans are plain plan documents (kind: Plan), validated by the engine like any plan file.
"""

from __future__ import annotations

from typing import Any


def node_name(index: int) -> str:
    """DNS-style node names `node-1`, `node-2`, … (the agents' names in mode=agents)."""
    return f"node-{index + 1}"


def phase_name(index: int) -> str:
    return f"p{index:05d}"


def spread_groups(phases: int, nodes: int) -> dict[int, list[int]]:
    """Phase indexes per node: phase i runs on node i mod M (so min(N, M) nodes get work)."""
    groups: dict[int, list[int]] = {}
    for i in range(phases):
        groups.setdefault(i % nodes, []).append(i)
    return groups


def spread_plan(phases: int, nodes: int, *, name: str = "bench") -> dict[str, Any]:
    """N no-op phases over M nodes: one composite per node holding its phases in order.

    The node composites run in parallel (the top level's `parallel` is their number), each
    node runs its own phases one after another — the shape of a real rolling operation,
    where every node is a sequence of steps and nodes proceed side by side.
    """
    groups = spread_groups(phases, nodes)
    return {
        "kind": "Plan",
        "metadata": {"name": name},
        "parallel": max(1, len(groups)),
        "phases": [
            {"id": f"n{g:04d}", "node": node_name(g),
             "phases": [{"id": phase_name(i), "executor": "noop"} for i in members]}
            for g, members in groups.items()
        ],
    }


def leaf_id(group: int, index: int) -> str:
    """The absolute ID of phase `index` in a spread plan (it lives under its node's group)."""
    return f"/n{group:04d}/{phase_name(index)}"


def chain_plan(tasks: int, *, name: str = "chain") -> dict[str, Any]:
    """`tasks` no-op phases, each after the previous one (top-level order with parallel 1)."""
    return {"kind": "Plan", "metadata": {"name": name},
            "phases": [{"id": phase_name(i), "executor": "noop"} for i in range(tasks)]}


def fanout_plan(tasks: int, *, name: str = "fanout") -> dict[str, Any]:
    """`tasks` independent no-op phases: a source, tasks-2 parallel phases, and a join."""
    middle = [{"id": phase_name(i), "executor": "noop", "requires": ["/source"]}
              for i in range(1, tasks - 1)]
    return {"kind": "Plan", "metadata": {"name": name}, "parallel": tasks,
            "phases": [{"id": "source", "executor": "noop"}, *middle,
                       {"id": "join", "executor": "noop",
                        "requires": [f"/{m['id']}" for m in middle]}]}
