"""The cluster executors on their own, against real files, sockets and processes: preflight
reports every failure at once, packages switch atomically and undo exactly, hooks honour
the Job's restartPolicy, backoffLimit and activeDeadlineSeconds.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from engine.blobs import BlobCache, publish_image
from engine.errors import ExecutionError
from engine.executors import ExecContext, registry
from engine.executors.content import CachedContent


def ctx(tmp_path: Path, data: dict, *, op_id: str = "op1", node: str = "node-1",
        operation_data: dict | None = None) -> ExecContext:
    state = tmp_path / "state"
    return ExecContext(operation_id=op_id, phase_id="/x", node=node, attempt=1, data=data,
                       workdir=state / "nodes" / node, state_dir=state,
                       log_path=state / "logs" / op_id / "x.log",
                       operation_data=operation_data or {})


def test_checks_report_every_failed_requirement_at_once(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("0.0.0.0", 0))
    busy.listen()
    port = busy.getsockname()[1]
    requirements = {
        "cpu": 100_000,
        "ram": {"bytes": 10**15, "text": "1PB"},
        "os": [{"name": "plan9", "versions": ["4"]}],
        "volumes": [{"path": "/var/lib/data", "capacity": {"bytes": 10**18, "text": "1EB"},
                     "filesystems": ["zfs-that-does-not-exist"], "create_if_missing": True}],
        "ports": [{"protocol": "tcp", "ranges": [[port, port]]}],
        "custom_checks": [{"description": "needs a unicorn", "script": "echo no unicorn; exit 3"},
                          {"description": "true works", "script": "exit 0"}],
    }
    c = ctx(tmp_path, {"profile": "db", "requirements": requirements})
    c.workdir.mkdir(parents=True)
    try:
        with pytest.raises(ExecutionError) as err:
            registry.get("checks").execute(c)
    finally:
        busy.close()
    failures = err.value.tail.splitlines()
    assert len(failures) == 7, failures
    assert failures[0].startswith("CPU: need at least 100000, node has ")
    assert failures[1].startswith("RAM: need at least 1PB")
    assert failures[2].startswith("OS: need one of [plan9 4], node runs ")
    assert failures[3].startswith("volume /var/lib/data: need 1EB free")
    assert failures[4].startswith("volume /var/lib/data: filesystem must be one of zfs")
    assert failures[5] == f"ports tcp/{port}: in use: {port}"
    assert failures[6].startswith("needs a unicorn: custom check: needs a unicorn exited with "
                                  "status 3 (no unicorn)")
    assert "7 requirement(s) failed" in err.value.message
    log = c.log_path.read_text()
    assert "ok   true works: passed" in log and log.count("FAIL ") == 7


def test_checks_pass_on_this_machine(tmp_path: Path) -> None:
    c = ctx(tmp_path, {"profile": "small", "requirements": {
        "cpu": 1, "ram": {"bytes": 1, "text": "1B"},
        "volumes": [{"path": "/data", "capacity": {"bytes": 1, "text": "1B"}}],
    }})
    c.workdir.mkdir(parents=True)
    assert registry.get("checks").execute(c) == "3 checks passed"


def package_image(tmp_path: Path, version: str) -> Path:
    src = tmp_path / "image" / "packages" / "runtime" / version
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "runtime").write_text(f"runtime {version}\n")
    return src


def test_package_switches_atomically_is_idempotent_and_rolls_back(tmp_path: Path) -> None:
    pkg = registry.get("package")
    v1 = {"packages": [{"package": "runtime", "version": "1.0",
                        "source": str(package_image(tmp_path, "1.0"))}], "activate": True}
    v2 = {"packages": [{"package": "runtime", "version": "2.0",
                        "source": str(package_image(tmp_path, "2.0"))}], "activate": True}
    install, upgrade = ctx(tmp_path, v1, op_id="install"), ctx(tmp_path, v2, op_id="upgrade")
    current = install.workdir / "packages" / "runtime" / "current"
    assert pkg.execute(install) == "runtime none -> 1.0"
    assert pkg.execute(install) == "runtime 1.0 already current"
    assert (current / "bin" / "runtime").read_text() == "runtime 1.0\n"
    assert pkg.execute(upgrade) == "runtime 1.0 -> 2.0"
    assert os.readlink(current) == "versions/2.0"
    assert pkg.rollback(upgrade) == "runtime -> 1.0"
    assert pkg.rollback(upgrade) == "runtime -> 1.0"  # undoing twice changes nothing
    assert os.readlink(current) == "versions/1.0"
    assert pkg.rollback(install) == "runtime: current removed (no earlier version)"
    assert not current.exists() and not current.is_symlink()
    assert not list((install.workdir / "packages" / "runtime" / "versions").glob(".*"))


def test_package_from_a_tarball_and_a_missing_source(tmp_path: Path) -> None:
    import tarfile

    src = package_image(tmp_path, "3.0")
    tarball = tmp_path / "runtime-3.0.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(src / "bin", arcname="bin")
    data = {"packages": [{"package": "runtime", "version": "3.0", "source": str(tarball)}]}
    c = ctx(tmp_path, data)
    registry.get("package").execute(c)
    assert (c.workdir / "packages/runtime/current/bin/runtime").read_text() == "runtime 3.0\n"
    missing = {"packages": [{"package": "app", "version": "1", "source": str(tmp_path / "no")}]}
    with pytest.raises(ExecutionError, match="package app 1 not found"):
        registry.get("package").execute(ctx(tmp_path, missing))


def test_bootstrap_creates_volumes_with_mode_and_undoes_only_empty_ones(tmp_path: Path) -> None:
    data = {"service_uid": 1234, "service_from": "node-1", "volumes": [
        {"path": "/var/lib/app", "mode": 0o750, "create_if_missing": True},
        {"path": "/opt/skip", "skip_if_missing": True},
        {"path": "/dev/nvidia*"},
    ], "node": {"name": "node-1"}}
    c = ctx(tmp_path, data)
    boot = registry.get("bootstrap")
    assert boot.execute(c) == "1 volume(s) created"
    vol = c.workdir / "rootfs" / "var/lib/app"
    assert stat.S_IMODE(vol.stat().st_mode) == 0o750
    assert not (c.workdir / "rootfs" / "opt/skip").exists()
    assert json.loads((c.workdir / "service-user.json").read_text()) == {
        "user": "planet", "uid": 1234, "group": "planet", "gid": 1234}
    passwd = (c.workdir / "rootfs/etc/passwd").read_text()
    assert "planet:x:1234:1234:" in passwd  # created in the node's /etc, not the machine's
    (vol / "keep").write_text("data")  # a volume with data in it is never removed
    assert boot.rollback(c) is None
    assert (vol / "keep").exists()
    # An empty volume this operation created is removed on rollback.
    boot.execute(ctx(tmp_path, data, op_id="op2", node="node-2"))
    empty = tmp_path / "state/nodes/node-2/rootfs/var/lib/app"
    assert empty.is_dir()
    assert boot.rollback(ctx(tmp_path, data, op_id="op2", node="node-2")) == \
        "1 empty volume dir(s) removed"
    assert not empty.exists()


def hook_job(script: str, *, restart: str = "OnFailure", backoff: int = 2,
             deadline: int | None = None, containers: int = 1) -> str:
    spec = f"  backoffLimit: {backoff}\n"
    if deadline:
        spec += f"  activeDeadlineSeconds: {deadline}\n"
    items = "".join(textwrap.dedent(f"""\
        - name: c{i}
          image: x
          command: ["/bin/sh", "-c", {json.dumps(script.replace("@", str(i)))}]
        """) for i in range(containers))
    items = textwrap.indent(items, "        ")
    return (f"apiVersion: batch/v1\nkind: Job\nmetadata: {{name: job}}\nspec:\n{spec}"
            f"  template:\n    spec:\n      restartPolicy: {restart}\n      containers:\n"
            f"{items}")


POD = """\
apiVersion: v1
kind: Pod
spec:
  securityContext:
    runAsUser: -1
  containers:
    - name: web
      securityContext:
        runAsUser: -1   # the container's own
        runAsGroup: "-1"
