"""`gravity plan graph`: the operation's phase DAG as Graphviz DOT or Mermaid, states as colours.
Builds a phase-level networkx graph from the plan view and writes the text by walking it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # pragma: no cover - typing only; keeps `gravity --help` light
    import networkx as nx

    from engine.views import PlanView

# state -> (fill, border). Composites use the border colour for their frame.
COLOURS: dict[str, tuple[str, str]] = {
    "completed": ("#b7e4c7", "#2d6a4f"),
    "failed": ("#f5a3a3", "#b71c1c"),
    "in_progress": ("#a9d6f5", "#1565c0"),
    "rolled_back": ("#d7bde2", "#6c3483"),
    "unstarted": ("#ffffff", "#8c8c8c"),
}


def phase_digraph(view: PlanView) -> nx.DiGraph:
    """A phase-level DiGraph: one node per phase (leaf or composite), one edge per ordering.

    Node attributes: `state`, `leaf`, `parent`, `label` (last ID segment), `description`;
    the graph attribute `children` maps each parent ("" for the top) to its children in order.
    Edge attribute `kind`: "requires" (written in the plan) or "order" (sibling order under a
    `parallel: 1` parent); when both hold, "requires" wins. The plan's entry/exit-node DAG is
    what the engine schedules on; this one is what an operator reads.
    """
    import itertools

    import networkx as nx

    from engine.graph import ROOT

    g = view.graph
    out = nx.DiGraph(children=g.children_of)
    for phase_id in g.order:
        spec = g.specs[phase_id]
        out.add_node(phase_id, state=view.derived[phase_id].value, leaf=spec.is_leaf,
                     parent=spec.parent, label=phase_id.rsplit("/", 1)[-1],
                     description=spec.description)
    for parent, children in g.children_of.items():
        parallel = g.root_parallel if parent == ROOT else g.specs[parent].parallel
        if parallel == 1:
            for prev, nxt in itertools.pairwise(children):
                out.add_edge(prev, nxt, kind="order")
    for phase_id in g.order:
        for req in g.specs[phase_id].requires:
            if req in g.specs:
                out.add_edge(req, phase_id, kind="requires")
    return out


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(**attrs: str) -> str:
    return "[" + ", ".join(f"{k}={_q(v)}" for k, v in attrs.items()) + "]"


def _children(dg: nx.DiGraph, parent: str) -> tuple[str, ...]:
    return dg.graph["children"].get(parent, ())


def _first_leaf(dg: nx.DiGraph, phase_id: str) -> str:
    while not dg.nodes[phase_id]["leaf"]:
        phase_id = _children(dg, phase_id)[0]
    return phase_id


def _last_leaf(dg: nx.DiGraph, phase_id: str) -> str:
    while not dg.nodes[phase_id]["leaf"]:
        phase_id = _children(dg, phase_id)[-1]
    return phase_id


def to_dot(view: PlanView) -> str:
    """Graphviz DOT: composites are clusters, leaves are filled boxes coloured by state.

    Edges into or out of a composite are drawn to its cluster (`compound=true` with
    `lhead`/`ltail`), anchored on its first/last leaf since DOT edges join nodes only.
    """
    dg = phase_digraph(view)
    op = view.operation
    title = f"{op.id} ({op.plan_name}) — {op.state.value}"
    lines = [
        f"// operation {op.id} ({op.type}: {op.plan_name}) — {op.state.value}",
        f"digraph {_q(op.id)} {{",
        "  compound=true;",
        "  rankdir=LR;",
        f"  label={_q(title)};",
        "  labelloc=t;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        '  edge [color="#555555"];',
    ]

    def emit(parent: str, indent: str) -> None:
        for phase_id in _children(dg, parent):
            d = dg.nodes[phase_id]
            fill, border = COLOURS[d["state"]]
            tooltip = f"{phase_id}: {d['description']}" if d["description"] else phase_id
            if d["leaf"]:
                lines.append(f"{indent}{_q(phase_id)} " + _attrs(
                    label=f"{d['label']}\n{d['state']}", fillcolor=fill, color=border,
                    tooltip=tooltip, state=d["state"]) + ";")
                continue
            lines.append(f"{indent}subgraph {_q('cluster_' + phase_id)} {{")
            inner = indent + "  "
            frame = f"{phase_id} ({d['state']})"
            lines.append(f"{inner}label={_q(frame)};")
            lines.append(f'{inner}style="rounded,filled"; fillcolor="#fafafa";')
            lines.append(f"{inner}color={_q(border)}; penwidth=2; tooltip={_q(tooltip)};")
            emit(phase_id, inner)
            lines.append(f"{indent}}}")

    emit("", "  ")
    for src, dst, kind in dg.edges(data="kind"):
        attrs: dict[str, Any] = {}
        tail, head = src, dst
        if not dg.nodes[src]["leaf"]:
            tail, attrs["ltail"] = _last_leaf(dg, src), "cluster_" + src
        if not dg.nodes[dst]["leaf"]:
            head, attrs["lhead"] = _first_leaf(dg, dst), "cluster_" + dst
        if kind == "order":
            attrs["style"] = "dashed"
        attrs["kind"] = kind
        lines.append(f"  {_q(tail)} -> {_q(head)} {_attrs(**attrs)};")
    lines.append("}")
    return "\n".join(lines)


def mermaid_ids(dg: nx.DiGraph) -> dict[str, str]:
    """Safe Mermaid identifiers for phase IDs (`/masters/node-1` -> `p_masters_node_1`)."""
    import re

    ids: dict[str, str] = {}
    used: set[str] = set()
    for phase_id in dg.nodes:
        base = "p" + re.sub(r"[^A-Za-z0-9]", "_", phase_id)
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        ids[phase_id] = name
    return ids


def to_mermaid(view: PlanView) -> str:
    """A Mermaid flowchart: composites are subgraphs, states are classes with fill colours."""
    dg = phase_digraph(view)
    ids = mermaid_ids(dg)
    op = view.operation
    lines = [f"%% operation {op.id} ({op.type}: {op.plan_name}) — {op.state.value}",
             "flowchart LR"]

    def label(text: str) -> str:
        return '"' + text.replace('"', "#quot;") + '"'

    def emit(parent: str, indent: str) -> None:
        for phase_id in _children(dg, parent):
            d = dg.nodes[phase_id]
            if d["leaf"]:
                lines.append(f"{indent}{ids[phase_id]}[{label(d['label'] + ' · ' + d['state'])}]")
                continue
            title = label(phase_id + ' · ' + d['state'])
            lines.append(f"{indent}subgraph {ids[phase_id]} [{title}]")
            emit(phase_id, indent + "  ")
            lines.append(f"{indent}end")

    emit("", "  ")
    for src, dst, kind in dg.edges(data="kind"):
        arrow = "-.->" if kind == "order" else "-->"
        lines.append(f"  {ids[src]} {arrow} {ids[dst]}")
    for state, (fill, border) in COLOURS.items():
        lines.append(f"  classDef {state} fill:{fill},stroke:{border},color:#111111")
    by_state: dict[str, list[str]] = {}
    for phase_id, d in dg.nodes(data=True):
        if d["leaf"]:
            by_state.setdefault(d["state"], []).append(ids[phase_id])
        else:
            _fill, border = COLOURS[d["state"]]
            lines.append(f"  style {ids[phase_id]} fill:#fafafa,stroke:{border},stroke-width:2px")
    for state, names in by_state.items():
        lines.append(f"  class {','.join(names)} {state}")
    return "\n".join(lines)


@click.command()
@click.option("--operation-id", default=None,
              help="Operation to draw (default: the active operation, else the most recent).")
@click.option("-o", "--output", type=click.Choice(["dot", "mermaid"]), default="dot",
              show_default=True, help="Graphviz DOT (render with `dot -Tsvg`) or Mermaid.")
@click.pass_obj
def graph(obj: Any, operation_id: str | None, output: str) -> None:
    """Print the operation's phase graph with each phase coloured by its state.

    \b
    Colours: green completed, red failed, blue in progress, purple rolled back,
    white unstarted. Solid edges are `requires`, dashed edges sibling order.
    Composites are drawn as frames around their phases.

    \b
    Example:
      gravity plan graph | dot -Tsvg > plan.svg
    """
    from engine.views import plan_view, resolve_operation

    store = obj.store()
    view = plan_view(store, resolve_operation(store, operation_id))
    click.echo(to_dot(view) if output == "dot" else to_mermaid(view))
