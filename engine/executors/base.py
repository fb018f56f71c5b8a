"""The executor extension point: what a leaf phase does (precheck, execute, rollback).
Executors are idempotent by contract; the engine owns ordering, retries and state.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from engine.durations import format_duration
from engine.errors import ExecutionError, PhaseTimeout


@dataclass(frozen=True)
class ExecContext:
    """Read-only facts handed to an executor for one attempt of one phase."""

    operation_id: str
    phase_id: str
    node: str
    attempt: int
    data: Mapping[str, Any]
    workdir: Path
    state_dir: Path
    log_path: Path
    deadline: float | None = None  # time.monotonic() value, or None for no timeout
    timeout: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    output: Callable[[str], None] = lambda line: None
    operation_data: Mapping[str, Any] = field(default_factory=dict)
    fence: Any = None  # the holder's ChildFence: its guard kills our processes with the lease
    content: Any = None  # executors.content.Content: the image's files by digest
    facts: Any = None  # executors.content.Facts: what nodes publish about themselves

    def env(self) -> dict[str, str]:
        """The GRAVITY_* variables every phase's processes see."""
        return {
            "GRAVITY_OPERATION_ID": self.operation_id,
            "GRAVITY_PHASE": self.phase_id,
            "GRAVITY_NODE": self.node,
            "GRAVITY_ATTEMPT": str(self.attempt),
            "GRAVITY_STATE_DIR": str(self.state_dir),
            "GRAVITY_NODE_DIR": str(self.workdir),
        }

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


class Executor(ABC):
    """A kind of leaf phase. Subclasses set `name` and implement `execute` (and `rollback`).

    `validate` runs when a plan is created, so bad `data` fails before anything
    is written; `precheck` runs on the node right before `execute`.
    """

    name: ClassVar[str]

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        """Problems with this phase's `data` (empty when fine)."""
        return []

    def precheck(self, ctx: ExecContext) -> None:  # noqa: B027 - optional hook
        """Raise ExecutionError when the phase cannot run on this node now."""

    @abstractmethod
    def execute(self, ctx: ExecContext) -> str | None:
        """Apply the effect (idempotently). Return an optional note shown in the plan."""

    def rollback(self, ctx: ExecContext) -> str | None:
        """Undo the effect (idempotently). Default: nothing to undo."""
        return "nothing to roll back"


TAIL_LINES = 20


def run_process(
    ctx: ExecContext,
    argv: list[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    what: str = "command",
) -> str:
    """Run a process for a phase: output streamed to the phase log, timeout and cancel honoured.

    Returns the tail of the output; raises ExecutionError (exit status != 0) or
    PhaseTimeout. The process gets its own session so the whole group is killed.
    """
    full_env = dict(os.environ)
    full_env.update(ctx.env())
    if env:
        full_env.update(env)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    log = _PhaseLog(ctx.log_path)
    log.write(f"--- attempt {ctx.attempt}: {what} ---\n")
    proc = subprocess.Popen(
        argv, cwd=cwd or ctx.workdir, env=full_env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        text=True, errors="replace", preexec_fn=_die_with_parent,
    )
    stopped: list[str] = []
    if ctx.fence is not None and not ctx.fence.add(proc.pid):
        stopped.append("fenced")  # killed at once; the loop below sees it end

    def watchdog() -> None:
        while proc.poll() is None:
            remaining = ctx.remaining()
            if remaining is not None and remaining <= 0:
                stopped.append("timeout")
            elif ctx.cancel.is_set():
                stopped.append("cancel")
            if stopped:
                _kill_group(proc)
                return
            time.sleep(0.05 if remaining is None else min(0.05, max(remaining, 0.001)))

    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            text = line.rstrip("\n")
            tail.append(text)
            ctx.output(text)
        rc = proc.wait()
    except BaseException:
        # Whatever went wrong here, the phase's processes must not outlive its attempt.
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        guard.join(timeout=1)
        if ctx.fence is not None:
            ctx.fence.remove(proc.pid)
        log.close()
    if log.error:
        tail.append(f"[the phase log {ctx.log_path} could not be written: {log.error}]")
    tail_text = "\n".join(tail)
    if stopped and stopped[0] == "timeout":
        raise PhaseTimeout(f"timed out after {format_duration(ctx.timeout or 0)}", tail_text)
    if stopped and stopped[0] == "fenced":
        raise ExecutionError("stopped: this process lost its lease", tail_text)
    if stopped:
        raise ExecutionError("stopped: the engine is shutting down", tail_text)
    if rc != 0:
        raise ExecutionError(f"{what} exited with status {rc}", tail_text)
    return tail_text


class _PhaseLog:
    """The phase's output file. A full or read-only disk does not fail the phase: writing
    stops and the problem is noted in the output's tail instead."""

    def __init__(self, path: Path) -> None:
        self.error: str | None = None
        self._file: Any = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        except OSError as exc:
            self.error = exc.strerror or str(exc)

    def write(self, text: str) -> None:
        if self._file is None:
            return
        try:
            self._file.write(text)
            self._file.flush()
        except OSError as exc:
            self.error = exc.strerror or str(exc)
            self.close()

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError as exc:
                self.error = self.error or exc.strerror or str(exc)


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGKILL it if the engine dies (kill -9 leaves no orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
