"""The product as its users meet it: install the quickstart image, add a node, upgrade with a
failing hook, resume, roll back — asserting what every node's files and the store show.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import QUICKSTART, ROOT


def runtime(gravity, node: str) -> str:
    return os.readlink(gravity.node_file(node, "packages/runtime/current")).rsplit("/", 1)[-1]


def app_file(gravity, name: str) -> str:
    return gravity.node_file("node-1", f"app/{name}").read_text()


def ops(gravity) -> dict[str, dict]:
    return {o["id"]: o for o in json.loads(gravity("operation", "list", "-o", "json",
                                                   check=0).stdout)}


def service_user(gravity, node: str) -> list[str]:
    """The `planet` line of the node's own /etc/passwd, split at the colons."""
    passwd = gravity.node_file(node, "rootfs/etc/passwd").read_text().splitlines()
    return next(line.split(":") for line in passwd if line.startswith("planet:"))


def install(gravity, images: Path, *extra: str, check: int = 0):
    return gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"),
                   "--id", "install", *extra, check=check)


@pytest.mark.slow  # a whole cluster installed, then upgraded
def test_install_expand_upgrade_with_a_failing_hook_then_resume(gravity, images) -> None:
    install(gravity, images, "--set", "greeting=hello")
    assert [runtime(gravity, n) for n in ("node-1", "node-2", "node-3")] == ["1.0.0"] * 3
    assert app_file(gravity, "version") == "1.0.0\n"
    assert "greeting: hello" in app_file(gravity, "values.yaml")
    assert gravity.node_file("node-1", "app/ready").exists()
    volume = gravity.node_file("node-1", "rootfs/var/lib/quickstart")
    assert volume.is_dir() and stat.S_IMODE(volume.stat().st_mode) == 0o750
    config = json.loads(gravity.node_file("node-1", "cluster.json").read_text())
    assert [n["name"] for n in config["nodes"]] == ["node-1", "node-2", "node-3"]

    gravity("expand", "--node", "node-4", "--address", "10.0.0.4", "--profile", "worker",
            "--id", "expand", check=0)
    assert runtime(gravity, "node-4") == "1.0.0"
    assert json.loads(gravity.node_file("node-4", "node.json").read_text())["role"] == "node"

    # The update hook refuses while the app is in maintenance mode: the upgrade stops there.
    gravity.node_file("node-1", "app/maintenance").write_text("")
    proc = gravity("upgrade", str(images / "v2"), "--id", "upgrade", "--set", "greeting=hi",
                   "--parallel-workers", "2", check=1)
    assert "phase /app/quickstart failed" in proc.stderr
    assert "maintenance mode" in gravity("plan", check=0).stdout
    assert [runtime(gravity, n) for n in ("node-1", "node-2", "node-3", "node-4")] == \
        ["2.0.0"] * 4
    assert app_file(gravity, "version") == "1.0.0\n"
    assert ops(gravity)["upgrade"]["state"] == "active"
    # The SRE fixes the cause and resumes; completed phases do not run again.
    gravity.node_file("node-1", "app/maintenance").unlink()
    gravity("plan", "resume", check=0)
    assert app_file(gravity, "version") == "2.0.0\n"
    assert "greeting: hi" in app_file(gravity, "values.yaml")
    history = app_file(gravity, "history").splitlines()
    # The hooks ran as the service user the install created in each node's own /etc.
    planet = service_user(gravity, "node-1")
    assert history[0] == f"installed 1.0.0 as uid {planet[2]}"
    assert all(service_user(gravity, n) == planet for n in ("node-2", "node-3", "node-4"))
    assert history[1:3] == ["adding a node", "added a node"]  # the expand's two hooks
    assert history[3] == "updated to 2.0.0"
    assert history[4].startswith("post-update at ")
    log = gravity.changelog("upgrade")
    upgrades = [r for r in log if r["phase"] == "/masters/node-1/system-upgrade"
                and r["to"] == "completed"]
    assert len(upgrades) == 1
    status = gravity("status", check=0).stdout
    assert "Cluster:    quickstart 2.0.0 (flavor three)" in status
    assert "node-4" in status and "runtime 2.0.0" in status
    assert ops(gravity)["upgrade"]["state"] == "completed"


@pytest.mark.slow  # a whole cluster installed, then expanded
@pytest.mark.slow  # a whole cluster installed, then expanded
def test_the_service_user_is_created_on_every_node_with_the_same_ids(gravity, images) -> None:
    machine = Path("/etc/passwd").read_text()
    install(gravity, images)
    planet = service_user(gravity, "node-1")
    assert all(service_user(gravity, n) == planet for n in ("node-2", "node-3"))
    group = next(line.split(":") for line in gravity.node_file("node-1", "rootfs/etc/group")
                 .read_text().splitlines() if line.startswith("planet:"))
    assert group[2] == planet[3]  # the user's primary group is `planet`
    status = gravity("status", check=0).stdout
    assert f"Service user: planet (uid {planet[2]}, gid {planet[3]})" in status
    # A node that joins later gets the same IDs; the machine's own /etc is never touched.
    gravity("expand", "--node", "node-4", "--address", "10.0.0.4", "--profile", "worker",
            check=0)
    assert service_user(gravity, "node-4") == planet
    assert Path("/etc/passwd").read_text() == machine


