"""What an upgrade carries over from the release before it: the values (Helm 3's reuse and
reset rules) and the version (never backwards or sideways unless asked). Pure rules.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

from engine.errors import Refused
from engine.values import deep_merge


class Reuse(enum.StrEnum):
    """How an upgrade's values relate to the last release's, as Helm 3's flags say."""

    DEFAULT = "default"  # nothing given: reuse the last values; anything given: only that
    REUSE = "reuse"  # --reuse-values: the given values merged over the last ones
    RESET = "reset"  # --reset-values: only the given values
    RESET_THEN_REUSE = "reset-then-reuse"  # --reset-then-reuse-values: (no chart defaults
    # exist in an image, so) the given values merged over the last ones


def upgrade_values(previous: Mapping[str, Any], given: Mapping[str, Any], given_any: bool,
                   mode: Reuse, previous_from: str | None) -> tuple[dict[str, Any], str]:
    """The values an upgrade's hooks get, and a line saying where they came from (printed
    and recorded with the operation)."""
    last = f"the last values (from {previous_from})" if previous_from else "no earlier values"
    if mode in (Reuse.REUSE, Reuse.RESET_THEN_REUSE):
        return deep_merge(previous, given), f"{last}, with the given ones merged over them"
    if mode is Reuse.RESET:
        return dict(given), "only the values given (--reset-values)"
    if given_any:
        return dict(given), ("only the values given (pass --reuse-values to merge them over "
                             f"{last})")
    return dict(previous), f"{last}, reused: no --values or --set given"


_VERSION = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+.*)?$")


def version_key(version: str) -> tuple[Any, ...]:
    """A sort key for SemVer versions (a pre-release sorts before its release); versions that
    are not SemVer sort by their text, after every SemVer one."""
    m = _VERSION.match(version.strip())
    if m is None:
        return (1, version)
    major, minor, patch = (int(m.group(i) or 0) for i in (1, 2, 3))
    pre = m.group(4)
    pre_key: tuple[Any, ...] = (1,) if pre is None else (0, *(
        (0, int(p)) if p.isdigit() else (1, p) for p in pre.split(".")))
    return (0, major, minor, patch, pre_key)


def check_upgrade_version(installed: str, new: str, *, skip: bool) -> None:
    """Refuse (exit 3) an upgrade to the installed version or an older one, naming both,
    unless --skip-version-check."""
    if skip or version_key(new) > version_key(installed):
        return
    what = "the installed version" if version_key(new) == version_key(installed) else \
        "a downgrade"
    raise Refused(f"the image is version {new} and the cluster runs {installed}: {what}",
                  hint="upgrade to a newer image; to undo an upgrade that has not completed "
                  "use `gravity rollback`; `--skip-version-check` upgrades anyway")
