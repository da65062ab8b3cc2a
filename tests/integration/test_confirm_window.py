"""Channel fallback when a delivered message is not confirmed within its window, or is
reported undelivered by a receipt: the next leg starts, once, and both histories say why."""

from __future__ import annotations

import time

import pytest

from pushguard.app import App
from pushguard.config import Config, ProviderConfig, RetryConfig
from pushguard.exceptions import InputError
from pushguard.models import Accepted, NewMessage
from pushguard.settings import Settings
from pushguard.states import State
from pushguard.store.sql import SQLStore

LEGS = [{"channel": "sms", "to": "+14155550100", "content": {"text": "Your code is 1"}},
        {"channel": "email", "to": "a@example.com",
         "content": {"subject": "Your code", "text": "1"}}]


def make_app(store: SQLStore) -> App:
    config = Config(channels={"fcm": ("push",), "sms": ("push",), "email": ("push",)},
                    providers={"push": ProviderConfig("push", "fake", {})},
                    retry=RetryConfig(base=0.01, cap=0.05))
    return App(settings=Settings(secret_key="k"), store=store, config=config)


async def deliver(app: App) -> None:
    pipeline = app.build_pipeline(app.build_providers())
    jobs = app.store.claim("w", 10, 30)
    app.store.record("w", [await pipeline.process(j) for j in jobs])


def send(app: App, window: int | None = 60) -> str:
    (res,) = app.store.enqueue([NewMessage("fcm", "tok:1", {"title": "t", "body": "b"},
                                           fallback=LEGS, confirm_within=window)], scope="t")
    assert isinstance(res, Accepted)
    return res.id


def expire_window(store: SQLStore, message_id: str) -> None:
    with store._write() as conn:
        conn.exec_driver_sql(
            "UPDATE messages SET confirm_by = 1 WHERE id = "
            + ("%s" if store.dialect == "postgresql" else "?"), (message_id,))


async def test_unconfirmed_delivery_falls_back_once(store: SQLStore) -> None:
    app = make_app(store)
    mid = send(app)
    await deliver(app)
    view = store.get(mid)
    assert view is not None and view.state is State.DELIVERED and view.next_leg_id is None
    assert store.sweep_unconfirmed() == 0  # the window is still open
    expire_window(store, mid)
    assert store.sweep_unconfirmed() == 1
    assert store.sweep_unconfirmed() == 0  # once
    parent = store.get(mid)
    assert parent is not None and parent.next_leg_id is not None
    assert "not confirmed within 60 s: falling back to sms" in parent.history[-1].reason
    child = store.get(parent.next_leg_id)
    assert child is not None and child.channel == "sms" and child.state is State.QUEUED
    assert child.parent_id == mid and len(child.fallback) == 1


async def test_a_confirming_receipt_closes_the_window(store: SQLStore) -> None:
    app = make_app(store)
    mid = send(app)
    await deliver(app)
    view = store.get(mid)
    assert view is not None and view.provider_message_id is not None
    assert store.add_receipt(mid, view.provider_message_id, "receipt: delivered",
                             confirmed=True)
    expire_window(store, mid)  # even a stale sweep finds nothing to do
    assert store.sweep_unconfirmed() == 0
    assert store.get(mid).confirmed_at is not None  # type: ignore[union-attr]


async def test_an_undelivered_receipt_starts_the_next_leg_at_once(store: SQLStore) -> None:
    app = make_app(store)
    mid = send(app, window=None)  # no window: a receipt's failure alone triggers it
    await deliver(app)
    view = store.get(mid)
    assert view is not None
    assert store.add_receipt(mid, view.provider_message_id or "", "receipt: undelivered",
                             cause="UNREGISTERED_TOKEN")
    parent = store.get(mid)
    assert parent is not None and parent.next_leg_id is not None
    assert "reported undelivered (UNREGISTERED_TOKEN)" in parent.history[-1].reason
    # a second failing receipt does not start a second leg
    store.add_receipt(mid, view.provider_message_id or "", "again", cause="UNREGISTERED_TOKEN")
    with store._read() as conn:
        n = conn.exec_driver_sql(
            "SELECT count(*) FROM messages WHERE parent_id = "
            + ("%s" if store.dialect == "postgresql" else "?"), (mid,)).scalar()
    assert n == 1