@pytest.mark.slow  # a whole cluster installed, then expanded
@pytest.mark.slow  # a whole cluster installed, then expanded
def test_explicit_service_ids_are_honoured_and_a_clash_is_explained(gravity, images) -> None:
    install(gravity, images, "--service-uid", "4242", "--service-gid", "4343")
    assert service_user(gravity, "node-2")[2:4] == ["4242", "4343"]
    assert "installed 1.0.0 as uid 4242" in app_file(gravity, "history")
    # A node whose `planet` user has other IDs cannot join: the phase says why.
    passwd = gravity.node_file("node-4", "rootfs/etc/passwd")
    passwd.parent.mkdir(parents=True, exist_ok=True)
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\nplanet:x:5000:5000::/:/bin/false\n")
    proc = gravity("expand", "--node", "node-4", "--address", "10.0.0.4", "--profile",
                   "worker", check=1)
    assert "user planet exists on node node-4 with UID 5000, not 4242" in proc.stderr


@pytest.mark.slow  # a whole cluster installed, then upgraded
def test_failed_upgrade_rolls_back_every_node_to_v1(gravity, images) -> None:
    install(gravity, images)
    gravity.node_file("node-1", "app/maintenance").write_text("")
    gravity("upgrade", str(images / "v2"), "--id", "upgrade", check=1)
    assert runtime(gravity, "node-3") == "2.0.0"
    gravity("rollback", "--confirm", check=0)
    assert [runtime(gravity, n) for n in ("node-1", "node-2", "node-3")] == ["1.0.0"] * 3
    history = app_file(gravity, "history").splitlines()
    assert history[-2:] == ["rolled back to 1.0.0", "post-rollback"]
    assert ops(gravity)["upgrade"]["state"] == "rolled_back"
    rolled = [r["phase"] for r in gravity.changelog("upgrade")
              if r["to"] == "rolled_back"]
    assert rolled[0] == "/app/quickstart" and rolled[-1] == "/init"
    assert rolled.index("/nodes/node-2/system-upgrade") < rolled.index(
        "/masters/node-1/system-upgrade")
    assert "Cluster:    quickstart 1.0.0" in gravity("status", check=0).stdout
    # With the upgrade rolled back, a new one may start.
    gravity.node_file("node-1", "app/maintenance").unlink()
    gravity("upgrade", str(images / "v2"), "--id", "again", check=0)
    assert runtime(gravity, "node-2") == "2.0.0"


def test_a_flavor_lists_minimums_fewer_nodes_are_exit_2_more_are_fine(gravity, images) -> None:
    (images / "two.yaml").write_text(
        "nodes:\n  - {name: node-1, address: 10.0.0.1, profile: master, role: master}\n"
        "  - {name: node-2, address: 10.0.0.2, profile: worker}\n")
    proc = gravity("install", str(images / "v1"), "--nodes", str(images / "two.yaml"),
                   check=2)
    assert ("flavor three needs at least 2 node(s) of profile worker, there would be 1 "
            "(missing 1)") in proc.stderr
    proc = install(gravity, images, "--flavor", "huge", check=2)
    assert "unknown flavor 'huge'" in proc.stderr
    assert not gravity.db.exists() or ops(gravity) == {}
    # Flavor `one` asks for at least one master: a master and two workers are more than
    # enough (the seeds: "the minimum required quantity of each server type").
    install(gravity, images, "--flavor", "one", check=0)


def test_bad_manifest_and_inventory_are_exit_2(gravity, images) -> None:
    manifest = images / "v1" / "app.yaml"
    manifest.write_text(manifest.read_text().replace("resourceVersion: 1.0.0",
                                                     "resourceVersion: one"))
    proc = install(gravity, images, check=2)
    assert "metadata.resourceVersion" in proc.stderr
    (images / "bad-nodes.yaml").write_text("nodes:\n  - {name: Node_1, address: '', role: boss}\n")
    proc = gravity("install", str(QUICKSTART / "v1"), "--nodes",
                   str(images / "bad-nodes.yaml"), check=2)
    for fragment in ("nodes[0].name", "nodes[0].address", "nodes[0].profile", "nodes[0].role"):
        assert fragment in proc.stderr
    proc = gravity("install", str(QUICKSTART / "v1"), "--nodes", str(images / "nodes.yaml"),
                   "--set", "a[x]=1", check=2)
    assert "a[x]=1" in proc.stderr
    assert not gravity.db.exists() or ops(gravity) == {}


