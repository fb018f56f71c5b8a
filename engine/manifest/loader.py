"""Loading an Image Manifest from a file or an image directory, all problems reported at once.
This is the one entry point the rest of the engine uses: `load_manifest(path)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from engine import yamlinput
from engine.errors import ManifestError, Problem
from engine.manifest.model import Manifest
from engine.manifest.parse import build_manifest
from engine.manifest.reader import Collector, describe
from engine.manifest.uri import Resolver

MANIFEST_FILE = "app.yaml"
DEFAULT_FETCH_TIMEOUT = 10.0


@dataclass(frozen=True)
class LoadedManifest:
    """A valid manifest with the warnings found while loading it and where it lives.

    `base_dir` is the image directory: file:// URIs and hook resources are relative to it.
    """

    manifest: Manifest
    path: Path
    base_dir: Path
    warnings: list[Problem] = field(default_factory=list)


class ManifestInvalid(ManifestError):
    """A ManifestError that also carries the warnings, so a CLI can show them with the errors."""

    def __init__(
        self, message: str, problems: list[Problem], warnings: list[Problem], **kwargs: object
    ) -> None:
        super().__init__(message, problems, **kwargs)
        self.warnings: tuple[Problem, ...] = tuple(warnings)


def find_manifest(path: Path | str) -> Path:
    """The manifest file for `path`: the file itself, or `app.yaml` inside an image directory."""
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        candidate = candidate / MANIFEST_FILE
        if not candidate.is_file():
            raise ManifestError(
                f"no manifest in {path}: expected {MANIFEST_FILE} in the image directory",
                [Problem(message=f"{MANIFEST_FILE} not found", file=str(candidate))],
            )
    return candidate.absolute()


def load_manifest(
    path: Path | str, *, strict: bool = False, fetch_timeout: float = DEFAULT_FETCH_TIMEOUT
) -> LoadedManifest:
    """Load and validate the manifest at `path` (a file or a directory holding app.yaml).

    Every problem in the file is collected and raised together as one ManifestError (its
    `problems` name the file, the field path and what was expected). Unknown fields are
    warnings returned in `.warnings`; with `strict=True` every warning is an error instead.
    http(s):// URIs are fetched with `fetch_timeout` seconds per request.
    """
    file = find_manifest(path)
    try:
        text = yamlinput.read(file).decode("utf-8-sig")
    except yamlinput.TooLarge as exc:
        raise ManifestError(
            f"manifest {file} is too large",
            [Problem(message=str(exc), file=str(file))],
            hint="see Limits in docs/manifest.md",
        ) from exc
    except OSError as exc:
        raise ManifestError(
            f"cannot read manifest {file}: {exc.strerror or exc}",
            [Problem(message=f"cannot read: {exc.strerror or exc}", file=str(file))],
        ) from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"manifest {file} is not UTF-8 text",
            [Problem(message=f"{exc.reason} at byte {exc.start}", file=str(file))],
        ) from exc
    return parse_manifest(text, path=file, strict=strict, fetch_timeout=fetch_timeout)


def parse_manifest(
    text: str,
    *,
    path: Path,
    base_dir: Path | None = None,
    strict: bool = False,
    fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
) -> LoadedManifest:
    """Validate manifest YAML `text` as if read from `path`; see `load_manifest`."""
    base = base_dir if base_dir is not None else path.parent
    c = Collector(file=str(path), strict=strict)
    raw = _parse_yaml(c, text)
    manifest = None
    if not c.problems:
        if not isinstance(raw, dict):
            got = "an empty document" if raw is None else describe(raw)
            c.error("", f"expected a mapping with at least a metadata section, got {got}")
        else:
            manifest = build_manifest(c, raw, Resolver(c, base, fetch_timeout))
    if c.problems or manifest is None:
        count = len(c.problems)
        raise ManifestInvalid(
            f"manifest {path} is invalid ({count} problem{'s' if count != 1 else ''})",
            c.problems,
            c.warnings,
            hint=f"fix every field listed, then re-check with `gravity manifest validate {path}`",
        )
    return LoadedManifest(manifest=manifest, path=path, base_dir=base, warnings=list(c.warnings))


def _parse_yaml(c: Collector, text: str) -> object:
    try:
        return yamlinput.load(text)
    except yamlinput.TooLarge as exc:
        c.error("", f"too large: {exc} (see Limits in docs/manifest.md)")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        c.error("", f"invalid YAML{at}: {reason}")
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # PyYAML constructors raise these for scalars such as an impossible !!timestamp.
        c.error("", f"invalid YAML: {exc}")
    return None
