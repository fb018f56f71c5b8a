"""`gravity license install FILE` and `gravity license show`: the cluster's license, checked
against the image vendor's key, and the licenseUpdated hook that tells the application.
"""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.context import CliContext
from engine.cli.lifecycle import OP_ID, drive
from engine.errors import NotFound


@click.group("license")
def license_group() -> None:
    """The cluster's license: install a new one, show the current one."""


@license_group.command("install")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check the license; change nothing.")
@OP_ID
@click.pass_obj
def install(obj: CliContext, file: Path, dry_run: bool, operation_id: str | None) -> None:
    """Install the license in FILE and run the licenseUpdated hook.

    FILE must be a license signed with the image vendor's key (exit 2 when it is not one
    or the signature does not match), not expired, for this application and for at least
    the cluster's number of nodes (exit 3 otherwise); nothing is written before that.

    \b
    Example:
      gravity license install acme-2027.json --dry-run
      gravity license install acme-2027.json
    """
    from engine.license import check_license, read_license
    from engine.operations.appdata import prepare_license
    from engine.operations.lifecycle import current_image
    from engine.operations.ops import require_cluster

    if dry_run:
        cluster = require_cluster(obj.store())
        granted = read_license(file, current_image(cluster).facts.get("license_key"))
        check_license(granted, app=cluster.app, nodes=len(cluster.nodes))
        click.echo(f"dry run: {file} is valid: {granted.describe()}; nothing was written")
        return
    drive(obj, lambda cache: prepare_license(obj.store(), cache, file), verb="license",
          dry_run=False, operation_id=operation_id)


@license_group.command("show")
@click.pass_obj
def show(obj: CliContext) -> None:
    """Print the cluster's license: customer, application, nodes allowed, expiry."""
    from engine.license import License
    from engine.operations.ops import require_cluster

    cluster = require_cluster(obj.store())
    if not cluster.license:
        raise NotFound(f"the cluster ({cluster.app} {cluster.version}) has no license",
                       hint="install one with `gravity license install FILE`")
    click.echo(License.from_record(cluster.license).describe())
