"""Whole processes timed as a user runs them: wall time, CPU (wait4), peak RSS (VmHWM), and, when
asked, when the process made its first transition (its start-up) and the CPU it had used by then.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cli_costs import cli_env, gravity_argv, gravity_python

FLOORS = Path(__file__).resolve().parent / "floors.py"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    """One finished process. `first_s` / `first_cpu_s`: wall and CPU seconds from its start to
    the first byte of the watched file (a coordinator's first transition), when watched."""

    wall_s: float
    cpu_s: float
    rss_mb: float
    out: str = ""
    first_s: float | None = None
    first_cpu_s: float | None = None

    @property
    def run_cpu_s(self) -> float | None:
        """CPU after the first transition: what the run itself cost, start-up excluded."""
        return None if self.first_cpu_s is None else self.cpu_s - self.first_cpu_s

    def json(self) -> dict[str, Any]:
        """The last line of its output as JSON (the floor scripts print one)."""
        return json.loads(self.out.strip().splitlines()[-1])


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class PeakRss(threading.Thread):
    """Reads a process's VmHWM (its own peak RSS) every 10 ms until stopped.

    Not wait4's ru_maxrss: Linux carries the parent's peak RSS into a forked child's (and
    Python spawns with vfork), so a child of a bench process that has grown to 250 MB would
    report at least 250 MB. VmHWM belongs to the process's own address space after exec."""

    def __init__(self, pid: int) -> None:
        super().__init__(name=f"rss-{pid}", daemon=True)
        self.path = Path(f"/proc/{pid}/status")
        self.peak_kb = 0
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            try:
                text = self.path.read_text()
            except OSError:
                return
            if "VmHWM:" in text:
                self.peak_kb = max(self.peak_kb, int(text.split("VmHWM:")[1].split()[0]))
            if self.done.wait(0.01):
                return


def own_peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM), in MB."""
    text = Path("/proc/self/status").read_text()
    return int(text.split("VmHWM:")[1].split()[0]) / 1024


def _transition(log: Path, offset: int) -> bool:
    """Whether the event log holds a transition past `offset` (the run has begun writing)."""
    with open(log, "rb") as f:
        f.seek(offset)
        return b'"event": "transition"' in f.read(65536)


def run(argv: list[str], env: dict[str, str] | None = None, *, cwd: Path | None = None,
        watch: Path | None = None, timeout: float = 3600.0, expect: int = 0) -> Run:
    """Run `argv` to the end; raise with its output if it exits other than `expect`. With
    `watch` (an event log), poll it every 2 ms until it shows a transition: the end of the
    start-up."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gravity-bench-{os.getpid()}.out"
    before = watch.stat().st_size if watch is not None and watch.exists() else 0
    first_s = first_cpu = None
    with open(out_path, "w+b") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        rss = PeakRss(proc.pid)
        rss.start()
        deadline = time.monotonic() + timeout
        while watch is not None:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if watch.exists() and watch.stat().st_size > before and _transition(watch, before):
                first_s, first_cpu = time.perf_counter() - started, proc_cpu(proc.pid)
                watch = None
            elif time.monotonic() > deadline:
                proc.kill()
            else:
                time.sleep(0.002)
        else:
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        rss.done.set()
        rss.join()
        sink.seek(0)
        out = sink.read().decode(errors="replace")
    out_path.unlink(missing_ok=True)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != expect:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}\n{out[-3000:]}")
    return Run(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, rss_mb=rss.peak_kb / 1024,
               out=out, first_s=first_s, first_cpu_s=first_cpu)


def gravity(args: list[str], url: str, state_dir: Path, *, watch: Path | None = None,
            sizes: Path | None = None, expect: int = 0, **env: str) -> Run:
    """`gravity ARGS` as the installed console script, against `url`, in `state_dir`. With
    `sizes`, through bench/etcd_sizes.py's wrapper, which records etcd request sizes there."""
    full = cli_env(url, state_dir)
    full.update(env)
    argv = gravity_argv()
    if sizes is not None:
        from bench.etcd_sizes import ENV, WRAPPER

        argv = [gravity_python(), "-c", WRAPPER]
        full[ENV] = str(sizes)
        full["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return run([*argv, *args], full, cwd=state_dir, watch=watch, expect=expect)


def floor(store: str, *args: str) -> Run:
    """`python bench/floors.py STORE ARGS` as a whole process (see floors.py)."""
    return run([gravity_python(), str(FLOORS), store, *args])


def median(values: list[float]) -> float:
    return statistics.median(values)


def start_etcd(workdir: Path, fsync: bool = True) -> Any:
    """A single-member etcd from the venv (tests/etcd_server.py) on free loopback ports, with a
    data dir under `workdir`; with fsync unless asked (the test suite runs it without)."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.etcd_server import EtcdServer

    server = EtcdServer(workdir / "etcd" / "data")
    if fsync:
        base_args = server.args
        server.args = lambda: [a for a in base_args() if a != "--unsafe-no-fsync"]  # type: ignore[method-assign]
    return server.start()
