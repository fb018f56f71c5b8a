"""A cluster's whole life through the real CLI: install, expand, remove, a failed upgrade rolled
back, the application's own hooks, backup and restore, uninstall — every manifest hook at its
point, asserted as one ordered list from the file each hook appends to — and the refusals.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.conftest import Gravity

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"

LIFECYCLE = [
    # install
    "networkInstall", "install", "postInstall",
    # expand, then remove the node again
    "preNodeAdd", "postNodeAdd", "preNodeRemove", "postNodeRemove",
    # an upgrade whose update hook fails, rolled back
    "networkUpdate", "update", "rollback", "networkRollback", "postRollback",
    # the application's own hooks
    "status", "stop", "start",
    # its data
    "backup", "restore",
    # and its end
    "preUninstall", "uninstall",
]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for version in ("v1", "v2"):
        shutil.copytree(QUICKSTART / version, tmp_path / version)
    shutil.copy(QUICKSTART / "nodes.yaml", tmp_path / "nodes.yaml")
    return tmp_path


def hooks_run(g: Gravity) -> list[str]:
    log = g.state_dir / "hooks.log"
    return log.read_text().split() if log.exists() else []


def op_types(g: Gravity) -> dict[str, str]:
    rows = json.loads(g("operation", "list", "-o", "json", check=0).stdout)
    return {r["id"]: r["state"] for r in rows}


@pytest.mark.slow  # a whole cluster installed, then changed
def test_every_hook_runs_at_its_point_across_a_whole_lifecycle(
        gravity: Gravity, images: Path, tmp_path: Path) -> None:
    gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"),
            "--id", "install-1", check=0)
    gravity("expand", "--node", "node-4", "--address", "10.0.0.4", "--profile", "worker",
            check=0)
    gravity("remove", "node-4", "--confirm", "--id", "remove-1", check=0)
    listed = [line.split()[0] for line in gravity("status", check=0).stdout.splitlines()
              if line.startswith("  node-")]
    assert listed == ["node-1", "node-2", "node-3"]
    # A failed upgrade (the application refuses while in maintenance), rolled back.
    maintenance = gravity.node_file("node-1", "app/maintenance")
    maintenance.touch()
    gravity("upgrade", str(images / "v2"), "--id", "upgrade-1", check=1)
    gravity("rollback", "--operation-id", "upgrade-1", "--confirm", check=0)
    maintenance.unlink()
    # The application's own hooks.
    shown = gravity("app", "status", check=0).stdout
    assert "quickstart 1.0.0: running" in shown
    gravity("app", "stop", check=0)
    assert "Application:  stopped" in gravity("status", check=0).stdout
    gravity("app", "start", check=0)
    assert "Application:  running" in gravity("status", check=0).stdout
    # Its data.
    archive = tmp_path / "backup.tar.gz"
    gravity("backup", str(archive), check=0)
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == "manifest.json" and "data/version" in tar.getnames()
    gravity.node_file("node-1", "app/version").write_text("broken\n")
    gravity("restore", str(archive), check=0)
    assert gravity.node_file("node-1", "app/version").read_text() == "1.0.0\n"
    # And its end: the cluster record is closed, so install may run again.
    gravity("uninstall", "--confirm", "--id", "uninstall-1", check=0)
    assert hooks_run(gravity) == LIFECYCLE
    assert "Cluster:    none installed" in gravity("status", check=0).stdout
    assert not gravity.node_file("node-2", "packages").exists()
    gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"),
            "--id", "install-2", check=0)


@pytest.mark.slow  # a whole cluster installed, then changed
def test_remove_refuses_what_would_break_the_cluster(gravity: Gravity, images: Path) -> None:
    gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"),
            "--id", "install-1", check=0)
    before = op_types(gravity)
    unknown = gravity("remove", "node-9", "--confirm", check=2)
    assert "node node-9 is not in the cluster" in unknown.stderr
    assert "node-1, node-2, node-3" in unknown.stderr
    last = gravity("remove", "node-1", "--confirm", check=3)
    assert "node node-1 is the last master" in last.stderr and "gravity uninstall" in last.stderr
    short = gravity("remove", "node-3", "--confirm", check=3)
    assert ("flavor three needs at least 2 node(s) of profile worker, there would be 1 "
            "(missing 1)") in short.stderr
    assert "--force" in short.stderr
    no_tty = gravity("remove", "node-3", "--force", check=2)
    assert "pass --confirm" in no_tty.stderr
    assert op_types(gravity) == before  # nothing was written by any refusal
    dry = gravity("remove", "node-3", "--force", "--dry-run", check=0)
    assert "/system" in dry.stdout and "nothing was written" in dry.stdout
    assert op_types(gravity) == before
    # Another operation holds the cluster: refused while it is active.
    gravity("upgrade", str(images / "v2"), "--manual", "--id", "upgrade-1", check=0)
    busy = gravity("remove", "node-3", "--force", "--confirm", check=3)
    assert "operation upgrade-1 is still active" in busy.stderr


@pytest.mark.slow  # a whole cluster installed, then changed
def test_forced_remove_keeps_or_purges_the_volumes_and_says_which(
        gravity: Gravity, images: Path) -> None:
    gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"),
            "--id", "install-1", check=0)
    volume = gravity.node_file("node-3", "rootfs/var/lib/quickstart")
    assert volume.is_dir()
    gravity("remove", "node-3", "--force", "--confirm", "--id", "remove-3", check=0)
    plan = gravity("plan", "--operation-id", "remove-3", check=0).stdout
    assert volume.is_dir()
    # The note names the path that was kept; a node added back reuses its data.
    notes = [json.loads(x).get("note") or "" for x in gravity(
        "events", "--operation-id", "remove-3", "-o", "json", check=0).stdout.splitlines()]
    assert any("volumes kept (pass --purge to delete them): /var/lib/quickstart" in n
               for n in notes), plan
    gravity("expand", "--node", "node-3", "--address", "10.0.0.3", "--profile", "worker",
            check=0)
    assert "  node-3 " in gravity("status", check=0).stdout
    gravity("remove", "node-3", "--force", "--purge", "--confirm", "--id", "remove-4",
            check=0)
    assert not volume.exists()
    notes = [json.loads(x).get("note") or "" for x in gravity(
        "events", "--operation-id", "remove-4", "-o", "json", check=0).stdout.splitlines()]
    assert any("volumes purged: /var/lib/quickstart" in n for n in notes)


@pytest.mark.slow  # a whole CLI story: out of --fast
def test_commands_of_hooks_the_image_lacks_say_which_hook(
        gravity: Gravity, images: Path) -> None:
    app = images / "v1" / "app.yaml"
    text = app.read_text()
    for hook in ("status", "backup", "restore"):
        text = text.replace(f"  {hook}:\n    job: file://hooks/{hook}.yaml\n", "")
    app.write_text(text)
    gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"),
            "--id", "install-1", check=0)
    before = op_types(gravity)
    for args, hook in ((("app", "status"), "status"), (("backup", str(images / "b.tgz")),
                                                       "backup")):
        proc = gravity(*args, check=2)
        assert f"defines no `{hook}` hook" in proc.stderr
    assert op_types(gravity) == before


@pytest.mark.slow  # a whole cluster installed, then changed
def test_a_damaged_backup_is_refused_before_anything_is_written(
        gravity: Gravity, images: Path, tmp_path: Path) -> None:
    gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"),
            "--id", "install-1", check=0)
    archive = tmp_path / "b.tar.gz"
    gravity("backup", str(archive), check=0)
    before = op_types(gravity)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:200])
    proc = gravity("restore", str(truncated), check=2)
    assert "it may be truncated" in proc.stderr
    altered = tmp_path / "altered.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(altered, "w:gz") as out:
        for member in src:
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "data/version":
                data = b"6.6.6\n"
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    proc = gravity("restore", str(altered), check=2)
    assert "data/version does not match its digest in manifest.json" in proc.stderr
    not_one = tmp_path / "plain.txt"
    not_one.write_text("hello\n")
    gravity("restore", str(not_one), check=2)
    assert op_types(gravity) == before


@pytest.mark.slow  # over ~2.5 s: out of --fast
def test_a_report_holds_the_plans_the_event_logs_the_dump_and_the_logs(
        gravity: Gravity, images: Path, tmp_path: Path) -> None:
    gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"),
            "--id", "install-1", check=0)
    report = tmp_path / "r.tar.gz"
    gravity("report", "--file", str(report), check=0)
    with tarfile.open(report) as tar:
        names = tar.getnames()
        assert "report/operations/install-1/plan.json" in names
        assert "report/operations/install-1/events.jsonl" in names
        dump = tar.extractfile("report/dump.txt").read().decode()  # type: ignore[union-attr]
        assert "quickstart 1.0.0" in dump
        assert "report/nodes/local-logs.tar.gz" in names


def test_uninstall_needs_confirmation_without_a_terminal(gravity: Gravity,
                                                         images: Path) -> None:
    gravity("install", str(images / "v1"), "--nodes", str(images / "nodes.yaml"),
            "--id", "install-1", check=0)
    proc = gravity("uninstall", check=2)
    assert "pass --confirm" in proc.stderr
    assert "Cluster:    quickstart 1.0.0" in gravity("status", check=0).stdout
