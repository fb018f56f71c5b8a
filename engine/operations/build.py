"""Builds install / expand / upgrade plans: the template context from the manifest, the image's
packages and the inventory, expanded by plans/<kind>.yaml into a validated Plan.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.blobs import BlobCache, BlobRef, publish_image
from engine.errors import ManifestError, Problem
from engine.license import KEY_FILE
from engine.manifest import DEFAULT_STORAGE_DRIVER, load_manifest
from engine.model import Plan
from engine.operations.inventory import Node, Role
from engine.operations.templates import expand, load_template
from engine.planfile import plan_from_mapping

VERSION_DIR = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")


@dataclass(frozen=True)
class Image:
    """A cluster image as plans need it: its name and version, its packages (each by its
    path inside the image), and what its manifest says about hooks, profiles and flavors
    (`facts`, plain data kept with every cluster operation, so a later operation — a node
    leaving, an uninstall — needs neither the image directory nor its manifest file).
    `ref` names its published content by digest."""

    dir: Path
    app: str
    version: str
    packages: tuple[dict[str, str], ...]
    facts: Mapping[str, Any]
    ref: BlobRef | None = None

    def published(self, cache: BlobCache) -> Image:
        """The image with its content copied into `cache` (every file a blob, the tree one
        digest): nodes fetch it from there, never from this directory, and editing the
        directory later changes nothing an operation already uses."""
        return replace(self, ref=publish_image(cache, self.dir, link=False).ref)

    def versions(self) -> dict[str, str]:
        return {p["package"]: p["version"] for p in self.packages}

    def hook(self, name: str) -> str | None:
        """The job YAML of a manifest hook, if the image defines it."""
        return self.facts.get("hooks", {}).get(name)

    def flavor(self, name: str | None) -> list[dict[str, Any]] | None:
        """A flavor's minimum counts (`[{profile, count}]`), if the manifest has it."""
        return self.facts.get("flavors", {}).get(name) if name else None

    def record(self) -> dict[str, Any]:
        """What a cluster operation keeps about its image (see `from_record`)."""
        assert self.ref is not None, "publish the image before recording it"
        return {"image_dir": str(self.dir), "image": self.ref.to_dict(), "app": self.app,
                "version": self.version, "packages": list(self.packages),
                "image_facts": dict(self.facts)}

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Image:
        """The image an operation recorded (the installed one, for later operations)."""
        return cls(dir=Path(data["image_dir"]), app=data["app"], version=data["version"],
                   packages=tuple(data.get("packages", ())),
                   facts=data.get("image_facts") or {},
                   ref=BlobRef.from_dict(data["image"], where="the cluster's image"))


def manifest_facts(manifest: Any) -> dict[str, Any]:
    """What plans use of a manifest, as plain data: hooks (name -> job YAML), profiles
    (requirements, volumes, labels) and flavors (minimum counts per profile)."""
    flavors = manifest.installer.flavors
    default = manifest.default_flavor
    return {
        "hooks": {h.name.value: h.source for h in manifest.hooks},
        "profiles": {p.name: {"requirements": requirements_of(p), "volumes": volumes_of(p),
                              "labels": [f"{k}={v}" for k, v in p.labels.items()],
                              "taints": [t.text for t in p.taints],
                              "system": runtime_config(manifest, p),
                              "expand_policy": (p.expand_policy.value
                                                if p.expand_policy is not None else None)}
                     for p in manifest.node_profiles},
        "flavors": {f.name: [{"profile": n.profile, "count": n.count} for n in f.nodes]
                    for f in (flavors.items if flavors is not None else ())},
        "default_flavor": default.name if default is not None else None,
        "release_notes": manifest.release_notes,
        "license_required": manifest.license.enabled,
        "eula": manifest.installer.eula.source if manifest.installer.eula else None,
        "endpoints": [{"name": e.name, "description": e.description,
                       "service": e.service_name, "protocol": e.protocol}
                      for e in manifest.endpoints if not e.hidden],
    }


