"""Inputs that would escape the state dir, overflow a file name or expand without bound are
refused before anything is written: exit 2, the file, field and limit named, no byte changed.

Operation IDs (`--id` on every command that creates one), a plan's `node:` and phase IDs all
become paths under the state dir; YAML aliases let a few hundred bytes describe billions of
nodes. Every subprocess here runs under a 512 MiB address-space limit, so "refused cheaply"
is asserted too: a command that tried to expand a bomb would die of MemoryError instead.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.model import Operation, PhaseSpec
from engine.store import open_store

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"
MEMORY = 512 * 2**20
LONG = "s" * 300  # longer than any file name may be (255 bytes)


def _small_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def tree(root: Path) -> dict[str, bytes | None]:
    """Every directory (None) and file (its bytes) under `root`, by relative path."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


class Site:
    """An operator's working directory: `state/` holds an installed quickstart cluster (one
    completed install), `images/` the v1 and v2 images, `work/` is where commands run."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.state = base / "state"
        self.work = base / "work"
        self.v1 = base / "images" / "v1"
        self.v2 = base / "images" / "v2"
        self.nodes = base / "nodes.yaml"

    def run(self, *args: str, state: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, GRAVITY_STATE_DIR=str(state or self.state), GRAVITY_QUIET="1")
        env.pop("GRAVITY_STORE", None)
        return subprocess.run([sys.executable, "-m", "engine.cli.main", *args], env=env,
                              cwd=self.work, capture_output=True, text=True, timeout=60,
                              preexec_fn=_small_memory)

    def store_bytes(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.state.glob("gravity.db*"))}

    def refused(self, *args: str, names: tuple[str, ...],
                state: Path | None = None) -> str:
        """Run a command that must be refused; assert exit 2, every name in the message, and
        not one file or directory changed anywhere under the site or in `state`."""
        watched = [self.base] if state is None or state.is_relative_to(self.base) \
            else [self.base, state]
        before_store, before = self.store_bytes(), [tree(root) for root in watched]
        proc = self.run(*args, state=state)
        said = proc.stderr + proc.stdout
        assert proc.returncode == 2, f"gravity {' '.join(args)[:200]} exited " \
                                     f"{proc.returncode}:\n{said[-3000:]}"
        assert "Traceback" not in said, said
        for name in names:
            assert name in proc.stderr, f"{name!r} not named in:\n{proc.stderr}"
        assert self.store_bytes() == before_store, "a refused command changed the store"
        for root, was in zip(watched, before, strict=True):
            now = tree(root)
            assert sorted(set(now) ^ set(was)) == [], f"files appeared or vanished in {root}"
            assert now == was, f"a refused command changed a file in {root}"
        return proc.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    s = Site(tmp_path_factory.mktemp("limits"))
    s.work.mkdir()
    shutil.copytree(QUICKSTART / "v1", s.v1)
    shutil.copytree(QUICKSTART / "v2", s.v2)
    shutil.copy(QUICKSTART / "nodes.yaml", s.nodes)
    proc = s.run("install", str(s.v1), "--nodes", str(s.nodes), "--id", "install-1")
    assert proc.returncode == 0, proc.stderr
    return s


# -- item 2 and 6: operation IDs ------------------------------------------------------------------
def create_commands(site: Site) -> dict[str, tuple[list[str], Path | None]]:
    """Every command that creates an operation, with inputs that are otherwise good (the
    install runs against a state dir of its own that does not exist yet)."""
    plan = site.work / "hello.yaml"
    shutil.copy(ROOT / "examples" / "plans" / "hello.yaml", plan)
    node = ["--node", "node-4", "--address", "10.0.0.4", "--profile", "worker"]
    return {
        "install": (["install", str(site.v1), "--nodes", str(site.nodes)],
                    site.base / "fresh-state"),
        "upgrade": (["upgrade", str(site.v2)], None),
        "expand": (["expand", *node], None),
        "join": (["join", *node], None),
        "operation-create": (["operation", "create", "--plan", str(plan)], None),
    }


@pytest.mark.parametrize("command", ["install", "upgrade", "expand", "join", "operation-create"])
@pytest.mark.parametrize("bad_id", ["../../x/op", "ABS", LONG],
                         ids=["relative", "absolute", "300-characters"])
def test_an_operation_id_that_is_no_plain_file_name_is_refused_by_every_command(
        site: Site, command: str, bad_id: str) -> None:
    """`gravity upgrade IMAGE --id ../../x/op` used to write its event log, package history
    and backups outside the state dir; a 300-character ID failed every run with `File name
    too long`. Now every command checks --id by one rule before reading anything else."""
    args, state = create_commands(site)[command]
    if bad_id == "ABS":
        bad_id = str(site.base / "outside" / "op")
    err = site.refused(*args, "--id", bad_id, names=("--id", "128"), state=state)
    assert "letters, digits, '-' or '_'" in err


def test_an_id_of_128_characters_is_the_longest_allowed(site: Site, tmp_path: Path) -> None:
    plan = tmp_path / "hello.yaml"
    shutil.copy(ROOT / "examples" / "plans" / "hello.yaml", plan)
    state = tmp_path / "state"
    longest = "Op_" + "x" * 125
    site.refused("operation", "create", "--plan", str(plan), "--id", longest + "x",
                 state=state, names=("--id", "128", "(129 characters)"))
    proc = site.run("operation", "create", "--plan", str(plan), "--id", longest, state=state)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == longest
    assert site.run("plan", "resume", state=state).returncode == 0
    assert (state / "logs" / f"{longest}.jsonl").is_file()


# -- item 3: a plan's node names ------------------------------------------------------------------
PLAN = """\
kind: Plan
metadata: {{name: escape}}
phases:
  - id: masters
    phases:
      - id: drain
        node: {node}
        executor: command
        data: {{run: "echo pwned > proof"}}
