"""``why --contact``: why has this person received nothing? On a real store (SQLite and
PostgreSQL) with messages run through the real pipeline and its scripted fake providers, over
HTTP, and through the real CLI.

The :class:`Desk` here is shared by the other diagnosis tests: a real :class:`App` with the
store of the test, a ``fake`` provider per channel, and the few calls the tests repeat.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, update

from pushguard import taxonomy
from pushguard.app import App
from pushguard.audience.gate import RULE_FIX
from pushguard.audience.models import ContactIn, TopicIn
from pushguard.audience.rules import AudiencePolicy
from pushguard.audience.service import ConsentRecord, normalise_contact
from pushguard.config import Config, ProviderConfig, RetryConfig
from pushguard.diagnosis.lessons import Lessons
from pushguard.diagnosis.recipient import recipient_story
from pushguard.exceptions import NotFound
from pushguard.models import Accepted, Attempt, Failure, NewMessage, Outcome
from pushguard.settings import Settings
from pushguard.states import State
from pushguard.store.schema import campaign_recipients, campaigns, messages
from pushguard.store.sql import SQLStore
from tests.acceptance.conftest import CLI
from tests.conftest import serve_api

CHANNELS = {"email": "mailer", "sms": "texter", "webhook": "hooker"}
CONTENT = {"email": {"subject": "Spring sale", "text": "20 % off"}, "sms": {"text": "Sale!"},
           "webhook": {"n": 1}}


class Desk:
    """A real app over the test's store; one scripted ``fake`` provider per channel."""

    def __init__(self, store: SQLStore, script: dict[str, list[str]] | None = None,
                 policy: AudiencePolicy | None = None) -> None:
        options = {"script": script or {}}
        config = Config(
            channels={ch: (name,) for ch, name in CHANNELS.items()},
            providers={name: ProviderConfig(name, "fake", options)
                       for name in CHANNELS.values()},
            retry=RetryConfig(base=0.01, cap=0.05), audience=policy or AudiencePolicy())
        self.store = store
        self.app = App(settings=Settings(secret_key="test-key"), store=store, config=config)

    def topic(self, name: str, kind: str = "marketing", **kw: Any) -> None:
        self.app.audience.put_topic(TopicIn(name=name, kind=kind, **kw))

    def contact(self, ext: str, **addresses: str) -> str:
        c = ContactIn.model_validate({"external_id": ext, "addresses": [
            {"channel": ch, "address": a} for ch, a in addresses.items()]})
        (res,) = self.app.audience.upsert([normalise_contact(c, self.app.guard)])
        return res.id

    def consent(self, cid: str, topic: str, channel: str, status: str,
                source: str = "form") -> None:
        self.app.audience.record_consent([ConsentRecord(cid, topic, channel, status, source,
                                                        time.time(), proof="form 7")])

    def send(self, to: str, channel: str = "email", n: int = 1, **kw: Any) -> list[str]:
        res = self.store.enqueue([NewMessage(channel, to, dict(CONTENT[channel]), **kw)
                                  for _ in range(n)], scope="t")
        assert all(isinstance(r, Accepted) for r in res)
        return [r.id for r in res if isinstance(r, Accepted)]

    def deliver(self, rounds: int = 8) -> None:
        """Worker cycles through the real pipeline until nothing is left to try soon."""
        async def run() -> None:
            pipeline = self.app.build_pipeline(self.app.build_providers())
            for _ in range(rounds):
                jobs = self.store.claim("w", 500, 30)
                if jobs:
                    self.store.record("w", [await pipeline.process(j) for j in jobs])
                elif not self.store.stats().by_state.get("retry_scheduled"):
                    return
                else:
                    await asyncio.sleep(0.06)

        asyncio.run(run())

    def settle(self, plan: dict[str, tuple[State, str | None, str]]) -> None:
        """Record outcomes directly through the store: ``id -> (state, cause, provider)``;
        claimed messages not in ``plan`` are delivered by ``mailer``."""
        now = time.time()
        outcomes = []
        for job in self.store.claim("s", 10_000, 30):
            state, cause, provider = plan.get(job.id, (State.DELIVERED, None, "mailer"))
            failure = attempt = None
            if cause is not None:
                c = taxonomy.get(cause)
                expl, fix = taxonomy.describe(c, provider=provider, detail="test")
                failure = Failure(cause, c.transient, cause.lower(), expl, fix, provider)
            attempt = Attempt(1, now, provider, "failed" if cause else "delivered",
                              cause=cause, detail="test")
            outcomes.append(Outcome(job.id, state, f"settled {state}", attempt=attempt,
                                    failure=failure, provider=provider))
        self.store.record("s", outcomes)

    def backdate(self, ids: Sequence[str], seconds: float) -> None:
        with self.store._write() as conn:
            conn.execute(update(messages).where(messages.c.id.in_(list(ids))).values(
                created_at=messages.c.created_at - seconds))

    def campaign(self, name: str, state: str = "completed") -> str:
        cid = f"cmp_{name}"
        with self.store._write() as conn:
            conn.execute(insert(campaigns).values(
                id=cid, name=name, state=state, spec="{}", created_at=time.time(),
                updated_at=time.time(), created_by="tests", recipients=0, round=0))
        return cid

    def recipient(self, campaign_id: str, contact_id: str, state: str, seq: int = 0,
                  detail: str | None = None, message_id: str | None = None) -> None:
        with self.store._write() as conn:
            conn.execute(insert(campaign_recipients).values(
                campaign_id=campaign_id, contact_id=contact_id, seq=seq, due_at=time.time(),
                state=state, round=0, detail=detail, message_id=message_id))

    @contextmanager
    def http(self) -> Iterator[httpx.Client]:
        _, key = self.store.create_api_key("tests")
        with serve_api(self.app) as url, httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
            yield c


