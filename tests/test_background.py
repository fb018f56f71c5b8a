"""Long operations started from a terminal run in the background: a dropped SSH session or
Ctrl-C stops only the command that follows the run, `gravity plan stop` stops the run itself,
and a failure is told by the following command as if it had run the phases itself.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Gravity
from tests.helpers import wait_for

# /hold runs until the test creates `go` (and shows it has begun); /after runs after it.
HOLD = """
kind: Plan
metadata: {name: held}
phases:
  - id: hold
    executor: command
    data: {run: "touch holding; while [ ! -e go ]; do sleep 0.05; done"}
  - id: after
    executor: command
    data: {run: "touch after"}
"""
FAILING = """
kind: Plan
metadata: {name: failing}
phases:
  - id: one
    executor: noop
  - id: two
    executor: command
    data: {run: "echo preparing; echoo 'the hook'"}
"""


class Terminal:
    """A gravity command on a pseudo-terminal (stdin, stdout and stderr), as an operator's
    SSH session runs it; the command leads its own process group, as a shell's job does."""

    def __init__(self, g: Gravity, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(g.argv(*args), stdin=slave, stdout=slave, stderr=slave,
                                     env=g.env(), cwd=g.tmp, start_new_session=True)
        os.close(slave)
        self.out = b""

    def read(self) -> str:
        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.out += chunk
        return self.out.decode(errors="replace")

    def shows(self, text: str) -> bool:
        return text in self.read()

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)  # what a terminal's Ctrl-C or hang-up reaches

    def wait(self, timeout: float = 60) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            self.read()
            assert time.monotonic() < deadline, self.read()
            time.sleep(0.05)
        text = self.read()
        os.close(self.master)
        return self.proc.returncode, text


def test_a_dropped_session_leaves_the_run_going_in_the_background(gravity: Gravity,
                                                                  write_plan) -> None:
    gravity("operation", "create", "--plan", str(write_plan(HOLD)), "--id", "op1", check=0)
    session = Terminal(gravity, "plan", "resume")
    wait_for(gravity.node_file("local", "holding").exists, "/hold to run", proc=session.proc)
    assert session.shows("running in the background")
    session.signal(signal.SIGHUP)  # the SSH connection drops
    code, out = session.wait()
    assert code == 0, out
    assert "Traceback" not in out
    # The run goes on without the session: let /hold finish, and the operation completes.
    gravity.node_file("local", "go").write_text("")
    wait_for(lambda: gravity.states() == {"/hold": "completed", "/after": "completed"},
             "the run to complete in the background")
    wait_for(lambda: json.loads(gravity("operation", "list", "-o", "json", check=0).stdout)[0]
             ["state"] == "completed", "the operation to be closed")
    console = gravity.state_dir / "logs" / "op1.console.log"
    assert "/after: in_progress -> completed" in console.read_text()
    changelog = gravity.changelog("op1")
    assert [r["phase"] for r in changelog if r["to"] == "completed"] == \
        ["/hold", "/after"]


@pytest.mark.slow  # over ~2.5 s: out of --fast
def test_ctrl_c_stops_following_and_plan_stop_stops_the_run(gravity: Gravity,
                                                            write_plan) -> None:
    gravity("operation", "create", "--plan", str(write_plan(HOLD)), "--id", "op1", check=0)
    session = Terminal(gravity, "plan", "resume")
    wait_for(gravity.node_file("local", "holding").exists, "/hold to run", proc=session.proc)
    session.signal(signal.SIGINT)
    code, out = session.wait()
    assert code == 0, out
    assert "operation op1 is still running in the background; `gravity plan --follow` to " \
        "watch, `gravity plan stop` to stop it" in out
    assert gravity.states()["/hold"] == "in_progress"  # Ctrl-C did not reach the run
    # The operator stops the run itself: its phase is recorded interrupted, nothing held.
    stopped = gravity("plan", "stop", check=0).stdout
    assert "stopped the driver of operation op1" in stopped
    last = gravity.changelog("op1")[-1]
    assert (last["phase"], last["to"]) == ("/hold", "failed")
    assert last["error"] == "interrupted: SIGTERM"
    assert "nothing to stop" in gravity("plan", "stop", check=0).stdout
    result = json.loads((gravity.state_dir / "logs" / "op1.result.json").read_text())
    assert result["exit"] == 128 + signal.SIGTERM
    # And it resumes where it stopped, in the foreground when asked (--block).
    gravity.node_file("local", "go").write_text("")
    gravity("plan", "resume", "--block", check=0)
    assert gravity.states() == {"/hold": "completed", "/after": "completed"}


