"""Loading the seed sample manifests: every documented field lands in the typed model,
URI fields are resolved, hooks become typed jobs, and to_dict round-trips."""

from __future__ import annotations

import base64
import http.server
import shutil
import socket
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from engine.errors import ManifestError
from engine.manifest import (
    ByteSize,
    ExpandPolicy,
    FileMode,
    HookName,
    Kind,
    NetworkType,
    PortRange,
    Protocol,
    RestartPolicy,
    load_manifest,
)

FIXTURES = Path(__file__).parent / "fixtures" / "manifests"
CLUSTER = FIXTURES / "cluster"
BUNDLE = FIXTURES / "bundle"


def write(tmp_path: Path, text: str, name: str = "app.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


MINIMAL = """\
metadata:
  name: Tiny
  resourceVersion: 0.1.0
"""


def test_cluster_sample_loads_every_documented_section() -> None:
    loaded = load_manifest(CLUSTER)
    m = loaded.manifest
    assert loaded.warnings == []
    assert loaded.path == CLUSTER / "app.yaml"
    assert loaded.base_dir == CLUSTER
    assert (m.kind, m.api_version) == (Kind.CLUSTER, "cluster.gravitational.io/v2")
    assert (m.metadata.name, m.metadata.resource_version) == ("MyCluster", "1.2.3-alpha.1")
    assert m.metadata.author == "Alice <alice@example.com>"
    assert m.base_image == "gravity:6.0.0"
    assert m.release_notes == (CLUSTER / "notes.html").read_text()
    assert m.logo == "http://example.com/logo.png"  # kept as is, never fetched
    assert [e.name for e in m.endpoints] == ["Control Panel", "Setup"]
    assert m.endpoints[0].selector == {"app": "nginx"}
    assert (m.endpoints[1].service_name, m.endpoints[1].hidden) == ("setup-helper", True)
    assert m.providers.default is None  # "" means auto-detect
    assert m.providers.generic is not None
    assert m.providers.generic.network.type is NetworkType.VXLAN
    assert m.installer.eula is not None
    assert m.installer.eula.source == (CLUSTER / "eula.txt").read_text()
    assert m.installer.setup_endpoints == ("Setup",)
    flavors = m.installer.flavors
    assert flavors is not None
    assert flavors.description == (CLUSTER / "flavors-help.txt").read_text()
    assert [f.name for f in flavors.items] == ["small", "large"]
    assert m.default_flavor is m.flavor("small")
    assert [(n.profile, n.count) for n in flavors.items[1].nodes] == [("worker", 5), ("db", 3)]
    assert m.license.enabled is True
    assert m.storage.openebs.enabled is False
    opts = m.system_options
    assert (opts.docker.storage_driver, opts.docker.args) == ("overlay", ("--log-level=DEBUG",))
    assert opts.etcd.args == ("-debug",)
    assert opts.kubelet.hairpin_mode == "promiscuous-bridge"
    assert opts.allow_privileged is False
    assert m.extensions.logs.disabled is False
    assert [h.name for h in m.hooks] == [HookName.INSTALL, HookName.POST_INSTALL]
    assert m.hook("uninstall") is None  # empty in the sample: not defined


def test_cluster_sample_profile_requirements() -> None:
    m = load_manifest(CLUSTER).manifest
    db = m.profile("db")
    assert db is not None and m.profile("nope") is None
    assert db.labels == {"role": "db"}
    req = db.requirements
    assert req.cpu is not None and req.cpu.min == 8
    assert req.ram is not None and req.ram.min == ByteSize(bytes=32 * 10**9, text="32GB")
    assert [(o.name, o.versions) for o in req.os] == [("centos", ("7",)), ("rhel", ("7.2", "7.3"))]
    assert [c.description for c in req.custom_checks] == [
        "Custom check",
        "Custom checks defined in external file",
    ]
    assert req.custom_checks[0].script.startswith("#!/bin/bash\n")
    assert req.custom_checks[1].script == (CLUSTER / "checks.sh").read_text()
    logs, centos, wildcard, data = req.volumes
    assert (logs.path, logs.capacity, logs.create_if_missing) == (
        "/var/lib/logs",
        ByteSize(512 * 10**9, "512GB"),
        True,
    )
    assert centos.skip_if_missing is True and centos.target_path == "/path/to/container"
    assert wildcard.path == "/path/to/dir-???"
    assert data.filesystems == ("ext4", "xfs")
    assert data.min_transfer_rate is not None
    assert data.min_transfer_rate.bytes_per_second == 50 * 10**6
    assert (data.uid, data.gid, data.mode, data.recursive) == (114, 114, FileMode(0o755), False)
    (device,) = req.devices
    assert (device.path, device.permissions, device.file_mode, device.uid, device.gid) == (
        "/dev/nvidia*",
        "rw",
        FileMode(0o666),
        0,
        0,
    )
    assert req.network is not None
    (ports,) = req.network.ports
    assert ports.protocol is Protocol.TCP
    assert ports.ranges == (PortRange(8080, 8080), PortRange(10000, 10005))
    assert 10003 in ports.ranges[1] and 10006 not in ports.ranges[1]
    worker = m.profile("worker")
    assert worker is not None and worker.requirements.ram is not None
    assert worker.requirements.ram.min.bytes == 4 * 10**9
    assert worker.expand_policy is None


def test_bundle_sample_loads_with_its_own_sections() -> None:
    loaded = load_manifest(BUNDLE / "app.yaml")
    m = loaded.manifest
    assert loaded.warnings == []
    assert (m.kind, m.metadata.name, m.metadata.resource_version) == (
        Kind.BUNDLE,
        "ApplicationName",
        "0.0.1-alpha.1",
    )
    assert m.providers.aws is not None
    assert m.providers.aws.regions == ("us-east-1", "us-west-2")
    db = m.profile("db")
    assert db is not None
    assert db.expand_policy is ExpandPolicy.FIXED
    assert db.providers is not None and db.providers.aws is not None
    assert db.providers.aws.instance_types == ("c3.2xlarge", "m3.2xlarge")
    assert m.system_options.runtime is not None
    assert m.system_options.runtime.version == "1.5.0"
    assert [h.name.value for h in m.hooks] == ["install", "postInstall"]


def test_hook_jobs_are_typed() -> None:
    m = load_manifest(CLUSTER).manifest
    install = m.hook(HookName.INSTALL)
    assert install is not None
    job = install.job
    assert (job.name, job.namespace, job.restart_policy) == (
        "db-seed",
        "default",
        RestartPolicy.ON_FAILURE,
    )
    assert (job.backoff_limit, job.active_deadline_seconds) == (6, None)  # Kubernetes defaults
    (container,) = job.containers
    assert (container.name, container.image, container.argv) == (
        "dbseed",
        "installer-hooks:latest",
        (),
    )
    post = m.hook("postInstall")
    assert post is not None
    assert post.source == (CLUSTER / "post-install-hook.yaml").read_text()
    pjob = post.job
    assert (pjob.namespace, pjob.restart_policy, pjob.backoff_limit) == (
        "kube-system",
        RestartPolicy.NEVER,
        2,
    )
    assert pjob.active_deadline_seconds == 600
    (pc,) = pjob.containers
    assert pc.argv == ("/bin/sh", "-c", "echo post-install done")
    assert pc.working_dir == "/var/lib/gravity/resources"
    assert [(e.name, e.value) for e in pc.env] == [("GREETING", "hello")]


@pytest.mark.parametrize("sample", [CLUSTER, BUNDLE], ids=["cluster", "bundle"])
def test_to_dict_round_trips_from_another_directory(sample: Path, tmp_path: Path) -> None:
    original = load_manifest(sample).manifest
    data = original.to_dict()
    assert data["apiVersion"] == original.api_version
    assert "file://" not in yaml.safe_dump(data)  # every file:// URI was resolved
    # Elsewhere, without the referenced files: it must still load, and load the same.
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    (copy / "app.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    again = load_manifest(copy)
    assert again.warnings == []
    assert again.manifest == original


def test_only_metadata_is_required_and_defaults_apply(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, MINIMAL)).manifest
    assert (m.kind, m.api_version) == (Kind.CLUSTER, "cluster.gravitational.io/v2")
    assert m.node_profiles == () and m.hooks == () and m.endpoints == ()
    assert m.installer.flavors is None and m.default_flavor is None
    assert m.license.enabled is False and m.system_options.allow_privileged is False
    assert m.extensions.catalog.disabled is False
    assert m.to_dict() == {
        "apiVersion": "cluster.gravitational.io/v2",
        "kind": "Cluster",
        "metadata": {"name": "Tiny", "resourceVersion": "0.1.0"},
        "license": {"enabled": False},
        "storage": {"openebs": {"enabled": False}},
        "systemOptions": {"allowPrivileged": False},
        "extensions": {
            "logs": {"disabled": False},
            "monitoring": {"disabled": False},
            "kubernetes": {"disabled": False},
            "catalog": {"disabled": False},
        },
    }


def test_kind_is_inferred_from_api_version(tmp_path: Path) -> None:
    path = write(tmp_path, "apiVersion: bundle.gravitational.io/v2\n" + MINIMAL)
    assert load_manifest(path).manifest.kind is Kind.BUNDLE


def test_volume_and_device_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL
        + """\
nodeProfiles:
  - name: node
    requirements:
      volumes: [{path: /data}]
      devices: [{path: /dev/sda}]
""",
    )
    profile = load_manifest(path).manifest.profile("node")
    assert profile is not None
    (volume,) = profile.requirements.volumes
    assert (volume.create_if_missing, volume.skip_if_missing, volume.recursive) == (
        True,
        False,
        False,
    )
    assert (volume.uid, volume.gid, volume.mode) == (None, None, None)
    (device,) = profile.requirements.devices
    assert (device.permissions, device.file_mode, device.uid, device.gid) == (
        "rw",
        FileMode(0o666),
        0,
        0,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", 1024),
        ("1kB", 1000),
        ("1KB", 1000),
        ("2MB", 2 * 10**6),
        ("1.5GB", 1_500_000_000),
        ("1TB", 10**12),
        ("1KiB", 1024),
        ("3MiB", 3 * 2**20),
        ("4GiB", 4 * 2**30),
        ("1Gi", 2**30),
        ("1 GB", 10**9),
        ("7B", 7),
    ],
)
def test_ram_units(tmp_path: Path, text: str, expected: int) -> None:
    path = write(
        tmp_path,
        MINIMAL + f'nodeProfiles:\n  - name: n\n    requirements:\n      ram: {{min: "{text}"}}\n',
    )
    profile = load_manifest(path).manifest.profile("n")
    assert profile is not None and profile.requirements.ram is not None
    assert profile.requirements.ram.min.bytes == expected


