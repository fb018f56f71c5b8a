"""An image that asks for a license and an accepted EULA: install refuses without them (exit 3),
refuses a file that is not a valid license (exit 2) or one that has expired or allows too few
nodes (exit 3) — writing nothing — and a new license is installed through the licenseUpdated hook.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.license import sign
from tests.conftest import Gravity

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"


def pem_pair() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


@pytest.fixture
def vendor(tmp_path: Path) -> tuple[Path, str]:
    """The quickstart as a licensed product: license.enabled, a EULA, the vendor's key."""
    image = tmp_path / "image"
    shutil.copytree(QUICKSTART / "v1", image)
    app = image / "app.yaml"
    app.write_text(app.read_text().replace("installer:\n", "license:\n  enabled: true\n"
                                           "installer:\n  eula:\n    source: file://eula.txt\n",
                                           1))
    (image / "eula.txt").write_text("You may use this software nicely.\n")
    private, public = pem_pair()
    (image / "license").mkdir()
    (image / "license" / "vendor.pub").write_text(public)
    return image, private


def license_file(tmp_path: Path, private: str, name: str, **changes: object) -> Path:
    payload = {"customer": "Acme", "app": "quickstart", "max_nodes": 3,
               "expires": (dt.date.today() + dt.timedelta(days=365)).isoformat()}
    payload.update(changes)
    path = tmp_path / name
    path.write_text(json.dumps(sign(payload, private)))
    return path


def ops(g: Gravity) -> list[str]:
    out = g("operation", "list", "-o", "json", check=0).stdout
    return [r["id"] for r in json.loads(out)] if out.strip() else []


@pytest.mark.slow  # a whole cluster installed, then changed
def test_install_needs_the_eula_accepted_and_a_valid_license(
        gravity: Gravity, vendor: tuple[Path, str], tmp_path: Path) -> None:
    image, private = vendor
    nodes = str(QUICKSTART / "nodes.yaml")
    base = ("install", str(image), "--nodes", nodes)
    eula = gravity(*base, check=3)
    assert "end user license agreement that must be accepted" in eula.stderr
    assert f"gravity manifest eula {image}" in eula.stderr
    assert "nicely" in gravity("manifest", "eula", str(image), check=0).stdout
    none = gravity(*base, "--accept-eula", check=3)
    assert "requires a license" in none.stderr and "--license FILE" in none.stderr
    junk = tmp_path / "junk.json"
    junk.write_text("not json")
    assert "is not a usable license" in gravity(*base, "--accept-eula", "--license",
                                                str(junk), check=2).stderr
    forged = license_file(tmp_path, pem_pair()[0], "forged.json")
    assert "the signature does not match" in gravity(*base, "--accept-eula", "--license",
                                                     str(forged), check=2).stderr
    expired = license_file(tmp_path, private, "expired.json", expires="2020-01-01")
    assert "the license expired on 2020-01-01" in gravity(*base, "--accept-eula", "--license",
                                                          str(expired), check=3).stderr
    small = license_file(tmp_path, private, "small.json", max_nodes=2)
    assert "allows 2 node(s); the cluster would have 3" in gravity(
        *base, "--accept-eula", "--license", str(small), check=3).stderr
    assert ops(gravity) == []  # not one refusal wrote anything
    good = license_file(tmp_path, private, "good.json")
    gravity(*base, "--accept-eula", "--license", str(good), "--id", "install-1", check=0)
    assert "licensed to Acme for quickstart: up to 3 node(s)" in gravity(
        "license", "show", check=0).stdout


@pytest.mark.slow  # a whole cluster installed, then changed
def test_a_new_license_goes_through_the_license_updated_hook_and_allows_more_nodes(
        gravity: Gravity, vendor: tuple[Path, str], tmp_path: Path) -> None:
    image, private = vendor
    gravity("install", str(image), "--nodes", str(QUICKSTART / "nodes.yaml"), "--accept-eula",
            "--license", str(license_file(tmp_path, private, "three.json")), check=0)
    grow = ("expand", "--node", "node-4", "--address", "10.0.0.4", "--profile", "worker")
    refused = gravity(*grow, check=3)
    assert "allows 3 node(s); the cluster would have 4" in refused.stderr
    bigger = license_file(tmp_path, private, "five.json", max_nodes=5)
    dry = gravity("license", "install", str(bigger), "--dry-run", check=0)
    assert "up to 5 node(s)" in dry.stdout and "nothing was written" in dry.stdout
    gravity("license", "install", str(bigger), "--id", "license-1", check=0)
    assert gravity.node_file("node-1", "app/license").read_bytes() == bigger.read_bytes()
    assert (gravity.state_dir / "hooks.log").read_text().split()[-1] == "licenseUpdated"
    assert "up to 5 node(s)" in gravity("license", "show", check=0).stdout
    gravity(*grow, check=0)
    forged = license_file(tmp_path, pem_pair()[0], "forged.json", max_nodes=50)
    gravity("license", "install", str(forged), check=2)
