"""The pre-send gate on a real store (SQLite and PostgreSQL): at intake and again at send
time, with the rule that stopped each message recorded and explained."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pushguard.app import App
from pushguard.audience.gate import Item, bump
from pushguard.audience.models import ContactIn, TopicIn
from pushguard.audience.rules import AudiencePolicy, Cap
from pushguard.audience.service import ConsentRecord, normalise_contact
from pushguard.config import Config, ProviderConfig, RetryConfig
from pushguard.explain import explain
from pushguard.models import Accepted, NewMessage
from pushguard.settings import Settings
from pushguard.states import State
from pushguard.store.sql import SQLStore

EMAIL = {"subject": "Spring sale", "text": "20 % off"}


def make_app(store: SQLStore, policy: AudiencePolicy | None = None) -> App:
    config = Config(
        channels={"email": ("mailer",), "sms": ("mailer",)},
        providers={"mailer": ProviderConfig("mailer", "fake", {})},
        retry=RetryConfig(base=0.01, cap=0.05),
        audience=policy or AudiencePolicy(),
    )
    app = App(settings=Settings(secret_key="test-key"), store=store, config=config)
    app.audience.put_topic(TopicIn(name="news", kind="marketing"))
    app.audience.put_topic(TopicIn(name="receipts", kind="transactional"))
    return app


def contact(app: App, ext: str, email: str, **kw: Any) -> str:
    c = ContactIn.model_validate({"external_id": ext, "addresses": [
        {"channel": "email", "address": email}], **kw})
    (res,) = app.audience.upsert([normalise_contact(c, app.guard)])
    return res.id


def consent(app: App, cid: str, status: str, topic: str = "news",
            channel: str = "email") -> None:
    app.audience.record_consent([ConsentRecord(cid, topic, channel, status, "api",
                                               time.time(), proof="form 7")])


def send(app: App, to: str, topic: str | None = "news", **kw: Any) -> Accepted:
    (res,) = app.store.enqueue([NewMessage("email", to, dict(EMAIL), topic=topic, **kw)],
                               scope="t")
    assert isinstance(res, Accepted)
    return res


async def deliver(app: App) -> list[str]:
    """One worker cycle: claim what is due, run it through the pipeline, record it."""
    pipeline = app.build_pipeline(app.build_providers())
    jobs = app.store.claim("w", 100, 30)
    outcomes = [await pipeline.process(j) for j in jobs]
    app.store.record("w", outcomes)
    return [j.id for j in jobs]


async def test_consent_withdrawn_while_queued_stops_the_send(store: SQLStore) -> None:
    app = make_app(store)
    cid = contact(app, "u1", "ann@example.com")
    consent(app, cid, "granted")
    res = send(app, "ann@example.com")
    assert res.state is State.QUEUED  # consent held at intake
    consent(app, cid, "withdrawn")  # ...and was withdrawn while the message waited
    await deliver(app)
    view = store.get(res.id)
    assert view is not None and view.state is State.SUPPRESSED
    assert view.failure is not None and view.failure.cause == "NO_CONSENT"
    assert view.failure.rule == "consent" and view.attempts == []
    assert "withdrew consent to news on email" in view.history[-1].reason
    story = explain(view)
    assert "NO_CONSENT" in str(story) and "withdrew" in str(story)


async def test_no_contact_no_marketing_but_transactional_goes(store: SQLStore) -> None:
    app = make_app(store)
    stranger = send(app, "who@example.com")
    receipt = send(app, "who@example.com", topic="receipts")
    untopical = send(app, "who@example.com", topic=None)
    assert stranger.state is State.SUPPRESSED
    assert receipt.state is State.QUEUED and untopical.state is State.QUEUED
    view = store.get(stranger.id)
    assert view is not None and view.failure is not None
    assert view.failure.rule == "consent" and "no contact holds" in view.failure.explanation
    await deliver(app)
    assert store.get(receipt.id).state is State.DELIVERED  # type: ignore[union-attr]


async def test_pending_confirmation_is_not_consent(store: SQLStore) -> None:
    app = make_app(store)
    cid = contact(app, "u1", "ann@example.com")
    consent(app, cid, "pending")
    res = send(app, "ann@example.com")
    view = store.get(res.id)
    assert view is not None and view.state is State.SUPPRESSED
    assert "has not confirmed" in view.failure.explanation  # type: ignore[union-attr]


def test_unsubscribe_suppression_stops_marketing_only(store: SQLStore) -> None:
    app = make_app(store)
    cid = contact(app, "u1", "ann@example.com")
    consent(app, cid, "granted")
    store.suppress("email", "ann@example.com", "unsubscribe", "one-click")
    assert send(app, "ann@example.com").state is State.SUPPRESSED
    assert send(app, "ann@example.com", topic="receipts").state is State.QUEUED
    store.suppress("email", "bob@example.com", "HARD_BOUNCE", "dsn")
    assert send(app, "bob@example.com", topic="receipts").state is State.SUPPRESSED


def test_deactivated_address_is_not_sent_to(store: SQLStore) -> None:
    app = make_app(store)
    cid = contact(app, "u1", "ann@example.com")
    consent(app, cid, "granted")
    aid = app.audience.contact(cid)["addresses"][0]["id"]
    app.audience.set_address_status(cid, aid, "deactivated", "mailbox closed", "DSN 5.1.1",
                                    actor="test")
    res = send(app, "ann@example.com", topic="receipts")
    view = store.get(res.id)
    assert view is not None and view.state is State.SUPPRESSED
    assert view.failure is not None and view.failure.rule == "address"
    assert "mailbox closed" in view.failure.explanation


def test_erased_contact_stays_suppressed_by_hash(store: SQLStore) -> None:
    app = make_app(store)
    cid = contact(app, "u1", "ann@example.com")
    consent(app, cid, "granted")
    sent = send(app, "ann@example.com", fallback=[
        {"channel": "sms", "to": "+14155550100", "content": {"text": "hi ann@example.com"}}])
    store.suppress("email", "ann@example.com", "manual", "asked by phone", actor="test")
    stopped = send(app, "ann@example.com", topic="receipts")  # its reason quotes the address
    assert stopped.state is State.SUPPRESSED
    store.unsuppress("email", "ann@example.com", actor="test", note="mistake")
    app.audience.erase(cid, actor="test")
    # nothing readable is left: no contact, no address anywhere, not even in free text
    with store._read() as conn:
        dump = " ".join(str(r) for t in ("contacts", "contact_addresses", "suppressions",
                                         "messages", "consent_ledger", "events", "attempts",
                                         "audit_log", "confirmations")
                        for r in conn.exec_driver_sql(f"SELECT * FROM {t}"))
    assert "ann@example.com" not in dump and "sha256:" in dump
    assert "+14155550100" not in dump  # the pending fallback leg is gone too
    assert store.get(sent.id).to.startswith("sha256:")  # type: ignore[union-attr]
    again = send(app, "ann@example.com", topic="receipts")
    assert again.state is State.SUPPRESSED


def _now_window(tz: str) -> str:
    """A quiet window that holds the present moment in ``tz``."""
    from zoneinfo import ZoneInfo

    now = datetime.now(ZoneInfo(tz))
    start = (now - timedelta(minutes=30)).strftime("%H:%M")
    end = (now + timedelta(hours=2)).strftime("%H:%M")
    return f"{start}-{end}"


async def test_quiet_hours_defer_marketing_to_the_local_morning(store: SQLStore) -> None:
    app = make_app(store)
    tz = "Asia/Kolkata"
    cid = contact(app, "u1", "ann@example.com", timezone=tz, quiet_hours=_now_window(tz))
    consent(app, cid, "granted")
    res = send(app, "ann@example.com")
    assert res.state is State.DEFERRED
    view = store.get(res.id)
    assert view is not None and view.failure is not None
    assert view.failure.rule == "quiet_hours" and tz in view.failure.explanation
    assert 2 * 3600 - 120 < view.next_at - time.time() <= 2 * 3600 + 60
    assert await deliver(app) == []  # not due: nothing is claimed during the quiet hours
    # transactional topics do not wait
    assert send(app, "ann@example.com", topic="receipts").state is State.QUEUED


async def test_quiet_hours_at_send_time_defer_again(store: SQLStore) -> None:
    app = make_app(store)
    cid = contact(app, "u1", "ann@example.com", timezone="UTC")
    consent(app, cid, "granted")
    res = send(app, "ann@example.com")
    assert res.state is State.QUEUED
    # the contact's quiet hours begin while the message waits
    c = ContactIn.model_validate({"external_id": "u1", "quiet_hours": _now_window("UTC")})
    app.audience.upsert([normalise_contact(c, app.guard)])
    await deliver(app)
    view = store.get(res.id)
    assert view is not None and view.state is State.DEFERRED and view.attempts == []
    assert view.next_at > time.time() + 3600


async def test_deferred_past_ttl_expires_with_the_reason(store: SQLStore) -> None:
    app = make_app(store)
    cid = contact(app, "u1", "ann@example.com", timezone="UTC")
    consent(app, cid, "granted")
    res = send(app, "ann@example.com", ttl=60)
    c = ContactIn.model_validate({"external_id": "u1", "quiet_hours": _now_window("UTC")})
    app.audience.upsert([normalise_contact(c, app.guard)])
    await deliver(app)
    view = store.get(res.id)
    assert view is not None and view.state is State.EXPIRED
    assert "quiet_hours" in view.history[-1].reason


async def test_topic_cap_and_marketing_cap(store: SQLStore) -> None:
    app = make_app(store, AudiencePolicy(marketing_cap=Cap.parse("3/1d")))
    app.audience.put_topic(TopicIn(name="promo", kind="marketing", cap="1/1d"))
    cid = contact(app, "u1", "ann@example.com")
    consent(app, cid, "granted")
    consent(app, cid, "granted", topic="promo")
    promos = [send(app, "ann@example.com", topic="promo").id for _ in range(2)]
    news = [send(app, "ann@example.com").id for _ in range(3)]
    await deliver(app)
    states = {i: store.get(i) for i in promos + news}
    delivered = [i for i, v in states.items() if v.state is State.DELIVERED]  # type: ignore[union-attr]
    capped = [v for v in states.values() if v.state is State.SUPPRESSED]  # type: ignore[union-attr]
    assert len(delivered) == 3 and len(capped) == 2
    assert all(v.failure.rule == "frequency_cap" for v in capped)  # type: ignore[union-attr]
    assert sum(1 for i in promos if i in delivered) == 1
    # once over the cap, intake already says so
    late = send(app, "ann@example.com")
    assert late.state is State.SUPPRESSED
    assert "3 per day" in store.get(late.id).failure.explanation  # type: ignore[union-attr]
    # transactional messages are never capped
    assert send(app, "ann@example.com", topic="receipts").state is State.QUEUED


def test_caps_hold_under_concurrent_claims(store: SQLStore, store_url: str) -> None:
    app = make_app(store, AudiencePolicy(marketing_cap=Cap.parse("3/1d")))
    cid = contact(app, "u1", "ann@example.com")
    consent(app, cid, "granted")
    ids = [send(app, "ann@example.com").id for _ in range(20)]
    workers = []
    for _ in range(4):
        s = SQLStore(store_url)
        s.configure_audience(AudiencePolicy(marketing_cap=Cap.parse("3/1d")))
        workers.append(s)

    def claim(i: int) -> list[Any]:
        got = []
        for _ in range(10):
            got += workers[i].claim(f"w{i}", 1, 30)  # one at a time: maximum interleaving
        return got

    with ThreadPoolExecutor(4) as pool:
        jobs = [j for part in pool.map(claim, range(4)) for j in part]
    for s in workers:
        s.close()
    assert sorted(j.id for j in jobs) == sorted(ids)
    passed = [j for j in jobs if j.stop is None]
    assert len(passed) == 3, [j.stop for j in jobs]
    assert all(j.stop.rule == "frequency_cap" for j in jobs if j.stop is not None)


def withdraw_elsewhere(store_url: str, app: App, cid: str) -> None:
    """Another process (its own engine, its own cache) records a withdrawal."""
    other = SQLStore(store_url)
    try:
        other_app = App(settings=Settings(secret_key="k"), store=other, config=app.config)
        other_app.audience.record_consent([ConsentRecord(
            cid, "news", "email", "withdrawn", "unsubscribe", time.time())])
    finally:
        other.close()


def test_cache_sees_changes_made_by_another_process(store: SQLStore, store_url: str) -> None:
    app = make_app(store)
    cid = contact(app, "u1", "ann@example.com")
    consent(app, cid, "granted")
    assert send(app, "ann@example.com").state is State.QUEUED
    before = store.gate.misses
    assert send(app, "ann@example.com").state is State.QUEUED
    assert store.gate.misses == before and store.gate.hits > 0  # answered from memory
    withdraw_elsewhere(store_url, app, cid)
    assert send(app, "ann@example.com").state is State.SUPPRESSED


def test_a_rolled_back_transaction_leaves_no_cache_behind(store: SQLStore,
                                                         store_url: str) -> None:
    """A gate check inside a transaction that moved the counter and then rolled back read
    the counter's uncommitted value. If the cache kept it, another process's next change
    (committing that same value) would look like nothing new, and a withdrawal be missed."""
    app = make_app(store)
    cid = contact(app, "u1", "ann@example.com")
    consent(app, cid, "granted")
    assert send(app, "ann@example.com").state is State.QUEUED
    with pytest.raises(RuntimeError), store._write() as conn:
        bump(conn)  # as a cycle that suppressed an address would
        store.gate.check(conn, [Item("m1", "email", "ann@example.com", "news", cid)],
                         time.time(), sending=False)
        raise RuntimeError("disk full")  # ...and then the cycle failed
    withdraw_elsewhere(store_url, app, cid)
    assert send(app, "ann@example.com").state is State.SUPPRESSED


def test_marketing_email_gets_unsubscribe_headers_and_footer(store: SQLStore) -> None:
    from pushguard.audience.links import with_unsubscribe

    app = make_app(store)
    out = with_unsubscribe({"subject": "s", "text": "hi", "html": "<p>hi</p></body>"},
                           app.links, "ctc_1", "news")
    assert out["unsubscribe_url"].startswith("http://127.0.0.1:8000/unsubscribe/")
    assert out["unsubscribe_url"] in out["text"] and "Manage preferences" in out["text"]
    assert out["html"].endswith("</body>") and "Unsubscribe</a>" in out["html"]
    token = out["unsubscribe_url"].rsplit("/", 1)[1]
    assert app.links.verify("unsubscribe", token, 60) == ["ctc_1", "news", "email"]
    placed = with_unsubscribe({"subject": "s", "text": "bye: {{unsubscribe_url}}"},
                              app.links, "ctc_1", "news")
    assert placed["text"] == f"bye: {placed['unsubscribe_url']}"


@pytest.mark.parametrize("field", ["consent", "suppressed", "id"])
def test_contact_bodies_cannot_set_consent_or_ids(field: str) -> None:
    from pushguard.audience.models import guarded
    from pushguard.exceptions import InputError

    with pytest.raises(InputError) as err:
        guarded({"external_id": "u1", field: "x"})
    assert err.value.field == field and "cannot be set here" in err.value.problem


def test_gate_time_is_the_send_time_not_a_frozen_clock() -> None:
    # a guard against a regression where quiet hours were computed in UTC
    from zoneinfo import ZoneInfo

    from pushguard.audience.rules import QuietHours

    q = QuietHours.parse("00:00-23:59")
    now = datetime(2026, 7, 1, 12, tzinfo=UTC).timestamp()
    assert q.next_allowed(now, ZoneInfo("Pacific/Auckland")) is not None


def test_reports_count_gate_stops_by_rule(store: SQLStore) -> None:
    from pushguard.report import summarize

    app = make_app(store, AudiencePolicy(marketing_cap=Cap.parse("1/1d")))
    cid = contact(app, "u1", "ann@example.com", timezone="UTC")
    consent(app, cid, "granted")
    send(app, "who@example.com")  # no consent
    with store._write() as conn:  # one send already counted today
        conn.exec_driver_sql(
            "INSERT INTO contact_sends (contact_id, topic, at, message_id) VALUES "
            + ("(%s, %s, %s, %s)" if store.dialect == "postgresql" else "(?, ?, ?, ?)"),
            (cid, "news", time.time(), "msg_earlier"))
    send(app, "ann@example.com")  # capped
    c = ContactIn.model_validate({"external_id": "u2", "timezone": "UTC",
                                  "quiet_hours": _now_window("UTC"),
                                  "addresses": [{"channel": "email",
                                                 "address": "bo@example.com"}]})
    (u2,) = app.audience.upsert([normalise_contact(c, app.guard)])
    consent(app, u2.id, "granted")
    send(app, "bo@example.com")  # quiet hours
    s = summarize(store.outcomes())
    causes = {cause: (n, fix) for _, cause, n, fix in s.causes()}
    assert causes["NO_CONSENT/consent"][0] == 1
    assert causes["POLICY_SUPPRESSED/frequency_cap"][0] == 1
    assert "cap" in causes["POLICY_SUPPRESSED/frequency_cap"][1]
    assert s.pending == 1 and s.deferred == 1


async def test_a_retried_message_counts_once_against_the_cap(store: SQLStore) -> None:
    app = make_app(store, AudiencePolicy(marketing_cap=Cap.parse("2/1d")))
    app.config = Config(
        channels={"email": ("flaky",)},
        providers={"flaky": ProviderConfig("flaky", "fake", {"script": {
            "ann@example.com": ["PROVIDER_OUTAGE", "PROVIDER_OUTAGE", "ok"]}})},
        retry=RetryConfig(base=0.0, cap=0.0), audience=app.config.audience)
    cid = contact(app, "u1", "ann@example.com")
    consent(app, cid, "granted")
    first = send(app, "ann@example.com")
    pipeline = app.build_pipeline(app.build_providers())
    for _ in range(3):  # two retries, then delivered: three claims of one message
        with store._write() as conn:  # make a retry due now
            conn.exec_driver_sql("UPDATE messages SET next_at = 0 WHERE state = "
                                 "'retry_scheduled'")
        jobs = store.claim("w", 10, 30)
        assert [j.stop for j in jobs] == [None]
        store.record("w", [await pipeline.process(j) for j in jobs])
    assert store.get(first.id).state is State.DELIVERED  # type: ignore[union-attr]
    second = send(app, "ann@example.com")
    assert second.state is State.QUEUED  # 1 of 2 used, not 3 of 2
    jobs = store.claim("w", 10, 30)
    assert [j.id for j in jobs if j.stop is None] == [second.id]
    store.record("w", [await pipeline.process(j) for j in jobs])
    assert send(app, "ann@example.com").state is State.SUPPRESSED  # now 2 of 2


def test_a_shared_address_is_stopped_when_any_holder_withdrew(store: SQLStore) -> None:
    app = make_app(store)
    a = contact(app, "u1", "family@example.com")
    b = contact(app, "u2", "family@example.com")
    consent(app, a, "granted")
    consent(app, b, "granted")
    ok = send(app, "family@example.com")
    assert ok.state is State.QUEUED
    assert store.get(ok.id).contact_id in (a, b)  # type: ignore[union-attr]
    consent(app, b, "withdrawn")
    stopped = send(app, "family@example.com")
    view = store.get(stopped.id)
    assert view is not None and view.state is State.SUPPRESSED
    assert f"contact {b} withdrew" in view.failure.explanation  # type: ignore[union-attr]


async def test_apns_410_timestamp_rule_keeps_a_token_registered_again(store: SQLStore) -> None:
    """Apple: stop pushing to a 410'd token unless the device registered it again after the
    410's timestamp. A dead token is also deactivated on the contact."""
    from pushguard import taxonomy
    from pushguard.exceptions import DeliveryError
    from pushguard.providers.base import Delivery, Provider, ProviderContext, Receipt

    now = time.time()

    class Gone(Provider):
        async def send(self, delivery: Delivery) -> Receipt:
            at = now - 3600 if delivery.to.startswith("a") else now + 3600
            raise DeliveryError(taxonomy.UNREGISTERED_TOKEN, "410 Unregistered",
                                provider_code="Unregistered", status=410,
                                extra={"unregistered_at_ms": int(at * 1000)})

    app = make_app(store)
    fresh, dead = "a" * 64, "b" * 64
    c = ContactIn.model_validate({"external_id": "u1", "addresses": [
        {"channel": "apns", "address": fresh, "last_seen": now - 60},
        {"channel": "apns", "address": dead, "last_seen": now - 60}]})
    (u1,) = app.audience.upsert([normalise_contact(c, app.guard)])
    ids = [r.id for r in store.enqueue(  # type: ignore[union-attr]
        [NewMessage("apns", t, {"title": "t", "body": "b"}, contact_id=u1.id)
         for t in (fresh, dead)], scope="t")]
    from pushguard.config import ProviderConfig as PC
    provider = Gone(PC("gone", "fake", {}), ProviderContext(app.settings, app.guard))
    from pushguard.pipeline import Pipeline
    from pushguard.retry import RetryPolicy
    from pushguard.routing import Router

    pipeline = Pipeline(Router({"apns": [provider]}, app.config.breaker), RetryPolicy())
    jobs = store.claim("w", 10, 30)
    store.record("w", [await pipeline.process(j) for j in jobs])
    kept, gone = (store.get(i) for i in ids)
    assert kept is not None and gone is not None
    assert kept.state is State.FAILED and gone.state is State.FAILED
    assert "token kept: registered again" in kept.history[-1].reason
    supp = {s.address for s in store.suppressions()}
    assert supp == {dead}
    status = {a["address"]: a for a in app.audience.contact(u1.id)["addresses"]}
    assert status[fresh]["status"] == "active"
    assert status[dead]["status"] == "deactivated"
    assert status[dead]["status_reason"] == "UNREGISTERED_TOKEN"


