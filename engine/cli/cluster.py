"""`gravity install`, `gravity expand` (alias `join`) and `gravity upgrade`: build the operation's
plan from plans/*.yaml, then run it to the end (or stop after creating it with --manual).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import click

from engine.cli.background import BLOCK, DriveSpec
from engine.cli.context import CliContext
from engine.cli.drive import run, summary
from engine.cli.operation import operation_id_option
from engine.cli.values import PARAM_BY_KIND, PARAM_FILES, values_from_params, values_options
from engine.errors import InputError, Problem

MANUAL = click.option("-m", "--manual", is_flag=True,
                      help="Create the plan and stop; print the commands to drive it.")
KUBECONFIG = click.option(
    "--kubeconfig", envvar="GRAVITY_KUBECONFIG", default=None,
    help="kubeconfig for kubectl phases and hook Jobs [env GRAVITY_KUBECONFIG]. Without it, "
    "hooks run as local processes and kubectl phases complete as 'skipped: Kubernetes API "
    "not configured'.")
OP_ID = operation_id_option("Operation ID to use (default: generated): 1 to 128 ASCII "
                            "letters, digits, '-' or '_'.")


def _drive(obj: CliContext, op_id: str, manual: bool, verb: str, block: bool) -> None:
    """Run the new operation to the end (in the background when started from a terminal),
    or print how to drive it by hand."""
    click.echo(f"{verb}: created operation {op_id}")
    if manual:
        click.echo("the plan is ready; nothing has run. Drive it with:\n"
                   "  gravity plan                          # see the phases\n"
                   "  gravity plan execute --phase /init    # run phases one by one\n"
                   "  gravity plan resume                   # or run everything left")
        return
    if not run(obj, DriveSpec(op_id, verb, close_preflight=True), block=block):
        return
    summary(obj, op_id, verb)
    if verb == "install":
        from engine.presentation import endpoint_lines

        for line in endpoint_lines(obj.store().get_operation(op_id).data):
            click.echo(line)


@click.command()
@click.argument("image_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--nodes", "nodes_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Inventory YAML: a list of {name, address, profile, role: master|node}.")
@click.option("--flavor", default=None,
              help="Installation flavor (default: the manifest's default flavor).")
@click.option("--service-uid", type=click.IntRange(min=0), default=None,
              help="User ID of the service user on every node [default: Gravity's `planet` "
              "user, created with the next free system ID on the first master when missing, "
              "the same on every other node].")
@click.option("--service-gid", type=click.IntRange(min=0), default=None,
              help="Group ID of the service user's group [default: --service-uid, or as "
              "above].")
@click.option("--parallel-workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Non-master nodes set up at once.")
@click.option("--license", "license_file", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The license the vendor issued (needed when the image has "
              "license.enabled); checked for signature, expiry and node count.")
@click.option("--accept-eula", is_flag=True,
              help="Accept the image's end user license agreement (read it with `gravity "
              "manifest eula IMAGE_DIR`); needed when the image has one.")
@values_options
@MANUAL
@BLOCK
@KUBECONFIG
@OP_ID
@click.pass_context
def install(ctx: click.Context, image_dir: Path, nodes_file: Path, flavor: str | None,
            service_uid: int | None, service_gid: int | None, parallel_workers: int,
            license_file: Path | None,
            accept_eula: bool, manual: bool, block: bool, kubeconfig: str | None,
            operation_id: str | None, **_: object) -> None:
    """Install the cluster image in IMAGE_DIR on the nodes of the inventory.

    Validates the manifest, the inventory against the chosen flavor (its minimum count of
    each profile) and the values before anything is written (exit 2 on bad input); an
    image with a EULA needs --accept-eula and one with license.enabled needs --license
    (exit 3 without). A failed preflight closes the operation (exit 1); a later failure
    leaves it resumable with `gravity plan resume`. Prints the application's endpoints
    at the end.

    \b
    Example:
      gravity install ./image --nodes nodes.yaml --values prod.yaml
      gravity install ./image --nodes nodes.yaml --set replicas=3 --manual
    """
    from engine.operations.ops import check_install, start_install

    obj: CliContext = ctx.obj
    values = values_from_params(ctx)
    inputs = check_install(image_dir, nodes_file, flavor=flavor, license_file=license_file,
                           accept_eula=accept_eula)  # before the store exists: bad input
    op = start_install(obj.store(), obj.blobs(), inputs,  # writes nothing
                       values=values, service_uid=service_uid, service_gid=service_gid,
                       kubeconfig=kubeconfig, parallel_workers=parallel_workers,
                       operation_id=operation_id)
    _drive(obj, op.id, manual, "install", block)


class Aliased(click.Command):
    """A command also registered under another name (`join` for `expand`): called by that
    name, its help says whose alias it is and its examples use the name typed."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        called = ctx.info_name
        if not called or called == self.name or not self.help:
            super().format_help_text(ctx, formatter)
            return
        text = inspect.cleandoc(self.help).partition("\f")[0]
        text = text.replace(f"gravity {self.name} ", f"gravity {called} ")
        first, _, rest = text.partition("\n")
        text = f"{first}\n\n`gravity {called}` is an alias of `gravity {self.name}`.\n{rest}"
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_text(text)


