"""Turns plan views, operations and changelog records into text tables, JSON and YAML, for the
CLI and the dashboard alike. Pure formatting: it reads the view it is given, never the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Protocol

from engine.fsm import derive
from engine.model import LOCAL_NODE, ChangeRecord, Operation, OpState, PhaseSpec, PhaseState, State
from engine.redact import public_data
from engine.views import IDLE, OutlineView, PlanView

MARKERS = {
    State.COMPLETED: "✓",
    State.FAILED: "×",
    State.IN_PROGRESS: "→",
    State.ROLLED_BACK: "⤺",
    State.UNSTARTED: "*",
}
LABELS = {
    State.COMPLETED: "Completed",
    State.FAILED: "Failed",
    State.IN_PROGRESS: "In Progress",
    State.ROLLED_BACK: "Rolled Back",
    State.UNSTARTED: "Unstarted",
}


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    second = int(ts)
    shown = _WHEN.get(second)
    if shown is None:  # phases finish many to a second: each second is formatted once
        shown = _WHEN[second] = time.strftime("%a %b %d %H:%M:%S UTC", time.gmtime(ts))
    return shown


_WHEN: dict[int, str] = {}


def _latest_updates(view: PlanView) -> dict[str, float]:
    """Last update time of every phase: a leaf's own, a composite's newest leaf's (one pass)."""
    g = view.graph
    latest: dict[str, float] = {}
    for phase_id in reversed(g.order):
        spec = g.specs[phase_id]
        if spec.is_leaf:
            st = view.states.get(phase_id)
            latest[phase_id] = st.updated if st else 0.0
        else:
            latest[phase_id] = max((latest[c] for c in spec.children), default=0.0)
    return latest


RESUME = "gravity plan resume"


class Driven(Protocol):
    """What the notes below read of a plan view: the operation and whether it is driven."""

    @property
    def operation(self) -> Operation: ...

    @property
    def driven(self) -> bool | None: ...


def idle_note(view: PlanView) -> str | None:
    """IDLE for an active operation with a failed phase that no live process drives (its
    driver was stopped, died, or was a `plan execute` that ended): nothing will move it
    until an operator does. None otherwise, and when the view did not ask for its driver."""
    if not _idle_possible(view):
        return None
    failed = any(view.derived[p] is State.FAILED for p in view.graph.leaves)
    return IDLE if failed else None


def _idle_possible(view: Driven) -> bool:
    return view.operation.state is OpState.ACTIVE and view.driven is False


def retry_stale(view: Driven, st: PhaseState | None) -> bool:
    """A failed phase whose note promises a retry that nobody will run.

    The scheduler notes "attempt N of M failed; retrying in …" and keeps the retry as a timer
    in its own process; once that process is gone (killed, Ctrl-C, its host lost) or the
    operation is closed, the retry never comes.
    """
    if st is None or st.state is not State.FAILED or not (st.note or "").startswith("attempt"):
        return False
    return view.operation.state.finished or view.driven is False


def phase_note(view: Driven, st: PhaseState) -> str | None:
    """The note to show for a leaf: the stored one, unless it promises a retry that is off."""
    if not retry_stale(view, st):
        return st.note
    tried = (st.note or "").split(";", 1)[0]
    if view.operation.state.finished:
        return f"{tried}; its retry never ran: the operation is {view.operation.state.value}"
    return (f"{tried}; its retry will not run: the process driving the operation stopped; "
            f"continue with `{RESUME}`")


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(map(len, column)) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join(("-" * len(h)).ljust(w) for h, w in zip(headers, widths, strict=True))
             .rstrip()]
    line = "  ".join(f"{{:<{w}}}" for w in widths).format  # one call per row
    lines.extend(line(*r).rstrip() for r in rows)
    return "\n".join(lines)


def _row(view: Driven, spec: PhaseSpec, state: State, st: PhaseState | None, node: str,
         updated: float) -> list[str]:
    """One line of the plan table."""
    label = LABELS[state]
    if spec.is_leaf and st is not None and st.state is State.FAILED and st.note and \
            st.note.startswith("attempt"):
        if not retry_stale(view, st):
            label = f"{label} (retrying)"
        elif not view.operation.state.finished:
            label = f"{label} (idle)"
    return ["  " * spec.depth + f"{MARKERS[state]} {spec.id}", spec.description or "-", label,
            node or "-", ",".join(spec.requires) or "-", when(updated)]


def _head(view: Driven, idle: str | None) -> str:
    op = view.operation
    head = f"Operation {op.id} ({op.type}: {op.plan_name}) — {op.state.value}" + (
        f" ({op.note})" if op.note else "")
    return head + (f"; {idle}" if idle else "")


def _failures(view: Driven, failed: list[PhaseState],
              logs: Mapping[str, str] | None) -> list[str]:
    """The failed phases' lines under the table, `failed` in written order."""
    out: list[str] = []
    if failed:
        out.append("")
    for st in failed:
        phase_id = st.phase_id
        out.append(f"Phase {phase_id} failed (attempt {st.attempt}) on node {st.node or '-'}:")
        out.extend(f"    {line}" for line in (st.error or "").splitlines()[-12:])
        note = phase_note(view, st)
        if note:
            out.append(f"    ({note})")
        if logs and phase_id in logs:
            out.append(f"    full output: {logs[phase_id]}")
    return out


