"""One exception tree for the engine; the CLI maps each branch to an exit code.
Every error carries the operation/phase it concerns and a `hint` naming the next command.

    EngineError                      exit 1  (something failed)
    ├── InputError                   exit 2  (bad input; nothing was written)
    │   ├── PlanError                        plan file / plan validation
    │   ├── ManifestError                    image manifest
    │   ├── ValuesError                      --values / --set / --set-string / --set-file
    │   ├── InventoryError                   --nodes inventory file
    │   ├── StoreConfigError                 bad --store URL, auth, TLS, prefix
    │   ├── NotFound                         unknown operation or phase
    │   └── OperationExists                  the operation ID asked for is taken
    ├── Refused                      exit 3  (a rule, a live owner or a lock said no)
    │   ├── PreconditionFailed               requires unmet / dependents still done
    │   ├── PhaseConflict                    compare-and-swap lost, live owner
    │   └── LockHeld                         cluster lock or coordinator lock taken
    ├── StoreError                   exit 1  (the store failed; state is unchanged)
    │   └── StoreUnavailable                 transient: connection refused, timeout
    ├── LeaseExpired                 exit 1  (our own lease is gone; stop writing)
    ├── EventLogError                exit 1  (the event log cannot be written: disk full…)
    ├── ExecutionError               exit 1  (an executor's effect failed; carries its output tail)
    │   └── PhaseTimeout                     the phase ran past its timeout
    ├── OperationFailed              exit 1  (a phase failed; the operation is resumable)
    └── Relayed                      exit as told (a background driver's own end, relayed)

    Interrupted (a KeyboardInterrupt) exit 128+signal: SIGINT (Ctrl-C), SIGTERM or SIGHUP
    stopped the command; running phases were stopped and recorded interrupted.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_REFUSED = 3


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (file, field path) and what was expected."""

    message: str
    file: str | None = None
    field: str | None = None
    phase: str | None = None

    def render(self) -> str:
        where = ": ".join(p for p in (self.file, self.field) if p)
        subject = f"phase {self.phase}: " if self.phase else ""
        return f"{where}: {subject}{self.message}" if where else f"{subject}{self.message}"


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""

    exit_code = EXIT_FAILED

    def __init__(
        self,
        message: str,
        *,
        operation_id: str | None = None,
        phase_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.operation_id = operation_id
        self.phase_id = phase_id
        self.hint = hint

    def render(self) -> str:
        """The text an operator sees: the message, then the hint on its own line."""
        text = self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class InputError(EngineError):
    """Bad input. Carries every problem found so the user can fix them in one go."""

    exit_code = EXIT_INVALID

    def __init__(
        self,
        message: str,
        problems: Iterable[Problem] = (),
        **kwargs: object,
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.problems: tuple[Problem, ...] = tuple(problems)

    def render(self) -> str:
        lines = [self.message]
        lines.extend(f"  - {p.render()}" for p in self.problems)
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class PlanError(InputError):
    """The plan file or the plan built from templates is invalid."""


class ManifestError(InputError):
    """The image manifest (app.yaml) is invalid."""


class ValuesError(InputError):
    """A values file or a --set expression is malformed."""


class InventoryError(InputError):
    """The node inventory does not parse or does not match the manifest."""


class StoreConfigError(InputError):
    """The store URL, credentials, TLS files or prefix are wrong: retrying will not help."""


class NotFound(InputError):
    """An operation or phase named by the user does not exist."""


class OperationExists(InputError):
    """The user asked for an operation ID the store already holds (`--id`, or a copy
    without --force); nothing was written. Not a lock: no waiting frees that ID."""


class Refused(EngineError):
    """A rule, a live owner or a lock refused the action; nothing was changed."""

    exit_code = EXIT_REFUSED


class PreconditionFailed(Refused):
    """The phase may not run (or roll back) yet; `blockers` names the phases in the way."""

    def __init__(self, message: str, blockers: Iterable[str] = (), **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.blockers: tuple[str, ...] = tuple(blockers)


class PhaseConflict(Refused):
    """Someone else changed the phase first (compare-and-swap lost) or still owns it."""


class LockHeld(Refused):
    """The cluster lock or an operation's coordinator lock is held by someone else."""

    def __init__(self, message: str, holder: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.holder = holder


class StoreError(EngineError):
    """The store failed; the write did not happen."""


class StoreUnavailable(StoreError):
    """A transient store failure (connection refused, timeout, leader change): retry."""


class LeaseExpired(EngineError):
    """This process's lease is gone, so its claims are void; it must stop writing."""


class EventLogError(EngineError):
    """The event log file cannot be written (read-only, disk full): the run stops, since
    what it does could no longer be explained afterwards."""


class OperationFailed(EngineError):
    """A phase failed with its retries exhausted; the operation is left resumable."""


class Relayed(EngineError):
    """How a background driver's run ended, told by the command that follows it: the same
    message, hint and exit code the driver had."""

    def __init__(self, message: str, *, exit_code: int, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.exit_code = exit_code


class ExecutionError(EngineError):
    """An executor's effect failed; `tail` holds the last lines of its output."""

    def __init__(self, message: str, tail: str = "", *, retryable: bool = True,
                 **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.tail = tail
        self.retryable = retryable


class PhaseTimeout(ExecutionError):
    """A phase ran past its `timeout`; its work was stopped."""


class Interrupted(KeyboardInterrupt):
    """A signal that ends a command the way Ctrl-C does (SIGTERM from `kill` or `systemctl
    stop`, SIGHUP from a dropped SSH session): running phases are stopped and recorded."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def reason(self) -> str:
        """How the phases it stopped are recorded."""
        if self.signum == signal.SIGINT:
            return "interrupted by the operator (Ctrl-C)"
        return f"interrupted: {self.name}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def interruption(exc: BaseException) -> Interrupted:
    """A KeyboardInterrupt as an Interrupted (plain Ctrl-C is SIGINT)."""
    return exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
