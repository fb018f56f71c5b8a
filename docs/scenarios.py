"""The scripted sessions behind the operator docs' transcripts: each runs the real CLI in its
own state dir and returns its console blocks by key (docs/generate.py fills the pages).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from transcripts import (
    ROOT,
    GenerationError,
    Session,
    Shown,
    block,
    require,
    wait_for,
)

# The plan of the guide's "stuck operation" story: a long phase the operator interrupts.
MIGRATE = "examples/plans/migrate.yaml"
HELLO = "examples/plans/hello.yaml"


def guide(base: Path, paths: dict[str, str]) -> dict[str, str]:
    """docs/operator-guide.md: one operation driven phase by phase, a whole rollback, and a
    stuck operation interrupted with Ctrl-C and completed by hand."""
    state = base / "guide"
    paths[str(state)] = "$GRAVITY_STATE_DIR"
    s = Session(state, paths)
    out: dict[str, str] = {}

    out["guide/create"] = block(s.gravity("operation", "create", "--plan", HELLO,
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
        s.gravity("operation", "create", "--plan", HELLO, "--id", "op-undo"),
        s.gravity("plan", "execute", "--phase", "/init"),
        s.gravity("plan", "execute", "--phase", "/masters"))
    out["guide/undo"] = block(s.gravity("rollback", "--dry-run"),
                              s.gravity("rollback", "--confirm"),
                              s.gravity("operation", "list"))

    # A stuck operation: a live owner refuses a second driver, Ctrl-C, then `plan complete`.
    out["guide/slow-plan"] = block(s.shell(f"cat {MIGRATE}",
                                           (ROOT / MIGRATE).read_text))
    out["guide/slow-create"] = block(s.gravity("operation", "create", "--plan", MIGRATE,
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
        s.gravity("operation", "create", "--plan", HELLO, "--id", "op-next", expect=3),
        s.gravity("plan", "--short"), s.gravity("plan", "complete"), s.gravity("status"))
    # Finished for good: driving or closing it again is refused, as is resuming op-hello.
    out["guide/finished"] = block(
        s.gravity("plan", "complete", expect=3), s.gravity("plan", "resume", expect=3),
        s.gravity("plan", "resume", "--operation-id", "op-hello", expect=3))
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
    plan = s.gravity("plan")
    require(plan.output, "Phase /app/quickstart failed (attempt 1) on node node-1:",
            *(f"Phase {p}: skipped: Kubernetes API not configured" for p in (
                "/masters/node-1/drain", "/masters/node-1/uncordon", "/labels/node-1")),
            what="trouble/plan")
    out["trouble/plan"] = block(plan)
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


def tools(base: Path, paths: dict[str, str]) -> dict[str, str]:
    """docs/operator-tools.md: `gravity events` (text and JSON) of an operation with a failed
    phase, and what TAB completes after `--phase /mas`."""
    state = base / "tools"
    paths[str(state)] = "$GRAVITY_STATE_DIR"
    s = Session(state, paths)
    out: dict[str, str] = {}
    s.gravity("operation", "create", "--plan", HELLO, "--id", "op-tools")
    s.gravity("plan", "execute", "--phase", "/masters/node-1/drain", "--force")
    s.gravity("plan", "execute", "--phase", "/verify", "--force", expect=1)
    events = s.gravity("events")
    require(events.output, "(execute, node node-1, attempt 1)",
            "error: command exited with status 1", what="tools/events")
    out["tools/events"] = block(events)
    records = [json.loads(line) for line in s.run(("events", "-o", "json"), 0).splitlines()]
    since = str(records[-3]["seq"])
    last = s.gravity("events", "--since", since, "-o", "json")
    fields = ("seq", "phase", "version", "node", "attempt", "action", "from", "to", "owner",
              "error", "note", "duration", "operation", "event", "ts")
    shown = [json.loads(line) for line in last.output.splitlines()]
    if (len(shown) != 2 or any(set(r) - set(fields) for r in shown)
            or "owner" not in shown[0] or "duration" not in shown[1]):
        raise GenerationError(f"tools/events-json: the page lists the fields {fields} and "
                              f"an owner while in progress; the CLI printed {last.output}")
    out["tools/events-json"] = block(last)
    offered = s.completions("plan", "execute", "--phase", "/mas")
    out["tools/complete"] = block(Shown("gravity plan execute --phase /mas<TAB>",
                                        "  ".join(offered)))
    for shell in ("bash", "zsh", "fish"):  # the lines the page says to add work
        if "gravity" not in s.run((), 0, _GRAVITY_COMPLETE=f"{shell}_source"):
            raise GenerationError(f"_GRAVITY_COMPLETE={shell}_source printed no script")
    return out


SCENARIOS = (guide, trouble_resume, trouble_rollback, lifecycle, tools)