def cli_for(url: str, tmp_path: Path) -> CLI:
    """The real CLI as a subprocess, on the test's database."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGUARD_")}
    env.update(PUSHGUARD_DATABASE_URL=url, PUSHGUARD_LOG_FORMAT="json",
               PUSHGUARD_SECRET_KEY="test-key")
    return CLI(env, tmp_path)


def alice(desk: Desk) -> tuple[str, list[str]]:
    """alice withdrew consent to news by email; three newsletters are stopped."""
    desk.topic("news")
    cid = desk.contact("alice", email="alice@example.com")
    desk.consent(cid, "news", "email", "granted")
    desk.consent(cid, "news", "email", "withdrawn", source="unsubscribe")
    return cid, desk.send("alice@example.com", n=3, topic="news", contact_id=cid)


# -- the story -------------------------------------------------------------------------------

def test_withdrawn_consent_is_the_verdict_with_its_fix(store: SQLStore) -> None:
    desk = Desk(store)
    cid, ids = alice(desk)
    story = recipient_story(store, "alice", policy=desk.app.config.audience)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert story["verdict"].startswith(
        "Nothing reached alice this week: 3 `news` messages by email were stopped before "
        f"sending because alice withdrew consent to `news` on email on {today} "
        "(source: unsubscribe")
    assert story["fix"] == RULE_FIX["consent"] and RULE_FIX["consent"] in story["verdict"]
    assert story["messages"] == {"delivered": 0, "failed": 0, "suppressed": 3, "deferred": 0,
                                 "pending": 0, "total": 3}
    (group,) = story["outcomes"]
    assert group["cause"] == "NO_CONSENT" and group["rule"] == "consent"
    assert group["example"] in ids and group["count"] == 3
    (blocked,) = story["obstacles"]["consent_not_granted"]
    assert (blocked["topic"], blocked["channel"], blocked["status"], blocked["source"]) == (
        "news", "email", "withdrawn", "unsubscribe")
    assert story["contact"]["id"] == cid
    assert recipient_story(store, cid, policy=desk.app.config.audience)["messages"] == \
        story["messages"]  # by id as well as by external id


def test_failures_suppressions_caps_and_skipping_campaigns(store: SQLStore) -> None:
    desk = Desk(store, script={"+14155550101": ["UNREGISTERED_TOKEN"]})
    desk.topic("deals", cap="1/1d")
    cid = desk.contact("bob", email="bob@example.com", sms="+14155550101")
    desk.consent(cid, "deals", "email", "granted")
    delivered = desk.send("bob@example.com", topic="deals", contact_id=cid)
    failed = desk.send("+14155550101", channel="sms", contact_id=cid)
    desk.deliver()
    capped = desk.send("bob@example.com", topic="deals", contact_id=cid)
    desk.deliver()
    spring = desk.campaign("spring")
    desk.recipient(spring, cid, "skipped", detail="no active address on channel fcm")
    Lessons(store).add("cause", "UNREGISTERED_TOKEN", "App 4.2 drops tokens on update;\n"
                       "ask users to reopen the app", author="ops")
    story = recipient_story(store, "bob", policy=desk.app.config.audience)
    assert story["verdict"].startswith("1 of 3 messages reached bob this week.")
    assert store.get(capped[0]).state is State.SUPPRESSED  # type: ignore[union-attr]
    assert "frequency cap" in story["verdict"]
    by_id = {g["example"]: g for g in story["outcomes"]}
    sms = by_id[failed[0]]
    assert (sms["outcome"], sms["cause"], sms["provider"]) == ("failed", "UNREGISTERED_TOKEN",
                                                               "texter")
    assert "no longer valid" in sms["because"] and "(UNREGISTERED_TOKEN)" in sms["because"]
    assert [le["note"] for le in sms["lessons"]] == [
        "App 4.2 drops tokens on update;\nask users to reopen the app"]
    assert by_id[delivered[0]]["outcome"] == "delivered"
    assert by_id[capped[0]]["rule"] == "frequency_cap"
    o = story["obstacles"]
    assert [(s["channel"], s["address"]) for s in o["suppressions"]] == [
        ("sms", "+14155550101")]
    assert [(d["channel"], d["address"]) for d in o["deactivated"]] == [
        ("sms", "+14155550101")]
    assert o["active_channels"] == ["email"]
    (cap,) = o["caps"]
    assert (cap["scope"], cap["sent"], cap["reached"]) == ("topic deals", 1, True)
    (skip,) = o["campaigns_skipped"]
    assert (skip["campaign"], skip["detail"]) == ("spring", "no active address on channel fcm")


def test_a_quiet_contact_window_and_quiet_hours(store: SQLStore) -> None:
    now = time.gmtime()
    start = f"{(now.tm_hour - 1) % 24:02d}:00"
    end = f"{(now.tm_hour + 2) % 24:02d}:00"
    desk = Desk(store)
    cid = desk.contact("carol", email="carol@example.com")
    old = desk.send("carol@example.com", contact_id=cid)
    desk.deliver()
    desk.backdate(old, 10 * 86400)
    with store._write() as conn:
        from pushguard.store.schema import contacts

        conn.execute(update(contacts).where(contacts.c.id == cid).values(
            quiet_hours=f"{start}-{end}", timezone="UTC"))
    week = recipient_story(store, "carol", policy=desk.app.config.audience)
    assert week["verdict"] == "No message was sent to carol this week."
    assert week["messages"]["total"] == 0
    (qh,) = week["obstacles"]["quiet_hours"]
    assert (qh["source"], qh["window"], qh["active_now"]) == ("contact", f"{start}-{end}",
                                                              True)
    fortnight = recipient_story(store, "carol", days=14, policy=desk.app.config.audience)
    assert fortnight["verdict"].startswith("1 of 1 messages reached carol in the last 14 days")
    with pytest.raises(NotFound):
        recipient_story(store, "nobody", policy=desk.app.config.audience)


# -- the edges -------------------------------------------------------------------------------

def test_contact_explain_over_http(store: SQLStore) -> None:
    desk = Desk(store)
    alice(desk)
    with desk.http() as http:
        r = http.get("/v1/contacts/alice/explain", params={"days": 7})
        assert r.status_code == 200, r.text
        assert r.json()["verdict"].startswith("Nothing reached alice this week")
        bad = http.get("/v1/contacts/alice/explain", params={"days": 0})
        assert bad.status_code == 422
        assert bad.json()["error"]["fields"][0]["field"] == "days"
        assert http.get("/v1/contacts/nobody/explain").status_code == 404
        assert http.get("/v1/contacts/alice/explain",
                        headers={"Authorization": "Bearer nope"}).status_code == 401


def test_why_contact_through_the_cli(sqlite_url: str, tmp_path: Path) -> None:
    store = SQLStore(sqlite_url)
    store.migrate()
    desk = Desk(store)
    _, ids = alice(desk)
    store.close()
    cli = cli_for(sqlite_url, tmp_path)
    text = cli("why", "--contact", "alice").stdout
    assert text.splitlines()[2].startswith("Nothing reached alice this week: 3 `news`")
    assert "consent withdrawn: news on email (unsubscribe" in text
    data = json.loads(cli("why", "--contact", "alice", "--days", "3", "--json").stdout)
    assert data["days"] == 3 and data["messages"]["suppressed"] == 3
    assert "withdrew consent to news" in cli("why", ids[0]).stdout  # a message id still works
    nobody = cli("why", "--contact", "nobody", check=False)
    assert nobody.returncode == 1 and "no contact 'nobody'" in nobody.stderr
    both = cli("why", ids[0], "--contact", "alice", check=False)
    assert both.returncode == 1 and "ID: give exactly one" in both.stderr
    days = cli("why", "--contact", "alice", "--days", "0", check=False)
    assert days.returncode == 1 and "--days: must be between 1 and 365" in days.stderr
