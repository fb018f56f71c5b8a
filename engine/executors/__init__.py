"""Executor registry: built-ins plus anything installed under the `gravity.executors` entry points.
Plug-ins are discovered lazily, the first time a plan is validated or run.
"""

from __future__ import annotations

from engine.executors.base import ExecContext, Executor


class Registry:
    """Name -> executor instance. Built-ins win over a plug-in of the same name."""

    def __init__(self) -> None:
        self._executors: dict[str, Executor] | None = None
        self._simple: dict[str, Executor] = {}

    def _builtin(self) -> dict[str, Executor]:
        """`noop` and `command`, without scanning the installed packages' entry points or
        importing the cluster executors: a built-in wins over a plug-in anyway."""
        if not self._simple:
            from engine.executors.builtin import CommandExecutor, NoopExecutor

            self._simple = {cls.name: cls() for cls in (NoopExecutor, CommandExecutor)}
        return self._simple

    def _load(self) -> dict[str, Executor]:
        if self._executors is None:
            from importlib.metadata import entry_points

            from engine.executors.cluster import EXECUTORS as CLUSTER_EXECUTORS

            found: dict[str, Executor] = {}
            for ep in entry_points(group="gravity.executors"):
                try:
                    cls = ep.load()
                    found[ep.name] = cls()
                except Exception:
                    continue
            found.update(self._builtin())
            for cls in CLUSTER_EXECUTORS:
                found[cls.name] = cls()
            self._executors = found
        return self._executors

    def names(self) -> set[str]:
        return set(self._load())

    def get(self, name: str) -> Executor:
        if self._executors is None and name in self._builtin():
            return self._simple[name]
        return self._load()[name]

    def register(self, executor: Executor) -> None:
        """Add an executor at run time (tests and embedding programs)."""
        self._load()[executor.name] = executor


registry = Registry()

__all__ = ["ExecContext", "Executor", "registry"]
