"""What every hook sees, whichever runner starts it (the seeds' "Cluster Hooks", "Helm values" and
"Service User"): the image's resources at /var/lib/gravity/resources/ with `runAsUser: -1`
translated, the merged values at /var/lib/gravity/helm/values.yaml for the hooks that get them,
kubectl and helm at /usr/local/bin/, and GRAVITY_SERVICE_USER / GRAVITY_SERVICE_GROUP.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.executors.base import ExecContext

RESOURCES = "/var/lib/gravity/resources"
HELM_DIR = "/var/lib/gravity/helm"
VALUES = f"{HELM_DIR}/values.yaml"
BIN = "/usr/local/bin"
TOOLS = ("kubectl", "helm")
# The hooks that get the merged values (seeds: install and upgrade, and their posts; rollback).
VALUES_HOOKS = frozenset({"install", "postInstall", "update", "postUpdate", "rollback",
                          "postRollback"})
LAUNCHER = Path(__file__).with_name("hook_ns.py")
_RUN_AS = re.compile(r"(?m)^(\s*-?\s*(?:runAsUser|runAsGroup)\s*:\s*)([\"']?)-1\2(\s*(?:#.*)?)$")


def service_ids(ctx: ExecContext) -> tuple[int, int]:
    """The cluster's service user and group IDs: as the operation recorded them, else (an
    install that left them to the first master) as that master published them."""
    uid, gid = ctx.operation_data.get("service_uid"), ctx.operation_data.get("service_gid")
    source = ctx.operation_data.get("service_from")
    if uid is None and source and ctx.facts is not None:
        decided = ctx.facts.get(str(source), "service_user") or {}
        uid, gid = decided.get("uid"), decided.get("gid")
    uid = int(uid) if uid is not None else 1000
    return uid, int(gid) if gid is not None else uid


def translate_ids(text: str, uid: int, gid: int) -> str:
    """`runAsUser: -1` becomes the service user's ID (and `runAsGroup: -1` its group's), at
    pod and container level, as the seeds promise for every YAML resource."""
    def swap(m: re.Match[str]) -> str:
        value = uid if "runAsUser" in m.group(1) else gid
        return f"{m.group(1)}{value}{m.group(3)}"

    return _RUN_AS.sub(swap, text)


def build_resources(image: Path, dest: Path, uid: int, gid: int) -> Path:
    """The resources a hook sees: the image's files (hard links where unchanged) with every
    `.yaml`/`.yml` translated; built beside `dest` and renamed over it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        for root, dirs, files in os.walk(image):
            rel = Path(root).relative_to(image)
            for d in dirs:
                (staging / rel / d).mkdir(exist_ok=True)
            for name in files:
                src, out = Path(root) / name, staging / rel / name
                if src.is_symlink():
                    os.symlink(os.readlink(src), out)
                elif name.endswith((".yaml", ".yml")):
                    out.write_text(translate_ids(src.read_text(encoding="utf-8",
                                                               errors="replace"), uid, gid))
                    shutil.copymode(src, out)
                else:
                    try:
                        os.link(src, out)
                    except OSError:
                        shutil.copy2(src, out)
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            dest.rename(old)
        staging.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def tool_dir(ctx: ExecContext) -> Path:
    """kubectl and helm as this node has them — or, where it has not, a stand-in that says so
    and exits 127 (the hook then fails with that line, not a Python traceback)."""
    tools = ctx.workdir / "hooks" / "bin"
    tools.mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        link = tools / tool
        if link.is_symlink() or link.exists():
            link.unlink()
        found = shutil.which(tool)
        if found is not None and Path(found).resolve() != link.resolve():
            os.symlink(os.path.realpath(found), link)
        else:
            link.write_text(f"#!/bin/sh\necho '{tool} is not installed on node {ctx.node}' "
                            ">&2\nexit 127\n")
            link.chmod(0o755)
    return tools


