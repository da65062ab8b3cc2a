"""Schedules and the throttle, driven tick by tick with a clock the test moves (no timing
assertions): ``schedule.at`` keeps a campaign scheduled until its time; ``local_time`` gives
each recipient the moment it is that time where they live; a throttle lets through a token
bucket's worth of recipients per tick; unthrottled, the backlog stays bounded."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from pushguard.campaigns import fanout, runner
from pushguard.campaigns.runner import Runner
from pushguard.exceptions import InputError
from tests.campaigns.kit import (
    Clock,
    World,
    add_contacts,
    campaign_messages,
    grant,
    recipients_of,
    world,
)

pytestmark = pytest.mark.timeout(60)

HTML = ('<p>Hello {{ contact.attributes.first_name }}</p>'
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a>')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def w(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    with world(tmp_path, database_url=url) as got:
        got.topic("news")
        got.template("newsletter", HTML)
        yield got


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(runner, "time", c)
    monkeypatch.setattr(fanout, "time", c)
    return c


def enqueued(w: World, cid: str) -> int:
    return sum(1 for r in recipients_of(w.app, cid) if r.state == "enqueued")


def test_a_campaign_scheduled_at_a_time_waits_for_it(w: World, clock: Clock) -> None:
    w.contacts(5)
    at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    c = w.campaign(schedule={"at": at.isoformat()})
    got = w.app.campaigns.start(c["id"], actor="t")
    assert got["state"] == "scheduled"
    assert got["started_at"].startswith(at.strftime("%Y-%m-%dT%H:%M"))
    r = Runner(w.app.campaigns)
    for offset in (0, 3600, 7190):
        clock.offset = offset
        r.tick()
        assert w.app.campaigns.find(c["id"]).state == "scheduled"
        assert recipients_of(w.app, c["id"]) == [] and campaign_messages(w.app, c["id"]) == []
    clock.offset = 7210  # its time came
    r.tick()
    assert w.app.campaigns.find(c["id"]).state == "sending"
    assert enqueued(w, c["id"]) == 5 and len(campaign_messages(w.app, c["id"])) == 5

    past = w.campaign(name="past", schedule={"at": "2020-01-01T00:00:00Z"})
    assert w.app.campaigns.start(past["id"], actor="t")["state"] == "sending"


def _zoned(w: World) -> dict[str, str]:
    rows = [{"external_id": f"{name}{i}", "attributes": {"first_name": name},
             "addresses": [{"channel": "email", "address": f"{name}{i}@example.com"}],
             **({"timezone": tz} if tz else {})}
            for name, tz in (("tokyo", "Asia/Tokyo"), ("ny", "America/New_York"),
                             ("nowhere", None)) for i in range(2)]
    ids = add_contacts(w.app, rows)
    grant(w.app, list(ids.values()), "news", "email")
    return ids


def _at(day: dt.date, tz: str) -> float:
    return dt.datetime.combine(day, dt.time(9, 0), tzinfo=ZoneInfo(tz)).timestamp()


def test_local_time_sends_at_nine_where_each_recipient_lives(w: World, clock: Clock) -> None:
    ids = _zoned(w)
    day = dt.date.today() + dt.timedelta(days=3)
    c = w.campaign(schedule={"local_time": "09:00", "date": day.isoformat(),
                             "default_timezone": "Europe/Paris"})
    cid = c["id"]
    assert w.app.campaigns.start(cid, actor="t")["state"] == "sending"
    r = Runner(w.app.campaigns)
    r.tick()
    due = {rec.contact_id: rec.due_at for rec in recipients_of(w.app, cid)}
    who = {v: k.rstrip("01") for k, v in ids.items()}
    expected = {"tokyo": _at(day, "Asia/Tokyo"), "ny": _at(day, "America/New_York"),
                "nowhere": _at(day, "Europe/Paris")}
    assert {cid_: expected[who[cid_]] for cid_ in due} == due
    assert campaign_messages(w.app, cid) == []  # nobody's nine o'clock came yet
    assert w.app.campaigns.find(cid).state == "sending"  # and it is not "done" either

    clock.offset = expected["tokyo"] + 60 - _now()  # nine in Tokyo, night in New York
    r.tick()
    sent = Counter(who[m.contact_id] for m in campaign_messages(w.app, cid))
    assert sent == {"tokyo": 2}
    clock.offset = expected["ny"] + 60 - _now()
    r.tick()
    sent = Counter(who[m.contact_id] for m in campaign_messages(w.app, cid))
    assert sent == {"tokyo": 2, "ny": 2, "nowhere": 2}


def test_the_preflight_judges_quiet_hours_at_each_recipients_local_send_time(w: World) -> None:
    """Under ``local_time`` a recipient's message goes at that time where they live, so the
    gate's verdict (here: quiet hours) is taken then, not at the moment of the pre-flight.
    Tokyo and New York are 13 or 14 hours apart: at no single moment are both inside a
    45-minute window, so a verdict taken once for everybody counts at most one city."""
    from pushguard.campaigns.preflight import Preflight

    rows = [{"external_id": f"{name}{i}", "attributes": {"first_name": name},
             "addresses": [{"channel": "email", "address": f"{name}{i}@example.com"}],
             "timezone": tz, **({"quiet_hours": "23:00-23:45"} if quiet else {})}
            for name, tz, quiet in (("tokyo", "Asia/Tokyo", True),
                                    ("ny", "America/New_York", True),
                                    ("night-owl", "Asia/Tokyo", False)) for i in range(2)]
    ids = add_contacts(w.app, rows)
    grant(w.app, list(ids.values()), "news", "email")

    def quiet(schedule: dict[str, Any], name: str) -> tuple[int, int]:
        c = w.campaign(name=name, schedule=schedule)
        report = Preflight(w.app.campaigns).run(c["id"], links=False)
        counts = {f["code"]: f["count"] for f in report["findings"]}
        return counts.get("quiet_hours", 0), report["predicted"]["deferred"]

    assert quiet({"local_time": "23:15"}, "late") == (4, 4)
    assert quiet({"local_time": "12:00"}, "noon") == (0, 0)


def _now() -> float:
    return time.time()


def test_local_time_without_a_date_is_the_next_nine_and_a_past_date_is_now(w: World) -> None:
    ids = _zoned(w)
    who = {v: k.rstrip("01") for k, v in ids.items()}
    zones = {"tokyo": "Asia/Tokyo", "ny": "America/New_York", "nowhere": "UTC"}
    c = w.campaign(schedule={"local_time": "09:00"})  # no default zone: the config's (UTC)
    w.app.campaigns.start(c["id"], actor="t")
    Runner(w.app.campaigns).tick()
    start = w.app.campaigns.find(c["id"]).started_at
    for rec in recipients_of(w.app, c["id"]):
        local = dt.datetime.fromtimestamp(rec.due_at, ZoneInfo(zones[who[rec.contact_id]]))
        assert (local.hour, local.minute) == (9, 0)
        assert start <= rec.due_at < start + 86400

    old = w.campaign(name="old", schedule={"local_time": "09:00",
                                           "date": (dt.date.today() - dt.timedelta(days=3))
                                           .isoformat()})
    w.app.campaigns.start(old["id"], actor="t")
    Runner(w.app.campaigns).tick()
    start = w.app.campaigns.find(old["id"]).started_at
    assert {rec.due_at for rec in recipients_of(w.app, old["id"])} == {start}
    assert len(campaign_messages(w.app, old["id"])) == 6


@pytest.mark.parametrize(("schedule", "field"), [
    ({"local_time": "9am"}, "schedule.local_time"),
    ({"local_time": "24:00"}, "schedule.local_time"),
    ({"date": "2030-01-01"}, "schedule.date"),
    ({"at": "2030-01-01T09:00:00Z", "local_time": "09:00"}, "schedule"),
    ({"local_time": "09:00", "default_timezone": "Mars/Olympus"}, "schedule.default_timezone"),
    ({"at": "2030-01-01T09:00:00"}, "schedule.at"),  # no zone: ambiguous
    # dates whose arithmetic overflows: refused, not a 500 later in the pre-flight
    ({"at": "9999-12-31T23:59:59Z"}, "schedule.at"),
    ({"at": "0001-01-01T00:00:00+14:00"}, "schedule.at"),
    ({"at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=400)).isoformat()}, "schedule.at"),
    ({"local_time": "09:00", "date": "9999-12-31"}, "schedule.date"),
    ({"local_time": "09:00", "date": "0001-01-01"}, "schedule.date"),
])
def test_bad_schedules_are_refused_naming_the_field(w: World, schedule: dict[str, Any],
                                                    field: str) -> None:
    from pushguard.campaigns.service import parse

    body = {"name": "s", "topic": "news", "schedule": schedule,
            "channels": [{"channel": "email", "template": "newsletter"}]}
    with pytest.raises(InputError) as bad:
        w.app.campaigns.create(parse(body), actor="t")
    assert bad.value.field == field


@pytest.mark.parametrize(("throttle", "ticks", "counts"), [
    # 600 a minute = 10 a second; a bucket holds one second's worth, starts with one token
    (600, [0, 0.5, 10.5, 10.5], [1, 6, 16, 16]),
    # 30 a minute: one every two seconds
    (30, [0, 1, 2, 3, 4], [0, 1, 1, 2, 2]),
])
def test_a_throttle_lets_a_bucket_through_per_tick(w: World, clock: Clock, throttle: int,
                                                   ticks: list[float],
                                                   counts: list[int]) -> None:
    w.contacts(40)
    c = w.campaign(throttle=throttle)
    w.app.campaigns.start(c["id"], actor="t")
    r = Runner(w.app.campaigns)
    got = []
    for at in ticks:
        clock.offset = at
        r.tick()
        got.append(enqueued(w, c["id"]))
    assert got == counts
    assert len(campaign_messages(w.app, c["id"])) == counts[-1]


def test_unthrottled_the_backlog_stays_bounded(w: World, clock: Clock,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "MAX_BACKLOG", 5)
    w.contacts(12)
    c = w.campaign()
    cid = c["id"]
    w.app.campaigns.start(cid, actor="t")
    r = Runner(w.app.campaigns)
    r.tick()
    assert enqueued(w, cid) == 5
    r.tick()
    assert enqueued(w, cid) == 5  # five wait: no room
    with w.app.store._write() as conn:  # type: ignore[attr-defined]
        ids = [m.id for m in campaign_messages(w.app, cid)][:3]
        for mid in ids:
            conn.execute(text("UPDATE messages SET state = 'delivered' WHERE id = :m"),
                         {"m": mid})
    r.tick()
    assert enqueued(w, cid) == 8
