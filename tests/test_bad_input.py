"""Bad input of every kind — plan files, manifests, inventories, --set strings, CLI arguments —
exits 2 with a message naming the file or field, no traceback, and not one byte of the store
changed. A table of known-bad inputs runs the real CLI; hypothesis fuzzes the same surfaces.
"""

from __future__ import annotations

import copy
import io
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"
GOOD_PLAN = """\
kind: Plan
metadata: {name: good}
phases:
  - id: a
    executor: noop
"""


@dataclass
class Stage:
    """A state dir whose store holds one completed operation (so the cluster lock is free),
    a pristine copy of the quickstart image and its inventory."""

    base: Path
    state: Path
    image: Path
    nodes: Path

    @property
    def url(self) -> str:
        return f"sqlite://{self.state / 'gravity.db'}"

    def snapshot(self) -> dict[str, bytes]:
        """Every byte of the store: the database and its WAL/shm files, if any."""
        return {p.name: p.read_bytes() for p in sorted(self.state.glob("gravity.db*"))}

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("GRAVITY_STORE", None)
        env["GRAVITY_STATE_DIR"] = str(self.state)
        return env

    def run(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "engine.cli.main", *args],
                              capture_output=True, text=True, env=self.env(), cwd=cwd,
                              timeout=60)


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Stage:
    base = tmp_path_factory.mktemp("bad-input")
    s = Stage(base, base / "state", base / "image", base / "nodes.yaml")
    shutil.copytree(QUICKSTART / "v1", s.image)
    shutil.copy(QUICKSTART / "nodes.yaml", s.nodes)
    (base / "good.yaml").write_text(GOOD_PLAN)
    for args in (("operation", "create", "--plan", "good.yaml", "--id", "first"),
                 ("plan", "resume")):
        proc = s.run(*args, cwd=base)
        assert proc.returncode == 0, proc.stderr
    assert s.snapshot(), "the store should exist before the bad inputs"
    return s


# -- the table: known-bad inputs through the real CLI ---------------------------------------------
Prepare = Callable[[Stage, Path], list[str]]


def plan_file(text: str | bytes) -> Prepare:
    def prepare(stage: Stage, tmp: Path) -> list[str]:
        data = text.encode() if isinstance(text, str) else text
        (tmp / "bad-plan.yaml").write_bytes(data)
        return ["operation", "create", "--plan", "bad-plan.yaml"]
    return prepare


def manifest(old: str, new: str) -> Prepare:
    """The quickstart image with one edit to app.yaml, installed on the good inventory."""
    def prepare(stage: Stage, tmp: Path) -> list[str]:
        image = tmp / "image"
        shutil.copytree(stage.image, image)
        text = (image / "app.yaml").read_text()
        assert old in text, f"{old!r} is not in app.yaml"
        (image / "app.yaml").write_text(text.replace(old, new, 1))
        return ["install", str(image), "--nodes", str(stage.nodes), "--manual"]
    return prepare


def inventory(text: str | bytes) -> Prepare:
    def prepare(stage: Stage, tmp: Path) -> list[str]:
        data = text.encode() if isinstance(text, str) else text
        (tmp / "bad-nodes.yaml").write_bytes(data)
        return ["install", str(stage.image), "--nodes", "bad-nodes.yaml", "--manual"]
    return prepare


def install_with(*extra: str) -> Prepare:
    def prepare(stage: Stage, tmp: Path) -> list[str]:
        return ["install", str(stage.image), "--nodes", str(stage.nodes), "--manual", *extra]
    return prepare


def values_file(text: str) -> Prepare:
    def prepare(stage: Stage, tmp: Path) -> list[str]:
        (tmp / "list-values.yaml").write_text(text)
        return install_with("--values", "list-values.yaml")(stage, tmp)
    return prepare


def argv(*args: str) -> Prepare:
    return lambda stage, tmp: list(args)


