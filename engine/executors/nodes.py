"""Node executors: `bootstrap` (directories, volumes, service user), `package` (unpack a version
and switch `current` atomically) and `health` (every node has its packages active).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.blobs import BlobRef
from engine.errors import ExecutionError
from engine.executors import runtimeconfig
from engine.executors.base import ExecContext, Executor, atomic_write
from engine.executors.checks import on_node
from engine.executors.hooks import run_rollback_hook
from engine.executors.users import FACT as SERVICE_FACT
from engine.executors.users import ensure_service_user, wanted_ids

NODE_DIRS = ("packages", "resources", "helm", "logs")


def switch_symlink(link: Path, target: str) -> None:
    """Point `link` at `target` atomically (a new symlink renamed over the old one)."""
    tmp = link.with_name(f".{link.name}.new")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


class BootstrapExecutor(Executor):
    """Creates the node's directories, the service user (the IDs given, else the first
    master's) and the profile's volumes."""

    name = "bootstrap"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        if not isinstance(data.get("volumes", []), list):
            return ["`volumes` must be a list"]
        return []

    def execute(self, ctx: ExecContext) -> str | None:
        for d in NODE_DIRS:
            (ctx.workdir / d).mkdir(parents=True, exist_ok=True)
        user = None
        if "service_from" in ctx.data:  # not in the preflight's init: that changes nothing
            user = ensure_service_user(ctx, *wanted_ids(ctx))
            if ctx.facts is not None:
                ctx.facts.publish(SERVICE_FACT, user.to_dict())
        created = []
        for vol in ctx.data.get("volumes") or []:
            if "*" in vol["path"] or "?" in vol["path"]:
                continue
            path = on_node(ctx, vol["path"])
            if not path.exists():
                if vol.get("skip_if_missing") or not vol.get("create_if_missing", True):
                    continue
                path.mkdir(parents=True, exist_ok=True)
                created.append(vol["path"])
            if vol.get("mode") is not None:
                os.chmod(path, int(vol["mode"]))
            if vol.get("uid") is not None or vol.get("gid") is not None:
                with contextlib.suppress(PermissionError):
                    os.chown(path, vol.get("uid", -1) if vol.get("uid") is not None else -1,
                             vol.get("gid", -1) if vol.get("gid") is not None else -1)
        if user is not None:
            atomic_write(ctx.workdir / "service-user.json", json.dumps(user.to_dict()) + "\n")
        atomic_write(ctx.workdir / "node.json", json.dumps(ctx.data.get("node", {})) + "\n")
        if created:
            atomic_write(ctx.workdir / f"bootstrap-{ctx.operation_id}.json",
                         json.dumps({"created": created}) + "\n")
        return f"{len(created)} volume(s) created" if created else None

    def rollback(self, ctx: ExecContext) -> str | None:
        record = ctx.workdir / f"bootstrap-{ctx.operation_id}.json"
        removed = 0
        if record.exists():
            for path in reversed(json.loads(record.read_text())["created"]):
                target = on_node(ctx, path)
                with contextlib.suppress(OSError):
                    target.rmdir()  # only if empty: never delete data
                    removed += 1
            record.unlink()
        return run_rollback_hook(ctx) or (f"{removed} empty volume dir(s) removed" if removed
                                          else None)


class PackageExecutor(Executor):
    """Installs package versions on the node and (optionally) makes each one `current`.

    Layout: <node-dir>/packages/<name>/versions/<version>/ and a `current` symlink. The
    previous target is recorded per operation so rollback switches back exactly; running
    again is a no-op.
    """

    name = "package"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        problems = []
        pkgs = data.get("packages")
        if not isinstance(pkgs, list) or not all(
            isinstance(p, Mapping)
            and all(isinstance(p.get(k), str) for k in ("package", "version"))
            and (isinstance(p.get("source"), str) or isinstance(p.get("path"), str))
            for p in pkgs
        ):
            problems.append("`packages` must be a list of {package, version, path} (a path "
                            "inside `image`) or {package, version, source} (a path on the "
                            "node)")
        elif any("path" in p for p in pkgs) and not isinstance(data.get("image"), Mapping):
            problems.append("`image` ({digest, size}) must name the image whose `path`s "
                            "the packages are")
        if "activate" in data and not isinstance(data["activate"], bool):
            problems.append("`activate` must be true or false")
        if "system" in data:
            problems += runtimeconfig.problems(data["system"])
        return problems

    @staticmethod
    def _dirs(ctx: ExecContext, pkg: Mapping[str, str]) -> tuple[Path, Path, Path]:
        base = ctx.workdir / "packages" / pkg["package"]
        return base, base / "versions" / pkg["version"], base / "current"

    def unpack(self, ctx: ExecContext, pkg: Mapping[str, str]) -> bool:
        _, target, _ = self._dirs(ctx, pkg)
        if target.exists():
            return False
        if "path" in pkg:
            self._from_image(ctx, pkg, target)
            return True
        source = Path(pkg["source"])
        if not source.exists():
            raise ExecutionError(f"package {pkg['package']} {pkg['version']} not found at "
                                 f"{source}", retryable=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            if source.is_dir():
                shutil.copytree(source, staging, dirs_exist_ok=True, symlinks=True)
            else:
                with tarfile.open(source) as tar:
                    tar.extractall(staging, filter="data")
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return True

    @staticmethod
    def _from_image(ctx: ExecContext, pkg: Mapping[str, str], target: Path) -> None:
        """Build the version from the image's content (by digest, fetched to this node if
        need be): a directory as it is, a `.tar.gz` extracted."""
        image = image_of(ctx)
        path = pkg["path"]
        if not path.endswith(".tar.gz"):
            ctx.content.materialize(image, target, path)
            return
        parent, _, name = path.rpartition("/")
        source = ctx.content.materialize(image, target.parent / f".{target.name}.src", parent)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            with tarfile.open(source / name) as tar:
                tar.extractall(staging, filter="data")
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(source, ignore_errors=True)

    def _activate(self, ctx: ExecContext, pkg: Mapping[str, str]) -> str:
        base, _, current = self._dirs(ctx, pkg)
        wanted = f"versions/{pkg['version']}"
        now = os.readlink(current) if current.is_symlink() else None
        history = base / "history" / f"{ctx.operation_id}.json"
        if not history.exists():
            atomic_write(history, json.dumps({"previous": now}) + "\n")
        if now == wanted:
            return f"{pkg['package']} {pkg['version']} already current"
        switch_symlink(current, wanted)
        was = now.rsplit("/", 1)[-1] if now else "none"
        return f"{pkg['package']} {was} -> {pkg['version']}"

    def execute(self, ctx: ExecContext) -> str | None:
        notes = []
        for pkg in ctx.data["packages"]:
            unpacked = self.unpack(ctx, pkg)
            if ctx.data.get("activate", True):
                notes.append(self._activate(ctx, pkg))
            else:
                notes.append(f"{pkg['package']} {pkg['version']} "
                             f"{'unpacked' if unpacked else 'already present'}")
        if ctx.data.get("activate", True) and "system" in ctx.data:
            notes.append(runtimeconfig.write(ctx, ctx.data["system"]))
        publish_packages(ctx)
        return "; ".join(notes) or None

    def rollback(self, ctx: ExecContext) -> str | None:
        notes = []
        for pkg in reversed(ctx.data["packages"]):
            base, _, current = self._dirs(ctx, pkg)
            history = base / "history" / f"{ctx.operation_id}.json"
            if not (ctx.data.get("activate", True) and history.exists()):
                continue
            previous = json.loads(history.read_text())["previous"]
            if previous is None:
                with contextlib.suppress(FileNotFoundError):
                    current.unlink()
                notes.append(f"{pkg['package']}: current removed (no earlier version)")
            else:
                switch_symlink(current, previous)
                notes.append(f"{pkg['package']} -> {previous.rsplit('/', 1)[-1]}")
        restored = runtimeconfig.restore(ctx)
        if restored:
            notes.append(restored)
        publish_packages(ctx)
        hook_note = run_rollback_hook(ctx)
        if hook_note:
            notes.append(hook_note)
        return "; ".join(notes) or "nothing to undo"


class FileExecutor(Executor):
    """Writes one file in the node's directory atomically (e.g. the cluster configuration);
    rollback restores what was there before this operation."""

    name = "file"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        path = data.get("path")
        if not isinstance(path, str) or not path or path.startswith("/") or ".." in path:
            return ["`path` must be a relative path inside the node directory"]
        if "content" not in data:
            return ["`content` is required (text, or data written as JSON)"]
        return []

    def execute(self, ctx: ExecContext) -> str | None:
        target = ctx.workdir / ctx.data["path"]
        backup = ctx.workdir / "backups" / ctx.operation_id / ctx.data["path"]
        if not backup.exists() and not backup.with_name(backup.name + ".absent").exists():
            if target.exists():
                atomic_write(backup, target.read_text())
            else:
                atomic_write(backup.with_name(backup.name + ".absent"), "")
        content = ctx.data["content"]
        text = content if isinstance(content, str) else json.dumps(content, indent=2) + "\n"
        atomic_write(target, text)
        return f"wrote {ctx.data['path']}"

    def rollback(self, ctx: ExecContext) -> str | None:
        target = ctx.workdir / ctx.data["path"]
        backup = ctx.workdir / "backups" / ctx.operation_id / ctx.data["path"]
        if backup.exists():
            atomic_write(target, backup.read_text())
            return f"restored {ctx.data['path']}"
        if backup.with_name(backup.name + ".absent").exists():
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            return f"removed {ctx.data['path']}"
        return "nothing to undo"


def image_of(ctx: ExecContext) -> BlobRef:
    """The image a phase's data names, and the means to read it on this node."""
    if ctx.content is None:
        raise ExecutionError(f"phase {ctx.phase_id} needs the image's content, which is not "
                             f"available where it runs (node {ctx.node})", retryable=False)
    return BlobRef.from_dict(ctx.data.get("image"), where=f"phase {ctx.phase_id} data.image")


