"""Executors that move files between the coordinator and a node by digest: `backup` (the backup
hook's files archived and handed back), `restore`, `collect` (a node's logs) and `license`.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.archives import verify_backup, write_backup
from engine.blobs import BlobRef
from engine.errors import ExecutionError
from engine.executors.base import ExecContext, Executor
from engine.executors.hooks import run_hook


def _hook(ctx: ExecContext, hook: Mapping[str, str], **env: str) -> str:
    """Run a manifest hook with extra environment (where its backup lives, say)."""
    sub = replace(ctx, data={**ctx.data, "env": {**(ctx.data.get("env") or {}), **env}})
    return run_hook(sub, hook["hook"], hook["source"])


def _handed_back(ctx: ExecContext, name: str, path: Any) -> BlobRef:
    """Give a file this node made to the coordinator and record where it is."""
    if ctx.content is None or ctx.facts is None:
        raise ExecutionError(f"phase {ctx.phase_id} cannot hand its result back from node "
                             f"{ctx.node}", retryable=False)
    ref = ctx.content.upload(path)
    ctx.facts.publish(f"{name}-{ctx.operation_id}", ref.to_dict())
    return ref


def _fetched(ctx: ExecContext, key: str, what: str) -> Path:
    """The blob the phase's `data[key]` names, fetched by digest into this node's cache."""
    if ctx.content is None:
        raise ExecutionError(f"phase {ctx.phase_id} cannot fetch the {what} on node "
                             f"{ctx.node}", retryable=False)
    return ctx.content.fetch(BlobRef.from_dict(ctx.data[key], where=f"phase {ctx.phase_id}"))


class BackupExecutor(Executor):
    """Runs the backup hook into an empty directory (GRAVITY_BACKUP_DIR), archives what it
    wrote with a manifest of digests, and hands the archive to the coordinator."""

    name = "backup"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        hook = data.get("hook")
        return [] if isinstance(hook, Mapping) else ["`hook` must be {hook, source}"]

    def execute(self, ctx: ExecContext) -> str | None:
        work = ctx.workdir / "backups" / ctx.operation_id
        shutil.rmtree(work, ignore_errors=True)  # a retry starts from an empty directory
        files = work / "data"
        files.mkdir(parents=True)
        note = _hook(ctx, ctx.data["hook"], GRAVITY_BACKUP_DIR=str(files))
        archive = work / "backup.tar.gz"
        manifest = write_backup(files, archive, {
            "app": ctx.operation_data.get("app"), "version": ctx.operation_data.get("version"),
            "operation": ctx.operation_id, "node": ctx.node})
        ref = _handed_back(ctx, "backup", archive)
        return f"{note}; {len(manifest['files'])} file(s) archived as {ref.short}"

    def rollback(self, ctx: ExecContext) -> str | None:
        shutil.rmtree(ctx.workdir / "backups" / ctx.operation_id, ignore_errors=True)
        return "backup files removed from the node"


class RestoreExecutor(Executor):
    """Fetches the backup archive by digest, verifies it again, extracts it and runs the
    restore hook on it (GRAVITY_BACKUP_DIR)."""

    name = "restore"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        problems = []
        if not isinstance(data.get("hook"), Mapping):
            problems.append("`hook` must be {hook, source}")
        if not isinstance(data.get("archive"), Mapping):
            problems.append("`archive` must name the backup blob {digest, size}")
        return problems

    def execute(self, ctx: ExecContext) -> str | None:
        archive = _fetched(ctx, "archive", "backup")
        files = ctx.workdir / "restores" / ctx.operation_id
        shutil.rmtree(files, ignore_errors=True)
        files.mkdir(parents=True)
        verify_backup(archive, extract_to=files)
        return _hook(ctx, ctx.data["hook"], GRAVITY_BACKUP_DIR=str(files))

    def rollback(self, ctx: ExecContext) -> str | None:
        return "nothing to undo: restore again from another backup"


class CollectExecutor(Executor):
    """Packs this node's logs (every phase's whole output, its agent's log) for a report and
    hands them to the coordinator."""

    name = "collect"

    def execute(self, ctx: ExecContext) -> str | None:
        logs = ctx.state_dir / "logs"
        archive = ctx.workdir / "reports" / f"{ctx.operation_id}.tar.gz"
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "w:gz") as tar:
            if logs.is_dir():
                tar.add(logs, arcname=f"{ctx.node}/logs")
        ref = _handed_back(ctx, "report", archive)
        return f"logs of {ctx.node} collected ({ref.size} bytes)"

    def rollback(self, ctx: ExecContext) -> str | None:
        return "nothing to undo"




class LicenseExecutor(Executor):
    """Puts the new license on the node (fetched by digest) and runs the licenseUpdated
    hook, when the image has one, with GRAVITY_LICENSE naming the file."""

    name = "license"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        if not isinstance(data.get("license"), Mapping):
            return ["`license` must name the license blob {digest, size}"]
        return []

    def execute(self, ctx: ExecContext) -> str | None:
        blob = _fetched(ctx, "license", "license")
        target = ctx.workdir / "license.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blob, target)
        hook = ctx.data.get("hook")
        if isinstance(hook, Mapping):
            return _hook(ctx, hook, GRAVITY_LICENSE=str(target))
        return "license installed (the image has no licenseUpdated hook)"

    def rollback(self, ctx: ExecContext) -> str | None:
        return "nothing to undo: install the previous license again"


__all__ = ["BackupExecutor", "CollectExecutor", "LicenseExecutor", "RestoreExecutor"]