NODE = "- {{name: {0}, address: {1}, profile: {2}, role: {3}}}\n"
THREE = "".join(NODE.format(*n) for n in (("node-1", "10.0.0.1", "master", "master"),
                                          ("node-2", "10.0.0.2", "worker", "node"),
                                          ("node-3", "10.0.0.3", "worker", "node")))

# (case id, how to build the command, texts the message must name)
TABLE: list[tuple[str, Prepare, tuple[str, ...]]] = [
    ("plan-unknown-field", plan_file(GOOD_PLAN + "    bogus: 1\n"),
     ("bad-plan.yaml", "phases[0].bogus")),
    ("plan-not-yaml", plan_file("kind: Plan\nmetadata: {name: x\nphases: [\n"),
     ("bad-plan.yaml", "line")),
    ("plan-wrong-kind", plan_file(GOOD_PLAN.replace("kind: Plan", "kind: Plna")),
     ("bad-plan.yaml", "kind")),
    ("plan-cycle", plan_file("kind: Plan\nmetadata: {name: x}\nphases:\n"
                             "  - {id: a, executor: noop, requires: [/b]}\n"
                             "  - {id: b, executor: noop, requires: [/a]}\n"),
     ("bad-plan.yaml", "dependency cycle: /a -> /b -> /a")),
    ("plan-unknown-requires", plan_file(GOOD_PLAN + "    requires: [/nope]\n"),
     ("bad-plan.yaml", "phases[0].requires", "/nope")),
    ("plan-bad-timeout", plan_file(GOOD_PLAN + "    timeout: soon\n"),
     ("bad-plan.yaml", "phases[0].timeout")),
    ("plan-bad-retry", plan_file(GOOD_PLAN + "    retry: {attempts: 0}\n"),
     ("bad-plan.yaml", "phases[0].retry.attempts")),
    ("plan-command-without-run", plan_file(GOOD_PLAN.replace("noop", "command")),
     ("bad-plan.yaml", "phases[0].data")),
    ("plan-unknown-executor", plan_file(GOOD_PLAN.replace("noop", "teleport")),
     ("bad-plan.yaml", "phases[0].executor", "teleport")),
    ("plan-duplicate-id", plan_file(GOOD_PLAN + "  - id: a\n    executor: noop\n"),
     ("bad-plan.yaml", "phases[1].id")),
    ("plan-is-a-list", plan_file("- 1\n- 2\n"), ("bad-plan.yaml",)),
    ("plan-not-utf8", plan_file(b"kind: Plan\n\xff\xfe\n"), ("bad-plan.yaml",)),
    ("plan-nan-duration", plan_file(GOOD_PLAN + "    retry: {attempts: 2, initial: .nan}\n"),
     ("bad-plan.yaml", "phases[0].retry.initial")),
    ("plan-infinite-timeout", plan_file(GOOD_PLAN + "    timeout: .inf\n"),
     ("bad-plan.yaml", "phases[0].timeout")),
    ("plan-nan-retry-factor", plan_file(GOOD_PLAN + "    retry: {attempts: 2, factor: .nan}\n"),
     ("bad-plan.yaml", "phases[0].retry.factor")),
    ("plan-missing-file", argv("operation", "create", "--plan", "nowhere.yaml"),
     ("nowhere.yaml",)),
    ("manifest-bad-version", manifest("resourceVersion: 1.0.0", "resourceVersion: banana"),
     ("app.yaml", "metadata.resourceVersion")),
    ("manifest-wrong-kind", manifest("kind: Cluster", "kind: Clutser"), ("app.yaml", "kind")),
    ("manifest-bad-ram", manifest("ram: {min: 256MB}", "ram: {min: lots}"),
     ("app.yaml", "ram")),
    ("manifest-negative-count", manifest("{profile: worker, count: 2}",
                                         "{profile: worker, count: -2}"),
     ("app.yaml", "count")),
    ("manifest-not-yaml", manifest("nodeProfiles:", "nodeProfiles: [\n"), ("app.yaml",)),
    ("manifest-missing-hook-file", manifest("file://hooks/install.yaml",
                                            "file://hooks/nowhere.yaml"),
     ("nowhere.yaml",)),
    ("inventory-duplicate-name", inventory(THREE.replace("node-2", "node-1", 1)),
     ("bad-nodes.yaml", "node-1")),
    ("inventory-no-master", inventory(THREE.replace("role: master", "role: node")),
     ("bad-nodes.yaml", "master")),
    ("inventory-unknown-profile", inventory(THREE.replace("profile: worker", "profile: gpu", 1)),
     ("bad-nodes.yaml", "gpu")),
    ("inventory-bad-name", inventory(THREE.replace("node-3", "Node_3")),
     ("bad-nodes.yaml", "Node_3")),
    ("inventory-unknown-field", inventory(THREE.replace("role: node}", "role: node, x: 1}", 1)),
     ("bad-nodes.yaml", "x")),
    ("inventory-flavor-count", inventory(THREE.rsplit("- ", 1)[0]),
     ("bad-nodes.yaml", "worker")),
    ("inventory-not-yaml", inventory("- {name: node-1\n"), ("bad-nodes.yaml",)),
    ("inventory-not-utf8", inventory(b"- {name: node-1, address: \xff}\n"),
     ("bad-nodes.yaml",)),
    ("inventory-role-not-a-string", inventory(THREE.replace("role: node}", "role: [node]}", 1)),
     ("bad-nodes.yaml", "role")),
    ("inventory-missing-file", argv("install", "IMAGE", "--nodes", "nowhere.yaml"),
     ("nowhere.yaml",)),
    ("set-without-value", install_with("--set", "a.b"), ("--set", "a.b")),
    ("set-bad-index", install_with("--set", "a[=1"), ("--set", "a[=1")),
    ("set-empty-key", install_with("--set", "=x"), ("--set",)),
    ("set-file-missing", install_with("--set-file", "a=nowhere.txt"),
     ("--set-file", "nowhere.txt")),
    ("values-file-missing", install_with("--values", "nowhere.yaml"), ("nowhere.yaml",)),
    ("values-not-a-mapping", values_file("- just\n- a list\n"), ("list-values.yaml",)),
    ("unknown-phase", argv("plan", "execute", "--phase", "/nope"), ("/nope",)),
    ("unknown-operation", argv("plan", "--operation-id", "nope"), ("nope",)),
    ("bad-store-url", argv("--store", "bogus://x", "plan"), ("bogus://x",)),
    ("bad-operation-id", argv("operation", "create", "--plan", str(QUICKSTART.parent / "plans"
                                                                    / "hello.yaml"),
                              "--id", "bad id!"), ("--id",)),
    ("operation-id-taken", lambda stage, tmp: ["operation", "create", "--plan",
                                               str(stage.base / "good.yaml"), "--id", "first"],
     ("an operation with ID first already exists", "choose another --id")),
    ("bad-agent-node", argv("agent", "run", "--node", "Bad_Node"), ("--node",)),
    ("max-parallel-zero", argv("plan", "resume", "--max-parallel", "0"), ("--max-parallel",)),
    ("bad-log-format", argv("--log-format", "xml", "plan"), ("--log-format",)),
    ("missing-phase-option", argv("plan", "execute"), ("--phase",)),
    ("unknown-option", argv("plan", "resume", "--frobnicate"), ("--frobnicate",)),
    ("unknown-command", argv("frobnicate"), ("frobnicate",)),
    ("bad-output-format", argv("plan", "-o", "xml"), ("-o",)),
]




