"""The Store contract every backend (SQLite, etcd) keeps; the engine talks only to this.
Backends translate their driver errors into `engine.errors` types at this boundary.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from engine.errors import LeaseExpired, LockHeld, NotFound, OperationExists
from engine.model import (
    ChangeRecord,
    Lease,
    Operation,
    OpState,
    PhaseSpec,
    PhaseState,
    State,
    Transition,
)
from engine.store.calllog import instrument

if TYPE_CHECKING:
    from engine.outline import Outline

CLUSTER_LOCK = "cluster"
# Changelog sequence numbers are signed 64-bit integers in every backend (SQLite INTEGER,
# etcd revisions); a bound beyond this cannot be asked of a store.
MAX_SEQ = 2**63 - 1


def parse_seq(text: str) -> int | None:
    """A changelog sequence number given as text: 0 to MAX_SEQ in ASCII digits, else None."""
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= MAX_SEQ else None


def coordinator_lock(operation_id: str) -> str:
    """Name of the lock held by whoever drives `operation_id` (resume, execute, rollback)."""
    return f"coordinator/{operation_id}"


def no_operation(operation_id: str) -> NotFound:
    """The error every backend gives for an operation ID it does not hold."""
    return NotFound(f"no operation with ID {operation_id}", operation_id=operation_id,
                    hint="list operations with `gravity operation list`")


def cluster_busy(holder: str) -> LockHeld:
    """The refusal every backend gives while another operation holds the cluster lock."""
    return LockHeld(
        f"operation {holder} is still active; only one operation may run on a cluster at a "
        "time",
        holder=holder,
        operation_id=holder,
        hint="finish it with `gravity plan resume`, undo it with `gravity rollback`, or close "
        "it with `gravity plan complete`",
    )


def operation_exists(operation_id: str, *, copying: bool = False) -> OperationExists:
    """The error every backend gives for creating (or importing) an operation whose ID is
    taken: bad input (exit 2), not a lock, since nothing the holder does frees that ID."""
    hint = ("`gravity store copy --force` replaces the destination's copy" if copying
            else "choose another --id (`gravity operation list` shows the IDs taken)")
    return OperationExists(f"an operation with ID {operation_id} already exists",
                           operation_id=operation_id, hint=hint)


def lease_gone(lease_id: int) -> LeaseExpired:
    """The error every backend gives when a lease a write depends on is no longer alive."""
    return LeaseExpired(f"lease {lease_id} expired before it was renewed",
                        hint="this process lost its claims; resume the operation to continue")


def this_host() -> str:
    """The host name recorded in leases, so refusals can say where the holder runs."""
    return os.environ.get("GRAVITY_HOSTNAME") or socket.gethostname()


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do that callers branch on, so nothing above engine/store/ reads
    the store's URL to decide behaviour.

    shared: other hosts reach the same store, so node agents can run phases (etcd). The
        embedded SQLite file is one machine's: phases run in the coordinator's process.
    max_transitions: the most transitions one `apply` call takes. An `apply` is one atomic
        write, and a backend's write has limits (etcd: operations and bytes per
        transaction); a caller with more transitions splits them itself, knowing that each
        part then commits on its own (or uses `apply_in_parts` when that is fine).
    """

    shared: bool
    max_transitions: int


@dataclass(frozen=True)
class TLSConfig:
    """Client TLS files for a store reached over the network (etcd); all optional, a CA alone
    verifies the server."""

    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


def check_batch(transitions: Sequence[Transition], limit: int) -> None:
    """The rules of one `apply` batch, checked by every backend before it writes: at most
    `limit` transitions, each one version step, no phase named twice (one atomic write
    cannot move a phase two steps). ValueError is a caller's bug; nothing is written."""
    if len(transitions) > limit:
        raise ValueError(
            f"apply got {len(transitions)} transitions; this store writes at most {limit} "
            "in one atomic write (store.capabilities.max_transitions): split the batch")
    seen: set[str] = set()
    for t in transitions:
        if t.new.version != t.expected + 1:
            raise ValueError(
                f"transition of {t.phase_id} goes from version {t.expected} to "
                f"{t.new.version}; the store needs exactly one step per transition")
        if t.phase_id in seen:
            raise ValueError(f"apply got two transitions of {t.phase_id}; one atomic write "
                             "moves a phase one step: apply them one after the other")
        seen.add(t.phase_id)


