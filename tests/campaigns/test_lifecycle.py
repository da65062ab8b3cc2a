"""Pause, resume and cancel: a pause holds what waits (no worker can claim it) and resumes
with the deadlines moved; a cancel suppresses what waits (POLICY_SUPPRESSED, the reason
recorded) and skips who was not enqueued yet; every illegal transition is a Conflict. A pause
or a cancel that races a fan-out batch never lets the batch through."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import text, update

from pushguard.campaigns import fanout
from pushguard.campaigns.models import CampaignIn
from pushguard.campaigns.runner import Runner
from pushguard.campaigns.service import HELD_AT
from pushguard.exceptions import Conflict
from pushguard.store.schema import campaigns
from tests.campaigns.kit import (
    World,
    audit_actions,
    campaign_messages,
    recipients_of,
    world,
)

pytestmark = pytest.mark.timeout(90)


def html(base: str) -> str:
    return (f'<p>Hello {{{{ contact.attributes.first_name }}}}</p><a href="{base}/ok">Sale</a>'
            f'<a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a>')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def w(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    with world(tmp_path, database_url=url) as got:
        got.topic("news")
        got.template("newsletter", html(got.links.url))
        yield got


def started(w: World, n: int = 30, **spec: Any) -> str:
    w.contacts(n)
    c = w.campaign(**spec)
    assert w.app.campaigns.start(c["id"], actor="test")["state"] in ("sending", "scheduled")
    return str(c["id"])


def claimable(w: World) -> int:
    """What a worker could claim now (claimed for real, under a lease nobody renews)."""
    return len(w.app.store.claim("probe", 1000, 0.01))


def test_pause_holds_the_waiting_and_resume_releases_them(w: World) -> None:
    cid = started(w)
    Runner(w.app.campaigns).tick()  # snapshot and fan out every recipient, send nothing
    assert len(campaign_messages(w.app, cid)) == 30

    paused = w.app.campaigns.pause(cid, reason="legal review", actor="alice")
    assert paused["state"] == "paused" and paused["held"] == 30
    assert paused["paused_reason"] == "legal review (by alice)"
    rows = campaign_messages(w.app, cid)
    assert {r.state for r in rows} == {"queued"} and {r.next_at for r in rows} == {HELD_AT}
    assert claimable(w) == 0
    again = w.app.campaigns.pause(cid, reason="twice", actor="bob")  # idempotent
    assert again["state"] == "paused" and again["paused_reason"] == "legal review (by alice)"
    Runner(w.app.campaigns).tick()  # the runner leaves a paused campaign alone
    assert len(campaign_messages(w.app, cid)) == 30 and claimable(w) == 0

    # the pause lasted 100 s: every deadline moves by as much
    with w.app.store._write() as conn:  # type: ignore[attr-defined]
        conn.execute(update(campaigns).where(campaigns.c.id == cid).values(
            paused_at=time.time() - 100))
    before = {r.id: r.expires_at for r in rows}
    resumed = w.app.campaigns.resume(cid, actor="alice")
    assert resumed["state"] == "sending" and resumed["released"] == 30
    after = campaign_messages(w.app, cid)
    assert all(r.next_at <= time.time() for r in after)
    assert all(100 <= r.expires_at - before[r.id] < 110 for r in after)
    actions = [a for a, _ in audit_actions(w.app, cid)]
    assert actions == ["campaign.create", "campaign.start", "campaign.pause",
                       "campaign.resume"]
    history = w.app.store.get(after[0].id)
    assert history is not None
    reasons = [t.reason for t in history.history]
    assert any("held: campaign paused by alice (legal review)" in r for r in reasons)
    assert any("released: campaign resumed by alice" in r for r in reasons)


async def test_a_resumed_campaign_completes_and_sends_each_once(w: World) -> None:
    cid = started(w, 20)
    Runner(w.app.campaigns).tick()
    w.app.campaigns.pause(cid, reason="wait", actor="test")
    w.app.campaigns.resume(cid, actor="test")
    assert await w.deliver(cid) == "completed"
    got = Counter(w.relays["primary"].recipients)
    assert got == Counter({f"c{i}@example.com": 1 for i in range(20)})
    p = w.app.campaigns.progress(cid)
    assert p["delivered"] == 20 and p["waiting"] == 0 and p["recipients"] == {"enqueued": 20}


def test_cancel_suppresses_the_waiting_and_skips_the_pending(w: World) -> None:
    cid = started(w)
    c = w.app.campaigns
    fanout.snapshot(c, c.find(cid))
    assert fanout.fan_out(c, cid, budget=10) == 10
    got = c.cancel(cid, actor="alice")
    assert got["state"] == "cancelled" and got["stopped"] == 10 and got["skipped"] == 20
    assert got["finished_at"] is not None
    rows = campaign_messages(w.app, cid)
    assert len(rows) == 10 and {r.state for r in rows} == {"suppressed"}
    assert {r.last_cause for r in rows} == {"POLICY_SUPPRESSED"}
    failure = json.loads(rows[0].failure)
    assert failure["cause"] == "POLICY_SUPPRESSED" and "cancelled by alice" in \
        failure["explanation"]
    recs = Counter((r.state, r.detail) for r in recipients_of(w.app, cid))
    assert recs == {("enqueued", None): 10, ("skipped", "campaign cancelled by alice"): 20}
    assert claimable(w) == 0
    Runner(w.app.campaigns).tick()  # nothing moves a cancelled campaign
    assert len(campaign_messages(w.app, cid)) == 10
    p = c.progress(cid)
    assert p["not_sent"] == 10 and p["recipients"] == {"enqueued": 10, "skipped": 20}
    assert ("campaign.cancel", {"stopped": 10, "skipped": 20}) in audit_actions(w.app, cid)
    view = w.app.store.get(rows[0].id)
    assert view is not None and view.history[-1].dst == "suppressed"
    assert view.history[-1].cause == "POLICY_SUPPRESSED"


def test_illegal_transitions_are_conflicts(w: World) -> None:
    w.contacts(3)
    c = w.app.campaigns
    draft = w.campaign()["id"]
    for act in (lambda: c.pause(draft, reason="x", actor="t"),
                lambda: c.resume(draft, actor="t"),
                lambda: c.retry_failed(draft, actor="t")):
        with pytest.raises(Conflict):
            act()
    assert c.find(draft).state == "draft"

    c.start(draft, actor="t")
    spec = CampaignIn.model_validate({k: v for k, v in c.get(draft).items()
                                      if k in ("name", "topic", "channels")})
    for act in (lambda: c.start(draft, actor="t"),
                lambda: c.resume(draft, actor="t"),
                lambda: c.update(draft, spec, actor="t")):
        with pytest.raises(Conflict):
            act()
    c.cancel(draft, actor="t")
    for act in (lambda: c.cancel(draft, actor="t"),
                lambda: c.pause(draft, reason="x", actor="t"),
                lambda: c.resume(draft, actor="t"),
                lambda: c.start(draft, actor="t"),
                lambda: c.retry_failed(draft, actor="t")):
        with pytest.raises(Conflict):
            act()
    assert c.find(draft).state == "cancelled"

    # a draft is cancelled too; a completed campaign is neither cancelled nor paused
    other = w.campaign(name="other")["id"]
    assert c.cancel(other, actor="t")["state"] == "cancelled"
    done = w.campaign(name="done")["id"]
    c.start(done, actor="t")
    Runner(c).tick()
    with c.store._write() as conn:
        conn.execute(text("UPDATE messages SET state = 'delivered' WHERE campaign_id = :c"),
                     {"c": done})
    assert Runner(c).finish_if_done(done)
    for act in (lambda: c.cancel(done, actor="t"),
                lambda: c.pause(done, reason="x", actor="t"),
                lambda: c.resume(done, actor="t")):
        with pytest.raises(Conflict):
            act()
    with pytest.raises(Conflict, match="no failed recipient"):
        c.retry_failed(done, actor="t")


def test_a_paused_scheduled_campaign_resumes_as_scheduled(w: World) -> None:
    w.contacts(3)
    c = w.app.campaigns
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 300 * 86400))
    cid = w.campaign(schedule={"at": later})["id"]
    assert c.start(cid, actor="t")["state"] == "scheduled"
    assert c.pause(cid, reason="x", actor="t")["state"] == "paused"
    assert c.resume(cid, actor="t")["state"] == "scheduled"


def test_a_batch_prepared_before_a_pause_is_not_committed(
        w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fan-out reads its batch, a pause commits, then the batch tries to commit: it must
    not (the campaign is no longer sending), and no recipient is lost for the resume."""
    cid = started(w, 20)
    c = w.app.campaigns
    fanout.snapshot(c, c.find(cid))
    real = c.store.enqueue
    paused = []

    def enqueue(items: Any, *, scope: str, also: Any = None) -> Any:
        if not paused:
            paused.append(c.pause(cid, reason="mid-batch", actor="t"))
        return real(items, scope=scope, also=also)

    monkeypatch.setattr(c.store, "enqueue", enqueue)
    assert fanout.fan_out(c, cid) == 0
    assert campaign_messages(w.app, cid) == []
    assert {r.state for r in recipients_of(w.app, cid)} == {"pending"}
    monkeypatch.undo()
    c.resume(cid, actor="t")
    assert fanout.fan_out(c, cid) == 20
    assert len(campaign_messages(w.app, cid)) == 20


