"""Regenerates every command output shown in the operator docs from scripted sessions of the CLI.
`python docs/generate.py` writes the docs; `python docs/generate.py --check` fails on a stale one.

How it works:

- The sessions (docs/scenarios.py: operations; docs/input_sessions.py: the manifest and values
  pages' inputs) run the real CLI — subprocesses of `sys.executable -m engine.cli.main` from
  the repository root — against fresh state directories in a temp dir, with the embedded
  SQLite store and fixed operation IDs (`--id`). Each asserts the exit code of every command,
  and where a page's prose says the output shows something, that it does
  (`transcripts.require`), so a change in behaviour stops generation instead of producing a
  wrong page.
- The pages in TEMPLATES are hand-written templates: each command transcript (or input file,
  or table made from the CLI's messages) sits between `<!-- gravity: KEY -->` and
  `<!-- /gravity -->` and is replaced by the block a session produced under KEY. Edit the
  prose freely; never edit a block by hand. A marker without a block, or a block no page uses,
  is an error.
- `docs/cli.md` is generated entirely from the click commands (`engine.cli.main.cli` and the
  lazily loaded sub-commands in `SUBCOMMANDS`), with each command's own `--help` text.
- Volatile output is normalized so that re-running gives byte-identical files (docs/
  transcripts.py): the state dirs become `$GRAVITY_STATE_DIR`, the repository root `$PWD`,
  other scratch files their bare names, dates `Mon Jan 01 12:00:00 UTC`, clock times
  `12:00:00`, ISO times `2024-01-01T12:00:00.000Z`, JSON times `1704110400.0`, durations
  `in 0.01s` (`"duration": 0.01` in JSON), pids `pid 4242`, lease IDs `lease 7`, digests
  `sha256:0123456789ab`, archive sizes `(1234 bytes)`; the host name is fixed with
  GRAVITY_HOSTNAME. Phases that finish together (consecutive "in_progress ->
  completed/failed/rolled_back" lines, e.g. the children of a parallel composite) are listed
  in phase-ID order, since their real order is a race.
  Long transition logs may be shortened to their first and last lines, with a marker saying
  how many were left out.

`--check` regenerates everything in memory and exits 1 with a unified diff when a committed
doc differs (tests/test_docs.py runs it). The sessions run at once, in about twenty seconds.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below

import input_sessions
import scenarios
from transcripts import (  # re-exported for tests/test_docs.py
    ROOT,
    GenerationError,
    elide_transitions,
    normalize,
)

DOCS = ROOT / "docs"
TEMPLATES = ("operator-guide.md", "troubleshooting.md", "operations.md", "operator-tools.md",
             "manifest.md", "values.md")
CLI_DOC = "cli.md"
# What `--help` prints in any terminal of 80 columns or more: click caps the text at 80 - 2.
HELP_WIDTH = 78
SCENARIOS = (*scenarios.SCENARIOS, *input_sessions.SCENARIOS)

BLOCK = re.compile(r"(<!-- gravity: (?P<key>[\w./-]+) -->\n)(?P<body>.*?)(<!-- /gravity -->)",
                   re.DOTALL)

__all__ = ["GenerationError", "elide_transitions", "fill", "main", "normalize", "render"]


# -- the sessions -----------------------------------------------------------------------------
def session_blocks() -> dict[str, str]:
    """Run every scenario (at once, each in its own state dir); their blocks, by key."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started in the background by a shell without job control: SIGINT is ignored and
        # the children would inherit that, so the Ctrl-C story needs it back.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="gravity-docs-") as tmp:
        base = Path(os.path.realpath(tmp))
        # Longest first: a state dir becomes $GRAVITY_STATE_DIR, other temp files bare names.
        paths = {str(ROOT): "$PWD", str(base) + "/": ""}
        with ThreadPoolExecutor(max_workers=len(SCENARIOS)) as pool:
            runs = [pool.submit(scenario, base, dict(paths)) for scenario in SCENARIOS]
            blocks: dict[str, str] = {}
            for run in runs:
                blocks.update(run.result())
        leftover = [k for k, v in blocks.items() if str(base) in v]
        if leftover:
            raise GenerationError(f"temp paths left in blocks: {', '.join(leftover)}")
        return blocks


