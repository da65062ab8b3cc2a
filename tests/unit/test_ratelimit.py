from __future__ import annotations

from pushguard.ratelimit import KeyedLimiter, TokenBucket


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_bucket_allows_burst_then_paces_at_rate() -> None:
    clock = Clock()
    b = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [b.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = b.take()
    assert 0.49 < wait <= 0.5
    clock.t += 0.5
    assert b.take() == 0.0
    clock.t += 100
    assert [b.take() for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refills only up to burst


def test_keys_have_separate_buckets_and_zero_rate_is_off() -> None:
    limiter = KeyedLimiter(rate=1.0, burst=1)
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    assert limiter.take("b") == 0.0
    off = KeyedLimiter(rate=0, burst=0)
    assert all(off.take("a") == 0.0 for _ in range(100))
