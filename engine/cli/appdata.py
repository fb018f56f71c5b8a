"""`gravity backup FILE`, `gravity restore FILE` and `gravity report`: operations whose phases
hand files back to this host by digest; the command then writes or packs them here.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
from pathlib import Path

import click

from engine.cli.context import CliContext
from engine.cli.lifecycle import DRY_RUN, OP_ID, drive
from engine.errors import InputError, Problem


def handed_back(obj: CliContext, op_id: str, name: str, nodes: list[str]) -> dict[str, Path]:
    """The files the operation's phases handed back, by node, from this host's cache."""
    from engine.blobs import BlobRef
    from engine.executors.content import Facts

    facts = Facts(obj.store(), "")
    cache = obj.blobs()
    out = {}
    for node in nodes:
        found = facts.get(node, f"{name}-{op_id}")
        if found is not None:
            out[node] = cache.check(BlobRef.from_dict(found, where=f"{name} of {node}"))
    return out


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@OP_ID
@click.pass_obj
def backup(obj: CliContext, file: Path, force: bool, operation_id: str | None) -> None:
    """Back up the application's data into FILE (a tar.gz with a manifest of digests).

    The manifest's `backup` hook runs on a master and writes into an empty directory
    (GRAVITY_BACKUP_DIR); the node archives it and hands it back by digest. Exit 2 when
    the image defines no `backup` hook or FILE exists (without --force).

    \b
    Example:
      gravity backup /var/backups/app-$(date +%F).tar.gz
      gravity backup /var/backups/app.tar.gz --force
    """
    from engine.operations.appdata import prepare_backup
    from engine.views import resolve_operation

    if file.exists() and not force:
        raise InputError(f"{file} exists", [Problem("expected a new file", field="FILE")],
                         hint="choose another FILE, or pass --force to overwrite it")
    op_id = drive(obj, lambda cache: prepare_backup(obj.store(), cache), verb="backup",
                  dry_run=False, operation_id=operation_id, close_on_failure=True)
    assert op_id is not None
    op = resolve_operation(obj.store(), op_id)
    archive = handed_back(obj, op_id, "backup", [str(op.data["runner"])]).popitem()[1]
    tmp = file.with_name(f".{file.name}.tmp")
    file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive, tmp)
    tmp.replace(file)
    click.echo(f"backup of {op.data['app']} {op.data['version']} written to {file} "
               f"({file.stat().st_size} bytes)")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@DRY_RUN
@OP_ID
@click.pass_obj
def restore(obj: CliContext, file: Path, dry_run: bool, operation_id: str | None) -> None:
    """Restore the application's data from FILE, a backup `gravity backup` wrote.

    FILE is verified whole first (every file's digest against its manifest): a truncated
    or altered archive is exit 2 and nothing is written. Then a master fetches it by
    digest, verifies it again and runs the manifest's `restore` hook on it
    (GRAVITY_BACKUP_DIR). Exit 2 when the image defines no `restore` hook.

    \b
    Example:
      gravity restore /var/backups/app-2026-11-29.tar.gz --dry-run
      gravity restore /var/backups/app-2026-11-29.tar.gz
    """
    from engine.archives import verify_backup
    from engine.operations.appdata import prepare_restore

    if dry_run:
        manifest = verify_backup(file)
        click.echo(f"dry run: {file} is a whole backup of {manifest.get('app')} "
                   f"{manifest.get('version')} ({len(manifest['files'])} file(s)); nothing "
                   "was written")
        return
    drive(obj, lambda cache: prepare_restore(obj.store(), cache, file), verb="restore",
          dry_run=False, operation_id=operation_id)


@click.command()
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the report [default: gravity-report-<UTC time>.tar.gz].")
@OP_ID
@click.pass_obj
def report(obj: CliContext, file: Path | None, operation_id: str | None) -> None:
    """Collect a debug report: the dump hook's output, every node's phase logs, and each
    operation's plan and event log, in one tar.gz.

    \b
    Example:
      gravity report --file /tmp/report.tar.gz
    """
    from engine.operations.appdata import prepare_report
    from engine.presentation import plan_document
    from engine.views import phase_output, plan_view, resolve_operation

    file = file or Path(time.strftime("gravity-report-%Y%m%dT%H%M%SZ.tar.gz", time.gmtime()))
    op_id = drive(obj, lambda cache: prepare_report(obj.store(), cache), verb="report",
                  dry_run=False, operation_id=operation_id, close_on_failure=True)
    assert op_id is not None
    store = obj.store()
    op = resolve_operation(store, op_id)
    collectors = list(op.data.get("nodes", [])) if store.capabilities.shared else ["local"]
    tmp = file.with_name(f".{file.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        def add_text(name: str, text: str) -> None:
            data = text.encode()
            info = tarfile.TarInfo(f"report/{name}")
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))

        for each in store.list_operations():
            doc = plan_document(plan_view(store, each))
            add_text(f"operations/{each.id}/plan.json", json.dumps(doc, indent=2))
            log = obj.state_dir / "logs" / f"{each.id}.jsonl"
            if log.is_file():
                tar.add(log, arcname=f"report/operations/{each.id}/events.jsonl")
        dump = phase_output(store, obj.state_dir, op_id, "/dump")
        if dump is not None:
            add_text("dump.txt", dump)
        for node, path in handed_back(obj, op_id, "report", collectors).items():
            tar.add(path, arcname=f"report/nodes/{node}-logs.tar.gz")
    tmp.replace(file)
    click.echo(f"report written to {file} ({file.stat().st_size} bytes)")