@pytest.mark.parametrize("action", ["pause", "cancel"])
def test_a_pause_or_cancel_racing_a_committing_batch_stops_the_batch_too(
        w: World, monkeypatch: pytest.MonkeyPatch, action: str) -> None:
    """The batch has checked that the campaign is sending and is about to commit; a pause
    (or cancel) starts now. Whichever commits first, no message of the batch may stay
    claimable once the pause (or cancel) has returned."""
    cid = started(w, 20)
    c = w.app.campaigns
    fanout.snapshot(c, c.find(cid))
    real = c.store.enqueue
    checked, go = threading.Event(), threading.Event()

    def enqueue(items: Any, *, scope: str, also: Any = None) -> Any:
        def slow(conn: Any, results: Any) -> None:
            also(conn, results)  # reads the campaign's state (FOR UPDATE on PostgreSQL)
            checked.set()
            assert go.wait(20)
        return real(items, scope=scope, also=slow)

    monkeypatch.setattr(c.store, "enqueue", enqueue)
    batch = threading.Thread(target=fanout.fan_out, args=(c, cid), kwargs={"budget": 20})
    batch.start()
    assert checked.wait(20)
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            if action == "pause":
                c.pause(cid, reason="race", actor="t")
            else:
                c.cancel(cid, actor="t")
        except BaseException as exc:  # reported below
            errors.append(exc)

    stopper = threading.Thread(target=stop)
    stopper.start()
    _wait_blocked(w, stopper)
    go.set()
    batch.join(20)
    stopper.join(20)
    assert not errors, errors
    assert not batch.is_alive() and not stopper.is_alive()
    rows = campaign_messages(w.app, cid)
    live = [r for r in rows if r.state == "queued" and r.next_at < HELD_AT]
    assert live == [], f"{len(live)} of {len(rows)} messages escaped the {action}"
    assert claimable(w) == 0


