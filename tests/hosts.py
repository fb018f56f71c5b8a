"""Multi-host test lab: one network namespace per node on a bridge and /24 of the test's own, each
process in a private mount namespace where the coordinator's paths are hidden. Needs root, iproute2.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.etcd_server import EtcdServer

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = Path(__file__).resolve().parent / "hosts_launch.py"
REGISTRY = Path("/run/gravity-hosts")  # one record per live lab: who owns it, what to sweep
HOST_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")
# Paths a host's processes need (the interpreter, the engine, the launcher): never hidden.
NEEDED = (Path(sys.prefix), Path(sys.base_prefix), ROOT / "engine", LAUNCHER)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` exited {proc.returncode}: "
                           f"{proc.stderr.strip()}")
    return proc


def start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot): with the pid, it names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@contextlib.contextmanager
def registry_lock() -> Iterator[None]:
    """Serialises choosing names and subnets between labs of concurrent test runs."""
    REGISTRY.mkdir(mode=0o700, exist_ok=True)
    with open(REGISTRY / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def lab_netns(lab_id: str) -> list[str]:
    names = (line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip())
    return [n for n in names if n.startswith(f"gh{lab_id}-")]


def lab_links(lab_id: str) -> list[str]:
    """The lab's veths (root side) first, then its bridge."""
    names = [line.split(": ")[1].split("@")[0]
             for line in ip("-o", "link", "show").stdout.splitlines()]
    return sorted((n for n in names if n == f"gb{lab_id}" or n.startswith(f"gv{lab_id}")),
                  key=lambda n: n.startswith("gb"))


def empty_netns(netns: str, timeout: float = 10.0) -> str | None:
    """SIGKILL every process in the namespace until none is left; an error if some survive."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [int(p) for p in ip("netns", "pids", netns, check=False).stdout.split()]
        if not pids:
            return None
        if time.monotonic() > deadline:
            return f"processes {pids} in {netns} survived SIGKILL"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)  # poll until the kernel has torn them down


def teardown(lab_id: str, procs: Iterable[Sequence] = ()) -> list[str]:
    """Kill what the lab left and delete its namespaces, veths and bridge; the errors left."""
    errors: list[str] = []
    for pid, started in procs:
        if start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for netns in lab_netns(lab_id):
        if problem := empty_netns(netns):
            errors.append(problem)
        if (r := ip("netns", "del", netns, check=False)).returncode:
            errors.append(f"ip netns del {netns}: {r.stderr.strip()}")
    for link in lab_links(lab_id):
        # A veth whose peer's namespace is gone is gone too; only report what stays.
        ip("link", "del", link, check=False)
    errors += [f"{name} still exists" for name in lab_netns(lab_id) + lab_links(lab_id)]
    return errors


def sweep_stale() -> None:
    """Clean up labs whose owning process is gone (a test run killed before its clean-up)."""
    for record in REGISTRY.glob("*.json"):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if start_time(data["owner"]) == data["owner_start"]:
            continue
        if not teardown(data["id"], data.get("procs", [])):
            record.unlink(missing_ok=True)


def free_subnet() -> str:
    """A /24 of 10.200.0.0/16 with no address or route on this machine, e.g. `10.200.37`."""
    seen = ip("-o", "-4", "addr").stdout + ip("-4", "route", "show", "table", "all").stdout
    used = {int(n) for n in re.findall(r"\b10\.200\.(\d+)\.", seen)}
    free = [n for n in range(1, 255) if n not in used]
    if not free:
        raise RuntimeError("no free /24 left in 10.200.0.0/16 for a test lab")
    return f"10.200.{secrets.choice(free)}"


def register(lab_id: str, subnet: str, procs: list[list]) -> None:
    me = os.getpid()
    doc = {"id": lab_id, "owner": me, "owner_start": start_time(me), "subnet": subnet,
           "procs": procs, "created": time.time()}
    tmp = REGISTRY / f".{lab_id}.tmp"
    tmp.write_text(json.dumps(doc))
    tmp.replace(REGISTRY / f"{lab_id}.json")


def new_id() -> str:
    while True:
        lab_id = secrets.token_hex(3)
        if not (Path(f"/sys/class/net/gb{lab_id}").exists() or lab_netns(lab_id)
                or (REGISTRY / f"{lab_id}.json").exists()):
            return lab_id


class LabEtcd(EtcdServer):
    """The lab's etcd on the bridge address; each (re)start is recorded for a crash sweep."""

    def __init__(self, data_dir: Path, lab: Lab) -> None:
        super().__init__(data_dir, host=lab.address)
        self.lab = lab

    def start(self, timeout: float = 30.0) -> EtcdServer:
        super().start(timeout)
        if self.proc is not None:
            self.lab.remember(self.proc.pid)
        return self


