"""Is a lease's holder alive? Unexpired in the store, and — when it is a process on this host —
still running, so a crashed local process does not make anyone wait out its TTL.
"""

from __future__ import annotations

import os

from engine.model import Lease
from engine.store.base import Store, this_host


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lease_alive(store: Store, lease_id: int | None) -> Lease | None:
    """The lease if its holder is alive; a dead local holder's lease is revoked at once."""
    if lease_id is None:
        return None
    lease = store.get_lease(lease_id)
    if lease is None:
        return None
    if lease.host == this_host() and lease.pid != os.getpid() and not pid_exists(lease.pid):
        store.revoke_lease(lease.id)
        return None
    return lease