def scan_packages(image_dir: Path) -> tuple[dict[str, str], ...]:
    """Packages of an image: packages/<name>/<version>/ directories (or <version>.tar.gz).

    Each package must have exactly one version in an image.
    """
    base = image_dir / "packages"
    found: list[dict[str, str]] = []
    problems: list[Problem] = []
    if not base.is_dir():
        return ()
    for pkg in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = []
        for entry in sorted(pkg.iterdir()):
            name = entry.name.removesuffix(".tar.gz") if entry.is_file() else entry.name
            if VERSION_DIR.match(name) and (entry.is_dir() or entry.name.endswith(".tar.gz")):
                versions.append((name, entry))
        if len(versions) != 1:
            problems.append(Problem(
                f"expected exactly one version of package {pkg.name}, found "
                f"{', '.join(v for v, _ in versions) or 'none'}", file=str(pkg)))
            continue
        version, entry = versions[0]
        found.append({"package": pkg.name, "version": version,
                      "path": entry.relative_to(image_dir).as_posix()})
    if problems:
        raise ManifestError(f"image {image_dir} has malformed packages", problems)
    return tuple(found)


def load_image(image_dir: Path | str, *, strict: bool = False) -> Image:
    """Load the manifest of an image directory and list its packages."""
    path = Path(image_dir).resolve()
    loaded = load_manifest(path, strict=strict)
    m = loaded.manifest
    facts = manifest_facts(m)
    key = loaded.base_dir / KEY_FILE
    if key.is_file():  # the vendor's public key: licenses are checked against it
        facts["license_key"] = key.read_text(encoding="utf-8")
    return Image(dir=loaded.base_dir.resolve(), app=str(m.metadata.name),
                 version=str(m.metadata.resource_version),
                 packages=scan_packages(loaded.base_dir), facts=facts)


def _size(size: Any) -> dict[str, Any] | None:
    return {"bytes": size.bytes, "text": size.text} if size is not None else None


def requirements_of(profile: Any) -> dict[str, Any]:
    """A profile's requirements as plain data for the `checks` executor."""
    r = profile.requirements
    return {
        "cpu": r.cpu.min if r.cpu else None,
        "ram": _size(r.ram.min) if r.ram else None,
        "os": [{"name": o.name, "versions": list(o.versions)} for o in r.os],
        "volumes": volumes_of(profile),
        "ports": [{"protocol": p.protocol.value,
                   "ranges": [[rg.start, rg.end] for rg in p.ranges]}
                  for p in (r.network.ports if r.network else ())],
        "custom_checks": [{"description": c.description, "script": c.script}
                          for c in r.custom_checks],
    }


def runtime_config(manifest: Any, profile: Any) -> dict[str, Any]:
    """A node's runtime configuration: the profile's `systemOptions` over the manifest's, part
    by part (as Gravity: a profile's docker, etcd or kubelet section replaces the cluster's),
    with the profile's labels and taints for the kubelet to register with."""
    glob, own = manifest.system_options, profile.system_options

    def pick(part: str) -> Any:
        mine = getattr(own, part, None) if own is not None else None
        return mine if mine is not None else getattr(glob, part)

    docker, etcd, kubelet = pick("docker"), pick("etcd"), pick("kubelet")
    runtime = own.runtime if own is not None and own.runtime is not None else glob.runtime
    args = own.args if own is not None and own.args else glob.args
    privileged = own.allow_privileged if own is not None and \
        own.allow_privileged is not None else glob.allow_privileged
    return {
        "profile": profile.name,
        "runtime_version": runtime.version if runtime is not None else None,
        "runtime_args": list(args),
        "docker": {"storage_driver": str(docker.storage_driver or DEFAULT_STORAGE_DRIVER),
                   "args": list(docker.args)},
        "etcd": {"args": list(etcd.args)},
        "kubelet": {"args": list(kubelet.args)},
        "allow_privileged": bool(privileged),
        "base_image": (own.base_image if own is not None else None) or manifest.base_image,
        "node_labels": [f"{k}={v}" for k, v in profile.labels.items()],
        "node_taints": [t.text for t in profile.taints],
    }


