"""Post-mortem reports: the data on SQLite and PostgreSQL (a campaign sent in two rounds
despite an overridden pre-flight; an incident raised by the real alert book, acted on,
replayed and closed), the Markdown and HTML renderings with hostile values from the database,
and the API and the real CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pushguard import taxonomy
from pushguard.diagnosis.postmortem import (
    MAX_BUCKETS,
    bucket_seconds,
    campaign_postmortem,
    incident_postmortem,
)
from pushguard.diagnosis.report_html import as_html
from pushguard.diagnosis.report_md import as_markdown
from pushguard.exceptions import NotFound
from pushguard.store.sql import SQLStore
from tests.diagnosis.pm_story import (
    INVALID_CODE,
    NOTE,
    OUTAGE_CODE,
    REASON,
    campaign_story,
    incident_story,
)
from tests.diagnosis.test_why_contact import Desk, cli_for


def by_cause(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["cause"]: c for c in report["causes"]}


# -- the data ----------------------------------------------------------------------------------

def test_campaign_postmortem_counts_causes_actions_and_the_retry(store: SQLStore) -> None:
    desk = Desk(store)
    s = campaign_story(desk)
    r = campaign_postmortem(desk.app, "spring")
    assert campaign_postmortem(desk.app, s.cid)["impact"] == r["impact"]  # id or name

    i = r["impact"]
    assert (i["messages"], i["delivered"], i["failed"], i["not_sent"], i["pending"]) == \
        (10, 4, 5, 1, 0)
    assert i["failure_rate"] == round(5 / 9, 6)
    assert (i["recipients"], i["reached"], i["unreached"], i["withheld"]) == (7, 4, 2, 1)
    assert (i["planned"], i["skipped"], i["deferred"]) == (6, 1, 0)
    assert (i["unsubscribed"], i["complained"]) == (1, 1)  # not the unsubscribe before it
    assert i["cost"]["total"] == pytest.approx(0.04)
    assert i["cost"]["providers"] == [{"provider": "mailer", "messages": 9, "delivered": 4,
                                       "cost_each": 0.01, "cost": 0.04}]
    assert r["outcomes"] == [{"outcome": "delivered", "count": 4},
                             {"outcome": "failed", "count": 5},
                             {"outcome": "not sent (policy)", "count": 1},
                             {"outcome": "pending", "count": 0},
                             {"outcome": "skipped before sending", "count": 1}]

    causes = by_cause(r)
    assert [c["cause"] for c in r["causes"]] == [
        "PROVIDER_OUTAGE", "INVALID_RECIPIENT", "NO_CONSENT", "template.link_http_error"]
    outage = causes["PROVIDER_OUTAGE"]
    assert (outage["failed"], outage["count"]) == (4, 4)
    assert outage["providers"] == [{"provider": "mailer", "count": 4}]
    assert outage["codes"] == [{"code": OUTAGE_CODE, "attempts": 4}]
    assert sorted(outage["examples"]) == sorted([*s.round0[:3], s.round1[2]])
    assert outage["fix"] == taxonomy.describe(taxonomy.PROVIDER_OUTAGE, provider="mailer")[1]
    assert [le["note"] for le in outage["lessons"]] == [NOTE]
    check = outage["checks"]["checks"][0]
    assert (check["check"], check["flagged"]) == ("provider_failing", False)
    assert "already failed in the 24 h" in check["limit"]
    invalid = causes["INVALID_RECIPIENT"]
    assert invalid["codes"] == [{"code": INVALID_CODE, "attempts": 1}]
    assert invalid["examples"] == [s.round0[3]]
    assert [(k["check"], k["flagged"]) for k in invalid["checks"]["checks"]] == [
        ("invalid_address", True), ("suppressed", False)]
    assert invalid["checks"]["verdict"].endswith("(invalid_address) and it was sent anyway.")
    assert causes["NO_CONSENT"]["suppressed"] == 1 and causes["NO_CONSENT"]["failed"] == 0
    link = causes["template.link_http_error"]
    assert (link["kind"], link["count"], link["template"]) == ("preflight", 4, "welcome")
    assert (link["reason"], link["overridden_by"]) == (REASON, "ops")
    assert link["fix"] == "fix or replace the link" and len(link["examples"]) == 4

    kinds = [e["kind"] for e in r["timeline"]]
    assert kinds[:4] == ["created", "pre-flight overridden", "started", "first message"]
    assert kinds[4:7] == ["auto-pause", "resumed", "retry"] and "completed" in kinds
    assert [a["kind"] for a in r["actions"]] == ["pre-flight overridden", "auto-pause",
                                                 "resumed", "retry"]
    c = r["comparison"]
    assert (c["fix"], c["a"]["count"], c["a"]["of"], c["b"]["count"], c["b"]["of"]) == \
        ("retry", 4, 6, 1, 3)
    assert c["verdict"] == "too_small"
    series = r["series"]
    assert series["bucket_seconds"] == 60 and len(series["rows"]) <= MAX_BUCKETS
    busy = [b for b in series["rows"] if b["attempts"]]
    assert [(b["attempts"], b["failed"]) for b in busy] == [(6, 4), (3, 1)]
    about = {x["about"]: x for x in r["recommendations"]}
    assert about["template.link_http_error"]["checks"] == ["template.link_http_error"]
    assert "single provider" in about["channel email"]["fix"]
    assert r["preflight"]["blocking"] == 1 and r["override"]["reason"] == REASON
    assert r["verdict"] == ("partly recovered: 2 of 7 recipients were never reached; 1 "
                            "recipient(s) not sent to by policy (consent, suppression, caps); "
                            "sent despite 1 overridden pre-flight finding(s)")
    assert r["summary"].startswith("Campaign spring (completed) sent 10 messages to 7 "
                                   "recipients")
    assert "PROVIDER_OUTAGE (4 messages via mailer)" in r["summary"]
    json.dumps(r)  # JSON-ready as it is

    with pytest.raises(NotFound):
        campaign_postmortem(desk.app, "nope")


def test_incident_postmortem_radius_actions_and_during_versus_after(store: SQLStore) -> None:
    desk = Desk(store)
    s = incident_story(desk)
    r = incident_postmortem(desk.app, s.incident)
    subject = r["subject"]
    assert (subject["scope"], subject["state"], subject["closed_by"]) == \
        ("provider:mailer", "closed", "ops")
    assert subject["campaigns"] == [{"id": s.cid, "name": "autumn", "state": "completed"}]
    radius = r["impact"]["blast_radius"]
    assert (radius["messages"], radius["recipients"]) == (20, 20)
    assert radius["campaigns"] == [{"campaign": s.cid, "messages": 20}]
    assert radius["channels"] == [{"channel": "email", "messages": 20}]
    assert radius["providers"] == [{"provider": "mailer", "messages": 20}]
    i = r["impact"]
    assert (i["messages"], i["delivered"], i["failed"], i["unreached"]) == (45, 25, 20, 0)
    assert i["replayed"] == {"delivered": 20}
    assert i["cost"]["total"] == pytest.approx(0.25)

    causes = by_cause(r)
    assert list(causes) == ["PROVIDER_OUTAGE", "template.link_http_error"]
    outage = causes["PROVIDER_OUTAGE"]
    assert (outage["failed"], outage["codes"]) == (20, [{"code": "503", "attempts": 20}])
    assert set(outage["examples"]) <= set(s.originals) and len(outage["examples"]) == 5
    link = causes["template.link_http_error"]
    assert (link["campaign"], link["count"], link["reason"]) == ("autumn", 25, REASON)

    kinds = [e["kind"] for e in r["timeline"]]
    assert kinds[0] == "first failure"
    assert {"alert_fired", "action", "replay", "closed"} <= set(kinds)
    # the hold is written, then the action that made it goes on the incident's timeline
    assert [a["kind"] for a in r["actions"]] == ["override", "hold", "action", "replay",
                                                 "closed"]
    c = r["comparison"]
    assert c["fix"] == "the first action" and c["labels"] == ["during the incident", "after it"]
    assert (c["a"]["count"], c["a"]["of"], c["b"]["count"], c["b"]["of"]) == (20, 25, 0, 20)
    assert c["verdict"] == "significant"
    assert sum(b["attempts"] for b in r["series"]["rows"]) == 45
    assert r["verdict"].startswith("recovered: every recipient")
    assert "20 messages were replayed: 20 delivered." in r["summary"]

    with pytest.raises(NotFound):
        incident_postmortem(desk.app, "inc_nope")


def test_a_campaign_that_sent_nothing(store: SQLStore) -> None:
    desk = Desk(store)
    desk.campaign("quiet", state="draft")
    r = campaign_postmortem(desk.app, "quiet")
    assert r["verdict"] == "nothing was sent" and r["causes"] == []
    assert r["comparison"] is None and r["preflight"] is None
    assert r["impact"]["messages"] == 0 and r["impact"]["failure_rate"] is None
    assert all(b["attempts"] == 0 for b in r["series"]["rows"])
    assert "No pre-flight was recorded" in as_markdown(r)
    page = as_html(r)
    assert "No attempts in this window" in page and "Nothing failed" in page


def test_bucket_sizes_are_round_and_bounded() -> None:
    assert bucket_seconds(0) == 0.1 and bucket_seconds(5) == 0.1
    assert bucket_seconds(3000) == 60 and bucket_seconds(86400) == 1800
    assert bucket_seconds(10 * 365 * 86400) > 30 * 86400  # past the table: still <= 60
    for span in (1, 59, 61, 3601, 7 * 86400, 10 * 365 * 86400):
        assert span / bucket_seconds(span) <= MAX_BUCKETS


# -- the renderings ----------------------------------------------------------------------------

def test_markdown_and_html_escape_every_value_from_the_database(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite:///{tmp_path}/r.db")
    store.migrate()
    try:
        desk = Desk(store)
        campaign_story(desk)
        r = campaign_postmortem(desk.app, "spring")
    finally:
        store.close()
    md = as_markdown(r)
    for heading in ("## Summary", "## Impact", "## Timeline", "## Root causes",
                    "## Pre-flight", "## What was done", "## Before and after the fix",
                    "## Recommended fixes", "## Failure rate over time"):
        assert heading in md
    assert "<b>" not in md and "<script>" not in md and "[see](javascript" not in md
    assert "\\[see\\](javascript" in md  # a link no renderer follows
    assert "the &lt;b&gt;landing&lt;/b&gt; page \\| goes" in md
    assert "&lt;script&gt;alert('x')&lt;/script&gt; \\| call the vendor" in md
    assert "| `PROVIDER_OUTAGE` | failure | 4 messages failed or not sent |" in md
    assert "| `template.link_http_error` | pre-flight override | 4 messages delivered with" in md
    for line in md.splitlines():  # every table row has as many cells as its header
        if line.startswith("| ") and "\\|" in line:
            assert len(re.split(r"(?<!\\)\|", line)) in (4, 6, 7), line

    page = as_html(r)
    assert "<b>landing</b>" not in page and "<script>" not in page
    assert "the &lt;b&gt;landing&lt;/b&gt; page | goes &#34;live&#34;" in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert page.count("<svg") == 3 and 'id="chart-causes"' in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "").replace(
        "http://links.example/missing", "")  # nothing to fetch


# -- API and CLI -------------------------------------------------------------------------------

@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[Desk, str, str]]:
    """Both stories on one SQLite store: (desk, campaign id, incident id)."""
    store = SQLStore(f"sqlite:///{tmp_path}/both.db")
    store.migrate()
    desk = Desk(store)
    c = campaign_story(desk)
    i = incident_story(desk)
    yield desk, c.cid, i.incident
    store.close()


def test_reports_over_http(both: tuple[Desk, str, str]) -> None:
    desk, cid, iid = both
    with desk.http() as http:
        data = http.get(f"/v1/campaigns/{cid}/report")
        assert data.status_code == 200 and data.json()["kind"] == "campaign"
        # 4, and the replay of its message the incident's window took in
        assert data.json()["impact"]["delivered"] == 5
        md = http.get("/v1/campaigns/spring/report", params={"format": "md"})
        assert md.status_code == 200
        assert md.headers["content-type"] == "text/markdown; charset=utf-8"
        assert md.text.startswith("# Post-mortem: Campaign spring")
        page = http.get(f"/v1/incidents/{iid}/report", params={"format": "html"})
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src" not in page.headers["content-security-policy"]
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert "PROVIDER_OUTAGE" in page.text and page.text.count("<svg") == 3
        inc = http.get(f"/v1/incidents/{iid}/report", params={"format": "json"}).json()
        # with the campaign story's last PROVIDER_OUTAGE through mailer, in the window too
        assert inc["impact"]["blast_radius"]["messages"] == 21

        bad = http.get(f"/v1/campaigns/{cid}/report", params={"format": "pdf"})
        assert bad.status_code == 422
        assert bad.json()["error"]["fields"][0]["field"] == "format"
        for path in ("/v1/campaigns/nope/report", "/v1/incidents/inc_nope/report"):
            gone = http.get(path, params={"format": "html"})
            assert gone.status_code == 404, gone.text
            assert gone.json()["error"]["type"] == "not_found"
        assert http.get(f"/v1/campaigns/{cid}/report",
                        headers={"Authorization": "Bearer nope"}).status_code == 401


def test_reports_from_the_cli(both: tuple[Desk, str, str], tmp_path: Path) -> None:
    desk, cid, iid = both
    cli = cli_for(desk.store.url, tmp_path)
    md = cli("report", "campaign", "spring")
    assert md.stdout.startswith("# Post-mortem: Campaign spring")
    assert "`template.link_http_error`" in md.stdout
    out = tmp_path / "incident.html"
    wrote = cli("report", "incident", iid, "--format", "html", "--out", str(out))
    assert wrote.stdout.strip() == f"wrote {out}"
    assert out.read_text().startswith("<!doctype html>") and "PROVIDER_OUTAGE" in \
        out.read_text()

    unknown = cli("report", "campaign", "nope", check=False)
    assert unknown.returncode == 1 and unknown.stderr.strip() == "error: no campaign 'nope'"
    bad = cli("report", "campaign", cid, "--format", "pdf", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: --format: must be one of")
    nowhere = cli("report", "campaign", cid, "--out", str(tmp_path / "no" / "such.md"),
                  check=False)
    assert nowhere.returncode == 1 and nowhere.stderr.startswith("error: --out: cannot write")


def test_a_replay_counts_what_the_gate_stopped_apart_from_what_it_enqueued(
        store: SQLStore) -> None:
    """Two of the 20 addresses were suppressed between the outage and the replay: the replay
    accepts their copies, the gate stops them at once, and nobody is told 20 were enqueued."""
    desk = Desk(store)
    s = incident_story(desk, suppressed_since=2)
    assert len(s.replays) == 18
    assert [r["state"] for r in s.stopped] == ["suppressed", "suppressed"]
    assert {store.get(r["id"]).to for r in s.stopped} == {  # type: ignore[union-attr]
        "r0@example.com", "r1@example.com"}
    r = incident_postmortem(desk.app, s.incident)
    replays = [e["text"] for e in r["timeline"] if e["kind"] == "replay"]
    assert replays and "replayed 18 messages" in replays[0], r["timeline"]
    assert "2 stopped by the pre-send gate" in replays[0]
