"""The cluster as its operations left it: a fold over the completed operations in the store
(install, expand, remove, upgrade, uninstall, the app's start/stop/status) — one source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from engine.executors.content import Facts
from engine.model import Operation, OpState
from engine.operations.inventory import Node
from engine.store.base import Store

# Operation types that change what the cluster is, and those that only record about it.
CLUSTER_OPS = ("install", "expand", "remove", "upgrade", "uninstall")
APP_OPS = ("app-start", "app-stop", "app-status", "license")


@dataclass(frozen=True)
class AppStatus:
    """The last `gravity app status`: whether its hook succeeded, when, and which operation
    ran it (its phase log holds the hook's output)."""

    ok: bool
    at: float
    operation: str


@dataclass(frozen=True)
class Cluster:
    """What is installed: the application, its image, the nodes and package versions, and
    what the application's own hooks last said (stopped or running, its status)."""

    app: str
    version: str
    image_dir: str
    nodes: tuple[Node, ...]
    versions: dict[str, str]
    flavor: str | None
    service_uid: int | None
    installed_by: str
    image: dict[str, Any] = field(default_factory=dict)  # build.Image.record() of the last
    values: dict[str, Any] = field(default_factory=dict)  # the application's current values
    values_from: str | None = None  # the operation that set them
    stopped: bool = False
    status: AppStatus | None = None
    license: dict[str, Any] | None = field(default=None)
    service_gid: int | None = None

    @property
    def service_ids(self) -> dict[str, int | None]:
        """The service user's IDs as plan contexts and operation records take them."""
        return {"service_uid": self.service_uid, "service_gid": self.service_gid}

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def masters(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role.value == "master")


def _fold(cluster: Cluster | None, op: Operation) -> Cluster | None:
    """The cluster after one finished operation."""
    d: dict[str, Any] = dict(op.data)
    if op.type == "app-status" and cluster is not None and op.state.finished:
        return replace(cluster, status=AppStatus(op.state is OpState.COMPLETED, op.updated,
                                                 op.id))
    if op.state is not OpState.COMPLETED:
        return cluster
    if op.type == "install":
        return Cluster(
            app=d["app"], version=d["version"], image_dir=d["image_dir"],
            nodes=tuple(Node.from_dict(n) for n in d["nodes"]),
            versions=dict(d.get("versions", {})), flavor=d.get("flavor"),
            service_uid=_int(d.get("service_uid")), service_gid=_int(d.get("service_gid")),
            installed_by=op.id, image=d,
            values=dict(d.get("values") or {}), values_from=op.id,
            license=dict(d["license"]) if d.get("license") else None)
    if cluster is None or op.type == "uninstall":
        return None
    if op.type == "expand":
        return replace(cluster, nodes=(*cluster.nodes, Node.from_dict(d["new_node"])))
    if op.type == "remove":
        return replace(cluster, nodes=tuple(n for n in cluster.nodes
                                            if n.name != d["removed_node"]))
    if op.type == "upgrade":
        return replace(cluster, version=d["version"], image_dir=d["image_dir"],
                       versions=dict(d.get("versions", {})), image=d,
                       values=dict(d.get("values") or {}), values_from=op.id)
    if op.type in ("app-stop", "app-start"):
        return replace(cluster, stopped=op.type == "app-stop")
    if op.type == "license":
        return replace(cluster, license=dict(d.get("license") or {}))
    return cluster


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def cluster_state(store: Store, ops: list[Operation] | None = None) -> Cluster | None:
    """Fold finished operations, oldest first; None before an install completes and after
    an uninstall does. Service user IDs the install left to the first master are read from
    what that node published."""
    cluster: Cluster | None = None
    for op in ops if ops is not None else store.list_operations():
        if op.type in CLUSTER_OPS or op.type in APP_OPS:
            cluster = _fold(cluster, op)
    if cluster is not None and cluster.service_uid is None and cluster.masters:
        decided = Facts(store, "").get(cluster.masters[0].name, "service_user")
        if decided:
            cluster = replace(cluster, service_uid=int(decided["uid"]),
                              service_gid=int(decided["gid"]))
    return cluster


def last_of_type(ops: list[Operation], op_type: str) -> Operation | None:
    found = [o for o in ops if o.type == op_type]
    return found[-1] if found else None
