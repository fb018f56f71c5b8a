"""The multi-host lab itself (tests/hosts.py): hosts on a private network that see only their own
root, reach etcd on the bridge, lose it when their link is cut, and leave nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.hosts import REGISTRY, ROOT, Lab, ip, unavailable

pytestmark = pytest.mark.hosts

LIST_AND_READ = """
import json, os, socket, sys
out = {"hostname": socket.gethostname()}
for p in sys.argv[1:]:
    out[p] = sorted(os.listdir(p)) if os.path.isdir(p) else open(p).read()
try:
    open(os.path.join(sys.argv[1], "new"), "w")
    out["write"] = "written"
except OSError as e:
    out["write"] = e.strerror
print(json.dumps(out))
"""


@pytest.fixture
def need_lab() -> None:
    if reason := unavailable():
        pytest.skip(reason)


@pytest.fixture
def listener() -> Iterator[Callable[[str], int]]:
    """A TCP listener in the root namespaces on an address; returns its port."""
    socks: list[socket.socket] = []

    def listen(address: str) -> int:
        s = socket.socket()
        s.bind((address, 0))
        s.listen()
        socks.append(s)
        return int(s.getsockname()[1])

    yield listen
    for s in socks:
        s.close()


def gone(pid: int | str) -> bool:
    """The process has exited (it may linger as a zombie until its parent reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def leftovers(lab_id: str) -> list[str]:
    names = ip("netns", "list").stdout + ip("-o", "link", "show").stdout
    return [w for w in names.split() if lab_id in w]


def test_hosts_reach_each_other_and_the_bridge_but_see_only_their_own_root(
        lab: Lab, tmp_path: Path, listener: Callable[[str], int]) -> None:
    state, image, token = tmp_path / "state", tmp_path / "image", tmp_path / "token"
    state.mkdir()
    (state / "gravity.db").write_text("the coordinator's store")
    (image / "packages").mkdir(parents=True)
    token.write_text("secret")
    lab.hide(state, image, token)
    n1, n2 = lab.host("n1"), lab.host("n2")

    server = n2.spawn([sys.executable, "-c",
                       f"import socket; s = socket.socket(); s.bind(({n2.address!r}, 0)); "
                       "s.listen(); print(s.getsockname()[1], flush=True); s.accept()"],
                      stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = int(server.stdout.readline())
    assert n1.reaches(n2.address, port)
    assert n1.reaches(lab.address, listener(lab.address))
    # 127.0.0.1 on a host is its own loopback, not the coordinator's.
    assert not n1.reaches("127.0.0.1", listener("127.0.0.1"))

    seen = json.loads(n1.run([sys.executable, "-c", LIST_AND_READ, str(state), str(image),
                              str(token), str(lab.hosts_dir)], check=0).stdout)
    assert seen == {"hostname": "n1", str(state): [], str(image): [], str(token): "",
                    str(lab.hosts_dir): ["n1"], "write": "Read-only file system"}
    # The host's own state dir is its own, writable, and what the root side sees there.
    n1.run(["sh", "-c", f"echo n1 > {n1.state_dir}/mine"], check=0)
    assert (n1.state_dir / "mine").read_text() == "n1\n"
    # Nothing was mounted or hidden on the coordinator's side.
    assert (state / "gravity.db").exists() and token.read_text() == "secret"


def test_a_process_on_a_host_reaches_etcd_on_the_bridge(lab: Lab) -> None:
    server = lab.etcd()
    n1 = lab.host("n1")
    assert server.endpoint.startswith(f"{lab.address}:")
    etcdctl = str(Path(sys.executable).parent / "etcdctl")
    n1.run([etcdctl, "--endpoints", server.client_url, "put", "from", "n1"], check=0)
    assert server.etcdctl("get", "from", "--print-value-only").strip() == "n1"
    assert n1.gravity("status", check=0).stdout.strip() == "no operations yet"
    # The etcd data dir is hidden from the hosts: they talk to it over the network only.
    assert n1.run(["ls", "-A", str(server.data_dir.parent)], check=0).stdout == ""


def test_a_cut_link_makes_the_bridge_unreachable_until_restored(lab: Lab) -> None:
    port = lab.etcd().client_port
    n1, n2 = lab.host("n1"), lab.host("n2")
    assert n1.reaches(lab.address, port)
    n1.cut()
    assert not n1.reaches(lab.address, port)
    assert n2.reaches(lab.address, port)
    n1.restore()
    wait_for(lambda: n1.reaches(lab.address, port), "n1 to reach etcd again", 20)


def test_a_lab_leaves_nothing_behind_even_when_its_test_fails(need_lab: None,
                                                              tmp_path: Path) -> None:
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    with pytest.raises(RuntimeError, match="the test failed midway"), Lab(tmp_path) as lab:
        server = lab.etcd()
        assert server.proc is not None
        etcd_pid = server.proc.pid
        n1 = lab.host("n1")
        lab.host("n2")
        agent = n1.spawn(["sleep", "300"])
        # A process that escaped its parent is still in the namespace and is killed too.
        n1.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 &"], check=0)
        orphans = [int(p) for p in ip("netns", "pids", n1.netns).stdout.split()]
        assert agent.pid in orphans and len(orphans) == 2
        raise RuntimeError("the test failed midway")
    assert leftovers(lab.id) == []
    assert agent.poll() == -signal.SIGKILL
    assert all(gone(pid) for pid in [*orphans, etcd_pid])
    assert not (REGISTRY / f"{lab.id}.json").exists()
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forward


def test_a_lab_left_by_a_killed_test_run_is_swept_by_the_next(need_lab: None,
                                                               tmp_path: Path) -> None:
    crashed = subprocess.run([sys.executable, "-c", f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.hosts import Lab
lab = Lab({str(tmp_path / "crashed")!r}).start()
etcd = lab.etcd()
proc = lab.host("n1").spawn(["sleep", "300"])
print(lab.id, proc.pid, etcd.proc.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""], capture_output=True, text=True, timeout=60)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    lab_id, *pids = crashed.stdout.split()
    assert leftovers(lab_id) != [] and not any(gone(pid) for pid in pids)
    with Lab(tmp_path / "next") as lab:
        assert leftovers(lab_id) == []
        assert lab.id != lab_id
    assert all(gone(pid) for pid in pids)


def test_hiding_what_a_host_needs_is_refused(lab: Lab) -> None:
    n1 = lab.host("n1")
    with pytest.raises(ValueError, match=r"cannot hide .* it holds"):
        n1.run(["true"], hide=[ROOT])
    with pytest.raises(ValueError, match=r"cannot hide .* it holds"):
        n1.run(["true"], hide=[lab.hosts_dir])
    with pytest.raises(ValueError, match="host name 'n1'"):
        lab.host("n1")
    assert os.listdir(lab.hosts_dir) == ["n1"]