def test_naming_a_contact_does_not_borrow_its_consent_for_another_address(
    store: SQLStore,
) -> None:
    from pushguard.exceptions import InputError

    app = make_app(store)
    alice = contact(app, "alice", "alice@example.com")
    consent(app, alice, "granted")
    raw = {"channel": "email", "to": "bob@example.com", "contact": "alice", "topic": "news",
           "content": EMAIL}
    with pytest.raises(InputError) as err:
        app.intake.prepare(app.intake.parse(raw))
    assert err.value.field == "to" and "not an active email address" in err.value.problem
    ok = app.intake.prepare(app.intake.parse({**raw, "to": "Alice@EXAMPLE.com".lower()}))
    assert ok.contact_id == alice


async def test_a_push_to_all_of_a_contacts_devices_counts_once_against_the_cap(
    store: SQLStore,
) -> None:
    app = make_app(store, AudiencePolicy(marketing_cap=Cap.parse("2/1d")))
    app.config = Config(channels={"fcm": ("push",)},
                        providers={"push": ProviderConfig("push", "fake", {})},
                        audience=app.config.audience)
    app.intake.config = app.config
    tokens = [c * 152 for c in "abc"]
    c = ContactIn.model_validate({"external_id": "u1", "addresses": [
        {"channel": "fcm", "address": t} for t in tokens]})
    (u1,) = app.audience.upsert([normalise_contact(c, app.guard)])
    consent(app, u1.id, "granted", channel="push")
    raw = {"channel": "fcm", "contact": "u1", "topic": "news",
           "content": {"title": "Sale", "body": "20 % off"}}
    for _ in range(3):  # three campaigns, each to three devices
        msg = app.intake.prepare(app.intake.parse(raw))
        assert len(msg.fanout) == 2
        app.intake.submit([msg], scope="t")
        await deliver(app)
    with store._read() as conn:
        states = [r[0] for r in conn.exec_driver_sql(
            "SELECT state FROM messages ORDER BY created_at, id")]
    assert states.count("delivered") == 6  # two pushes reached all three devices
    assert states.count("suppressed") == 3  # the third push, on every device


