"""The stage of one chaos trial: a real etcd, a state dir, `gravity` subprocesses and agents.
Every process a trial starts is tracked by its Popen and ended by its own pid at the end.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from engine import agent_protocol as proto
from engine.store import Store, open_store

ROOT = Path(__file__).resolve().parent.parent
TTL = 2.0  # leases of coordinators and agents: a dead one is noticed within ~TTL


class TrialSkipped(RuntimeError):
    """This host cannot stage the fault (no privilege to mount, say): the trial is skipped."""


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class World:
    """What all trials share: one real etcd server (restartable) and a root directory."""

    def __init__(self, root: Path, seed: int) -> None:
        sys.path.insert(0, str(ROOT))
        from tests.etcd_server import EtcdServer

        self.root, self.seed = root, seed
        self.etcd = EtcdServer(root / "etcd" / "data")

    def __enter__(self) -> World:
        self.etcd.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.etcd.stop()


class Trial:
    """One run of one scenario: its own etcd prefix, state dir, processes and fault log."""

    def __init__(self, world: World, scenario: str, index: int) -> None:
        self.world, self.scenario, self.index = world, scenario, index
        self.rng = random.Random(f"{world.seed}:{scenario}:{index}")
        self.dir = world.root / f"{scenario}-{index:03d}"
        self.state_dir = self.dir / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.url = f"{world.etcd.url}/chaos-{uuid.uuid4().hex[:10]}"
        self.dispatch = "agents"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: list[tuple[float, str]] = []  # (wall time, what was killed)
        self.notes: list[str] = []
        self.codes: list[int] = []
        self.agent_refusals = 0
        self.t0 = time.time()
        self._store: Store | None = None
        self._outputs: list[IO[bytes]] = []
        self._mounts: list[Path] = []
        self._count = 0

    # -- store and environment -----------------------------------------------------------------
    @property
    def store(self) -> Store:
        """The chaos process's own client of the trial's store (the checker reads through it)."""
        if self._store is None:
            self._store = open_store(self.url)
        return self._store

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(GRAVITY_STORE=self.url, GRAVITY_STATE_DIR=str(self.state_dir),
                   GRAVITY_LEASE_TTL=str(TTL), GRAVITY_DISPATCH=self.dispatch,
                   GRAVITY_AGENT_TIMEOUT="60", GRAVITY_ETCD_PATIENCE="60")
        env.update(extra)
        return env

    def use_sqlite(self) -> None:
        """Run this trial on the embedded store (phases in the coordinator's process)."""
        self.url = f"sqlite://{self.state_dir / 'gravity.db'}"
        self.dispatch = "local"
        if self._store is not None:
            self._store.close()
            self._store = None

    def note(self, text: str) -> None:
        self.notes.append(f"+{time.time() - self.t0:.2f}s {text}")

    # -- processes -----------------------------------------------------------------------------
    def _argv(self, args: tuple[str, ...]) -> list[str]:
        return [sys.executable, "-m", "engine.cli.main", *args]

    def spawn(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start `gravity ARGS` in the background; its output goes to a file in the trial dir."""
        self._count += 1
        out = open(self.dir / f"{self._count:02d}-{args[0]}-{args[-1]}.out".replace("/", "_"),  # noqa: SIM115
                   "wb")
        self._outputs.append(out)
        proc = subprocess.Popen(self._argv(args), env=self.env(**env), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir)
        proc.output_path = Path(out.name)  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def gravity(self, *args: str, timeout: float = 180.0, **env: str) -> tuple[int, str]:
        """Run `gravity ARGS` to the end: (exit code, output)."""
        proc = self.spawn(*args, **env)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc, "a gravity command that did not finish")
            code = -9
        return code, self.output(proc)

    @staticmethod
    def output(proc: subprocess.Popen[bytes]) -> str:
        path: Path = proc.output_path  # type: ignore[attr-defined]
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, proc: subprocess.Popen[bytes], what: str) -> None:
        """kill -9 one process we started, and remember when."""
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            self.kills.append((time.time(), what))
            self.note(f"kill -9 {what} (pid {proc.pid})")
        proc.wait()

    # -- agents --------------------------------------------------------------------------------
    def start_agents(self, *nodes: str, timeout: float = 30.0) -> None:
        """Start `gravity agent run` for each node and wait until each announced itself.

        Like a service manager with restart-on-failure, an agent refused because its node's
        previous agent still holds the node (exit 3: a killed agent's lease outlives it by up
        to its TTL) is started again until it gets in.
        """
        for node in nodes:
            self.agents[node] = self._spawn_agent(node)
        for node in nodes:
            wait_for(lambda n=node: self._announced(n), timeout,
                     f"agent {node} to announce itself")

    def _spawn_agent(self, node: str) -> subprocess.Popen[bytes]:
        return self.spawn("agent", "run", "--node", node, "--ttl", str(TTL), "--grace", "5")

    def _announced(self, node: str) -> bool:
        proc = self.agents[node]
        if proc.poll() is not None:
            out = self.output(proc)
            if proc.returncode == 3 and "already running" in out:
                self.agent_refusals += 1
                self.note(f"agent on {node} refused (its dead predecessor's lease is still "
                          "alive); starting it again")
                time.sleep(0.2)
                self.agents[node] = self._spawn_agent(node)
                return False
            raise RuntimeError(f"agent {node} exited {proc.returncode}: {out[-1500:]}")
        info = proto.agent(self.store, node)
        return info is not None and info.pid == proc.pid

    def kill_agent(self, node: str) -> None:
        self.kill(self.agents[node], f"agent on {node}")

    def stop_agents(self, timeout: float = 30.0) -> None:
        """SIGTERM every live agent (a graceful stop retires its registration) and wait."""
        for proc in self.agents.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for node, proc in self.agents.items():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(proc, f"agent on {node} that ignored SIGTERM")
                self.notes.append(f"agent on {node} did not stop within {timeout:.0f}s")

    # -- faults of the host ------------------------------------------------------------------
    def hold_database(self, seconds: float) -> subprocess.Popen[bytes]:
        """Another process takes the SQLite file's write lock and keeps it for `seconds`."""
        code = ("import sqlite3, sys, time\n"
                "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)\n"
                "c.execute('BEGIN IMMEDIATE'); print('held', flush=True)\n"
                "time.sleep(float(sys.argv[2])); c.execute('COMMIT')\n")
        proc = subprocess.Popen([sys.executable, "-c", code, str(self.state_dir / "gravity.db"),
                                 f"{seconds:.3f}"], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"held":
            raise RuntimeError("the database holder could not take the lock")
        self.procs.append(proc)
        self.note(f"database held by another process for {seconds:.2f}s")
        return proc

    def freeze(self, proc: subprocess.Popen[bytes], what: str) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGSTOP)
            self.note(f"SIGSTOP {what} (pid {proc.pid})")

    def thaw(self, proc: subprocess.Popen[bytes], what: str) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            self.note(f"SIGCONT {what} (pid {proc.pid})")

    def mount_logs(self, options: str) -> Path:
        """A small tmpfs over the state dir's logs (root only); unmounted by `close`."""
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(logs)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise TrialSkipped(f"cannot mount a tmpfs: {proc.stderr.strip()}")
        self._mounts.append(logs)
        return logs

    def remount_logs(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.state_dir / "logs")],
                       check=True, capture_output=True)
        self.note(f"logs remounted {options}")

    def close(self) -> None:
        """End every process this trial started that is still running, by its own pid."""
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        for where in reversed(self._mounts):
            subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)
        self._mounts.clear()
        for out in self._outputs:
            out.close()
        if self._store is not None:
            self._store.close()
            self._store = None

    def describe(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "trial": self.index, "dir": str(self.dir),
                "url": self.url, "dispatch": self.dispatch, "codes": self.codes,
                "notes": self.notes}
