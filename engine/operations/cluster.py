"""The cluster as its operations left it: a fold over completed install, expand and upgrade
operations in the store — one source of truth, no second copy to drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.model import Operation, OpState
from engine.operations.inventory import Node
from engine.store.base import Store

CLUSTER_OPS = ("install", "expand", "upgrade")


@dataclass(frozen=True)
class Cluster:
    """What is installed: the application, its image, the nodes and package versions."""

    app: str
    version: str
    image_dir: str
    nodes: tuple[Node, ...]
    versions: dict[str, str]
    flavor: str | None
    service_uid: int
    installed_by: str

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)


def cluster_state(store: Store, ops: list[Operation] | None = None) -> Cluster | None:
    """Fold completed cluster operations, oldest first; None before an install completes."""
    cluster: Cluster | None = None
    for op in ops if ops is not None else store.list_operations():
        if op.type not in CLUSTER_OPS or op.state is not OpState.COMPLETED:
            continue
        d: dict[str, Any] = dict(op.data)
        if op.type == "install":
            cluster = Cluster(
                app=d["app"], version=d["version"], image_dir=d["image_dir"],
                nodes=tuple(Node.from_dict(n) for n in d["nodes"]),
                versions=dict(d.get("versions", {})), flavor=d.get("flavor"),
                service_uid=int(d.get("service_uid", 1000)), installed_by=op.id)
        elif cluster is not None and op.type == "expand":
            added = Node.from_dict(d["new_node"])
            cluster = Cluster(**{**cluster.__dict__, "nodes": (*cluster.nodes, added)})
        elif cluster is not None and op.type == "upgrade":
            cluster = Cluster(**{**cluster.__dict__, "version": d["version"],
                                 "image_dir": d["image_dir"],
                                 "versions": dict(d.get("versions", {}))})
    return cluster


def last_of_type(ops: list[Operation], op_type: str) -> Operation | None:
    found = [o for o in ops if o.type == op_type]
    return found[-1] if found else None