def test_a_contact_read_by_the_caller_gets_the_verdict_of_a_full_lookup(
    store: SQLStore,
) -> None:
    """A campaign's page passes each contact's rule along (Item.rule) so the gate reads
    neither the contact nor the address's holders again: the verdicts must be the same as
    the gate's own lookups give, for every kind of recipient, and nothing is cached."""
    from sqlalchemy import select

    from pushguard.audience.gate import ContactRule, Item
    from pushguard.store.schema import contacts

    app = make_app(store)
    ids = {
        "granted": contact(app, "g", "g@example.com"),
        "pending": contact(app, "p", "p@example.com"),
        "withdrawn": contact(app, "w", "w@example.com"),
        "never": contact(app, "n", "n@example.com"),
        "quiet": contact(app, "q", "q@example.com", timezone="Asia/Tokyo",
                         quiet_hours=_now_window("Asia/Tokyo")),
        "suppressed": contact(app, "s", "s@example.com"),
        # shares its address with a contact that withdrew: naming the contact decides
        "shared": contact(app, "sh", "w@example.com"),
    }
    for name in ("granted", "quiet", "suppressed", "shared"):
        consent(app, ids[name], "granted")
    consent(app, ids["pending"], "pending")
    consent(app, ids["withdrawn"], "granted")
    consent(app, ids["withdrawn"], "withdrawn")
    store.suppress("email", "s@example.com", "hard_bounce", "test")
    with store._read() as conn:
        rows = {r.id: r for r in conn.execute(select(contacts))}
    address = {"granted": "g@example.com", "pending": "p@example.com",
               "withdrawn": "w@example.com", "never": "n@example.com",
               "quiet": "q@example.com", "suppressed": "s@example.com",
               "shared": "w@example.com"}

    def verdicts(with_rule: bool) -> dict[str, tuple[str, str] | None]:
        items = []
        for name, cid in ids.items():
            r = rows[cid]
            rule = ContactRule.of(cid, r.timezone, r.quiet_hours) if with_rule else None
            items.append(Item(name, "email", address[name], "news", cid, rule=rule))
        with store._read() as conn:
            store.gate.check(conn, items, time.time(), sending=False)
        return {it.id: (it.stop.rule, it.stop.state.value) if it.stop else None
                for it in items}

    cold = verdicts(with_rule=True)
    assert not set(ids.values()) & set(store.gate._c.contacts)  # the rules were not cached
    assert cold == verdicts(with_rule=False)
    assert cold == {"granted": None, "pending": ("consent", "suppressed"),
                    "withdrawn": ("consent", "suppressed"), "never": ("consent", "suppressed"),
                    "quiet": ("quiet_hours", "deferred"),
                    "suppressed": ("suppression", "suppressed"), "shared": None}