def _wait_blocked(w: World, thread: threading.Thread) -> None:
    """Until the thread's transaction waits for the batch's (PostgreSQL: a lock wait seen in
    pg_stat_activity; SQLite: the write lock, which serialises them anyway)."""
    if w.app.store.dialect != "postgresql":  # type: ignore[attr-defined]
        thread.join(0.3)
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with w.app.store._read() as conn:  # type: ignore[attr-defined]
            n = conn.execute(text(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()")).scalar_one()
        if n:
            return
        assert thread.is_alive(), "the pause finished while the batch held its locks"
        time.sleep(0.02)
    raise AssertionError("the pause never waited for the batch")


def test_a_contact_erased_after_the_snapshot_is_skipped(w: World) -> None:
    ids = w.contacts(5)
    c = w.campaign()
    cid = c["id"]
    w.app.campaigns.start(cid, actor="t")
    fanout.snapshot(w.app.campaigns, w.app.campaigns.find(cid))
    w.app.audience.erase(ids[2], actor="dpo")
    assert fanout.fan_out(w.app.campaigns, cid) == 5
    rows = campaign_messages(w.app, cid)
    assert len(rows) == 4 and ids[2] not in {r.contact_id for r in rows}
    skipped = [r for r in recipients_of(w.app, cid) if r.state == "skipped"]
    assert [(r.contact_id, r.detail) for r in skipped] == [(ids[2], "the contact was erased")]


def test_a_campaign_the_runner_fails_on_is_paused_and_the_others_go_on(w: World) -> None:
    """A campaign whose step raises (here its stored spec names a template version no
    database holds, as intake allowed before versions were bounded) must not stop the
    runner: the campaign started after it is fanned out at once, and after
    FAILURES_TO_PAUSE ticks in a row the failing one is paused with the error's kind as
    the reason, not its whole text."""
    from pushguard.campaigns.runner import FAILURES_TO_PAUSE

    w.contacts(5)
    bad = w.campaign(name="bad")["id"]
    good = w.campaign(name="good")["id"]
    for cid in (bad, good):
        w.app.campaigns.start(cid, actor="test")
    with w.app.store._write() as conn:
        spec = json.loads(conn.execute(text("SELECT spec FROM campaigns WHERE id = :i"),
                                       {"i": bad}).scalar_one())
        spec["campaign"]["channels"][0]["version"] = 2**63
        conn.execute(update(campaigns).where(campaigns.c.id == bad).values(
            spec=json.dumps(spec)))
    runner = Runner(w.app.campaigns)
    runner.tick()
    assert len(campaign_messages(w.app, good)) == 5
    for _ in range(FAILURES_TO_PAUSE - 2):
        runner.tick()
    assert w.app.campaigns.find(bad).state == "sending"  # not yet: it may have been a fluke
    runner.tick()
    row = w.app.campaigns.find(bad)
    assert row.state == "paused" and "(by runner)" in row.paused_reason
    assert f"failed on this campaign {FAILURES_TO_PAUSE} times in a row (ValidationError: " \
        in row.paused_reason and str(2**63) not in row.paused_reason
    assert "campaign.pause" in [a for a, _ in audit_actions(w.app, bad)]


def test_a_database_error_in_a_step_pauses_nothing(
        w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database error is everybody's (busy, restarted, a pool timeout): the runner logs
    it and tries again on the next tick, however often it happens."""
    from pushguard.campaigns.runner import FAILURES_TO_PAUSE
    from pushguard.exceptions import StoreError

    cid = started(w, 3)
    runner = Runner(w.app.campaigns)
    errors = iter([StoreError("database is locked"),
                   sqlalchemy.exc.TimeoutError("QueuePool limit reached")] * FAILURES_TO_PAUSE)
    real = runner.step

    def flaky(campaign: str) -> None:
        err = next(errors, None)
        if err is not None:
            raise err
        real(campaign)

    monkeypatch.setattr(runner, "step", flaky)
    for _ in range(2 * FAILURES_TO_PAUSE):
        runner.tick()
    assert w.app.campaigns.find(cid).state == "sending" and runner.failures == {}
    runner.tick()
    assert len(campaign_messages(w.app, cid)) == 3
