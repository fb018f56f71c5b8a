"""The rules for names that become file names and store keys: operation IDs, phase ID segments
and node names. Every entry point checks them, and the stores again before writing an operation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from engine.errors import InputError, Problem
from engine.model import PhaseSpec

# Where each lands on disk, so none may hold a `/`, be `..` or overflow a file name:
# <state-dir>/logs/<operation>.jsonl, <state-dir>/logs/<operation>/<phase ID>.log and
# <state-dir>/nodes/<node>/ (holding backups/<operation>/ and history/<operation>.json).

NAME_MAX = 255
"""Bytes in one file name on Linux file systems."""
PATH_BUDGET = 2048
"""Bytes a phase ID may take of the 4096-byte PATH_MAX, leaving the rest to the state dir."""

OPERATION_ID = re.compile(r"[A-Za-z0-9_-]+")
MAX_OPERATION_ID = 128  # room for the longest file name made from it, `<hook>-<operation>.yaml`
SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
MAX_SEGMENT = NAME_MAX - len(".log")  # a leaf's output is `<segment>.log`
MAX_PHASE_ID = PATH_BUDGET
NODE_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")  # a DNS label-style host name


def _shown(value: object) -> str:
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:40]!r}… ({len(value)} characters)"
    return repr(value)


def operation_id_problem(value: object) -> str | None:
    """Why `value` cannot be an operation ID, or None when it can."""
    if isinstance(value, str) and OPERATION_ID.fullmatch(value) and \
            len(value) <= MAX_OPERATION_ID:
        return None
    return (f"expected 1 to {MAX_OPERATION_ID} ASCII letters, digits, '-' or '_' (the ID names "
            f"files under <state-dir>/logs/), got {_shown(value)}")


def segment_problem(value: object) -> str | None:
    """Why `value` cannot be one segment of a phase ID, or None when it can."""
    if not isinstance(value, str) or not SEGMENT.fullmatch(value):
        return ("expected a path segment of letters, digits, '.', '_', ':' or '-' (no '/'), "
                f"starting with a letter or digit, got {_shown(value)}")
    if len(value) > MAX_SEGMENT:
        return (f"expected at most {MAX_SEGMENT} characters (the phase's output is "
                f"<segment>.log, and a file name holds {NAME_MAX} bytes), got {len(value)}")
    return None


def phase_id_problem(phase_id: str) -> str | None:
    """Why a whole phase ID (`/a/b/c`) is unusable, or None: every segment is valid and the
    ID fits the path budget."""
    if not phase_id.startswith("/"):
        return f"expected an absolute phase ID starting with '/', got {_shown(phase_id)}"
    for segment in phase_id[1:].split("/"):
        problem = segment_problem(segment)
        if problem:
            return problem
    if len(phase_id) > MAX_PHASE_ID:
        return (f"expected a phase ID of at most {MAX_PHASE_ID} characters (it is a path "
                f"under <state-dir>/logs/), got {len(phase_id)}")
    return None


def node_name_problem(value: object) -> str | None:
    """Why `value` cannot name a node, or None: the inventory's rule, for plans too."""
    if isinstance(value, str) and NODE_NAME.fullmatch(value):
        return None
    return ("expected a DNS-style node name (1 to 63 lower-case letters, digits, '-', '.'; "
            f"starting and ending with a letter or digit), got {_shown(value)}")


def names_whole_plan(phase_id: str) -> bool:
    """`--phase /` (or `//`, ` / `): the root, i.e. the whole operation, not one phase."""
    return phase_id.strip().strip("/") == ""


def check_operation_id(value: str, field: str = "--id") -> None:
    """Raise InputError (exit 2) unless `value` is a valid operation ID."""
    problem = operation_id_problem(value)
    if problem:
        raise InputError(f"invalid {field}", [Problem(problem, field=field)],
                         hint="choose another ID, or leave it out for a generated one; "
                         "nothing was written")


def plan_problems(specs: Iterable[PhaseSpec]) -> list[Problem]:
    """Every phase ID or node name in `specs` that could not become a file name."""
    problems = []
    for spec in specs:
        problem = phase_id_problem(spec.id)
        if problem:
            problems.append(Problem(problem, field="id", phase=spec.id[:80]))
        if spec.node is not None:
            problem = node_name_problem(spec.node)
            if problem:
                problems.append(Problem(problem, field="node", phase=spec.id[:80]))
    return problems


def check_new_operation(operation_id: str, specs: Iterable[PhaseSpec]) -> None:
    """The stores' own check before writing an operation, so no caller can bypass the rules."""
    problems = [Problem(p, field="operation ID") for p in [operation_id_problem(operation_id)]
                if p]
    problems += plan_problems(specs)
    if problems:
        raise InputError(f"operation {_shown(operation_id)} cannot be written: "
                         f"{len(problems)} name{'s' if len(problems) != 1 else ''} would not "
                         "be safe file names", problems,
                         hint="see the naming rules in docs/plan-format.md; nothing was written")
