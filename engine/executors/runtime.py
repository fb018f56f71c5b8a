"""Running one attempt of a leaf wherever it runs (coordinator or agent): the executor's
context, the phase's log file, and the attempt's outcome as a PhaseResult.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EngineError, ExecutionError
from engine.executors import ExecContext, registry
from engine.executors.content import Content, Facts
from engine.executors.fence import ChildFence
from engine.model import LOCAL_NODE, Action, PhaseSpec, PhaseState


def phase_log_path(state_dir: Path, operation_id: str, phase_id: str) -> Path:
    """The file holding a phase's output (all attempts appended)."""
    return state_dir.joinpath("logs", operation_id, phase_id.strip("/") + ".log")


OUTPUT_TAIL = 64 * 1024  # how much of a phase's output travels back to the store


def read_tail(path: Path, limit: int = OUTPUT_TAIL) -> tuple[str, int, bool] | None:
    """The last `limit` bytes of a log as text (from a whole line), its size and whether it
    was cut; None when there is no such file."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            start = max(0, size - limit)
            f.seek(start)
            data = f.read(limit)
    except FileNotFoundError:
        return None
    if start:
        data = data.split(b"\n", 1)[-1]  # drop the partial first line
    return data.decode("utf-8", "replace"), size, start > 0


@dataclass
class PhaseResult:
    """How one attempt ended. `recorded` is set when the runner already stored the transition
    (an agent reports its own result); otherwise the scheduler records it."""

    phase_id: str
    version: int
    error: EngineError | None = None
    note: str | None = None
    duration: float = 0.0
    recorded: PhaseState | None = None


def failure_text(error: EngineError) -> str:
    """An attempt's error as it is recorded: the message, then its output's last lines."""
    tail = getattr(error, "tail", "")
    return f"{error.message}\n{tail}".strip() if tail else error.message


def run_phase(spec: PhaseSpec, st: PhaseState, *, operation_id: str, state_dir: Path,
              operation_data: Mapping[str, Any], cancel: threading.Event,
              deadline: float | None, output: Callable[[str], None] | None = None,
              fence: ChildFence | None = None, content: Content | None = None,
              facts: Facts | None = None) -> PhaseResult:
    """Run one attempt of a leaf's executor (execute or rollback, per the state's action)."""
    node = st.node or LOCAL_NODE
    ctx = ExecContext(
        operation_id=operation_id, phase_id=spec.id, node=node, attempt=st.attempt,
        data=spec.data, workdir=state_dir.joinpath("nodes", node), state_dir=state_dir,
        log_path=phase_log_path(state_dir, operation_id, spec.id), deadline=deadline,
        timeout=spec.timeout, cancel=cancel, operation_data=operation_data, fence=fence,
        content=content, facts=facts,
        **({"output": output} if output is not None else {}),
    )
    started = time.monotonic()
    error: EngineError | None = None
    note = None
    name = spec.executor or "noop"
    skip = spec.data.get("skip")
    if isinstance(skip, str) and skip:  # decided when the plan was built (e.g. node offline)
        return PhaseResult(spec.id, st.version, None, f"skipped: {skip}", 0.0)
    try:
        if not ctx.workdir.is_dir():  # one stat per phase; mkdir only the first time
            ctx.workdir.mkdir(parents=True, exist_ok=True)
        executor = registry.get(name)
        if st.action is Action.ROLLBACK:
            note = executor.rollback(ctx)
        else:
            executor.precheck(ctx)
            note = executor.execute(ctx)
    except EngineError as exc:
        error = exc
    except Exception as exc:
        error = ExecutionError(f"executor {name} crashed: {type(exc).__name__}: {exc}",
                               retryable=False)
    return PhaseResult(spec.id, st.version, error, note, time.monotonic() - started)


__all__ = ["OUTPUT_TAIL", "PhaseResult", "failure_text", "phase_log_path", "read_tail",
           "run_phase"]
