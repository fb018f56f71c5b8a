"""The fault scenarios: each builds a plan, runs real `gravity` processes, injects its fault at
a random (seeded) moment, then drives the operation to its end the way an operator would.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from chaos.checker import Expect
from chaos.effects import effect_command, read_effects
from chaos.world import TTL, Trial, wait_for
from engine.model import OpState
from engine.planfile import plan_from_mapping

OP = "op1"
NODES = ("node-1", "node-2")
RETRY = {"attempts": 3, "initial": "100ms", "max": "1s"}


class TrialError(RuntimeError):
    """The scenario itself could not run (setup failed): counted as a stuck trial."""


@dataclass
class Staged:
    """What a scenario hands the checker: the expected end, the leaves, the agents' nodes."""

    expect: Expect
    leaves: list[str]
    agent_nodes: tuple[str, ...] = ()
    violations: tuple[str, ...] = ()  # what the scenario itself saw go wrong


def leaf(name: str, seconds: float, **extra: Any) -> dict[str, Any]:
    """A command phase with a logged side effect, retried 3 times (see chaos/effects.py)."""
    data = {"run": effect_command(seconds, hang_until=extra.pop("hang_until", 0),
                                  fail_until=extra.pop("fail_until", 0))}
    return {"id": name, "executor": "command", "retry": dict(RETRY), "data": data, **extra}


def spread(t: Trial) -> dict[str, Any]:
    """A local phase, each node's phases in order (nodes side by side), a local phase."""
    rnd = t.rng
    nodes = []
    for node in NODES:
        steps = [leaf(f"s{i}", rnd.uniform(0.05, 0.35)) for i in range(rnd.randint(2, 3))]
        nodes.append({"id": node, "node": node, "phases": steps})
    return {"kind": "Plan", "metadata": {"name": f"chaos-{t.scenario}"}, "phases": [
        leaf("prep", rnd.uniform(0.05, 0.3)),
        {"id": "nodes", "parallel": 2, "phases": nodes},
        leaf("finish", rnd.uniform(0.05, 0.3)),
    ]}


def create(t: Trial, doc: dict[str, Any]) -> list[str]:
    """Write the plan file and `gravity operation create` it; returns the leaf IDs."""
    path = t.dir / "plan.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, out = t.gravity("operation", "create", "--plan", str(path), "--id", OP)
    if code != 0:
        raise TrialError(f"operation create exited {code}: {out[-1500:]}")
    return [s.id for s in plan_from_mapping(doc).leaves]


def finished(t: Trial) -> bool:
    """Has the operation reached a finished state (completed, failed, rolled back)?"""
    return t.store.get_operation(OP).state.finished


def drive_to_end(t: Trial, max_runs: int = 6) -> None:
    """`gravity plan resume` until the operation is finished, as an operator would: a
    refusal (exit 3, another driver's lease still alive) is waited out and retried."""
    for _ in range(max_runs):
        if finished(t):
            return
        code, out = t.gravity("plan", "resume")
        t.codes.append(code)
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        t.note(f"plan resume exited {code}" + (f" ({errors[0]})" if errors and code else ""))
        if code not in (0, 1, 3):
            t.notes.append(out[-1500:])
        if code == 3:
            time.sleep(1.0)


