"""SMS STOP/START over the real API: Twilio's inbound webhook, signed with the account's Auth
Token, suppresses the number for marketing and withdraws its SMS consents; START undoes exactly
that; a bad signature, a HELP or a duplicate delivery changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pushguard.audience.keywords import START, STOP, keyword_of
from pushguard.receipts.twilio import compute_signature
from tests.acceptance.audience_kit import ACCOUNT, BACKENDS, World, database, path_of, world

TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
PHONE = "+14155550100"


@pytest.fixture(params=BACKENDS)
def w(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    with world(tmp_path, database_url=database(request, tmp_path)) as got:
        got.topic("news")
        got.topic("offers")
        got.topic("alerts", kind="transactional")
        got.contact("alice", sms="+1 (415) 555-0100", email="alice@example.com")
        got.grant("alice", "news", "sms")
        got.grant("alice", "offers", "sms")
        got.grant("alice", "news", "email")
        yield got


def suppressions(w: World) -> list[tuple[str, str, str, str]]:
    return [(s.channel, s.address, s.reason, s.source) for s in w.app.store.suppressions()]


def assert_twiml(resp: object) -> None:
    assert getattr(resp, "status_code", None) == 200
    assert resp.headers["content-type"].startswith("application/xml")  # type: ignore[attr-defined]
    assert resp.text == TWIML  # type: ignore[attr-defined]


def test_stop_then_start(w: World) -> None:
    assert w.send("alice", "sms", "news")["state"] == "queued"

    assert_twiml(w.inbound("  stop ", "SM0001"))
    assert suppressions(w) == [("sms", PHONE, "unsubscribe", "inbound STOP (SM0001)")]
    assert w.status("alice", "news", "sms") == "withdrawn"
    assert w.status("alice", "offers", "sms") == "withdrawn"
    assert w.status("alice", "news", "email") == "granted"  # other channels untouched
    stops = w.ledger("alice")[3:]
    assert {(r["topic"], r["status"], r["source"], r["proof"]) for r in stops} == {
        ("news", "withdrawn", "sms_keyword", "SM0001"),
        ("offers", "withdrawn", "sms_keyword", "SM0001")}
    stopped = w.send("alice", "sms", "news")
    assert stopped["state"] == "suppressed" and stopped["failure"]["cause"] == "NO_CONSENT"
    # receipts and alerts still reach the phone
    assert w.send("alice", "sms", "alerts")["state"] == "queued"
    assert w.send("alice", "sms", None)["state"] == "queued"
    assert w.send("alice", "email", "news")["state"] == "queued"

    assert_twiml(w.inbound("Start", "SM0002"))
    assert suppressions(w) == []
    assert w.status("alice", "news", "sms") == "granted"
    assert w.status("alice", "offers", "sms") == "granted"
    starts = w.ledger("alice")[5:]
    assert {(r["topic"], r["status"], r["source"], r["proof"]) for r in starts} == {
        ("news", "granted", "sms_keyword", "SM0002"),
        ("offers", "granted", "sms_keyword", "SM0002")}
    assert w.send("alice", "sms", "news")["state"] == "queued"
    audit = w.http.get("/v1/audit", params={"subject": f"sms:{PHONE}"}).json()["entries"]
    assert [e["action"] for e in audit] == ["suppression.removed", "suppression.added"]
    assert audit[0]["detail"]["note"] == "inbound START (SM0002)"


def test_after_stop_no_confirmation_is_texted_until_start(w: World) -> None:
    w.topic("digest", double_opt_in=True)
    w.inbound("STOP", "SM0701")

    def subscribe() -> tuple[int, object]:
        r = w.http.post("/v1/contacts/alice/subscriptions",
                        json={"topic": "digest", "channel": "sms"})
        return r.status_code, r.json()

    status, body = subscribe()
    assert status == 422 and "suppression list" in str(body), body
    assert w.status("alice", "digest", "sms") is None
    w.inbound("START", "SM0702")
    status, body = subscribe()
    assert status == 202 and body["message_state"] == "queued", body  # type: ignore[index]


def test_preferences_cannot_text_a_confirmation_after_stop(w: World) -> None:
    w.topic("digest", double_opt_in=True, description="Monthly digest")
    w.inbound("STOP", "SM0801")
    cid = w.http.get("/v1/contacts/alice").json()["id"]
    path = path_of(w.app.links.preferences_url(cid))
    resp = w.anon.post(path, data={"action": "save", "sub": ["digest|sms"]})
    assert resp.status_code == 200
    assert "Monthly digest by text message could not be started" in resp.text
    assert w.status("alice", "digest", "sms") is None
    assert w.status("alice", "news", "email") == "withdrawn"  # the rest was saved
    sent = w.http.get("/v1/messages", params={"limit": 10}).json()["messages"]
    assert not [m for m in sent if m["channel"] == "sms"]


def test_a_bad_signature_changes_nothing(w: World) -> None:
    url = f"{w.url}/v1/inbound/twilio"
    form = {"AccountSid": ACCOUNT, "MessageSid": "SM0009", "From": PHONE, "Body": "STOP"}
    attempts = [
        w.inbound("STOP", "SM0009", token="not the auth token"),
        w.anon.post(url, data=form),  # no signature at all
        w.anon.post(url, data=form, headers={"X-Twilio-Signature": compute_signature(
            "inbound-test-auth-token", url + "?x=1", form)}),  # signed for another URL
        w.anon.post(url, data={**form, "Body": "START"}, headers={  # body changed after signing
            "X-Twilio-Signature": compute_signature("inbound-test-auth-token", url, form)}),
        w.anon.post(url, data={**form, "AccountSid": "AC" + "9" * 32}, headers={
            "X-Twilio-Signature": compute_signature("inbound-test-auth-token", url,
                                                    {**form, "AccountSid": "AC" + "9" * 32})}),
    ]
    assert [r.status_code for r in attempts] == [401] * 5
    assert suppressions(w) == []
    assert len(w.ledger("alice")) == 3
    assert w.http.get("/v1/audit").json()["entries"][0]["action"] == "topic.created"
    assert w.send("alice", "sms", "news")["state"] == "queued"


def test_a_duplicate_delivery_acts_once(w: World) -> None:
    assert_twiml(w.inbound("STOP", "SM0101"))
    assert_twiml(w.inbound("STOP", "SM0101"))
    assert len(w.ledger("alice")) == 5
    assert_twiml(w.inbound("START", "SM0102"))
    # Twilio retries the first STOP after the START went through: it must not stop again
    assert_twiml(w.inbound("STOP", "SM0101"))
    assert_twiml(w.inbound("START", "SM0102"))
    assert suppressions(w) == []
    assert len(w.ledger("alice")) == 7
    assert w.status("alice", "news", "sms") == "granted"


def test_help_and_other_text_change_nothing(w: World) -> None:
    before = w.http.get("/v1/audit").json()["entries"]
    for i, body in enumerate(["HELP", "stop please", "", "STOP!", "info"]):
        assert_twiml(w.inbound(body, f"SM02{i}"))
    assert suppressions(w) == []
    assert len(w.ledger("alice")) == 3
    assert w.http.get("/v1/audit").json()["entries"] == before


def test_start_gives_back_only_what_stop_took(w: World) -> None:
    r = w.http.post("/v1/contacts/alice/consent", json={
        "topic": "offers", "channel": "sms", "status": "withdrawn", "source": "admin"})
    assert r.status_code == 201
    w.inbound("UNSUBSCRIBE", "SM0301")
    w.inbound("unstop", "SM0302")
    assert w.status("alice", "news", "sms") == "granted"
    assert w.status("alice", "offers", "sms") == "withdrawn"  # the admin's withdrawal stays


def test_every_holder_of_the_number_is_stopped(w: World) -> None:
    w.contact("bob", sms=PHONE)
    w.grant("bob", "news", "sms")
    w.contact("carol", sms="+14155550199")
    w.grant("carol", "news", "sms")
    w.inbound("Arret", "SM0401")
    assert w.status("bob", "news", "sms") == "withdrawn"
    assert w.status("alice", "news", "sms") == "withdrawn"
    assert w.status("carol", "news", "sms") == "granted"
    assert w.send("bob", "sms", "news")["state"] == "suppressed"
    assert w.send("carol", "sms", "news")["state"] == "queued"


def test_stop_from_an_unknown_number_still_suppresses_it(w: World) -> None:
    assert_twiml(w.inbound("OPT-OUT", "SM0501", sender="+1 212 555 0142"))
    assert suppressions(w) == [("sms", "+12125550142", "unsubscribe", "inbound STOP (SM0501)")]
    assert len(w.ledger("alice")) == 3


def test_an_unusable_sender_is_refused_after_verification(w: World) -> None:
    resp = w.inbound("STOP", "SM0601", sender="not a number")
    assert resp.status_code == 422
    assert resp.json()["error"]["fields"][0]["field"] == "From"
    assert suppressions(w) == []


@pytest.mark.parametrize("body", sorted(STOP | START))
def test_keywords_match_whole_trimmed_text_in_any_case(body: str) -> None:
    assert keyword_of(f"  {body.lower()}\n") == body
    assert keyword_of(body.title()) == body
    assert keyword_of(f"{body} now") == ""


def test_stop_also_voids_a_pending_confirmation(w: World) -> None:
    w.topic("vip", double_opt_in=True)
    r = w.http.post("/v1/contacts/alice/subscriptions", json={"topic": "vip", "channel": "sms"})
    assert r.status_code == 202, r.text
    cid = r.json()["confirmation_id"]
    assert w.status("alice", "vip", "sms") == "pending"
    assert_twiml(w.inbound("STOP", "SM0101"))
    assert w.status("alice", "vip", "sms") == "withdrawn"
    link = w.app.links.confirm_url(cid)
    page = w.http.post(link.replace(w.app.settings.public_url, ""))
    assert page.status_code == 400  # the link died with the STOP
    assert w.status("alice", "vip", "sms") == "withdrawn"


def test_start_reactivates_a_number_a_provider_reported_opted_out(w: World) -> None:
    # Twilio 21610 on a send: the number is suppressed (NO_CONSENT) and deactivated
    contact = w.http.get("/v1/contacts/alice").json()
    (sms,) = [a for a in contact["addresses"] if a["channel"] == "sms"]
    w.app.store.suppress("sms", PHONE, "NO_CONSENT", "message msg_x (21610)")
    r = w.http.post(f"/v1/contacts/alice/addresses/{sms['id']}/status",
                    json={"status": "deactivated", "reason": "NO_CONSENT"})
    assert r.status_code == 200
    assert_twiml(w.inbound("START", "SM0102"))
    contact = w.http.get("/v1/contacts/alice").json()
    (sms,) = [a for a in contact["addresses"] if a["channel"] == "sms"]
    assert sms["status"] == "active" and suppressions(w) == []
    assert w.send("alice", "sms", "news")["state"] == "queued"