def test_absolute_file_uri_and_file_logo_become_content(tmp_path: Path) -> None:
    notes = tmp_path / "elsewhere" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("absolute notes")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n")
    path = write(tmp_path, MINIMAL + f"releaseNotes: file://{notes}\nlogo: file://logo.png\n")
    m = load_manifest(path).manifest
    assert m.release_notes == "absolute notes"
    assert m.logo == "url(data:image/png;base64,{})".format(
        base64.b64encode(b"\x89PNG\r\n").decode()
    )


def test_inline_data_logo_is_kept(tmp_path: Path) -> None:
    logo = "url(data:image/png;base64,iVBORw0KGgo=)"
    path = write(tmp_path, MINIMAL + f"logo: {logo}\n")
    assert load_manifest(path).manifest.logo == logo


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "notes.html").write_text("<p>served notes</p>")
    (root / "job.yaml").write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: web}\n"
        'spec: {template: {spec: {containers: [{name: c, image: i, command: ["true"]}]}}}\n'
    )

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_uris_are_fetched(tmp_path: Path, http_server: str) -> None:
    path = write(
        tmp_path,
        MINIMAL
        + f"releaseNotes: {http_server}/notes.html\n"
        + f"hooks:\n  install:\n    job: {http_server}/job.yaml\n",
    )
    m = load_manifest(path).manifest
    assert m.release_notes == "<p>served notes</p>"
    install = m.hook("install")
    assert install is not None and install.job.name == "web"
    assert install.job.containers[0].argv == ("true",)


