"""What coordinators, agents and operators agree on about agents, in one place: the store keys
and lock of a node's agent, its lease's owner name, its record and the stop-request schema.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.model import Lease
from engine.store.base import Store, this_host, this_pid

RECORDS = "agents/"  # kv prefix of the agents' records, each bound to its agent's lease
STOPS = "agent-stop/"  # kv prefix of stop requests (not bound to a lease)
SERVICES = "blob-service/"  # kv prefix: where each operation's image is served, and the token
OUTPUTS = "output/"  # kv prefix: the tail of each agent-run phase's output, per operation
LEASE_PREFIX = "agent:"


def record_key(node: str) -> str:
    return f"{RECORDS}{node}"


def stop_key(node: str) -> str:
    return f"{STOPS}{node}"


def lock_name(node: str) -> str:
    """The lock that makes an agent the only one for its node."""
    return f"agent/{node}"


def lease_name(node: str) -> str:
    """The name an agent's lease carries (shown in refusals and `gravity plan`)."""
    return f"{LEASE_PREFIX}{node}"


def is_agent(lease: Lease) -> bool:
    return lease.name.startswith(LEASE_PREFIX)


@dataclass(frozen=True)
class AgentRecord:
    """What an agent publishes about itself, renewed with its lease: coordinators dispatch
    to `lease`, operators see the rest in `gravity agent status`."""

    node: str
    lease: int
    pid: int
    host: str
    started: float
    heartbeat: float
    ttl: float
    operation: str | None = None
    running: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "lease": self.lease, "pid": self.pid, "host": self.host,
                "started": self.started, "heartbeat": self.heartbeat, "ttl": self.ttl,
                "operation": self.operation, "running": list(self.running)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AgentRecord:
        return cls(node=str(d["node"]), lease=int(d["lease"]), pid=int(d.get("pid", 0)),
                   host=str(d.get("host", "")), started=float(d.get("started", 0.0)),
                   heartbeat=float(d.get("heartbeat", 0.0)), ttl=float(d.get("ttl", 0.0)),
                   operation=d.get("operation"), running=tuple(d.get("running", ())))


def publish(store: Store, record: AgentRecord) -> None:
    """Write the record bound to the agent's lease: it vanishes when the lease does."""
    store.kv_put(record_key(record.node), record.to_dict(), record.lease)


def agents(store: Store) -> dict[str, AgentRecord]:
    """Every live agent by node."""
    return {key[len(RECORDS):]: AgentRecord.from_dict(value)
            for key, value in store.kv_list(RECORDS).items()}


def agent(store: Store, node: str) -> AgentRecord | None:
    found = store.kv_get(record_key(node))
    return AgentRecord.from_dict(found) if found is not None else None


@dataclass(frozen=True)
class StopRequest:
    """`gravity agent stop`: asks the node's agent (started before `at`) to stop."""

    at: float
    by: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "by": self.by}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StopRequest:
        return cls(at=float(d.get("at", 0.0)), by=str(d.get("by", "")))

    def applies_to(self, agent_started: float) -> bool:
        """A request older than the agent is for its predecessor: ignored."""
        return self.at >= agent_started


def request_stop(store: Store, node: str) -> StopRequest:
    request = StopRequest(at=time.time(), by=f"{this_host()} (pid {this_pid()})")
    store.kv_put(stop_key(node), request.to_dict())
    return request


def pending_stop(store: Store, node: str) -> StopRequest | None:
    found = store.kv_get(stop_key(node))
    return StopRequest.from_dict(found) if found is not None else None


@dataclass(frozen=True)
class Service:
    """Where the blob service of an operation is reached, and the token it wants."""

    url: str
    token: str


@dataclass(frozen=True)
class ShippedOutput:
    """The end of a phase's output as its node sent it back: readable from any host, while
    the whole log stays on the node at `path`."""

    node: str
    host: str
    path: str
    attempt: int
    size: int
    truncated: bool
    tail: str

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "host": self.host, "path": self.path,
                "attempt": self.attempt, "size": self.size, "truncated": self.truncated,
                "tail": self.tail}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShippedOutput:
        return cls(node=str(d["node"]), host=str(d.get("host", "")), path=str(d["path"]),
                   attempt=int(d.get("attempt", 0)), size=int(d.get("size", 0)),
                   truncated=bool(d.get("truncated")), tail=str(d.get("tail", "")))

    @property
    def where(self) -> str:
        return f"{self.path} on node {self.node}" + (f" ({self.host})" if self.host else "")


def output_key(operation_id: str, phase_id: str) -> str:
    return f"{OUTPUTS}{operation_id}{phase_id}"


def ship_output(store: Store, operation_id: str, phase_id: str, out: ShippedOutput) -> None:
    store.kv_put(output_key(operation_id, phase_id), out.to_dict())


def shipped_output(store: Store, operation_id: str, phase_id: str) -> ShippedOutput | None:
    found = store.kv_get(output_key(operation_id, phase_id))
    return ShippedOutput.from_dict(found) if found is not None else None


def publish_service(store: Store, operation_id: str, service: Service, lease_id: int) -> None:
    """Tell agents where the operation's image is served (bound to the coordinator's lease:
    it vanishes with the coordinator, and the next one publishes its own)."""
    store.kv_put(f"{SERVICES}{operation_id}", {"url": service.url, "token": service.token},
                 lease_id)


def service(store: Store, operation_id: str) -> Service | None:
    found = store.kv_get(f"{SERVICES}{operation_id}")
    if found is None:
        return None
    return Service(url=str(found["url"]), token=str(found["token"]))


def withdraw_service(store: Store, operation_id: str) -> None:
    store.kv_delete(f"{SERVICES}{operation_id}")


__all__ = [
    "LEASE_PREFIX",
    "OUTPUTS",
    "RECORDS",
    "AgentRecord",
    "Service",
    "ShippedOutput",
    "StopRequest",
    "agent",
    "agents",
    "is_agent",
    "lease_name",
    "lock_name",
    "pending_stop",
    "publish",
    "publish_service",
    "record_key",
    "request_stop",
    "service",
    "ship_output",
    "shipped_output",
    "stop_key",
    "withdraw_service",
]