@pytest.mark.parametrize(("prepare", "names"), [pytest.param(p, n, id=i) for i, p, n in TABLE])
def test_rejected_input_exits_2_names_the_culprit_and_writes_nothing(
        stage: Stage, tmp_path: Path, prepare: Prepare, names: tuple[str, ...]) -> None:
    args = [str(stage.image) if a == "IMAGE" else a for a in prepare(stage, tmp_path)]
    before = stage.snapshot()
    proc = stage.run(*args, cwd=tmp_path)
    said = proc.stderr + proc.stdout
    changed = stage.snapshot() != before
    if changed and proc.returncode == 0:  # wrongly accepted: free the cluster lock for the rest
        stage.run("plan", "complete", cwd=tmp_path)
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{said}"
    assert "Traceback" not in said, said
    for name in names:
        assert name in proc.stderr, f"{name!r} not named in:\n{proc.stderr}"
    assert not changed, "a rejected input changed the store"


# -- hypothesis: the same surfaces, fuzzed, in-process --------------------------------------------
counter = itertools.count()
# A whole command per example is slower than a parser call: a quarter of the examples of the
# hypothesis profile (tests/conftest.py), whose other settings (derandomized in CI, random
# with HYPOTHESIS_PROFILE=fuzz) apply as they are.
FUZZ = settings(max_examples=max(10, settings.default.max_examples // 4))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def in_process(stage: Stage, *args: str) -> tuple[int, str]:
    """`gravity ARGS` through the real entry point; any uncaught exception fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(["--state-dir", str(stage.state), "--store", stage.url, *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, err.getvalue() + out.getvalue()


def paths_of(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a YAML document (mapping keys and list indexes)."""
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths_of(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += paths_of(value, (*prefix, i))
    return found


def mutate(doc: Any, path: tuple[Any, ...], how: str, value: Any) -> Any:
    """A copy of `doc` with the value at `path` replaced, deleted, or given a stray key."""
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if how == "delete":
        del parent[last]
    elif how == "add" and isinstance(parent[last], dict):
        parent[last]["stray"] = value
    else:
        parent[last] = value
    return doc


def mutated(base: Any, edits: list[tuple[int, str, Any]]) -> str:
    """`base` after each edit (path chosen by index among the paths left), as YAML."""
    doc = base
    for index, how, value in edits:
        paths = paths_of(doc)
        if paths:
            doc = mutate(doc, paths[index % len(paths)], how, value)
    return yaml.safe_dump(doc, sort_keys=False)


def documents(base: Any) -> st.SearchStrategy[bytes]:
    """File contents near `base`: 1-3 fields mutated, or the YAML cut short or garbled
    (bytes, so not always UTF-8), or noise."""
    text = yaml.safe_dump(base, sort_keys=False).encode()
    edit = st.tuples(st.integers(0, 10_000), st.sampled_from(("set", "delete", "add")), values)
    changed = st.lists(edit, min_size=1, max_size=3).map(
        lambda edits: mutated(base, edits).encode())
    cut = st.integers(0, len(text) - 1).map(lambda i: text[:i])
    garbled = st.tuples(st.integers(0, len(text)), st.binary(max_size=8)).map(
        lambda t: text[:t[0]] + t[1] + text[t[0]:])
    return st.one_of(changed, cut, garbled, st.binary(max_size=40))



def outcome(stage: Stage, before: dict[str, bytes], code: int, said: str,
            names: tuple[str, ...]) -> None:
    """Rejected: exit 2, the culprit named, the store untouched. Accepted (the fuzz found a
    valid input): close the operation it created so the next example starts clean."""
    assert code in (0, 2), f"exit {code}:\n{said}"
    if code == 0:
        if stage.snapshot() != before:
            assert in_process(stage, "plan", "complete")[0] == 0
        return
    assert any(n in said for n in names), f"none of {names} named in:\n{said}"
    assert stage.snapshot() == before, f"a rejected input changed the store:\n{said}"


GOOD_PLAN_DOC = {"kind": "Plan", "metadata": {"name": "fuzz"}, "parallel": 1, "phases": [
    {"id": "one", "executor": "command", "data": {"run": "true", "env": {"A": "1"}},
     "retry": {"attempts": 2, "initial": "1s", "max": "2s"}, "timeout": "5s"},
    {"id": "group", "parallel": 2, "node": "node-1", "phases": [
        {"id": "two", "executor": "noop", "requires": ["/one"]},
        {"id": "three", "executor": "noop"}]}]}


@FUZZ
@given(data=documents(GOOD_PLAN_DOC))
def test_fuzzed_plan_files_are_rejected_cleanly(stage: Stage, data: bytes) -> None:
    path = stage.base / f"fuzz-plan-{next(counter)}.yaml"
    path.write_bytes(data)
    before = stage.snapshot()
    code, said = in_process(stage, "operation", "create", "--plan", str(path))
    outcome(stage, before, code, said, (path.name,))


MANIFEST_DOC = yaml.safe_load((QUICKSTART / "v1" / "app.yaml").read_text())


@FUZZ
@given(data=documents(MANIFEST_DOC))
def test_fuzzed_manifests_are_rejected_cleanly(stage: Stage, data: bytes) -> None:
    image = stage.base / f"fuzz-image-{next(counter)}"
    shutil.copytree(stage.image, image)
    (image / "app.yaml").write_bytes(data)
    before = stage.snapshot()
    code, said = in_process(stage, "install", str(image), "--nodes", str(stage.nodes),
                            "--manual")
    # A manifest change can make the (untouched) inventory the culprit: either may be named.
    outcome(stage, before, code, said, (image.name, stage.nodes.name))


INVENTORY_DOC = yaml.safe_load((QUICKSTART / "nodes.yaml").read_text())


@FUZZ
@given(data=documents(INVENTORY_DOC))
def test_fuzzed_inventories_are_rejected_cleanly(stage: Stage, data: bytes) -> None:
    nodes = stage.base / f"fuzz-nodes-{next(counter)}.yaml"
    nodes.write_bytes(data)
    before = stage.snapshot()
    code, said = in_process(stage, "install", str(stage.image), "--nodes", str(nodes),
                            "--manual")
    outcome(stage, before, code, said, (nodes.name,))


SET_TEXT = st.text(alphabet=st.sampled_from("ab1.=[]{},\\ -x\"'"), max_size=14)


@FUZZ
@given(kind=st.sampled_from(("--set", "--set-string", "--set-file")), expr=SET_TEXT)
def test_fuzzed_set_strings_are_rejected_cleanly(stage: Stage, kind: str, expr: str) -> None:
    before = stage.snapshot()
    code, said = in_process(stage, "install", str(stage.image), "--nodes", str(stage.nodes),
                            "--manual", kind, expr)
    outcome(stage, before, code, said, (kind,))


# Read-only commands whose option values are fuzzed; {} is the fuzzed value.
TEMPLATES = [
    (("plan", "execute", "--phase", "{}", "--dry-run"), ("--phase", "phase", "{}")),
    (("plan", "--operation-id", "{}"), ("--operation-id", "operation", "{}")),
    (("plan", "-o", "{}"), ("-o",)),
    (("plan", "resume", "--dry-run", "--max-parallel", "{}"), ("--max-parallel",)),
    (("plan", "rollback", "--phase", "{}", "--dry-run"), ("--phase", "phase", "{}")),
    (("status", "-o", "{}"), ("-o",)),
    (("--log-format", "{}", "plan"), ("--log-format",)),
    (("operation", "list", "-o", "{}"), ("-o",)),
    (("{}",), ("{}", "command", "option")),
]


@FUZZ
@given(template=st.sampled_from(TEMPLATES), value=st.text(max_size=16))
def test_fuzzed_cli_arguments_are_rejected_cleanly(
        stage: Stage, template: tuple[tuple[str, ...], tuple[str, ...]], value: str) -> None:
    args, names = template
    before = stage.snapshot()
    code, said = in_process(stage, *(value if a == "{}" else a for a in args))
    assert code in (0, 2), f"exit {code}:\n{said}"
    if code == 2:
        assert "Traceback" not in said
        assert any(n.replace("{}", value) in said for n in names), said
    assert stage.snapshot() == before, f"{args} with {value!r} changed the store:\n{said}"
