"""The HTTP API through a real server on loopback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.acceptance.conftest import LiveAPI

HOOK = "http://127.0.0.1:9/hooks/a"


def body(**kw: Any) -> dict[str, Any]:
    return {"channel": "webhook", "to": HOOK, "content": {"event": "x"}, **kw}


def test_send_then_read_back(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        r = c.post("/v1/topics", json={"name": "orders", "kind": "transactional"})
        assert r.status_code == 201, r.text
        r = c.post("/v1/messages", json=body(topic="orders", priority="high", ttl=600))
        assert r.status_code == 202, r.text
        data = r.json()
        assert set(data) == {"id", "state"} and data["state"] == "queued"
        got = c.get(f"/v1/messages/{data['id']}").json()
    assert got["state"] == "queued" and got["priority"] == "high" and got["topic"] == "orders"
    assert got["attempts"] == [] and got["failure"] is None
    assert got["history"][0]["from"] == "accepted"


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer wrong", "Basic abc", "bearer"])
def test_every_v1_route_needs_a_valid_key(live_api: LiveAPI, header: str | None) -> None:
    import httpx

    headers = {} if header is None else {"Authorization": header}
    with httpx.Client(base_url=live_api.url, headers=headers) as c:
        for method, path in [("POST", "/v1/messages"), ("GET", "/v1/messages"),
                             ("GET", "/v1/messages/x"), ("POST", "/v1/messages/batch")]:
            r = c.request(method, path, json=body())
            assert r.status_code == 401, (method, path)
            assert r.json()["error"]["type"] == "unauthorized"
    assert live_api.app.store.list_messages() == []


def test_idempotency_same_body_replays_other_body_conflicts(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        first = c.post("/v1/messages", json=body(), headers={"Idempotency-Key": "order-1"})
        again = c.post("/v1/messages", json=body(), headers={"Idempotency-Key": "order-1"})
        in_body = c.post("/v1/messages", json=body(idempotency_key="order-1"))
        other = c.post("/v1/messages", json=body(content={"event": "y"}),
                       headers={"Idempotency-Key": "order-1"})
        mismatch = c.post("/v1/messages", json=body(idempotency_key="a"),
                          headers={"Idempotency-Key": "b"})
    assert first.status_code == again.status_code == in_body.status_code == 202
    assert first.json() == again.json() == in_body.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert other.status_code == 422 and other.json()["error"]["type"] == "idempotency_conflict"
    assert mismatch.status_code == 422
    assert len(live_api.app.store.list_messages()) == 1


BAD = [
    ("unknown channel", body(channel="pigeon"), 422, "channel"),
    ("missing to", {"channel": "webhook", "content": {}}, 422, "to"),
    ("empty to", body(to=""), 422, "to"),
    ("ftp url", body(to="ftp://example.com/x"), 422, "to"),
    ("private address", body(to="http://10.1.2.3/hook"), 422, "to"),
    ("metadata address", body(to="http://169.254.169.254/latest"), 422, "to"),
    ("crlf in url", body(to="http://127.0.0.1/a\r\nX: y"), 422, "to"),
    ("crlf in key", body(idempotency_key="a\r\nb"), 422, "idempotency_key"),
    ("nul in key", body(idempotency_key="a\x00b"), 422, "idempotency_key"),
    ("content not object", body(content=[1, 2]), 422, "content"),
    ("content too big", body(content={"x": "y" * 70_000}), 422, "content"),
    ("unknown field", body(colour="red"), 422, "colour"),
    ("bad priority", body(priority="urgent"), 422, "priority"),
    ("send_at no tz", body(send_at="2030-01-01T00:00:00"), 422, "send_at"),
    ("send_at garbage", body(send_at="tomorrow"), 422, "send_at"),
    ("send_at far", body(send_at="2099-01-01T00:00:00Z"), 422, "send_at"),
    ("ttl zero", body(ttl=0), 422, "ttl"),
    ("ttl huge", body(ttl=10**9), 422, "ttl"),
    ("ttl string", body(ttl="soon"), 422, "ttl"),
    ("bad topic", body(topic="has space"), 422, "topic"),
    ("fallback leg channel", body(fallback=[{"channel": "pigeon", "to": "x", "content": {}}]),
     422, "fallback[0].channel"),
    ("fallback leg address", body(fallback=[{"channel": "webhook", "to": "ftp://x",
                                             "content": {}}]), 422, "fallback[0].to"),
    ("fallback leg shape", body(fallback=[{"channel": "webhook"}]), 422, "fallback[0].to"),
    ("too many legs", body(fallback=[{"channel": "webhook", "to": HOOK, "content": {}}] * 6),
     422, "fallback"),
    ("not an object", [1, 2, 3], 422, "body"),
]


@pytest.mark.parametrize("name,payload,status,field", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_the_field_and_enqueues_nothing(live_api: LiveAPI, name: str,
                                                        payload: Any, status: int,
                                                        field: str) -> None:
    with live_api.client() as c:
        r = c.post("/v1/messages", json=payload)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert any(f["field"] == field for f in err["fields"]), err
    assert err["message"]
    assert live_api.app.store.list_messages() == []


def test_malformed_json_is_400(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        r = c.post("/v1/messages", content=b'{"channel": "webhook",',
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "malformed_json"


def test_oversize_body_is_413_before_parsing(live_api: LiveAPI) -> None:
    huge = json.dumps(body(content={"x": "y" * 400_000}))
    with live_api.client() as c:
        r = c.post("/v1/messages", content=huge, headers={"Content-Type": "application/json"})
        streamed = c.post("/v1/messages", content=iter([huge.encode()]),
                          headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and streamed.status_code == 413
    assert live_api.app.store.list_messages() == []


def test_batch_accepts_valid_items_and_reports_each_invalid_one(live_api: LiveAPI) -> None:
    items = [body(), body(to="nope"), body(priority="bulk"), body(channel="pigeon")]
    with live_api.client() as c:
        r = c.post("/v1/messages/batch", json={"messages": items})
    assert r.status_code == 202, r.text
    data = r.json()
    assert data["accepted"] == 2 and data["rejected"] == 2
    res = data["results"]
    assert [x["index"] for x in res] == [0, 1, 2, 3]
    assert "id" in res[0] and "id" in res[2]
    assert res[1]["error"]["fields"][0]["field"] == "messages[1].to"
    assert res[3]["error"]["fields"][0]["field"] == "messages[3].channel"
    assert len(live_api.app.store.list_messages()) == 2


@pytest.mark.parametrize("n", [0, 1001])
def test_batch_size_limits(live_api: LiveAPI, n: int) -> None:
    with live_api.client() as c:
        r = c.post("/v1/messages/batch", json={"messages": [body()] * n})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "messages"


def test_batch_idempotency_header_keys_each_item(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        a = c.post("/v1/messages/batch", json={"messages": [body(), body()]},
                   headers={"Idempotency-Key": "import-7"}).json()
        b = c.post("/v1/messages/batch", json={"messages": [body(), body()]},
                   headers={"Idempotency-Key": "import-7"}).json()
    assert [x["id"] for x in a["results"]] == [x["id"] for x in b["results"]]
    assert all(x["replayed"] for x in b["results"])
    assert len(live_api.app.store.list_messages()) == 2


def test_listing_filters_and_validates(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        c.post("/v1/messages/batch", json={"messages": [body(), body()]})
        assert len(c.get("/v1/messages", params={"state": "queued"}).json()["messages"]) == 2
        assert c.get("/v1/messages", params={"state": "delivered"}).json()["messages"] == []
        assert c.get("/v1/messages", params={"state": "nope"}).status_code == 422
        assert c.get("/v1/messages", params={"cause": "NOPE"}).status_code == 422
        assert c.get("/v1/messages", params={"since": "yesterday"}).status_code == 422
        since = c.get("/v1/messages", params={"since": "2000-01-01T00:00:00Z"}).json()
        assert len(since["messages"]) == 2
        assert c.get("/v1/messages/msg_missing").status_code == 404


def test_health_ready_metrics_and_openapi(live_api: LiveAPI) -> None:
    import httpx

    with httpx.Client(base_url=live_api.url) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json() == {"status": "ready"}
        metrics = c.get("/metrics").text
        spec = c.get("/openapi.json").json()
    assert "pushguard_queue_depth" in metrics
    assert {"/v1/messages", "/v1/messages/batch", "/v1/messages/{message_id}"} <= set(
        spec["paths"])



#: the /v1 routes providers call: they check the provider's signature, not an API key
SIGNED_BY_PROVIDERS = {"/v1/receipts/twilio", "/v1/receipts/ses", "/v1/receipts/http/{provider}",
                       "/v1/inbound/twilio"}


def test_openapi_says_what_errors_and_authentication_look_like(live_api: LiveAPI) -> None:
    """Clients generated from /openapi.json must learn the real error body (not FastAPI's
    default one, which this API never sends) and that /v1 needs a bearer key."""
    import httpx

    from pushguard.api.errors import ErrorBody

    with httpx.Client(base_url=live_api.url) as c:
        spec = c.get("/openapi.json").json()
        bad = c.post("/v1/messages", json={"channel": "webhook"},
                     headers={"Authorization": f"Bearer {live_api.key}"})
        nokey = c.get("/v1/messages")
    assert "HTTPValidationError" not in str(spec)
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer",
        "description": "An API key (`pgk_...`) from `pushguard keys create`."}
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    for answer in (bad, nokey):  # what the document declares is what comes back
        assert set(answer.json()) == {"error"}
        ErrorBody.model_validate(answer.json())
    assert bad.status_code == 422 and nokey.status_code == 401
    for path, item in spec["paths"].items():
        for method, op in item.items():
            declared = op["responses"]
            if "422" in declared:
                assert declared["422"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"}, (method, path)
            keyed = op.get("security") == [{"apiKey": []}]
            public = path in SIGNED_BY_PROVIDERS or not path.startswith("/v1/")
            assert keyed != public, (method, path)
            if keyed:
                assert {"401", "429", "503"} <= set(declared), (method, path)


def test_each_key_is_rate_limited_with_retry_after(live_api: LiveAPI) -> None:
    from pushguard.ratelimit import KeyedLimiter

    live_api.api.state.limiter = KeyedLimiter(rate=1.0, burst=3)
    _, other_key = live_api.app.store.create_api_key("other")
    with live_api.client() as c:
        codes = [c.get("/v1/messages").status_code for _ in range(5)]
        limited = c.get("/v1/messages")
    with live_api.client(other_key) as c:
        other = c.get("/v1/messages").status_code
    assert codes[:3] == [200, 200, 200] and 429 in codes[3:]
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["type"] == "rate_limited"
    assert other == 200  # another key has its own bucket


def test_pagination_walks_a_batch_without_skipping(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        c.post("/v1/messages/batch", json={"messages": [body() for _ in range(7)]})
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = c.get("/v1/messages", params=params).json()
            seen += [m["id"] for m in page["messages"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        bad = c.get("/v1/messages", params={"cursor": "garbage"})
    assert len(seen) == 7 and len(set(seen)) == 7
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "cursor"


def test_batch_items_that_are_not_objects_get_their_own_error(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        mixed = c.post("/v1/messages/batch", json={"messages": [body(), 42, "x"]})
        none_ok = c.post("/v1/messages/batch", json={"messages": [42, body(to="nope")]})
    assert mixed.status_code == 202
    errs = [r for r in mixed.json()["results"] if "error" in r]
    assert [e["error"]["fields"][0]["field"] for e in errs] == ["messages[1]", "messages[2]"]
    assert none_ok.status_code == 422
    assert none_ok.json()["accepted"] == 0 and len(none_ok.json()["results"]) == 2


def test_non_json_content_type_is_415(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        r = c.post("/v1/messages", content=json.dumps(body()),
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "unsupported_media_type"


def test_idempotency_compares_normalised_requests(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        a = c.post("/v1/messages", json=body(to="HTTP://127.0.0.1:9/hooks/a"),
                   headers={"Idempotency-Key": "norm"})
        b = c.post("/v1/messages", json=body(to="http://127.0.0.1:9/hooks/a"),
                   headers={"Idempotency-Key": "norm"})
    assert a.status_code == b.status_code == 202 and a.json() == b.json()


def test_fallback_legs_are_accepted_and_shown(live_api: LiveAPI) -> None:
    leg = {"channel": "webhook", "to": "http://127.0.0.1:9/hooks/backup", "content": {"b": 1}}
    with live_api.client() as c:
        r = c.post("/v1/messages", json=body(fallback=[leg]))
        got = c.get(f"/v1/messages/{r.json()['id']}").json()
    assert r.status_code == 202
    assert got["fallback"] == [{"channel": "webhook", "to": leg["to"]}]
    assert got["parent_id"] is None and got["fallback_id"] is None


def test_a_streamed_body_cut_at_the_limit_is_never_acted_on(live_api: LiveAPI) -> None:
    # a valid message, then padding past the limit: cut at the limit, the prefix would parse
    message = json.dumps(body()).encode()
    pad = b" " * (300 * 1024)

    def chunks() -> Any:
        yield message
        yield pad

    with live_api.client() as c:
        r = c.post("/v1/messages", content=chunks(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert live_api.app.store.list_messages() == []
