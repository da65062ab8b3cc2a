from __future__ import annotations

from pushguard.circuit import Breaker, BreakerState
from pushguard.config import BreakerConfig


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def breaker(**kw: float) -> tuple[Breaker, Clock]:
    clock = Clock()
    cfg = BreakerConfig(**{"consecutive": 3, "open_seconds": 5.0, "max_open_seconds": 40.0,
                           **kw})  # type: ignore[arg-type]
    return Breaker("p", cfg, clock=clock), clock


def test_opens_after_consecutive_failures_and_blocks_calls() -> None:
    b, _ = breaker()
    for _ in range(2):
        b.failure()
    assert b.state is BreakerState.CLOSED and b.allow()
    b.failure()
    assert b.state is BreakerState.OPEN and not b.allow() and not b.available()


def test_failure_ratio_trips_even_without_a_streak() -> None:
    b, _ = breaker(consecutive=100, min_calls=6, failure_ratio=0.5)
    for ok in (True, False, True, False, True, False):
        b.success() if ok else b.failure()
    assert b.state is BreakerState.OPEN


def test_half_open_lets_one_probe_and_closes_on_success() -> None:
    b, clock = breaker()
    for _ in range(3):
        b.failure()
    clock.t += 5.0
    assert b.allow()  # the probe
    assert b.state is BreakerState.HALF_OPEN
    assert not b.allow()  # only one at a time
    b.success()
    assert b.state is BreakerState.CLOSED and b.allow()


def test_failed_probe_reopens_for_longer_up_to_the_cap() -> None:
    b, clock = breaker()
    for _ in range(3):
        b.failure()
    waits = []
    for _ in range(5):
        clock.t = b.reopens_at()
        assert b.allow()
        b.failure()
        waits.append(b.open_for)
    assert waits == [10.0, 20.0, 40.0, 40.0, 40.0]


def test_retry_after_pause_opens_for_at_least_that_long() -> None:
    b, clock = breaker()
    b.failure(pause=12.0)
    assert b.state is BreakerState.OPEN and b.open_for == 12.0
    clock.t += 11.9
    assert not b.allow()
    clock.t += 0.2
    assert b.allow()


def test_state_changes_are_reported() -> None:
    seen: list[tuple[str, str]] = []
    b, clock = breaker()
    b.on_change = lambda key, old, new: seen.append((old.value, new.value))
    for _ in range(3):
        b.failure()
    clock.t += 5
    b.allow()
    b.success()
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
