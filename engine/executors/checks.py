"""The `checks` executor: preflight of a node against its manifest profile — CPU, RAM, OS,
volumes, free ports and custom scripts — reporting every failed requirement at once.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import ExecutionError
from engine.executors.base import ExecContext, Executor, run_process


def node_root(ctx: ExecContext) -> Path:
    """The node's filesystem root for volumes: `<node-dir>/rootfs` when simulated on one
    machine, or env GRAVITY_NODE_ROOT (e.g. `/` for an agent on a real node)."""
    env = os.environ.get("GRAVITY_NODE_ROOT")
    return Path(env) if env else ctx.workdir / "rootfs"


def on_node(ctx: ExecContext, path: str) -> Path:
    return node_root(ctx) / path.lstrip("/")


def read_os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                out[key.strip()] = value.strip().strip('"')
    return out


def total_ram() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def mount_fs(path: Path) -> str | None:
    """The filesystem type of the mount holding `path` (longest mount-point prefix)."""
    best, fstype = "", None
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                mnt = parts[1]
                if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and \
                        len(mnt) > len(best):
                    best, fstype = mnt, parts[2]
    return fstype


def existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def port_free(protocol: str, port: int) -> bool:
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


class ChecksExecutor(Executor):
    """Verifies a node meets its profile's requirements; fails listing every unmet one."""

    name = "checks"

    def validate(self, data: Mapping[str, Any]) -> list[str]:
        if not isinstance(data.get("profile"), str):
            return ["`profile` must name the node's profile"]
        if not isinstance(data.get("requirements", {}), Mapping):
            return ["`requirements` must be a mapping"]
        return []

    def execute(self, ctx: ExecContext) -> str | None:
        req: Mapping[str, Any] = ctx.data.get("requirements") or {}
        failures: list[str] = []
        passed: list[str] = []
        cpu_min = req.get("cpu")
        if cpu_min:
            have = os.cpu_count() or 1
            (passed if have >= cpu_min else failures).append(
                f"CPU: need at least {cpu_min}, node has {have}")
        ram = req.get("ram")
        if ram:
            have = total_ram()
            (passed if have >= ram["bytes"] else failures).append(
                f"RAM: need at least {ram['text']}, node has {human(have)}")
        oses = req.get("os") or []
        if oses:
            rel = read_os_release()
            os_id, version = rel.get("ID", "?"), rel.get("VERSION_ID", "?")
            ok = any(o["name"] == os_id and (not o["versions"] or any(
                version == v or version.startswith(v + ".") for v in o["versions"]))
                for o in oses)
            wanted = "; ".join(f"{o['name']} {','.join(o['versions']) or 'any'}" for o in oses)
            (passed if ok else failures).append(
                f"OS: need one of [{wanted}], node runs {os_id} {version}")
        for vol in req.get("volumes") or []:
            self._volume(ctx, vol, passed, failures)
        for rule in req.get("ports") or []:
            busy = [p for start, end in rule["ranges"] for p in range(start, end + 1)
                    if not port_free(rule["protocol"], p)]
            ranges = ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in rule["ranges"])
            (failures if busy else passed).append(
                f"ports {rule['protocol']}/{ranges}: " + (
                    f"in use: {', '.join(map(str, busy[:10]))}" if busy else "free"))
        for i, check in enumerate(req.get("custom_checks") or []):
            label = check.get("description") or f"custom check {i + 1}"
            script = ctx.workdir / "checks" / f"check-{i + 1}.sh"
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(check["script"])
            try:
                run_process(ctx, ["bash", str(script)], what=f"custom check: {label}")
                passed.append(f"{label}: passed")
            except ExecutionError as exc:
                tail = exc.tail.splitlines()[-1] if exc.tail else ""
                failures.append(f"{label}: {exc.message}" + (f" ({tail})" if tail else ""))
        self._log(ctx, passed, failures)
        if failures:
            raise ExecutionError(
                f"node {ctx.node} does not meet profile {ctx.data['profile']}: "
                f"{len(failures)} requirement(s) failed", "\n".join(failures), retryable=False)
        return f"{len(passed)} checks passed"

    def _volume(self, ctx: ExecContext, vol: Mapping[str, Any], passed: list[str],
                failures: list[str]) -> None:
        path = on_node(ctx, vol["path"])
        if "*" in vol["path"] or "?" in vol["path"]:
            return  # a mount pattern, not a directory to check
        if not path.exists():
            if vol.get("skip_if_missing"):
                passed.append(f"volume {vol['path']}: missing, skipped")
                return
            if not vol.get("create_if_missing", True):
                failures.append(f"volume {vol['path']}: does not exist and createIfMissing "
                                "is false")
                return
        probe = existing_ancestor(path)
        if vol.get("capacity"):
            st = os.statvfs(probe)
            have = st.f_bavail * st.f_frsize
            need = vol["capacity"]["bytes"]
            (passed if have >= need else failures).append(
                f"volume {vol['path']}: need {vol['capacity']['text']} free, has {human(have)}")
        if vol.get("filesystems"):
            fstype = mount_fs(probe.resolve())
            ok = fstype in vol["filesystems"]
            (passed if ok else failures).append(
                f"volume {vol['path']}: filesystem must be one of "
                f"{', '.join(vol['filesystems'])}, is {fstype}")

    def _log(self, ctx: ExecContext, passed: list[str], failures: list[str]) -> None:
        ctx.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(ctx.log_path, "a", encoding="utf-8") as log:
            log.write(f"--- attempt {ctx.attempt}: preflight checks of {ctx.node} ---\n")
            for line in passed:
                log.write(f"ok   {line}\n")
            for line in failures:
                log.write(f"FAIL {line}\n")