"""


@pytest.mark.parametrize("node", ["../../x", "/tmp/gravity-escape", "..", "a/b", "Node_1",
                                  "node-1\\n", "-rf", "x" * 64,
                                  "node-1.", ""])
def test_a_plan_node_that_is_not_an_inventory_node_name_is_refused_at_create(
        site: Site, node: str) -> None:
    """Node working directories are <state-dir>/nodes/<node>: `node: ../../x` used to put
    one, and the phase's side effects, outside the state dir."""
    (site.work / "escape.yaml").write_text(PLAN.format(node=f'"{node}"'))
    err = site.refused("operation", "create", "--plan", "escape.yaml",
                       names=("escape.yaml", "phases[0].phases[0].node", "/masters/drain",
                              "DNS-style node name"))
    assert "1 to 63" in err


def test_a_plan_node_name_may_be_what_an_inventory_allows(site: Site, tmp_path: Path) -> None:
    """The longest inventory name (63 characters) works; one more is refused."""
    state = tmp_path / "state"
    longest = "db-1.example." + "x" * 50
    (tmp_path / "over.yaml").write_text(PLAN.format(node=longest + "x"))
    site.refused("operation", "create", "--plan", str(tmp_path / "over.yaml"), state=state,
                 names=("over.yaml", "1 to 63"))
    (tmp_path / "ok.yaml").write_text(PLAN.format(node=longest))
    proc = site.run("operation", "create", "--plan", str(tmp_path / "ok.yaml"), state=state)
    assert proc.returncode == 0, proc.stderr
    assert site.run("plan", "resume", state=state).returncode == 0
    assert (state / "nodes" / longest / "proof").read_text() == "pwned\n"


# -- item 6: phase IDs that cannot be file names --------------------------------------------------
def segment(name: str, length: int) -> str:
    return name.ljust(length, "s")


def nested(depth: int, length: int) -> str:
    """A plan whose one leaf is `depth` composites deep, every ID segment `length` long."""
    lines = ["kind: Plan", "metadata: {name: long}", "phases:"]
    for level in range(depth):
        pad = "  " * (2 * level)
        lines += [f"{pad}  - id: {segment(f'c{level}', length)}", f"{pad}    phases:"]
    pad = "  " * (2 * depth)
    lines += [f"{pad}  - id: {segment('leaf', length)}", f"{pad}    executor: command",
              f"{pad}    data: {{run: echo ran}}"]
    return "\n".join(lines) + "\n"


def test_a_phase_id_segment_longer_than_a_file_name_is_refused_at_create(site: Site) -> None:
    """A 300-character segment was accepted and then failed every run with `File name too
    long`: the leaf's output is logs/<op>/<phase ID>.log."""
    (site.work / "long.yaml").write_text(nested(0, 300))
    site.refused("operation", "create", "--plan", "long.yaml",
                 names=("long.yaml", "phases[0].id", "251", "255"))


