"""Executor registry: built-ins plus anything installed under the `gravity.executors` entry points.
Plug-ins are discovered lazily, the first time a plan is validated or run.
"""

from __future__ import annotations

from engine.executors.base import ExecContext, Executor


class Registry:
    """Name -> executor instance. Built-ins win over a plug-in of the same name."""

    def __init__(self) -> None:
        self._executors: dict[str, Executor] | None = None

    def _load(self) -> dict[str, Executor]:
        if self._executors is None:
            from importlib.metadata import entry_points

            from engine.executors.builtin import CommandExecutor, NoopExecutor
            from engine.executors.cluster import EXECUTORS as CLUSTER_EXECUTORS

            found: dict[str, Executor] = {}
            for ep in entry_points(group="gravity.executors"):
                try:
                    cls = ep.load()
                    found[ep.name] = cls()
                except Exception:
                    continue
            for cls in (NoopExecutor, CommandExecutor, *CLUSTER_EXECUTORS):
                found[cls.name] = cls()
            self._executors = found
        return self._executors

    def names(self) -> set[str]:
        return set(self._load())

    def get(self, name: str) -> Executor:
        return self._load()[name]

    def register(self, executor: Executor) -> None:
        """Add an executor at run time (tests and embedding programs)."""
        self._load()[executor.name] = executor


registry = Registry()

__all__ = ["ExecContext", "Executor", "registry"]
