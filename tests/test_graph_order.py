"""The plan's DAG is held as adjacency dicts and handed to networkx only when a query needs it;
on any plan shape the orders the scheduler walks and the cycles creation names are networkx's.
"""

from __future__ import annotations

import itertools

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.graph import ROOT, PlanGraph, entry, exit_
from engine.model import PhaseSpec


def networkx_dag(g: PlanGraph) -> nx.DiGraph:
    """The DAG as the engine built it with networkx edge by edge before (the reference)."""
    dag = nx.DiGraph()
    for phase_id in g.order:
        s = g.specs[phase_id]
        dag.add_node(g.node_in(phase_id))
        dag.add_node(g.node_out(phase_id))
        for child in s.children:
            dag.add_edge(g.node_in(phase_id), g.node_in(child))
            dag.add_edge(g.node_out(child), g.node_out(phase_id))
        for req in s.requires:
            if req in g.specs:
                dag.add_edge(g.node_out(req), g.node_in(phase_id))
    for parent, children in g.children_of.items():
        parallel = g.root_parallel if parent == ROOT else g.specs[parent].parallel
        if parallel == 1:
            for prev, nxt in itertools.pairwise(children):
                dag.add_edge(g.node_out(prev), g.node_in(nxt))
    return dag


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[PhaseSpec], int]:
    """A random phase tree (composites and leaves, sequential or parallel) with random
    `requires` between any phases, cycles included."""
    specs: list[PhaseSpec] = []

    def grow(parent: str, depth: int) -> list[str]:
        ids = []
        for i in range(draw(st.integers(1, 4))):
            phase_id = f"{parent}/p{i}"
            ids.append(phase_id)
            at = len(specs)
            specs.append(PhaseSpec(phase_id, parent))
            if depth < 2 and draw(st.booleans()):
                children = grow(phase_id, depth + 1)
                specs[at] = PhaseSpec(phase_id, parent, children=tuple(children),
                                      parallel=draw(st.sampled_from([1, 2])))
            else:
                specs[at] = PhaseSpec(phase_id, parent, executor="noop")
        return ids

    grow("", 0)
    ids = [s.id for s in specs]
    out = []
    for s in specs:
        requires = tuple(draw(st.lists(st.sampled_from(ids), max_size=2, unique=True)))
        out.append(PhaseSpec(s.id, s.parent, children=s.children, executor=s.executor,
                             parallel=s.parallel, requires=requires))
    return out, draw(st.sampled_from([1, 3]))


@pytest.mark.slow  # 300 plans against networkx: out of --fast
@settings(max_examples=300, deadline=None)
@given(plan=plans())
def test_the_dag_its_order_and_its_cycles_are_networkx_s(plan: tuple[list[PhaseSpec], int]
                                                         ) -> None:
    specs, parallel = plan
    g = PlanGraph.build(specs, parallel)
    reference = networkx_dag(g)
    assert list(g.dag.nodes) == list(reference.nodes)
    assert set(g.dag.edges) == set(reference.edges)
    assert {n: list(after) for n, after in g.succ.items()} == \
        {n: list(reference.succ[n]) for n in reference}
    assert {n: list(before) for n, before in g.pred.items()} == \
        {n: list(reference.pred[n]) for n in reference}
    if nx.is_directed_acyclic_graph(reference):
        assert g.find_cycle() is None
        assert g.topological_order() == list(nx.topological_sort(reference))
    else:
        cycle = g.find_cycle()
        assert cycle is not None and cycle[0] == cycle[-1]
        reference_edges = nx.find_cycle(reference)
        assert cycle[0] == reference_edges[0][0].rsplit("@", 1)[0]


def test_a_composite_s_entry_and_exit_frame_its_children() -> None:
    g = PlanGraph.build([PhaseSpec("/c", "", children=("/c/a", "/c/b")),
                         PhaseSpec("/c/a", "/c", executor="noop"),
                         PhaseSpec("/c/b", "/c", executor="noop")])
    assert g.topological_order() == [entry("/c"), "/c/a", "/c/b", exit_("/c")]
