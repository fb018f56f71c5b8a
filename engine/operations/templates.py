"""Expands a phase template (plans/*.yaml, `kind: PlanTemplate`) over a context into a plan
document: `forEach` loops over node groups, `when` drops optional phases, `${…}` fills in data.

`${path?}` is optional: where the context lacks it, the list item or mapping key is dropped.
Substitution is data, never code: `${path}` standing alone keeps the value's type (a list, a
mapping, a number); inside a longer string only scalars are spliced, as text. Templates never
build shell commands, so no value can become one.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import PlanError, Problem

PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.\-]+)(\?)?\}")
TEMPLATE_KEYS = {"kind", "metadata", "parallel", "phases"}
DIRECTIVES = {"forEach", "as", "when"}
_DROP = object()


def plans_dir() -> Path:
    """Where templates live: env GRAVITY_PLANS_DIR, else the repository's plans/ directory."""
    env = os.environ.get("GRAVITY_PLANS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "plans"


class _Missing(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def lookup(context: Mapping[str, Any], path: str) -> Any:
    """Walk a dotted path through mappings (and list indexes); _Missing when a step is absent."""
    value: Any = context
    for step in path.split("."):
        if isinstance(value, Mapping) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            raise _Missing(path)
    return value


class _Expander:
    def __init__(self, file: str, context: Mapping[str, Any]) -> None:
        self.file = file
        self.context = context
        self.problems: list[Problem] = []

    def problem(self, field: str, message: str) -> None:
        self.problems.append(Problem(message, file=self.file, field=field))

    def substitute(self, value: Any, ctx: Mapping[str, Any], field: str) -> Any:
        if isinstance(value, str):
            whole = PLACEHOLDER.fullmatch(value)
            if whole:
                try:
                    return copy.deepcopy(lookup(ctx, whole.group(1)))
                except _Missing as exc:
                    if whole.group(2):  # ${path?}: optional, dropped when absent
                        return _DROP
                    self.problem(field, f"unknown placeholder ${{{exc.path}}}")
                    return value

            def splice(m: re.Match[str]) -> str:
                try:
                    found = lookup(ctx, m.group(1))
                except _Missing as exc:
                    self.problem(field, f"unknown placeholder ${{{exc.path}}}")
                    return m.group(0)
                if isinstance(found, Mapping | list):
                    self.problem(field, f"${{{m.group(1)}}} is structured data; it must stand "
                                 "alone as the whole value")
                    return m.group(0)
                return str(found)

            return PLACEHOLDER.sub(splice, value)
        if isinstance(value, list):
            items = [self.substitute(v, ctx, f"{field}[{i}]") for i, v in enumerate(value)]
            return [v for v in items if v is not _DROP]
        if isinstance(value, Mapping):
            pairs = {k: self.substitute(v, ctx, f"{field}.{k}") for k, v in value.items()}
            return {k: v for k, v in pairs.items() if v is not _DROP}
        return value

    def when(self, cond: Any, ctx: Mapping[str, Any], field: str) -> bool:
        paths = cond if isinstance(cond, list) else [cond]
        for path in paths:
            if not isinstance(path, str):
                self.problem(field, "expected a context path such as hooks.install")
                return False
            try:
                if lookup(ctx, path):
                    return True
            except _Missing:
                continue
        return False

    def phases(self, items: Any, ctx: Mapping[str, Any], field: str) -> list[dict[str, Any]]:
        if not isinstance(items, list):
            self.problem(field, "expected a list of phases")
            return []
        out: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            where = f"{field}[{i}]"
            if not isinstance(item, Mapping):
                self.problem(where, "expected a phase mapping")
                continue
            if "forEach" in item:
                group = item["forEach"]
                try:
                    members = lookup(ctx, f"groups.{group}")
                except _Missing:
                    self.problem(f"{where}.forEach", f"unknown node group {group!r}; expected "
                                 f"one of {', '.join(sorted(ctx.get('groups', {})))}")
                    continue
                var = item.get("as", "node")
                for member in members:
                    inner = dict(ctx)
                    inner[var] = member
                    out.extend(self.one(item, inner, where))
            else:
                out.extend(self.one(item, ctx, where))
        return out

    def one(self, item: Mapping[str, Any], ctx: Mapping[str, Any],
            field: str) -> list[dict[str, Any]]:
        if "when" in item and not self.when(item["when"], ctx, f"{field}.when"):
            return []
        phase: dict[str, Any] = {}
        for key, value in item.items():
            if key in DIRECTIVES:
                continue
            if key == "phases":
                children = self.phases(value, ctx, f"{field}.phases")
                if not children:
                    return []  # a group with nothing left in it is dropped
                phase["phases"] = children
            else:
                value = self.substitute(value, ctx, f"{field}.{key}")
                if value is not _DROP:
                    phase[key] = value
        return [phase]


def _ids(phases: list[dict[str, Any]], parent: str = "") -> set[str]:
    found: set[str] = set()
    for p in phases:
        phase_id = f"{parent}/{p.get('id')}"
        found.add(phase_id)
        found |= _ids(p.get("phases", []), phase_id)
    return found


def _prune_requires(phases: list[dict[str, Any]], known: set[str]) -> None:
    for p in phases:
        if "requires" in p and isinstance(p["requires"], list):
            p["requires"] = [r for r in p["requires"] if r in known]
            if not p["requires"]:
                del p["requires"]
        _prune_requires(p.get("phases", []), known)


def expand(template: Mapping[str, Any], context: Mapping[str, Any], *,
           file: str) -> dict[str, Any]:
    """A plan document (`kind: Plan`) from a template and its context."""
    x = _Expander(file, context)
    if template.get("kind") != "PlanTemplate":
        x.problem("kind", f"expected PlanTemplate, got {template.get('kind')!r}")
    for key in template:
        if key not in TEMPLATE_KEYS:
            x.problem(str(key), "unknown field")
    meta = template.get("metadata") or {}
    name = x.substitute(meta.get("name", ""), context, "metadata.name")
    phases = x.phases(template.get("phases"), context, "phases")
    parallel = x.substitute(template.get("parallel", 1), context, "parallel")
    if x.problems:
        raise PlanError(f"plan template {file} does not expand", x.problems,
                        hint="fix the template or the placeholders it uses")
    # Phases dropped by `when` (hooks the manifest leaves out) take their requirements along.
    _prune_requires(phases, _ids(phases))
    return {"kind": "Plan", "metadata": {"name": name}, "parallel": parallel, "phases": phases}


def load_template(name: str, directory: Path | None = None) -> tuple[dict[str, Any], str]:
    """Read plans/<name>.yaml; PlanError when it is missing or not YAML."""
    import yaml

    path = (directory or plans_dir()) / f"{name}.yaml"
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PlanError(f"cannot read plan template {path}: {exc.strerror or exc}",
                        [Problem("expected a readable template", file=str(path))],
                        hint="set GRAVITY_PLANS_DIR to the directory holding the templates"
                        ) from exc
    except yaml.YAMLError as exc:
        raise PlanError(f"plan template {path} is not valid YAML",
                        [Problem(str(exc), file=str(path))]) from exc
    if not isinstance(doc, Mapping):
        raise PlanError(f"plan template {path} is invalid",
                        [Problem("expected a mapping with kind: PlanTemplate", file=str(path))])
    return dict(doc), str(path)