@pytest.mark.slow  # over ~2.5 s: out of --fast
def test_failing_preflight_closes_the_operation_and_frees_the_lock(gravity, images) -> None:
    manifest = images / "v1" / "app.yaml"
    manifest.write_text(manifest.read_text().replace("cpu: {min: 1}\n      ram: {min: 128MB}",
                                                     "cpu: {min: 4096}\n      ram: {min: 128MB}"))
    proc = install(gravity, images, check=1)
    assert "preflight failed, nothing was changed" in proc.stderr
    plan = gravity("plan", check=0).stdout
    assert "CPU: need at least 4096" in plan
    assert ops(gravity)["install"]["state"] == "failed"
    assert not gravity.node_file("node-2", "packages").joinpath("runtime").exists()
    # Nothing holds the cluster: a corrected install goes through.
    manifest.write_text(manifest.read_text().replace("min: 4096", "min: 1"))
    gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"),
            "--id", "second", check=0)
    assert runtime(gravity, "node-2") == "1.0.0"


def test_expand_policy_fixed_is_refused(gravity, images) -> None:
    install(gravity, images)
    proc = gravity("join", "--node", "db-1", "--address", "10.0.0.9", "--profile", "db",
                   check=3)
    assert "expandPolicy: fixed" in proc.stderr
    proc = gravity("expand", "--node", "node-2", "--address", "10.0.0.2", "--profile",
                   "worker", check=2)
    assert "node node-2 is already in the cluster" in proc.stderr
    assert list(ops(gravity)) == ["install"]


