"""Retry the failed: after a campaign completed with some recipients refused by the primary
provider for good (550 5.7.1: CONTENT_REJECTED, permanent, so no automatic failover), a retry
of that cause through the backup sends to exactly those recipients, once each, through the
backup; the delivered are not sent again; a second retry finds nothing left (Conflict)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from pushguard.audience.models import TopicIn
from pushguard.campaigns import fanout
from pushguard.campaigns.models import CampaignIn
from pushguard.campaigns.runner import Runner
from pushguard.exceptions import Conflict, InputError
from pushguard.templates.models import TemplateIn
from tests.campaigns.kit import (
    SENDER,
    Relay,
    World,
    add_contacts,
    audit_actions,
    campaign_messages,
    make_app,
    recipients_of,
    webhook_template,
    work_until,
    world,
)
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(120)

HTML = ('<p>Hello {{ contact.attributes.first_name }}</p>'
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a>')


async def test_retry_the_rejected_through_the_backup_only_once(tmp_path: Path) -> None:
    relays = {"primary": {"rates": {"403": 0.5}, "seed": 11}, "backup": {}}
    with world(tmp_path, relays=relays, order=["primary", "backup"]) as w:
        w.topic("news")
        w.template("newsletter", HTML)
        w.contacts(40)
        w.contacts(3, prefix="dead")  # the primary says these addresses do not exist
        c = w.campaign(auto_pause={"enabled": False})
        cid = c["id"]
        w.app.campaigns.start(cid, actor="test", override="the test expects failures")
        assert await w.deliver(cid) == "completed"

        primary, backup = w.relays["primary"], w.relays["backup"]
        delivered = Counter(primary.recipients)
        assert set(delivered.values()) == {1}
        assert backup.recipients == [], "a permanent refusal must not fail over by itself"
        rows = campaign_messages(w.app, cid)
        causes = Counter(r.last_cause for r in rows if r.state == "failed")
        rejected = {r.to_addr for r in rows if r.last_cause == "CONTENT_REJECTED"}
        assert causes["INVALID_RECIPIENT"] == 3
        assert 5 <= len(rejected) <= 35, causes  # the seeded coin gives some of each
        assert {r.to_addr for r in rows if r.state == "delivered"} == set(delivered)
        assert len(delivered) + len(rejected) + 3 == 43

        with pytest.raises(InputError) as bad:
            w.app.campaigns.retry_failed(cid, actor="test", via="nope")
        assert bad.value.field == "via"

        got = w.app.campaigns.retry_failed(cid, actor="alice", causes=["CONTENT_REJECTED"],
                                           via="backup")
        assert got["retrying"] == len(rejected) and got["round"] == 1
        assert got["state"] == "sending"
        assert got["retries"][0]["via"] == "backup" and got["retries"][0]["recipients"] == \
            len(rejected)
        assert await w.deliver(cid) == "completed"

        assert Counter(backup.recipients) == Counter({a: 1 for a in rejected})
        assert Counter(primary.recipients) == delivered, "the delivered were sent again"
        progress = w.app.campaigns.progress(cid)
        # messages: the round-0 refusals still count as failed; people: all but the 3 dead
        assert progress["reached"] == 40 == len(delivered) + len(rejected)
        assert progress["failed"] == len(rejected) + 3
        retried = [r for r in campaign_messages(w.app, cid) if r.created_at > rows[-1].created_at]
        assert len(retried) == len(rejected)
        assert {r.last_provider for r in retried} == {"backup"}
        assert {r.state for r in retried} == {"delivered"}
        recs = recipients_of(w.app, cid)
        assert Counter(r.round for r in recs) == {0: 43 - len(rejected), 1: len(rejected)}
        assert all(r.state == "enqueued" for r in recs)

        with pytest.raises(Conflict, match="no failed recipient"):
            w.app.campaigns.retry_failed(cid, actor="alice", causes=["CONTENT_REJECTED"],
                                         via="backup")
        assert ("campaign.retry", {"round": 1, "causes": ["CONTENT_REJECTED"], "via": "backup",
                                   "recipients": len(rejected)}) in audit_actions(w.app, cid)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def w(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    with world(tmp_path, database_url=url) as got:
        got.topic("news")
        got.template("newsletter", HTML)
        yield got


def _fail_all(w: World, cid: str, cause: str = "CONTENT_REJECTED") -> None:
    with w.app.store._write() as conn:  # type: ignore[attr-defined]
        conn.execute(text("UPDATE messages SET state = 'failed', last_cause = :cause, "
                          "last_provider = 'primary', attempts = 1 WHERE campaign_id = :c"),
                     {"c": cid, "cause": cause})


def test_a_retry_while_the_runner_finishes_is_not_lost(
        w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner has counted nothing pending and nothing live, and is about to mark the
    campaign completed; a retry commits in between. The retried recipients must still be
    sent: the campaign may not end up completed with recipients pending."""
    w.contacts(5)
    cid = w.campaign()["id"]
    c = w.app.campaigns
    c.start(cid, actor="t")
    fanout.snapshot(c, c.find(cid))
    fanout.fan_out(c, cid)
    _fail_all(w, cid)  # every message failed; the campaign is still "sending"

    store = c.store
    real = store._write
    counted, go = threading.Event(), threading.Event()

    @contextmanager
    def write() -> Iterator[Any]:
        with real() as conn:
            if threading.current_thread() is runner_thread:
                yield _PauseBeforeUpdate(conn, counted, go)
            else:
                yield conn

    monkeypatch.setattr(store, "_write", write)
    done: list[bool] = []
    runner_thread = threading.Thread(target=lambda: done.append(Runner(c).finish_if_done(cid)))
    runner_thread.start()
    assert counted.wait(20)
    errors: list[BaseException] = []

    def retry() -> None:
        try:
            c.retry_failed(cid, actor="t")
        except BaseException as exc:  # reported below
            errors.append(exc)

    retrier = threading.Thread(target=retry)
    retrier.start()
    retrier.join(1.0)  # it either waits for the runner (right) or commits meanwhile
    go.set()
    runner_thread.join(20)
    retrier.join(20)
    assert not errors, errors
    row = c.find(cid)
    pending = sum(1 for r in recipients_of(w.app, cid) if r.state == "pending")
    assert pending == 5
    assert row.state == "sending", f"{row.state} with {pending} recipients pending"
    monkeypatch.undo()
    Runner(c).tick()
    assert sum(1 for r in recipients_of(w.app, cid) if r.state == "pending") == 0


