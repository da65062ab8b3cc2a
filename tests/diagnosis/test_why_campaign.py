"""``why --campaign``: a campaign's messages by state and cause, and who it skipped. The campaign
rows are written with SQLAlchemy Core (the campaign service is not needed to read them); its
messages carry ``campaign_id`` and go through the real pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pushguard.diagnosis.campaign_story import campaign_story
from pushguard.diagnosis.lessons import Lessons
from pushguard.exceptions import NotFound
from pushguard.store.sql import SQLStore
from tests.diagnosis.test_why_contact import Desk, cli_for


def spring(desk: Desk) -> dict[str, list[str]]:
    """Campaign "spring": 3 delivered, 2 rejected for their content, 1 stopped for lack of
    consent, 2 recipients skipped for having no address."""
    desk.topic("offers")
    cmp = desk.campaign("spring")
    ids: dict[str, list[str]] = {"ok": [], "rejected": [], "no_consent": []}
    for i in range(6):
        to = f"u{i}@example.com"
        cid = desk.contact(f"u{i}", email=to)
        if i != 5:
            desk.consent(cid, "offers", "email", "granted")
        (mid,) = desk.send(to, topic="offers", contact_id=cid, campaign_id=cmp,
                           template="spring-mail")
        ids["ok" if i < 3 else "rejected" if i < 5 else "no_consent"].append(mid)
        desk.recipient(cmp, cid, "enqueued", seq=i, message_id=mid)
    for i in (6, 7):
        cid = desk.contact(f"u{i}", sms=f"+1415555020{i}")
        desk.recipient(cmp, cid, "skipped", seq=i, detail="no address on channel email")
    desk.deliver()
    return ids


def test_campaign_story_counts_causes_examples_and_skips(store: SQLStore) -> None:
    desk = Desk(store, script={"u3@example.com": ["CONTENT_REJECTED"],
                               "u4@example.com": ["CONTENT_REJECTED"]})
    ids = spring(desk)
    Lessons(store).add("template", "spring-mail", "The hero image link is long; "
                       "shorten it before resending", author="ops")
    story = campaign_story(store, "spring")
    assert story["verdict"].startswith(
        "Campaign spring (completed): 8 recipients, 6 messages; 3 delivered, 2 failed "
        "(33.3% of 6 finished), 1 not sent by policy, 0 pending; 2 recipients skipped before "
        "sending. Top failure: CONTENT_REJECTED, 2 messages via mailer. Fix: Shorten or change")
    groups = {(g["state"], g["cause"]): g for g in story["outcomes"]}
    rejected = groups[("failed", "CONTENT_REJECTED")]
    assert rejected["count"] == 2 and sorted(rejected["examples"]) == sorted(ids["rejected"])
    assert "mailer rejected the message content" in rejected["explanation"]
    stopped = groups[("suppressed", "NO_CONSENT")]
    assert stopped["examples"] == ids["no_consent"] and stopped["rule"] == "consent"
    assert groups[("delivered", None)]["count"] == 3
    assert story["recipients"] == {"enqueued": 6, "skipped": 2}
    (skip,) = story["skipped"]
    assert (skip["detail"], skip["count"]) == ("no address on channel email", 2)
    (tpl,) = story["templates"]
    assert tpl["key"] == {"template": "spring-mail"} and tpl["failed"] == 2
    assert [le["subject"] for le in tpl["lessons"]] == ["spring-mail"]
    by_id = campaign_story(store, "cmp_spring")
    assert by_id["messages"] == story["messages"]
    with pytest.raises(NotFound):
        campaign_story(store, "autumn")


def test_a_campaign_that_has_not_sent(store: SQLStore) -> None:
    desk = Desk(store)
    desk.campaign("draft-one", state="draft")
    story = campaign_story(store, "draft-one")
    assert story["verdict"] == "Campaign draft-one (draft) has not sent anything yet."
    assert story["messages"]["total"] == 0 and story["skipped"] == []


def test_campaign_explain_over_http_and_cli(sqlite_url: str, tmp_path: Path) -> None:
    store = SQLStore(sqlite_url)
    store.migrate()
    desk = Desk(store, script={"u3@example.com": ["CONTENT_REJECTED"]})
    ids = spring(desk)
    with desk.http() as http:
        r = http.get("/v1/campaigns/spring/explain")
        assert r.status_code == 200, r.text
        assert r.json()["messages"]["failed"] == 1
        missing = http.get("/v1/campaigns/autumn/explain")
        assert missing.status_code == 404 and "autumn" in missing.json()["error"]["message"]
    store.close()
    cli = cli_for(sqlite_url, tmp_path)
    text = cli("why", "--campaign", "spring").stdout
    assert "Top failure: CONTENT_REJECTED, 1 messages via mailer" in text
    assert ids["rejected"][0] in text and "skipped: no address on channel email" in text
    data = json.loads(cli("why", "--campaign", "cmp_spring", "--json").stdout)
    assert data["campaign"]["name"] == "spring"
    gone = cli("why", "--campaign", "autumn", check=False)
    assert gone.returncode == 1 and "no campaign 'autumn'" in gone.stderr
