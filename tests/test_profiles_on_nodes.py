"""What a node profile promises a node, kept from install to removal: its labels and taints on
the Kubernetes node (through the kubectl boundary) and the manifest's `systemOptions` in the
node's runtime configuration — changed by an upgrade that changes them, put back by rollback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.executors.labels import changes


@pytest.fixture
def kube(tmp_path: Path) -> dict:
    """A configured Kubernetes API: a kubeconfig and a `kubectl` on PATH that records its
    arguments (there is no cluster on these machines; the boundary is the command line) and
    fails the calls that match a line of `fail` when that file exists."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record, fail = tmp_path / "kubectl.log", tmp_path / "fail"
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f'#!/bin/sh\necho "$*" >> {record}\n'
                       f'if [ -f {fail} ] && echo "$*" | grep -q -F -f {fail}; then\n'
                       f'  echo "error: $* failed"; exit 1\nfi\n')
    kubectl.chmod(0o755)
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\n")
    return {"env": {"PATH": f"{bin_dir}:{os.environ['PATH']}",
                    "GRAVITY_KUBECONFIG": str(config)},
            "record": record, "fail": fail, "prefix": f"--kubeconfig {config} "}


def calls(kube: dict) -> list[str]:
    """The recorded kubectl calls that label or taint nodes (without the kubeconfig part),
    sorted; the record is emptied so the next step shows only its own calls."""
    lines = kube["record"].read_text().splitlines() if kube["record"].exists() else []
    kube["record"].write_text("")
    return sorted(line.removeprefix(kube["prefix"]) for line in lines
                  if line.startswith((kube["prefix"] + "label nodes ",
                                      kube["prefix"] + "taint nodes ")))


def runtime_config(gravity, node: str) -> dict:
    return json.loads(gravity.node_file(node, "runtime/config.json").read_text())


def test_changes_move_a_node_from_what_it_had_to_what_it_should_have() -> None:
    labels, taints, drop = changes(
        ["role=worker", "tier=web"], ["dedicated=web:PreferNoSchedule"],
        ["role=worker", "zone=a"], ["dedicated=app:NoSchedule", "dedicated=web:PreferNoSchedule"])
    assert labels == ["role=worker", "tier=web", "zone-"]
    assert taints == ["dedicated=web:PreferNoSchedule"]
    assert drop == ["dedicated:NoSchedule-"]
    assert changes([], [], [], []) == ([], [], [])


@pytest.mark.slow  # a whole cluster installed, upgraded, rolled back, expanded, shrunk
def test_labels_taints_and_runtime_options_from_install_to_removal(gravity, images,
                                                                   kube) -> None:
    env = kube["env"]
    gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"), check=0,
            **env)
    # Install: every node carries its profile's labels and taints.
    assert calls(kube) == [
        "label nodes node-1 --overwrite role=master",
        "label nodes node-2 --overwrite role=worker",
        "label nodes node-3 --overwrite role=worker",
        "taint nodes node-2 --overwrite dedicated=app:NoSchedule",
        "taint nodes node-3 --overwrite dedicated=app:NoSchedule"]
    # The runtime configuration: the profile's kubelet args over the cluster's, the cluster's
    # docker options, the labels and taints for the kubelet.
    master, worker = runtime_config(gravity, "node-1"), runtime_config(gravity, "node-2")
    assert master["kubelet"]["args"] == ["--max-pods=30"]
    assert worker["kubelet"]["args"] == ["--max-pods=50"]
    assert worker["docker"] == {"storage_driver": "overlay2", "args": ["--log-level=warn"]}
    assert worker["node_taints"] == ["dedicated=app:NoSchedule"]
    status = json.loads(gravity("status", "-o", "json", check=0).stdout)
    shown = {n["name"]: n for n in status["cluster"]["nodes"]}
    assert shown["node-2"]["runtime_config"] == worker

    # Upgrade: v2 adds a label to the workers, changes their taint and docker's args; the
    # master's unchanged label is set again (a label someone removed by hand comes back). The
    # update hook's Job fails, after the nodes changed.
    kube["fail"].write_text("job/quickstart-update\n")
    gravity("upgrade", str(images / "v2"), "--id", "upgrade", check=1, **env)
    kube["fail"].unlink()
    assert calls(kube) == [
        "label nodes node-1 --overwrite role=master",
        "label nodes node-2 --overwrite role=worker tier=web",
        "label nodes node-3 --overwrite role=worker tier=web",
        "taint nodes node-2 --overwrite dedicated=web:PreferNoSchedule",
        "taint nodes node-2 dedicated:NoSchedule-",
        "taint nodes node-3 --overwrite dedicated=web:PreferNoSchedule",
        "taint nodes node-3 dedicated:NoSchedule-"]
    worker2 = runtime_config(gravity, "node-2")
    assert worker2["docker"]["args"] == ["--log-level=info"]
    assert worker2["node_labels"] == ["role=worker", "tier=web"]

    # Rollback: the v1 configuration, labels and taints come back exactly.
    gravity("rollback", "--operation-id", "upgrade", "--confirm", check=0, **env)
    assert runtime_config(gravity, "node-2") == worker
    undone = calls(kube)
    assert "label nodes node-2 --overwrite role=worker tier-" in undone
    assert "taint nodes node-2 --overwrite dedicated=app:NoSchedule" in undone
    assert "taint nodes node-2 dedicated:PreferNoSchedule-" in undone

    # A node that joins gets its profile's; removing it takes them off before it is deleted.
    gravity("expand", "--node", "node-4", "--address", "10.0.0.4", "--profile", "worker",
            check=0, **env)
    assert calls(kube) == ["label nodes node-4 --overwrite role=worker",
                           "taint nodes node-4 --overwrite dedicated=app:NoSchedule"]
    assert runtime_config(gravity, "node-4") == worker
    gravity("remove", "node-4", "--confirm", check=0, **env)
    assert calls(kube) == ["label nodes node-4 --overwrite role-",
                           "taint nodes node-4 dedicated:NoSchedule-"]


def test_bad_system_options_labels_and_taints_are_exit_2_before_anything_runs(gravity,
                                                                              images) -> None:
    manifest = images / "v1" / "app.yaml"
    text = manifest.read_text()
    manifest.write_text(text.replace("storageDriver: overlay2", "storageDriver: devicemapper")
                        .replace("effect: NoSchedule", "effect: Sometimes")
                        .replace("labels: {role: master}", "labels: {'role!': master}"))
    proc = gravity("manifest", "validate", str(images / "v1"), check=2)
    assert "systemOptions.docker.storageDriver: expected one of overlay, overlay2, got " \
        "'devicemapper'" in proc.stderr
    assert "nodeProfiles[1].taints[0].effect: expected one of NoSchedule, PreferNoSchedule, " \
        "NoExecute" in proc.stderr
    assert "label key 'role!' is not valid" in proc.stderr
    proc = gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"),
                   check=2)
    assert "storageDriver" in proc.stderr
    assert json.loads(gravity("operation", "list", "-o", "json", check=0).stdout) == []
