"""A blob's name: `BlobRef(digest="sha256:<64 hex>", size=N)`, validated on construction and
on reading it from a document.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from engine.blobs.errors import BlobInputError, short
from engine.errors import Problem

DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")
HEX_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BlobRef:
    """A blob's name: `sha256:<64 lowercase hex>` and its size in bytes."""

    digest: str
    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.digest, str) or not DIGEST_RE.fullmatch(self.digest):
            raise _bad_ref("digest", f"expected 'sha256:' and 64 lowercase hex digits, "
                                     f"got {self.digest!r}")
        if type(self.size) is not int or self.size < 0:
            raise _bad_ref("size", f"expected a whole number of bytes >= 0, got {self.size!r}")

    @property
    def hex(self) -> str:
        return self.digest[len("sha256:"):]

    @property
    def short(self) -> str:
        return short(self.digest)

    def __str__(self) -> str:
        return f"{self.digest} ({self.size} bytes)"

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size}

    @classmethod
    def from_dict(cls, data: object, *, where: str = "blob") -> BlobRef:
        """Validate a `{"digest": "sha256:…", "size": N}` mapping (no other keys)."""
        if not isinstance(data, dict) or set(data) != {"digest", "size"}:
            raise _bad_ref(where, "expected a mapping with exactly the keys 'digest' and "
                                  f"'size', got {data!r}")
        try:
            return cls(data["digest"], data["size"])
        except BlobInputError as exc:
            field = exc.problems[0].field if exc.problems else ""
            raise _bad_ref(f"{where}.{field}", exc.problems[0].message) from None

    @classmethod
    def of_bytes(cls, data: bytes) -> BlobRef:
        return cls("sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def _bad_ref(field: str, message: str) -> BlobInputError:
    return BlobInputError("malformed blob reference", [Problem(message, field=field)])


def as_hex(item: BlobRef | str) -> str:
    """The hex of a BlobRef or of a `sha256:<hex>` digest string (validated)."""
    if isinstance(item, BlobRef):
        return item.hex
    match = DIGEST_RE.fullmatch(item) if isinstance(item, str) else None
    if not match:
        raise _bad_ref("digest", f"expected 'sha256:' and 64 lowercase hex digits, got {item!r}")
    return match.group(1)
