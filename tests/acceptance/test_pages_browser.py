"""The public pages in a real browser (headless Chromium driven by Playwright): opening a link
changes nothing, the buttons do, the strict Content-Security-Policy lets the forms work, and
no page leaks its token through the Referer header.

Playwright's own browser downloads are not used: the system Chromium is (``apt-get install
chromium``). Without one the test is skipped, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.audience_kit import World, path_of, world

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is a test dependency (pip install -e '.[test]')")

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str | None:
    explicit = os.environ.get("PUSHGUARD_TEST_CHROMIUM")
    if explicit:
        return explicit
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = chromium_binary()
    if exe is None:
        pytest.skip("no Chromium binary on PATH (apt-get install chromium, or set "
                    "PUSHGUARD_TEST_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    with world(tmp_path) as got:
        got.topic("news", description="Weekly product news")
        got.topic("offers", description="Special offers")
        got.topic("digest", double_opt_in=True, description="Monthly digest")
        got.contact("alice", email="alice@example.com")
        got.grant("alice", "news", "email")
        got.grant("alice", "offers", "email")
        yield got


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    p = context.new_page()
    p.set_default_timeout(15_000)
    problems: list[str] = []
    p.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    p.problems = problems
    yield p
    context.close()


def test_unsubscribe_then_preferences_in_a_browser(w: World, page: Any) -> None:
    cid = w.http.get("/v1/contacts/alice").json()["id"]
    link = w.app.links.unsubscribe_url(cid, "news", "email")
    referers: list[str | None] = []
    page.on("request", lambda r: referers.append(r.headers.get("referer"))
            if "/preferences/" in r.url else None)

    page.goto(link)
    assert "You are subscribed" in page.inner_text("#status")
    assert w.status("alice", "news", "email") == "granted"
    page.reload()  # opened twice, as a scanner and then the person would
    assert w.status("alice", "news", "email") == "granted"

    page.click("#unsubscribe")
    page.wait_for_selector("text=You are unsubscribed")
    assert page.inner_text("#title") == "You are unsubscribed"
    assert w.status("alice", "news", "email") == "withdrawn"
    last = w.ledger("alice")[-1]
    assert (last["source"], last["proof"]) == ("unsubscribe", "unsubscribe page")
    assert "Chrome" in (last["user_agent"] or "")

    page.click("#preferences")
    page.wait_for_selector("#save")
    assert referers and referers[0] is None  # the token never leaves in a Referer
    news = page.locator('input[name="sub"][value="news|email"]')
    offers = page.locator('input[name="sub"][value="offers|email"]')
    assert not news.is_checked() and offers.is_checked()
    offers.uncheck()
    page.click("#save")
    page.wait_for_selector("#saved")
    assert not page.locator('input[name="sub"][value="offers|email"]').is_checked()
    assert w.status("alice", "offers", "email") == "withdrawn"
    row = w.ledger("alice")[-1]
    assert (row["topic"], row["status"], row["source"]) == ("offers", "withdrawn", "preferences")
    assert "Chrome" in (row["user_agent"] or "")
    assert not [p for p in page.problems if "Content Security Policy" in p], page.problems


def test_confirm_in_a_browser(w: World, page: Any) -> None:
    r = w.http.post("/v1/contacts/alice/subscriptions", json={"topic": "digest",
                                                               "channel": "email"})
    assert r.status_code == 202
    text = w.http.get(f"/v1/messages/{r.json()['message_id']}").json()["content"]["text"]
    found = re.search(r"(https?://\S+/confirm/\S+)", text)
    assert found
    page.goto(found.group(1))
    assert page.inner_text("#title") == "Confirm your subscription"
    assert w.status("alice", "digest", "email") == "pending"
    page.click("#confirm")
    page.wait_for_selector("text=is confirmed")
    assert w.status("alice", "digest", "email") == "granted"
    assert w.ledger("alice")[-1]["source"] == "double_opt_in"
    # a tampered link shows the one error page
    good = path_of(found.group(1))
    page.goto(w.url + good[:-2] + ("yy" if good.endswith("xx") else "xx"))
    assert page.inner_text("#title") == "This link is invalid or has expired."
    assert not [p for p in page.problems if "Content Security Policy" in p], page.problems
