"""Regenerates every command output shown in the operator docs from a scripted session of the CLI.
`python docs/generate.py` writes the docs; `python docs/generate.py --check` fails on a stale one.

How it works:

- The session runs the real CLI — subprocesses of `sys.executable -m engine.cli.main` from the
  repository root — against fresh state directories in a temp dir, with the embedded SQLite
  store and fixed operation IDs (`--id`). Each scenario asserts the exit code of every command,
  so a change in behaviour stops generation instead of producing a wrong page.
- `docs/operator-guide.md` and `docs/troubleshooting.md` are hand-written templates: each
  command transcript sits between `<!-- gravity: KEY -->` and `<!-- /gravity -->` and is
  replaced by the block the session produced under KEY. Edit the prose freely; never edit a
  block by hand. A marker without a block, or a block no page uses, is an error.
- `docs/cli.md` is generated entirely from the click commands (`engine.cli.main.cli` and the
  lazily loaded sub-commands in `SUBCOMMANDS`), with each command's own `--help` text.
- Volatile output is normalized so that re-running gives byte-identical files: the state dirs
  become `$GRAVITY_STATE_DIR`, the repository root `$PWD`, dates `Mon Jan 01 12:00:00 UTC`,
  clock times `12:00:00`, ISO times `2024-01-01T12:00:00.000Z`, durations `in 0.01s`, pids
  `pid 4242`, lease IDs `lease 7`, digests `sha256:0123456789ab`, archive sizes
  `(1234 bytes)`; the host name is fixed with GRAVITY_HOSTNAME. Phases that
  finish together (consecutive "in_progress -> completed/failed/rolled_back" lines, e.g. the
  children of a parallel composite) are listed in phase-ID order, since their real order is a
  race. Long transition logs may be shortened to their first and last lines, with a marker
  saying how many were left out.

`--check` regenerates everything in memory and exits 1 with a unified diff when a committed
doc differs (tests/test_docs.py runs it). The three scenarios run at once, in about ten
seconds together.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TEMPLATES = ("operator-guide.md", "troubleshooting.md", "operations.md")
CLI_DOC = "cli.md"
# What `--help` prints in any terminal of 80 columns or more: click caps the text at 80 - 2.
HELP_WIDTH = 78
HOSTNAME = "ops-1"

BLOCK = re.compile(r"(<!-- gravity: (?P<key>[\w./-]+) -->\n)(?P<body>.*?)(<!-- /gravity -->)",
                   re.DOTALL)
DATE = re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep"
                  r"|Oct|Nov|Dec) \d\d \d\d:\d\d:\d\d UTC\b")
ISO = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z?")
CLOCK = re.compile(r"\b\d\d:\d\d:\d\d\b")
DURATION = re.compile(r"\) in \d+(?:\.\d+)?s\b")
PID = re.compile(r"\bpid \d+\b")
LEASE = re.compile(r"\blease \d+\b")
DIGEST = re.compile(r"\bsha256:[0-9a-f]{12,64}\b")
BYTES = re.compile(r"\(\d+ bytes\)")
TRANSITION = re.compile(r"^\d\d:\d\d:\d\d /\S*: \w+ -> \w+ ")
FINISHED = re.compile(r"^\d\d:\d\d:\d\d (/\S*): in_progress -> (?:completed|failed|rolled_back) ")

# A plan for the "stuck operation" story: a long phase the operator interrupts.
SLOW_PLAN = """\
kind: Plan
metadata:
  name: migrate
phases:
  - id: prepare
    description: Take a backup
    executor: command
    data: {run: "echo backup taken > backup"}
  - id: migrate
    description: A long data migration
    executor: command
    data: {run: "echo migrating; sleep 60", rollback: "echo undone"}
