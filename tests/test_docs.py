"""The docs cannot drift: generated command output and --help match the real CLI, links resolve.
Runs docs/generate.py --check, checks its normalizing and filling, and every Markdown link.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```+|~~~+).*?^\1\s*$", re.MULTILINE | re.DOTALL)


def load_generate():
    """docs/generate.py as a module (it is a script, not part of the package)."""
    name = "docs_generate"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DOCS / "generate.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.slow
def test_generated_docs_match_the_cli() -> None:
    proc = subprocess.run([sys.executable, str(DOCS / "generate.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, (
        "docs are stale; run `python docs/generate.py`\n" + proc.stdout + proc.stderr)


@pytest.mark.parametrize("command", [[], ["plan", "execute"], ["install"]])
def test_cli_reference_is_what_help_prints(command: list[str]) -> None:
    """The reference renders help in-process; it must equal `gravity … --help` in a terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVITY_")}
    env["COLUMNS"] = "200"
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", *command, "--help"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=60,
                          check=True)
    heading = "## `" + " ".join(["gravity", *command]) + "`\n\n```text\n"
    reference = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert heading in reference
    section = reference.split(heading, 1)[1].split("```", 1)[0]
    assert section == proc.stdout


def test_normalize_replaces_everything_volatile() -> None:
    gen = load_generate()
    raw = ("00:04:39 /w/b: in_progress -> completed (execute, node b, attempt 1) in 0.138s\n"
           "00:04:40 /w/a: in_progress -> completed (execute, node a, attempt 1) in 2.5s\n"
           "Updated: Sun Nov 22 00:04:39 UTC at 2025-11-22T00:04:39.123Z\n"
           "held by (pid 31337 on ops-1, lease 12); see /tmp/gravity-x/logs/op/a.log\n")
    assert gen.normalize(raw, {"/tmp/gravity-x": "$GRAVITY_STATE_DIR"}) == (
        "12:00:00 /w/a: in_progress -> completed (execute, node a, attempt 1) in 0.01s\n"
        "12:00:00 /w/b: in_progress -> completed (execute, node b, attempt 1) in 0.01s\n"
        "Updated: Mon Jan 01 12:00:00 UTC at 2024-01-01T12:00:00.000Z\n"
        "held by (pid 4242 on ops-1, lease 7); see $GRAVITY_STATE_DIR/logs/op/a.log\n")


def test_elided_transitions_say_how_many_were_left_out() -> None:
    gen = load_generate()
    lines = [f"12:00:00 /p{i}: unstarted -> in_progress (execute)" for i in range(6)]
    text = "\n".join(["created", *lines, "done"])
    assert gen.elide_transitions(text, 1, 2).split("\n") == [
        "created", lines[0], "… (3 phase transitions not shown) …", lines[4], lines[5], "done"]


def test_fill_replaces_marked_blocks_and_rejects_unknown_keys() -> None:
    gen = load_generate()
    template = "intro\n<!-- gravity: a -->\nstale\n<!-- /gravity -->\noutro\n"
    used: set[str] = set()
    assert gen.fill(template, {"a": "fresh\n"}, "t.md", used) == (
        "intro\n<!-- gravity: a -->\nfresh\n<!-- /gravity -->\noutro\n")
    assert used == {"a"}
    with pytest.raises(gen.GenerationError, match="'a'"):
        gen.fill(template, {}, "t.md", set())


def markdown_links() -> list[tuple[Path, str]]:
    """Every relative link target in docs/*.md and README.md, outside code blocks."""
    found = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        text = re.sub(r"`[^`\n]*`", "", text)
        for target in LINK.findall(text):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target) and not target.startswith("#"):
                found.append((page, target))
    return found


def test_every_markdown_link_resolves() -> None:
    links = markdown_links()
    assert (ROOT / "README.md", "docs/engine.md") in links  # the scan sees real links
    broken = [f"{page.relative_to(ROOT)}: {target}" for page, target in links
              if not (page.parent / target.split("#", 1)[0]).exists()]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_root_help_lists_each_commands_own_short_help() -> None:
    """`gravity --help` shows static summaries (so it imports nothing); they must not drift."""
    import click

    from engine.cli.main import SHORT_HELP, SUBCOMMANDS, cli

    ctx = click.Context(cli)
    assert set(SHORT_HELP) == set(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None
        assert SHORT_HELP[name] == command.get_short_help_str(limit=200), name


SHELL_OPERATORS = ("|", "||", ";", "&&", ">", ">>", "<", "#", "\\")


def documented_commands() -> list[tuple[str, str]]:
    """Every `gravity …` command line the docs show (README and docs/*.md but the generated
    cli.md): inline code spans, and lines of code blocks that start with it."""
    found = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        if page.name == "cli.md":
            continue
        text = page.read_text(encoding="utf-8")
        blocks = [m.group(0) for m in FENCE.finditer(text)]
        prose = FENCE.sub("", text)
        found += [(page.name, span) for span in re.findall(r"`(gravity [^`\n]+)`", prose)]
        for fenced in blocks:
            found += [(page.name, line.strip().removeprefix("$ ").split(" #")[0])
                      for line in fenced.splitlines()
                      if re.match(r"\s*(\$ )?gravity (-|[a-z])", line)]
    return found


def test_every_documented_command_and_option_exists() -> None:
    """A page naming a command or option the CLI does not have is drift (`--help` is on
    every command)."""
    import shlex

    import click

    from engine.cli.main import cli

    def options(command: click.Command) -> dict[str, bool]:
        """Option name -> whether it takes a value."""
        return {o: not (getattr(p, "is_flag", False) or getattr(p, "count", False))
                for p in command.params if isinstance(p, click.Option)
                for o in (*p.opts, *p.secondary_opts)}

    mentions = documented_commands()
    assert ("operator-guide.md", "gravity plan execute --phase /init") in mentions
    wrong = []
    for page, mention in mentions:
        try:
            words = shlex.split(mention.replace("…", ""))[1:]
        except ValueError:
            words = mention.replace("…", "").split()[1:]
        command, ctx, known = cli, click.Context(cli, info_name="gravity"), options(cli)
        value_next = False
        for word in words:
            if word in SHELL_OPERATORS:
                break
            word = word.strip("[]")
            if value_next:
                value_next = False
                continue
            if word.startswith("-") and len(word) > 1:
                # `--follow\|--tail` in a table: each alternative must exist
                names = [w.split("=", 1)[0] for w in word.replace("\\|", "|").split("|")]
                for name in names:
                    if name not in known and name not in ("--help", "-h"):
                        wrong.append(f"{page}: `{mention}`: {ctx.command_path} has no {name}")
                value_next = known.get(names[-1], False) and "=" not in word
                continue
            if isinstance(command, click.Group) and re.fullmatch(r"[a-z][a-z-]*", word):
                sub = command.get_command(ctx, word)
                if sub is None:
                    wrong.append(f"{page}: `{mention}`: {ctx.command_path} has no command "
                                 f"{word!r}")
                    break
                command = sub
                ctx = click.Context(sub, info_name=word, parent=ctx)
                known = {**known, **options(sub)}
    assert not wrong, "docs name commands or options the CLI does not have:\n" + \
        "\n".join(wrong)
