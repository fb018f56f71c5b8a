"""Starting the operations that move the application's data or the cluster's evidence: backup,
restore and report — each a plan whose phases hand their files back to the coordinator by digest.
"""

from __future__ import annotations

from pathlib import Path

from engine.archives import verify_backup
from engine.blobs import BlobCache
from engine.errors import NotFound
from engine.license import check_license, read_license
from engine.model import LOCAL_NODE
from engine.operations.build import Image, build_plan, context
from engine.operations.cluster import Cluster
from engine.operations.lifecycle import Prepared, current_image, offline
from engine.operations.ops import operation_data, require_cluster
from engine.store.base import Store


def _needs(image: Image, cluster: Cluster, hook: str, command: str) -> None:
    if image.hook(hook) is None:
        raise NotFound(f"the image {cluster.app} {cluster.version} defines no `{hook}` hook",
                       hint=f"add hooks.{hook} to the manifest to use `gravity {command}`")


def _runner(store: Store, cluster: Cluster) -> str:
    """The first master that is online (with the embedded store every node is)."""
    masters = [m.name for m in cluster.masters]
    return next((m for m in masters if not offline(store, m)), masters[0])


def prepare_backup(store: Store, cache: BlobCache) -> Prepared:
    cluster = require_cluster(store)
    image = current_image(cluster)
    _needs(image, cluster, "backup", "backup FILE")
    ctx = context(image, list(cluster.nodes), **cluster.service_ids)
    ctx["runner"] = _runner(store, cluster)
    return Prepared("backup", build_plan("backup", ctx),
                    operation_data("backup", image, **cluster.service_ids,
                                   runner=ctx["runner"]))


def prepare_restore(store: Store, cache: BlobCache, archive: Path) -> Prepared:
    """Verified before anything is written (exit 2 for an archive that is truncated or whose
    digests do not match), then put into the cache for the node to fetch by digest."""
    verify_backup(archive)
    cluster = require_cluster(store)
    image = current_image(cluster)
    _needs(image, cluster, "restore", "restore FILE")
    ref = cache.add_file(archive, link=False)
    ctx = context(image, list(cluster.nodes), **cluster.service_ids)
    ctx.update(runner=_runner(store, cluster), archive=ref.to_dict())
    return Prepared("restore", build_plan("restore", ctx),
                    operation_data("restore", image, **cluster.service_ids,
                                   archive=ref.to_dict(), source=str(archive.resolve())))


def prepare_report(store: Store, cache: BlobCache) -> Prepared:
    """The dump hook (when the image has one) and, with agents on other hosts, a collection
    of every node's logs; with the embedded store this host has every log already."""
    cluster = require_cluster(store)
    image = current_image(cluster)
    ctx = context(image, list(cluster.nodes), **cluster.service_ids)
    ctx["runner"] = _runner(store, cluster)
    ctx["groups"]["collectors"] = (ctx["groups"]["nodes"] if store.capabilities.shared
                                   else [{"name": LOCAL_NODE}])
    return Prepared("report", build_plan("report", ctx),
                    operation_data("report", image, **cluster.service_ids,
                                   runner=ctx["runner"],
                                   nodes=[n.name for n in cluster.nodes]))


def prepare_license(store: Store, cache: BlobCache, file: Path) -> Prepared:
    """A new license, checked against the installed image's vendor key (exit 2 when it is
    not a valid one) and the cluster (exit 3: expired, another application, too few nodes),
    then handed to a master by digest."""
    cluster = require_cluster(store)
    image = current_image(cluster)
    granted = read_license(file, image.facts.get("license_key"))
    check_license(granted, app=cluster.app, nodes=len(cluster.nodes))
    ref = cache.add_file(file, link=False)
    ctx = context(image, list(cluster.nodes), **cluster.service_ids)
    ctx.update(runner=_runner(store, cluster), license=ref.to_dict())
    return Prepared("license", build_plan("license", ctx),
                    operation_data("license", image, **cluster.service_ids,
                                   license=granted.to_dict()))


__all__ = ["prepare_backup", "prepare_license", "prepare_report", "prepare_restore"]
