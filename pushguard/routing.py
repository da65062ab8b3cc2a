"""Routing: which provider takes a message now.

Each channel has providers in failover order. A provider whose circuit is open is skipped; the
provider that just failed a message is tried last for that message. When no provider of the
channel can take a message, it waits until the first circuit may close again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from pushguard.circuit import Breaker, BreakerState
from pushguard.config import BreakerConfig
from pushguard.providers.base import Delivery, Provider


class Router:
    def __init__(
        self,
        channels: Mapping[str, Sequence[Provider]],
        breaker_config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self.channels = {ch: list(ps) for ch, ps in channels.items()}
        self.breaker_config = breaker_config
        self.clock = clock
        self.on_change = on_change
        self.breakers: dict[str, Breaker] = {}

    def breaker(self, key: str) -> Breaker:
        b = self.breakers.get(key)
        if b is None:
            b = Breaker(key, self.breaker_config, clock=self.clock, on_change=self.on_change)
            self.breakers[key] = b
        return b

    def providers(self, channel: str) -> list[Provider]:
        return self.channels.get(channel, [])

    def _ordered(self, channel: str, avoid: str | None) -> list[Provider]:
        ps = self.providers(channel)
        if avoid is None:
            return ps
        return [p for p in ps if p.name != avoid] + [p for p in ps if p.name == avoid]

    def choose(
        self, delivery: Delivery, avoid: str | None = None
    ) -> tuple[Provider, Breaker] | None:
        for p in self._ordered(delivery.channel, avoid):
            b = self.breaker(p.breaker_key(delivery))
            if b.allow():
                return p, b
        return None

    def can_fail_over(self, delivery: Delivery, current: Provider) -> bool:
        return any(
            p is not current and self.breaker(p.breaker_key(delivery)).available()
            for p in self.providers(delivery.channel)
        )

    def wait_seconds(self, delivery: Delivery) -> float:
        """How long until some provider of the channel may take this message."""
        now = self.clock()
        waits = [
            max(0.0, self.breaker(p.breaker_key(delivery)).reopens_at() - now)
            for p in self.providers(delivery.channel)
        ]
        return min(waits) if waits else 60.0
