"""Unsubscribe and the preference centre over the real API: RFC 8058 one-click POSTs
(urlencoded and multipart) withdraw consent and answer 200 without a redirect, a GET changes
nothing, a marketing email delivered through the SMTP sandbox carries working
List-Unsubscribe headers and body link, and the preference centre saves ticks and pauses all,
each change in the ledger with its source."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from pushguard.sandbox.profiles import Profiles
from pushguard.sandbox.recorder import Recorder
from pushguard.sandbox.smtp import SmtpServer
from pushguard.states import State
from tests.acceptance.audience_kit import BACKENDS, World, database, path_of, world

PAGE_HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-robots-tag": "noindex",
}


@pytest.fixture(params=BACKENDS)
def w(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    with world(tmp_path, database_url=database(request, tmp_path)) as got:
        got.topic("news", description="Weekly product news")
        got.topic("offers", description="Special offers")
        got.topic("receipts", kind="transactional")
        got.contact("alice", email="alice@example.com", sms="+1 415 555 0100")
        got.grant("alice", "news", "email")
        yield got


def cid_of(w: World, ref: str = "alice") -> str:
    return str(w.http.get(f"/v1/contacts/{ref}").json()["id"])


def unsub_path(w: World, topic: str = "news", channel: str = "email") -> str:
    return path_of(w.app.links.unsubscribe_url(cid_of(w), topic, channel))


def prefs_path(w: World) -> str:
    return path_of(w.app.links.preferences_url(cid_of(w)))


def assert_page_headers(resp_headers: dict[str, str]) -> None:
    for name, value in PAGE_HEADERS.items():
        assert resp_headers[name] == value
    csp = resp_headers["content-security-policy"]
    for part in ("default-src 'none'", "style-src 'unsafe-inline'", "form-action 'self'"):
        assert part in csp


def test_get_shows_the_page_and_changes_nothing(w: World) -> None:
    path = unsub_path(w)
    for _ in range(2):
        page = w.anon.get(path)
        assert page.status_code == 200
        assert_page_headers(dict(page.headers))
        assert '<form method="post">' in page.text and "Weekly product news" in page.text
        assert "/preferences/" in page.text
    assert w.status("alice", "news", "email") == "granted"
    assert len(w.ledger("alice")) == 1
    assert w.send("alice", "email", "news")["state"] == "queued"
    prefs = re.search(r'href="(/preferences/[^"]+|http[^"]+/preferences/[^"]+)"', page.text)
    assert prefs, page.text
    assert w.anon.get(path_of(prefs.group(1)) if prefs.group(1).startswith("http")
                      else prefs.group(1)).status_code == 200


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_post_unsubscribes_once(w: World, encoding: str) -> None:
    path = unsub_path(w)

    def one_click() -> tuple[int, str, dict[str, str]]:
        if encoding == "urlencoded":
            r = w.anon.post(path, content=b"List-Unsubscribe=One-Click", headers={
                "Content-Type": "application/x-www-form-urlencoded"})
        else:
            r = w.anon.post(path, files={"List-Unsubscribe": (None, "One-Click")})
            assert r.request.headers["content-type"].startswith("multipart/form-data")
        return r.status_code, r.text, dict(r.headers)

    status, text, headers = one_click()
    assert status == 200 and "location" not in headers
    assert "You are unsubscribed" in text
    assert_page_headers(headers)
    assert w.status("alice", "news", "email") == "withdrawn"
    granted, withdrawn = w.ledger("alice")
    assert (withdrawn["status"], withdrawn["source"], withdrawn["proof"]) == (
        "withdrawn", "unsubscribe", "one-click (RFC 8058)")
    assert withdrawn["ip"] == "127.0.0.1" and withdrawn["actor"] == "person"
    assert one_click()[0] == 200  # a mailbox provider retrying
    assert len(w.ledger("alice")) == 2
    stopped = w.send("alice", "email", "news")
    assert stopped["state"] == "suppressed" and stopped["failure"]["cause"] == "NO_CONSENT"
    # transactional mail still goes
    assert w.send("alice", "email", "receipts")["state"] == "queued"
    assert w.send("alice", "email", None)["state"] == "queued"


def test_the_page_button_unsubscribes_and_the_page_then_says_so(w: World) -> None:
    path = unsub_path(w)
    resp = w.anon.post(path, data={"via": "page"})
    assert resp.status_code == 200
    assert w.ledger("alice")[-1]["proof"] == "unsubscribe page"
    page = w.anon.get(path)
    assert page.status_code == 200 and "You are not subscribed" in page.text
    assert "<form" not in page.text


def test_a_link_of_an_erased_contact_answers_the_same(w: World) -> None:
    path = unsub_path(w)
    before = w.anon.post(unsub_path(w, "offers"))  # a live contact, for comparison
    assert w.http.delete("/v1/contacts/alice").status_code == 200
    after = w.anon.post(path, data={"List-Unsubscribe": "One-Click"})
    assert after.status_code == before.status_code == 200
    strip = re.compile(r'<p><a id="preferences".*?</p>|Special offers|Weekly product news')
    assert strip.sub("", after.text) == strip.sub("", before.text)


def test_unreadable_bodies_never_fail_the_server(w: World) -> None:
    path = unsub_path(w)
    odd = w.anon.post(path, content=b"--xx\r\nbroken", headers={
        "Content-Type": "multipart/form-data; boundary=xx"})
    assert odd.status_code == 200  # still an unsubscribe request: the token says who
    prefs = prefs_path(w)
    for body, ctype in ((b"--xx\r\nbroken", "multipart/form-data; boundary=xx"),
                        (b"", "application/x-www-form-urlencoded"),
                        (b"sub=news%7Cemail", "application/x-www-form-urlencoded"),
                        (b"action=explode", "application/x-www-form-urlencoded"),
                        (b"action=save&sub=nosuch%7Cemail", "application/x-www-form-urlencoded"),
                        (b"action=save&sub=news", "application/x-www-form-urlencoded")):
        r = w.anon.post(prefs, content=body, headers={"Content-Type": ctype})
        assert r.status_code == 400, (body, r.status_code, r.text[:300])
    assert [x["source"] for x in w.ledger("alice")] == ["form", "unsubscribe"]


def test_preference_centre_saves_ticks_and_pauses_all(w: World) -> None:
    w.topic("digest", double_opt_in=True, description="Monthly digest")
    w.grant("alice", "news", "sms")
    w.grant("alice", "offers", "email")
    path = prefs_path(w)
    page = w.anon.get(path)
    assert page.status_code == 200
    assert_page_headers(dict(page.headers))
    boxes = dict(re.findall(r'name="sub" value="([^"]+)"( checked)?', page.text))
    assert boxes == {"digest|email": "", "digest|sms": "", "news|email": " checked",
                     "news|sms": " checked", "offers|email": " checked", "offers|sms": ""}
    assert 'value="receipts|' not in page.text  # transactional topics need no consent

    # untick news by SMS, tick the digest by email (confirmed opt-in: a confirmation goes out)
    saved = w.anon.post(path, data={"sub": ["news|email", "offers|email", "digest|email"],
                                    "action": "save"}, headers={"User-Agent": "Prefs/1"})
    assert saved.status_code == 200 and 'id="saved"' in saved.text
    assert "confirmation" in saved.text
    assert w.status("alice", "news", "sms") == "withdrawn"
    assert w.status("alice", "news", "email") == "granted"
    assert w.status("alice", "digest", "email") == "pending"
    rows = w.ledger("alice")[3:]
    assert [(r["topic"], r["channel"], r["status"], r["source"]) for r in rows] == [
        ("news", "sms", "withdrawn", "preferences"),
        ("digest", "email", "pending", "preferences")]
    assert all(r["user_agent"] == "Prefs/1" for r in rows)
    digest_proof = rows[1]["proof"]
    assert digest_proof.startswith("cnf_")
    assert w.send("alice", "sms", "news")["state"] == "suppressed"
    assert w.send("alice", "email", "news")["state"] == "queued"

    paused = w.anon.post(path, data={"sub": ["news|email"], "action": "pause"})
    assert paused.status_code == 200
    current = w.http.get("/v1/contacts/alice/consent").json()["current"]
    assert {c["status"] for c in current} == {"withdrawn"}
    pause_rows = w.ledger("alice")[5:]
    assert {(r["topic"], r["channel"]) for r in pause_rows} == {
        ("news", "email"), ("offers", "email"), ("digest", "email")}
    assert {(r["source"], r["proof"]) for r in pause_rows} == {
        ("preferences", "preference centre: pause all")}
    assert "checked" not in paused.text
    for topic in ("news", "offers"):
        assert w.send("alice", "email", topic)["state"] == "suppressed"
    # the digest confirmation sent before the pause no longer grants anything
    msgs = w.http.get("/v1/messages", params={"limit": 50}).json()["messages"]
    confirm = [m for m in msgs if m["topic"] is None and m["channel"] == "email"]
    text = w.http.get(f"/v1/messages/{confirm[0]['id']}").json()["content"]["text"]
    link = re.search(r"(https?://\S+/confirm/\S+)", text)
    assert link
    assert w.anon.post(path_of(link.group(1))).status_code == 400
    assert w.status("alice", "digest", "email") == "withdrawn"


def test_a_channel_without_an_address_can_only_be_switched_off(w: World) -> None:
    w.contact("bob", email="bob@example.com")
    w.grant("bob", "news", "sms")  # consented once, by a number since removed
    bob = str(w.http.get("/v1/contacts/bob").json()["id"])
    path = path_of(w.app.links.preferences_url(bob))
    boxes = dict(re.findall(r'name="sub" value="([^"]+)"( checked)?', w.anon.get(path).text))
    assert boxes == {"news|email": "", "news|sms": " checked", "offers|email": ""}
    refused = w.anon.post(path, data={"action": "save", "sub": ["news|sms", "offers|sms"]})
    assert refused.status_code == 400
    saved = w.anon.post(path, data={"action": "save", "sub": ["offers|email"]})
    assert saved.status_code == 200
    assert w.status("bob", "news", "sms") == "withdrawn"
    assert w.status("bob", "offers", "email") == "granted"
    assert 'value="news|sms"' not in saved.text


async def test_marketing_email_through_smtp_carries_working_one_click(tmp_path: Path) -> None:
    server = SmtpServer(Profiles.from_obj({"smtp": {}}), Recorder(), keep_messages=10)
    port = await server.start()
    try:
        with world(tmp_path, smtp_port=port) as w:
            w.topic("news", description="Weekly product news")
            w.contact("alice", email="alice@example.com")
            w.grant("alice", "news", "email")
            sent = w.send("alice", "email", "news", subject="Spring sale",
                          text="Hello Alice, 20% off.", html="<p>Hello Alice</p>")
            assert sent["state"] == "queued"
            providers = w.app.build_providers()
            worker = w.app.build_worker(providers, poll=0.02)
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            deadline = time.monotonic() + 20
            view = None
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                view = w.app.store.get(sent["id"])
                if view is not None and view.state is State.DELIVERED:
                    break
            stop.set()
            await task
            for p in providers.values():
                await p.close()
            assert view is not None and view.state is State.DELIVERED, view
            raw = server.handler.messages[-1]
            mail = message_from_bytes(raw, policy=policy.default)
            assert isinstance(mail, EmailMessage)
            header = str(mail["List-Unsubscribe"])
            assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            found = re.fullmatch(r"<(http://127\.0\.0\.1:\d+/unsubscribe/[\w.-]+)>", header)
            assert found, header
            url = found.group(1)
            text = mail.get_body(("plain",))
            html = mail.get_body(("html",))
            assert text is not None and html is not None
            assert f"Unsubscribe: {url}" in text.get_content()
            assert f'href="{url}"' in html.get_content()
            assert "/preferences/" in text.get_content()

            assert w.anon.get(path_of(url)).status_code == 200
            assert w.status("alice", "news", "email") == "granted"
            # what Gmail does: POST the header's URL, multipart, no cookies, no auth
            resp = w.anon.post(url, files={"List-Unsubscribe": (None, "One-Click")})
            assert resp.status_code == 200 and not resp.is_redirect
            assert w.status("alice", "news", "email") == "withdrawn"
            assert w.ledger("alice")[-1]["proof"] == "one-click (RFC 8058)"
            assert w.send("alice", "email", "news")["state"] == "suppressed"
    finally:
        await server.stop()
