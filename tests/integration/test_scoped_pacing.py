"""A 429 about one device, recipient or mail domain slows down that scope only: the next
messages to it wait without a call to the provider, everything else goes on."""

from __future__ import annotations

import time

from pushguard import taxonomy
from pushguard.circuit import BreakerState
from pushguard.config import BreakerConfig, ProviderConfig
from pushguard.exceptions import DeliveryError
from pushguard.models import Job, new_id
from pushguard.pipeline import Pipeline
from pushguard.providers.base import Delivery, Provider, ProviderContext, Receipt
from pushguard.retry import RetryPolicy
from pushguard.routing import Router
from pushguard.settings import Settings
from pushguard.ssrf import OutboundGuard
from pushguard.states import State


class Limited(Provider):
    """Answers 429 for the addresses in ``limited`` (scope ``scope``), 200 otherwise."""

    def __init__(self, scope: str, limited: set[str]) -> None:
        super().__init__(ProviderConfig("relay", "fake", {}),
                         ProviderContext(Settings(), OutboundGuard.from_env("")))
        self.scope, self.limited = scope, limited
        self.calls: list[str] = []

    async def send(self, delivery: Delivery) -> Receipt:
        self.calls.append(delivery.to)
        if delivery.to in self.limited:
            raise DeliveryError(taxonomy.RATE_LIMITED, "slow down", status=429,
                                retry_after=30, scope=self.scope)
        return Receipt(status=200)


def job(to: str, channel: str = "email") -> Job:
    now = time.time()
    return Job(id=new_id(), channel=channel, to=to, content={}, topic=None, priority=1,
               attempts=0, created_at=now, expires_at=now + 3600)


def pipeline(p: Limited, channel: str = "email") -> Pipeline:
    return Pipeline(Router({channel: [p]}, BreakerConfig(consecutive=2)), RetryPolicy())


async def test_a_domain_429_holds_that_domain_only() -> None:
    p = Limited("domain", {"a@slow.example"})
    pipe = pipeline(p)
    first = await pipe.process(job("a@slow.example"))
    assert first.state is State.RETRY_SCHEDULED and first.attempt is not None
    held = await pipe.process(job("B@Slow.Example".lower()))
    assert held.state is State.RETRY_SCHEDULED and held.attempt is None
    assert "rate-limited domain slow.example" in held.reason
    assert held.next_at is not None and 25 < held.next_at - time.time() <= 31
    other = await pipe.process(job("c@fast.example"))
    assert other.state is State.DELIVERED
    assert p.calls == ["a@slow.example", "c@fast.example"]  # b never reached the provider
    # the provider's own breaker is untouched by a recipient's limit
    assert [b.state for b in pipe.router.breakers.values()] == [BreakerState.CLOSED]


async def test_a_device_429_holds_that_device_only() -> None:
    p = Limited("device", {"tok-1"})
    pipe = pipeline(p, "fcm")
    for _ in range(3):
        await pipe.process(job("tok-1", "fcm"))
    assert p.calls == ["tok-1"]  # the two later messages waited
    assert (await pipe.process(job("tok-2", "fcm"))).state is State.DELIVERED


async def test_a_provider_wide_429_is_the_breakers_business() -> None:
    p = Limited("provider", {"a@x.example"})
    pipe = pipeline(p)
    await pipe.process(job("a@x.example"))
    again = await pipe.process(job("b@x.example"))
    assert "rate-limited" not in again.reason  # no scoped hold: the breaker decides
