"""How docs/generate.py turns real `gravity` runs into console transcripts: the shell-like
Session that runs the CLI, and the normalizing that makes its output the same on every run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOSTNAME = "ops-1"
# A command line longer than this is shown over several lines, one option per line.
COMMAND_WIDTH = 100

DATE = re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep"
                  r"|Oct|Nov|Dec) \d\d \d\d:\d\d:\d\d UTC\b")
ISO = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z?")
CLOCK = re.compile(r"\b\d\d:\d\d:\d\d\b")
DURATION = re.compile(r"\) in \d+(?:\.\d+)?s\b")
PID = re.compile(r"\bpid \d+\b")
LEASE = re.compile(r"\blease \d+\b")
DIGEST = re.compile(r"\bsha256:[0-9a-f]{12,64}\b")
BYTES = re.compile(r"\(\d+ bytes\)")
JSON_AT = re.compile(r'"at": \d+(?:\.\d+)?')
JSON_OWNER = re.compile(r'"owner": \d+')
JSON_DURATION = re.compile(r'"duration": \d+(?:\.\d+)?(?:e-?\d+)?')
TRANSITION = re.compile(r"^\d\d:\d\d:\d\d /\S*: \w+ -> \w+ ")
FINISHED = re.compile(r"^\d\d:\d\d:\d\d (/\S*): in_progress -> (?:completed|failed|rolled_back) ")


# Session.batch's program: each command through engine.cli.main.main, as `gravity` runs it.
BATCH = """\
import io, json, sys
from contextlib import redirect_stderr, redirect_stdout
from engine.cli.main import main
results = []
for argv in json.load(sys.stdin):
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    results.append((code, out.getvalue()))
json.dump(results, sys.stdout)
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
    text = JSON_AT.sub('"at": 1704110400.0', text)
    text = JSON_OWNER.sub('"owner": 7', text)
    text = JSON_DURATION.sub('"duration": 0.01', text)
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


def require(text: str, *expected: str, what: str) -> str:
    """Fail generation unless `text` holds every `expected` string: the prose around a block
    says they are there, so the block must show them."""
    missing = [e for e in expected if e not in text]
    if missing:
        raise GenerationError(f"{what}: the page says the output shows {missing!r}; it does "
                              f"not:\n{text}")
    return text


# -- transcripts ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shown:
    """One command as the reader sees it: the command line, what it printed, its exit code."""

    command: str
    output: str
    code: int = 0


def command_lines(command: str) -> list[str]:
    """The command as typed: on one line, or, when long, one option (and its value) per
    continuation line."""
    if len(command) + 2 <= COMMAND_WIDTH:
        return [command]
    words = shlex.split(command)
    groups: list[list[str]] = [[]]
    for word in words:
        if word.startswith("-") and groups[-1] and not groups[-1][-1].startswith("-"):
            groups.append([])
        groups[-1].append(word)
    lines = [shlex.join(g) for g in groups]
    return [lines[0] + " \\"] + [f"    {line} \\" for line in lines[1:-1]] + [f"    {lines[-1]}"]


def block(*steps: Shown) -> str:
    """A console transcript of one or more commands, as a fenced Markdown block."""
    lines = ["```console"]
    for step in steps:
        first, *rest = command_lines(step.command)
        lines.append(f"$ {first}")
        lines.extend(rest)
        if step.output.strip("\n"):
            lines.append(step.output.strip("\n"))
        if step.code:
            lines.append(f"[exit code {step.code}]")
    lines.append("```")
    return "\n".join(lines) + "\n"


def fenced(text: str, language: str) -> str:
    """A file's content as a fenced Markdown block (the input a transcript's command read)."""
    return f"```{language}\n{text.rstrip(chr(10))}\n```\n"


class Session:
    """Runs `gravity` like an operator's shell: one state dir, the repository as the cwd."""

    def __init__(self, state_dir: Path, paths: dict[str, str]) -> None:
        self.state_dir = state_dir
        self.paths = paths
        state_dir.mkdir(parents=True)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVITY_")}
        env.update(GRAVITY_STATE_DIR=str(self.state_dir), GRAVITY_HOSTNAME=HOSTNAME,
                   PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", COLUMNS="80")
        env.update(extra)
        return env

    def argv(self, args: tuple[str, ...]) -> list[str]:
        return [sys.executable, "-m", "engine.cli.main", *args]

    def shown(self, args: tuple[str, ...], output: str, code: int,
              elide: tuple[int, int] | None) -> Shown:
        text = normalize(output, self.paths)
        if elide is not None:
            text = elide_transitions(text, *elide)
        return Shown(normalize("gravity " + shlex.join(args), self.paths), text, code)

    def run(self, args: tuple[str, ...], expect: int, **env: str) -> str:
        """Run one command (stdout and stderr merged, as a terminal shows them); its output."""
        proc = subprocess.run(self.argv(args), cwd=ROOT, env=self.env(**env), text=True,
                              encoding="utf-8", stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=120, check=False)
        if proc.returncode != expect:
            raise GenerationError(f"`gravity {shlex.join(args)}` exited {proc.returncode}, "
                                  f"expected {expect}:\n{proc.stdout}")
        return proc.stdout

    def gravity(self, *args: str, expect: int = 0,
                elide: tuple[int, int] | None = None) -> Shown:
        """Run one command and show it as the reader would see it."""
        return self.shown(args, self.run(args, expect), expect, elide)

    def batch(self, *commands: tuple[str, ...]) -> list[tuple[int, str]]:
        """Run many short commands through the CLI's real entry point in one process (what
        each printed, stdout and stderr merged, and its exit code): cheaper than a process
        each, for tables made from many commands' messages."""
        proc = subprocess.run([sys.executable, "-c", BATCH], cwd=ROOT, env=self.env(),
                              input=json.dumps(commands), text=True, encoding="utf-8",
                              capture_output=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise GenerationError(f"the batch of {len(commands)} commands failed:\n"
                                  f"{proc.stderr}")
        return [(code, normalize(out, self.paths)) for code, out in json.loads(proc.stdout)]

    def completions(self, *words: str) -> list[str]:
        """What pressing TAB after `gravity WORDS` offers (bash's completion protocol). The
        completion offers nothing when the store takes over 3 s to answer, as it can on a
        busy machine: that is asked again, a few times."""
        for _ in range(5):
            out = self.run((), 0, _GRAVITY_COMPLETE="bash_complete",
                           COMP_WORDS=" ".join(("gravity", *words)),
                           COMP_CWORD=str(len(words)))
            offered = [line.split(",", 1)[1] for line in out.splitlines() if "," in line]
            if offered:
                return offered
        raise GenerationError(f"TAB after `gravity {' '.join(words)}` offered nothing")

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
