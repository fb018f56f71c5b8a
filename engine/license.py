"""Licenses: a JSON document signed with the image vendor's Ed25519 key (the public half ships in
the image as `license/vendor.pub`), checked for signature, expiry and node count. Pure rules.

A license file:

    {"license": {"customer": "Acme", "app": "quickstart", "expires": "2027-12-31",
                 "max_nodes": 5, "issued": "2026-11-01"},
     "signature": "<base64 of the Ed25519 signature of the canonical JSON of `license`>"}

The canonical JSON is `json.dumps(license, sort_keys=True, separators=(",", ":"))` in UTF-8.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InputError, Problem, Refused

KEY_FILE = "license/vendor.pub"  # inside the image, beside app.yaml
FIELDS = {"customer": str, "expires": str, "max_nodes": int}


@dataclass(frozen=True)
class License:
    """What a verified license grants."""

    customer: str
    expires: dt.date
    max_nodes: int
    app: str | None
    payload: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.payload)

    @classmethod
    def from_record(cls, payload: Mapping[str, Any]) -> License:
        """A license as a cluster operation recorded it (verified when it was installed)."""
        return cls(customer=str(payload["customer"]),
                   expires=dt.date.fromisoformat(payload["expires"]),
                   max_nodes=int(payload["max_nodes"]), app=payload.get("app"),
                   payload=payload)

    def describe(self) -> str:
        app = f" for {self.app}" if self.app else ""
        return (f"licensed to {self.customer}{app}: up to {self.max_nodes} node(s), "
                f"expires {self.expires.isoformat()}")


def canonical(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def _not_a_license(path: Path, why: str, field: str | None = None) -> InputError:
    return InputError(f"{path} is not a usable license", [Problem(why, file=str(path),
                                                                  field=field)],
                      hint="use the license file the vendor issued, unchanged; nothing was "
                      "written")


def read_license(path: Path, public_key_pem: str | None) -> License:
    """Parse and verify a license file (exit 2 when it is not one, or its signature does not
    match the image's key); expiry and node count are checked by `check_license`."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _not_a_license(path, f"expected a JSON license document ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("license"), dict) or \
            not isinstance(doc.get("signature"), str):
        raise _not_a_license(path, 'expected {"license": {...}, "signature": "..."}')
    payload = doc["license"]
    for name, kind in FIELDS.items():
        if not isinstance(payload.get(name), kind) or isinstance(payload.get(name), bool):
            raise _not_a_license(path, f"expected {kind.__name__}", f"license.{name}")
    try:
        expires = dt.date.fromisoformat(payload["expires"])
    except ValueError as exc:
        raise _not_a_license(path, "expected a date YYYY-MM-DD", "license.expires") from exc
    if public_key_pem is None:
        raise _not_a_license(path, f"the image has no vendor key ({KEY_FILE}) to check it "
                             "against")
    _verify(path, payload, doc["signature"], public_key_pem)
    return License(customer=payload["customer"], expires=expires,
                   max_nodes=payload["max_nodes"], app=payload.get("app"), payload=payload)


def _verify(path: Path, payload: Mapping[str, Any], signature: str, key_pem: str) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(key_pem.encode())
    except ValueError as exc:
        raise _not_a_license(path, f"the image's vendor key cannot be read: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise _not_a_license(path, "the image's vendor key must be an Ed25519 public key")
    try:
        key.verify(base64.b64decode(signature, validate=True), canonical(payload))
    except (InvalidSignature, ValueError) as exc:
        raise _not_a_license(path, "the signature does not match: the license was altered "
                             "or is for another vendor", "signature") from exc


def check_license(lic: License, *, app: str, nodes: int, today: dt.date | None = None) -> None:
    """Refuse (exit 3) a license that has expired, is for another application, or allows
    fewer nodes than the cluster would have."""
    today = today or dt.datetime.now(dt.UTC).date()
    if lic.expires < today:
        raise Refused(f"the license expired on {lic.expires.isoformat()}",
                      hint="ask the vendor for a new license; nothing was written")
    if lic.app is not None and lic.app != app:
        raise Refused(f"the license is for {lic.app}, not {app}",
                      hint="use the license issued for this application")
    if nodes > lic.max_nodes:
        raise Refused(f"the license allows {lic.max_nodes} node(s); the cluster would have "
                      f"{nodes}", hint="ask the vendor for a license for more nodes")


def sign(payload: Mapping[str, Any], private_key_pem: str) -> dict[str, Any]:
    """A license document (the vendor's side; used by tests and `docs/manifest.md`)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(private_key_pem.encode(), password=None)
    signature = key.sign(canonical(payload))  # type: ignore[union-attr,call-arg]
    return {"license": dict(payload), "signature": base64.b64encode(signature).decode()}


__all__ = ["KEY_FILE", "License", "check_license", "read_license", "sign"]
