"""What an operator sees at a terminal: a live progress block on a TTY, plain lines in a pipe,
and Ctrl-C leaving the operation resumable with a clear message and no traceback.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.conftest import Gravity
from tests.helpers import wait_for

PLAN = """
kind: Plan
metadata: {name: progress}
phases:
  - id: one
    executor: command
    data: {run: "sleep 1.2"}
  - id: two
    executor: command
    retry: {attempts: 2, initial: 100ms}
    data: {run: "test -f again || { touch again; echo not yet; exit 1; }"}
  - id: three
    executor: noop
"""
# /one as a phase that runs until it is stopped, and shows that it has begun.
LONG_ONE = "touch running; sleep 30"


def run_in_pty(g: Gravity, *args: str, interrupt_when: Callable[[], bool] | None = None,
               timeout: float = 60) -> tuple[int, str]:
    """Run gravity with stdout/stderr on a pseudo-terminal; optionally send Ctrl-C as soon as
    `interrupt_when()` holds."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(g.argv(*args), stdin=slave, stdout=slave, stderr=slave,
                            env=g.env(), cwd=g.tmp, start_new_session=True)
    os.close(slave)
    out = b""
    start = time.monotonic()
    sent = False
    while True:
        if interrupt_when is not None and not sent and interrupt_when():
            os.killpg(proc.pid, signal.SIGINT)
            sent = True
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                chunk = b""
            if not chunk and proc.poll() is not None:
                break
            out += chunk
        elif proc.poll() is not None:
            break
        assert time.monotonic() - start < timeout, out.decode(errors="replace")
    os.close(master)
    return proc.wait(), out.decode(errors="replace")


@pytest.mark.slow  # over ~2.5 s: out of --fast
def test_live_progress_on_a_tty(gravity: Gravity, write_plan) -> None:
    gravity("operation", "create", "--plan", str(write_plan(PLAN)), check=0)
    code, out = run_in_pty(gravity, "plan", "resume")
    assert code == 0, out
    assert "] 0/3 phases" in out  # the bar before anything finished
    assert "→ /one on local" in out  # the running phase with its node
    assert "↻ /two on local: command exited with status 1" in out  # a retry, kept above
    assert "1 retries" in out
    assert "\x1b[" in out  # redrawn in place
    assert out.rstrip().endswith("phases completed")  # the one-line summary
    assert "completed; 3/3 phases completed" in out


def test_plain_lines_without_a_tty(gravity: Gravity, write_plan) -> None:
    gravity("operation", "create", "--plan", str(write_plan(PLAN)), check=0)
    proc = gravity("plan", "resume", check=0)
    assert "\x1b[" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.endswith("/one: unstarted -> in_progress (execute, node local, attempt 1)")
               for line in lines)
    assert all(line[:2].isdigit() and line[2] == ":" for line in lines if line.strip())


def test_ctrl_c_leaves_the_operation_resumable(gravity: Gravity, write_plan) -> None:
    gravity("operation", "create", "--plan", str(write_plan(PLAN.replace("sleep 1.2",
                                                                         LONG_ONE))),
            "--id", "op1", check=0)
    running = gravity.node_file("local", "running")
    code, out = run_in_pty(gravity, "plan", "resume", "--block",
                           interrupt_when=running.exists)
    assert code == 130, out
    assert "interrupted: the operation is left resumable" in out
    assert "gravity plan resume" in out
    assert "Traceback" not in out
    log = gravity.changelog("op1")
    assert log[-1]["phase"] == "/one" and log[-1]["to"] == "failed"
    assert log[-1]["error"] == "interrupted by the operator (Ctrl-C)"
    # The coordinator lock was released: resuming works at once.
    running.unlink()
    proc = gravity.spawn("plan", "resume")
    wait_for(running.exists, proc=proc, what="/one to run again")
    assert proc.poll() is None  # it is driving, not refused
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_the_driver_like_ctrl_c(gravity: Gravity, write_plan,
                                                        sig: signal.Signals) -> None:
    """`kill`, `systemctl stop` or a dropped SSH session: the running phase is stopped and
    recorded interrupted by that signal, the exit code is 128 + the signal."""
    gravity("operation", "create", "--plan", str(write_plan(PLAN.replace("sleep 1.2",
                                                                         LONG_ONE))),
            "--id", "op1", check=0)
    running = gravity.node_file("local", "running")
    driver = gravity.spawn("plan", "resume")
    wait_for(running.exists, proc=driver, what="/one to run")
    driver.send_signal(sig)
    _out, err = driver.communicate(timeout=30)
    assert driver.returncode == 128 + sig, err
    assert f"interrupted by {sig.name}: the operation is left resumable" in err
    assert "Traceback" not in err
    log = gravity.changelog("op1")
    assert (log[-1]["phase"], log[-1]["to"]) == ("/one", "failed")
    assert log[-1]["error"] == f"interrupted: {sig.name}"
    # Nothing is left held: the next resume drives at once (and is refused by nobody).
    running.unlink()
    again = gravity.spawn("plan", "resume")
    wait_for(running.exists, proc=again, what="/one to run again")
    again.send_signal(signal.SIGINT)
    again.wait(timeout=30)


def screen(raw: str) -> list[str]:
    """The lines a terminal shows at the end of `raw`, for the escapes the progress block uses:
    `ESC[nF` (up n lines, to column 0) and `ESC[J` (erase to the end of the screen)."""
    import re

    lines: list[str] = [""]
    row = 0
    for token in re.split(r"(\x1b\[\d*F|\x1b\[J|\r?\n)", raw.replace("\r\n", "\n")):
        if token.startswith("\x1b[") and token.endswith("F"):
            row = max(0, row - int(token[2:-1] or 1))
            lines[row] = ""
        elif token == "\x1b[J":
            del lines[row + 1:]
            lines[row] = ""
        elif token == "\n":
            row += 1
            if row == len(lines):
                lines.append("")
        else:
            lines[row] += token
    return lines


def test_debug_lines_stay_whole_above_the_live_block(gravity: Gravity, write_plan) -> None:
    """--debug on a terminal: each log line is printed above the progress block, which is
    drawn again below it, so none is erased by a redraw (every line printed stays on the
    screen)."""
    gravity("operation", "create", "--plan", str(write_plan(PLAN)), check=0)
    code, out = run_in_pty(gravity, "--debug", "plan", "resume", "--block")
    assert code == 0, out
    printed = out.count(" DEBUG gravity.")
    shown = [line for line in screen(out) if " DEBUG gravity." in line]
    assert printed > 10 and "\x1b[" in out  # a live block and many debug lines
    assert len(shown) == printed
    assert screen(out)[-1] == "" and "3/3 phases completed" in screen(out)[-2]
