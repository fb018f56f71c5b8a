"""Starting the operations of a cluster's later life: remove a node (shrink), uninstall, and
the hook-only ones (app status, start, stop). Each checks the cluster, builds its plan, creates it.
"""

from __future__ import annotations

from typing import Any

from engine import agent_protocol as proto
from engine.blobs import BlobCache
from engine.errors import InputError, NotFound, Problem, Refused
from engine.executors.lifecycle import created_volumes
from engine.operations.build import Image, build_plan, context
from engine.operations.cluster import Cluster
from engine.operations.inventory import flavor_shortfall
from engine.operations.ops import Prepared, operation_data, require_cluster
from engine.store.base import Store

# `gravity app …` verb -> the manifest hook it runs
APP_HOOKS = {"status": "status", "start": "start", "stop": "stop"}


def current_image(cluster: Cluster) -> Image:
    """The installed image as its operations recorded it: no image directory needed (a node
    leaving the cluster has none), and its content is named by the same digest."""
    return Image.from_record(cluster.image)


def offline(store: Store, node: str) -> bool:
    """No agent runs on the node (only a shared store has agents; embedded nodes are
    directories of this host, always there)."""
    return store.capabilities.shared and proto.agent(store, node) is None


def _runner(cluster: Cluster, avoid: str | None = None) -> str:
    """A master that stays, to run the hooks and the cluster-side steps."""
    return next(n.name for n in cluster.masters if n.name != avoid)


def _node_context(entry: dict[str, Any], runner: str, *, down: bool) -> dict[str, Any]:
    """Where a node's own clean-up runs: on the node, or — offline and forced — nowhere
    (the phase is kept, shown as skipped, and assigned to the runner)."""
    out = dict(entry)
    out["where"] = runner if down else entry["name"]
    if down:
        out["skip"] = f"node {entry['name']} is offline: nothing was removed from it (--force)"
    return out


def prepare_remove(store: Store, cache: BlobCache, name: str, *, force: bool,
                   purge: bool) -> Prepared:
    """Remove one node. Refused: an unknown node (exit 2); the last master, fewer nodes than
    the flavor's minimum, or an offline node without --force (exit 3)."""
    cluster = require_cluster(store)
    target = cluster.node(name)
    if target is None:
        raise InputError(f"node {name} is not in the cluster", [Problem(
            f"expected one of {', '.join(n.name for n in cluster.nodes)}", field="NODE")],
            hint="see the nodes with `gravity status`; nothing was written")
    if target.role.value == "master" and len(cluster.masters) == 1:
        raise Refused(f"node {name} is the last master: a cluster cannot lose it",
                      hint="to take the whole cluster down use `gravity uninstall`")
    image = current_image(cluster)
    remaining = [n for n in cluster.nodes if n.name != name]
    flavor = image.flavor(cluster.flavor)
    short = flavor_shortfall(str(cluster.flavor), flavor, remaining) if flavor else []
    down = offline(store, name)
    reasons = [f"removing {name} leaves the cluster short of its flavor: {s}" for s in short]
    if down:
        reasons.append(f"node {name} is offline: no agent runs there (start it with "
                       f"`gravity agent run --node {name}` on the node)")
    if reasons and not force:
        raise Refused("; ".join(reasons), hint="fix that first (`gravity expand` adds a "
                      "node), or pass --force to remove it anyway (an offline node's own "
                      "clean-up is then skipped)")
    runner = _runner(cluster, avoid=name)
    ctx = context(image, list(cluster.nodes), **cluster.service_ids)
    entry = next(e for e in ctx["groups"]["nodes"] if e["name"] == name)
    ctx.update(runner=runner, purge=purge, target=_node_context(entry, runner, down=down))
    plan = build_plan("remove", ctx)
    data = operation_data("remove", image, removed_node=name,
                          **cluster.service_ids, force=force, purge=purge,
                          offline=down, volumes=created_volumes(entry.get("volumes") or []))
    return Prepared("remove", plan, data)


def prepare_uninstall(store: Store, cache: BlobCache, *, force: bool,
                      purge: bool) -> Prepared:
    """Take the whole cluster down. Offline nodes are refused unless --force (then their
    clean-up is skipped, and shown as skipped)."""
    cluster = require_cluster(store)
    down = {n.name for n in cluster.nodes if offline(store, n.name)}
    if down and not force:
        raise Refused(f"node(s) offline: {', '.join(sorted(down))}",
                      hint="start their agents, or pass --force to uninstall without "
                      "cleaning them")
    image = current_image(cluster)
    runner = next((m.name for m in cluster.masters if m.name not in down), None)
    if runner is None:
        raise Refused("no master is online to run the uninstall hooks",
                      hint="start a master's agent (`gravity agent run --node NAME`)")
    ctx = context(image, list(cluster.nodes), **cluster.service_ids)
    ctx["groups"]["nodes"] = [_node_context(e, runner, down=e["name"] in down)
                              for e in ctx["groups"]["nodes"]]
    ctx.update(runner=runner, purge=purge)
    plan = build_plan("uninstall", ctx)
    data = operation_data("uninstall", image, **cluster.service_ids, force=force,
                          purge=purge, nodes=[n.to_dict() for n in cluster.nodes])
    return Prepared("uninstall", plan, data)


def prepare_app_hook(store: Store, cache: BlobCache, verb: str) -> Prepared:
    """`gravity app status|start|stop`: one phase running the manifest's hook on a master.
    Exit 2 when the image does not define that hook."""
    cluster = require_cluster(store)
    image = current_image(cluster)
    hook = APP_HOOKS[verb]
    if image.hook(hook) is None:
        raise NotFound(f"the image {cluster.app} {cluster.version} defines no `{hook}` hook",
                       hint=f"add hooks.{hook} to the manifest to use `gravity app {verb}`")
    runner = next((m.name for m in cluster.masters if not offline(store, m.name)),
                  _runner(cluster))
    ctx = context(image, list(cluster.nodes), **cluster.service_ids)
    ctx.update(runner=runner, verb=verb, hook=ctx["hooks"][hook])
    plan = build_plan("app-hook", ctx)
    data = operation_data(f"app-{verb}", image, **cluster.service_ids, hook=hook)
    return Prepared(f"app-{verb}", plan, data)


__all__ = ["APP_HOOKS", "Prepared", "prepare_app_hook", "prepare_remove",
           "prepare_uninstall"]
