"""Executors from other packages: anything installed under the `gravity.executors` entry-point
group is usable in plans, validated at create time and run like a built-in.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.conftest import Gravity


def install_plugin(root: Path) -> Path:
    """A minimal installed distribution (dist-info + module) providing executor `greet`."""
    site = root / "site"
    (site / "greet_plugin").mkdir(parents=True)
    (site / "greet_plugin" / "__init__.py").write_text(textwrap.dedent('''
        from engine.executors.base import Executor


        class Greet(Executor):
            name = "greet"

            def validate(self, data):
                return [] if isinstance(data.get("who"), str) else ["`who` must be a string"]

            def execute(self, ctx):
                (ctx.workdir / "greeting").write_text(f"hello {ctx.data['who']}\\n")
                return "greeted"
    '''))
    dist = site / "greet_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: greet-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[gravity.executors]\ngreet = greet_plugin:Greet\n")
    return site


def test_a_plugin_executor_is_validated_and_runs(gravity: Gravity, write_plan,
                                                 tmp_path: Path) -> None:
    site = install_plugin(tmp_path)
    gravity.extra_env["PYTHONPATH"] = str(site)
    bad = write_plan("kind: Plan\nmetadata: {name: p}\nphases:\n"
                     "  - {id: hi, executor: greet, data: {who: 3}}\n", "bad.yaml")
    proc = gravity("operation", "create", "--plan", str(bad), check=2)
    assert "phases[0].data: phase /hi: `who` must be a string" in proc.stderr
    good = write_plan("kind: Plan\nmetadata: {name: p}\nphases:\n"
                      "  - {id: hi, executor: greet, data: {who: operators}}\n")
    gravity("operation", "create", "--plan", str(good), check=0)
    gravity("plan", "resume", check=0)
    assert gravity.node_file("local", "greeting").read_text() == "hello operators\n"
    assert "greeted" in gravity("events", check=0).stdout


def test_without_the_plugin_the_executor_is_unknown(gravity: Gravity, write_plan) -> None:
    plan = write_plan("kind: Plan\nmetadata: {name: p}\nphases:\n"
                      "  - {id: hi, executor: greet, data: {who: x}}\n")
    proc = gravity("operation", "create", "--plan", str(plan), check=2)
    assert "unknown executor 'greet'" in proc.stderr
