"""Debug logging of the store's calls: writes (operations, transitions, leases, locks) on
`gravity.store`, reads on `gravity.store.reads`; wrapped once per backend class; off unless --debug.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("gravity.store")
reads_log = logging.getLogger("gravity.store.reads")

MAX_LISTED = 6  # transitions named one by one in an `apply` line; the rest are counted


def _ops(args: Sequence[Any]) -> str:
    return str(args[0]) if args else "?"


def _operation(args: Sequence[Any]) -> str:
    op = args[0]
    specs = args[1] if len(args) > 1 else ()
    return f"{op.id} ({op.type}, {len(specs)} phase spec(s))"


def _apply(args: Sequence[Any]) -> str:
    op_id, transitions = args[0], list(args[1])
    moves = [f"{t.phase_id} {t.from_state.value}→{t.new.state.value} v{t.new.version}"
             for t in transitions[:MAX_LISTED]]
    if len(transitions) > MAX_LISTED:
        moves.append(f"… {len(transitions) - MAX_LISTED} more")
    return f"{op_id}: {len(transitions)} transition(s): {', '.join(moves)}"


def _lease(args: Sequence[Any]) -> str:
    return f"lease {args[0]}"


def _lock(args: Sequence[Any]) -> str:
    holder = args[1]
    return f"{args[0]!r} for lease {getattr(holder, 'id', holder)}"


# The calls logged, with what each line says about its arguments.
DESCRIBE: dict[str, Callable[[Sequence[Any]], str]] = {
    "create_operation": _operation,
    "import_operation": _operation,
    "finish_operation": lambda a: f"{a[0]} -> {getattr(a[1], 'value', a[1])}",
    "reopen_operation": _ops,
    "apply": _apply,
    "grant_lease": lambda a: f"owner {a[0]!r}, ttl {a[1]:g}s",
    "keepalive": _lease,
    "revoke_lease": _lease,
    "acquire_lock": _lock,
    "release_lock": _lock,
    "kv_put": lambda a: repr(a[0]),
    "kv_delete": lambda a: repr(a[0]),
}


# The reads logged (on their own logger: what a process asks the store, e.g. how often an
# idle agent reads), with what each line says about its arguments.
READS: dict[str, Callable[[Sequence[Any]], str]] = {
    "get_operation": _ops,
    "list_operations": lambda a: "",
    "active_operation_id": lambda a: "",
    "load_specs": _ops,
    "load_states": _ops,
    "get_state": lambda a: f"{a[0]} {a[1]}" if len(a) > 1 else _ops(a),
    "changelog": _ops,
    "last_seq": _ops,
    "get_lease": _lease,
    "lock_holder": lambda a: repr(a[0]),
    "kv_get": lambda a: repr(a[0]),
    "kv_list": lambda a: repr(a[0]),
}


def _outcome(name: str, result: Any) -> str:
    """What the line says a call returned: the seqs an apply wrote, the lease granted."""
    if name == "apply" and result:
        seqs = [getattr(r, "seq", None) for r in result]
        return f" -> seq {seqs[0]}" + (f"..{seqs[-1]}" if len(seqs) > 1 else "")
    if name in ("grant_lease", "keepalive") and result is not None:
        return f" -> lease {result.id}, expires in {result.expires - time.time():.1f}s"
    return ""


def _logged(name: str, method: Callable[..., Any], describe: Callable[[Sequence[Any]], str],
            log: logging.Logger) -> Callable[..., Any]:

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not log.isEnabledFor(logging.DEBUG):
            return method(self, *args, **kwargs)
        try:
            what = describe(args)
        except (IndexError, AttributeError, TypeError):
            what = ", ".join(map(repr, args))
        extra = "".join(f"; {k}={v}" for k, v in kwargs.items() if v is not None)
        started = time.perf_counter()
        try:
            result = method(self, *args, **kwargs)
        except BaseException as exc:
            log.debug("%s %s%s failed after %.1fms: %s: %s", name, what, extra,
                      (time.perf_counter() - started) * 1000, type(exc).__name__, exc)
            raise
        log.debug("%s %s%s%s [%.1fms]", name, what, extra, _outcome(name, result),
                  (time.perf_counter() - started) * 1000)
        return result

    wrapper.__gravity_logged__ = True  # type: ignore[attr-defined]
    return wrapper


def instrument(cls: type) -> None:
    """Wrap the write and read methods `cls` has (its own or a mixin's) so each call is logged
    at DEBUG; those already wrapped (inherited from a wrapped class) and abstract ones are
    left."""
    for table, logger in ((DESCRIBE, log), (READS, reads_log)):
        for name, describe in table.items():
            method = getattr(cls, name, None)
            if method is None or getattr(method, "__isabstractmethod__", False) \
                    or getattr(method, "__gravity_logged__", False):
                continue
            setattr(cls, name, _logged(name, method, describe, logger))


def opened(url: str) -> None:
    """Log that a store was opened (its URL, never credentials: those are not in it)."""
    log.debug("opened store %s", url)


__all__ = ["instrument", "opened"]
