"""Copying operations between stores, either direction (SQLite <-> etcd): `gravity store copy`.
Reads through the public Store methods and writes with `Store.import_operation`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import NotFound, StoreError
from engine.model import ChangeRecord, Operation, OpState
from engine.store.base import Store


@dataclass(frozen=True)
class CopyResult:
    """What happened to one operation: copied, skipped (already there) or refused."""

    operation_id: str
    outcome: str
    phases: int = 0
    records: int = 0
    detail: str = ""

    @property
    def refused(self) -> bool:
        return self.outcome == "refused"

    def render(self) -> str:
        """The line `gravity store copy` prints for this operation."""
        if self.outcome == "copied":
            line = (f"copied {self.operation_id} ({self.phases} phases, "
                    f"{self.records} changelog records)")
            return f"{line}; {self.detail}" if self.detail else line
        return f"{self.outcome} {self.operation_id}: {self.detail}"


def history(records: Sequence[ChangeRecord]) -> list[dict[str, Any]]:
    """A changelog without its store-assigned seqs: what two stores must agree on."""
    out = []
    for r in sorted(records, key=lambda r: r.seq):
        d = r.to_dict()
        d.pop("seq")
        out.append(d)
    return out


def _differs(ours: Operation, theirs: Operation, src: list[dict[str, Any]],
             dst: list[dict[str, Any]]) -> str | None:
    if len(src) != len(dst):
        return (f"the destination holds a different history ({len(dst)} changelog "
                f"records, the source {len(src)})")
    if src != dst:
        return "the destination's changelog differs from the source's"
    if ours.to_dict() != theirs.to_dict():
        return (f"the operation record differs (source {ours.state.value}, "
                f"destination {theirs.state.value})")
    return None


def copy_operation(src: Store, dst: Store, operation_id: str, *,
                   force: bool = False) -> CopyResult:
    """Copy one operation; skip it if the destination already has the same history.

    A destination copy with another history is refused unless `force`, which
    replaces it. The destination takes the cluster lock for an active operation
    only when no other active operation holds it there.
    """
    op = src.get_operation(operation_id)
    specs = src.load_specs(operation_id)
    states = src.load_states(operation_id)
    records = src.changelog(operation_id)
    try:
        present: Operation | None = dst.get_operation(operation_id)
    except NotFound:
        present = None
    if present is not None:
        why = _differs(op, present, history(records), history(dst.changelog(operation_id)))
        if why is None:
            return CopyResult(operation_id, "skipped", len(specs), len(records),
                              "already present")
        if not force:
            return CopyResult(operation_id, "refused", len(specs), len(records),
                              f"{why}; pass --force to replace it")
    took = dst.import_operation(op, specs, list(states.values()), records,
                                replace=present is not None)
    copied = dst.changelog(operation_id)
    if history(copied) != history(records) or len(dst.load_specs(operation_id)) != len(specs):
        raise StoreError(f"{operation_id} did not read back identically from {dst.url}",
                         operation_id=operation_id, hint="run the copy again with --force")
    detail = ""
    if op.state is OpState.ACTIVE and not took:
        detail = (f"cluster lock left with {dst.active_operation_id()}, "
                  "which is active in the destination")
    return CopyResult(operation_id, "copied", len(specs), len(records), detail)


def copy_operations(src: Store, dst: Store, operation_ids: Sequence[str] = (), *,
                    force: bool = False) -> Iterator[CopyResult]:
    """Copy the named operations (every one, oldest first, when none is named)."""
    ids = list(operation_ids) or [op.id for op in src.list_operations()]
    for operation_id in ids:
        yield copy_operation(src, dst, operation_id, force=force)


__all__ = ["CopyResult", "copy_operation", "copy_operations", "history"]
