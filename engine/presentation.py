"""Turns plan views, operations and changelog records into text tables, JSON and YAML, for the
CLI and the dashboard alike. Pure formatting: it reads the view it is given, never the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from engine.model import ChangeRecord, Operation, OpState, PhaseState, State
from engine.redact import public_data
from engine.views import IDLE, PlanView

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
    return time.strftime("%a %b %d %H:%M:%S UTC", time.gmtime(ts))


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


def idle_note(view: PlanView) -> str | None:
    """IDLE for an active operation with a failed phase that no live process drives (its
    driver was stopped, died, or was a `plan execute` that ended): nothing will move it
    until an operator does. None otherwise, and when the view did not ask for its driver."""
    if view.operation.state is not OpState.ACTIVE or view.driven is not False:
        return None
    failed = any(view.derived[p] is State.FAILED for p in view.graph.leaves)
    return IDLE if failed else None


def retry_stale(view: PlanView, st: PhaseState | None) -> bool:
    """A failed phase whose note promises a retry that nobody will run.

    The scheduler notes "attempt N of M failed; retrying in …" and keeps the retry as a timer
    in its own process; once that process is gone (killed, Ctrl-C, its host lost) or the
    operation is closed, the retry never comes.
    """
    if st is None or st.state is not State.FAILED or not (st.note or "").startswith("attempt"):
        return False
    return view.operation.state.finished or view.driven is False


def phase_note(view: PlanView, st: PhaseState) -> str | None:
    """The note to show for a leaf: the stored one, unless it promises a retry that is off."""
    if not retry_stale(view, st):
        return st.note
    tried = (st.note or "").split(";", 1)[0]
    if view.operation.state.finished:
        return f"{tried}; its retry never ran: the operation is {view.operation.state.value}"
    return (f"{tried}; its retry will not run: the process driving the operation stopped; "
            f"continue with `{RESUME}`")


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join(("-" * len(h)).ljust(w) for h, w in zip(headers, widths, strict=True))
             .rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def plan_text(view: PlanView, *, short: bool = False,
              logs: Mapping[str, str] | None = None) -> str:
    """Gravity's plan table: phases indented by depth, state markers, then failed phases
    (with where each one's whole output is, from `logs`)."""
    op = view.operation
    g = view.graph
    latest = _latest_updates(view)
    rows = []
    for phase_id in g.order:
        spec = g.specs[phase_id]
        if short and spec.parent:
            continue
        state = view.derived[phase_id]
        label = LABELS[state]
        st = view.states.get(phase_id)
        if spec.is_leaf and st is not None and st.state is State.FAILED and st.note and \
                st.note.startswith("attempt"):
            if not retry_stale(view, st):
                label = f"{label} (retrying)"
            elif not op.state.finished:
                label = f"{label} (idle)"
        node = spec.node or ("" if not spec.is_leaf else g.node_of(phase_id))
        requires = ",".join(spec.requires) or "-"
        updated = latest[phase_id]
        rows.append([
            "  " * spec.depth + f"{MARKERS[state]} {phase_id}",
            spec.description or "-",
            label,
            node or "-",
            requires,
            when(updated),
        ])
    head = f"Operation {op.id} ({op.type}: {op.plan_name}) — {op.state.value}" + (
        f" ({op.note})" if op.note else "")
    idle = idle_note(view)
    if idle:
        head += f"; {idle}"
    out = [head, ""]
    out.append(table(rows, ["Phase", "Description", "State", "Node", "Requires", "Updated"]))
    rank = {phase_id: i for i, phase_id in enumerate(g.order)}
    failed = sorted(((p, s) for p, s in view.states.items()
                     if s.state is State.FAILED and s.error), key=lambda kv: rank[kv[0]])
    if failed:
        out.append("")
        for phase_id, st in failed:
            out.append(f"Phase {phase_id} failed (attempt {st.attempt}) on node {st.node or '-'}:")
            out.extend(f"    {line}" for line in st.error.splitlines()[-12:])
            note = phase_note(view, st)
            if note:
                out.append(f"    ({note})")
            if logs and phase_id in logs:
                out.append(f"    full output: {logs[phase_id]}")
    notes = sorted(((p, s) for p, s in view.states.items()
                    if s.note and s.state is State.COMPLETED and s.note.startswith("skipped")),
                   key=lambda kv: rank[kv[0]])
    if notes and not short:
        out.append("")
        out.extend(f"Phase {p}: {s.note}" for p, s in notes)
    return "\n".join(out)


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
