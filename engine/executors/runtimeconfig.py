"""The node's runtime configuration (the manifest's `systemOptions`, profile over cluster-wide):
written by the package phases that activate packages, put back exactly by their rollback.

The file is `<node-dir>/runtime/config.json`; each operation keeps what was there before it in
`runtime/history/<operation>.json`, so a rollback restores the earlier file (or removes it when
the operation wrote the first one). The node publishes what it now has as the fact
`runtime_config`, which `gravity status -o json` shows per node.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.executors.base import ExecContext, atomic_write

FACT = "runtime_config"
# The keys a phase's `system` mapping may carry (operations/build.runtime_config makes it).
KEYS = frozenset({"profile", "runtime_version", "runtime_args", "docker", "etcd", "kubelet",
                  "allow_privileged", "base_image", "node_labels", "node_taints"})


def config_path(ctx: ExecContext) -> Path:
    return ctx.workdir / "runtime" / "config.json"


def problems(system: object) -> list[str]:
    """What is wrong with a phase's `system` data (empty when it is fine)."""
    if not isinstance(system, Mapping):
        return ["`system` must be a mapping of runtime options"]
    unknown = sorted(set(system) - KEYS)
    return [f"`system` has unknown keys: {', '.join(unknown)}"] if unknown else []


def write(ctx: ExecContext, system: Mapping[str, Any]) -> str:
    """Make the node's runtime configuration `system`; remember the earlier one for rollback
    (once per operation, so a retried phase keeps the true earlier file)."""
    path = config_path(ctx)
    history = path.parent / "history" / f"{ctx.operation_id}.json"
    before = path.read_text() if path.exists() else None
    if not history.exists():
        atomic_write(history, json.dumps({"previous": before}) + "\n")
    text = json.dumps(dict(system), indent=2, sort_keys=True) + "\n"
    if before != text:
        atomic_write(path, text)
    _publish(ctx, dict(system))
    return "runtime config " + ("unchanged" if before == text else "written")


def restore(ctx: ExecContext) -> str | None:
    """Put back the configuration this operation replaced; None when it wrote nothing."""
    path = config_path(ctx)
    history = path.parent / "history" / f"{ctx.operation_id}.json"
    if not history.exists():
        return None
    previous = json.loads(history.read_text())["previous"]
    if previous is None:
        path.unlink(missing_ok=True)
        _publish(ctx, None)
        return "runtime config removed (none before)"
    atomic_write(path, previous)
    _publish(ctx, json.loads(previous))
    return "runtime config restored"


def _publish(ctx: ExecContext, config: dict[str, Any] | None) -> None:
    if ctx.facts is not None:
        ctx.facts.publish(FACT, config)  # None: the node has no runtime config


__all__ = ["FACT", "config_path", "problems", "restore", "write"]