"""


def run_hook(tmp_path: Path, job: str, hook: str = "install") -> tuple[str | None, Path]:
    """Run a hook the way a node does: the image published into the node's cache and named
    by digest in the phase's data."""
    image = tmp_path / "image"
    image.mkdir(exist_ok=True)
    (image / "app.yaml").write_text("kind: Bundle\n")
    (image / "pod.yaml").write_text(POD)
    cache = BlobCache(tmp_path / "state")
    ref = publish_image(cache, image, link=False).ref
    c = ctx(tmp_path, {"hooks": [{"hook": hook, "source": job}], "image": ref.to_dict()},
            operation_data={"values": {"k": "v"}, "service_uid": 77, "service_gid": 88})
    c = replace(c, content=CachedContent(cache))
    c.workdir.mkdir(parents=True, exist_ok=True)
    return registry.get("hook").execute(c), c.workdir


def test_hook_on_failure_restarts_only_the_failed_container(tmp_path: Path) -> None:
    # Container 1 fails on its first run only; container 0 must not run again.
    script = 'echo run >> c@.runs; [ @ = 0 ] || [ -f c@.ok ] || { touch c@.ok; exit 1; }'
    note, work = run_hook(tmp_path, hook_job(script, containers=2))
    assert note == "hook install ran 2 container(s) locally"
    assert (work / "c0.runs").read_text().count("run") == 1
    assert (work / "c1.runs").read_text().count("run") == 2


