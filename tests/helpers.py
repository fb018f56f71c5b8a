"""Helpers the test files share: waiting on an observable condition, and the small plan most
CLI stories start from (/init, then /masters/node-1/{drain,upgrade}, then /app).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], what: str = "the condition", timeout: float = 30.0,
             *, proc: subprocess.Popen[Any] | None = None, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    Fails the test when `timeout` seconds pass first, or at once when `proc` (the process
    expected to bring the condition about) has exited without it.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the process exited ({proc.returncode}) while waiting for "
                                 f"{what}\nstdout:\n{out}\nstderr:\n{err}")
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(interval)


def run(command: str, rollback: str | None = None) -> dict[str, str]:
    """A command phase's `data`: what it runs and, optionally, how it is undone."""
    return {"run": command} if rollback is None else {"run": command, "rollback": rollback}


def chain_plan(name: str, *, init: Mapping[str, str], drain: Mapping[str, str],
               upgrade: Mapping[str, str], app: Mapping[str, str],
               init_description: str | None = None,
               before_app: Sequence[Mapping[str, Any]] = ()) -> str:
    """Plan YAML: /init, then /masters/node-1/{drain,upgrade} (pinned to node-1), then
    `before_app`'s top-level phases, then /app, which requires /masters. Each phase is a
    `command` phase with the given `data` (see `run`)."""
    init_phase: dict[str, Any] = {"id": "init"}
    if init_description is not None:
        init_phase["description"] = init_description
    init_phase.update(executor="command", data=dict(init))
    doc = {
        "kind": "Plan",
        "metadata": {"name": name},
        "phases": [
            init_phase,
            {"id": "masters", "phases": [{"id": "node-1", "node": "node-1", "phases": [
                {"id": "drain", "executor": "command", "data": dict(drain)},
                {"id": "upgrade", "executor": "command", "data": dict(upgrade)},
            ]}]},
            *[dict(p) for p in before_app],
            {"id": "app", "requires": ["/masters"], "executor": "command", "data": dict(app)},
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)