class Store(ABC):
    """Durable state of operations: specs, phase states with CAS, changelog, leases and locks.

    Rules every backend keeps (the contract test suite checks them):
    - `apply` is atomic: every transition's CAS holds and each appends one
      changelog record, or nothing is written (PhaseConflict). It takes at most
      `capabilities.max_transitions` transitions, one per phase.
    - An absent phase state is `unstarted` at version 0.
    - No stored value grows with the plan: one row/key per spec, per state,
      per changelog record.
    - Reads that decide preconditions (`load_states`, `get_state`) are
      linearizable.
    """

    url: str
    capabilities: Capabilities

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every backend's writes are logged at DEBUG on `gravity.store` (shown by --debug)."""
        super().__init_subclass__(**kwargs)
        instrument(cls)

    def reach(self) -> tuple[str, int] | None:
        """The address (host, port) other hosts use to reach this store, if it is shared:
        a coordinator serves the image on its own address toward it."""
        return None

    # -- operations -----------------------------------------------------------------------
    @abstractmethod
    def create_operation(self, op: Operation, specs: Sequence[PhaseSpec]) -> None:
        """Write the operation and its specs and take the cluster lock, all or nothing.

        Raises LockHeld (holder = the active operation's ID) when another
        active operation holds the cluster lock, and OperationExists when an
        operation with that ID exists (finished or not). Either way nothing is written.
        """

    @abstractmethod
    def get_operation(self, operation_id: str) -> Operation:
        """The operation record; NotFound when there is none with that ID."""

    @abstractmethod
    def list_operations(self) -> list[Operation]:
        """Every operation, oldest first."""

    @abstractmethod
    def active_operation_id(self) -> str | None:
        """The operation holding the cluster lock, if any."""

    @abstractmethod
    def finish_operation(self, operation_id: str, state: OpState, note: str | None) -> Operation:
        """Set a finished state and release the cluster lock it holds, atomically."""

    @abstractmethod
    def reopen_operation(self, operation_id: str, note: str | None) -> Operation:
        """Make a finished operation active again and take the cluster lock for it, atomically
        (used to roll back an operation that was closed as failed). LockHeld when another
        active operation holds the lock."""

    # -- plan -----------------------------------------------------------------------------
    @abstractmethod
    def load_specs(self, operation_id: str) -> list[PhaseSpec]:
        """The operation's phase specs in written (pre-)order."""

    @abstractmethod
    def load_states(self, operation_id: str) -> dict[str, PhaseState]:
        """Every stored phase state (absent = unstarted, version 0). Linearizable."""

    @abstractmethod
    def get_state(self, operation_id: str, phase_id: str) -> PhaseState:
        """One phase's state (unstarted at version 0 when none is stored). Linearizable."""

    def load_plan(self, operation_id: str) -> tuple[list[PhaseSpec], dict[str, PhaseState]]:
        """`load_specs` and `load_states` together (what `gravity plan` shows); a backend
        may have both reads in flight at once."""
        return self.load_specs(operation_id), self.load_states(operation_id)

    def load_outline(self, operation_id: str) -> Outline:
        """The top-level phases and a tally of the leaf states below each (`gravity plan
        --short`). This reads the whole plan; a backend answers from an index of the
        top-level phases written with the operation, and from here for one without it."""
        from engine.outline import outline_of

        return outline_of(self.load_specs(operation_id), self.load_states(operation_id))

    @abstractmethod
    def apply(self, operation_id: str, transitions: Sequence[Transition], *,
              fence: int | None = None) -> list[ChangeRecord]:
        """Apply CAS transitions and their changelog records in one atomic write.

        Raises PhaseConflict naming the first phase whose version moved. With `fence` (the
        writer's own lease), the write commits only while that lease is alive, else
        LeaseExpired and nothing is written: a holder that lost its lease records nothing.
        A batch over `capabilities.max_transitions`, naming a phase twice or moving one
        more than a version is refused with ValueError before anything is written
        (`check_batch`). The records come back in the order of `transitions`.
        """

    def apply_in_parts(self, operation_id: str, transitions: Sequence[Transition], *,
                       fence: int | None = None) -> list[ChangeRecord]:
        """`apply` in parts of at most `capabilities.max_transitions`, each atomic on its own:
        for transitions independent of each other (interrupting the phases of dead owners).
        If a part fails, the parts before it stay written."""
        size = self.capabilities.max_transitions
        out: list[ChangeRecord] = []
        for start in range(0, len(transitions), size):
            out.extend(self.apply(operation_id, transitions[start:start + size], fence=fence))
        return out

    @abstractmethod
    def changelog(self, operation_id: str, after: int = 0, node: str | None = None
                  ) -> list[ChangeRecord]:
        """Changelog records with seq > after, in order; with `node`, only the records of
        phases that ran (or were to run) there."""

    @abstractmethod
    def last_seq(self, operation_id: str) -> int:
        """Where a reader that wants only what comes next starts, read cheaply: every record
        written so far has a seq at or below it, every later one above it. SQLite returns
        the newest record's seq (0 when none); etcd the last seq its current revision could
        hold. NotFound when there is no such operation."""

    @abstractmethod
    def wait_changes(self, operation_id: str, after: int, timeout: float,
                     node: str | None = None, to_state: State | None = None
                     ) -> list[ChangeRecord]:
        """Block until records with seq > after (of `node`'s phases, and moving a phase to
        `to_state`, if given) exist, then return them, or until the timeout ([]). Records
        of other states do not end the wait: an agent waiting for dispatches
        (`to_state=IN_PROGRESS`) is not woken by the results it records itself."""

    @abstractmethod
    def wake(self, operation_id: str) -> None:
        """Make every `wait_changes` on the operation in progress in other threads return
        now (with what it has, often []): how a watcher thread is stopped without waiting
        out its timeout."""

    @abstractmethod
    def forget_changes(self, operation_id: str) -> None:
        """Drop what this process holds to answer `wait_changes` on the operation (etcd: its
        open watches and the records they delivered), for a process that stops following it
        (an agent moving to the next operation). A wait still on it returns what it has; a
        later one starts afresh."""

    def watch(self, on_change: Callable[[], None], *, kv_keys: Sequence[str] = (),
              active_operation: bool = False) -> Watch | None:
        """Call `on_change` (from another thread) after every write or delete of the kv
        records `kv_keys` and, with `active_operation`, of the cluster lock (which operation
        is active), so a waiter can block instead of polling. Changes made before this returns
        are not reported: watch first, then read. If the watch breaks (the store restarted,
        the connection was cut) `broken` is set and `on_change` is called once more: read
        again and watch again. None when this store cannot watch (SQLite): the caller polls.
        """
        return None

    # -- leases and locks -----------------------------------------------------------------
    @abstractmethod
    def grant_lease(self, name: str, ttl: float) -> Lease:
        """A new lease named `name` (e.g. coordinator:<op>) for this process (host and pid
        recorded), alive for `ttl` seconds."""

    @abstractmethod
    def keepalive(self, lease_id: int) -> Lease:
        """Renew a lease for another TTL; LeaseExpired when it is already gone."""

    @abstractmethod
    def revoke_lease(self, lease_id: int) -> None:
        """End a lease now, releasing every lock bound to it. No error when already gone."""

    @abstractmethod
    def get_lease(self, lease_id: int) -> Lease | None:
        """The lease if it is still alive, else None."""

    @abstractmethod
    def acquire_lock(self, name: str, lease: Lease) -> None:
        """Take a lock bound to `lease`; LockHeld(holder=description) if a live lease has it.

        Re-acquiring a lock already held by the same lease succeeds.
        """

    @abstractmethod
    def release_lock(self, name: str, lease_id: int) -> None:
        """Release a lock if `lease_id` holds it; otherwise do nothing."""

    @abstractmethod
    def lock_holder(self, name: str) -> Lease | None:
        """The live lease holding the lock, if any."""

    # -- small key-value records (agent announcements, stop requests) ----------------------
    @abstractmethod
    def kv_put(self, key: str, value: Mapping[str, Any], lease_id: int | None = None) -> None:
        """Write a small JSON record; bound to `lease_id` it vanishes with that lease."""

    @abstractmethod
    def kv_get(self, key: str) -> dict[str, Any] | None:
        """The record, or None when absent or its lease is gone."""

    @abstractmethod
    def kv_list(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every live record whose key starts with `prefix`, by key."""

    @abstractmethod
    def kv_delete(self, key: str) -> None:
        """Remove a record; no error when absent."""

    # -- copying between stores (engine.store.copy) ---------------------------------------
    @abstractmethod
    def import_operation(self, op: Operation, specs: Sequence[PhaseSpec],
                         states: Sequence[PhaseState], records: Sequence[ChangeRecord], *,
                         replace: bool = False) -> bool:
        """Write a whole operation as another store holds it (`gravity store copy`).

        Versions and the changelog's order are kept; seqs are this store's own, assigned in
        that order. The operation becomes visible all at once or not at all. An operation
        with that ID already here is OperationExists unless `replace`, which deletes it (and
        frees the cluster lock if it held it) first. The cluster lock is taken only if `op`
        is active and no active operation holds it; returns whether it was taken.
        """

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Safe to call twice."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Watch(Protocol):
    """A watch from `Store.watch`: `broken` once it stopped delivering; `close` ends it."""

    @property
    def broken(self) -> bool: ...

    def close(self) -> None: ...


def this_pid() -> int:
    return os.getpid()


__all__ = [
    "CLUSTER_LOCK",
    "MAX_SEQ",
    "Capabilities",
    "Store",
    "Watch",
    "check_batch",
    "coordinator_lock",
    "operation_exists",
    "parse_seq",
    "this_host",
    "this_pid",
]
