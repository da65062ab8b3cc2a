"""``/v1/templates`` on a live API: create, version, list, get, lint, render."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import LiveAPI
from tests.templates.linkserver import LinkServer, link_server


@pytest.fixture
def http(live_api: LiveAPI) -> Iterator[httpx.Client]:
    with live_api.client() as c:
        c.post("/v1/topics", json={"name": "news", "kind": "marketing", "description": "n"})
        for ext, attrs in (("ann", {"first_name": "Ann"}), ("bob", {})):
            r = c.post("/v1/contacts", json={"external_id": ext, "attributes": attrs})
            assert r.status_code == 200, r.text
        yield c


WELCOME: dict[str, Any] = {
    "name": "welcome", "channel": "email", "topic": "news",
    "content": {"subject": "Hi {{ contact.attributes.first_name | default('there') }}",
                "html": '<p>{{ data.offer }}</p><a href="{{ unsubscribe_url }}">Stop</a>'},
    "data": {"offer": "Socks"},
}


def test_create_version_list_get(http: httpx.Client) -> None:
    r = http.post("/v1/templates", json=WELCOME)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "welcome" and body["id"].startswith("tpl_")
    assert body["version"]["version"] == 1 and body["lint"]["findings"] == []
    again = http.post("/v1/templates", json=WELCOME)
    assert again.status_code == 422
    assert again.json()["error"]["fields"][0]["field"] == "name"
    r = http.post(f"/v1/templates/{body['id']}/versions", json={
        "locale": "fr", "content": {"subject": "Salut", "html": "<p>{{ data.offer }}</p>"},
        "data": {"offer": "Chaussettes"}})
    assert r.status_code == 201, r.text
    assert r.json()["version"]["version"] == 2
    assert [f["code"] for f in r.json()["lint"]["findings"]] == ["no_unsubscribe_link"]
    listed = http.get("/v1/templates").json()["templates"]
    assert [(t["name"], t["locales"]) for t in listed] == [("welcome", {"default": 1, "fr": 2})]
    got = http.get("/v1/templates/welcome").json()
    assert [v["version"] for v in got["versions"]] == [1, 2]
    assert got["current"]["fr"]["content"]["subject"] == "Salut"
    assert http.get("/v1/templates/welcome", params={"version": 1}).json()[
        "version"]["content"] == WELCOME["content"]
    assert http.get("/v1/templates/nope").status_code == 404
    assert http.post("/v1/templates/nope/lint").status_code == 404


def test_lint_errors_refuse_the_save_naming_each_field(http: httpx.Client) -> None:
    r = http.post("/v1/templates", json={
        "name": "bad", "channel": "email",
        "content": {"subject": "Hi {{ first_name }}", "text": "ok\n{{ contact.name }}"}})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["type"] == "lint_failed"
    assert [f["field"] for f in err["fields"]] == ["content.subject", "content.text"]
    assert err["fields"][1]["problem"] == "line 2: contact has no field 'name'"
    assert {f["code"] for f in r.json()["findings"]} == {"unknown_variable"}
    assert http.get("/v1/templates").json()["templates"] == []
    shape = http.post("/v1/templates", json={"name": "x", "channel": "sms", "content": {}})
    assert shape.status_code == 422
    assert shape.json()["error"]["fields"] == [{"field": "content.text",
                                                "problem": "is required for SMS"}]
    unknown = http.post("/v1/templates", json={**WELCOME, "topic": "nope"})
    assert unknown.status_code == 422 and unknown.json()["error"]["fields"][0]["field"] == "topic"


def test_render_previews_for_a_contact_or_sample_data(http: httpx.Client) -> None:
    http.post("/v1/templates", json={
        "name": "hello", "channel": "email",
        "content": {"subject": "Hi {{ contact.attributes.first_name }}", "text": "x"}})
    r = http.post("/v1/templates/hello/render", json={"contact": "ann"})
    assert r.status_code == 200 and r.json()["content"] == {"subject": "Hi Ann", "text": "x"}
    r = http.post("/v1/templates/hello/render", json={
        "contact": {"attributes": {"first_name": "Zed"}}})
    assert r.json()["content"]["subject"] == "Hi Zed"
    r = http.post("/v1/templates/hello/render", json={"contact": "bob"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"] == [{
        "field": "content.subject",
        "problem": "line 1: 'contact.attributes.first_name' is undefined"}]
    r = http.post("/v1/templates/hello/render", json={
        "contact": {"attributes": {"first_name": "Ava\r\nBcc: x@evil.example"}}})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "content.subject"
    assert "line break" in r.json()["error"]["fields"][0]["problem"]
    assert http.post("/v1/templates/hello/render", json={"contact": "nobody"}).status_code == 404


def test_lint_on_demand_checks_links_once(http: httpx.Client, live_api: LiveAPI) -> None:
    links: LinkServer
    with link_server() as links:
        u = links.url
        r = http.post("/v1/templates", json={
            "name": "promo", "channel": "email", "topic": "news",
            "content": {"subject": "Sale", "html": (
                f'<a href="{u}/ok">ok</a>\n<a href="{u}/missing">x</a>\n'
                f'<img src="{u}/img/fake.png"><a href="{{{{ unsubscribe_url }}}}">u</a>')}})
        assert r.status_code == 201, r.text
        first = http.post("/v1/templates/promo/lint")
        assert first.status_code == 200, first.text
        report = first.json()
        assert (report["errors"], report["warnings"]) == (2, 0)
        (rep,) = report["reports"]
        assert [(f["code"], f["line"]) for f in rep["findings"]] == [
            ("link_http_error", 2), ("image_not_image", 3)]
        assert rep["links_checked"] and len(rep["links"]) == 3
        second = http.post("/v1/templates/promo/lint", json={"sample": 5})
        assert [x["cached"] for x in second.json()["reports"][0]["links"]] == [True] * 3
        assert links.hits["/ok"] == links.hits["/missing"] == links.hits["/img/fake.png"] == 1
        offline = http.post("/v1/templates/promo/lint", json={"check_links": False}).json()
        assert offline["errors"] == 0 and not offline["reports"][0]["links_checked"]


def test_templates_need_an_api_key(live_api: LiveAPI) -> None:
    with httpx.Client(base_url=live_api.url) as anon:
        assert anon.get("/v1/templates").status_code == 401
        assert anon.post("/v1/templates", json=WELCOME).status_code == 401