@dataclass
class HookSetup:
    """One hook run's view of the node: what is mounted where, and its environment."""

    env: dict[str, str] = field(default_factory=dict)
    binds: list[tuple[str, str]] = field(default_factory=list)
    overlays: list[tuple[list[str], str]] = field(default_factory=list)

    def wrap(self, ctx: ExecContext, name: str, argv: list[str]) -> list[str]:
        """The container's command, started inside its private mount namespace."""
        spec = ctx.workdir / "hooks" / f"{name}-mounts.json"
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.write_text(json.dumps({"binds": self.binds, "overlays": self.overlays}))
        return [sys.executable, "-I", "-S", str(LAUNCHER), str(spec), "--", *argv]


def prepare(ctx: ExecContext, name: str, values: Path | None, resources: Path | None
            ) -> HookSetup:
    """The mounts and environment of hook `name` on this node (local runner)."""
    uid, gid = service_ids(ctx)
    setup = HookSetup(env={"GRAVITY_SERVICE_USER": str(uid), "GRAVITY_SERVICE_GROUP": str(gid)})
    if resources is not None:
        view = build_resources(resources, ctx.workdir / "hooks" / "resources", uid, gid)
        setup.binds.append((str(view), RESOURCES))
        setup.env["GRAVITY_RESOURCES_DIR"] = RESOURCES
    if values is not None and name in VALUES_HOOKS:
        setup.binds.append((str(values.parent), HELM_DIR))
        setup.env["GRAVITY_HELM_VALUES"] = VALUES
    setup.overlays.append(([str(tool_dir(ctx))], BIN))
    return setup


def job_manifest(job_doc: Mapping[str, Any], *, name: str, node: str, uid: int, gid: int,
                 values_secret: str | None, resources_host_path: str | None,
                 tools: Mapping[str, str]) -> dict[str, Any]:
    """The Job the Kubernetes runner applies: the hook's own, with the contract added — the
    service user in every container's env, `runAsUser: -1` translated, the values from a
    Secret at /var/lib/gravity/helm, the node's resources at /var/lib/gravity/resources
    (hostPath; the Job is pinned to that node), the node's kubectl and helm (`tools`)."""
    doc = json.loads(translate_ids_doc(json.dumps(job_doc), uid, gid))
    pod = doc.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
    volumes = pod.setdefault("volumes", [])
    mounts: list[dict[str, Any]] = []
    if resources_host_path is not None:
        volumes.append({"name": "gravity-resources",
                        "hostPath": {"path": resources_host_path, "type": "Directory"}})
        mounts.append({"name": "gravity-resources", "mountPath": RESOURCES, "readOnly": True})
        pod.setdefault("nodeSelector", {})["kubernetes.io/hostname"] = node
    if values_secret is not None and name in VALUES_HOOKS:
        volumes.append({"name": "gravity-helm-values",
                        "secret": {"secretName": values_secret}})
        mounts.append({"name": "gravity-helm-values", "mountPath": HELM_DIR,
                       "readOnly": True})
    for tool, path in sorted(tools.items()):  # the node's own binaries, where it has them
        volumes.append({"name": f"gravity-{tool}", "hostPath": {"path": path, "type": "File"}})
        mounts.append({"name": f"gravity-{tool}", "mountPath": f"{BIN}/{tool}",
                       "readOnly": True})
    env = [{"name": "GRAVITY_SERVICE_USER", "value": str(uid)},
           {"name": "GRAVITY_SERVICE_GROUP", "value": str(gid)}]
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        container.setdefault("env", []).extend(env)
        container.setdefault("volumeMounts", []).extend(mounts)
    return doc


def translate_ids_doc(text: str, uid: int, gid: int) -> str:
    """`runAsUser`/`runAsGroup` of -1 in a JSON rendering of a resource."""
    return re.sub(r'("runAs(User|Group)"\s*:\s*)-1\b',
                  lambda m: f"{m.group(1)}{uid if m.group(2) == 'User' else gid}", text)


__all__ = [
    "VALUES_HOOKS",
    "HookSetup",
    "build_resources",
    "job_manifest",
    "prepare",
    "service_ids",
    "translate_ids",
]