def publish_packages(ctx: ExecContext) -> None:
    """Tell the cluster (the store) which versions are current on this node now."""
    if ctx.facts is not None:
        ctx.facts.publish("packages", package_versions(ctx.workdir))


def package_versions(node_dir: Path) -> dict[str, str]:
    """Package name -> current version on a node (read from the `current` symlinks)."""
    out = {}
    base = node_dir / "packages"
    if base.is_dir():
        for pkg in sorted(base.iterdir()):
            cur = pkg / "current"
            if cur.is_symlink():
                out[pkg.name] = os.readlink(cur).rsplit("/", 1)[-1]
    return out


class HealthExecutor(Executor):
    """Checks every listed node has the expected package versions current (a version, or a
    list of acceptable ones)."""

    name = "health"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        if not isinstance(data.get("nodes"), list):
            return ["`nodes` must be a list of node names"]
        return []

    def execute(self, ctx: ExecContext) -> str | None:
        expected: Mapping[str, str | list[str]] = ctx.data.get("packages") or {}
        problems = []
        for node in ctx.data["nodes"]:
            # Its own node from the files; the others from what they published (they are
            # other hosts: their files are not here).
            if node == ctx.node or ctx.facts is None:
                have = package_versions(ctx.workdir) if node == ctx.node else {}
            else:
                have = ctx.facts.get(node, "packages") or {}
            for pkg, version in expected.items():
                accepted = [version] if isinstance(version, str) else list(version)
                if have.get(pkg) not in accepted:
                    problems.append(f"node {node}: package {pkg} is "
                                    f"{have.get(pkg, 'not installed')}, expected "
                                    f"{' or '.join(accepted)}")
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ExecutionError(f"{problems[0]}{more}", "\n".join(problems))
        return f"{len(ctx.data['nodes'])} node(s) healthy"

    def rollback(self, ctx: ExecContext) -> str | None:
        return run_rollback_hook(ctx) or "nothing to undo"


