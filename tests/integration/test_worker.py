"""The worker and pipeline end to end on a real store, with in-package fake providers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from pushguard.app import App
from pushguard.audience.models import TopicIn
from pushguard.config import BreakerConfig, Config, ProviderConfig, RetryConfig
from pushguard.models import NewMessage
from pushguard.providers.fake import FakeProvider
from pushguard.settings import Settings
from pushguard.states import TERMINAL, State, can_move
from pushguard.store.schema import messages
from pushguard.store.sql import SQLStore
from tests.conftest import _truncate


@pytest.fixture
def store(store_url: str) -> Iterator[SQLStore]:
    """conftest's store with relaxed commits, as ``App.worker_store`` builds one for a worker
    process: on SQLite the worker's cycles run inline (``SQLStore.exchange_nowait``), as they
    do in production, and fall back to its DB thread only when the lock is taken."""
    s = SQLStore(store_url, relaxed_commits=True)
    s.migrate()
    _truncate(s)
    yield s
    s.close()


def make_app(store: SQLStore, providers: dict[str, dict[str, Any]], order: list[str]) -> App:
    config = Config(
        channels={"webhook": tuple(order)},
        providers={n: ProviderConfig(n, "fake", opts) for n, opts in providers.items()},
        retry=RetryConfig(base=0.01, cap=0.05, retry_after_cap=0.2),
        breaker=BreakerConfig(consecutive=3, open_seconds=0.3, max_open_seconds=1.0),
    )
    return App(settings=Settings(), store=store, config=config)


def enqueue(store: SQLStore, addresses: list[str], ttl: int = 3600) -> list[str]:
    res = store.enqueue(
        [NewMessage("webhook", a, {"i": i}, ttl=ttl) for i, a in enumerate(addresses)],
        scope="t",
    )
    return [r.id for r in res]  # type: ignore[union-attr]


async def run_until_settled(app: App, ids: list[str], *, timeout: float = 20.0,
                            **kw: float) -> dict[str, Any]:
    providers = app.build_providers()
    worker = app.build_worker(providers, poll=0.02, **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    deadline = time.monotonic() + timeout
    # One query a poll: reading every message's view here would block the loop the worker
    # runs on, for seconds on a slow machine.
    open_ = select(func.count()).select_from(messages).where(
        messages.c.id.in_(ids), messages.c.state.not_in([s.value for s in TERMINAL]))
    assert isinstance(app.store, SQLStore)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        with app.store._read() as conn:
            if not conn.execute(open_).scalar():
                break
    stop.set()
    await task
    return providers


async def test_mixed_outcomes_each_reach_the_right_terminal_state(store: SQLStore) -> None:
    app = make_app(store, {"fake": {"script": {
        "ok": ["ok"],
        "flaky": ["PROVIDER_OUTAGE", "NETWORK_TIMEOUT", "ok"],
        "gone": ["UNREGISTERED_TOKEN"],
        "bad": ["CONTENT_REJECTED"],
        "weird": ["UNKNOWN"],
    }}}, ["fake"])
    ids = enqueue(store, ["ok", "flaky", "gone", "bad", "weird"])
    await run_until_settled(app, ids)
    views = {v.to: v for v in (store.get(i) for i in ids) if v}
    assert views["ok"].state is State.DELIVERED and views["ok"].attempts_count == 1
    assert views["flaky"].state is State.DELIVERED
    assert [a.cause for a in views["flaky"].attempts] == ["PROVIDER_OUTAGE", "NETWORK_TIMEOUT",
                                                          None]
    assert views["gone"].state is State.FAILED
    assert views["gone"].failure.cause == "UNREGISTERED_TOKEN"  # type: ignore[union-attr]
    assert views["bad"].state is State.FAILED
    assert views["weird"].state is State.DEAD  # bounded retries for UNKNOWN
    assert views["weird"].attempts_count == 3
    assert [s.address for s in store.suppressions()] == ["gone"]
    for v in views.values():  # every transition recorded, legal, to one terminal state
        assert v.history[0].src == "accepted"
        assert sum(1 for t in v.history if State(t.dst).terminal) == 1
        assert all(can_move(State(t.src), State(t.dst)) for t in v.history if t.src), v.history


async def test_primary_outage_fails_over_to_backup_and_opens_the_circuit(
    store: SQLStore,
) -> None:
    app = make_app(store, {
        "primary": {"default": "PROVIDER_OUTAGE"},
        "backup": {"default": "ok"},
    }, ["primary", "backup"])
    ids = enqueue(store, [f"r{i}" for i in range(40)])
    providers = await run_until_settled(app, ids, concurrency=4, batch=4)
    views = [store.get(i) for i in ids]
    assert all(v is not None and v.state is State.DELIVERED for v in views)
    assert all(v.last_provider == "backup" for v in views if v)
    primary = providers["primary"]
    assert isinstance(primary, FakeProvider)
    # The open circuit kept most messages away from the broken primary.
    assert len(primary.sent) < 20
    failed_over = [v for v in views if v and v.attempts[0].provider == "primary"]
    assert failed_over and all(v.attempts[1].provider == "backup" for v in failed_over)


async def test_every_provider_down_means_waiting_not_dropping(store: SQLStore) -> None:
    app = make_app(store, {"only": {"default": "PROVIDER_OUTAGE"}}, ["only"])
    ids = enqueue(store, ["a", "b", "c"], ttl=2)
    await run_until_settled(app, ids, timeout=10)
    views = [store.get(i) for i in ids]
    assert all(v is not None and v.state is State.EXPIRED for v in views)
    for v in views:
        assert v is not None and v.failure is not None and v.failure.cause == "EXPIRED"
        assert "PROVIDER_OUTAGE" in v.failure.explanation  # the last cause is carried


async def test_rejected_credentials_hold_messages_until_their_ttl(store: SQLStore) -> None:
    app = make_app(store, {"p": {"default": "AUTH_CREDENTIALS"}}, ["p"])
    ids = enqueue(store, ["x"], ttl=1)
    await run_until_settled(app, ids, timeout=10)
    v = store.get(ids[0])
    assert v is not None and v.state is State.EXPIRED
    assert v.attempts and all(a.cause == "AUTH_CREDENTIALS" for a in v.attempts)


async def test_stop_drains_in_flight_work(store: SQLStore) -> None:
    app = make_app(store, {"slow": {"default": "ok", "delay": 0.3}}, ["slow"])
    ids = enqueue(store, [f"s{i}" for i in range(20)])
    providers = app.build_providers()
    worker = app.build_worker(providers, poll=0.02, concurrency=20, batch=20)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(500):  # wait until claimed and in flight
        if store.stats().by_state.get("sending"):
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    states = {store.get(i).state for i in ids}  # type: ignore[union-attr]
    assert states == {State.DELIVERED}


async def test_high_priority_goes_before_bulk(store: SQLStore) -> None:
    app = make_app(store, {"p": {"default": "ok"}}, ["p"])
    bulk = store.enqueue([NewMessage("webhook", f"b{i}", {}, priority=2) for i in range(30)],
                         scope="t")
    high = store.enqueue([NewMessage("webhook", "h", {}, priority=0)], scope="t")
    ids = [r.id for r in bulk + high]  # type: ignore[union-attr]
    providers = await run_until_settled(app, ids, concurrency=5, batch=5)
    sent = [d.to for d in providers["p"].sent]  # type: ignore[attr-defined]
    assert sent[0] == "h"


async def test_every_outcome_is_recorded_once_under_load(store: SQLStore) -> None:
    """Outcomes finishing while a DB cycle is in progress must not be dropped (they would sit
    in `sending` until their lease expired, then be sent twice)."""
    app = make_app(store, {"p": {"default": "ok", "delay": 0.01}}, ["p"])
    ids = enqueue(store, [f"m{i}" for i in range(600)])
    providers = await run_until_settled(app, ids, timeout=30, concurrency=50, batch=50)
    sent = [d.message_id for d in providers["p"].sent]  # type: ignore[attr-defined]
    assert len(sent) == 600 and set(sent) == set(ids)
    views = [store.get(i) for i in ids]
    assert all(v is not None and v.state is State.DELIVERED for v in views)
    assert not any(a.outcome == "lost" for v in views if v for a in v.attempts)


async def test_fallback_chain_moves_to_the_next_channel_when_a_leg_fails(
    store: SQLStore,
) -> None:
    config = Config(
        channels={"webhook": ("hook",), "sms": ("gateway",), "email": ("mailer",)},
        providers={
            "hook": ProviderConfig("hook", "fake", {"script": {"gone": ["UNREGISTERED_TOKEN"]}}),
            "gateway": ProviderConfig("gateway", "fake", {"default": "INVALID_RECIPIENT"}),
            "mailer": ProviderConfig("mailer", "fake", {}),
        },
        retry=RetryConfig(base=0.01, cap=0.05),
    )
    app = App(settings=Settings(), store=store, config=config)
    app.audience.put_topic(TopicIn(name="otp", kind="transactional"))
    (parent,) = store.enqueue([NewMessage(
        "webhook", "gone", {"e": 1}, topic="otp", priority=0, fallback=[
            {"channel": "sms", "to": "+14155550100", "content": {"text": "code 1"}},
            {"channel": "email", "to": "a@example.com", "content": {"subject": "code 1"}},
        ])], scope="t")
    pid = parent.id  # type: ignore[union-attr]
    chain = [pid]
    for _ in range(2):  # follow the chain as it grows
        await run_until_settled(app, chain, timeout=10)
        nxt = store.get(chain[-1]).next_leg_id  # type: ignore[union-attr]
        if nxt:
            chain.append(nxt)
    await run_until_settled(app, chain, timeout=10)
    first, second, third = (store.get(i) for i in chain)
    assert first is not None and second is not None and third is not None
    assert first.state is State.FAILED and first.next_leg_id == second.id
    assert second.channel == "sms" and second.parent_id == first.id
    assert second.state is State.FAILED and second.failure.cause == "INVALID_RECIPIENT"  # type: ignore[union-attr]
    assert third.channel == "email" and third.state is State.DELIVERED
    assert third.topic == "otp" and third.priority == 0 and third.fallback == []
    assert any("falling back to sms" in t.reason for t in first.history)
    assert third.history[0].reason == f"fallback leg of {second.id}"


async def test_a_paced_provider_reschedules_instead_of_outliving_the_lease(
    store: SQLStore,
) -> None:
    config = Config(channels={"webhook": ("slow",)},
                    providers={"slow": ProviderConfig("slow", "fake", {}, rate=5)},
                    retry=RetryConfig(base=0.01, cap=0.05))
    app = App(settings=Settings(), store=store, config=config)
    ids = enqueue(store, [f"p{i}" for i in range(25)])
    await run_until_settled(app, ids, timeout=30, concurrency=25, batch=25)
    views = [store.get(i) for i in ids]
    assert all(v is not None and v.state is State.DELIVERED for v in views)
    assert all(v.attempts_count == 1 for v in views if v)  # waiting is not an attempt
    assert any(t.reason.startswith("paced: slow allows 5") for v in views if v
               for t in v.history)
