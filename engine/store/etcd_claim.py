"""A creation's claim on an operation ID (`claim/<op>`, bound to a lease its process renews): only
the claimant writes that ID's unpublished keys, and its publish ends the claim in the same commit.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pyetcd import transactions as tx

from engine.errors import EngineError, LockHeld, StoreError
from engine.model import Lease
from engine.store.etcd_keys import Keys, decode, encode

T = TypeVar("T")
# The claim's lease: renewed every third of it while the creation runs. A creating process
# that dies (kill -9) holds its ID for at most this long; the next creation of that ID then
# clears what it left unpublished.
CLAIM_TTL = 10.0


class _Store(Protocol):
    keys: Keys

    def _call(self, what: str, fn: Callable[[Any], T], *,
              patience: float | None = None) -> T: ...
    def grant_lease(self, name: str, ttl: float) -> Lease: ...
    def keepalive(self, lease_id: int) -> Lease: ...
    def revoke_lease(self, lease_id: int) -> None: ...


@dataclass
class Claim:
    """Held while creating (or copying) one operation ID; every write of the creation compares
    `guard()`, so once the claim is lost (its lease expired) nothing more of it is written."""

    op_id: str
    op_key: bytes
    key: bytes
    token: bytes
    lease_id: int
    done: threading.Event = field(default_factory=threading.Event)

    def guard(self) -> list[Any]:
        """The compares of every write of the creation: the operation is still unpublished
        (no record) and the claim is still ours."""
        return [tx.Version(self.op_key) == 0, tx.Value(self.key) == self.token]

    def lost(self) -> StoreError:
        return StoreError(
            f"the creation of operation {self.op_id} lost its claim on the ID (etcd did not "
            f"hear from this process for {CLAIM_TTL:.0f} s); nothing of it was published",
            operation_id=self.op_id, hint="run the command again")

    def held(self, client: Any) -> bool:
        """Whether the claim is still ours (read after a refused write, to say why)."""
        found = client.get_response(self.key)
        return bool(found.kvs) and found.kvs[0].value == self.token


@contextlib.contextmanager
def claimed(store: _Store, op_id: str, what: str) -> Iterator[Claim]:
    """Claim `op_id` for one creation, renew the claim until the block ends, then drop it.

    LockHeld (exit 3) while another process creates or copies that ID: it either publishes
    (and the ID is taken) or fails or dies (and the ID is free again within CLAIM_TTL).
    """
    lease = store.grant_lease(f"creating {op_id}", CLAIM_TTL)
    key = store.keys.claim(op_id)
    token = encode({"operation": op_id, "lease": lease.id, "host": lease.host,
                    "pid": lease.pid})

    def take(client: Any) -> None:
        ok, responses = client.transaction(
            compare=[tx.Version(key) == 0], success=[tx.Put(key, token, lease=lease.id)],
            failure=[tx.Get(key)])
        if ok or (responses[0] and responses[0][0][0] == token):  # or our earlier try did
            return
        holder = decode(responses[0][0][0]) if responses[0] else {}
        raise LockHeld(
            f"operation {op_id} is being created by another process (host "
            f"{holder.get('host', '?')}, pid {holder.get('pid', '?')})",
            holder=f"{holder.get('host', '?')}:{holder.get('pid', '?')}", operation_id=op_id,
            hint="wait for it: `gravity operation list` shows the operation once it is created "
            f"(a creation that died frees the ID within {CLAIM_TTL:.0f} s)")

    claim = Claim(op_id, store.keys.op(op_id), key, token, lease.id)
    try:
        store._call(what, take)
        threading.Thread(target=_renew, args=(store, claim), name="gravity-claim",
                         daemon=True).start()
        yield claim
    finally:
        claim.done.set()
        with contextlib.suppress(EngineError):  # the claim key goes with its lease
            store.revoke_lease(lease.id)


def _renew(store: _Store, claim: Claim) -> None:
    while not claim.done.wait(CLAIM_TTL / 3):
        try:
            store.keepalive(claim.lease_id)
        except EngineError:
            return  # lost: the creation's guarded writes now fail and say so


__all__ = ["CLAIM_TTL", "Claim", "claimed"]