class _PauseBeforeUpdate:
    """A connection that stops before its first UPDATE until told to go."""

    def __init__(self, conn: Any, counted: threading.Event, go: threading.Event) -> None:
        self.conn, self.counted, self.go = conn, counted, go

    def execute(self, stmt: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(stmt, "is_update", False) and not self.counted.is_set():
            self.counted.set()
            assert self.go.wait(20)
        return self.conn.execute(stmt, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def sent(w: World) -> tuple[Any, str, dict[str, Any]]:
    """A campaign started and fanned out: the service, its id, its messages by contact."""
    cid = w.campaign()["id"]
    c = w.app.campaigns
    c.start(cid, actor="t")
    Runner(c).tick()
    return c, cid, {r.contact_id: r for r in campaign_messages(w.app, cid)}


def test_retry_skips_who_was_reached_and_filters_by_cause(w: World) -> None:
    ids = w.contacts(6)
    c, cid, rows = sent(w)
    with c.store._write() as conn:
        for i, cid_ in enumerate(ids):
            state, cause = [("delivered", None), ("failed", "CONTENT_REJECTED"),
                            ("dead", "PROVIDER_UNAVAILABLE"), ("expired", "EXPIRED"),
                            ("failed", "INVALID_RECIPIENT"), ("suppressed", "NO_CONSENT")][i]
            conn.execute(text("UPDATE messages SET state = :s, last_cause = :c WHERE id = :m"),
                         {"s": state, "c": cause, "m": rows[cid_].id})
    assert Runner(c).finish_if_done(cid)
    assert c.find(cid).state == "completed"
    with pytest.raises(Conflict):
        c.retry_failed(cid, actor="t", causes=["RATE_LIMITED"])
    got = c.retry_failed(cid, actor="t", causes=["PROVIDER_UNAVAILABLE", "EXPIRED"])
    assert got["retrying"] == 2 and got["state"] == "sending"
    assert {r.contact_id for r in recipients_of(w.app, cid) if r.state == "pending"} == \
        {ids[2], ids[3]}
    Runner(c).tick()
    got = c.retry_failed(cid, actor="t")  # the rest that failed: content and address
    assert got["retrying"] == 2 and got["round"] == 2
    assert {r.contact_id for r in recipients_of(w.app, cid) if r.state == "pending"} == \
        {ids[1], ids[4]}


async def test_a_recipient_whose_fallback_is_on_its_way_is_not_retried(
        tmp_path: Path, webhook_secret: str) -> None:
    """Email, then webhook. The relay refuses the email for good, so the webhook leg starts;
    its endpoint is down for now (it waits for a retry). Retrying the failed must not send
    this recipient a second email while their webhook leg may still reach them."""
    with Relay({"rates": {"403": 1.0}}) as relay:
        app = make_app(tmp_path, webhook_secret=webhook_secret, config=f"""
[channels.email]
providers = ["primary"]
[channels.webhook]
providers = ["hook"]
[providers.primary]
type = "smtp"
host = "127.0.0.1"
port = {relay.port}
security = "none"
from = "{SENDER}"
[providers.hook]
type = "webhook"
[retry]
base = 5
cap = 10
[breaker]
consecutive = 1000
min_calls = 1000
""")
        try:
            app.audience.put_topic(TopicIn(name="orders", kind="transactional"))
            down = f"http://127.0.0.1:{free_port()}/hook"
            add_contacts(app, [{"external_id": f"x{i}", "attributes": {"first_name": "X"},
                                "addresses": [{"channel": "email", "address": f"x{i}@example.com"},
                                              {"channel": "webhook", "address": down}]}
                               for i in range(3)])
            app.templates.create(TemplateIn(name="mail", channel="email", content={
                "subject": "Hi", "text": "Hello {{ contact.attributes.first_name }}"}),
                actor="t")
            webhook_template(app, "hook")
            c = app.campaigns.create(CampaignIn.model_validate({
                "name": "chain", "topic": "orders", "auto_pause": {"enabled": False},
                "channels": [{"channel": "email", "template": "mail"},
                             {"channel": "webhook", "template": "hook"}]}), actor="t")
            cid = c["id"]
            app.campaigns.start(cid, actor="t", override="test")

            def legs_waiting() -> bool:
                rows = campaign_messages(app, cid)
                return sum(1 for r in rows if r.channel == "webhook"
                           and r.state == "retry_scheduled") == 3

            assert await work_until(app, legs_waiting, timeout=30)
            rows = campaign_messages(app, cid)
            assert Counter((r.channel, r.state) for r in rows) == {
                ("email", "failed"): 3, ("webhook", "retry_scheduled"): 3}
            with pytest.raises(Conflict):
                app.campaigns.retry_failed(cid, actor="t")
            assert {r.state for r in recipients_of(app, cid)} == {"enqueued"}
        finally:
            app.templates.close()
            app.store.close()


def test_a_retry_by_cause_finds_the_messages_that_expired_because_of_it(w: World) -> None:
    """Messages that waited out an outage end EXPIRED; a retry of the outage's victims
    (--cause PROVIDER_OUTAGE) must find them by the cause on their attempts."""
    from pushguard.store.schema import attempts

    ids = w.contacts(3)
    c, cid, rows = sent(w)
    with c.store._write() as conn:
        for cid_, cause in zip(ids, ["PROVIDER_OUTAGE", "NETWORK_TIMEOUT", None], strict=True):
            m = rows[cid_].id
            conn.execute(text("UPDATE messages SET state = 'expired', last_cause = 'EXPIRED' "
                              "WHERE id = :m"), {"m": m})
            if cause:
                conn.execute(attempts.insert().values(
                    message_id=m, number=1, at=0.0, provider="primary", outcome="failed",
                    cause=cause))
    assert Runner(c).finish_if_done(cid)
    got = c.retry_failed(cid, actor="t", causes=["PROVIDER_OUTAGE"])
    assert got["retrying"] == 1
    assert [r.contact_id for r in recipients_of(w.app, cid) if r.state == "pending"] == [ids[0]]
