"""What a command loads before it can act: `gravity plan resume` and `gravity plan` of an
operation on the embedded store import neither networkx (no DAG query is asked), the blob client
and server (http, ssl, email; tenacity and its asyncio), nor structlog.
"""

from __future__ import annotations

import pytest

from tests.conftest import Gravity

PLAN = """
kind: Plan
metadata: {name: light}
phases:
  - id: group
    phases:
      - {id: one, executor: noop}
      - {id: two, executor: noop, requires: [/group/one]}
  - {id: three, executor: noop}
"""
HEAVY = ("networkx", "structlog", "http", "ssl", "email", "tenacity", "asyncio", "yaml")


def imported(stderr: str) -> set[str]:
    """Top-level packages named by `-X importtime` (PYTHONPROFILEIMPORTTIME) on stderr."""
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in stderr.splitlines()
            if line.startswith("import time:") and "self [us]" not in line}


@pytest.mark.parametrize("args", [("plan", "resume"), ("plan",), ("plan", "--short")])
def test_driving_and_showing_a_plan_imports_nothing_it_does_not_use(
        gravity: Gravity, args: tuple[str, ...]) -> None:
    gravity.create(PLAN)
    if args != ("plan", "resume"):  # show a plan that ran
        gravity("plan", "resume", check=0)
    proc = gravity(*args, check=0, PYTHONPROFILEIMPORTTIME="1")
    loaded = imported(proc.stderr)
    assert "engine" in loaded and "click" in loaded  # the probe sees the imports
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert gravity.states() == dict.fromkeys(["/group/one", "/group/two", "/three"],
                                             "completed")