"""


class GenerationError(Exception):
    """The session did not go as scripted (a command's exit code or output changed)."""


# -- normalizing ------------------------------------------------------------------------------
def sort_simultaneous(text: str) -> str:
    """List consecutive 'phase finished' transition lines in phase-ID order (their order is a
    race between phases that ran at the same time)."""
    out: list[str] = []
    run: list[tuple[str, str]] = []
    for line in text.split("\n"):
        match = FINISHED.match(line)
        if match:
            run.append((match.group(1), line))
            continue
        out.extend(item for _, item in sorted(run))
        run = []
        out.append(line)
    out.extend(item for _, item in sorted(run))
    return "\n".join(out)


def normalize(text: str, paths: dict[str, str]) -> str:
    """Replace everything that changes between runs with fixed stand-ins."""
    for raw in sorted(paths, key=len, reverse=True):
        text = text.replace(raw, paths[raw])
    text = DATE.sub("Mon Jan 01 12:00:00 UTC", text)
    text = ISO.sub("2024-01-01T12:00:00.000Z", text)
    text = CLOCK.sub("12:00:00", text)
    text = DURATION.sub(") in 0.01s", text)
    text = PID.sub("pid 4242", text)
    text = LEASE.sub("lease 7", text)
    text = DIGEST.sub("sha256:0123456789ab", text)
    text = BYTES.sub("(1234 bytes)", text)
    return sort_simultaneous(text)


def elide_transitions(text: str, head: int, tail: int) -> str:
    """Keep the first `head` and last `tail` transition lines; say how many were left out."""
    lines = text.split("\n")
    total = sum(1 for line in lines if TRANSITION.match(line))
    if total <= head + tail:
        return text
    out, index, marked = [], 0, False
    for line in lines:
        if TRANSITION.match(line):
            index += 1
            if head < index <= total - tail:
                if not marked:
                    out.append(f"… ({total - head - tail} phase transitions not shown) …")
                    marked = True
                continue
        out.append(line)
    return "\n".join(out)


# -- the session ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shown:
    """One command as the reader sees it: the command line, what it printed, its exit code."""

    command: str
    output: str
    code: int = 0


def block(*steps: Shown) -> str:
    """A console transcript of one or more commands, as a fenced Markdown block."""
    lines = ["```console"]
    for step in steps:
        lines.append(f"$ {step.command}")
        if step.output.strip("\n"):
            lines.append(step.output.strip("\n"))
        if step.code:
            lines.append(f"[exit code {step.code}]")
    lines.append("```")
    return "\n".join(lines) + "\n"


class Session:
    """Runs `gravity` like an operator's shell: one state dir, the repository as the cwd."""

    def __init__(self, state_dir: Path, paths: dict[str, str]) -> None:
        self.state_dir = state_dir
        self.paths = paths
        state_dir.mkdir(parents=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVITY_")}
        env.update(GRAVITY_STATE_DIR=str(self.state_dir), GRAVITY_HOSTNAME=HOSTNAME,
                   PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", COLUMNS="80")
        return env

    def argv(self, args: tuple[str, ...]) -> list[str]:
        return [sys.executable, "-m", "engine.cli.main", *args]

    def shown(self, args: tuple[str, ...], output: str, code: int,
              elide: tuple[int, int] | None) -> Shown:
        text = normalize(output, self.paths)
        if elide is not None:
            text = elide_transitions(text, *elide)
        return Shown(normalize("gravity " + shlex.join(args), self.paths), text, code)

    def gravity(self, *args: str, expect: int = 0,
                elide: tuple[int, int] | None = None) -> Shown:
        """Run one command (stdout and stderr merged, as a terminal shows them)."""
        proc = subprocess.run(self.argv(args), cwd=ROOT, env=self.env(), text=True,
                              encoding="utf-8", stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=120, check=False)
        if proc.returncode != expect:
            raise GenerationError(f"`gravity {shlex.join(args)}` exited {proc.returncode}, "
                                  f"expected {expect}:\n{proc.stdout}")
        return self.shown(args, proc.stdout, proc.returncode, elide)

    def spawn(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """Start a command in the background, its output going to `log`."""
        with open(log, "wb") as out:
            return subprocess.Popen(self.argv(args), cwd=ROOT, env=self.env(), stdout=out,
                                    stderr=subprocess.STDOUT)

    def shell(self, command: str, action: Callable[[], str | None]) -> Shown:
        """A non-gravity step (touch, rm, cat) done in Python and shown as its shell command."""
        output = action() or ""
        return Shown(command, normalize(output, self.paths))


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise GenerationError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- scenarios --------------------------------------------------------------------------------
def guide(base: Path, paths: dict[str, str]) -> dict[str, str]:
    """docs/operator-guide.md: one operation driven phase by phase, a whole rollback, and a
    stuck operation interrupted with Ctrl-C and completed by hand."""
    state = base / "guide"
    paths[str(state)] = "$GRAVITY_STATE_DIR"
    s = Session(state, paths)
    hello = "examples/plans/hello.yaml"
    out: dict[str, str] = {}

    out["guide/create"] = block(s.gravity("operation", "create", "--plan", hello,
                                          "--id", "op-hello"))
    out["guide/plan"] = block(s.gravity("plan"))
    out["guide/refused-execute"] = block(s.gravity("plan", "execute", "--phase", "/verify",
                                                   expect=3))
    out["guide/bad-input"] = block(
        s.gravity("plan", "execute", "--phase", "/verfy", expect=2),
        s.gravity("plan", "execute", expect=2))
    out["guide/execute"] = block(
        s.gravity("plan", "execute", "--phase", "/init"),
        s.gravity("plan", "execute", "--phase", "/masters", "--dry-run"),
        s.gravity("plan", "execute", "--phase", "/masters"),
        s.gravity("plan", "execute", "--phase", "/init"))
    out["guide/refused-rollback"] = block(s.gravity("plan", "rollback", "--phase", "/init",
                                                    expect=3))
    out["guide/rollback-phase"] = block(
        s.gravity("plan", "rollback", "--phase", "/masters/node-1/upgrade"))
    out["guide/failed"] = block(s.gravity("plan", "execute", "--phase", "/verify", "--force",
                                          expect=1))
    out["guide/plan-failed"] = block(s.gravity("plan"))
    log = state / "logs" / "op-hello" / "verify.log"
    out["guide/phase-log"] = block(s.shell("cat $GRAVITY_STATE_DIR/logs/op-hello/verify.log",
                                           log.read_text))
    out["guide/resume"] = block(s.gravity("plan", "resume", "--dry-run"),
                                s.gravity("plan", "resume"))
    out["guide/status"] = block(s.gravity("status"))

    # A whole rollback of an operation that is half-way.
    out["guide/undo-start"] = block(
        s.gravity("operation", "create", "--plan", hello, "--id", "op-undo"),
        s.gravity("plan", "execute", "--phase", "/init"),
        s.gravity("plan", "execute", "--phase", "/masters"))
    out["guide/undo"] = block(s.gravity("rollback", "--dry-run"),
                              s.gravity("rollback", "--confirm"),
                              s.gravity("operation", "list"))

    # A stuck operation: a live owner refuses a second driver, Ctrl-C, then `plan complete`.
    plan_file = base / "migrate.yaml"
    plan_file.write_text(SLOW_PLAN, encoding="utf-8")
    out["guide/slow-plan"] = block(s.shell("cat migrate.yaml", lambda: SLOW_PLAN))
    out["guide/slow-create"] = block(s.gravity("operation", "create", "--plan", str(plan_file),
                                               "--id", "op-migrate"))
    bg_log = base / "resume.out"
    proc = s.spawn("plan", "resume", log=bg_log)
    try:
        phase_log = state / "logs" / "op-migrate" / "migrate.log"
        wait_for(lambda: phase_log.exists() and "migrating" in phase_log.read_text(),
                 "/migrate to start")
        out["guide/live-owner"] = block(s.gravity("plan", "resume", expect=3),
                                        s.gravity("plan", "complete", expect=3))
        before = bg_log.read_bytes()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise GenerationError("Ctrl-C did not stop `gravity plan resume` within 60s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 130:
        raise GenerationError(f"Ctrl-C: `gravity plan resume` exited {code}, expected 130")
    after = bg_log.read_bytes()[len(before):]
    printed = before.decode() + "^C\n" + after.decode()
    out["guide/ctrl-c"] = block(s.shown(("plan", "resume"), printed, code, None))
    out["guide/complete"] = block(
        s.gravity("operation", "create", "--plan", hello, "--id", "op-next", expect=3),
        s.gravity("plan", "--short"), s.gravity("plan", "complete"), s.gravity("status"))
    return out


def quickstart_install(s: Session, elide: tuple[int, int]) -> tuple[Shown, Path]:
    """Install the quickstart (v1) and put node-1's application in maintenance mode, which
    makes the v2 `update` hook refuse."""
    install = s.gravity("install", "examples/quickstart/v1", "--nodes",
                        "examples/quickstart/nodes.yaml", "--id", "install-1", elide=elide)
    return install, s.state_dir / "nodes" / "node-1" / "app" / "maintenance"


UPGRADE = ("upgrade", "examples/quickstart/v2", "--id", "upgrade-1")
MAINTENANCE = "$GRAVITY_STATE_DIR/nodes/node-1/app/maintenance"


def trouble_resume(base: Path, paths: dict[str, str]) -> dict[str, str]:
    """docs/troubleshooting.md, first half: the upgrade's `update` hook fails; read the plan and
    the phase log, fix the cause, resume."""
    state = base / "quickstart"
    paths[str(state)] = "$GRAVITY_STATE_DIR"
    s = Session(state, paths)
    out: dict[str, str] = {}
    install, maintenance = quickstart_install(s, (3, 2))
    out["trouble/install"] = block(install, s.gravity("status"))
    out["trouble/upgrade-fails"] = block(
        s.shell(f"touch {MAINTENANCE}", maintenance.touch),
        s.gravity(*UPGRADE, expect=1, elide=(2, 2)))
    out["trouble/plan"] = block(s.gravity("plan", "--short"))
    phase_log = state / "logs" / "upgrade-1" / "app" / "quickstart.log"
    out["trouble/phase-log"] = block(
        s.shell("cat $GRAVITY_STATE_DIR/logs/upgrade-1/app/quickstart.log", phase_log.read_text))
    out["trouble/resume"] = block(s.shell(f"rm {MAINTENANCE}", maintenance.unlink),
                                  s.gravity("plan", "resume"), s.gravity("status"))
    out["trouble/completed"] = block(s.gravity("rollback", "--confirm", expect=3))
    return out


def trouble_rollback(base: Path, paths: dict[str, str]) -> dict[str, str]:
    """docs/troubleshooting.md, second half: the same failure on a fresh cluster, undone with
    `gravity rollback`; every node is back on 1.0.0."""
    state = base / "rollback"
    paths[str(state)] = "$GRAVITY_STATE_DIR"
    s = Session(state, paths)
    out: dict[str, str] = {}
    install, maintenance = quickstart_install(s, (0, 0))
    out["trouble/again"] = block(
        install,
        s.shell(f"touch {MAINTENANCE}", maintenance.touch),
        s.gravity(*UPGRADE, expect=1, elide=(0, 2)))
    out["trouble/rollback"] = block(s.gravity("rollback", "--dry-run"),
                                    s.gravity("rollback", "--confirm", elide=(2, 2)))
    history = state / "nodes" / "node-1" / "app" / "history"
    out["trouble/rolled-back"] = block(
        s.gravity("status"),
        s.shell("cat $GRAVITY_STATE_DIR/nodes/node-1/app/history", history.read_text),
        s.shell(f"rm {MAINTENANCE}", maintenance.unlink))
    return out


def lifecycle(base: Path, paths: dict[str, str]) -> dict[str, str]:
    """docs/operations.md: a node removed and one refused, the application's hooks, a backup
    restored, a report, and the uninstall."""
    state = base / "lifecycle"
    paths[str(state)] = "$GRAVITY_STATE_DIR"
    s = Session(state, paths)
    out: dict[str, str] = {}
    quickstart_install(s, (0, 0))
    s.gravity("expand", "--node", "node-4", "--address", "10.0.0.4", "--profile", "worker",
              "--id", "expand-1")
    out["ops/remove"] = block(
        s.gravity("remove", "node-4", "--dry-run"),
        s.gravity("remove", "node-4", "--confirm", "--id", "remove-1"),
        s.gravity("remove", "node-1", "--confirm", expect=3),
        s.gravity("remove", "node-3", expect=2))
    out["ops/app"] = block(
        s.gravity("app", "status", "--id", "status-1"),
        s.gravity("app", "stop", "--id", "stop-1"),
        s.gravity("app", "status", "--id", "status-2"))
    archive = base / "backup.tar.gz"
    paths[str(archive)] = "backup.tar.gz"
    out["ops/backup"] = block(
        s.gravity("backup", str(archive), "--id", "backup-1"),
        s.gravity("restore", str(archive), "--dry-run"),
        s.gravity("restore", str(archive), "--id", "restore-1"))
    report = base / "report.tar.gz"
    paths[str(report)] = "report.tar.gz"
    out["ops/report"] = block(s.gravity("report", "--file", str(report), "--id", "report-1"))
    out["ops/uninstall"] = block(
        s.gravity("uninstall", expect=2),
        s.gravity("uninstall", "--confirm", "--id", "uninstall-1", elide=(2, 2)),
        s.gravity("status"))
    return out


SCENARIOS = (guide, trouble_resume, trouble_rollback, lifecycle)


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