def test_confirm_within_needs_a_fallback(store: SQLStore) -> None:
    app = make_app(store)
    raw = {"channel": "fcm", "to": "t" * 152, "content": {"title": "t", "body": "b"},
           "confirm_within": 60}
    with pytest.raises(InputError) as err:
        app.intake.prepare(app.intake.parse(raw))
    assert err.value.field == "confirm_within"
    ok = app.intake.prepare(app.intake.parse({**raw, "fallback": LEGS[:1]}))
    assert ok.confirm_within == 60


async def test_the_worker_sweeps(store: SQLStore) -> None:
    import asyncio

    app = make_app(store)
    mid = send(app)
    providers = app.build_providers()
    worker = app.build_worker(providers, poll=0.02, lease=2.0)  # reaper every 0.5 s
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        v = store.get(mid)
        if v is not None and v.state is State.DELIVERED:
            expire_window(store, mid)
            break
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        v = store.get(mid)
        if v is not None and v.next_leg_id and store.get(v.next_leg_id).state is State.DELIVERED:  # type: ignore[union-attr]
            break
    stop.set()
    await task
    v = store.get(mid)
    assert v is not None and v.next_leg_id is not None
    assert store.get(v.next_leg_id).state is State.DELIVERED  # type: ignore[union-attr]


async def test_a_receipt_that_beats_the_outcome_is_held_then_applied(store: SQLStore) -> None:
    """A fast provider calls back before the worker's batched commit: the receipt waits for
    the outcome instead of being lost."""
    from pushguard.models import Attempt, Outcome

    app = make_app(store)
    mid = send(app)
    (job,) = store.claim("w", 10, 30)  # in flight: the provider has it, we have no outcome
    assert store.add_receipt(mid, "prov-1", "receipt from gw: delivered", confirmed=True)
    assert not store.add_receipt("msg_nope", "prov-1", "x")  # unknown messages still fail
    store.record("w", [Outcome(job.id, State.DELIVERED, "delivered via push",
                               attempt=Attempt(1, time.time(), "push", "delivered"),
                               provider="push", provider_message_id="prov-1")])
    view = store.get(mid)
    assert view is not None and view.confirmed_at is not None
    reasons = [t.reason for t in view.history if t.src is None]
    assert reasons == ["receipt from gw: delivered (arrived before the outcome was recorded; "
                       "held)", "receipt from gw: delivered"]
    with store._read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM early_receipts").scalar() == 0


async def test_a_held_receipt_for_another_send_is_dropped(store: SQLStore) -> None:
    from pushguard.models import Attempt, Outcome

    app = make_app(store)
    mid = send(app)
    (job,) = store.claim("w", 10, 30)
    assert store.add_receipt(mid, "someone-else", "forged-looking", cause="INVALID_RECIPIENT",
                             suppress=("", "INVALID_RECIPIENT"))
    store.record("w", [Outcome(job.id, State.DELIVERED, "delivered",
                               attempt=Attempt(1, time.time(), "push", "delivered"),
                               provider="push", provider_message_id="prov-1")])
    view = store.get(mid)
    assert view is not None and view.next_leg_id is None
    assert "did not match" in view.history[-1].reason
    assert store.suppressions() == []


async def test_a_receipt_that_suppresses_deactivates_the_contacts_address(
    store: SQLStore,
) -> None:
    from pushguard.audience.models import ContactIn
    from pushguard.audience.service import normalise_contact

    app = make_app(store)
    c = ContactIn.model_validate({"external_id": "u1", "addresses": [
        {"channel": "sms", "address": "+14155550100"}]})
    (u1,) = app.audience.upsert([normalise_contact(c, app.guard)])
    (res,) = store.enqueue([NewMessage("sms", "+14155550100", {"text": "hi"})], scope="t")
    await deliver(app)
    view = store.get(res.id)  # type: ignore[union-attr]
    assert view is not None and view.state is State.DELIVERED
    assert store.add_receipt(view.id, view.provider_message_id or "", "undelivered: 21211",
                             cause="INVALID_RECIPIENT", suppress=("", "INVALID_RECIPIENT"))
    (addr,) = app.audience.contact(u1.id)["addresses"]
    assert addr["status"] == "deactivated" and addr["status_reason"] == "INVALID_RECIPIENT"
    entries = app.audience.audit(subject="sms:+14155550100")
    assert [e["action"] for e in entries] == ["suppression.added"]