def plan_text(view: PlanView, *, logs: Mapping[str, str] | None = None) -> str:
    """Gravity's plan table: phases indented by depth, state markers, then failed phases
    (with where each one's whole output is, from `logs`)."""
    g = view.graph
    latest = _latest_updates(view)
    rows = []
    for phase_id in g.order:
        spec = g.specs[phase_id]
        node = spec.node or ("" if not spec.is_leaf else g.node_of(phase_id))
        rows.append(_row(view, spec, view.derived[phase_id], view.states.get(phase_id), node,
                         latest[phase_id]))
    out = [_head(view, idle_note(view)), ""]
    out.append(table(rows, HEADERS))
    rank = {phase_id: i for i, phase_id in enumerate(g.order)}
    failed = sorted((s for s in view.states.values() if s.state is State.FAILED and s.error),
                    key=lambda s: rank[s.phase_id])
    out.extend(_failures(view, failed, logs))
    notes = sorted(((p, s) for p, s in view.states.items()
                    if s.note and s.state is State.COMPLETED and s.note.startswith("skipped")),
                   key=lambda kv: rank[kv[0]])
    if notes:
        out.append("")
        out.extend(f"Phase {p}: {s.note}" for p, s in notes)
    return "\n".join(out)


def outline_text(view: OutlineView, *, logs: Mapping[str, str] | None = None) -> str:
    """`gravity plan --short`: `plan_text`'s rows of the top-level phases and its failed
    phases, from the Outline alone, without the whole plan."""
    o = view.outline
    rows = []
    for spec in o.specs:
        node = spec.node or ("" if not spec.is_leaf else LOCAL_NODE)
        rows.append(_row(view, spec, derive(o.below(spec.id)), o.states.get(spec.id), node,
                         o.updated.get(spec.id, 0.0)))
    failed = any(c.get(State.FAILED) for c in o.counts.values())
    idle = IDLE if failed and _idle_possible(view) else None
    out = [_head(view, idle), "", table(rows, HEADERS)]
    out.extend(_failures(view, list(o.failed), logs))
    return "\n".join(out)


HEADERS = ["Phase", "Description", "State", "Node", "Requires", "Updated"]


def _phase_dict(view: PlanView, phase_id: str) -> dict[str, Any]:
    g = view.graph
    spec = g.specs[phase_id]
    d: dict[str, Any] = {
        "id": phase_id,
        "description": spec.description,
        "state": view.derived[phase_id].value,
        # Where a leaf runs; a composite only has the node it declares (as the plan table).
        "node": g.node_of(phase_id) if spec.is_leaf else spec.node,
        "requires": list(spec.requires),
    }
    if spec.is_leaf:
        st = view.states.get(phase_id, PhaseState(phase_id))
        d.update(executor=spec.executor, attempt=st.attempt, version=st.version,
                 action=st.action.value, updated=st.updated or None, error=st.error,
                 note=phase_note(view, st), owner=st.owner)
    else:
        d["parallel"] = spec.parallel
        d["phases"] = [_phase_dict(view, c) for c in spec.children]
    return d


def operation_dict(op: Operation) -> dict[str, Any]:
    """The operation record to show: its values redacted (keys kept, every value "***").
    Values may hold secrets: hooks read them from their values file, displays never."""
    doc = op.to_dict()
    doc["data"] = public_data(doc["data"])
    return doc


def plan_document(view: PlanView) -> dict[str, Any]:
    """The full tree with states, for -o json / -o yaml."""
    op = view.operation
    roots = view.graph.children_of.get("", ())
    leaves = view.graph.leaves
    counts = {s.value: 0 for s in State}
    for p in leaves:
        counts[view.derived[p].value] += 1
    doc: dict[str, Any] = {
        "operation": operation_dict(op),
        "progress": {"leaves": len(leaves), **counts},
        "phases": [_phase_dict(view, r) for r in roots],
    }
    if view.driven is not None:
        doc["driven"] = view.driven
    return doc


def dump(doc: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False)
    import yaml

    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).rstrip()


def operations_text(ops: list[Operation], active: str | None) -> str:
    rows = [[o.id + (" *" if o.id == active else ""), o.type, o.plan_name, o.state.value,
             when(o.created), when(o.updated)] for o in ops]
    return table(rows, ["ID", "Type", "Plan", "State", "Created", "Updated"])


def record_line(rec: ChangeRecord) -> str:
    """One changelog record as a timestamped line, in the same form as the console log."""
    ts = time.strftime("%H:%M:%S", time.gmtime(rec.at))
    line = (f"{ts} {rec.phase_id}: {rec.from_state.value} -> {rec.to_state.value} "
            f"({rec.action.value}, node {rec.node or '-'}, attempt {rec.attempt})")
    if rec.error:
        line += " error: " + rec.error.splitlines()[0]
    if rec.note:
        line += f" [{rec.note}]"
    return line


def endpoint_lines(record: Mapping[str, Any]) -> list[str]:
    """The application's endpoints as its manifest lists them (shown after install and by
    `gravity status`)."""
    endpoints = (record.get("image_facts") or {}).get("endpoints") or []
    lines = ["Endpoints:"] if endpoints else []
    for e in endpoints:
        where = f" (service {e['service']})" if e.get("service") else ""
        lines.append(f"  {e['name']}{where}" + (f": {e['description']}"
                                                 if e.get("description") else ""))
    return lines


def progress_line(view: PlanView) -> str:
    leaves = view.graph.leaves
    done = sum(1 for p in leaves if view.derived[p] is State.COMPLETED)
    failed = [p for p in leaves if view.derived[p] is State.FAILED]
    running = [p for p in leaves if view.derived[p] is State.IN_PROGRESS]
    text = f"{done}/{len(leaves)} phases completed"
    if running:
        text += f", {len(running)} running ({', '.join(running[:3])})"
    if failed:
        text += f", {len(failed)} failed ({', '.join(failed[:3])})"
    return text
