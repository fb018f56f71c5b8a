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

            found: dict[str, Executor] = {}
            for ep in entry_points(group="gravity.executors"):
                try:
                    cls = ep.load()
                    found[ep.name] = cls()
                except Exception:
                    continue
            for cls in (NoopExecutor, CommandExecutor):
                found[cls.name] = cls()
            self._extra_builtin(found)
            self._executors = found
        return self._executors

    def _extra_builtin(self, found: dict[str, Executor]) -> None:
        """Executors shipped with the engine beyond the two basics (cluster operations)."""
        import importlib

        mod = importlib.import_module("engine.executors.cluster")
        for cls in mod.EXECUTORS:
            found[cls.name] = cls()

    def names(self) -> set[str]:
        return set(self._load())

    def get(self, name: str) -> Executor:
        return self._load()[name]

    def register(self, executor: Executor) -> None:
        """Add an executor at run time (tests and embedding programs)."""
        self._load()[executor.name] = executor


registry = Registry()

__all__ = ["ExecContext", "Executor", "registry"]
