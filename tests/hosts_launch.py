"""Launcher for a process on a test host (tests/hosts.py): inside the host's network namespace it
enters a private mount namespace, hides the coordinator's paths under empty read-only mounts, execs.

Usage: python -I -S hosts_launch.py SPEC_JSON ARGV...  — SPEC is {"hide": [paths], "hosts_dir":
path, "own": path, "cwd": path, "hostname": name, "binds": [[source, target]]}; only "own" stays
visible in "hosts_dir"; each bind puts a host's own directory over a system one (/etc).
The command replaces this process (same pid: a kill reaches it).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

CLONE_NEWNS, CLONE_NEWUTS = 0x00020000, 0x04000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
HIDDEN = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC

libc = ctypes.CDLL(None, use_errno=True)


def enc(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def sys_mount(source: str | None, target: str, fstype: str | None, flags: int,
              data: str | None = None) -> None:
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or 'bind/remount'} on {target}: {os.strerror(err)}")


def hide(path: str) -> None:
    """An empty read-only tmpfs over a directory, /dev/null (read-only) over a file."""
    if os.path.isdir(path):
        sys_mount("gravity-hidden", path, "tmpfs", HIDDEN, "mode=0755,size=4k")
    else:
        sys_mount("/dev/null", path, None, MS_BIND)
        # Not nodev: /dev/null must stay readable (as an empty file).
        sys_mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def hide_all_but(parent: str, own: str) -> None:
    """Cover `parent` (every host's directory) with an empty tmpfs, then bind `own` back in."""
    fd = os.open(own, os.O_PATH | os.O_DIRECTORY)
    sys_mount("gravity-hosts", parent, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4k")
    inside = os.path.join(parent, os.path.relpath(own, parent))
    os.makedirs(inside)
    sys_mount(f"/proc/self/fd/{fd}", inside, None, MS_BIND | MS_REC)
    os.close(fd)
    sys_mount(None, parent, None, MS_REMOUNT | HIDDEN)


def main() -> None:
    spec = json.loads(sys.argv[1])
    argv = sys.argv[2:]
    if libc.unshare(CLONE_NEWNS | CLONE_NEWUTS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS|CLONE_NEWUTS): {os.strerror(err)}")
    name = spec["hostname"].encode()
    if libc.sethostname(name, len(name)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"sethostname: {os.strerror(err)}")
    sys_mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here reaches the root side
    for source, target in spec.get("binds", []):  # the host's own system directories
        sys_mount(source, target, None, MS_BIND | MS_REC)
    for path in spec["hide"]:
        hide(path)
    if spec.get("hosts_dir"):
        hide_all_but(spec["hosts_dir"], spec["own"])
    os.chdir(spec["cwd"])
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
