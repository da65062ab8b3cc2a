"""Routing: which provider takes a message now.

Each channel has providers in failover order. A provider whose circuit is open is skipped; the
provider that just failed a message is tried last for that message. When no provider of the
channel can take a message, it waits until the first circuit may close again.

Within a closed circuit, health still matters: a provider whose recent calls fail often (at least
20 % of the last ones) or answer much more slowly than a healthy alternative (3 times slower and
over half a second) moves behind the healthy ones. It still gets one choice in ten, so its
figures follow its recovery; and after a minute without a call it gets its place back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pushguard.circuit import Breaker, BreakerState
from pushguard.config import BreakerConfig
from pushguard.providers.base import Delivery, Provider

#: weight of the newest call in the moving averages
ALPHA = 0.2
MIN_SAMPLES = 5
STALE_AFTER = 60.0
UNHEALTHY_FAILURES = 0.2
SLOW_FACTOR = 3.0
SLOW_FLOOR = 0.5
#: one choice in this many keeps the configured order, so a demoted provider is measured again
PROBE_EVERY = 10


#: an ``avoid_provider`` starting with this names the provider to try first instead
PREFER = "+"


@dataclass
class Health:
    """Moving averages of one provider's recent calls."""

    failures: float = 0.0
    latency: float = 0.0
    samples: int = 0
    last: float = 0.0

    def observe(self, ok: bool, latency: float | None, now: float) -> None:
        if now - self.last > STALE_AFTER:
            self.failures, self.latency, self.samples = 0.0, 0.0, 0
        self.last = now
        self.samples += 1
        a = max(ALPHA, 1.0 / self.samples)  # the first calls weigh fully
        self.failures += a * ((0.0 if ok else 1.0) - self.failures)
        if latency is not None:
            self.latency += a * (latency - self.latency)

    def known(self, now: float) -> bool:
        return self.samples >= MIN_SAMPLES and now - self.last <= STALE_AFTER


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
        self.health: dict[str, Health] = {}
        #: provider -> wall-clock time before which it takes no message (see hold())
        self.holds: dict[str, float] = {}
        self._choices = 0

    def hold(self, provider: str, until: float) -> None:
        """Send nothing through ``provider`` before ``until`` (``time.time()``; a past time lifts
        the hold). A hold is decided outside this process (a person, an alert's failover) and
        applied by every worker; unlike an open circuit it lets no probe through."""
        if until > time.time():
            self.holds[provider] = until
        else:
            self.holds.pop(provider, None)

    def held(self, provider: str) -> float:
        """Seconds left on ``provider``'s hold (0 when it is not held)."""
        until = self.holds.get(provider)
        return max(0.0, until - time.time()) if until is not None else 0.0

    def observe(self, provider: str, ok: bool, latency: float | None = None) -> None:
        """Record one call's outcome for the provider's health (a failure that says nothing
        about the provider, like a bad address, counts as ok)."""
        self.health.setdefault(provider, Health()).observe(ok, latency, self.clock())

    def unhealthy(self, channel: str, provider: Provider) -> str | None:
        """Why ``provider`` should give way to another of the channel now, or None."""
        now = self.clock()
        mine = self.health.get(provider.name)
        if mine is None or not mine.known(now):
            return None
        others = [h for p in self.providers(channel) if p is not provider
                  and (h := self.health.get(p.name)) is not None and h.known(now)
                  and h.failures < UNHEALTHY_FAILURES]
        if mine.failures >= UNHEALTHY_FAILURES:
            return f"{mine.failures:.0%} of its recent calls failed"
        best = min((h.latency for h in others), default=None)
        if best is not None and mine.latency > max(SLOW_FLOOR, SLOW_FACTOR * best):
            return f"answering in {mine.latency:.1f} s, {mine.latency / max(best, 1e-3):.0f}x " \
                   "slower than the alternative"
        return None

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
        if len(ps) > 1 and self.health:
            self._choices += 1
            if self._choices % PROBE_EVERY:
                # healthy first, each group in the configured order (sorted() is stable)
                ps = sorted(ps, key=lambda p: self.unhealthy(channel, p) is not None)
        if avoid is None:
            return ps
        if avoid.startswith(PREFER):  # "+name": that provider first (a retry through it)
            first = avoid[len(PREFER):]
            return [p for p in ps if p.name == first] + [p for p in ps if p.name != first]
        return [p for p in ps if p.name != avoid] + [p for p in ps if p.name == avoid]

    def choose(
        self, delivery: Delivery, avoid: str | None = None
    ) -> tuple[Provider, Breaker] | None:
        for p in self._ordered(delivery.channel, avoid):
            if self.holds and self.held(p.name):
                continue
            b = self.breaker(p.breaker_key(delivery))
            if b.allow():
                return p, b
        return None

    def passed_over(self, delivery: Delivery, chosen: Provider) -> list[str]:
        """Why each provider configured before ``chosen`` did not take the message."""
        out = []
        for p in self.providers(delivery.channel):
            if p is chosen:
                break
            b = self.breakers.get(p.breaker_key(delivery))
            if b is not None and b.state is not BreakerState.CLOSED:
                out.append(f"{p.name}: circuit {b.state.value}")
            elif (why := self.unhealthy(delivery.channel, p)) is not None:
                out.append(f"{p.name}: {why}")
        return out

    def can_fail_over(self, delivery: Delivery, current: Provider) -> bool:
        return any(
            p is not current and not self.held(p.name)
            and self.breaker(p.breaker_key(delivery)).available()
            for p in self.providers(delivery.channel)
        )

    def wait_seconds(self, delivery: Delivery) -> float:
        """How long until some provider of the channel may take this message."""
        now = self.clock()
        waits = [
            max(0.0, self.breaker(p.breaker_key(delivery)).reopens_at() - now,
                self.held(p.name))
            for p in self.providers(delivery.channel)
        ]
        return min(waits) if waits else 60.0
