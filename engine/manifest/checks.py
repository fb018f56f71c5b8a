"""Cross-checks between manifest sections: names that must be unique or must refer to something.
Runs on the (possibly placeholder-filled) model; entries with empty names were already reported.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.manifest.model import Manifest
from engine.manifest.reader import Collector


def _known(names: Iterable[str]) -> str:
    listed = list(dict.fromkeys(n for n in names if n))
    return f"expected one of: {', '.join(listed)}" if listed else "none are defined"


def _duplicates(c: Collector, names: list[str], path_of: str, what: str) -> None:
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if not name:
            continue
        if name in first:
            c.error(
                f"{path_of}[{i}].name",
                f"duplicate {what} name {name!r}: already defined at {path_of}[{first[name]}]",
            )
        else:
            first[name] = i


def cross_check(c: Collector, manifest: Manifest) -> None:
    """Record every broken reference and duplicate name in `manifest`."""
    profiles = [p.name for p in manifest.node_profiles]
    endpoints = [e.name for e in manifest.endpoints]
    _duplicates(c, profiles, "nodeProfiles", "profile")
    _duplicates(c, endpoints, "endpoints", "endpoint")

    flavors = manifest.installer.flavors
    if flavors is not None:
        names = [f.name for f in flavors.items]
        _duplicates(c, names, "installer.flavors.items", "flavor")
        if flavors.default is not None and flavors.default not in names:
            c.error(
                "installer.flavors.default",
                f"flavor {flavors.default!r} is not defined; {_known(names)}",
            )
        for i, flavor in enumerate(flavors.items):
            seen: dict[str, int] = {}
            for j, node in enumerate(flavor.nodes):
                path = f"installer.flavors.items[{i}].nodes[{j}].profile"
                if not node.profile:
                    continue
                if node.profile not in profiles:
                    c.error(
                        path,
                        f"profile {node.profile!r} is not defined in nodeProfiles; "
                        f"{_known(profiles)}",
                    )
                if node.profile in seen:
                    c.error(
                        path,
                        f"profile {node.profile!r} is listed twice in flavor {flavor.name!r} "
                        f"(also at nodes[{seen[node.profile]}])",
                    )
                seen.setdefault(node.profile, j)

    for i, name in enumerate(manifest.installer.setup_endpoints):
        if name and name not in endpoints:
            c.error(
                f"installer.setupEndpoints[{i}]",
                f"endpoint {name!r} is not defined in endpoints; {_known(endpoints)}",
            )
