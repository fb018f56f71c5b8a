"""The `node-labels` executor: a node profile's labels and taints on its Kubernetes node, through
`kubectl` — set on install and join, changed on upgrade, removed with the node; rollback undoes.

The phase's data says what the node should have (`labels`, `taints`) and what the plan put there
before (`previous_labels`, `previous_taints`): keys that were there and are no longer wanted are
removed. Without a configured kubeconfig the phase completes with a visible "skipped" note.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from engine.errors import ExecutionError
from engine.executors.base import ExecContext, Executor, run_process
from engine.executors.kube import SKIPPED, kubectl_config

EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
LABEL = re.compile(r"^[A-Za-z0-9./_-]+=[A-Za-z0-9._-]*$")
TAINT = re.compile(r"^[A-Za-z0-9./_-]+(=[A-Za-z0-9._-]*)?:(" + "|".join(EFFECTS) + ")$")
LISTS = {"labels": LABEL, "taints": TAINT, "previous_labels": LABEL, "previous_taints": TAINT}


def label_key(label: str) -> str:
    return label.partition("=")[0]


def taint_id(taint: str) -> tuple[str, str]:
    """(key, effect): what identifies a taint on a node."""
    key_value, _, effect = taint.rpartition(":")
    return key_value.partition("=")[0], effect


def changes(want_labels: Sequence[str], want_taints: Sequence[str], had_labels: Sequence[str],
            had_taints: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """The kubectl arguments that move a node from `had` to `want`: label arguments (`k=v` to
    set, `k-` to remove), taints to set (`k=v:Effect`) and taints to remove (`k:Effect-`)."""
    wanted_keys = {label_key(x) for x in want_labels}
    labels = [*want_labels, *(f"{k}-" for k in dict.fromkeys(label_key(x) for x in had_labels)
                              if k not in wanted_keys)]
    wanted_taints = {taint_id(t) for t in want_taints}
    drop = [f"{k}:{e}-" for k, e in dict.fromkeys(taint_id(t) for t in had_taints)
            if (k, e) not in wanted_taints]
    return labels, list(want_taints), drop


class NodeLabelsExecutor(Executor):
    """Sets a node's profile labels and taints (and removes the ones it no longer has)."""

    name = "node-labels"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        problems = []
        if not isinstance(data.get("node"), str) or not data.get("node"):
            problems.append("`node` must name the Kubernetes node")
        for key, pattern in LISTS.items():
            items = data.get(key, [])
            if not isinstance(items, list) or not all(
                    isinstance(x, str) and pattern.match(x) for x in items):
                form = "key=value" if "label" in key else "key[=value]:Effect (Effect one of " \
                    + ", ".join(EFFECTS) + ")"
                problems.append(f"`{key}` must be a list of {form}")
        return problems

    def _apply(self, ctx: ExecContext, want: tuple[list[str], list[str]],
               had: tuple[list[str], list[str]]) -> str:
        node = ctx.data["node"]
        labels, taints, drop = changes(want[0], want[1], had[0], had[1])
        if not (labels or taints or drop):
            return "no labels or taints to change"
        config = kubectl_config(ctx, f"labels {labels} taints {taints} removed taints {drop} "
                                f"on {node}")
        if config is None:
            return SKIPPED
        base = ["kubectl", "--kubeconfig", config]
        if labels:
            run_process(ctx, [*base, "label", "nodes", node, "--overwrite", *labels],
                        what=f"label nodes {node}")
        if taints:
            run_process(ctx, [*base, "taint", "nodes", node, "--overwrite", *taints],
                        what=f"taint nodes {node}")
        for taint in drop:
            try:
                run_process(ctx, [*base, "taint", "nodes", node, taint],
                            what=f"taint nodes {node} {taint}")
            except ExecutionError as exc:
                if "not found" not in exc.tail:  # already gone is what we wanted
                    raise
        parts = [f"labels {' '.join(labels)}" if labels else "",
                 f"taints {' '.join(taints + drop)}" if taints or drop else ""]
        return f"{node}: " + "; ".join(p for p in parts if p)

    def execute(self, ctx: ExecContext) -> str | None:
        d = ctx.data
        return self._apply(ctx, (list(d.get("labels", [])), list(d.get("taints", []))),
                           (list(d.get("previous_labels", [])),
                            list(d.get("previous_taints", []))))

    def rollback(self, ctx: ExecContext) -> str | None:
        d = ctx.data
        return self._apply(ctx, (list(d.get("previous_labels", [])),
                                 list(d.get("previous_taints", []))),
                           (list(d.get("labels", [])), list(d.get("taints", []))))


__all__ = ["EFFECTS", "NodeLabelsExecutor", "changes"]
