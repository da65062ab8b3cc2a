"""``pushguard failures`` and ``GET /v1/failures``: counts and rates grouped in SQL, on SQLite
and PostgreSQL, with outcomes recorded through the store's own API and the real pipeline."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pushguard import taxonomy
from pushguard.diagnosis.analytics import Filters
from pushguard.diagnosis.failures import failures_report, filters_for, parse_by
from pushguard.diagnosis.timespan import Window, window
from pushguard.states import State
from pushguard.store.sql import SQLStore
from tests.diagnosis.test_why_contact import Desk, cli_for

DAY = 86400


def mixed(desk: Desk) -> dict[str, list[str]]:
    """18 messages: 10 delivered (one after a NETWORK_TIMEOUT retry), 5 failed (2
    UNREGISTERED_TOKEN and 1 dead NETWORK_TIMEOUT by email through mailer, 2 CONTENT_REJECTED
    by SMS through texter, campaign c1), 2 suppressed for lack of consent, 1 still queued."""
    ids: dict[str, list[str]] = {}
    ids["flaky"] = desk.send("flaky@example.com")
    desk.deliver()
    ids["email_ok"] = desk.send("ok@example.com", n=6)
    ids["gone"] = desk.send("gone@example.com", n=2, template="welcome")
    ids["dead"] = desk.send("slow@example.com")
    c1 = desk.campaign("c1")
    ids["sms_ok"] = desk.send("+14155550100", channel="sms", n=3, campaign_id=c1)
    ids["rejected"] = desk.send("+14155550100", channel="sms", n=2, campaign_id=c1)
    plan: dict[str, tuple[State, str | None, str]] = {
        **{i: (State.FAILED, "UNREGISTERED_TOKEN", "mailer") for i in ids["gone"]},
        **{i: (State.DEAD, "NETWORK_TIMEOUT", "mailer") for i in ids["dead"]},
        **{i: (State.FAILED, "CONTENT_REJECTED", "texter") for i in ids["rejected"]},
        **{i: (State.DELIVERED, None, "texter") for i in ids["sms_ok"]},
    }
    desk.settle(plan)
    desk.topic("news")
    ids["stopped"] = desk.send("stranger@example.com", n=2, topic="news")
    ids["queued"] = desk.send("https://example.com/hook", channel="webhook")
    return ids


def report(store: SQLStore, by: list[str], since: str = "24h", **kw: Any) -> dict[str, Any]:
    return failures_report(store, filters_for(store, window(since, None), **kw), by)


def test_counts_rates_groups_and_top_causes(store: SQLStore) -> None:
    desk = Desk(store, script={"flaky@example.com": ["NETWORK_TIMEOUT", "ok"]})
    ids = mixed(desk)
    flaky = store.get(ids["flaky"][0])
    assert flaky is not None and flaky.state is State.DELIVERED and flaky.attempts_count == 2
    r = report(store, ["cause"])
    t = r["totals"]
    assert (t["total"], t["delivered"], t["failed"], t["dead"], t["suppressed"],
            t["pending"], t["finished"]) == (18, 10, 3 + 2, 1, 2, 1, 17)
    assert t["failure_rate"] == round(5 / 17, 6) and t["suppression_rate"] == round(2 / 17, 6)
    by_cause = {g["key"]["cause"]: g for g in r["groups"]}
    assert set(by_cause) == {None, "UNREGISTERED_TOKEN", "CONTENT_REJECTED", "NETWORK_TIMEOUT",
                             "NO_CONSENT"}
    assert by_cause["NETWORK_TIMEOUT"]["total"] == 1  # the recovered retry is not a failure
    assert by_cause[None]["delivered"] == 10 and by_cause[None]["pending"] == 1
    assert by_cause["NO_CONSENT"]["suppressed"] == 2 and by_cause["NO_CONSENT"]["failed"] == 0
    assert [c["cause"] for c in r["top_causes"]] == [
        "CONTENT_REJECTED", "UNREGISTERED_TOKEN", "NETWORK_TIMEOUT", "NO_CONSENT"]
    gone = r["top_causes"][1]
    assert gone["fix"] == taxonomy.describe(taxonomy.UNREGISTERED_TOKEN, provider="mailer")[1]
    assert gone["example"] in ids["gone"] and gone["providers"] == [
        {"provider": "mailer", "count": 2}]
    assert r["verdict"].startswith("17 of 18 messages finished: 10 delivered, 5 failed "
                                   "(29.4%), 2 not sent by policy (11.8%); 1 still pending. "
                                   "Most failures: CONTENT_REJECTED (2 of 5 via texter).")
    assert r["series"]["size"] == "hour" and sum(
        b["total"] for b in r["series"]["rows"]) == 18

    pc = report(store, ["provider", "channel"])
    rows = {(g["key"]["provider"], g["key"]["channel"]): (g["total"], g["failed"])
            for g in pc["groups"]}
    assert rows == {("mailer", "email"): (10, 3), ("texter", "sms"): (5, 2),
                    (None, "email"): (2, 0), (None, "webhook"): (1, 0)}
    assert not pc["truncated"] and list(pc["groups"][0]["key"]) == ["provider", "channel"]


def test_filters_and_time_windows(store: SQLStore) -> None:
    desk = Desk(store)
    ids = mixed(desk)
    assert report(store, ["channel"], channel="sms")["totals"]["total"] == 5
    assert report(store, ["cause"], provider="mailer")["totals"]["failed"] == 3
    assert report(store, ["cause"], topic="news")["totals"]["suppressed"] == 2
    assert report(store, ["cause"], template="welcome")["totals"]["failed"] == 2
    by_campaign = report(store, ["campaign"], campaign="c1")
    (g,) = by_campaign["groups"]
    assert g["key"] == {"campaign": "cmp_c1"} and g["campaign_name"] == "c1"
    assert g["failure_rate"] == 0.4

    desk.backdate(ids["email_ok"][:3], 2 * DAY)
    assert report(store, ["cause"])["totals"]["total"] == 15
    assert report(store, ["cause"], since="3d")["totals"]["total"] == 18
    days = report(store, ["day"], since="3d")["groups"]
    assert [g["total"] for g in days] == [3, 15]
    assert all(g["key"]["day"].endswith("T00:00:00.000Z") for g in days)
    now = time.time()
    older = failures_report(store, Filters(Window(now - 3 * DAY, now - DAY)), ["cause"])
    assert older["totals"]["delivered"] == 3 and older["top_causes"] == []
    assert older["verdict"].endswith("Nothing failed.")
    empty = failures_report(store, Filters(Window(now - 9 * DAY, now - 8 * DAY)), ["hour"])
    assert empty["verdict"].startswith("No message was created") and empty["groups"] == []


def test_failures_over_http(store: SQLStore) -> None:
    desk = Desk(store)
    mixed(desk)
    with desk.http() as http:
        r = http.get("/v1/failures", params=[("by", "provider"), ("by", "channel"),
                                             ("since", "3d")])
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["by"] == ["provider", "channel"] and body["totals"]["total"] == 18
        assert http.get("/v1/failures", params={"by": "cause,topic"}).json()["by"] == [
            "cause", "topic"]
        for params, field in (({"by": "colour"}, "by"), ({"since": "yesterday"}, "since"),
                              ({"since": "2026-11-01T00:00:00"}, "since"),
                              ({"since": "1h", "until": "2h"}, "until"),
                              ({"campaign": "nope"}, "campaign"), ({"top": 0}, "top")):
            bad = http.get("/v1/failures", params=params)
            assert bad.status_code == 422, (params, bad.text)
            assert bad.json()["error"]["fields"][0]["field"] == field, params


def test_failures_through_the_cli(sqlite_url: str, tmp_path: Path) -> None:
    store = SQLStore(sqlite_url)
    store.migrate()
    mixed(Desk(store))
    store.close()
    cli = cli_for(sqlite_url, tmp_path)
    text = cli("failures", "--since", "3d", "--by", "cause").stdout
    assert "17 of 18 messages finished" in text and "Top causes:" in text
    assert "UNREGISTERED_TOKEN: 2 failed, 0 suppressed (via mailer 2)" in text
    data = json.loads(cli("failures", "--by", "provider,channel", "--channel", "sms",
                          "--json").stdout)
    assert [g["key"] for g in data["groups"]] == [{"provider": "texter", "channel": "sms"}]
    bad = cli("failures", "--by", "colour", check=False)
    assert bad.returncode == 1 and "--by: unknown dimension 'colour'" in bad.stderr


def test_parse_by() -> None:
    assert parse_by([]) == ["cause"]
    assert parse_by(["cause,provider", "cause", "day"]) == ["cause", "provider", "day"]
