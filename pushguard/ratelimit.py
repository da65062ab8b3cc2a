"""Token buckets: API rate limits per key now, provider pacing later.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; taking a token
either succeeds or says how long until one is available.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.stamp = self.clock()

    def take(self, n: float = 1.0) -> float:
        """Take ``n`` tokens; returns 0 on success, else the seconds to wait (nothing taken)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate


class KeyedLimiter:
    """One bucket per key (e.g. per API key), safe to use from the API's worker threads."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, n: float = 1.0) -> float:
        if self.rate <= 0:
            return 0.0
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._buckets.clear()  # bounded memory; a reset only forgives a little
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
            return bucket.take(n)