@pytest.mark.slow  # over ~2.5 s: out of --fast
def test_the_following_command_tells_the_failure_with_its_cause(gravity: Gravity,
                                                                write_plan) -> None:
    gravity("operation", "create", "--plan", str(write_plan(FAILING)), "--id", "op1",
            check=0)
    code, out = Terminal(gravity, "plan", "resume").wait()
    assert code == 1, out
    assert "error: phase /two failed on node local: command exited with status 127" in out
    assert "last output:" in out and "echoo: command not found" in out and "preparing" in out
    assert "full output: " + str(gravity.state_dir / "logs" / "op1" / "two.log") in out
    assert "hint: fix the cause, then `gravity plan resume`" in out
    assert "summary: 1/2 phases done" in out and "× /two on local" in out
    # Without a terminal the same command runs in the foreground and says the same.
    proc = gravity("plan", "resume", check=1)
    assert "phase /two failed on node local" in proc.stderr
    assert "echoo: command not found" in proc.stderr
    assert "running in the background" not in proc.stderr


@pytest.mark.slow  # a whole CLI story: out of --fast
def test_rollback_asks_first_and_only_rolls_back_the_active_operation(gravity: Gravity,
                                                                      write_plan) -> None:
    gravity("operation", "create", "--plan", str(write_plan(FAILING)), "--id", "op1",
            check=0)
    gravity("plan", "resume", check=1)
    asked = Terminal(gravity, "rollback")
    wait_for(lambda: asked.shows("Roll back operation op1: undo 2 phase(s), running 0 "
                                 "hook(s)? [y/N]"), "the question", proc=asked.proc)
    asked.type("n\n")
    code, out = asked.wait()
    assert code == 3 and "not confirmed: nothing was done" in out
    assert gravity.states() == {"/one": "completed", "/two": "failed"}
    asked = Terminal(gravity, "rollback")
    wait_for(lambda: asked.shows("[y/N]"), "the question", proc=asked.proc)
    asked.type("y\n")
    code, out = asked.wait()
    assert code == 0, out
    assert "rolled back: operation op1 is rolled_back" in out
    assert gravity.states() == {"/one": "rolled_back", "/two": "rolled_back"}
    # Without a terminal it needs --confirm; a closed operation is reopened only by name.
    gravity("operation", "create", "--plan", str(write_plan(FAILING)), "--id", "op2",
            check=0)
    gravity("plan", "resume", check=1)
    assert "pass --confirm" in gravity("rollback", check=2).stderr
    gravity("plan", "complete", check=0)  # closed as failed ("completed manually")
    refused = gravity("rollback", "--confirm", check=3)
    assert "there is no active operation; the last one, op2, was closed as failed" in \
        refused.stderr
    assert "`gravity rollback --operation-id op2`" in refused.stderr
    gravity("rollback", "--operation-id", "op2", "--confirm", check=0)


@pytest.mark.slow  # a whole cluster installed
def test_install_from_a_terminal_ends_with_its_summary_and_endpoints(gravity: Gravity,
                                                                      tmp_path: Path) -> None:
    images = tmp_path / "quickstart"
    shutil.copytree(ROOT / "examples" / "quickstart", images)
    code, out = Terminal(gravity, "install", str(images / "v1"), "--nodes",
                         str(images / "nodes.yaml"), "--id", "install").wait()
    assert code == 0, out
    assert "install: created operation install" in out
    assert "install: running in the background" in out
    assert "install: operation install is completed" in out
    assert "Endpoints:" in out and "quickstart-web" in out
    assert "phase(s) skipped: Kubernetes API not configured" in out  # the summary's notes
