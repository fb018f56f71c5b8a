"""Reads a plan (YAML file or mapping) into a validated `Plan`, reporting every problem at once.
Checks: shapes and types, IDs, durations, retry values, executors and their data, requires, cycles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from engine.durations import parse_duration
from engine.errors import PlanError, Problem
from engine.executors import Executor, registry
from engine.graph import PlanGraph
from engine.model import NO_RETRY, PhaseSpec, Plan, RetryPolicy
from engine.names import MAX_PHASE_ID, node_name_problem, phase_id_problem, segment_problem

PHASE_KEYS = {"id", "description", "phases", "executor", "data", "requires", "node",
              "parallel", "retry", "timeout"}
RETRY_KEYS = {"attempts", "initial", "factor", "max", "jitter"}
TOP_KEYS = {"kind", "apiVersion", "metadata", "phases", "parallel"}


class _Reader:
    """Walks the YAML tree collecting problems with their field paths."""

    def __init__(self, file: str | None) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.specs: list[PhaseSpec | None] = []  # None: a phase being read (its place kept)
        self.seen: dict[str, str] = {}

    def problem(self, field: str, message: str, phase: str | None = None) -> None:
        self.problems.append(Problem(message=message, file=self.file, field=field, phase=phase))

    def phases(self, items: object, parent: str, field: str) -> list[str]:
        if not isinstance(items, list) or not items:
            self.problem(field, "expected a non-empty list of phases", parent or None)
            return []
        ids = []
        for i, item in enumerate(items):
            phase_id = self.phase(item, parent, f"{field}[{i}]")
            if phase_id is not None:
                ids.append(phase_id)
        return ids

    def phase(self, item: object, parent: str, field: str) -> str | None:
        if not isinstance(item, Mapping):
            self.problem(field, "expected a mapping with at least `id`")
            return None
        if not PHASE_KEYS.issuperset(item):
            for key in item:
                if key not in PHASE_KEYS:
                    self.problem(f"{field}.{key}", f"unknown field; expected one of "
                                 f"{', '.join(sorted(PHASE_KEYS))}")
        segment = item.get("id")
        bad = segment_problem(segment)
        phase_id = f"{parent}/{segment}"
        if bad is None and len(phase_id) > MAX_PHASE_ID:  # the parent's segments are checked
            bad = phase_id_problem(phase_id)
        if bad is not None:
            self.problem(f"{field}.id", bad)
            return None
        if phase_id in self.seen:
            self.problem(f"{field}.id", f"duplicate phase ID (first defined at "
                         f"{self.seen[phase_id]})", phase_id)
            return None
        self.seen[phase_id] = field
        index = len(self.specs)
        self.specs.append(None)  # keeps pre-order: the children come after it

        description = item.get("description", "")
        if not isinstance(description, str):
            self.problem(f"{field}.description", "expected a string", phase_id)
            description = str(description)
        children: list[str] = []
        executor = item.get("executor")
        data = item.get("data", {})
        if "phases" in item:
            if executor is not None or "data" in item:
                self.problem(field, "a phase has either `phases` (composite) or `executor` "
                             "and `data` (leaf), not both", phase_id)
            children = self.phases(item["phases"], phase_id, f"{field}.phases")
            executor, data = None, {}
        else:
            if executor is None:
                self.problem(f"{field}.executor", "a leaf phase needs an executor "
                             "(or `phases` to be a composite)", phase_id)
            elif not isinstance(executor, str):
                self.problem(f"{field}.executor", "expected an executor name", phase_id)
                executor = None
            if data is None:
                data = {}
            if not isinstance(data, Mapping):
                self.problem(f"{field}.data", "expected a mapping", phase_id)
                data = {}
        requires = item.get("requires", [])
        if isinstance(requires, str):
            requires = [requires]
        if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
            self.problem(f"{field}.requires", "expected a list of absolute phase IDs", phase_id)
            requires = []
        for j, req in enumerate(requires):
            if not req.startswith("/"):
                self.problem(f"{field}.requires[{j}]",
                             f"expected an absolute phase ID starting with '/', got {req!r}",
                             phase_id)
        node = item.get("node")
        if node is not None and (bad := node_name_problem(node)) is not None:
            self.problem(f"{field}.node", bad, phase_id)
            node = None
        parallel = self.parallel(item.get("parallel", 1), f"{field}.parallel", phase_id)
        retry = NO_RETRY if "retry" not in item else \
            self.retry(item["retry"], f"{field}.retry", phase_id)
        timeout = None
        if item.get("timeout") is not None:
            try:
                timeout = parse_duration(item["timeout"])
                if timeout <= 0:
                    raise ValueError("expected a positive duration like 30s or 5m")
            except ValueError as exc:
                self.problem(f"{field}.timeout", str(exc), phase_id)
        self.specs[index] = PhaseSpec(
            id=phase_id, parent=parent, description=description, children=tuple(children),
            executor=executor, data=dict(data), requires=tuple(requires), node=node,
            parallel=parallel, retry=retry, timeout=timeout,
        )
        return phase_id

    def parallel(self, value: object, field: str, phase_id: str | None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.problem(field, f"expected a whole number >= 1, got {value!r}", phase_id)
            return 1
        return value

    def retry(self, value: object, field: str, phase_id: str) -> RetryPolicy:
        if value is None:
            return NO_RETRY
        if not isinstance(value, Mapping):
            self.problem(field, "expected a mapping with attempts, initial, factor, max, jitter",
                         phase_id)
            return RetryPolicy()
        for key in value:
            if key not in RETRY_KEYS:
                self.problem(f"{field}.{key}", "unknown field; expected one of "
                             f"{', '.join(sorted(RETRY_KEYS))}", phase_id)
        base = RetryPolicy()
        attempts = value.get("attempts", base.attempts)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            self.problem(f"{field}.attempts", f"expected a whole number >= 1, got {attempts!r}",
                         phase_id)
            attempts = base.attempts
        durations = {}
        for key in ("initial", "max"):
            try:
                durations[key] = parse_duration(value.get(key, getattr(base, key)))
            except ValueError as exc:
                self.problem(f"{field}.{key}", str(exc), phase_id)
                durations[key] = getattr(base, key)
        factor = value.get("factor", base.factor)
        if isinstance(factor, bool) or not isinstance(factor, int | float) or \
                not math.isfinite(factor) or factor < 1:
            self.problem(f"{field}.factor", f"expected a number >= 1, got {factor!r}", phase_id)
            factor = base.factor
        jitter = value.get("jitter", base.jitter)
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not (
            0 <= jitter <= 1
        ):
            self.problem(f"{field}.jitter", f"expected a fraction between 0 and 1, got "
                         f"{jitter!r}", phase_id)
            jitter = base.jitter
        if durations["max"] < durations["initial"]:
            self.problem(f"{field}.max", "expected max >= initial", phase_id)
        return RetryPolicy(attempts=attempts, initial=durations["initial"], factor=float(factor),
                           max=durations["max"], jitter=float(jitter))


def plan_from_mapping(doc: object, *, file: str | None = None,
                      check_executors: bool = True) -> Plan:
    """Validate a parsed plan document; PlanError lists every problem found."""
    r = _Reader(file)
    if not isinstance(doc, Mapping):
        raise PlanError(f"plan {file or ''} is invalid".replace("  ", " "),
                        [Problem("expected a mapping with kind: Plan", file=file)])
    for key in doc:
        if key not in TOP_KEYS:
            r.problem(str(key), f"unknown field; expected one of {', '.join(sorted(TOP_KEYS))}")
    if doc.get("kind") != "Plan":
        r.problem("kind", f"expected `Plan`, got {doc.get('kind')!r}")
    meta = doc.get("metadata")
    name = ""
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str) \
            or not meta.get("name"):
        r.problem("metadata.name", "expected a non-empty plan name")
    else:
        name = meta["name"]
    root_parallel = r.parallel(doc.get("parallel", 1), "parallel", None)
    r.phases(doc.get("phases"), "", "phases")
    specs: list[PhaseSpec] = r.specs  # type: ignore[assignment]  # every place filled now
    by_id = {s.id: s for s in specs}
    requiring = [s for s in specs if s.requires]
    for s in requiring:
        for req in s.requires:
            if req.startswith("/") and req not in by_id:
                r.problem(f"{r.seen[s.id]}.requires", f"unknown phase {req}", s.id)
    if check_executors:
        _check_executors(r, by_id)
    # Without `requires` the graph is nested series and parallel blocks: acyclic by its shape.
    if not r.problems and requiring:
        cycle = PlanGraph.build(specs, root_parallel).find_cycle()
        if cycle:
            r.problem("phases", "dependency cycle: " + " -> ".join(cycle))
    if r.problems:
        where = f" {file}" if file else ""
        raise PlanError(f"plan{where} is invalid ({len(r.problems)} problem"
                        f"{'s' if len(r.problems) != 1 else ''})", r.problems,
                        hint="fix the fields listed above; nothing was written")
    return Plan(name=name, specs=tuple(specs), parallel=root_parallel, source=file)


def _check_executors(r: _Reader, by_id: Mapping[str, PhaseSpec]) -> None:
    found: dict[str, Executor | None] = {}  # each name looked up once; None: unknown
    for s in by_id.values():
        name = s.executor
        if name is None:
            continue
        if name not in found:
            try:
                found[name] = registry.get(name)
            except KeyError:
                found[name] = None
        executor = found[name]
        if executor is None:
            known = registry.names()
            r.problem(f"{r.seen[s.id]}.executor",
                      f"unknown executor {name!r}; known: {', '.join(sorted(known))}", s.id)
            continue
        for message in executor.validate(s.data):
            r.problem(f"{r.seen[s.id]}.data", message, s.id)


def load_plan(path: Path | str) -> Plan:
    """Read and validate a plan file (within the YAML input bounds of engine.yamlinput)."""
    import yaml

    from engine import yamlinput

    path = Path(path)
    try:
        text = yamlinput.read(path).decode("utf-8")
        doc = yamlinput.load(text)
    except OSError as exc:
        raise PlanError(f"cannot read plan {path}: {exc.strerror or exc}",
                        [Problem("expected a readable YAML file", file=str(path))]) from exc
    except UnicodeDecodeError as exc:
        raise PlanError(f"plan {path} is not UTF-8 text",
                        [Problem(f"{exc.reason} at byte {exc.start}", file=str(path))]) from exc
    except yamlinput.TooLarge as exc:
        raise PlanError(f"plan {path} is too large", [Problem(str(exc), file=str(path))],
                        hint="write the repeated parts out or split the plan (see Limits in "
                        "docs/plan-format.md); nothing was written") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PlanError(f"plan {path} is not valid YAML",
                        [Problem(f"{getattr(exc, 'problem', None) or exc}{where}",
                                 file=str(path))]) from exc
    return plan_from_mapping(doc, file=str(path))