def test_values_are_data_never_code(gravity, images, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    evil = f"x; touch {pwned}"
    install(gravity, images, "--set-string", f"banner={evil}", "--set", f"name=$(touch {pwned})")
    import yaml

    values = yaml.safe_load(app_file(gravity, "values.yaml"))
    assert values == {"banner": evil, "name": f"$(touch {pwned})"}
    assert not pwned.exists()
    helm = gravity.node_file("node-1", "helm/values.yaml")
    assert stat.S_IMODE(helm.stat().st_mode) == 0o600


@pytest.mark.slow  # a whole CLI story: out of --fast
def test_manual_install_only_creates_the_plan(gravity, images) -> None:
    out = install(gravity, images, "--manual").stdout
    assert "gravity plan execute --phase /init" in out
    assert set(gravity.states().values()) == {"unstarted"}
    gravity("plan", "execute", "--phase", "/init", check=0)
    gravity("plan", "execute", "--phase", "/checks/node-2", check=0)
    gravity("plan", "resume", check=0)
    assert ops(gravity)["install"]["state"] == "completed"


@pytest.mark.slow  # over ~2.5 s: out of --fast
def test_kubectl_commands_with_a_configured_kubeconfig(gravity, images, tmp_path: Path) -> None:
    install(gravity, images)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "kubectl.log"
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f'#!/bin/sh\necho "$*" >> {record}\n')
    kubectl.chmod(0o755)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "GRAVITY_KUBECONFIG": str(kubeconfig)}
    gravity("upgrade", str(images / "v2"), "--id", "upgrade", check=0, **env)
    calls = record.read_text().splitlines()
    k = f"--kubeconfig {kubeconfig}"
    drains = [c for c in calls if " drain " in c or " uncordon " in c]
    assert drains[:3] == [
        f"{k} drain node-1 --ignore-daemonsets --delete-emptydir-data --timeout=5m",
        f"{k} uncordon node-1",
        f"{k} drain node-2 --ignore-daemonsets --delete-emptydir-data --timeout=5m",
    ]
    hook_calls = [c for c in calls if "job" in c or "apply" in c]
    update = hook_calls.index(f"{k} --namespace default delete job quickstart-update "
                              "--ignore-not-found")
    assert hook_calls[update + 1].startswith(f"{k} --namespace default apply -f ")
    assert hook_calls[update + 2] == (f"{k} --namespace default wait "
                                      "--for=condition=complete job/quickstart-update "
                                      "--timeout=600s")
    assert "skipped" not in gravity("plan", check=0).stdout
    # What the boundary applied: the hook's Job with the seeds' contract added to it.
    applied = json.loads(Path(hook_calls[update + 1].rsplit(" ", 1)[1]).read_text())
    secret, job = applied["items"]
    assert secret["kind"] == "Secret" and "greeting" not in secret["stringData"]["values.yaml"]
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "node-1"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["gravity-helm-values"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert volumes["gravity-resources"]["hostPath"]["path"].endswith(
        "nodes/node-1/hooks/resources")
    container = pod["containers"][0]
    uid = service_user(gravity, "node-1")[2]
    assert {"name": "GRAVITY_SERVICE_USER", "value": uid} in container["env"]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {
        "/var/lib/gravity/resources", "/var/lib/gravity/helm"}


@pytest.mark.slow  # over ~2.5 s: out of --fast
def test_kubectl_phases_are_visibly_skipped_without_kubernetes(gravity, images) -> None:
    install(gravity, images)
    gravity("upgrade", str(images / "v2"), check=0)
    plan = gravity("plan", check=0).stdout
    assert "Phase /masters/node-1/drain: skipped: Kubernetes API not configured" in plan
    logs = gravity.state_dir / "logs"
    drain_log = next(logs.glob("*/masters/node-1/drain.log"))
    assert "skipped: Kubernetes API not configured" in drain_log.read_text()


@pytest.mark.slow  # a whole cluster installed, then upgraded
def test_upgrade_refused_while_the_last_upgrade_is_unsettled(gravity, images) -> None:
    install(gravity, images)
    gravity.node_file("node-1", "app/maintenance").write_text("")
    gravity("upgrade", str(images / "v2"), "--id", "first", check=1)
    assert "the last upgrade first is active" in gravity("upgrade", str(images / "v2"),
                                                        check=3).stderr
    assert "first is still active" in gravity("upgrade", str(images / "v2"), "--force",
                                              check=3).stderr
    gravity("plan", "complete", check=0)
    proc = gravity("upgrade", str(images / "v2"), check=3)
    assert "the last upgrade first is failed, neither completed nor rolled back" in proc.stderr
    gravity.node_file("node-1", "app/maintenance").unlink()
    gravity("upgrade", str(images / "v2"), "--force", "--id", "forced", check=0)
    assert ops(gravity)["forced"]["state"] == "completed"


@pytest.mark.slow  # a whole cluster installed, then upgraded
def test_the_images_upgrade_script(gravity, images) -> None:
    install(gravity, images)
    env = gravity.env(GRAVITY=str(ROOT / ".venv" / "bin" / "gravity"))
    proc = subprocess.run([str(images / "v2" / "upgrade"), "--set", "greeting=scripted"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "greeting: scripted" in app_file(gravity, "values.yaml")
    assert runtime(gravity, "node-3") == "2.0.0"


@pytest.mark.slow  # a whole cluster installed, then upgraded
def test_an_upgrade_closed_as_failed_can_still_be_rolled_back(gravity, images) -> None:
    install(gravity, images)
    gravity.node_file("node-1", "app/maintenance").write_text("")
    gravity("upgrade", str(images / "v2"), "--id", "closed", check=1)
    gravity("plan", "complete", check=0)  # closed as failed, half-upgraded
    assert runtime(gravity, "node-2") == "2.0.0"
    refused = gravity("plan", "resume", "--operation-id", "closed", check=3)
    assert "closed as failed" in refused.stderr
    assert "gravity rollback --operation-id closed" in refused.stderr
    gravity("rollback", "--operation-id", "closed", "--confirm", check=0)
    assert [runtime(gravity, n) for n in ("node-1", "node-2", "node-3")] == ["1.0.0"] * 3
    assert ops(gravity)["closed"]["state"] == "rolled_back"
    gravity.node_file("node-1", "app/maintenance").unlink()
    gravity("upgrade", str(images / "v2"), "--id", "next", check=0)
    refused = gravity("rollback", "--operation-id", "next", "--confirm", check=3)
    assert "a completed operation cannot be changed" in refused.stderr


@pytest.mark.slow  # a whole cluster installed, then upgraded
def test_a_failed_preflight_does_not_block_the_next_upgrade(gravity, images) -> None:
    install(gravity, images)
    manifest = images / "v2" / "app.yaml"
    original = manifest.read_text()
    manifest.write_text(original.replace("cpu: {min: 1}\n      ram: {min: 128MB}",
                                         "cpu: {min: 4096}\n      ram: {min: 128MB}"))
    proc = gravity("upgrade", str(images / "v2"), "--id", "pre", check=1)
    assert "preflight failed, nothing was changed" in proc.stderr
    manifest.write_text(original)
    gravity("upgrade", str(images / "v2"), "--id", "real", check=0)
    assert runtime(gravity, "node-3") == "2.0.0"


def test_an_install_with_a_bad_manifest_leaves_a_fresh_state_dir_empty(gravity, images) -> None:
    """A new user's first install with a broken manifest: exit 2 naming the file and field,
    and the state dir is not even created — no empty database is left behind to confuse the
    next command."""
    app = images / "v1" / "app.yaml"
    app.write_text(app.read_text().replace("nodeProfiles:", "nodeProfile:", 1))
    proc = gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"),
                   check=2)
    assert str(app) in proc.stderr and "Traceback" not in proc.stderr
    assert not gravity.state_dir.exists()
