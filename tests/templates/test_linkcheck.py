"""Links and images over real HTTP: a server on loopback plays good pages, 404s, 500s,
redirect loops, slow answers and bad images; the outbound guard allows only 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from pushguard.audience.service import Audience
from pushguard.ssrf import OutboundGuard
from pushguard.templates.linkcheck import LinkChecker, from_html, from_text
from pushguard.templates.models import TemplateIn
from pushguard.templates.service import Templates
from tests.templates.conftest import add_contacts
from tests.templates.linkserver import LinkServer


def checker(guard: OutboundGuard, **kw: float) -> LinkChecker:
    return LinkChecker(guard, **{"timeout": 1.0, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("path", "image", "code", "status"), [
    ("/ok", False, "ok", 200),
    ("/moved", False, "ok", 200),
    ("/missing", False, "http_error", 404),
    ("/broken", False, "http_error", 500),
    ("/loop/a", False, "redirect_loop", None),
    ("/chain/0", False, "too_many_redirects", None),
    ("/to-metadata", False, "unsafe", None),
    ("/slow", False, "timeout", None),
    ("/img/ok.png", True, "ok", 200),
    ("/img/fake.png", True, "not_image", 200),
    ("/img/big.png", True, "image_too_large", 200),
    ("/img/big-chunked.jpg", True, "image_too_large", 200),
])
async def test_each_kind_of_link_is_judged(links: LinkServer, guard: OutboundGuard, path: str,
                                           image: bool, code: str, status: int | None) -> None:
    url = links.url + path
    started = time.monotonic()
    got = (await checker(guard, timeout=0.5).check([(url, image)]))[(url, image)]
    assert (got.code, got.status) == (code, status), got
    assert time.monotonic() - started < 2
    if code != "ok":
        assert got.problem
    if path == "/moved":
        assert got.redirects == 1 and got.final_url == links.url + "/ok"
    if path == "/loop/a":
        assert got.problem == (f"redirects in a loop: {links.url}/loop/a -> {links.url}/loop/b"
                               f" -> {links.url}/loop/a")
        assert links.hits["/loop/a"] == 1 and links.hits["/loop/b"] == 1
    if path == "/chain/0":
        assert links.hits["/chain/5"] == 1 and links.hits["/chain/6"] == 0
    if path == "/to-metadata":
        assert "169.254.169.254" in str(got.problem) and "link-local" in str(got.problem)
    if path == "/img/big.png":
        assert got.size == 3 * 1024 * 1024


async def test_results_are_cached_per_url(links: LinkServer, guard: OutboundGuard) -> None:
    now = [0.0]
    c = LinkChecker(guard, timeout=1.0, ttl=600, failure_ttl=60, clock=lambda: now[0])
    urls = [(links.url + "/ok", False), (links.url + "/missing", False),
            (links.url + "/img/ok.png", True), (links.url + "/ok", False)]
    first = await c.check(urls)
    again = await c.check(urls)
    assert links.hits["/ok"] == links.hits["/missing"] == links.hits["/img/ok.png"] == 1
    assert not any(r.cached for r in first.values()) and all(r.cached for r in again.values())
    assert again[(links.url + "/missing", False)].code == "http_error"
    now[0] = 61.0  # failures are asked again sooner than successes
    await c.check(urls)
    assert links.hits["/missing"] == 2 and links.hits["/ok"] == 1
    now[0] = 601.0
    await c.check(urls)
    assert links.hits["/ok"] == 2


async def test_checks_run_concurrently(links: LinkServer, guard: OutboundGuard) -> None:
    links.slow = 0.4
    urls = [(f"{links.url}/slow?n={i}", False) for i in range(8)]
    started = time.monotonic()
    got = await checker(guard, timeout=3.0, concurrency=8, per_host=8).check(urls)
    assert all(r.ok for r in got.values())
    assert time.monotonic() - started < 1.6  # eight 0.4 s answers, not 3.2 s in a row


async def test_the_guard_refuses_internal_hosts_before_any_request(links: LinkServer) -> None:
    closed = LinkChecker(OutboundGuard([]), timeout=1.0)
    url = links.url + "/ok"
    got = (await closed.check([(url, False)]))[(url, False)]
    assert got.code == "unsafe" and "loopback" in str(got.problem)
    assert links.hits["/ok"] == 0


def test_links_and_images_are_found_in_html_and_text() -> None:
    html = ('<p><a href="https://a.example/x?q=1&amp;r=2">a</a>\n'
            '<img src="https://i.example/p.png" srcset="https://i.example/p2.png 2x">'
            '<a href="mailto:x@y.z">m</a><a href="{{unsubscribe_url}}">u</a>'
            '<a href="#top">t</a><td background="https://i.example/bg.gif"></td></p>')
    assert from_html(html) == [("https://a.example/x?q=1&r=2", False, 1),
                               ("https://i.example/p.png", True, 2),
                               ("https://i.example/p2.png", True, 2),
                               ("https://i.example/bg.gif", True, 2)]
    assert from_text("See https://a.example/x.\nOr (https://b.example/y), {data.z}") == [
        ("https://a.example/x", False, 1), ("https://b.example/y", False, 2)]


async def test_lint_reports_broken_links_and_images_where_they_are(
        svc: Templates, audience: Audience, links: LinkServer) -> None:
    add_contacts(audience, {"external_id": "ann", "attributes": {"id": "7"}},
                 {"external_id": "bob", "attributes": {"id": "8"}})
    u = links.url
    html = (f'<a href="{u}/ok">fine</a>\n<a href="{u}/missing">gone</a>\n'
            f'<img src="{u}/img/fake.png">\n<a href="{u}/loop/a">loop</a>\n'
            f'<a href="{u}/broken?c={{{{ contact.attributes.id }}}}">per contact</a>')
    svc.create(TemplateIn(name="t", channel="email", content={
        "subject": "x", "html": html, "text": f"Also {u}/img/big.png"}), actor="t")
    (report,) = svc.lint("t")
    assert report.findings == [] and len(report.links) == 7
    await svc.check_links([report])
    got = {(f.code, f.severity, f.field, f.line) for f in report.findings}
    assert got == {("link_http_error", "error", "html", 2),
                   ("image_not_image", "error", "html", 3),
                   ("link_redirect_loop", "error", "html", 4),
                   ("link_http_error", "warning", "html", None),
                   }, report.findings
    assert sum(1 for f in report.findings if f.code == "link_http_error") == 3
    assert links.hits["/broken"] == 2  # one per distinct URL, i.e. per contact here
    await svc.check_links([report])
    assert links.hits["/missing"] == 1 and links.hits["/ok"] == 1
