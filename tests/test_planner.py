"""The planner on its own — no threads, no store, no clock: which leaves may start, in which
order, how many at once per composite and per node, and what a finished or failed phase frees.
"""

from __future__ import annotations

from engine.graph import PlanGraph
from engine.model import PhaseState, State
from engine.planfile import plan_from_mapping
from engine.planner import Planner


def graph(*phases: dict, parallel: int = 1) -> PlanGraph:
    plan = plan_from_mapping({"kind": "Plan", "metadata": {"name": "p"}, "parallel": parallel,
                              "phases": list(phases)})
    return PlanGraph.build(plan.specs, plan.parallel)


def leaf(name: str, **extra: object) -> dict:
    return {"id": name, "executor": "noop", **extra}


def always(node: str) -> int:
    return 1


def drain(p: Planner, budget: int = 100) -> list[str]:
    """Run the plan to its end one wave at a time; the order phases were started in."""
    order: list[str] = []
    while True:
        wave = [phase_id for phase_id, _ in p.pick(budget, always, lambda phase_id: None)]
        if not wave:
            return order
        order += wave
        for phase_id in wave:
            p.stopped(phase_id)
            p.completed(phase_id)


def test_a_chain_starts_one_phase_at_a_time_in_written_order() -> None:
    g = graph(leaf("a"), leaf("b"), leaf("c"))
    p = Planner(g, {}, g.leaves, backward=False, force=False)
    assert [phase_id for phase_id, _ in p.pick(10, always, lambda _: None)] == ["/a"]
    assert p.pick(10, always, lambda _: None) == []  # /b waits for /a
    p.stopped("/a")
    p.completed("/a")
    assert [phase_id for phase_id, _ in p.pick(10, always, lambda _: None)] == ["/b"]


def test_a_rollback_walks_the_dag_backwards() -> None:
    g = graph(leaf("a"), leaf("b"), leaf("c"))
    done = {phase_id: PhaseState(phase_id, state=State.COMPLETED) for phase_id in g.leaves}
    p = Planner(g, done, g.leaves, backward=True, force=False)
    assert drain(p) == ["/c", "/b", "/a"]


def test_a_parallel_composite_runs_at_most_its_limit() -> None:
    g = graph({"id": "g", "parallel": 2, "phases": [leaf(f"p{i}") for i in range(5)]},
              leaf("after"))
    p = Planner(g, {}, g.leaves, backward=False, force=False)
    first = [phase_id for phase_id, _ in p.pick(10, always, lambda _: None)]
    assert first == ["/g/p0", "/g/p1"]
    p.stopped("/g/p0")
    p.completed("/g/p0")
    assert [phase_id for phase_id, _ in p.pick(10, always, lambda _: None)] == ["/g/p2"]
    for phase_id in ("/g/p1", "/g/p2"):
        p.stopped(phase_id)
        p.completed(phase_id)
    assert drain(p) == ["/g/p3", "/g/p4", "/after"]


def test_a_named_node_runs_one_phase_at_a_time_unless_its_composite_says_otherwise() -> None:
    g = graph({"id": "n", "parallel": 3, "phases": [leaf("a", node="n1"), leaf("b", node="n1"),
                                                     leaf("c", node="n2")]},
              {"id": "m", "node": "n3", "parallel": 2, "phases": [leaf("x"), leaf("y")]},
              parallel=2)
    p = Planner(g, {}, g.leaves, backward=False, force=False)
    wave = [phase_id for phase_id, _ in p.pick(10, always, lambda _: None)]
    # /n/b waits for /n/a (same node); /m's children may overlap on n3, as /m says.
    assert wave == ["/n/a", "/n/c", "/m/x", "/m/y"]
    p.stopped("/n/a")
    p.completed("/n/a")
    assert [phase_id for phase_id, _ in p.pick(10, always, lambda _: None)] == ["/n/b"]


def test_a_node_without_a_runner_is_parked_and_its_slot_kept_free() -> None:
    g = graph({"id": "g", "parallel": 2, "phases": [leaf("a", node="gone"), leaf("b"),
                                                     leaf("c")]})
    parked: list[str] = []
    p = Planner(g, {}, g.leaves, backward=False, force=False)
    starts = p.pick(10, lambda node: None if node == "gone" else 4, parked.append)
    assert parked == ["/g/a"]
    assert starts == [("/g/b", 4), ("/g/c", 4)]
    p.again("/g/a")  # its runner appeared
    p.stopped("/g/b")
    p.completed("/g/b")
    assert p.pick(10, always, parked.append) == [("/g/a", 1)]


def test_completed_leaves_are_skipped_and_hold_nobody_up() -> None:
    g = graph(leaf("a"), leaf("b"))
    states = {"/a": PhaseState("/a", state=State.COMPLETED)}
    p = Planner(g, states, g.leaves, backward=False, force=False)
    assert p.skipped == ["/a"]
    assert drain(p) == ["/b"]
    forced = Planner(g, states, g.leaves, backward=False, force=True)
    assert forced.skipped == [] and drain(forced) == ["/a", "/b"]


def test_a_phase_given_up_frees_its_composite_slot_but_not_its_dependents() -> None:
    g = graph({"id": "g", "parallel": 1, "phases": [leaf("a"), leaf("b")]},
              {"id": "h", "parallel": 2, "phases": [leaf("x"), leaf("y"), leaf("z")]},
              parallel=2)
    p = Planner(g, {}, g.leaves, backward=False, force=False)
    wave = [phase_id for phase_id, _ in p.pick(10, always, lambda _: None)]
    assert wave == ["/g/a", "/h/x", "/h/y"]
    p.stopped("/h/x")
    p.given_up("/h/x")
    assert [phase_id for phase_id, _ in p.pick(10, always, lambda _: None)] == ["/h/z"]
    assert "/g/b" in p.not_done() and "/h/x" in p.not_done()


def test_an_adopted_phase_is_never_started_again() -> None:
    g = graph(leaf("a", node="n1"), leaf("b", node="n1"), parallel=2)
    p = Planner(g, {}, g.leaves, backward=False, force=False)
    p.adopt("/a")
    assert p.pick(10, always, lambda _: None) == []  # n1 is busy with the adopted /a
    p.stopped("/a")
    p.completed("/a")
    assert p.pick(10, always, lambda _: None) == [("/b", 1)]
