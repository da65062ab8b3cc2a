"""Circuit breakers, one per provider (or per provider and destination).

Closed: calls flow; the last ``window`` outcomes are kept. The breaker opens after
``consecutive`` failures in a row, or when at least ``min_calls`` outcomes are known and the
failure ratio reaches ``failure_ratio``. Open: no calls until ``open_seconds`` have passed (doubling
on each failed probe, up to ``max_open_seconds``). Half-open: one probe at a time; its success
closes the breaker, its failure opens it again.

Only failures whose cause ``trips_breaker`` (network, outage, rate limit) count. An open circuit
makes messages wait or fail over; it never drops them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from pushguard.config import BreakerConfig


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class Breaker:
    key: str
    config: BreakerConfig
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    open_for: float = 0.0
    probing: bool = False
    consecutive: int = 0
    outcomes: deque[bool] = field(default_factory=deque)
    #: called with (key, old state, new state) on every change, for logs and metrics.
    on_change: Callable[[str, BreakerState, BreakerState], None] | None = None

    def _move(self, new: BreakerState) -> None:
        old, self.state = self.state, new
        if old is not new and self.on_change is not None:
            self.on_change(self.key, old, new)

    def reopens_at(self) -> float:
        return self.opened_at + self.open_for

    def allow(self) -> bool:
        """Whether a call may go out now (a half-open breaker lets one probe through)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self.clock() < self.reopens_at():
                return False
            self._move(BreakerState.HALF_OPEN)
            self.probing = False
        if self.probing:
            return False
        self.probing = True
        return True

    def available(self) -> bool:
        """Like :meth:`allow` but without taking the probe slot."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            return self.clock() >= self.reopens_at()
        return not self.probing

    def success(self) -> None:
        self.consecutive = 0
        self._push(True)
        if self.state is not BreakerState.CLOSED:
            self.outcomes.clear()
            self.open_for = 0.0
            self.probing = False
            self._move(BreakerState.CLOSED)

    def failure(self, *, pause: float | None = None) -> None:
        """Count a breaker-worthy failure; ``pause`` (a Retry-After) opens it at least that long."""
        self.consecutive += 1
        self._push(False)
        if self.state is BreakerState.HALF_OPEN:
            self._open(max(self.open_for * 2, self.config.open_seconds), pause)
            return
        if self.state is BreakerState.CLOSED and (self._tripped() or pause):
            self._open(self.config.open_seconds, pause)

    def release(self) -> None:
        """A probe ended without telling us anything about the provider's health."""
        self.probing = False

    def _open(self, seconds: float, pause: float | None) -> None:
        self.open_for = min(max(seconds, pause or 0.0), self.config.max_open_seconds)
        self.opened_at = self.clock()
        self.probing = False
        self._move(BreakerState.OPEN)

    def _push(self, ok: bool) -> None:
        self.outcomes.append(ok)
        while len(self.outcomes) > self.config.window:
            self.outcomes.popleft()

    def _tripped(self) -> bool:
        if self.consecutive >= self.config.consecutive:
            return True
        n = len(self.outcomes)
        if n < self.config.min_calls:
            return False
        return self.outcomes.count(False) / n >= self.config.failure_ratio
