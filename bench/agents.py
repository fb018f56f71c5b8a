"""Agent processes for mode=agents (real `gravity agent run` subprocesses) and the dispatch
latency read back from their event logs and the operation's changelog.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine import agent_protocol as proto
from engine.model import ChangeRecord, State
from engine.store.base import Store


class AgentPool:
    """One `gravity agent run --node N` process per node, on one store, in one state dir."""

    def __init__(self, url: str, state_dir: Path, nodes: Iterable[str], *,
                 ttl: float = 10.0, gravity: list[str] | None = None) -> None:
        self.url, self.state_dir, self.ttl = url, state_dir, ttl
        # The command that runs `gravity` (default: this Python's engine).
        self.gravity = gravity or [sys.executable, "-m", "engine.cli.main"]
        self.nodes = list(nodes)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(GRAVITY_STORE=self.url, GRAVITY_STATE_DIR=str(self.state_dir))
        return env

    def start(self, store: Store, timeout: float = 60.0) -> None:
        """Start every agent and wait until each has announced itself in the store."""
        log_dir = self.state_dir / "agent-console"
        log_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            with open(log_dir / f"{node}.log", "ab") as console:
                self.procs[node] = subprocess.Popen(
                    [*self.gravity, "agent", "run", "--node", node, "--ttl", str(self.ttl)],
                    env=self.env(), stdout=console, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL)
        self._wait(lambda infos: all(n in infos for n in self.nodes), store, timeout,
                   "the agents to announce themselves")

    def wait_following(self, store: Store, operation_id: str, timeout: float = 60.0) -> None:
        """Wait until every agent has switched to `operation_id` (seen in its heartbeat)."""
        self._wait(lambda infos: all(infos.get(n, {}).get("operation") == operation_id
                                     for n in self.nodes),
                   store, timeout, f"the agents to follow {operation_id}")

    def _wait(self, done: Callable[[dict[str, dict[str, Any]]], bool], store: Store,
              timeout: float, what: str) -> None:
        """Poll the agents' registrations until `done(registrations)` or the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            infos = {node: r.to_dict() for node, r in proto.agents(store).items()}
            if done(infos):
                return
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what} (exited: {dead})")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the running agents have used so far, from /proc."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for proc in self.procs.values():
            try:
                stat = Path(f"/proc/{proc.pid}/stat").read_text()
            except OSError:
                continue  # exited
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every agent (they retire their registration), SIGKILL stragglers."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def parse_ts(text: str) -> float:
    """Seconds since the epoch from the event log's `2024-01-01T12:00:00.123Z` stamps."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def agent_starts(state_dir: Path, nodes: Iterable[str]) -> dict[str, float]:
    """Phase -> wall time its agent logged "phase started" (first attempt only)."""
    starts: dict[str, float] = {}
    for node in nodes:
        path = state_dir / "logs" / "agents" / f"{node}.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event.get("event") == "phase started" and event.get("phase") not in starts:
                starts[event["phase"]] = parse_ts(event["ts"])
    return starts


def dispatch_latencies(records: list[ChangeRecord], starts: Mapping[str, float],
                       previous: Mapping[str, str]) -> dict[str, list[float]]:
    """Two latencies per dispatched phase, in seconds.

    `ready`: from the moment its prerequisite's `completed` record was stamped (the phase
    became ready) to its agent logging "phase started" — the whole hop a user waits for.
    `dispatch`: from the coordinator stamping the `in_progress` record (its decision to
    dispatch) to the agent starting the phase — the store write plus the agent's watch.
    """
    completed: dict[str, float] = {}
    dispatched: dict[str, float] = {}
    for rec in records:
        if rec.to_state is State.COMPLETED:
            completed.setdefault(rec.phase_id, rec.at)
        elif rec.to_state is State.IN_PROGRESS:
            dispatched.setdefault(rec.phase_id, rec.at)
    ready, dispatch = [], []
    for phase, started in starts.items():
        if phase in dispatched:
            dispatch.append(started - dispatched[phase])
        before = previous.get(phase)
        if before is not None and before in completed:
            ready.append(started - completed[before])
    return {"ready": ready, "dispatch": dispatch}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