# -- the CLI reference ------------------------------------------------------------------------
def cli_reference() -> str:
    """docs/cli.md: every command and sub-command with its usage, help text and options."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import click

    from engine.cli.main import cli

    root = click.Context(cli, info_name="gravity", terminal_width=HELP_WIDTH,
                         **cli.context_settings)
    entries: list[tuple[str, click.Command, click.Context, str | None]] = []
    seen: dict[int, str] = {}

    def walk(command: click.Command, ctx: click.Context, path: str) -> None:
        alias_of = seen.get(id(command))
        entries.append((path, command, ctx, alias_of))
        if alias_of is not None:
            return
        seen[id(command)] = path
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    child = click.Context(sub, info_name=name, parent=ctx,
                                          **sub.context_settings)
                    walk(sub, child, f"{path} {name}")

    walk(cli, root, "gravity")
    lines = [
        "# CLI reference",
        "",
        "<!-- Generated by docs/generate.py from the click commands; do not edit by hand. -->",
        "",
        "Every `gravity` command with its usage line, help text and options, exactly as "
        "`--help` prints them.",
        "Global options (`--state-dir`, `--store`, `--quiet`, `--log-format`, the etcd TLS "
        "files) belong to",
        "`gravity` itself and go before the command: `gravity --state-dir /srv/gravity plan`. "
        "The guides",
        "are [operator-guide.md](operator-guide.md) and "
        "[troubleshooting.md](troubleshooting.md).",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for path, command, _, alias_of in entries:
        summary = (f"alias of `{alias_of}`" if alias_of
                   else command.get_short_help_str(limit=120))
        summary = summary.replace("|", "\\|")
        lines.append(f"| [`{path}`](#{slug(path)}) | {summary} |")
    for path, command, ctx, alias_of in entries:
        lines += ["", f"## `{path}`", ""]
        if alias_of:
            lines += [f"An alias of [`{alias_of}`](#{slug(alias_of)}): the same command, "
                      "options and help.", "", "```text", command.get_usage(ctx), "```"]
            continue
        lines += ["```text", command.get_help(ctx).rstrip("\n"), "```"]
    return "\n".join(lines) + "\n"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading made of a command path."""
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")


# -- filling and checking ---------------------------------------------------------------------
def fill(template: str, blocks: dict[str, str], name: str, used: set[str]) -> str:
    """Replace every marked block of `template` with the session's block of that key."""
    def replace(match: re.Match[str]) -> str:
        key = match.group("key")
        if key not in blocks:
            raise GenerationError(f"{name}: no command block named {key!r}")
        used.add(key)
        return match.group(1) + blocks[key] + match.group(4)

    return BLOCK.sub(replace, template)


def render() -> dict[Path, str]:
    """Every generated doc's expected content, by path."""
    blocks = session_blocks()
    used: set[str] = set()
    docs = {}
    for name in TEMPLATES:
        path = DOCS / name
        docs[path] = fill(path.read_text(encoding="utf-8"), blocks, name, used)
    unused = sorted(set(blocks) - used)
    if unused:
        raise GenerationError(f"blocks no page shows: {', '.join(unused)}")
    docs[DOCS / CLI_DOC] = cli_reference()
    return docs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="regenerate in memory; exit 1 with a diff if a doc is stale")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        docs = render()
    except GenerationError as exc:
        print(f"generate.py: {exc}", file=sys.stderr)
        return 1
    stale = []
    for path, text in docs.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == text:
            continue
        stale.append(path)
        if args.check:
            rel = path.relative_to(ROOT).as_posix()
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True),
                f"{rel} (committed)", f"{rel} (generated)"))
        else:
            path.write_text(text, encoding="utf-8")
    took = time.monotonic() - started
    if args.check and stale:
        print(f"\nstale: {', '.join(p.name for p in stale)}; run `python docs/generate.py`",
              file=sys.stderr)
        return 1
    verb = "up to date" if args.check or not stale else f"wrote {len(stale)} file(s)"
    print(f"docs {verb} ({took:.1f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
