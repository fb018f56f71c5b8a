"""The cluster's service user (the seeds' "Service User"): `planet` and its group, created with
the system's groupadd/useradd on every node — with the IDs given, or the next free system IDs
on the first master, which every other node then uses.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ExecutionError
from engine.executors.base import ExecContext, Executor
from engine.executors.checks import node_root

NAME = "planet"  # Gravity's service user and group
FACT = "service_user"


@dataclass(frozen=True)
class ServiceUser:
    """The service user as a node has it."""

    user: str
    uid: int
    group: str
    gid: int
    created: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "uid": self.uid, "group": self.group, "gid": self.gid}


def _entries(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split(":") for line in path.read_text().splitlines() if line.count(":") >= 2]


def _tool(ctx: ExecContext, name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ExecutionError(f"{name} is not installed on node {ctx.node}: it creates the "
                             f"service user {NAME}", retryable=False)
    return found


def ensure_service_user(ctx: ExecContext, uid: int | None, gid: int | None) -> ServiceUser:
    """The service user on this node: an existing user/group with the wanted IDs (the
    operator may create them upfront), else `planet` created with them (or, without IDs,
    with the next free system IDs). A `planet` that exists with other IDs is an error."""
    root = node_root(ctx)
    prefix: list[str] = []
    if root.resolve() != Path("/"):
        # A node simulated in a directory: its own /etc, never the machine's.
        etc = root / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        for name, line in (("passwd", "root:x:0:0:root:/root:/bin/bash"), ("group", "root:x:0:"),
                           ("shadow", "root:*:19000:0:99999:7:::"), ("gshadow", "root:*::")):
            if not (etc / name).exists():
                (etc / name).write_text(line + "\n")
        prefix = ["--prefix", str(root)]
    groups = _entries(root / "etc" / "group")
    users = _entries(root / "etc" / "passwd")
    created = False
    group = next((g for g in groups if gid is not None and g[2] == str(gid)), None) or \
        next((g for g in groups if g[0] == NAME), None)
    if group is not None and gid is not None and group[2] != str(gid):
        raise ExecutionError(f"group {NAME} exists on node {ctx.node} with GID {group[2]}, "
                             f"not {gid}", retryable=False)
    if group is None:
        argv = [_tool(ctx, "groupadd"), *prefix]
        argv += ["-g", str(gid)] if gid is not None else ["--system"]
        _run(ctx, [*argv, NAME])
        group = next(g for g in _entries(root / "etc" / "group") if g[0] == NAME)
        created = True
    user = next((u for u in users if uid is not None and u[2] == str(uid)), None) or \
        next((u for u in users if u[0] == NAME), None)
    if user is not None and uid is not None and user[2] != str(uid):
        raise ExecutionError(f"user {NAME} exists on node {ctx.node} with UID {user[2]}, "
                             f"not {uid}", retryable=False)
    if user is None:
        argv = [_tool(ctx, "useradd"), *prefix, "--no-create-home", "-g", group[0],
                "-s", "/usr/sbin/nologin"]
        argv += ["-u", str(uid)] if uid is not None else ["--system"]
        _run(ctx, [*argv, NAME])
        user = next(u for u in _entries(root / "etc" / "passwd") if u[0] == NAME)
        created = True
    return ServiceUser(user[0], int(user[2]), group[0], int(group[2]), created)


def _run(ctx: ExecContext, argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExecutionError(f"{' '.join(argv)} failed on node {ctx.node} (exit "
                             f"{proc.returncode})", proc.stderr.strip())


def wanted_ids(ctx: ExecContext) -> tuple[int | None, int | None]:
    """The IDs this phase must use: given ones, else what the first master decided."""
    uid, gid = ctx.data.get("service_uid"), ctx.data.get("service_gid")
    source = ctx.data.get("service_from")
    if uid is None and source and ctx.facts is not None:
        decided: Mapping[str, Any] | None = ctx.facts.get(str(source), FACT)
        if decided:
            return int(decided["uid"]), int(decided["gid"])
    return (int(uid) if uid is not None else None,
            int(gid) if gid is not None else (int(uid) if uid is not None else None))


class ServiceUserExecutor(Executor):
    """On the first master: finds or creates the service user and tells the other nodes
    (the store's facts) which IDs it has."""

    name = "service-user"

    def execute(self, ctx: ExecContext) -> str | None:
        uid, gid = wanted_ids(ctx)
        found = ensure_service_user(ctx, uid, gid)
        if ctx.facts is not None:
            ctx.facts.publish(FACT, found.to_dict())
        verb = "created" if found.created else "found"
        return f"service user {found.user} ({found.uid}) and group {found.group} " \
               f"({found.gid}) {verb}"

    def rollback(self, ctx: ExecContext) -> str | None:
        return "the service user is kept (other software may own files as it)"


__all__ = ["ServiceUser", "ServiceUserExecutor", "ensure_service_user", "wanted_ids"]
