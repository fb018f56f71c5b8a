"""The engine keeps the shape docs/architecture.md draws: no import cycle, no import that goes up
or sideways between layers, no module over MAX_LINES lines, and the layer table is the doc's.

Every `import` and `from … import` counts, wherever it stands: at the top, inside a function
(lazy loading for start-up speed is fine, but it is still a dependency) or under TYPE_CHECKING.
`importlib.import_module("engine.…")` with a literal name counts too.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "engine"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 450

# The layers, top to bottom: (row, name, modules). A module may import the modules of its own
# layer and of every layer in a lower row; layers that share a row are siblings that never
# import each other. `engine.store.*` stands for the package and every module in it; any other
# name for that one module. docs/architecture.md has the same table
# (test_the_doc_draws_these_layers).
LAYERS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "cli entry", ("engine.cli.main",)),
    (2, "cli commands", ("engine.cli.agent", "engine.cli.appdata", "engine.cli.cluster",
                         "engine.cli.dashboard", "engine.cli.events", "engine.cli.graph",
                         "engine.cli.license", "engine.cli.lifecycle", "engine.cli.manifest",
                         "engine.cli.operation", "engine.cli.plan", "engine.cli.status",
                         "engine.cli.store", "engine.cli.values", "engine.cli.version")),
    (3, "cli support", ("engine.cli", "engine.cli.ask", "engine.cli.background",
                        "engine.cli.completion", "engine.cli.context", "engine.cli.drive",
                        "engine.cli.params", "engine.cli.progress")),
    (3, "dashboard", ("engine.dashboard.*",)),
    (4, "operations", ("engine.operations.*", "engine.planfile")),
    (5, "service", ("engine.service", "engine.serving")),
    (6, "read model", ("engine.views", "engine.presentation")),
    (7, "scheduler", ("engine.scheduler", "engine.planner", "engine.retry")),
    (8, "dispatch, agent", ("engine.dispatch", "engine.agent", "engine.agent_lookout",
                            "engine.leases")),
    (9, "executors", ("engine.executors.*",)),
    (10, "agent protocol", ("engine.agent_protocol",)),
    (11, "fsm", ("engine.fsm",)),
    (11, "store", ("engine.store.*",)),
    (11, "event log", ("engine.events",)),
    (11, "inputs", ("engine.manifest.*", "engine.values", "engine.license")),
    (11, "content", ("engine.blobs.*", "engine.archives")),
    (12, "model", ("engine.model", "engine.graph", "engine.names", "engine.outline")),
    (13, "base", ("engine", "engine.errors", "engine.durations", "engine.redact",
                  "engine.yamlinput")),
]


@dataclass(frozen=True)
class Import:
    """One import statement of an engine module naming an engine module."""

    source: str
    target: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def engine_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The engine module an imported name lives in (the nearest enclosing one)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(node: ast.AST, source: str, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        assert node.level == 0, f"{source}:{node.lineno}: use absolute imports"
        base = node.module or ""
        # `from engine.store import sqlite` names a module; `from engine.store import Store`
        # names something in the package.
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                for a in node.names]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module" and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return [node.args[0].value]
    return []


def imports() -> list[Import]:
    """Every import of an engine module by an engine module, at any depth of the file."""
    modules = engine_modules()
    found = []
    for source, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for name in _imported_names(node, source, modules):
                if not name.startswith("engine"):
                    continue
                target = _resolve(name, modules)
                if target is not None and target != source:
                    found.append(Import(source, target, getattr(node, "lineno", 0)))
    return found


def _holds(entry: str, module: str) -> bool:
    if entry.endswith(".*"):
        package = entry[:-2]
        return module == package or module.startswith(package + ".")
    return module == entry


def layer_of(module: str) -> tuple[int, str] | None:
    """(row, layer name) of the LAYERS entry that holds `module`; an entry naming the module
    itself wins over a package's."""
    found = [(entry.endswith(".*"), row, name) for row, name, entries in LAYERS
             for entry in entries if _holds(entry, module)]
    return (min(found)[1], min(found)[2]) if found else None


def test_every_module_has_a_layer_and_every_layer_entry_a_module() -> None:
    modules = engine_modules()
    unplaced = [m for m in modules if layer_of(m) is None]
    assert not unplaced, ("modules in no layer; add them to LAYERS here and to the table in "
                          f"docs/architecture.md: {unplaced}")
    stale = [e for _, _, entries in LAYERS for e in entries
             if e.removesuffix(".*") not in modules]
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_no_import_cycle() -> None:
    graph = nx.DiGraph((i.source, i.target) for i in imports())
    cycles = [" -> ".join([*c, c[0]]) for c in nx.simple_cycles(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_no_import_goes_up_or_sideways() -> None:
    wrong = []
    for i in imports():
        here, there = layer_of(i.source), layer_of(i.target)
        if here is None or there is None or here == there or there[0] > here[0]:
            continue
        way = "up" if there[0] < here[0] else "sideways"
        wrong.append(f"{i.source}:{i.line} imports {i.target}: {way} from {here[1]!r} "
                     f"(row {here[0]}) to {there[1]!r} (row {there[0]})")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_module_over_the_size_limit() -> None:
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines())
             for m, p in engine_modules().items()}
    over = sorted(f"{m}: {n} lines" for m, n in sizes.items() if n > MAX_LINES)
    assert not over, (f"modules over {MAX_LINES} lines (split them along a real seam):\n"
                      + "\n".join(over))


def _doc_module(text: str) -> str:
    """A module as the doc writes it (`engine/cli/main.py`, `engine/__init__.py`, or
    `engine/store/` for a whole package) as a LAYERS entry."""
    path = text.strip("`")
    if path.endswith("/"):
        return path.removesuffix("/").replace("/", ".") + ".*"
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def test_the_doc_draws_these_layers() -> None:
    section = DOC.read_text(encoding="utf-8").split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| ([^|]+?) \| ([^|]+?) \|", section, re.MULTILINE)
    drawn = [(int(row), name, tuple(sorted(_doc_module(m) for m in re.findall(r"`[^`]+`", mods))))
             for row, name, mods in rows]
    assert drawn == [(row, name, tuple(sorted(entries))) for row, name, entries in LAYERS]
