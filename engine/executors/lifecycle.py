"""Executors of a node's and a cluster's end: `teardown` (stop and remove a node's runtime,
packages and state; its volumes only when purging) and `forget` (drop it from the records).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import Any

from engine.executors.base import ExecContext, Executor
from engine.executors.checks import on_node

KEEP = ("rootfs",)  # a simulated node's volumes live here: never removed without --purge


class TeardownExecutor(Executor):
    """Removes what gravity put on the node: packages (the runtime among them), the node's
    identity and configuration, hook state. Volumes the profile creates (createIfMissing)
    stay unless `purge`; the note says which paths were kept or removed."""

    name = "teardown"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        problems = []
        if not isinstance(data.get("node"), str):
            problems.append("`node` must name the node being cleaned")
        if not isinstance(data.get("volumes", []), list):
            problems.append("`volumes` must be a list")
        if not isinstance(data.get("purge", False), bool):
            problems.append("`purge` must be true or false")
        return problems

    def execute(self, ctx: ExecContext) -> str | None:
        removed = 0
        if ctx.workdir.is_dir():
            for entry in sorted(ctx.workdir.iterdir()):
                if entry.name in KEEP:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed += 1
        if ctx.facts is not None:
            ctx.facts.publish("packages", {})
        paths = created_volumes(ctx.data.get("volumes") or [])
        notes = [f"{removed} item(s) of node state removed"]
        if paths and ctx.data.get("purge"):
            for path in paths:
                target = on_node(ctx, path)
                if target.is_dir():
                    shutil.rmtree(target)
            notes.append(f"volumes purged: {', '.join(paths)}")
        elif paths:
            notes.append(f"volumes kept (pass --purge to delete them): {', '.join(paths)}")
        return "; ".join(notes)

    def rollback(self, ctx: ExecContext) -> str | None:
        return ("nothing to undo: the node's software was removed; add the node back with "
                "`gravity expand`")


class ForgetExecutor(Executor):
    """Deletes what the nodes published about themselves and asks their agents to stop: the
    cluster no longer counts them (the operation's completion updates the cluster record)."""

    name = "forget"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        nodes = data.get("nodes")
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            return ["`nodes` must be a list of node names"]
        return []

    def execute(self, ctx: ExecContext) -> str | None:
        if ctx.facts is None:
            return "no cluster records here"
        stopped = [n for n in ctx.data["nodes"] if ctx.facts.forget(n)]
        nodes = ", ".join(ctx.data["nodes"])
        return f"forgot {nodes}" + (f"; asked the agents on {', '.join(stopped)} to stop"
                                    if stopped else "")

    def rollback(self, ctx: ExecContext) -> str | None:
        return "nothing to undo"


def created_volumes(volumes: list[Mapping[str, Any]]) -> list[str]:
    """The profile's volumes gravity creates (createIfMissing): what --purge would delete."""
    return [v["path"] for v in volumes if v.get("create_if_missing", True)
            and "*" not in v["path"]]


__all__ = ["ForgetExecutor", "TeardownExecutor", "created_volumes"]
