"""Retry delays from a phase's RetryPolicy, computed with tenacity's wait strategies.
The scheduler keeps its own timers, so a phase waiting to retry blocks nobody.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from engine.model import RetryPolicy

if TYPE_CHECKING:  # imported when a phase fails (tenacity imports asyncio): not at start-up
    import tenacity


def wait_strategy(policy: RetryPolicy) -> tenacity.wait.wait_base:
    """Exponential backoff (initial * factor^(n-1), capped at max) plus random jitter."""
    import tenacity

    base = tenacity.wait_exponential(multiplier=policy.initial, exp_base=policy.factor,
                                     min=0, max=policy.max)
    if policy.jitter <= 0:
        return base
    return base + tenacity.wait_random(0, policy.initial * policy.jitter)


def stop_strategy(policy: RetryPolicy) -> tenacity.stop.stop_base:
    import tenacity

    return tenacity.stop_after_attempt(policy.attempts)


def _state(attempt: int) -> tenacity.RetryCallState:
    import tenacity

    rs = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    rs.attempt_number = attempt
    return rs


def should_retry(policy: RetryPolicy, attempts_made: int) -> bool:
    """True when another attempt is allowed after `attempts_made` tries in this run."""
    return not stop_strategy(policy)(_state(attempts_made))


def delay_after(policy: RetryPolicy, attempts_made: int) -> float:
    """Seconds to wait after the `attempts_made`-th failed try (1-based) before the next."""
    return float(wait_strategy(policy)(_state(attempts_made)))


class RetryTimers:
    """Phases waiting out their retry delay, soonest first (a waiting phase blocks nobody)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []

    def __bool__(self) -> bool:
        return bool(self._heap)

    def push(self, phase_id: str, at: float) -> None:
        heapq.heappush(self._heap, (at, phase_id))

    def next_at(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[str]:
        """The phases whose retry is due at `now`, removed from the timers."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[1])
        return out

    def drain(self) -> list[str]:
        """Every phase still waiting (the run is ending), removed from the timers."""
        out = [phase_id for _, phase_id in self._heap]
        self._heap.clear()
        return out