def test_a_phase_id_longer_than_its_path_budget_is_refused_at_create(site: Site) -> None:
    (site.work / "deep.yaml").write_text(nested(10, 200))  # 11 segments of 200: 2211 long
    site.refused("operation", "create", "--plan", "deep.yaml",
                 names=("deep.yaml", "phases[0]" + ".phases[0]" * 10 + ".id", "2048"))


def test_a_segment_of_251_characters_is_the_longest_allowed(
        site: Site, tmp_path: Path) -> None:
    """251 characters + `.log` is the 255-byte file name limit."""
    state = tmp_path / "state"
    (tmp_path / "over.yaml").write_text(nested(1, 252))
    site.refused("operation", "create", "--plan", str(tmp_path / "over.yaml"), state=state,
                 names=("over.yaml", "251", "got 252"))
    (tmp_path / "edge.yaml").write_text(nested(1, 251))
    proc = site.run("operation", "create", "--plan", str(tmp_path / "edge.yaml"), "--id", "e",
                    state=state)
    assert proc.returncode == 0, proc.stderr
    assert site.run("plan", "resume", state=state).returncode == 0
    log = state / "logs" / "e" / segment("c0", 251) / f"{segment('leaf', 251)}.log"
    assert len(log.name) == 255
    assert "ran" in log.read_text()


# -- the stores check the names again, whichever way an operation arrives -------------------------
BAD_OPERATIONS = {
    "operation-id": ("../../x", [PhaseSpec("/a", "", executor="noop")]),
    "node": ("op-1", [PhaseSpec("/a", "", executor="noop", node="../../x")]),
    "segment": ("op-1", [PhaseSpec("/" + LONG, "", executor="noop")]),
}


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
@pytest.mark.parametrize("case", sorted(BAD_OPERATIONS))
def test_a_store_refuses_to_write_an_operation_with_unsafe_names(
        request: pytest.FixtureRequest, tmp_path: Path, backend: str, case: str) -> None:
    """No caller can bypass the rules: the store checks before its first write."""
    url = (f"sqlite:///{tmp_path / 'gravity.db'}" if backend == "sqlite"
           else request.getfixturevalue("etcd_url"))
    op_id, specs = BAD_OPERATIONS[case]
    now = time.time()
    with open_store(url) as store:
        with pytest.raises(InputError) as caught:
            store.create_operation(Operation(op_id, "plan", "x", created=now, updated=now),
                                   specs)
        assert caught.value.exit_code == 2
        assert store.list_operations() == []
        assert store.active_operation_id() is None


