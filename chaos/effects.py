"""The phases' side effects: each attempt appends `start`/`end` lines to a per-phase file,
so the checker can see every run of every phase, whether it finished, and when.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

EFFECTS_DIR = "effects"

# Runs in bash -c on the node (coordinator or agent). $EPOCHREALTIME is bash's own clock
# read (no fork), $$ the attempt's shell, whose death ends the attempt.
# Every attempt also holds an exclusive flock on the phase's lock file (fd 9, inherited by
# its children): the kernel drops it only when the last process of the attempt is gone,
# however it died. An attempt that cannot take it runs while another is alive: `overlap`.
PROLOGUE = (
    'F="$GRAVITY_STATE_DIR/effects/${GRAVITY_PHASE//\\//_}.log"; mkdir -p "${F%/*}"\n'
    'exec 9>>"$F.lock"\n'
    'flock -n 9 || echo "overlap $GRAVITY_ATTEMPT $EPOCHREALTIME $$" >> "$F"\n'
    'echo "start $GRAVITY_ATTEMPT $EPOCHREALTIME $$ $GRAVITY_NODE" >> "$F"\n'
)
EPILOGUE = 'echo "end $GRAVITY_ATTEMPT $EPOCHREALTIME $$" >> "$F"\n'


def effect_command(seconds: float, *, hang_until: int = 0, fail_until: int = 0) -> str:
    """A side-effect command: log start, work for `seconds`, log end.

    `hang_until`: attempts up to this number hang (sleep 60, to be timed out) before the end
    line; `fail_until`: attempts up to this number exit 1 before the end line.
    """
    body = ""
    if hang_until:
        body += f'if [ "$GRAVITY_ATTEMPT" -le {hang_until} ]; then sleep 60; fi\n'
    if fail_until:
        body += (f'if [ "$GRAVITY_ATTEMPT" -le {fail_until} ]; then '
                 'echo "injected failure"; exit 1; fi\n')
    body += f"sleep {seconds:.3f}\n"
    return PROLOGUE + body + EPILOGUE


def effects_file(state_dir: Path, phase_id: str) -> Path:
    return state_dir / EFFECTS_DIR / (phase_id.replace("/", "_") + ".log")


@dataclass
class Attempt:
    """One run of a phase's command as its effect file tells it."""

    attempt: int
    started: float
    pid: int
    node: str
    ended: float | None = None


@dataclass
class Effects:
    """Every attempt of one phase, in file order, and any line that made no sense."""

    phase_id: str
    attempts: list[Attempt] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)  # attempts started while one lived

    @property
    def finished(self) -> list[Attempt]:
        return [a for a in self.attempts if a.ended is not None]


def read_effects(state_dir: Path, phase_ids: Iterable[str]) -> dict[str, Effects]:
    """Parse each phase's effect file (absent = never ran)."""
    out = {}
    for phase_id in phase_ids:
        eff = Effects(phase_id)
        path = effects_file(state_dir, phase_id)
        lines = path.read_text().splitlines() if path.exists() else []
        open_by_pid: dict[int, Attempt] = {}
        for line in lines:
            parts = line.split()
            if len(parts) == 5 and parts[0] == "start":
                a = Attempt(int(parts[1]), float(parts[2]), int(parts[3]), parts[4])
                eff.attempts.append(a)
                open_by_pid[a.pid] = a
            elif len(parts) == 4 and parts[0] == "overlap":
                eff.overlaps.append(f"{phase_id}: attempt {parts[1]} (pid {parts[3]}) started at "
                                    f"{parts[2]} while another attempt's processes lived")
            elif len(parts) == 4 and parts[0] == "end":
                a = open_by_pid.pop(int(parts[3]), None)
                if a is None or a.attempt != int(parts[1]):
                    eff.problems.append(f"{phase_id}: end line without its start: {line!r}")
                    continue
                a.ended = float(parts[2])
            else:
                eff.problems.append(f"{phase_id}: torn or unknown effect line {line!r}")
        out[phase_id] = eff
    return out
