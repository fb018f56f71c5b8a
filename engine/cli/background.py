"""Long operations started from a terminal run in the background: a detached driver in its own
session (a dropped SSH session cannot stop it) while this command follows its progress.

The driver is `gravity plan drive` (hidden): its output goes to the event log and to
`<state-dir>/logs/<operation>.console.log`, and how its run ended (exit code, message, hint) to
`<operation>.result.json`, which the following command relays as its own end. Ctrl-C (or a hang-
up) only stops following. `--block`, or no terminal, keeps the run in the command itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from engine.cli.context import CliContext
from engine.cli.progress import TtyProgress
from engine.errors import Relayed

BLOCK = click.option(
    "--block", is_flag=True,
    help="Run in this command, in the foreground (the default without a terminal): stopping "
    "the command stops the operation. From a terminal the operation otherwise runs in the "
    "background and this command follows it.")


@dataclass(frozen=True)
class DriveSpec:
    """What the driver does: run (`execute`) or roll back the operation to its end."""

    operation_id: str
    verb: str
    action: str = "execute"
    max_parallel: int = 8
    local: bool = False
    agent_timeout: float = 60.0
    keep_going: bool = False
    close_preflight: bool = False  # a failed preflight closes the operation (install, …)
    close_on_failure: bool = False  # any failure closes it (a probe of the application)


def console_log(state_dir: Path, operation_id: str) -> Path:
    return state_dir / "logs" / f"{operation_id}.console.log"


def result_file(state_dir: Path, operation_id: str) -> Path:
    return state_dir / "logs" / f"{operation_id}.result.json"


def wanted(block: bool) -> bool:
    """Whether to run in the background: on a terminal (stdin, stdout and stderr), unless
    --block."""
    return not block and all(s.isatty() for s in (sys.stdin, sys.stdout, sys.stderr))


def write_result(state_dir: Path, operation_id: str, exit_code: int, message: str = "",
                 hint: str | None = None) -> None:
    """The driver's own end, for the command that follows it (written whole, then renamed)."""
    path = result_file(state_dir, operation_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"exit": exit_code, "message": message, "hint": hint}) + "\n")
    os.replace(tmp, path)


def _global_args(obj: CliContext) -> list[str]:
    """The global options that make the driver see what this command sees."""
    args = ["--state-dir", str(obj.state_dir), "--store", obj.url, "--log-format",
            obj.log_format]
    for flag, value in (("--etcd-cacert", obj.tls.cacert), ("--etcd-cert", obj.tls.cert),
                        ("--etcd-key", obj.tls.key), ("--advertise-addr", obj.serve.advertise),
                        ("--blob-cert", obj.serve.cert), ("--blob-key", obj.serve.key)):
        if value:
            args += [flag, str(value)]
    if obj.serve.port:
        args += ["--blob-port", str(obj.serve.port)]
    return args


def start(obj: CliContext, spec: DriveSpec) -> subprocess.Popen[bytes]:
    """Start the detached driver of `spec`."""
    result_file(obj.state_dir, spec.operation_id).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "engine.cli.main", *_global_args(obj), "plan", "drive",
            "--operation-id", spec.operation_id, "--verb", spec.verb, "--action", spec.action,
            "--max-parallel", str(spec.max_parallel), "--agent-timeout",
            str(spec.agent_timeout)]
    argv += [flag for flag, on in (("--local", spec.local), ("--keep-going", spec.keep_going),
                                   ("--close-preflight", spec.close_preflight),
                                   ("--close-on-failure", spec.close_on_failure)) if on]
    log = console_log(obj.state_dir, spec.operation_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "GRAVITY_QUIET"}
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)


def _transition(rec: Any) -> dict[str, Any]:
    return {"phase": rec.phase_id, "to": rec.to_state.value, "node": rec.node,
            "error": rec.error, "note": rec.note}


def follow(obj: CliContext, spec: DriveSpec) -> bool:
    """Start the driver and follow it on this terminal until the operation ends (True; a
    failed run raises its own error) or the operator stops following (False)."""
    from engine.model import State
    from engine.views import follow_changes, plan_view, resolve_operation

    store = obj.store()
    after = store.last_seq(spec.operation_id)
    view = plan_view(store, resolve_operation(store, spec.operation_id))
    if spec.action == "rollback":
        todo = [p for p, s in view.leaf_states().items()
                if s not in (State.UNSTARTED, State.ROLLED_BACK)]
    else:
        todo = [p for p, s in view.leaf_states().items() if s is not State.COMPLETED]
    proc = start(obj, spec)
    log = console_log(obj.state_dir, spec.operation_id)
    click.echo(f"{spec.verb}: running in the background (pid {proc.pid}; output in {log}); "
               "Ctrl-C stops following, not the operation", err=True)
    progress = TtyProgress(sys.stderr)
    progress("run started", {"phases": len(todo)})
    try:
        follow_changes(store, spec.operation_id, after,
                       lambda rec: progress("transition", _transition(rec)),
                       poll=0.5, alive=lambda: proc.poll() is None)
        code = proc.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):  # a terminal that hung up has no one to tell
            progress.close()
            click.echo(f"operation {spec.operation_id} is still running in the background; "
                       "`gravity plan --follow` to watch, `gravity plan stop` to stop it",
                       err=True)
        return False
    progress.close()
    found = result_file(obj.state_dir, spec.operation_id)
    told: dict[str, Any] = json.loads(found.read_text()) if found.exists() else {}
    if code == 0 and told.get("exit", 0) == 0:
        return True
    if not told:
        raise Relayed(f"the background driver (pid {proc.pid}) of operation "
                      f"{spec.operation_id} ended with exit {code} without saying why; its "
                      f"output is in {log}", exit_code=code if code > 0 else 1,
                      operation_id=spec.operation_id,
                      hint="see where it stopped with `gravity plan`; continue with "
                      "`gravity plan resume`")
    raise Relayed(str(told.get("message") or "failed"), exit_code=int(told["exit"]),
                  operation_id=spec.operation_id, hint=told.get("hint"))


__all__ = ["BLOCK", "DriveSpec", "console_log", "follow", "result_file", "wanted",
           "write_result"]