def test_unreachable_url_names_file_field_url_and_reason(tmp_path: Path, http_server: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    dead = f"http://127.0.0.1:{closed_port}/eula.txt"
    missing = f"{http_server}/missing.txt"
    path = write(
        tmp_path,
        MINIMAL + f"installer:\n  eula:\n    source: {dead}\n  flavors:\n"
        f"    description: {missing}\n    items: [{{name: a, nodes: [{{profile: p, count: 1}}]}}]\n"
        "nodeProfiles: [{name: p}]\n",
    )
    with pytest.raises(ManifestError) as err:
        load_manifest(path, fetch_timeout=2)
    problems = {p.field: p for p in err.value.problems}
    assert set(problems) == {"installer.eula.source", "installer.flavors.description"}
    eula = problems["installer.eula.source"]
    assert eula.file == str(path)
    assert dead in eula.message and "refused" in eula.message.lower()
    assert "HTTP 404" in problems["installer.flavors.description"].message


def test_missing_directory_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest in"):
        load_manifest(tmp_path)
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path / "absent.yaml")


def test_image_directory_with_sample_copy(tmp_path: Path) -> None:
    image = tmp_path / "image"
    shutil.copytree(CLUSTER, image)
    loaded = load_manifest(image)
    assert loaded.base_dir == image and loaded.path == image / "app.yaml"
    assert loaded.manifest == load_manifest(CLUSTER).manifest