class Lab:
    """A test's own bridge `gb<id>` at 10.200.N.1/24 (the coordinator's side: the root
    namespaces) and hosts at .2, .3, … Use as a context manager or the `lab` fixture."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = Path(tmp)
        self.id = ""
        self.subnet = ""
        self.hosts: dict[str, Host] = {}
        self.hidden: list[Path] = []
        self.server: LabEtcd | None = None
        self.store_url = ""
        self._procs: list[list] = []

    @property
    def bridge(self) -> str:
        return f"gb{self.id}"

    @property
    def address(self) -> str:
        """The bridge's address: where the coordinator's services listen for the hosts."""
        return f"{self.subnet}.1"

    @property
    def hosts_dir(self) -> Path:
        return self.tmp / "hosts"

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Lab:
        with registry_lock():
            sweep_stale()
            self.id = new_id()
            self.subnet = free_subnet()
            register(self.id, self.subnet, self._procs)
            try:
                ip("link", "add", self.bridge, "type", "bridge")
                ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
                ip("link", "set", self.bridge, "up")
            except BaseException:
                self.close()
                raise
        return self

    def remember(self, pid: int) -> None:
        """A root-side process of the lab (its etcd) that a crash sweep must kill."""
        self._procs.append([pid, start_time(pid)])
        register(self.id, self.subnet, self._procs)

    def hide(self, *paths: Path | str) -> None:
        """Hide these coordinator paths from every process started on every host from now on."""
        self.hidden.extend(Path(p) for p in paths)

    def host(self, name: str, *, hide: Iterable[Path | str] = ()) -> Host:
        """A new host: namespace `gh<id>-NAME`, eth0 at the next address, own state dir."""
        if not HOST_NAME.match(name) or name in self.hosts:
            raise ValueError(f"host name {name!r}: expected a new name matching "
                             f"{HOST_NAME.pattern} (taken: {sorted(self.hosts)})")
        index = len(self.hosts) + 2
        if index > 254:
            raise ValueError("a lab has at most 253 hosts")
        host = Host(lab=self, name=name, netns=f"gh{self.id}-{name}",
                    veth=f"gv{self.id}{index:03d}", address=f"{self.subnet}.{index}",
                    root=self.hosts_dir / name, hide=tuple(Path(p) for p in hide))
        self.hosts[name] = host
        host.state_dir.mkdir(parents=True, exist_ok=True)
        # The host's own /etc (a copy of the machine's: users and groups created on the host
        # stay there) and /var/lib (empty: volumes the node creates are its own).
        shutil.copytree("/etc", host.system("etc"), symlinks=True, ignore_dangling_symlinks=True)
        host.system("var-lib").mkdir(parents=True)
        ip("netns", "add", host.netns)
        ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        ip("link", "set", host.veth, "master", self.bridge, "up")
        ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "lo", "up")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "route", "add", "default", "via", self.address)
        return host

    def etcd(self) -> EtcdServer:
        """The lab's etcd (started once) on the bridge address, reachable from every host; its
        data dir is hidden from the hosts. Sets `store_url` (etcd://10.200.N.1:PORT/lab<id>)."""
        if self.server is None:
            data = self.tmp / "lab-etcd" / "data"
            data.parent.mkdir(parents=True, exist_ok=True)
            self.hide(data.parent)
            self.server = LabEtcd(data, self)
            self.server.start()
            self.store_url = f"{self.server.url}/lab{self.id}"
        return self.server

    def close(self) -> None:
        """Kill every process of every host and the lab's etcd, delete namespaces, veths and
        bridge. Raises (after doing all it can) if anything is left."""
        errors: list[str] = []
        for host in self.hosts.values():
            for proc in host.procs:
                if proc.poll() is None:
                    proc.kill()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    errors.append(f"pid {proc.pid} on {host.name} did not die")
        if self.server is not None:
            self.server.kill()
        if self.id:
            errors += teardown(self.id, self._procs)
            if not errors:
                (REGISTRY / f"{self.id}.json").unlink(missing_ok=True)
        if errors:
            raise RuntimeError("lab clean-up left: " + "; ".join(errors))


@dataclass(frozen=True)
class Host:
    """One node: its own network namespace and address, its own root dir (`root`, holding
    `state`), and processes that cannot see the lab's hidden paths nor other hosts' roots."""

    lab: Lab
    name: str
    netns: str
    veth: str
    address: str
    root: Path
    hide: tuple[Path, ...] = ()
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        """The host's own state dir: the agent's --state-dir."""
        return self.root / "state"

    def system(self, name: str) -> Path:
        """What the host's processes see as a system directory: `etc` (/etc) or `var-lib`
        (/var/lib)."""
        return self.root / "system" / name

    def hidden(self, extra: Iterable[Path | str] = ()) -> list[str]:
        """The paths hidden from a process on this host, checked; missing ones become dirs."""
        out: list[Path] = []
        for raw in [*self.lab.hidden, *self.hide, *map(Path, extra)]:
            path = raw.resolve()
            for keep in (*NEEDED, self.root):
                if keep == path or path in keep.parents:
                    raise ValueError(f"cannot hide {path} on host {self.name}: it holds {keep}, "
                                     "which the host's processes need")
            if not path.exists():
                path.mkdir(parents=True)
            out.append(path)
        # A path inside another hidden one is hidden already (and gone from view once the
        # outer one is covered), so only the outermost of nested paths is mounted over.
        return sorted({str(p) for p in out if not any(q in p.parents for q in out)})

    def command(self, argv: Sequence[str], hide: Iterable[Path | str] = ()) -> list[str]:
        """The argv that runs `argv` on this host (network namespace, private mounts)."""
        spec = {"hide": self.hidden(hide), "hosts_dir": str(self.lab.hosts_dir),
                "binds": [[str(self.system("etc")), "/etc"],
                          [str(self.system("var-lib")), "/var/lib"]],
                "own": str(self.root), "cwd": str(self.root), "hostname": self.name}
        return ["ip", "netns", "exec", self.netns, sys.executable, "-I", "-S", str(LAUNCHER),
                json.dumps(spec), *map(str, argv)]

    def spawn(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
              hide: Iterable[Path | str] = (), label: str = "", **popen) -> subprocess.Popen:
        """Start `argv` on this host. Its pid is the command's own (a kill reaches it).
        Without `stdout=`, output (stderr too) goes to `logs[proc.pid]`, a file named by
        `label` (default: the program's name) under the host's root."""
        popen.setdefault("stdin", subprocess.DEVNULL)
        if "stdout" in popen:
            proc = subprocess.Popen(self.command(argv, hide), env=env, **popen)
        else:
            label = label or Path(str(argv[0])).name
            log = self.root / "logs" / f"{len(self.procs):02d}-{label}.log"
            log.parent.mkdir(exist_ok=True)
            with open(log, "ab") as out:
                proc = subprocess.Popen(self.command(argv, hide), env=env, stdout=out,
                                        stderr=subprocess.STDOUT, **popen)
            self.logs[proc.pid] = log
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
            hide: Iterable[Path | str] = (), timeout: float = 60, check: int | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` on this host to completion; with `check`, assert its exit code."""
        proc = subprocess.run(self.command(argv, hide), env=env, input=input, text=True,
                              capture_output=True, timeout=timeout)
        if check is not None:
            assert proc.returncode == check, (
                f"{' '.join(map(str, argv))} on {self.name} exited {proc.returncode}, "
                f"expected {check}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def gravity_env(self, **extra: str) -> dict[str, str]:
        """The environment of `gravity` on this host: its own state dir, the lab's store."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVITY_")}
        env["GRAVITY_STATE_DIR"] = str(self.state_dir)
        if self.lab.store_url:
            env["GRAVITY_STORE"] = self.lab.store_url
        env["GRAVITY_LEASE_TTL"] = "3"
        env["GRAVITY_NODE_ROOT"] = "/"  # a host is a machine: its node works on its own /
        env.update(extra)
        return env

    def gravity(self, *args: str, check: int | None = None, timeout: float = 120,
                **env: str) -> subprocess.CompletedProcess[str]:
        """`gravity ARGS` (python -m engine.cli.main) on this host."""
        return self.run([sys.executable, "-m", "engine.cli.main", *args],
                        env=self.gravity_env(**env), timeout=timeout, check=check)

    def spawn_gravity(self, *args: str, **env: str) -> subprocess.Popen:
        """A long-running `gravity ARGS` on this host (an agent), output in `logs[pid]`."""
        label = "-".join(["gravity", *(a for a in args[:2] if not a.startswith("-"))])
        return self.spawn([sys.executable, "-m", "engine.cli.main", *args],
                          env=self.gravity_env(**env), label=label)

    def reaches(self, address: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from this host to address:port succeeds."""
        probe = ("import socket, sys\n"
                 "try:\n"
                 f"    socket.create_connection(({address!r}, {port}), timeout={timeout}).close()\n"
                 "except OSError:\n"
                 "    sys.exit(1)\n")
        return self.run([sys.executable, "-I", "-S", "-c", probe],
                        timeout=timeout + 30).returncode == 0

    def cut(self) -> None:
        """Cut this host's link (its veth on the bridge goes down)."""
        ip("link", "set", self.veth, "down")

    def restore(self) -> None:
        ip("link", "set", self.veth, "up")


_PROBED: list[str | None] = []


def unavailable() -> str | None:
    """Why a lab cannot be built on this machine (None if it can); probed once per process."""
    if not _PROBED:
        _PROBED.append(_probe())
    return _PROBED[0]


def _probe() -> str | None:
    if os.geteuid() != 0:
        return "multi-host tests need root (network and mount namespaces)"
    if shutil.which("ip") is None:
        return "multi-host tests need iproute2's `ip`"
    with registry_lock():
        lab_id = new_id()
        register(lab_id, "", [])
    netns, bridge = f"gh{lab_id}-probe", f"gb{lab_id}"
    try:
        for args in (("netns", "add", netns), ("link", "add", bridge, "type", "bridge")):
            if (r := ip(*args, check=False)).returncode:
                return f"cannot build a test network: `ip {' '.join(args)}`: {r.stderr.strip()}"
        spec = json.dumps({"hide": [], "cwd": "/", "hostname": "probe"})
        r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-I", "-S",
                            str(LAUNCHER), spec, "true"], capture_output=True, text=True,
                           timeout=30)
        if r.returncode:
            return f"cannot make a private mount namespace in a network namespace: {r.stderr}"
        return None
    finally:
        if not teardown(lab_id):
            (REGISTRY / f"{lab_id}.json").unlink(missing_ok=True)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A Lab of this test's own, cleaned up afterwards; skips where namespaces cannot be made
    (fails instead when GRAVITY_HOSTS_REQUIRED=1)."""
    if reason := unavailable():
        if os.environ.get("GRAVITY_HOSTS_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    with Lab(tmp_path) as built:
        yield built


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test using the `lab` fixture carries the `hosts` marker (-m 'not hosts')."""
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.hosts)