def test_hook_never_restarts_the_whole_pod(tmp_path: Path) -> None:
    script = 'echo run >> c@.runs; [ @ = 0 ] || [ -f c@.ok ] || { touch c@.ok; exit 1; }'
    _, work = run_hook(tmp_path, hook_job(script, restart="Never", containers=2))
    assert (work / "c0.runs").read_text().count("run") == 2
    assert (work / "c1.runs").read_text().count("run") == 2


def test_hook_gives_up_after_backoff_limit(tmp_path: Path) -> None:
    with pytest.raises(ExecutionError, match=r"backoffLimit 1 reached"):
        run_hook(tmp_path, hook_job("echo run >> tries; exit 4", backoff=1))
    assert (tmp_path / "state/nodes/node-1/tries").read_text().count("run") == 2


def test_hook_active_deadline_stops_it(tmp_path: Path) -> None:
    with pytest.raises(ExecutionError, match="exceeded activeDeadlineSeconds=1"):
        run_hook(tmp_path, hook_job("sleep 20", deadline=1))


def test_a_hook_sees_what_the_seeds_promise_at_the_promised_paths(tmp_path: Path) -> None:
    """From inside the hook: the resources, the values file, kubectl and helm, the service
    user and group, and `runAsUser: -1` translated in the resources' YAML."""
    script = ('echo "$GRAVITY_SERVICE_USER $GRAVITY_SERVICE_GROUP" > ids.txt; '
              'ls /var/lib/gravity/resources > resources.txt; '
              'cp /var/lib/gravity/resources/pod.yaml pod-seen.yaml; '
              'cp /var/lib/gravity/helm/values.yaml values-seen.yaml; '
              'echo "$GRAVITY_RESOURCES_DIR $GRAVITY_HELM_VALUES" > paths.txt; '
              '/usr/local/bin/helm version > helm.txt 2>&1 || echo "exit $?" >> helm.txt')
    _, work = run_hook(tmp_path, hook_job(script))
    assert (work / "ids.txt").read_text() == "77 88\n"
    assert (work / "resources.txt").read_text().split() == ["app.yaml", "pod.yaml"]
    assert (work / "paths.txt").read_text() == \
        "/var/lib/gravity/resources /var/lib/gravity/helm/values.yaml\n"
    assert (work / "values-seen.yaml").read_text() == "k: v\n"
    pod = (work / "pod-seen.yaml").read_text()
    assert "runAsUser: -1" not in pod and pod.count("runAsUser: 77") == 2
    assert 'runAsGroup: 88' in pod and "# the container's own" in pod
    if shutil.which("helm") is None:
        assert (work / "helm.txt").read_text() == \
            "helm is not installed on node node-1\nexit 127\n"
    assert stat.S_IMODE((work / "helm" / "values.yaml").stat().st_mode) == 0o600
    # Nothing leaked out of the hook's namespace: the host has no such files.
    assert not Path("/var/lib/gravity/resources/pod.yaml").exists()


def test_hooks_without_values_do_not_see_them(tmp_path: Path) -> None:
    script = ('echo "[$GRAVITY_HELM_VALUES]" > env.txt; '
              'ls /var/lib/gravity/helm > listed.txt 2>&1 || true')
    _, work = run_hook(tmp_path, hook_job(script), hook="status")
    assert (work / "env.txt").read_text() == "[]\n"
    assert "values.yaml" not in (work / "listed.txt").read_text()


def test_file_executor_restores_what_was_there(tmp_path: Path) -> None:
    f = registry.get("file")
    c = ctx(tmp_path, {"path": "cluster.json", "content": {"a": 1}})
    c.workdir.mkdir(parents=True)
    (c.workdir / "cluster.json").write_text("old\n")
    f.execute(c)
    assert json.loads((c.workdir / "cluster.json").read_text()) == {"a": 1}
    assert f.rollback(c) == "restored cluster.json"
    assert (c.workdir / "cluster.json").read_text() == "old\n"
    assert f.validate({"path": "../escape", "content": ""}) == [
        "`path` must be a relative path inside the node directory"]