@click.command(cls=Aliased)
@click.option("--node", "name", required=True, help="Name of the new node.")
@click.option("--address", required=True, help="Its address.")
@click.option("--profile", required=True, help="Its node profile from the manifest.")
@click.option("--role", type=click.Choice(["node", "master"]), default="node",
              show_default=True, help="Role of the new node in the cluster.")
@MANUAL
@BLOCK
@KUBECONFIG
@OP_ID
@click.pass_context
def expand(ctx: click.Context, name: str, address: str, profile: str, role: str, manual: bool,
           block: bool, kubeconfig: str | None, operation_id: str | None) -> None:
    """Add a node to the installed cluster.

    The node gets the cluster's image, and its hooks the application's current values:
    an expand never changes them (use `gravity upgrade` for that). Refused (exit 3) when
    the profile's expandPolicy is `fixed`.

    \b
    Example:
      gravity expand --node node-4 --address 10.0.0.4 --profile worker
      gravity expand --node db-1 --address 10.0.0.9 --profile db --manual
    """
    from engine.operations.ops import new_node, start_expand

    obj: CliContext = ctx.obj
    node = new_node(name, address, profile, role)
    op = start_expand(obj.store(), obj.blobs(), node, kubeconfig=kubeconfig,
                      operation_id=operation_id)
    _drive(obj, op.id, manual, "expand", block)


REUSE = {"reuse_values": "reuse", "reset_values": "reset",
         "reset_then_reuse_values": "reset-then-reuse"}


@click.command()
@click.argument("image_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--parallel-workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Non-master nodes upgraded at once (masters always one at a time).")
@click.option("--force", is_flag=True,
              help="Upgrade even though the last upgrade was neither completed nor rolled "
              "back.")
@click.option("--skip-version-check", is_flag=True,
              help="Upgrade to the installed version or an older one (refused otherwise).")
@values_options
@click.option("--reuse-values", is_flag=True,
              help="Merge the given values over the last release's (as Helm 3).")
@click.option("--reset-values", is_flag=True,
              help="Use only the given values, even when none are given.")
@click.option("--reset-then-reuse-values", is_flag=True,
              help="As Helm 3.14; an image has no chart defaults, so the same as "
              "--reuse-values.")
@click.option("--dry-run", is_flag=True,
              help="Print the release notes, the values and the phases; create nothing.")
@MANUAL
@BLOCK
@KUBECONFIG
@OP_ID
@click.pass_context
def upgrade(ctx: click.Context, image_dir: Path, parallel_workers: int, force: bool,
            skip_version_check: bool, reuse_values: bool, reset_values: bool,
            reset_then_reuse_values: bool, dry_run: bool, manual: bool, block: bool,
            kubeconfig: str | None, operation_id: str | None, **_: object) -> None:
    """Upgrade the installed cluster to the image in IMAGE_DIR.

    Prints the new image's release notes first. Masters are upgraded one at a time,
    other nodes up to --parallel-workers at once; then the `update` and `postUpdate`
    hooks run. Values follow Helm 3: with no --values/--set the last release's values
    are reused; with any, only the given ones apply unless --reuse-values. Refused
    (exit 3): the installed version or an older one (--skip-version-check), an earlier
    upgrade neither completed nor rolled back (--force). If a phase fails: fix it and
    `gravity plan resume`, or undo everything with `gravity rollback`.

    \b
    Example:
      gravity upgrade ./v2 --dry-run
      gravity upgrade ./v2 --values prod.yaml --set image.tag=2.0.1
      gravity upgrade ./v2 -m        # only create the plan: drive it by hand
    """
    from engine.operations.ops import prepare_upgrade
    from engine.operations.releases import Reuse

    obj: CliContext = ctx.obj
    chosen = [k for k in REUSE if ctx.params[k]]
    if len(chosen) > 1:
        raise InputError("choose one way to treat the last release's values", [Problem(
            "at most one of --reuse-values, --reset-values, --reset-then-reuse-values",
            field="--" + chosen[1].replace("_", "-"))])
    given_any = any(ctx.params.get(k) for k in (PARAM_FILES, *PARAM_BY_KIND.values()))
    prepared = prepare_upgrade(
        obj.store(), obj.blobs(), image_dir, given=values_from_params(ctx), given_any=given_any,
        reuse=Reuse(REUSE[chosen[0]]) if chosen else Reuse.DEFAULT,
        skip_version_check=skip_version_check, parallel_workers=parallel_workers, force=force,
        kubeconfig=kubeconfig)
    notes = prepared.data.get("image_facts", {}).get("release_notes")
    if notes:
        click.echo(f"Release notes of {prepared.data['app']} {prepared.data['version']}:\n"
                   f"{plain_text(notes)}\n")
    click.echo(f"values: {prepared.data['values_source']}")
    if dry_run:
        click.echo(f"dry run: the upgrade would run {len(prepared.plan.leaves)} phase(s); "
                   "nothing was written")
        return
    op = prepared.create(obj.store(), operation_id)
    _drive(obj, op.id, manual, "upgrade", block)


def plain_text(markup: str) -> str:
    """Release notes for a terminal: HTML tags dropped, entities decoded, blank runs cut."""
    import html
    import re

    text = html.unescape(re.sub(r"<[^>]+>", "", markup))
    return re.sub(r"\n{3,}", "\n\n", text).strip()