def remove_old_versions(ctx: ExecContext, package: str) -> list[str]:
    """Delete versions of a package other than `current` and the one this operation replaced
    (kept so the operation's own phases can still be rolled back by hand)."""
    base = ctx.workdir / "packages" / package
    keep = set()
    cur = base / "current"
    if cur.is_symlink():
        keep.add(os.readlink(cur).rsplit("/", 1)[-1])
    history = base / "history" / f"{ctx.operation_id}.json"
    if history.exists():
        prev = json.loads(history.read_text()).get("previous")
        if prev:
            keep.add(prev.rsplit("/", 1)[-1])
    removed = []
    versions = base / "versions"
    if versions.is_dir():
        for v in sorted(versions.iterdir()):
            if v.name not in keep and not v.name.startswith("."):
                shutil.rmtree(v, ignore_errors=True)
                removed.append(v.name)
    return removed


def collect_blobs(ctx: ExecContext) -> str | None:
    """Drop the image blobs this node cached and no longer needs: all but those of the
    phase's image (the versions it replaced stay unpacked for rollback; their blobs are not
    needed)."""
    if not isinstance(ctx.data.get("image"), Mapping) or ctx.content is None:
        return None
    freed = ctx.content.collect(image_of(ctx))
    return f"{freed} bytes of old image blobs freed" if freed else None


class GcExecutor(Executor):
    """Removes package versions no longer current or needed to roll back."""

    name = "gc"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        if not isinstance(data.get("packages"), list):
            return ["`packages` must be a list of package names"]
        return []

    def execute(self, ctx: ExecContext) -> str | None:
        removed = [f"{p} {v}" for p in ctx.data["packages"] for v in remove_old_versions(ctx, p)]
        freed = collect_blobs(ctx)
        notes = [f"removed {', '.join(removed)}" if removed else "nothing to remove"]
        if freed:
            notes.append(freed)
        return "; ".join(notes)

    def rollback(self, ctx: ExecContext) -> str | None:
        return "nothing to undo (only unused versions were removed)"
