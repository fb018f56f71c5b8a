"""Launcher of a local hook container: a private mount namespace showing the hook exactly what the
seeds promise at the paths they promise, then `exec` of the container's command.

Run as `python -I -S hook_ns.py SPEC -- ARGV…` (standard library only, as root). SPEC is a JSON
file: {"binds": [[source, target], …], "overlays": [[[lower, …], target], …]}. Every target
(a directory) is created on the host if missing — they are under /var/lib/gravity and
/usr/local/bin, Gravity's own places — then, inside the new namespace only, each bind is
mounted read-only over its target and each overlay (the given directories over the target's
own contents) likewise. Nothing outside the namespace changes. Exit 126 with the reason when
a namespace cannot be made (not root, no user namespaces…).
"""

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]


def _fail(what: str) -> None:
    err = ctypes.get_errno()
    sys.stderr.write(f"hook isolation: {what}: {os.strerror(err)} (a hook runs as root in a "
                     "private mount namespace, as Gravity's hooks do)\n")
    sys.exit(126)


def _mount(source: str, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                   flags, data.encode() if data else None) != 0:
        _fail(f"mounting {source} on {target}")


def main() -> None:
    spec_path = sys.argv[1]
    if sys.argv[2] != "--" or len(sys.argv) < 4:
        sys.stderr.write("usage: hook_ns.py SPEC -- ARGV...\n")
        sys.exit(2)
    argv = sys.argv[3:]
    with open(spec_path) as f:
        spec = json.load(f)
    binds = spec.get("binds", [])
    overlays = spec.get("overlays", [])
    for _, target in binds:
        os.makedirs(target, exist_ok=True)
    for _, target in overlays:
        os.makedirs(target, exist_ok=True)
    if _libc.unshare(CLONE_NEWNS) != 0:
        _fail("creating a private mount namespace")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    for source, target in binds:
        _mount(source, target, None, MS_BIND)
        _mount(source, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    for lowers, target in overlays:
        _mount("overlay", target, "overlay", MS_RDONLY,
               "lowerdir=" + ":".join([*lowers, target]))
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
