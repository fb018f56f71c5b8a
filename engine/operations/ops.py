"""Starting cluster operations: check the inputs, build the plan from its template, and create
the operation with everything its executors need (manifest facts, inventory, values).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import fsm
from engine.blobs import BlobCache
from engine.errors import InventoryError, NotFound, PreconditionFailed, Problem, Refused
from engine.license import License, check_license, read_license
from engine.model import Operation, OpState, Plan
from engine.operations.build import Image, build_plan, context, load_image
from engine.operations.cluster import Cluster, cluster_state, last_of_type
from engine.operations.condition import PREFLIGHT_FAILED
from engine.operations.inventory import Node, check_against_manifest, load_inventory, parse_node
from engine.operations.releases import Reuse, check_upgrade_version, upgrade_values
from engine.service import Engine, create_operation, finish
from engine.store.base import Store
from engine.views import plan_view

PREFLIGHT = ("/init", "/checks")


@dataclass(frozen=True)
class Prepared:
    """An operation ready to be created (or shown by --dry-run): its plan and its record."""

    op_type: str
    plan: Plan
    data: dict[str, Any]

    def create(self, store: Store, operation_id: str | None = None) -> Operation:
        return create_operation(store, self.plan, operation_id=operation_id,
                                op_type=self.op_type, data=self.data)


def operation_data(kind: str, image: Image, **extra: Any) -> dict[str, Any]:
    """What every cluster operation records: its image (by digest, with what its manifest
    says: see Image.record) and the image's package versions."""
    return {"kind": kind, **image.record(), "versions": image.versions(), **extra}


def licensed(image: Image, license_file: Path | None, *, nodes: int) -> License | None:
    """The license an image that requires one is installed with: refused (exit 3) when none
    is given, expired, or for fewer nodes; exit 2 when it is not a valid license."""
    if not image.facts.get("license_required"):
        return None
    if license_file is None:
        raise Refused(f"the image {image.app} {image.version} requires a license",
                      hint="pass --license FILE with the license the vendor issued; nothing "
                      "was written")
    granted = read_license(license_file, image.facts.get("license_key"))
    check_license(granted, app=image.app, nodes=nodes)
    return granted


def require_cluster(store: Store) -> Cluster:
    cluster = cluster_state(store)
    if cluster is None:
        raise NotFound("no installed cluster in this store",
                       hint="install one first with `gravity install IMAGE_DIR --nodes FILE`")
    return cluster


@dataclass(frozen=True)
class InstallInputs:
    """An install's image, inventory, flavor and license, checked against each other before
    any store is opened: bad input writes nothing, not even an empty database."""

    image: Image
    nodes: list[Node]
    flavor: str | None
    granted: License | None


def check_install(image_dir: Path, nodes_file: Path, *, flavor: str | None,
                  license_file: Path | None = None,
                  accept_eula: bool = False) -> InstallInputs:
    """Validate image + inventory + flavor (+ EULA and license when the image asks for them)."""
    image = load_image(image_dir)
    nodes = load_inventory(nodes_file)
    chosen = check_against_manifest(nodes, image.facts, flavor, file=str(nodes_file))
    if image.facts.get("eula") and not accept_eula:
        raise Refused(f"the image {image.app} {image.version} has an end user license "
                      "agreement that must be accepted first",
                      hint=f"read it with `gravity manifest eula {image.dir}`, then pass "
                      "--accept-eula; nothing was written")
    return InstallInputs(image, list(nodes), chosen, licensed(image, license_file,
                                                              nodes=len(nodes)))


def start_install(store: Store, cache: BlobCache, inputs: InstallInputs, *,
                  values: Mapping[str, Any],
                  service_uid: int | None = None, service_gid: int | None = None,
                  kubeconfig: str | None = None, parallel_workers: int = 1,
                  operation_id: str | None = None) -> Operation:
    """Publish the checked image and create the install, unless a cluster is installed."""
    existing = cluster_state(store)
    if existing is not None:
        raise Refused(f"a cluster ({existing.app} {existing.version}) is already installed "
                      f"in this store by {existing.installed_by}",
                      hint="use `gravity upgrade` or `gravity expand`, or another --state-dir")
    nodes, granted = inputs.nodes, inputs.granted
    image = inputs.image.published(cache)
    ctx = context(image, nodes, parallel_workers=parallel_workers, service_uid=service_uid,
                  service_gid=service_gid)
    plan = build_plan("install", ctx)
    data = operation_data("install", image, nodes=[n.to_dict() for n in nodes],
                          flavor=inputs.flavor,
                          license=granted.to_dict() if granted else None,
                          service_uid=service_uid, service_gid=service_gid,
                          service_from=ctx["cluster"]["master"], kubeconfig=kubeconfig,
                          values=dict(values))
    return create_operation(store, plan, operation_id=operation_id, op_type="install",
                            data=data)