def wait_exit(t: Trial, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> int:
    """Wait for a background gravity command; one that never ends is killed (-9) and noted."""
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        t.kill(proc, "a coordinator that did not finish in time")
        code = -9
    t.codes.append(code)
    return code


def running_on(t: Trial, leaves: list[str], node: str) -> list[str]:
    """Phases whose effect on `node` has started and not ended (mid-phase right now)."""
    effects = read_effects(t.state_dir, leaves)
    return [p for p, e in effects.items()
            if any(a.node == node and a.ended is None for a in e.attempts)]


# -- scenarios ---------------------------------------------------------------------------------
def coordinator_kill(t: Trial) -> Staged:
    """kill -9 the coordinator at a random moment, then resume from another process."""
    t.start_agents(*NODES)
    leaves = create(t, spread(t))
    coord = t.spawn("plan", "resume")
    delay = t.rng.uniform(0.3, 3.0)
    if not _sleep_unless_exit(coord, delay):
        t.kill(coord, f"the coordinator after {delay:.2f}s")
    else:
        t.note("the coordinator finished before the kill")
    t.codes.append(coord.wait())
    drive_to_end(t)
    return Staged(Expect(), leaves, NODES)


def agent_kill(t: Trial) -> Staged:
    """kill -9 an agent while it runs a phase, restart it after a random pause."""
    t.start_agents(*NODES)
    leaves = create(t, spread(t))
    coord = t.spawn("plan", "resume")
    victim = t.rng.choice(NODES)
    extra = t.rng.uniform(0.0, 0.15)
    try:
        wait_for(lambda: running_on(t, leaves, victim), 30, f"a phase running on {victim}",
                 interval=0.02)
        time.sleep(extra)
    except TimeoutError:
        t.note(f"no phase seen running on {victim}; killing its agent anyway")
    t.kill_agent(victim)
    pause = t.rng.uniform(0.0, 3.0)
    time.sleep(pause)
    t.start_agents(victim)
    t.note(f"agent on {victim} restarted after {pause:.2f}s")
    wait_exit(t, coord)
    drive_to_end(t)
    return Staged(Expect(), leaves, NODES)


def etcd_restart(t: Trial) -> Staged:
    """Stop etcd mid-operation and start it again on the same ports and data dir."""
    t.start_agents(*NODES)
    leaves = create(t, spread(t))
    coord = t.spawn("plan", "resume")
    delay, down = t.rng.uniform(0.2, 2.5), t.rng.uniform(0.3, 4.0)
    time.sleep(delay)
    t.world.etcd.stop()
    t.note(f"etcd stopped after {delay:.2f}s")
    time.sleep(down)
    t.world.etcd.start()
    t.note(f"etcd started again after {down:.2f}s down")
    wait_exit(t, coord)
    drive_to_end(t)
    return Staged(Expect(), leaves, NODES)


def race_resume(t: Trial) -> Staged:
    """Two coordinators start `plan resume` at (nearly) the same moment."""
    t.dispatch = "local"
    leaves = create(t, spread(t))
    first = t.spawn("plan", "resume")
    time.sleep(t.rng.uniform(0.0, 0.3))
    second = t.spawn("plan", "resume")
    codes = [wait_exit(t, first), wait_exit(t, second)]
    if sorted(codes) not in ([0, 0], [0, 3]):
        t.note(f"racing resumes exited {codes}: {t.output(second)[-800:]}")
    drive_to_end(t)
    return Staged(Expect(), leaves)


def race_execute(t: Trial) -> Staged:
    """Two operators run `plan execute --phase` of the same phase at once."""
    t.dispatch = t.rng.choice(("local", "agents"))
    nodes: tuple[str, ...] = ()
    target = leaf("target", t.rng.uniform(0.2, 0.8))
    if t.dispatch == "agents":
        nodes = ("node-1",)
        target["node"] = "node-1"
        t.start_agents(*nodes)
    doc = {"kind": "Plan", "metadata": {"name": "chaos-race"}, "phases": [
        target, leaf("after", 0.05)]}
    leaves = create(t, doc)
    procs = [t.spawn("plan", "execute", "--phase", "/target")]
    time.sleep(t.rng.uniform(0.0, 0.2))
    procs.append(t.spawn("plan", "execute", "--phase", "/target"))
    codes = [wait_exit(t, p) for p in procs]
    if 0 not in codes or any(c not in (0, 3) for c in codes):
        t.note(f"racing executes exited {codes}")
    drive_to_end(t)
    return Staged(Expect(), leaves, nodes)


def timeout(t: Trial) -> Staged:
    """A phase hangs on its first attempt(s): its timeout stops it and a retry completes."""
    t.dispatch = "agents" if t.index % 2 else "local"
    nodes: tuple[str, ...] = ("node-1",) if t.dispatch == "agents" else ()
    hang = leaf("hang", 0.05, hang_until=t.rng.randint(1, 2),
                timeout=f"{t.rng.randint(4, 9) * 100}ms")
    if nodes:
        hang["node"] = "node-1"
        t.start_agents(*nodes)
    doc = {"kind": "Plan", "metadata": {"name": "chaos-timeout"}, "phases": [
        leaf("prep", 0.05), hang, leaf("after", 0.05)]}
    leaves = create(t, doc)
    drive_to_end(t)
    return Staged(Expect(), leaves, nodes)


def flaky(t: Trial) -> Staged:
    """A phase fails intermittently (retries absorb it) or for good (the run stops there)."""
    t.dispatch = "agents" if t.index % 2 else "local"
    nodes: tuple[str, ...] = ("node-1",) if t.dispatch == "agents" else ()
    permanent = t.rng.random() < 0.25
    fails = 99 if permanent else t.rng.randint(0, 2)
    bad = leaf("flaky", 0.05, fail_until=fails)
    if nodes:
        bad["node"] = "node-1"
        t.start_agents(*nodes)
    doc = {"kind": "Plan", "metadata": {"name": "chaos-flaky"}, "phases": [
        leaf("prep", 0.05), bad, leaf("after", 0.05)]}
    leaves = create(t, doc)
    if not permanent:
        drive_to_end(t)
        return Staged(Expect(), leaves, nodes)
    code, out = t.gravity("plan", "resume")
    t.codes.append(code)
    if code != 1 or "phase /flaky failed" not in out:
        t.note(f"permanent failure: resume exited {code}: {out[-800:]}")
    code, _ = t.gravity("plan", "complete")
    t.codes.append(code)
    return Staged(Expect(OpState.FAILED, "/flaky", ("/after",)), leaves, nodes)


def db_held(t: Trial) -> Staged:
    """SQLite: another process holds the database's write lock for 0.3–2.5 leases mid-run;
    half the time a second driver queues behind it to take over."""
    t.use_sqlite()
    leaves = create(t, spread(t))
    coord = t.spawn("plan", "resume")
    if _sleep_unless_exit(coord, t.rng.uniform(0.1, 2.0)):
        t.note("the coordinator finished before the database was held")
    holder = t.hold_database(t.rng.uniform(0.3, 2.5) * TTL)
    others = [t.spawn("plan", "resume")] if t.rng.random() < 0.5 else []
    holder.wait()
    for proc in [coord, *others]:
        wait_exit(t, proc)
    drive_to_end(t)
    return Staged(Expect(), leaves)


def driver_pause(t: Trial) -> Staged:
    """SIGSTOP the coordinator for 0.3–3 leases (a VM pause, a GC stall); half the time
    another driver takes over meanwhile; then SIGCONT it."""
    t.dispatch = t.rng.choice(("local", "agents"))
    if t.rng.random() < 0.3:
        t.use_sqlite()
    nodes = NODES if t.dispatch == "agents" else ()
    if nodes:
        t.start_agents(*nodes)
    leaves = create(t, spread(t))
    coord = t.spawn("plan", "resume")
    if _sleep_unless_exit(coord, t.rng.uniform(0.2, 2.5)):
        t.note("the coordinator finished before the pause")
    t.freeze(coord, "the coordinator")
    pause = t.rng.uniform(0.3, 3.0) * TTL
    deadline = time.monotonic() + pause
    if t.rng.random() < 0.5:
        time.sleep(pause / 2)
        other = t.spawn("plan", "resume")
        while time.monotonic() < deadline and other.poll() is None:
            time.sleep(0.05)
        if other.poll() is not None:
            t.codes.append(other.returncode)
    time.sleep(max(0.0, deadline - time.monotonic()))
    t.thaw(coord, "the coordinator")
    wait_exit(t, coord)
    drive_to_end(t)
    return Staged(Expect(), leaves, nodes)


def agent_pause(t: Trial) -> Staged:
    """SIGSTOP an agent while it runs a phase for 0.3–3 leases, then SIGCONT it: its guard
    stops the phase before its lease ends, and it announces itself again."""
    t.start_agents(*NODES)
    leaves = create(t, spread(t))
    coord = t.spawn("plan", "resume")
    victim = t.rng.choice(NODES)
    try:
        wait_for(lambda: running_on(t, leaves, victim), 30, f"a phase running on {victim}",
                 interval=0.02)
    except TimeoutError:
        t.note(f"no phase seen running on {victim}; pausing its agent anyway")
    t.freeze(t.agents[victim], f"agent on {victim}")
    time.sleep(t.rng.uniform(0.3, 3.0) * TTL)
    t.thaw(t.agents[victim], f"agent on {victim}")
    wait_exit(t, coord)
    drive_to_end(t)
    if t.agents[victim].poll() is not None:  # stepped aside: start it for the checker's stop
        t.note(f"agent on {victim} exited {t.agents[victim].returncode} after the pause")
    return Staged(Expect(), leaves, NODES)


def disk_full(t: Trial) -> Staged:
    """The disk under the event and phase logs fills up mid-run, then is freed; the operator
    resumes. The run stops with a clear error and nothing left in progress."""
    t.dispatch = "local"
    if t.rng.random() < 0.5:
        t.use_sqlite()
    logs = t.mount_logs("size=512k")
    leaves = create(t, spread(t))
    coord = t.spawn("plan", "resume")
    if _sleep_unless_exit(coord, t.rng.uniform(0.1, 2.0)):
        t.note("the coordinator finished before the disk filled")
    subprocess.run(f"head -c 64M /dev/zero 2>/dev/null > {logs}/filler; "
                   f"yes '' | head -c 16384 >> {logs}/{OP}.jsonl", shell=True, check=False)
    t.note("the log disk is full")
    wait_exit(t, coord)
    (logs / "filler").unlink()
    t.note("space freed")
    drive_to_end(t)
    return Staged(Expect(), leaves)


def log_readonly(t: Trial) -> Staged:
    """The operator stops a run (SIGTERM) at a random moment; meanwhile the log directory
    went read-only (a remount after an I/O error): the next resume is refused with the file
    named and starts nothing; once writable again, the operator resumes to the end."""
    t.dispatch = "local"
    if t.rng.random() < 0.5:
        t.use_sqlite()
    t.mount_logs("size=8m")
    leaves = create(t, spread(t))
    coord = t.spawn("plan", "resume")
    if _sleep_unless_exit(coord, t.rng.uniform(0.1, 2.0)):
        t.note("the coordinator finished before SIGTERM")
    elif coord.poll() is None:
        coord.send_signal(signal.SIGTERM)
        t.note("SIGTERM to the coordinator")
    wait_exit(t, coord)
    t.remount_logs("ro")  # nothing writes there now: the remount cannot be refused as busy
    code, out = t.gravity("plan", "resume")
    t.codes.append(code)
    seen = () if finished(t) or (code == 1 and "cannot write the event log" in out) else (
        f"a resume with a read-only log directory exited {code}: {out[-600:]}",)
    t.remount_logs("rw")
    drive_to_end(t)
    return Staged(Expect(), leaves, (), seen)


def nested_prefix(t: Trial) -> Staged:
    """Mid-run, an operator points a second store at a prefix inside the trial's store (its
    operation's own data keys) or around it, and creates an operation with the same ID: the
    second store must be refused (exit 2) and the trial's keys left alone."""
    base = t.url
    t.url = f"{base}/main"
    t.start_agents(*NODES)
    leaves = create(t, spread(t))
    coord = t.spawn("plan", "resume")
    _sleep_unless_exit(coord, t.rng.uniform(0.1, 1.5))
    intruder = t.rng.choice((f"{t.url}/data/{OP}", base))
    code, out = t.gravity("operation", "create", "--plan", str(t.dir / "plan.yaml"), "--id",
                          OP, GRAVITY_STORE=intruder)
    t.note(f"a store at {intruder.rsplit('/', 2)[-2:]} tried to create {OP}: exit {code}")
    seen = [] if code == 2 and "another gravity store" in out else [
        f"a store nested with the trial's was not refused (exit {code}): {out[-600:]}"]
    wait_exit(t, coord)
    drive_to_end(t)
    return Staged(Expect(), leaves, NODES, tuple(seen))


def _sleep_unless_exit(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Sleep up to `seconds`; True if the process exited meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.02)
    return proc.poll() is not None


SCENARIOS: dict[str, Callable[[Trial], Staged]] = {
    "coordinator_kill": coordinator_kill,
    "agent_kill": agent_kill,
    "etcd_restart": etcd_restart,
    "race_resume": race_resume,
    "race_execute": race_execute,
    "timeout": timeout,
    "flaky": flaky,
    "db_held": db_held,
    "driver_pause": driver_pause,
    "agent_pause": agent_pause,
    "disk_full": disk_full,
    "log_readonly": log_readonly,
    "nested_prefix": nested_prefix,
}
