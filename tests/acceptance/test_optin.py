"""Confirmed opt-in end to end over the real API: the confirmation message, the page a GET
shows (which confirms nothing), the POST that grants consent once, and every way a link can be
wrong answering the same 400 page. The CLI starts the same flow."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import update

from pushguard.audience.links import SALTS, link_keys
from pushguard.audience.optin import confirmation_content
from pushguard.providers.registry import provider_class
from pushguard.store.schema import confirmations
from tests.acceptance.audience_kit import BACKENDS, World, config_text, database, path_of, world
from tests.acceptance.conftest import CLI

INVALID = "This link is invalid or has expired."


@pytest.fixture(params=BACKENDS)
def w(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    with world(tmp_path, database_url=database(request, tmp_path)) as got:
        got.topic("news", double_opt_in=True, description="Weekly product news")
        got.contact("alice", email="alice@example.com", sms="+1 415 555 0100")
        yield got


def subscribe(w: World, channel: str = "email", ref: str = "alice") -> dict[str, str]:
    r = w.http.post(f"/v1/contacts/{ref}/subscriptions", json={
        "topic": "news", "channel": channel, "ip": "203.0.113.7", "user_agent": "Form/1.0"})
    assert r.status_code == 202, r.text
    return dict(r.json())


def confirm_link(w: World, message_id: str) -> str:
    """The confirmation link in the message that was queued, read back from the store."""
    m = w.http.get(f"/v1/messages/{message_id}").json()
    text = m["content"]["text"]
    found = re.search(r"(https?://\S+/confirm/\S+)", text)
    assert found, text
    return path_of(found.group(1).rstrip("."))


def test_get_shows_a_button_and_only_post_confirms(w: World) -> None:
    before = w.send("alice", "email", "news")
    assert before["state"] == "suppressed" and before["failure"]["cause"] == "NO_CONSENT"
    sub = subscribe(w)
    assert sub["status"] == "pending" and sub["confirmation_id"].startswith("cnf_")
    assert w.status("alice", "news", "email") == "pending"
    msg = w.http.get(f"/v1/messages/{sub['message_id']}").json()
    # transactional: no topic, so it passes the gate while consent is pending
    assert msg["state"] == "queued" and msg["topic"] is None and msg["channel"] == "email"
    assert "Weekly product news" in msg["content"]["subject"]
    assert "withdraw" in msg["content"]["text"]
    link = confirm_link(w, sub["message_id"])

    page = w.anon.get(link)
    assert page.status_code == 200
    assert '<form method="post">' in page.text and "Weekly product news" in page.text
    again = w.anon.get(link)  # a link scanner fetching it twice confirms nothing either
    assert again.status_code == 200
    assert w.status("alice", "news", "email") == "pending"
    assert w.send("alice", "email", "news")["state"] == "suppressed"

    done = w.anon.post(link, headers={"User-Agent": "Browser/1.0"})
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert "location" not in done.headers
    assert w.status("alice", "news", "email") == "granted"
    after = w.send("alice", "email", "news")
    assert after["state"] == "queued", after

    pending, granted = w.ledger("alice")
    assert (pending["status"], pending["source"], pending["proof"]) == (
        "pending", "form", sub["confirmation_id"])
    assert (pending["ip"], pending["user_agent"], pending["policy_version"]) == (
        "203.0.113.7", "Form/1.0", "2026-01")
    assert (granted["status"], granted["source"], granted["proof"]) == (
        "granted", "double_opt_in", sub["confirmation_id"])
    assert (granted["ip"], granted["user_agent"]) == ("127.0.0.1", "Browser/1.0")
    # the GET page of a confirmed link says so, without a button
    shown = w.anon.get(link)
    assert shown.status_code == 200 and "<form" not in shown.text


def test_a_second_click_and_a_replay_after_withdrawal_grant_nothing(w: World) -> None:
    sub = subscribe(w)
    link = confirm_link(w, sub["message_id"])
    assert w.anon.post(link).status_code == 200
    assert w.anon.post(link).status_code == 200  # double click
    assert [r["status"] for r in w.ledger("alice")] == ["pending", "granted"]
    r = w.http.post("/v1/contacts/alice/consent", json={
        "topic": "news", "channel": "email", "status": "withdrawn", "source": "admin"})
    assert r.status_code == 201
    replay = w.anon.post(link)
    assert replay.status_code == 200
    # the page must not tell the person they are subscribed, on a click or a look
    for page in (replay, w.anon.get(link)):
        assert "You are not subscribed" in page.text and "You are subscribed" not in page.text
    assert w.status("alice", "news", "email") == "withdrawn"
    assert [r["status"] for r in w.ledger("alice")] == ["pending", "granted", "withdrawn"]
    assert w.send("alice", "email", "news")["state"] == "suppressed"


def test_withdrawal_voids_a_confirmation_still_waiting(w: World) -> None:
    sub = subscribe(w)
    link = confirm_link(w, sub["message_id"])
    r = w.http.post("/v1/contacts/alice/consent", json={
        "topic": "news", "channel": "email", "status": "withdrawn", "source": "admin"})
    assert r.status_code == 201
    late = w.anon.post(link)
    assert late.status_code == 400 and INVALID in late.text
    assert w.status("alice", "news", "email") == "withdrawn"


def test_an_expired_confirmation_is_refused_with_the_same_page(w: World) -> None:
    sub = subscribe(w)
    link = confirm_link(w, sub["message_id"])
    with w.app.audience.store._write() as conn:
        conn.execute(update(confirmations).where(confirmations.c.id == sub["confirmation_id"])
                     .values(expires_at=time.time() - 1))
    for resp in (w.anon.get(link), w.anon.post(link)):
        assert resp.status_code == 400 and INVALID in resp.text
    assert w.status("alice", "news", "email") == "pending"
    assert [r["status"] for r in w.ledger("alice")] == ["pending"]


def test_a_token_older_than_confirm_ttl_is_refused(tmp_path: Path) -> None:
    with world(tmp_path, confirm_ttl=60) as w:
        w.topic("news", double_opt_in=True)
        w.contact("alice", email="alice@example.com")
        sub = subscribe(w)
        assert w.app.config.audience.confirm_ttl == 60

        class TwoMinutesAgo(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(time.time()) - 120

        keys = list(reversed(link_keys(w.app.settings)))
        old = URLSafeTimedSerializer(keys, salt=SALTS["confirm"], signer=TwoMinutesAgo)
        token = str(old.dumps(sub["confirmation_id"]))
        fresh = confirm_link(w, sub["message_id"])
        assert w.anon.get(fresh).status_code == 200  # the same row, through a fresh token
        for resp in (w.anon.get(f"/confirm/{token}"), w.anon.post(f"/confirm/{token}")):
            assert resp.status_code == 400 and INVALID in resp.text
        assert w.status("alice", "news", "email") == "pending"


def test_forged_and_wrong_purpose_tokens_get_one_page(w: World) -> None:
    cid = w.http.get("/v1/contacts/alice").json()["id"]
    sub = subscribe(w)
    link = confirm_link(w, sub["message_id"])
    token = link.rsplit("/", 1)[1]
    links = w.app.links
    unsub = links.unsubscribe_url(cid, "news", "email").rsplit("/", 1)[1]
    prefs = links.preferences_url(cid).rsplit("/", 1)[1]
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    other_key = URLSafeTimedSerializer("not our key", salt=SALTS["confirm"])
    cases = [
        f"/confirm/{forged}", "/confirm/garbage", "/confirm/" + "x" * 3000,
        f"/confirm/{other_key.dumps(sub['confirmation_id'])}",
        f"/confirm/{unsub}", f"/confirm/{prefs}",  # other purposes, other salts
        f"/unsubscribe/{token}", f"/unsubscribe/{prefs}", f"/preferences/{token}",
        f"/preferences/{unsub}", "/unsubscribe/%00%ff", "/preferences/a.b.c",
    ]
    bodies = set()
    for path in cases:
        for resp in (w.anon.get(path), w.anon.post(path, data={"sub": "news|email"})):
            assert resp.status_code == 400, (path, resp.status_code, resp.text[:200])
            assert resp.headers["cache-control"] == "no-store"
            bodies.add(resp.text)
    assert len(bodies) == 1 and INVALID in bodies.pop()
    assert w.status("alice", "news", "email") == "pending"
    assert len(w.ledger("alice")) == 1


def test_a_link_for_an_erased_contact_is_invalid(w: World) -> None:
    sub = subscribe(w)
    link = confirm_link(w, sub["message_id"])
    assert w.http.delete("/v1/contacts/alice").status_code == 200
    resp = w.anon.post(link)
    assert resp.status_code == 400 and INVALID in resp.text


def test_sms_confirmation_carries_the_link_and_stop(w: World) -> None:
    sub = subscribe(w, channel="sms")
    msg = w.http.get(f"/v1/messages/{sub['message_id']}").json()
    assert msg["channel"] == "sms" and msg["to"] == "+14155550100"
    assert "STOP" in msg["content"]["text"] and len(msg["content"]["text"]) <= 320
    assert w.anon.post(confirm_link(w, sub["message_id"])).status_code == 200
    assert w.status("alice", "news", "sms") == "granted"
    assert w.status("alice", "news", "email") is None  # one channel at a time


def test_single_opt_in_topic_is_granted_at_once(w: World) -> None:
    w.topic("tips", description="Tips")
    r = w.http.post("/v1/contacts/alice/subscriptions", json={
        "topic": "tips", "channel": "email", "source": "api", "ip": "198.51.100.1"})
    assert r.status_code == 201 and r.json()["status"] == "granted"
    [row] = w.ledger("alice")
    assert (row["status"], row["source"], row["ip"]) == ("granted", "api", "198.51.100.1")
    again = w.http.post("/v1/contacts/alice/subscriptions", json={"topic": "tips",
                                                                   "channel": "email"})
    assert again.status_code == 201 and again.json()["changed"] is False
    assert len(w.ledger("alice")) == 1


def test_subscribe_refuses_what_it_cannot_do(w: World) -> None:
    w.contact("bob", email="bob@example.com")

    def post(ref: str, body: dict[str, object]) -> tuple[int, list[str]]:
        r = w.http.post(f"/v1/contacts/{ref}/subscriptions", json=body)
        fields = [f["field"] for f in r.json()["error"].get("fields", [])]
        return r.status_code, fields

    assert post("alice", {"topic": "nope", "channel": "email"}) == (422, ["topic"])
    assert post("bob", {"topic": "news", "channel": "sms"}) == (422, ["channel"])
    assert post("bob", {"topic": "news", "channel": "fax"})[0] == 422
    assert post("bob", {"topic": "news", "channel": "email", "source": "double_opt_in"}) \
        == (422, ["source"])
    assert post("nobody", {"topic": "news", "channel": "email"})[0] == 404
    assert w.anon.post("/v1/contacts/alice/subscriptions",
                       json={"topic": "news", "channel": "email"}).status_code == 401
    assert w.ledger("bob") == []


def test_confirmations_waiting_are_capped(w: World) -> None:
    for _ in range(3):
        subscribe(w)
    r = w.http.post("/v1/contacts/alice/subscriptions", json={"topic": "news",
                                                               "channel": "email"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "topic"
    assert [x["status"] for x in w.ledger("alice")] == ["pending"] * 3


def test_cli_subscribe(cli: CLI, tmp_path: Path) -> None:
    cfg = tmp_path / "pushguard.toml"
    cfg.write_text(config_text(9))
    cli.env["PUSHGUARD_CONFIG"] = str(cfg)
    cli("db", "upgrade")
    cli("topics", "add", "news", "--kind", "marketing", "--double-opt-in")
    cli("topics", "add", "tips", "--kind", "marketing")
    cli("contacts", "add", "carol", "--email", "carol@example.com")
    pending = cli("contacts", "subscribe", "carol", "news", "email").stdout
    found = re.search(r"confirmation (cnf_\w+) sent as message (msg_\w+)", pending)
    assert found and "pending" in pending, pending
    granted = cli("contacts", "subscribe", "carol", "tips", "email", "--source", "admin").stdout
    assert granted.startswith("granted tips on email"), granted
    shown = json.loads(cli("contacts", "show", "carol", "--json").stdout)
    assert {(c["topic"], c["status"], c["source"]) for c in shown["consent"]} == {
        ("news", "pending", "form"), ("tips", "granted", "admin")}
    msg = json.loads(cli("status", found.group(2), "--json").stdout)
    assert msg["state"] == "queued" and "/confirm/" in msg["content"]["text"]
    bad = cli("contacts", "subscribe", "carol", "news", "sms", check=False)
    assert bad.returncode == 1 and "channel" in bad.stderr
    unknown = cli("contacts", "subscribe", "carol", "nope", "email", check=False)
    assert unknown.returncode == 1 and "topic" in unknown.stderr


@pytest.mark.parametrize(("channel", "consent_ch", "ptype"), [
    ("email", "email", "smtp"), ("sms", "sms", "twilio"), ("sms", "sms", "http"),
    ("fcm", "push", "fcm"), ("apns", "push", "apns"), ("webpush", "webpush", "webpush"),
    ("chat", "chat", "slack"), ("chat", "chat", "telegram"), ("chat", "chat", "apprise"),
    ("webhook", "webhook", "webhook"),
])
def test_every_channel_gets_a_confirmation_its_providers_accept(
        channel: str, consent_ch: str, ptype: str) -> None:
    long_label = "Weekly\nproduct news " * 20
    url = "https://pg.example/confirm/" + "t" * 120
    content = confirmation_content(channel, long_label, consent_ch, url)
    provider_class(ptype).validate_content(channel, content)  # raises InputError if not
    assert url in json.dumps(content)
