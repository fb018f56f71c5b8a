"""The plan as a DAG: each phase has an entry and an exit node, so edges stay O(n). Held as two
adjacency dicts (what the scheduler walks); a networkx DiGraph of them is built when a query needs
networkx (cycles, ancestors/descendants, lexicographic order, export). No I/O.

A leaf's entry and exit are the same node. For a composite C: entry(C) -> entry(child)
and exit(child) -> exit(C). A `requires: [D]` on phase A adds exit(D) -> entry(A); under a
parent with `parallel: 1`, exit(previous sibling) -> entry(next sibling). The top level
behaves like a composite whose parallelism is the plan's.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from engine.model import LOCAL_NODE, PhaseSpec

if TYPE_CHECKING:  # networkx is imported when a query needs it, not by every command
    import networkx as nx

ROOT = ""
Adjacency = dict[str, dict[str, None]]  # node -> its neighbours, in the order edges were added


def entry(phase_id: str) -> str:
    return f"{phase_id}@in"


def exit_(phase_id: str) -> str:
    return f"{phase_id}@out"


def phase_of(node: str) -> str:
    """The phase ID a graph node belongs to."""
    return node.rsplit("@", 1)[0]


@dataclass
class PlanGraph:
    """Index over a plan's specs: hierarchy, ordering DAG and the queries the rules need.

    `succ` and `pred` hold the DAG's edges both ways; nodes are in the order they were first
    named (as networkx would hold them), so every order derived from them is the same on
    every load of the plan.
    """

    specs: Mapping[str, PhaseSpec]
    root_parallel: int = 1
    order: tuple[str, ...] = ()

    @classmethod
    def build(cls, specs: Sequence[PhaseSpec], root_parallel: int = 1) -> PlanGraph:
        """Index the specs; the DAG's edges are made on first use (`gravity plan` shows a
        plan without them). Unknown `requires` must have been rejected before (planfile)."""
        return cls(specs={s.id: s for s in specs}, root_parallel=root_parallel,
                   order=tuple(s.id for s in specs))

    @cached_property
    def succ(self) -> Adjacency:
        """Each node's successors (the DAG's edges, made with `pred` on first use)."""
        return self._link()[0]

    @cached_property
    def pred(self) -> Adjacency:
        """Each node's predecessors."""
        return self._link()[1]

    def _link(self) -> tuple[Adjacency, Adjacency]:
        succ: Adjacency = {}
        pred: Adjacency = {}
        by_id = self.specs

        def edge(u: str, v: str) -> None:
            if u not in succ:
                succ[u], pred[u] = {}, {}
            if v not in succ:
                succ[v], pred[v] = {}, {}
            succ[u][v] = None
            pred[v][u] = None

        for phase_id in self.order:
            s = by_id[phase_id]
            if s.children:
                node_in, node_out = entry(s.id), exit_(s.id)
                for node in (node_in, node_out):
                    if node not in succ:
                        succ[node], pred[node] = {}, {}
                for child in s.children:
                    leaf = not by_id[child].children
                    edge(node_in, child if leaf else entry(child))
                    edge(child if leaf else exit_(child), node_out)
            else:
                node_in = s.id
                if node_in not in succ:
                    succ[node_in], pred[node_in] = {}, {}
            for req in s.requires:
                if req in by_id:
                    edge(req if not by_id[req].children else exit_(req), node_in)
        for parent, children in self.children_of.items():
            parallel = self.root_parallel if parent == ROOT else by_id[parent].parallel
            if parallel == 1:
                for prev, nxt in itertools.pairwise(children):
                    edge(self.node_out(prev), self.node_in(nxt))
        self.__dict__["succ"], self.__dict__["pred"] = succ, pred
        return succ, pred

    @cached_property
    def dag(self) -> nx.DiGraph:
        """The DAG as a networkx DiGraph (built on first use, edges added in bulk)."""
        import networkx as nx

        dag = nx.DiGraph()
        dag.add_nodes_from(self.succ)
        dag.add_edges_from((u, v) for u, after in self.succ.items() for v in after)
        return dag

    def topological_order(self) -> list[str]:
        """Every node after all of its predecessors: Kahn's order, which is networkx's
        `topological_sort` (generation by generation, each in node order). Shorter than the
        node count only if the graph has a cycle."""
        waiting = {n: len(before) for n, before in self.pred.items()}
        ready = deque(n for n, count in waiting.items() if count == 0)
        out: list[str] = []
        succ = self.succ
        while ready:
            node = ready.popleft()
            out.append(node)
            for nxt in succ[node]:
                waiting[nxt] -= 1
                if waiting[nxt] == 0:
                    ready.append(nxt)
        return out

    def node_in(self, phase_id: str) -> str:
        return phase_id if self.specs[phase_id].is_leaf else entry(phase_id)

    def node_out(self, phase_id: str) -> str:
        return phase_id if self.specs[phase_id].is_leaf else exit_(phase_id)

    @cached_property
    def children_of(self) -> dict[str, tuple[str, ...]]:
        """Children per parent, the top level under ROOT."""
        out: dict[str, list[str]] = {ROOT: []}
        for phase_id in self.order:
            s = self.specs[phase_id]
            out.setdefault(s.id, [])
            out.setdefault(s.parent, []).append(s.id)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def leaves(self) -> tuple[str, ...]:
        return tuple(phase_id for phase_id in self.order if self.specs[phase_id].is_leaf)

    def ancestors(self, phase_id: str) -> list[str]:
        """Composite ancestors, nearest first."""
        out = []
        parent = self.specs[phase_id].parent
        while parent != ROOT:
            out.append(parent)
            parent = self.specs[parent].parent
        return out

    def node_of(self, phase_id: str) -> str:
        """Where a phase runs: its own `node`, else its nearest ancestor's, else the local
        node. Cached: the scheduler asks for every phase it starts."""
        cache = self._nodes
        node = cache.get(phase_id)
        if node is None:
            spec = self.specs[phase_id]
            if spec.node:
                node = spec.node
            elif spec.parent != ROOT:
                node = self.node_of(spec.parent)
            else:
                node = LOCAL_NODE
            cache[phase_id] = node
        return node

    @cached_property
    def _nodes(self) -> dict[str, str]:
        return {}

    def leaves_under(self, phase_id: str) -> list[str]:
        """The leaves of a subtree, in written order (the phase itself if it is a leaf)."""
        if self.specs[phase_id].is_leaf:
            return [phase_id]
        prefix = phase_id + "/"
        return [phase_id for phase_id in self.leaves if phase_id.startswith(prefix)]

    def find_cycle(self) -> list[str] | None:
        """Phase IDs along one cycle (first repeated at the end), or None when acyclic.
        One topological pass answers "acyclic"; networkx names the cycle when there is one."""
        if len(self.topological_order()) == len(self.succ):
            return None
        import networkx as nx

        try:
            edges = nx.find_cycle(self.dag)
        except nx.NetworkXNoCycle:
            return None
        path: list[str] = []
        for u, _v in edges:
            phase_id = phase_of(u)
            if not path or path[-1] != phase_id:
                path.append(phase_id)
        if path and path[0] != path[-1]:
            path.append(path[0])
        return path

    def prerequisites(self, phase_id: str) -> set[str]:
        """Leaves that must be completed before `phase_id` (a leaf or composite) may start.

        These are the leaves that reach entry(phase) through the DAG, i.e. everything
        the phase or any of its ancestors requires, directly or by sibling order.
        """
        import networkx as nx

        nodes = nx.ancestors(self.dag, self.node_in(phase_id))
        own = set(self.leaves_under(phase_id))
        return {n for n in nodes if n in self.specs and self.specs[n].is_leaf} - own

    def dependents(self, phase_ids: Iterable[str]) -> set[str]:
        """Leaves that (transitively) wait on any of the given phases, excluding the given ones."""
        import networkx as nx

        given: set[str] = set()
        reach: set[str] = set()
        for phase_id in phase_ids:
            given.update(self.leaves_under(phase_id))
            reach |= nx.descendants(self.dag, self.node_out(phase_id))
        return {n for n in reach if n in self.specs and self.specs[n].is_leaf} - given

    def leaf_topological_order(self) -> list[str]:
        """Leaves in an order that respects every dependency (written order breaks ties)."""
        import networkx as nx

        rank = {phase_id: i for i, phase_id in enumerate(self.order)}

        def key(node: str) -> int:
            return rank.get(phase_of(node), -1)

        return [n for n in nx.lexicographical_topological_sort(self.dag, key=key)
                if n in self.specs and self.specs[n].is_leaf]
