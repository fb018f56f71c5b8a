"""`gravity version` and `gravity --version`: the engine's version and the Python running it.
The version is the installed package's (its metadata), else the source tree's engine.__version__.
"""

from __future__ import annotations

import json
import platform

import click

PACKAGE = "gravity-engine"


def engine_version() -> str:
    """The version of the installed gravity-engine package; engine.__version__ when running
    from a source tree that is not installed."""
    from importlib import metadata

    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        from engine import __version__

        return __version__


def version_facts() -> dict[str, str]:
    return {"version": engine_version(), "python": platform.python_version(),
            "python_implementation": platform.python_implementation()}


def version_line() -> str:
    """What `gravity --version` prints."""
    facts = version_facts()
    return f"gravity {facts['version']} (Python {facts['python']})"


@click.command()
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Text, or JSON for scripts.")
def version(output: str) -> None:
    """Print gravity's version and the Python version it runs on.

    \b
    Example:
      gravity version
      gravity version -o json
    """
    facts = version_facts()
    if output == "json":
        click.echo(json.dumps(facts, indent=2))
        return
    click.echo(f"Version:  {facts['version']}\n"
               f"Python:   {facts['python']} ({facts['python_implementation']})")
