"""Routing prefers the healthy provider while circuits are still closed, and gives the
unhealthy one its place back once its figures are stale."""

from __future__ import annotations

from pushguard.config import BreakerConfig, ProviderConfig
from pushguard.models import new_id
from pushguard.providers.base import Delivery, ProviderContext
from pushguard.providers.fake import FakeProvider
from pushguard.routing import Router
from pushguard.settings import Settings
from pushguard.ssrf import OutboundGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup() -> tuple[Router, Clock, FakeProvider, FakeProvider]:
    ctx = ProviderContext(Settings(), OutboundGuard.from_env(""))
    a = FakeProvider(ProviderConfig("gateway-a", "fake", {}), ctx)
    b = FakeProvider(ProviderConfig("gateway-b", "fake", {}), ctx)
    clock = Clock()
    # a breaker that will not open on these failure rates: health must decide alone
    router = Router({"sms": [a, b]}, BreakerConfig(consecutive=100, failure_ratio=0.9),
                    clock=clock)
    return router, clock, a, b


def delivery() -> Delivery:
    return Delivery(message_id=new_id(), channel="sms", to="+14155550100", content={},
                    topic=None, attempt=1, priority=1, expires_at=2e9)


def test_a_failing_primary_gives_way_and_comes_back_when_its_figures_are_stale() -> None:
    router, clock, a, b = setup()
    assert router.choose(delivery())[0] is a  # type: ignore[index]
    for i in range(10):
        router.observe("gateway-a", ok=i % 2 == 0, latency=0.05)  # half of them fail
        router.observe("gateway-b", ok=True, latency=0.05)
    picks = [router.choose(delivery())[0] for _ in range(20)]  # type: ignore[index]
    assert picks.count(b) == 18 and picks.count(a) == 2  # one choice in ten measures A
    (why,) = router.passed_over(delivery(), b)
    assert why.startswith("gateway-a: ") and why.endswith("% of its recent calls failed")
    assert all(br.state.value == "closed" for br in router.breakers.values())
    clock.now += 61  # a minute without a call to A: it gets its place back
    assert router.choose(delivery())[0] is a  # type: ignore[index]


def test_a_much_slower_primary_gives_way() -> None:
    router, _, a, b = setup()
    for _ in range(6):
        router.observe("gateway-a", ok=True, latency=2.5)
        router.observe("gateway-b", ok=True, latency=0.1)
    picks = [router.choose(delivery())[0] for _ in range(9)]  # type: ignore[index]
    assert picks.count(b) == 9
    (why,) = router.passed_over(delivery(), b)
    assert why.startswith("gateway-a: answering in 2.5 s")


def test_few_samples_or_a_little_slower_change_nothing() -> None:
    router, _, a, _ = setup()
    for _ in range(3):  # too few to judge
        router.observe("gateway-a", ok=False, latency=0.1)
    assert router.choose(delivery())[0] is a  # type: ignore[index]
    router, _, a, _ = setup()
    for _ in range(6):
        router.observe("gateway-a", ok=True, latency=0.3)  # slower, but under the floor
        router.observe("gateway-b", ok=True, latency=0.05)
    assert router.choose(delivery())[0] is a  # type: ignore[index]
