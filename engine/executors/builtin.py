"""Built-in executors: `noop` (markers, benchmarks) and `command` (a shell command per node).
Both are registered under the `gravity.executors` entry-point group like any plug-in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.executors.base import ExecContext, Executor, run_process


class NoopExecutor(Executor):
    """Does nothing, successfully: for marker phases and for measuring the engine itself."""

    name = "noop"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        return []

    def execute(self, ctx: ExecContext) -> str | None:
        return None

    def rollback(self, ctx: ExecContext) -> str | None:
        return None


class CommandExecutor(Executor):
    """Runs `data.run` with bash in the node's working dir; `data.rollback` undoes it.

    `data.env` adds environment variables. Exit status != 0 fails the phase with
    the tail of the output; the full output is in the phase log.
    """

    name = "command"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        problems = []
        if not isinstance(data.get("run"), str) or not data["run"].strip():
            problems.append("`run` must be a non-empty shell command")
        if "rollback" in data and not isinstance(data["rollback"], str):
            problems.append("`rollback` must be a shell command")
        env = data.get("env", {})
        if not isinstance(env, Mapping) or not all(isinstance(k, str) for k in env):
            problems.append("`env` must be a mapping of variable names to values")
        elif any(isinstance(v, Mapping | list) for v in env.values()):
            problems.append("`env` values must be strings or numbers")
        unknown = set(data) - {"run", "rollback", "env"}
        if unknown:
            problems.append(f"unknown keys {sorted(unknown)}; expected run, rollback, env")
        return problems

    def _env(self, ctx: ExecContext) -> dict[str, str]:
        return {str(k): str(v) for k, v in (ctx.data.get("env") or {}).items()}

    def execute(self, ctx: ExecContext) -> str | None:
        run_process(ctx, ["bash", "-c", ctx.data["run"]], env=self._env(ctx), what="command")
        return None

    def rollback(self, ctx: ExecContext) -> str | None:
        script = ctx.data.get("rollback")
        if not script:
            return "no rollback command; nothing to undo"
        run_process(ctx, ["bash", "-c", script], env=self._env(ctx), what="rollback command")
        return None
