"""The fence guard: a tiny process beside each lease holder that kills its phase processes when the
holder's lease runs out — even while the holder itself is frozen (SIGSTOP, a VM pause) or stuck.

Run as a script with the standard library only (`python -I -S fence_guard.py`), so it starts
fast and never imports the engine. It reads commands on stdin, one per line:

    D <term_at> <kill_at>   the lease is surely valid until kill_at (CLOCK_MONOTONIC seconds);
                            at term_at every registered process group gets SIGTERM, at kill_at
                            SIGKILL. "D inf inf" disarms.
    A <pgid>                a phase process group started; R <pgid> it ended.
    F                       fence now: SIGTERM every group, SIGKILL one second later.

End of input (the holder exited or died) kills every group still registered, then the guard
exits. A group registered after its deadline passed is killed at once. It lives in a session of
its own, so a signal to the holder's process group (Ctrl-Z, kill -STOP -PGID) does not stop it.
"""

import os
import select
import signal
import sys
import time

POLL = 0.05
HARD_AFTER_TERM = 1.0


def _signal_all(groups: set[int], sig: int) -> None:
    for pgid in list(groups):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            groups.discard(pgid)
        except PermissionError:
            groups.discard(pgid)


def main() -> None:
    groups: set[int] = set()
    term_at = kill_at = float("inf")
    termed: set[int] = set()
    fd = sys.stdin.fileno()
    buf = b""
    while True:
        now = time.monotonic()
        if groups and now >= term_at:
            fresh = groups - termed
            if fresh:
                _signal_all(fresh, signal.SIGTERM)
                termed |= fresh
        if groups and now >= kill_at:
            _signal_all(groups, signal.SIGKILL)
            groups.clear()
            termed.clear()
        # Nothing registered: nothing to kill, so sleep until a command arrives.
        wait = POLL if groups else None
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:  # the holder is gone: nothing it started may outlive it
            _signal_all(groups, signal.SIGTERM)
            time.sleep(0.2 if groups else 0)
            _signal_all(groups, signal.SIGKILL)
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            parts = line.decode("ascii", "replace").split()
            if not parts:
                continue
            cmd = parts[0]
            if cmd == "D" and len(parts) == 3:
                term_at, kill_at = float(parts[1]), float(parts[2])
                termed.clear()
            elif cmd == "A" and len(parts) == 2:
                pgid = int(parts[1])
                groups.add(pgid)
                if time.monotonic() >= kill_at:
                    _signal_all({pgid}, signal.SIGKILL)
                    groups.discard(pgid)
            elif cmd == "R" and len(parts) == 2:
                groups.discard(int(parts[1]))
                termed.discard(int(parts[1]))
            elif cmd == "F":
                now = time.monotonic()
                term_at, kill_at = now, now + HARD_AFTER_TERM


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    main()
