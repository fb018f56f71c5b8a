"""The `kubectl` executor: drain, cordon, uncordon, taint and label nodes through `kubectl` when
a kubeconfig is configured; otherwise the phase completes with a visible "skipped" note.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import Any

from engine.errors import ExecutionError
from engine.executors.base import ExecContext, Executor, run_process
from engine.executors.hooks import kubeconfig, run_rollback_hook

SKIPPED = "skipped: Kubernetes API not configured"


def kubectl_config(ctx: ExecContext, what: str) -> str | None:
    """The kubeconfig for kubectl to change `what` with; None (the skip written to the phase's
    log) when no Kubernetes API is configured. ExecutionError when one is but kubectl is not
    on PATH."""
    config = kubeconfig(ctx)
    if not config:
        ctx.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(ctx.log_path, "a", encoding="utf-8") as log:
            log.write(f"--- attempt {ctx.attempt}: {what}: {SKIPPED} ---\n")
        return None
    if shutil.which("kubectl") is None:
        raise ExecutionError("kubectl not found on PATH but a kubeconfig is configured",
                             retryable=False)
    return config

# action -> (argv after `kubectl`, the action that undoes it)
ACTIONS = {
    "drain": (["drain", "{node}", "--ignore-daemonsets", "--delete-emptydir-data",
               "--timeout=5m"], "uncordon"),
    "cordon": (["cordon", "{node}"], "uncordon"),
    "uncordon": (["uncordon", "{node}"], "cordon"),
    "taint": (["taint", "nodes", "{node}", "--overwrite"], None),
    "label": (["label", "nodes", "{node}", "--overwrite"], None),
    "delete": (["delete", "node", "{node}", "--ignore-not-found"], None),
}


def kubectl_argv(action: str, node: str, extra: list[str], config: str) -> list[str]:
    """The exact kubectl command for an action (argv, never a shell string)."""
    base, _ = ACTIONS[action]
    return ["kubectl", "--kubeconfig", config, *[a.replace("{node}", node) for a in base],
            *extra]


def _undo_extra(action: str, extra: list[str]) -> list[str]:
    """Reverse label/taint arguments: `k=v` -> `k-`, `k=v:Effect` -> `k:Effect-`."""
    out = []
    for arg in extra:
        key, _, rest = arg.partition("=")
        effect = rest.partition(":")[2] if action == "taint" else ""
        out.append(f"{key}:{effect}-" if effect else f"{key}-")
    return out


class KubectlExecutor(Executor):
    """A node operation against the Kubernetes API (or a visible skip without one)."""

    name = "kubectl"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        problems = []
        if data.get("action") not in ACTIONS:
            problems.append(f"`action` must be one of {', '.join(ACTIONS)}")
        if not isinstance(data.get("node"), str) or not data.get("node"):
            problems.append("`node` must name the Kubernetes node")
        args = data.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            problems.append("`args` must be a list of strings")
        return problems

    def _run(self, ctx: ExecContext, action: str, args: list[str]) -> str:
        config = kubectl_config(ctx, f"kubectl {action} {ctx.data['node']}")
        if config is None:
            return SKIPPED
        argv = kubectl_argv(action, ctx.data["node"], args, config)
        run_process(ctx, argv, what=" ".join(argv[3:]))
        return f"kubectl {action} {ctx.data['node']}"

    def execute(self, ctx: ExecContext) -> str | None:
        return self._run(ctx, ctx.data["action"], list(ctx.data.get("args", [])))

    def rollback(self, ctx: ExecContext) -> str | None:
        action = ctx.data["action"]
        _, undo = ACTIONS[action]
        notes = []
        if undo is not None:
            notes.append(self._run(ctx, undo, []))
        elif ctx.data.get("args"):
            notes.append(self._run(ctx, action, _undo_extra(action, list(ctx.data["args"]))))
        hook = run_rollback_hook(ctx)
        if hook:
            notes.append(hook)
        return "; ".join(notes) or None
