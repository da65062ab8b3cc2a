"""Segments and campaigns over real HTTP: the whole life of a campaign (segment, create,
preflight, dry run, test send, a start refused by the pre-flight with its findings, a start
overridden and recorded in the campaign and the audit log, pause, resume, progress, cancel,
retry), and malformed input answered 422 naming the field, never 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pushguard.campaigns.runner import Runner
from tests.campaigns.kit import World, world
from tests.conftest import serve_api

pytestmark = pytest.mark.timeout(90)


def html(base: str) -> str:
    return (f'<p>Hello {{{{ contact.attributes.first_name }}}}</p>'
            f'<a href="{base}/missing">Our sale</a>'
            f'<a href="{{{{ unsubscribe_url }}}}">Unsubscribe</a>')


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[World, httpx.Client]]:
    with world(tmp_path) as w:
        w.topic("news")
        w.template("newsletter", html(w.links.url))
        w.contacts(8, plan="pro")
        w.contacts(4, prefix="free", plan="free")
        _, key = w.app.store.create_api_key("tests")
        with serve_api(w.app) as url, httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            yield w, client


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


def refused(r: httpx.Response, status: int, kind: str, field: str | None = None) -> Any:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["type"] == kind, body
    if field is not None:
        assert body["fields"][0]["field"] == field, body
    return body


def test_the_life_of_a_campaign_over_http(api: tuple[World, httpx.Client]) -> None:
    w, http = api
    seg = ok(http.post("/v1/segments", json={"name": "pros", "filter": {
        "attribute": "plan", "value": "pro"}}), 201)
    assert seg["filter"] == {"attribute": "plan", "value": "pro"}
    got = ok(http.get("/v1/segments/pros", params={"sample": 3}))
    assert got["count"] == 8 and len(got["sample"]) == 3
    assert ok(http.post("/v1/segments/preview", json={"filter": {
        "attribute": "plan", "value": "free"}, "sample": 0}))["count"] == 4
    assert [s["name"] for s in ok(http.get("/v1/segments"))["segments"]] == ["pros"]

    spec = {"name": "spring", "topic": "news", "segment": "pros", "seeds": ["qa@example.com"],
            "channels": [{"channel": "email", "template": "newsletter"}]}
    c = ok(http.post("/v1/campaigns", json=spec), 201)
    cid = c["id"]
    assert c["state"] == "draft" and c["segment"] == "pros"
    assert ok(http.get("/v1/campaigns"))["campaigns"][0]["id"] == cid

    report = ok(http.post(f"/v1/campaigns/{cid}/preflight"))
    assert report["recipients"] == 8 and report["blocking"] >= 1 and report["sample"] is None
    exact = ok(http.post(f"/v1/campaigns/{cid}/preflight", params={"exact": "true"}))
    assert exact["predicted"] == report["predicted"]
    bad = refused(http.post(f"/v1/campaigns/{cid}/preflight", params={"exact": "maybe"}),
                  422, "validation_error")
    assert "exact" in str(bad["fields"])
    link = next(f for f in report["findings"] if f["code"].startswith("template.link"))
    assert link["severity"] == "block" and link["url"].endswith("/missing") and link["fix"]

    plan = ok(http.post("/v1/campaigns/spring/dry-run", params={"limit": 2}))
    assert plan["outcomes"] == {"send": 8} and len(plan["plan"]) == 2
    sent = ok(http.post(f"/v1/campaigns/{cid}/test", json={"as": "c1"}))
    assert sent["rendered_as"] == "c1" and [s["to"] for s in sent["sent"]] == ["qa@example.com"]

    blocked = refused(http.post(f"/v1/campaigns/{cid}/start"), 409, "blocked_by_preflight")
    codes = {f["code"] for f in blocked["findings"]}
    assert any(code.startswith("template.link") for code in codes)
    assert all(f["severity"] == "block" and f["fix"] for f in blocked["findings"])
    assert ok(http.get(f"/v1/campaigns/{cid}"))["state"] == "draft"

    why = "the landing page goes live at nine"
    started = ok(http.post(f"/v1/campaigns/{cid}/start", json={"override": why}))
    assert started["state"] == "sending"
    override = started["override"]
    assert override["reason"] == why and override["by"].startswith("key:")
    assert {f["code"] for f in override["findings"]} == codes
    audit = ok(http.get("/v1/audit", params={"subject": f"campaign:{cid}"}))["entries"]
    entry = next(e for e in audit if e["action"] == "campaign.override")
    assert entry["detail"]["reason"] == why and set(entry["detail"]["codes"]) == codes
    assert entry["actor"] == override["by"]

    refused(http.post(f"/v1/campaigns/{cid}/resume"), 409, "conflict")
    refused(http.post(f"/v1/campaigns/{cid}/start", json={"override": why}), 409, "conflict")
    Runner(w.app.campaigns).tick()
    progress = ok(http.get(f"/v1/campaigns/{cid}/progress"))
    assert progress["state"] == "sending" and progress["recipients_total"] == 8
    assert progress["messages"] == {"queued": 8} and progress["waiting"] == 8

    paused = ok(http.post(f"/v1/campaigns/{cid}/pause", json={"reason": "typo in subject"}))
    assert paused["state"] == "paused" and paused["held"] == 8
    assert paused["paused_reason"].startswith("typo in subject (by key:")
    resumed = ok(http.post(f"/v1/campaigns/{cid}/resume"))
    assert resumed["state"] == "sending" and resumed["released"] == 8
    refused(http.post(f"/v1/campaigns/{cid}/retry", json={"causes": ["CONTENT_REJECTED"]}),
            409, "conflict")
    cancelled = ok(http.post(f"/v1/campaigns/{cid}/cancel"))
    assert cancelled["state"] == "cancelled" and cancelled["stopped"] == 8
    refused(http.post(f"/v1/campaigns/{cid}/cancel"), 409, "conflict")
    refused(http.post(f"/v1/campaigns/{cid}/pause"), 409, "conflict")
    actions = [e["action"] for e in ok(http.get(
        "/v1/audit", params={"subject": f"campaign:{cid}"}))["entries"]]
    assert actions == ["campaign.cancel", "campaign.resume", "campaign.pause", "campaign.start",
                       "campaign.override", "campaign.test_send", "campaign.create"]


GOOD = {"name": "good", "topic": "news", "channels": [{"channel": "email",
                                                       "template": "newsletter"}]}

BAD_CAMPAIGNS: list[tuple[dict[str, Any], str]] = [
    ({k: v for k, v in GOOD.items() if k != "channels"}, "channels"),
    ({**GOOD, "channels": []}, "channels"),
    ({**GOOD, "channels": [{"channel": "email", "template": "nope"}]}, "channels[0].template"),
    ({**GOOD, "channels": [{"channel": "sms", "template": "newsletter"}]},
     "channels[0].channel"),
    ({**GOOD, "channels": [{"channel": "email", "template": "newsletter", "version": 0}]},
     "channels[0].version"),
    ({**GOOD, "channels": [{"channel": "email", "template": "newsletter"}] * 2}, "channels"),
    ({**GOOD, "topic": "nope"}, "topic"),
    ({**GOOD, "name": "has spaces"}, "name"),
    ({**GOOD, "throttle": 0}, "throttle"),
    ({**GOOD, "throttle": "fast"}, "throttle"),
    ({**GOOD, "ttl": 10}, "ttl"),
    ({**GOOD, "priority": "urgent"}, "priority"),
    ({**GOOD, "min_predicted_rate": 1.5}, "min_predicted_rate"),
    ({**GOOD, "auto_pause": {"failure_rate": 0}}, "auto_pause.failure_rate"),
    ({**GOOD, "auto_pause": {"min_finished": "many"}}, "auto_pause.min_finished"),
    ({**GOOD, "segment": "nope"}, "segment"),
    ({**GOOD, "segment": "pros", "filter": {"attribute": "a", "op": "exists"}}, "segment"),
    ({**GOOD, "filter": {"all": [{"attribute": "plan", "op": "exists"},
                                 {"attribute": "plan", "op": "like"}]}},
     "filter.all[1].op"),
    ({**GOOD, "filter": {"attribute": "plan", "op": "in", "value": [[1]]}}, "filter.value"),
    ({**GOOD, "filter": "plan = pro"}, "filter"),
    ({**GOOD, "schedule": {"local_time": "25:00"}}, "schedule.local_time"),
    ({**GOOD, "schedule": {"at": "tomorrow"}}, "schedule.at"),
    ({**GOOD, "seeds": "qa@example.com"}, "seeds"),
    ({**GOOD, "surprise": 1}, "surprise"),
    ({**GOOD, "experiment": {"name": "x", "variants": [{"name": "A", "template": "newsletter"},
                                                       {"name": "B", "template": "nope"}]}},
     "experiment.variants[1].template"),
]


def test_bad_campaigns_are_422_naming_the_field(api: tuple[World, httpx.Client]) -> None:
    _, http = api
    ok(http.post("/v1/segments", json={"name": "pros", "filter": {}}), 201)
    for body, field in BAD_CAMPAIGNS:
        refused(http.post("/v1/campaigns", json=body), 422, "validation_error", field)
    assert ok(http.get("/v1/campaigns"))["campaigns"] == []
    refused(http.post("/v1/campaigns", content=b"{not json",
                      headers={"Content-Type": "application/json"}), 400, "malformed_json")
    refused(http.post("/v1/campaigns", json=[GOOD]), 422, "validation_error")
    refused(http.post("/v1/campaigns", content=b"name=x"), 415, "unsupported_media_type")
    c = ok(http.post("/v1/campaigns", json=GOOD), 201)
    refused(http.post("/v1/campaigns", json=GOOD), 422, "validation_error", "name")
    refused(http.put(f"/v1/campaigns/{c['id']}", json={**GOOD, "throttle": -1}), 422,
            "validation_error", "throttle")
    other = ok(http.post("/v1/campaigns", json={**GOOD, "name": "other"}), 201)
    refused(http.put(f"/v1/campaigns/{other['id']}", json=GOOD), 422, "validation_error",
            "name")
    assert ok(http.put(f"/v1/campaigns/{other['id']}", json={**GOOD, "name": "renamed"}))[
        "name"] == "renamed"


def test_bad_actions_are_422_or_404_never_500(api: tuple[World, httpx.Client]) -> None:
    _, http = api
    cid = ok(http.post("/v1/campaigns", json=GOOD), 201)["id"]
    for path, body, field in [
        ("start", {"override": "x"}, "override"),
        ("start", {"override": 5}, "override"),
        ("start", {"force": True}, "force"),
        ("pause", {"reason": ""}, "reason"),
        ("retry", {"causes": "CONTENT_REJECTED"}, "causes"),
        ("retry", {"via": ["backup"]}, "via"),
        ("test", {"to": "qa@example.com"}, "to"),
        ("test", {"to": ["not an address"]}, None),
        ("test", {"to": ["qa@example.com"], "as": "nobody"}, "as"),
        ("test", {}, "to"),
    ]:
        r = http.post(f"/v1/campaigns/{cid}/{path}", json=body)
        assert r.status_code == 422, (path, body, r.status_code, r.text)
        if field is not None:
            assert r.json()["error"]["fields"][0]["field"] == field, (path, r.text)
    refused(http.post(f"/v1/campaigns/{cid}/dry-run", params={"limit": -1}, json={}), 422,
            "validation_error", "limit")
    assert http.get("/v1/segments/pros", params={"sample": 1000}).status_code == 422
    for path in ("start", "pause", "resume", "cancel", "retry", "preflight", "dry-run",
                 "test", "progress"):
        method = http.get if path == "progress" else http.post
        r = method(f"/v1/campaigns/nope/{path}")
        assert r.status_code == 404, (path, r.status_code, r.text)
    refused(http.get("/v1/segments/nope"), 404, "not_found")
    for body, field in [({"name": "s", "filter": {"attribute": "plan", "op": "like"}},
                         "filter.op"),
                        ({"name": "s", "filter": {"any": []}}, "filter.any"),
                        ({"name": "s", "filter": {"attribute": "x", "op": "in",
                                                  "value": [{"a": 1}]}}, "filter.value"),
                        ({"name": "bad name", "filter": {}}, "name"),
                        ({"name": "s", "filter": {"address": {"channel": ["email"]}}},
                         "filter.address.channel"),
                        ({"name": "s", "filter": {"engagement": {"within_days": 7,
                                                                 "min": 2 ** 70}}},
                         "filter.engagement.min"),
                        ({"name": "s", "filter": []}, "filter")]:
        refused(http.post("/v1/segments", json=body), 422, "validation_error", field)
        refused(http.post("/v1/segments/preview", json={"filter": body["filter"]}), 422,
                "validation_error") if body["name"] == "s" else None
    assert ok(http.get("/v1/segments"))["segments"] == []
    refused(http.post(f"/v1/campaigns/{cid}/start"), 409, "blocked_by_preflight")
    assert ok(http.post(f"/v1/campaigns/{cid}/start", json={"override": "known"}))["state"] \
        == "sending"


def test_a_bad_query_parameter_of_a_bodiless_post_is_422(
        api: tuple[World, httpx.Client]) -> None:
    _, http = api
    cid = ok(http.post("/v1/campaigns", json=GOOD), 201)["id"]
    refused(http.post(f"/v1/campaigns/{cid}/dry-run", params={"limit": -1}), 422,
            "validation_error", "limit")
