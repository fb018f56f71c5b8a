"""Resolution of URI-capable manifest fields: file:// next to the manifest, http(s):// fetched.
Failures become problems naming the file, field, URI and reason; nothing here raises on bad input.
"""

from __future__ import annotations

import base64
import http.client
import mimetypes
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from engine.manifest.reader import Collector

MAX_FETCH_BYTES = 16 * 1024 * 1024
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://", re.ASCII)
FILE_PREFIX = "file://"


@dataclass(frozen=True)
class Resolved:
    """The content behind a field and where it came from (None for a literal value)."""

    text: str
    origin: str | None = None


@dataclass
class Resolver:
    """Reads URI-capable fields relative to the manifest's directory, fetching with a timeout."""

    c: Collector
    base_dir: Path
    timeout: float = 10.0

    def text(self, value: str, path: str) -> Resolved | None:
        """The field's text: a literal as is, or the content of its file:// or http(s):// URI."""
        scheme = self._scheme(value)
        if scheme is None:
            return Resolved(value)
        if scheme == "file":
            data = self._read_file(value, path)
            if data is None:
                return None
            file_path, raw = data
            return self._decode(raw, str(file_path), path)
        if scheme in ("http", "https"):
            raw = self._fetch(value, path)
            return None if raw is None else self._decode(raw, value, path)
        self.c.error(
            path,
            f"unsupported URI scheme {scheme!r} in {value!r}: expected file://, http:// or https://",
        )
        return None

    def logo(self, value: str, path: str) -> str | None:
        """A logo: file:// is read and inlined as url(data:...); anything else is kept as is.

        http(s) logos are hosted images the installer UI loads itself, so they are never fetched.
        """
        if self._scheme(value) != "file":
            return value
        data = self._read_file(value, path)
        if data is None:
            return None
        file_path, raw = data
        mime = mimetypes.guess_type(file_path.name)[0] or "application/octet-stream"
        return f"url(data:{mime};base64,{base64.b64encode(raw).decode('ascii')})"

    def file_path(self, value: str) -> Path:
        """Where a file:// URI points: relative to the manifest's directory unless absolute."""
        rest = value[len(FILE_PREFIX) :]
        return Path(rest) if rest.startswith("/") else self.base_dir / rest

    @staticmethod
    def _scheme(value: str) -> str | None:
        match = _SCHEME_RE.match(value)
        return match.group(1).lower() if match else None

    def _read_file(self, value: str, path: str) -> tuple[Path, bytes] | None:
        if value.lower().startswith(FILE_PREFIX) and not value.startswith(FILE_PREFIX):
            value = FILE_PREFIX + value[len(FILE_PREFIX) :]
        if value == FILE_PREFIX:
            self.c.error(path, f"{value!r} names no file: expected file://name or file:///abs/path")
            return None
        file_path = self.file_path(value)
        try:
            return file_path, file_path.read_bytes()
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.c.error(path, f"cannot read {value} ({file_path}): {reason}")
            return None

    def _fetch(self, url: str, path: str) -> bytes | None:
        request = urllib.request.Request(url, headers={"User-Agent": "gravity-engine"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw: bytes = response.read(MAX_FETCH_BYTES + 1)
        except urllib.error.HTTPError as exc:
            self.c.error(path, f"cannot fetch {url}: HTTP {exc.code} {exc.reason}")
            return None
        except urllib.error.URLError as exc:
            self.c.error(path, f"cannot fetch {url}: {exc.reason}")
            return None
        except TimeoutError:
            self.c.error(path, f"cannot fetch {url}: no answer within {self.timeout:g}s")
            return None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            self.c.error(path, f"cannot fetch {url}: {exc or type(exc).__name__}")
            return None
        if len(raw) > MAX_FETCH_BYTES:
            self.c.error(path, f"cannot fetch {url}: larger than {MAX_FETCH_BYTES} bytes")
            return None
        return raw

    def _decode(self, raw: bytes, origin: str, path: str) -> Resolved | None:
        try:
            return Resolved(raw.decode("utf-8"), origin)
        except UnicodeDecodeError as exc:
            self.c.error(path, f"{origin} is not UTF-8 text: {exc.reason} at byte {exc.start}")
            return None