def start_expand(store: Store, cache: BlobCache, node: Node, *,
                 kubeconfig: str | None = None, operation_id: str | None = None) -> Operation:
    """Add one node to the installed cluster, honouring the profile's expandPolicy."""
    cluster = require_cluster(store)
    image = Image.from_record(cluster.image)
    problems = []
    if cluster.node(node.name):
        problems.append(Problem(f"node {node.name} is already in the cluster", field="--node"))
    if any(n.address == node.address for n in cluster.nodes):
        problems.append(Problem(f"address {node.address} is already used", field="--address"))
    profiles = image.facts.get("profiles", {})
    profile = profiles.get(node.profile)
    if profiles and profile is None:
        problems.append(Problem(f"profile {node.profile!r} is not in the manifest "
                                f"(profiles: {', '.join(profiles)})", field="--profile"))
    if problems:
        raise InventoryError("cannot add this node", problems, hint="nothing was written")
    if cluster.license:
        check_license(License.from_record(cluster.license), app=cluster.app,
                      nodes=len(cluster.nodes) + 1)
    if profile is not None and profile.get("expand_policy") == "fixed":
        raise PreconditionFailed(f"profile {node.profile} has expandPolicy: fixed; the cluster "
                                 "cannot grow with nodes of this profile",
                                 hint="add a node of another profile")
    nodes = [*cluster.nodes, node]
    ctx = context(image, nodes, **cluster.service_ids, new_node=node)
    plan = build_plan("expand", ctx)
    data = operation_data("expand", image, new_node=node.to_dict(),
                          **cluster.service_ids, kubeconfig=kubeconfig,
                          values=dict(cluster.values))  # expand never changes the values
    return create_operation(store, plan, operation_id=operation_id, op_type="expand",
                            data=data)


def prepare_upgrade(store: Store, cache: BlobCache, image_dir: Path, *,
                    given: Mapping[str, Any], given_any: bool, reuse: Reuse = Reuse.DEFAULT,
                    skip_version_check: bool = False, parallel_workers: int = 1,
                    force: bool = False, kubeconfig: str | None = None) -> Prepared:
    """Upgrade the installed cluster to the image, after the last upgrade has settled; the
    values follow Helm 3 (see releases.upgrade_values) and the version only goes forward."""
    cluster = require_cluster(store)
    image = load_image(image_dir)
    ops = store.list_operations()
    last = last_of_type([o for o in ops if o.note != PREFLIGHT_FAILED], "upgrade")
    if last is not None and last.state not in (OpState.COMPLETED, OpState.ROLLED_BACK) \
            and not force:
        raise Refused(f"the last upgrade {last.id} is {last.state.value}, neither completed "
                      "nor rolled back", operation_id=last.id,
                      hint="roll it back (`gravity rollback --operation-id "
                      f"{last.id}`) or pass --force to upgrade anyway")
    if image.app != cluster.app:
        raise InventoryError("the image is for another application",
                             [Problem(f"image has {image.app}, the cluster runs {cluster.app}",
                                      file=str(image.dir / "app.yaml"), field="metadata.name")])
    check_upgrade_version(cluster.version, image.version, skip=skip_version_check)
    values, source = upgrade_values(cluster.values, given, given_any, reuse,
                                    cluster.values_from)
    image = image.published(cache)
    previous: dict[str, Any] = dict(cluster.versions)
    if force:  # a half-done earlier upgrade may have left nodes on the new versions
        previous = {k: sorted({v, image.versions().get(k, v)}) for k, v in previous.items()}
    ctx = context(image, list(cluster.nodes), parallel_workers=parallel_workers,
                  **cluster.service_ids, previous_versions=previous,
                  previous_facts=cluster.image.get("image_facts") or {})
    plan = build_plan("upgrade", ctx)
    data = operation_data("upgrade", image, from_version=cluster.version,
                          **cluster.service_ids, kubeconfig=kubeconfig,
                          values=values, values_source=source,
                          nodes=[n.to_dict() for n in cluster.nodes])
    return Prepared("upgrade", plan, data)


def close_if_preflight_failed(engine: Engine, operation_id: str) -> bool:
    """When only preflight phases ran and one failed, nothing changed on the cluster: close
    the operation as failed so the cluster lock is free for a corrected attempt."""
    op = engine.store.get_operation(operation_id)
    if op.state.finished:
        return False
    view = plan_view(engine.store, op)
    if fsm.preflight_failed(view.leaf_states(), PREFLIGHT):
        with contextlib.suppress(Refused):
            finish(engine.store, op, OpState.FAILED, PREFLIGHT_FAILED)
            return True
    return False


def new_node(name: str, address: str, profile: str, role: str) -> Node:
    """A node from `gravity expand` flags, validated like an inventory entry."""
    problems: list[Problem] = []
    node = parse_node({"name": name, "address": address, "profile": profile, "role": role},
                      file=None, field="--node", problems=problems)
    if node is None:
        raise InventoryError("invalid node", problems)
    return node
