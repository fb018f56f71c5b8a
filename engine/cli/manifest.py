"""`gravity manifest validate|show`: check an Image Manifest and print its normalized form.
Thin layer over engine.manifest; errors propagate as ManifestError for main.py to render.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.cli.params import YAML_OR_JSON, Duration
from engine.errors import NotFound

if TYPE_CHECKING:
    from engine.errors import Problem
    from engine.manifest import LoadedManifest


def _load(path: Path, strict: bool, fetch_timeout: float) -> LoadedManifest:
    """Load the manifest, printing warnings on stderr whether or not it turns out valid."""
    from engine.manifest import ManifestInvalid, load_manifest

    try:
        loaded = load_manifest(path, strict=strict, fetch_timeout=fetch_timeout)
    except ManifestInvalid as exc:
        _warn(exc.warnings)
        raise
    _warn(loaded.warnings)
    return loaded


def _warn(warnings: tuple[Problem, ...] | list[Problem]) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning.render()}", err=True)


def summary(loaded: LoadedManifest) -> str:
    """One line saying what the manifest describes; printed by `validate`."""
    m = loaded.manifest
    flavors = len(m.installer.flavors.items) if m.installer.flavors else 0
    hooks = ", ".join(h.name.value for h in m.hooks) or "none"
    return (
        f"manifest {loaded.path} is valid: {m.kind.value} {m.metadata.name} "
        f"{m.metadata.resource_version} ({len(m.node_profiles)} profiles, {flavors} flavors, "
        f"hooks: {hooks})"
    )


_path_argument = click.argument(
    "path", type=click.Path(path_type=Path, dir_okay=True, file_okay=True)
)
_strict_option = click.option(
    "--strict", is_flag=True, help="Treat warnings (such as unknown fields) as errors."
)
_timeout_option = click.option(
    "--fetch-timeout",
    type=Duration(minimum=0.1),
    default="10s",
    show_default=True,
    help="How long to wait for each http(s):// URI in the manifest (10s, 1m or seconds).",
)


@click.group()
def manifest() -> None:
    """Validate and show Image Manifests (app.yaml).

    PATH is a manifest file or an image directory containing app.yaml.
    """


@manifest.command()
@_path_argument
@_strict_option
@_timeout_option
def validate(path: Path, strict: bool, fetch_timeout: float) -> None:
    """Check a manifest and report every problem at once (exit 2 when invalid)."""
    click.echo(summary(_load(path, strict, fetch_timeout)))


@manifest.command()
@_path_argument
@YAML_OR_JSON
@_strict_option
@_timeout_option
def show(path: Path, output: str, strict: bool, fetch_timeout: float) -> None:
    """Print the normalized manifest: defaults explicit, file:// and http(s):// resolved."""
    data = _load(path, strict, fetch_timeout).manifest.to_dict()
    if output == "json":
        import json

        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        from engine.values import to_yaml

        click.echo(to_yaml(data), nl=False)


@manifest.command()
@_path_argument
@_strict_option
@_timeout_option
def eula(path: Path, strict: bool, fetch_timeout: float) -> None:
    """Print the image's end user license agreement (what `install --accept-eula` accepts).

    Exit 2 when the manifest has none.
    """
    loaded = _load(path, strict, fetch_timeout)
    text = loaded.manifest.installer.eula.source if loaded.manifest.installer.eula else None
    if not text:
        raise NotFound(f"the image at {path} has no end user license agreement "
                       "(installer.eula)")
    click.echo(text.rstrip("\n"))