def volumes_of(profile: Any) -> list[dict[str, Any]]:
    return [{
        "path": v.path, "name": v.name, "capacity": _size(v.capacity),
        "filesystems": list(v.filesystems), "create_if_missing": v.create_if_missing,
        "skip_if_missing": v.skip_if_missing, "uid": v.uid, "gid": v.gid,
        "mode": v.mode.value if v.mode is not None else None,
    } for v in profile.requirements.volumes]


NO_PROFILE: dict[str, Any] = {"requirements": {}, "volumes": [], "labels": [], "taints": [],
                              "system": None}


def node_entry(node: Node, image: Image,
               previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A node as templates see it: its inventory entry, what its profile asks (requirements,
    volumes, labels, taints, runtime config `system`) and — in an upgrade — what the installed
    image's profile asked (`previous_labels`, `previous_taints`)."""
    entry = node.to_dict()
    # A manifest without profiles (or an image recorded before a key existed): nothing.
    profile = {**NO_PROFILE, **(image.facts.get("profiles", {}).get(node.profile) or {})}
    entry.update({k: profile[k] for k in NO_PROFILE})
    if entry["system"] is None:
        entry["system"] = {"profile": node.profile}
    if previous is not None:
        old = {**NO_PROFILE, **(previous.get("profiles", {}).get(node.profile) or {})}
        entry.update(previous_labels=old["labels"], previous_taints=old["taints"])
    return entry


def context(image: Image, nodes: Sequence[Node], *, parallel_workers: int = 1,
            service_uid: int | None = None, service_gid: int | None = None,
            new_node: Node | None = None,
            previous_versions: Mapping[str, str] | None = None,
            previous_facts: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything a template may refer to with ${…}; `previous_facts` are the installed
    image's (an upgrade's, so phases know what they change)."""
    entries = [node_entry(n, image, previous_facts) for n in nodes]
    masters = [e for e in entries if e["role"] == Role.MASTER.value]
    workers = [e for e in entries if e["role"] != Role.MASTER.value]
    hooks = {name: {"hook": name, "source": source}
             for name, source in image.facts.get("hooks", {}).items()}
    groups: dict[str, Any] = {"nodes": entries, "masters": masters, "workers": workers,
                              "packages": list(image.packages)}
    if new_node is not None:
        groups["new"] = [node_entry(new_node, image)]
    return {
        "app": {"name": image.app, "version": image.version},
        "image": {"dir": str(image.dir),
                  **({"ref": image.ref.to_dict()} if image.ref is not None else {})},
        "groups": groups,
        "hooks": hooks,
        "packages": list(image.packages),
        "package_names": [p["package"] for p in image.packages],
        "versions": image.versions(),
        "previous_versions": dict(previous_versions or {}),
        "service_uid": service_uid,
        # The service user's IDs when known (given, or decided at install); else the phases
        # take what the first master decided (executors.users).
        "service": {k: v for k, v in (("uid", service_uid), ("gid", service_gid))
                    if v is not None},
        "parallel_workers": parallel_workers,
        "cluster": {
            "size": max(1, len(entries)),
            "node_names": [e["name"] for e in entries],
            "master": masters[0]["name"] if masters else entries[0]["name"],
            "config": {"application": image.app, "version": image.version,
                       "nodes": [{k: e[k] for k in ("name", "address", "role", "profile")}
                                 for e in entries]},
        },
    }


def build_plan(kind: str, ctx: Mapping[str, Any], *, plans: Path | None = None) -> Plan:
    """Expand plans/<kind>.yaml with the context and validate it like any plan file."""
    template, file = load_template(kind, plans)
    doc = expand(template, ctx, file=file)
    return plan_from_mapping(doc, file=file)
