"""JSON that parses but could never be stored or read back, through the real API: a lone
UTF-16 surrogate (escaped, or as raw CESU-8 bytes) or nesting past 64 levels gets a 422 naming
the field, nothing is written, and every list that would have held it still reads. In a
batch, such a message gets its own error and its neighbours are accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.acceptance.conftest import LiveAPI

HOOK = "http://127.0.0.1:9/hooks/a"
JSON = {"Content-Type": "application/json"}


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def raw_body(doc: dict[str, Any], surrogate: str = "\\ud800") -> bytes:
    """``doc`` as JSON with ``SURROGATE`` replaced by a lone surrogate (bytes or escape)."""
    return json.dumps(doc).replace('"SURROGATE"', f'"x{surrogate}"').encode(
        "utf-8", "surrogatepass")


@pytest.mark.parametrize("surrogate", ["\\ud800", "\\uDFFF", "\ud800"])
def test_a_lone_surrogate_in_content_is_refused_and_nothing_is_stored(
    live_api: LiveAPI, surrogate: str,
) -> None:
    doc = {"channel": "webhook", "to": HOOK, "content": {"event": {"note": "SURROGATE"}}}
    with live_api.client() as c:
        r = c.post("/v1/messages", content=raw_body(doc, surrogate), headers=JSON)
        assert r.status_code == 422, r.text
        [field] = r.json()["error"]["fields"]
        assert field["field"] == "content.event.note" and "surrogate" in field["problem"]
        assert c.get("/v1/messages").status_code == 200
    assert live_api.app.store.list_messages() == []


def test_a_surrogate_pair_is_text_and_reads_back(live_api: LiveAPI) -> None:
    body = b'{"channel": "webhook", "to": "' + HOOK.encode() + \
        b'", "content": {"smile": "\\ud83d\\ude00", "k\\u00e9": "caf\\u00e9"}}'
    with live_api.client() as c:
        r = c.post("/v1/messages", content=body, headers=JSON)
        assert r.status_code == 202, r.text
        got = c.get(f"/v1/messages/{r.json()['id']}").json()
    assert got["content"] == {"smile": "\U0001f600", "ké": "café"}


def test_nesting_past_the_limit_is_refused_and_below_it_reads_back(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        deep = c.post("/v1/messages", json={"channel": "webhook", "to": HOOK,
                                             "content": nested(70)})
        assert deep.status_code == 422, deep.text
        [field] = deep.json()["error"]["fields"]
        assert field["field"] == "content" and "nested deeper than 64" in field["problem"]
        ok = c.post("/v1/messages", json={"channel": "webhook", "to": HOOK,
                                           "content": nested(50)})
        assert ok.status_code == 202, ok.text
        assert c.get(f"/v1/messages/{ok.json()['id']}").json()["content"] == nested(50)
        # too deep even for the JSON parser: the same answer, not a 500
        absurd = c.post("/v1/messages", content=b"[" * 100_000 + b"]" * 100_000,
                        headers=JSON)
        assert absurd.status_code == 422 and "nested" in absurd.text
    assert len(live_api.app.store.list_messages()) == 1


def test_a_batch_too_deep_for_the_parser_is_a_422(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        r = c.post("/v1/messages/batch", content=b"[" * 100_000 + b"]" * 100_000,
                   headers=JSON)
    assert r.status_code == 422 and "nested deeper than 64" in r.text, r.text


def test_in_a_batch_each_bad_message_gets_its_own_error(live_api: LiveAPI) -> None:
    good = {"channel": "webhook", "to": HOOK, "content": {"n": 1}}
    doc = {"messages": [good, {**good, "content": {"s": "SURROGATE"}},
                        {**good, "content": nested(70)}, good]}
    with live_api.client() as c:
        r = c.post("/v1/messages/batch", content=raw_body(doc), headers=JSON)
    assert r.status_code == 202, r.text
    got = r.json()
    assert (got["accepted"], got["rejected"]) == (2, 2)
    errors = {e["index"]: e["error"]["fields"][0] for e in got["results"] if "error" in e}
    assert errors[1]["field"] == "messages[1].content.s"
    assert errors[2]["field"] == "messages[2].content"
    assert "nested deeper than 64 levels" in errors[2]["problem"]


@pytest.mark.parametrize(("path", "doc", "field"), [
    ("/v1/contacts", {"external_id": "u9", "attributes": {"plan": "SURROGATE"}},
     "attributes.plan"),
    ("/v1/segments", {"name": "s", "filter": {"attribute": "plan", "op": "eq",
                                              "value": "SURROGATE"}}, "filter.value"),
    ("/v1/segments/preview", {"filter": {"attribute": "plan", "value": "SURROGATE"}},
     "filter.value"),
    ("/v1/templates", {"name": "t", "channel": "webhook", "content": {"json": {
        "x": "SURROGATE"}}}, "content.json.x"),
])
def test_other_free_form_documents_are_checked_too(live_api: LiveAPI, path: str,
                                                   doc: dict[str, Any], field: str) -> None:
    with live_api.client() as c:
        r = c.post(path, content=raw_body(doc), headers=JSON)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["fields"][0]["field"] == field
        for listing in ("/v1/contacts", "/v1/segments", "/v1/templates"):
            assert c.get(listing).status_code == 200, listing


def test_a_template_that_renders_a_lone_surrogate_is_refused(live_api: LiveAPI) -> None:
    """Jinja turns the escape in a string literal into the surrogate itself: the body is
    clean, the rendered text is not. The lint on save renders it and refuses it."""
    template = {"name": "t1", "channel": "webhook",
                "content": {"json": {"x": "{{ '\\ud800' }}", "ok": "{{ 'fine' }}"}}}
    with live_api.client() as c:
        saved = c.post("/v1/templates", json=template)
        assert saved.status_code == 422, saved.text
        [field] = saved.json()["error"]["fields"]
        assert field["field"] == "content.json.x" and "not valid Unicode" in field["problem"]
        assert c.get("/v1/templates").status_code == 200


@pytest.mark.parametrize(("query", "body", "status", "text"), [
    ("", b"external_id,email\nx\x80,a@example.com\n", 200, "x\ufffd"),  # a row rejected
    ("?encoding=unicode_escape", b"external_id,attr.x\nu1,\\ud800\n", 422, "encoding"),
    ("?encoding=utf-8%00", b"external_id\nu1\n", 422, "unknown encoding"),
])
def test_a_csv_import_never_stores_or_answers_what_is_not_text(
        live_api: LiveAPI, query: str, body: bytes, status: int, text: str) -> None:
    with live_api.client() as c:
        r = c.post(f"/v1/contacts/import{query}", content=body,
                   headers={"Content-Type": "text/csv"})
        assert r.status_code == status and text in r.text, r.text
        assert c.get("/v1/contacts").status_code == 200