def test_store_copy_refuses_an_operation_with_unsafe_names(
        site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A source store written by an older gravity (simulated by switching the check off in
    this process) cannot smuggle `../` through `gravity store copy`."""
    monkeypatch.setattr("engine.store.sqlite.check_new_operation", lambda *_: None,
                        raising=False)
    source = f"sqlite:///{tmp_path / 'old.db'}"
    now = time.time()
    with open_store(source) as store:
        store.create_operation(Operation("op-old", "plan", "x", created=now, updated=now),
                               [PhaseSpec("/a", "", executor="noop", node="../../x")])
    site.refused("store", "copy", "--from", source, "--to",
                 f"sqlite:///{site.state / 'gravity.db'}",
                 names=("op-old", "../../x", "node"))


# -- item 5: YAML alias bombs and oversized files -------------------------------------------------
def bomb(levels: int, *, key: str = "lol", indent: str = "") -> str:
    """`levels` anchors, each a list of ten aliases of the one before: 10**levels leaves."""
    lines = [f"{indent}{key}0: &{key}0 [lol]"]
    for i in range(1, levels + 1):
        lines.append(f"{indent}{key}{i}: &{key}{i} [{', '.join([f'*{key}{i - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


def bomb_plan(levels: int) -> str:
    return ("kind: Plan\nmetadata: {name: bomb}\nphases:\n  - id: a\n    executor: noop\n"
            "    data:\n" + bomb(levels, indent="      "))


NODES_MAPPING = (QUICKSTART / "nodes.yaml").read_text()


@pytest.mark.parametrize(("levels", "limit"), [(5, "10 times"), (9, "10,000,000"),
                                               (30, "10,000,000")])
def test_an_alias_bomb_plan_is_refused(site: Site, levels: int, limit: str) -> None:
    """A 536-byte plan with 6 alias levels used to become an 80 MB store and a 1 GB
    `gravity plan`; one more level ended in MemoryError."""
    (site.work / "bomb.yaml").write_text(bomb_plan(levels))
    assert (site.work / "bomb.yaml").stat().st_size < 4000
    site.refused("operation", "create", "--plan", "bomb.yaml",
                 names=("bomb.yaml", "too large", limit))


def test_an_alias_that_contains_itself_is_refused(site: Site) -> None:
    (site.work / "loop.yaml").write_text(
        "kind: Plan\nmetadata: {name: loop}\nphases:\n  - id: a\n    executor: noop\n"
        "    data: &loop {again: *loop}\n")
    site.refused("operation", "create", "--plan", "loop.yaml",
                 names=("loop.yaml", "contains it"))


def test_an_alias_bomb_values_file_is_refused_before_install_starts(site: Site) -> None:
    """The same bomb as --values used to hang an install."""
    (site.work / "values.yaml").write_text(bomb(9))
    site.refused("upgrade", str(site.v2), "--values", "values.yaml",
                 names=("values.yaml", "10,000,000"))


def test_values_from_an_endless_file_are_refused_at_the_size_limit(site: Site) -> None:
    site.refused("upgrade", str(site.v2), "--values", "/dev/zero",
                 names=("/dev/zero", "64 MiB"))


def test_an_alias_bomb_inventory_is_refused(site: Site) -> None:
    (site.work / "nodes.yaml").write_text(NODES_MAPPING + bomb(9, key="x"))
    site.refused("install", str(site.v1), "--nodes", "nodes.yaml", "--manual",
                 names=("nodes.yaml", "10,000,000"))


def test_an_alias_bomb_manifest_is_refused(site: Site) -> None:
    image = site.base / "bomb-image"
    if not image.exists():
        shutil.copytree(site.v2, image)
        with (image / "app.yaml").open("a") as f:
            f.write(bomb(9, key="x-bomb"))
    site.refused("upgrade", str(image), names=("app.yaml", "10,000,000"))
    site.refused("manifest", "validate", str(image), names=("app.yaml", "10,000,000"))


def test_a_plan_file_over_the_size_limit_is_refused(site: Site) -> None:
    big = site.work / "huge.yaml"
    with big.open("wb") as f:  # sparse: no disk used
        f.truncate(64 * 2**20 + 1)
    try:
        site.refused("operation", "create", "--plan", "huge.yaml", names=("huge.yaml", "64 MiB"))
    finally:
        big.unlink()


def anchored_plan(phases: int, shared: str) -> str:
    """`phases` phases that each reuse a retry policy and merge shared data (`shared`)."""
    rows = "".join(f"  - {{id: p{i}, executor: noop, retry: *retry, data: {{<<: *d, i: {i}}}}}\n"
                   for i in range(phases))
    return ("kind: Plan\nmetadata: {name: anchors}\nphases:\n"
            "  - {id: first, executor: noop, retry: &retry {attempts: 2, initial: 1s, max: 5s},"
            f" data: &d {shared}}}\n" + rows)


@pytest.mark.slow
def test_anchors_may_grow_a_plan_tenfold_but_no_more(site: Site, tmp_path: Path) -> None:
    """Anchors reused the way people (and yaml.dump) write them stay inside the limits: a
    retry policy shared by 10,000 phases and defaults merged into each expand the plan past
    the 100,000-node floor, to about 3 times what is written. The same plan whose shared
    defaults hold a 100-item list grows about 10-fold and is refused."""
    state = tmp_path / "state"
    (tmp_path / "bloated.yaml").write_text(
        anchored_plan(10_000, "{a: 1, big: [" + ", ".join(["x"] * 100) + "]}"))
    site.refused("operation", "create", "--plan", str(tmp_path / "bloated.yaml"), state=state,
                 names=("bloated.yaml", "10 times the nodes written"))
    (tmp_path / "anchors.yaml").write_text(anchored_plan(10_000, "{a: 1, b: [1, 2, 3]}"))
    proc = site.run("operation", "create", "--plan", str(tmp_path / "anchors.yaml"),
                    state=state)
    assert proc.returncode == 0, proc.stderr
    plan = site.run("plan", "-o", "json", state=state)
    assert plan.returncode == 0, plan.stderr
    assert len(json.loads(plan.stdout)["phases"]) == 10_001


def test_a_date_yaml_cannot_build_is_bad_input_not_a_traceback(site: Site) -> None:
    (site.work / "date.yaml").write_text(
        "kind: Plan\nmetadata: {name: date}\nphases:\n  - id: a\n    executor: noop\n"
        "    description: 2001-13-01\n")
    site.refused("operation", "create", "--plan", "date.yaml",
                 names=("date.yaml", "month must be in 1..12"))
