"""The node inventory (`--nodes nodes.yaml`): names, addresses, profiles and roles, checked
against the manifest's profiles and the chosen flavor before any operation is created.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import InventoryError, Problem
from engine.names import node_name_problem

NODE_KEYS = {"name", "address", "profile", "role"}


class Role(enum.StrEnum):
    """Masters run the control plane and are upgraded one at a time; nodes run workloads."""

    MASTER = "master"
    NODE = "node"


@dataclass(frozen=True)
class Node:
    """One machine of the cluster as the operator described it."""

    name: str
    address: str
    profile: str
    role: Role = Role.NODE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["role"] = self.role.value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Node:
        return cls(d["name"], d["address"], d["profile"], Role(d.get("role", "node")))


def parse_node(raw: object, *, file: str | None, field: str,
               problems: list[Problem]) -> Node | None:
    """One inventory entry, or None with its problems appended."""
    if not isinstance(raw, Mapping):
        problems.append(Problem("expected a mapping with name, address, profile, role",
                                file=file, field=field))
        return None
    before = len(problems)
    for key in raw:
        if key not in NODE_KEYS:
            expected = ", ".join(sorted(NODE_KEYS))
            problems.append(Problem(f"unknown field; expected one of {expected}",
                                    file=file, field=f"{field}.{key}"))
    name = raw.get("name")
    if (bad := node_name_problem(name)) is not None:
        problems.append(Problem(bad, file=file, field=f"{field}.name"))
    address = raw.get("address")
    if not isinstance(address, str) or not address or any(c.isspace() for c in address):
        problems.append(Problem(f"expected an address (IP or host name), got {address!r}",
                                file=file, field=f"{field}.address"))
    profile = raw.get("profile")
    if not isinstance(profile, str) or not profile:
        problems.append(Problem(f"expected a profile name from the manifest, got {profile!r}",
                                file=file, field=f"{field}.profile"))
    role = raw.get("role", "node")
    if not isinstance(role, str) or role not in {r.value for r in Role}:
        problems.append(Problem(f"expected role master or node, got {role!r}", file=file,
                                field=f"{field}.role"))
    if len(problems) > before:
        return None
    return Node(str(name), str(address), str(profile), Role(role))


def load_inventory(path: Path | str) -> list[Node]:
    """Read `nodes.yaml`: a list of nodes, or a mapping with a `nodes` list."""
    import yaml

    from engine import yamlinput

    path = Path(path)
    file = str(path)
    try:
        doc = yamlinput.load(yamlinput.read(path).decode("utf-8"))
    except yamlinput.TooLarge as exc:
        raise InventoryError(f"inventory {path} is too large", [Problem(str(exc), file=file)],
                             hint="list each node written out (see Limits in "
                             "docs/plan-format.md); nothing was written") from exc
    except UnicodeDecodeError as exc:
        raise InventoryError(f"inventory {path} is not UTF-8 text",
                             [Problem(f"{exc.reason} at byte {exc.start}", file=file)]) from exc
    except OSError as exc:
        raise InventoryError(f"cannot read inventory {path}: {exc.strerror or exc}",
                             [Problem("expected a readable YAML file", file=file)]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InventoryError(f"inventory {path} is not valid YAML",
                             [Problem(f"{getattr(exc, 'problem', exc)}{where}",
                                      file=file)]) from exc
    items = doc.get("nodes") if isinstance(doc, Mapping) else doc
    prefix = "nodes" if isinstance(doc, Mapping) else ""
    problems: list[Problem] = []
    if not isinstance(items, list) or not items:
        raise InventoryError(f"inventory {path} is invalid",
                             [Problem("expected a non-empty list of nodes", file=file,
                                      field=prefix or None)])
    nodes = []
    for i, raw in enumerate(items):
        node = parse_node(raw, file=file, field=f"{prefix}[{i}]", problems=problems)
        if node is not None:
            nodes.append(node)
    for name, n in Counter(n.name for n in nodes).items():
        if n > 1:
            problems.append(Problem(f"node name {name} appears {n} times", file=file,
                                    field=prefix or None))
    for address, n in Counter(n.address for n in nodes).items():
        if n > 1:
            problems.append(Problem(f"address {address} appears {n} times", file=file,
                                    field=prefix or None))
    if nodes and not any(n.role is Role.MASTER for n in nodes):
        problems.append(Problem("at least one node needs role: master", file=file,
                                field=prefix or None))
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        raise InventoryError(f"inventory {path} is invalid ({count})",
                             problems, hint="fix the inventory; nothing was written")
    return nodes


def flavor_shortfall(name: str, minimums: Sequence[Mapping[str, Any]],
                     nodes: Sequence[Node]) -> list[str]:
    """What the nodes lack for a flavor: a flavor lists the *minimum* count of each profile
    (more nodes of a profile, or of a profile it does not name, are fine)."""
    have = Counter(n.profile for n in nodes)
    return [f"flavor {name} needs at least {m['count']} node(s) of profile {m['profile']}, "
            f"there would be {have.get(m['profile'], 0)} (missing "
            f"{m['count'] - have.get(m['profile'], 0)})"
            for m in minimums if have.get(m["profile"], 0) < m["count"]]


def check_against_manifest(nodes: Sequence[Node], facts: Mapping[str, Any],
                           flavor_name: str | None, *, file: str | None) -> str | None:
    """Profiles must exist; with flavors, each profile needs at least the chosen flavor's
    count (a flavor lists minimums). `facts` is what the manifest says (build.manifest_facts).

    Returns the flavor name used (None when the manifest has no flavors).
    """
    problems: list[Problem] = []
    profiles = set(facts.get("profiles", {}))
    for i, node in enumerate(nodes):
        if profiles and node.profile not in profiles:
            problems.append(Problem(f"profile {node.profile!r} is not in the manifest "
                                    f"(profiles: {', '.join(sorted(profiles))})", file=file,
                                    field=f"nodes[{i}].profile"))
    flavors = facts.get("flavors", {})
    chosen = None
    if flavor_name is not None or flavors:
        name = flavor_name or facts.get("default_flavor")
        if name not in flavors:
            problems.append(Problem(f"unknown flavor {flavor_name!r}; the manifest defines "
                                    f"{', '.join(flavors) or 'none'}", field="--flavor"))
        else:
            chosen = name
            problems += [Problem(p, file=file)
                         for p in flavor_shortfall(name, flavors[name], nodes)]
    if problems:
        raise InventoryError("the inventory does not match the manifest", problems,
                             hint="fix --nodes or pick another --flavor; nothing was written")
    return chosen
